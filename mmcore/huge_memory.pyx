# cython: language_level=3
"""Transparent huge pages at PMD level (mm/huge_memory.c).

* fault_huge(): do_huge_pmd_anonymous_page() (a PMD-sized folio, or the huge
  zero page on a read fault) and do_huge_pmd_wp_page(); memory.pyx's fault
  path calls it when a PMD-sized folio fits the VMA.
* split_huge_pmd(): __split_huge_pmd(), a huge PMD leaf becomes a PTE table
  mapping the same frames; zap, mprotect and move_page_tables() split a huge
  PMD they only partly cover.
* split_huge_pmd_address(): the Python entry point, for a VMA boundary that
  is about to fall inside a huge PMD.

Example::

    >>> import mmcore
    >>> eng = mmcore.Engine(mmcore.X86_64)
    >>> o = eng.owner_new("anon")
    >>> GiB = 1 << 30
    >>> mmcore.handle_mm_fault(eng, GiB, GiB + (2 << 20), vma_start=GiB, vma_end=GiB + (2 << 20),
    ...                        owner=o, pgoff=GiB >> 12, write=True, thp=True)
    >>> mmcore.huge_memory.split_huge_pmd_address(eng, GiB + 4096)
    >>> eng.stats()["huge_pmd_splits"], len(mmcore.walk(eng, GiB))
    (1, 4)
"""
from libc.stdint cimport uint64_t, int64_t

from mmcore._entries cimport *
from mmcore._core cimport (Engine, FaultArgs, row, rmap_word, rmap_index, is_zero_frame, CTR_FAULTS, CTR_COW,
                           CTR_HUGE_PMD_SPLITS)


cdef bint huge_shared(Engine eng, int64_t f) noexcept nogil:
    """folio_ref_count(folio) > 1 for a PMD-mapped folio: does another
    mapping (a forked process's) use any of its pages?"""
    cdef int64_t i
    if eng.fmapc == NULL:
        return False
    for i in range(<int64_t>eng.ptrs_per_pte):
        if eng.fmapc[f + i]:
            return True
    return False


cdef void huge_move_anon_rmap(Engine eng, int64_t f, int64_t owner) noexcept nogil:
    """folio_move_anon_rmap(): the folio, now mapped only here, joins this
    VMA's anon_vma (each page keeps its index)."""
    cdef int64_t i
    for i in range(<int64_t>eng.ptrs_per_pte):
        eng.frmap[f + i] = rmap_word(owner, rmap_index(eng.frmap[f + i]))


cdef int fault_huge(Engine eng, uint64_t *pmdp, uint64_t haddr, FaultArgs *a) noexcept nogil:
    """do_huge_pmd_anonymous_page() on a none PMD, or the write-protect
    fault on an existing huge PMD (do_huge_pmd_wp_page()).  Returns 1 when
    the kernel falls back to the PTEs (a write to a folio another process
    maps: the caller splits the PMD and faults the 4K page), -1 when out of
    memory."""
    cdef uint64_t e = pmdp[0], index, flags, lo, hi
    cdef int64_t f
    index = a.pgoff + ((haddr - a.vma_start) >> eng.shift[eng.lpte])
    if e == 0:
        if a.write or not a.zero_page:
            f = eng.frame_alloc_huge(rmap_word(a.owner, index))
            if f < 0:
                return -1
            flags = a.prot | _PAGE_PSE
            if a.writable:
                flags |= _PAGE_RW | _PAGE_DIRTY | _PAGE_SOFT_DIRTY
            eng.rss_anon += <int64_t>eng.ptrs_per_pte
        else:
            f = eng.huge_zero  # the huge zero page (use_zero_page=1)
            flags = a.prot | _PAGE_PSE | _PAGE_SPECIAL
        e = pfn_entry(f, flags)
        pmdp[0] = e
        eng.ctr[CTR_FAULTS] += 1
    elif a.write and a.writable and not pte_write(e):
        f = entry_pfn(e)
        if is_zero_frame(eng, f):
            f = eng.frame_alloc_huge(rmap_word(a.owner, index))
            if f < 0:
                return -1
            eng.rss_anon += <int64_t>eng.ptrs_per_pte
            eng.ctr[CTR_COW] += 1
            e = pfn_entry(f, (entry_flags(e) & ~_PAGE_SPECIAL) | _PAGE_RW | _PAGE_DIRTY | _PAGE_SOFT_DIRTY)
        elif huge_shared(eng, f):
            return 1   # do_huge_pmd_wp_page(): mapped elsewhere too: split, COW the 4K page
        else:
            if eng.fmapc != NULL:
                huge_move_anon_rmap(eng, f, a.owner)
            e = e | _PAGE_RW | _PAGE_DIRTY | _PAGE_SOFT_DIRTY
        pmdp[0] = e
        eng.ctr[CTR_FAULTS] += 1
    if a.fill and pte_write(e) and pte_hw_present(e):
        # memset() fills only what it covers of the huge page
        lo = max(haddr, a.start)
        hi = min(haddr + eng.pmd_size, a.end)
        eng.set_tags_run(entry_pfn(e) + <int64_t>((lo - haddr) >> eng.shift[eng.lpte]),
                         <int64_t>((hi - lo) >> eng.shift[eng.lpte]), a.fill_tag)
    return 0


cdef int split_huge_pmd(Engine eng, int64_t pmd_tid, int64_t pmd_idx) noexcept nogil:
    """__split_huge_pmd(): replace a huge PMD leaf by a PTE table mapping
    the same PTRS_PER_PTE frames with the same protection."""
    cdef uint64_t e = row(eng, pmd_tid)[pmd_idx]
    cdef int64_t t, f, i, n = <int64_t>eng.ptrs_per_pte
    cdef uint64_t flags
    cdef uint64_t *r
    if not pmd_leaf(e):
        return 0
    t = eng.table_alloc(eng.lpte)
    if t < 0:
        return -1
    f = entry_pfn(e)
    flags = entry_flags(e) & ~_PAGE_PSE
    r = row(eng, t)
    if f == eng.huge_zero:
        # __split_huge_zero_page_pmd(): every PTE maps the small zero page
        for i in range(n):
            r[i] = pfn_entry(0, flags)
    else:
        for i in range(n):
            r[i] = pfn_entry(f + i, flags)
    row(eng, pmd_tid)[pmd_idx] = pfn_entry(t, _PAGE_TABLE)
    eng.ctr[CTR_HUGE_PMD_SPLITS] += 1
    return 0


def split_huge_pmd_address(Engine eng not None, uint64_t addr):
    """split_huge_pmd_address(): split the huge PMD mapping addr, if any
    (a VMA boundary is about to fall inside it: vma_adjust_trans_huge()).

    Example::

        >>> mmcore.handle_mm_fault(eng, 0x80000000, 0x80200000, vma_start=0x80000000,
        ...                        vma_end=0x80200000, owner=o, pgoff=0x80000, write=True, thp=True)
        >>> split_huge_pmd_address(eng, 0x80001000)       # a VMA boundary at 0x80001000
        >>> eng.stats()["huge_pmd_splits"]
        1
    """
    cdef int64_t t
    eng.enter()
    try:
        eng._check_addr(addr)
        t = eng.walk_to(addr, eng.lpmd)
        if t >= 0 and split_huge_pmd(eng, t, (addr >> eng.shift[eng.lpmd]) & eng.imask[eng.lpmd]) < 0:
            raise eng.oom_error("split_huge_pmd")
    finally:
        eng.leave()
