# cython: language_level=3
"""Declarations of pagewalk.pyx (mm/pagewalk.c, fs/proc/task_mmu.c).  The
walks of one address are inline here: memory.pyx runs them once per page."""
from libc.stdint cimport uint64_t, int64_t

from mmcore._entries cimport pte_present, pte_hw_present, pte_write, pmd_leaf, entry_pfn
from mmcore._core cimport Engine, row


cdef inline int64_t translate_c(Engine eng, uint64_t addr, bint write) noexcept nogil:
    """What the MMU does on an access (the hardware walk): the frame, or -1
    for a page fault (not present, or a write through a read-only entry)."""
    cdef int64_t t = eng.root
    cdef int l
    cdef uint64_t e
    for l in range(eng.nlev):
        e = row(eng, t)[(addr >> eng.shift[l]) & eng.imask[l]]
        if not pte_hw_present(e):
            return -1
        if write and not pte_write(e):
            return -1
        if l == eng.lpte:
            return entry_pfn(e)
        if pmd_leaf(e):
            return entry_pfn(e) + <int64_t>((addr >> eng.shift[eng.lpte]) & ((((<uint64_t>1) << eng.shift[l]) >> eng.shift[eng.lpte]) - 1))
        t = entry_pfn(e)
    return -1


cdef inline int64_t lookup_frame(Engine eng, uint64_t addr) noexcept nogil:
    """follow_page_mask() without its checks: the frame a present
    (pte_present) leaf maps at addr, or -1."""
    cdef int64_t t = eng.root
    cdef int l
    cdef uint64_t e
    for l in range(eng.nlev):
        e = row(eng, t)[(addr >> eng.shift[l]) & eng.imask[l]]
        if not pte_present(e):
            return -1
        if l == eng.lpte:
            return entry_pfn(e)
        if pmd_leaf(e):
            return entry_pfn(e) + <int64_t>((addr >> eng.shift[eng.lpte]) & ((((<uint64_t>1) << eng.shift[l]) >> eng.shift[eng.lpte]) - 1))
        t = entry_pfn(e)
    return -1


cdef void pagemap_c(Engine eng, uint64_t start, int64_t npages, uint64_t *out) noexcept nogil
