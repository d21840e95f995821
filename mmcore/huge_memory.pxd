# cython: language_level=3
"""Declarations of huge_memory.pyx (mm/huge_memory.c), for the fault path,
mprotect and mremap above it."""
from libc.stdint cimport uint64_t, int64_t

from mmcore._core cimport Engine, FaultArgs

cdef int fault_huge(Engine eng, uint64_t *pmdp, uint64_t haddr, FaultArgs *a) noexcept nogil
cdef int split_huge_pmd(Engine eng, int64_t pmd_tid, int64_t pmd_idx) noexcept nogil
cdef bint huge_shared(Engine eng, int64_t f) noexcept nogil
