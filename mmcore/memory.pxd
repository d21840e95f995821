# cython: language_level=3
"""Declarations of memory.pyx (mm/memory.c): the nogil entry points of the
fault path, zap and free_pgd_range, for modules above."""
from libc.stdint cimport uint64_t, int64_t

from mmcore._core cimport Engine, FaultArgs

cdef int fault_pte(Engine eng, uint64_t *ptep, uint64_t va, FaultArgs *a) noexcept nogil
cdef int fault_range_c(Engine eng, uint64_t start, uint64_t end, FaultArgs *a) noexcept nogil
cdef int vma_fault_args(Engine eng, FaultArgs *a, uint64_t vma_start, uint64_t vma_end, int64_t owner,
                        uint64_t pgoff, bint shared, bint writable, bint exec_, bint protnone,
                        int fault_around) except -1
cdef void zap_level(Engine eng, int l, int64_t t, uint64_t addr, uint64_t end) noexcept nogil
cdef void free_pgd_range_c(Engine eng, uint64_t addr, uint64_t end, uint64_t floor,
                           uint64_t ceiling) noexcept nogil
