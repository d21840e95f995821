# cython: language_level=3
"""Declarations of huge_memory.pyx (mm/huge_memory.c), for the fault path,
mprotect and mremap above it."""
from libc.stdint cimport uint64_t, int64_t

from mmcore._core cimport Engine, FaultArgs

cdef int fault_huge(Engine eng, int64_t pmd_tid, int64_t pmd_idx, uint64_t haddr,
                    FaultArgs *a) noexcept nogil
cdef int split_huge_pmd(Engine eng, int64_t pmd_tid, int64_t pmd_idx) noexcept nogil
cdef void zap_deposited_table(Engine eng, int64_t pmd_tid) noexcept nogil
cdef void zap_huge_pmd(Engine eng, int64_t pmd_tid, int64_t pmd_idx) noexcept nogil
cdef void move_huge_pmd_deposit(Engine eng, int64_t old_pmd_tid, int64_t new_pmd_tid) noexcept nogil
