# cython: language_level=3
"""mprotect()'s page-table half (mm/mprotect.c).

change_protection() walks the range level by level (change_p4d_range() ->
change_pud_range() -> change_pmd_range() -> change_pte_range()) and rewrites
every present leaf with pte_modify().  The VMA half (mprotect_fixup(), the
splits and merges) is pymm's.

Example::

    >>> import mmcore
    >>> eng = mmcore.Engine(mmcore.X86_64)
    >>> o = eng.owner_new("anon")
    >>> mmcore.handle_mm_fault(eng, 1 << 30, (1 << 30) + 4096, vma_start=1 << 30,
    ...                        vma_end=(1 << 30) + 4096, owner=o, pgoff=(1 << 30) >> 12, write=True)
    >>> mmcore.change_protection(eng, 1 << 30, (1 << 30) + 4096, read=False)   # PROT_NONE
    >>> mmcore.translate(eng, 1 << 30)
    -1
"""
from libc.stdint cimport uint64_t, int64_t

from mmcore._entries cimport *
from mmcore._core cimport Engine, row, span_end, is_zero_frame, mapcount_extra
from mmcore.huge_memory cimport split_huge_pmd, huge_shared


cdef inline bint cow_shared(Engine eng, uint64_t e, int l) noexcept nogil:
    """A page a forked process maps too stays write-protected (it is not
    PageAnonExclusive): the next write copies it."""
    if l == eng.lpte:
        return mapcount_extra(eng, entry_pfn(e)) > 0
    return huge_shared(eng, entry_pfn(e))


cdef int change_level(Engine eng, int l, int64_t t, uint64_t addr, uint64_t end,
                      uint64_t prot, bint writable) noexcept nogil:
    """change_p4d_range() -> change_pud_range() -> change_pmd_range() ->
    change_pte_range(): pte_modify() every present leaf of [addr, end) below
    table t (level l) to the new protection."""
    cdef uint64_t size = (<uint64_t>1) << eng.shift[l]
    cdef uint64_t nxt, e, keep
    cdef int64_t i = (addr >> eng.shift[l]) & eng.imask[l]
    cdef uint64_t *r
    # _PAGE_CHG_MASK: what pte_modify() keeps from the old entry
    keep = PTE_PFN_MASK | _PAGE_ACCESSED | _PAGE_DIRTY | _PAGE_SPECIAL | _PAGE_SOFT_DIRTY | _PAGE_PSE
    while addr < end:
        nxt = span_end(addr, end, size)
        r = row(eng, t)
        e = r[i]
        if e != 0:
            if l == eng.lpte or pmd_leaf(e):
                if pmd_leaf(e) and nxt - addr != size:
                    if l != eng.lpmd or split_huge_pmd(eng, t, i) < 0:
                        return -1
                    if change_level(eng, l + 1, entry_pfn(row(eng, t)[i]), addr, nxt, prot, writable) < 0:
                        return -1
                elif pte_present(e):
                    e = (e & keep) | prot
                    # can_change_pte_writable(): exclusive anonymous pages
                    # and written shmem pages regain write access at once
                    if writable and not pte_special(e) and not is_zero_frame(eng, entry_pfn(e)) \
                            and (prot & _PAGE_PRESENT) and not cow_shared(eng, e, l):
                        e |= _PAGE_RW
                    r[i] = e
            else:
                if change_level(eng, l + 1, entry_pfn(e), addr, nxt, prot, writable) < 0:
                    return -1
        addr = nxt
        i += 1
    return 0


def change_protection(Engine eng not None, uint64_t start, uint64_t end, bint read=True,
                      bint write=False, bint exec_=False):
    """change_protection(): every present leaf in [start, end) gets the new
    protection (PROT_NONE clears _PAGE_PRESENT and sets _PAGE_PROTNONE, so
    the MMU faults while pte_present() stays true).  A huge PMD only partly
    covered is split first.

    Example::

        >>> change_protection(eng, 0x40000000, 0x40200000, read=True, write=False)
    """
    cdef uint64_t prot
    cdef int r
    eng.enter()
    try:
        eng._check_range(start, end)
        if not (read or write or exec_):
            prot = _PAGE_PROTNONE
        else:
            prot = _PAGE_PRESENT | _PAGE_USER | (0 if exec_ else _PAGE_NX)
        with nogil:
            r = change_level(eng, 0, eng.root, start, end, prot, write)
        if r < 0:
            raise eng.oom_error("change_protection: split_huge_pmd")
    finally:
        eng.leave()
