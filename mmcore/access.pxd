# cython: language_level=3
"""Declarations of access.pyx (the CPU's loads and stores, mm/memory.c's
__access_remote_vm()): its nogil loops, for modules above."""
from libc.stdint cimport uint64_t, int64_t, uint8_t

from mmcore._core cimport Engine

cdef int64_t set_tags_c(Engine eng, uint64_t start, uint64_t end, uint64_t tag, bint stamp) noexcept nogil
cdef int64_t copy_bytes(Engine eng, uint64_t addr, uint8_t *buf, int64_t n, bint write) noexcept nogil
