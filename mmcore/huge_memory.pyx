# cython: language_level=3
"""Transparent huge pages at PMD level (mm/huge_memory.c).

* fault_huge(): do_huge_pmd_anonymous_page() (a PMD-sized folio, or the huge
  zero page on a read fault) and do_huge_pmd_wp_page(); memory.pyx's fault
  path calls it when a PMD-sized folio fits the VMA.
* split_huge_pmd(): __split_huge_pmd(), a huge PMD leaf becomes the PTE
  table deposited with it, mapping the same frames; zap, mprotect and
  move_page_tables() split a huge PMD they only partly cover.
* the deposit (mm/pgtable-generic.c): every anonymous huge PMD, THP or huge
  zero page, has a PTE table set aside when it is made
  (pgtable_trans_huge_deposit()), counted in VmPTE; a split uses it, so it
  cannot fail; zap_huge_pmd() frees it; move_huge_pmd() carries it to
  another PMD table.
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
from mmcore._core cimport (Engine, FaultArgs, row, rmap_word, is_zero_frame, release_frame,
                           pgtable_trans_huge_deposit, pgtable_trans_huge_withdraw, CTR_FAULTS, CTR_COW,
                           CTR_HUGE_PMD_SPLITS)


cdef int fault_huge(Engine eng, int64_t pmd_tid, int64_t pmd_idx, uint64_t haddr,
                    FaultArgs *a) noexcept nogil:
    """do_huge_pmd_anonymous_page() on a none PMD (entry pmd_idx of PMD
    table pmd_tid), or the write-protect fault on an existing huge PMD
    (do_huge_pmd_wp_page(): a write to the huge zero PMD gets a THP, as
    do_huge_zero_wp_pmd() does since 6.13 (1ced09e0331f) and 4.19 did,
    unless a.huge_zero_thp is off: 5.8 to 6.12 split it, 3917c80280c9).
    A new huge PMD comes with a PTE table deposited for its split
    (pte_alloc_one() + pgtable_trans_huge_deposit(), also in
    set_huge_zero_folio()).

    Returns 0, -1 when out of memory (VM_FAULT_OOM: the deposit's table
    could not be had), or 1 for VM_FAULT_FALLBACK: no PMD-sized folio could
    be allocated, the caller faults 4 KiB pages instead, splitting a huge
    PMD that is there first (a huge zero PMD being written, as
    do_huge_pmd_wp_page() does)."""
    cdef uint64_t e = row(eng, pmd_tid)[pmd_idx], index, flags, lo, hi
    cdef int64_t f, pgtable
    index = a.pgoff + ((haddr - a.vma_start) >> eng.shift[eng.lpte])
    if e == 0:
        if a.write or not a.zero_page:
            f = eng.frame_alloc_huge(rmap_word(a.owner, index))
            if f < 0:
                return 1                           # count_vm_event(THP_FAULT_FALLBACK)
            pgtable = eng.table_alloc(eng.lpte)    # __do_huge_pmd_anonymous_page(): pte_alloc_one()
            if pgtable < 0:
                eng.frame_free_huge(f)
                return -1
            flags = a.prot | _PAGE_PSE
            if a.writable:
                flags |= _PAGE_RW | _PAGE_DIRTY | _PAGE_SOFT_DIRTY
            eng.rss_anon += <int64_t>eng.ptrs_per_pte
        else:
            pgtable = eng.table_alloc(eng.lpte)    # do_huge_pmd_anonymous_page(): pte_alloc_one()
            if pgtable < 0:
                return -1
            f = eng.huge_zero  # the huge zero page (use_zero_page=1)
            flags = a.prot | _PAGE_PSE | _PAGE_SPECIAL
        pgtable_trans_huge_deposit(eng, pmd_tid, pgtable)
        e = pfn_entry(f, flags)
        row(eng, pmd_tid)[pmd_idx] = e             # the table array may have moved: no saved pointer
        eng.ctr[CTR_FAULTS] += 1
    elif a.write and a.writable and not pte_write(e):
        f = entry_pfn(e)
        if is_zero_frame(eng, f):
            if not a.huge_zero_thp:
                return 1                           # 5.8-6.12: "goto fallback", split + 4K COW
            f = eng.frame_alloc_huge(rmap_word(a.owner, index))   # do_huge_zero_wp_pmd()
            if f < 0:
                return 1                           # "Fallback to splitting PMD": the caller splits
            eng.rss_anon += <int64_t>eng.ptrs_per_pte
            eng.ctr[CTR_COW] += 1
            e = pfn_entry(f, (entry_flags(e) & ~_PAGE_SPECIAL) | _PAGE_RW | _PAGE_DIRTY | _PAGE_SOFT_DIRTY)
        else:
            e = e | _PAGE_RW | _PAGE_DIRTY | _PAGE_SOFT_DIRTY
        row(eng, pmd_tid)[pmd_idx] = e
        eng.ctr[CTR_FAULTS] += 1
    if a.fill and pte_write(e) and pte_hw_present(e):
        # memset() fills only what it covers of the huge page
        lo = max(haddr, a.start)
        hi = min(haddr + eng.pmd_size, a.end)
        eng.set_tags_run(entry_pfn(e) + <int64_t>((lo - haddr) >> eng.shift[eng.lpte]),
                         <int64_t>((hi - lo) >> eng.shift[eng.lpte]), a.fill_tag)
    return 0


cdef int split_huge_pmd(Engine eng, int64_t pmd_tid, int64_t pmd_idx) noexcept nogil:
    """__split_huge_pmd_locked(): replace a huge PMD leaf by the PTE table
    deposited with it (pgtable_trans_huge_withdraw()), mapping the same
    PTRS_PER_PTE frames with the same protection.  It allocates nothing,
    so it cannot fail; -1 only if the deposit is missing (a huge leaf made
    without one, which the checker reports) and no table can be had."""
    cdef uint64_t e = row(eng, pmd_tid)[pmd_idx]
    cdef int64_t t, f, i, n = <int64_t>eng.ptrs_per_pte
    cdef uint64_t flags
    cdef uint64_t *r
    if not pmd_leaf(e):
        return 0
    t = pgtable_trans_huge_withdraw(eng, pmd_tid)
    if t < 0:
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


cdef void zap_deposited_table(Engine eng, int64_t pmd_tid) noexcept nogil:
    """zap_deposited_table(): withdraw the PTE table deposited with a huge
    PMD of table pmd_tid that goes away, and free it (pte_free(),
    mm_dec_nr_ptes())."""
    cdef int64_t t = pgtable_trans_huge_withdraw(eng, pmd_tid)
    if t >= 0:
        eng.table_free(t)


cdef void zap_huge_pmd(Engine eng, int64_t pmd_tid, int64_t pmd_idx) noexcept nogil:
    """zap_huge_pmd(): clear a huge PMD leaf wholly inside the zapped range,
    release its folio (never the huge zero page) and free its deposit."""
    cdef uint64_t e = row(eng, pmd_tid)[pmd_idx]
    row(eng, pmd_tid)[pmd_idx] = 0               # pmdp_huge_get_and_clear_full()
    release_frame(eng, entry_pfn(e), True)
    zap_deposited_table(eng, pmd_tid)


cdef void move_huge_pmd_deposit(Engine eng, int64_t old_pmd_tid, int64_t new_pmd_tid) noexcept nogil:
    """move_huge_pmd()'s ``if (pmd_move_must_withdraw(new_ptl, old_ptl,
    vma))``: with split PMD locks a huge PMD moving to another PMD table
    takes its deposited PTE table along (withdraw, then deposit at the
    destination); within one PMD table it stays."""
    cdef int64_t t
    if old_pmd_tid == new_pmd_tid:
        return
    t = pgtable_trans_huge_withdraw(eng, old_pmd_tid)
    if t >= 0:
        pgtable_trans_huge_deposit(eng, new_pmd_tid, t)


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
