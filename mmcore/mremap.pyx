# cython: language_level=3
"""move_page_tables(): the mremap() / exec stack-shift loop (mm/mremap.c).

One loop serves every kernel in pymm's catalogue.  What differs between
kernels arrives as data on the MoveControl (the kernel's
``struct pagetable_move_control`` plus the policy bits a kernel version fixes
at compile time): whether move_normal_pmd()/move_normal_pud() exist, how the
"destination already established" check warns, and which PUD step the loop
has.  Start/length adjustments (Linus's try_to_align_range(), 6.7's
try_realign_addr()) need VMAs, so pymm applies them before calling in.

The loop, per extent::

    old_addr                                              old_end
       |-- extent --|-- extent --|-- ...                     |
       get_extent(NORMAL_PUD): PUD_SIZE? -> move_normal_pud()  (whole PMD table)
       get_extent(NORMAL_PMD): huge PMD? -> move_huge_pmd() or split_huge_pmd()
                               PMD_SIZE? -> move_normal_pmd()  (whole PTE table)
       otherwise               move_ptes(): one PTE at a time

Example::

    >>> import mmcore
    >>> eng = mmcore.Engine(mmcore.X86_64)
    >>> o = eng.owner_new("anon")
    >>> mmcore.handle_mm_fault(eng, 1 << 30, 2 << 30, vma_start=1 << 30, vma_end=2 << 30, owner=o,
    ...                        pgoff=(1 << 30) >> 12, write=True)
    >>> pmc = mmcore.mremap.MoveControl(1 << 30, 4 << 30, 1 << 30)
    >>> mmcore.mremap.move_page_tables(eng, pmc), eng.stats()["pud_moves"]   # one PUD entry
    (True, 1)
"""
from libc.stdint cimport uint64_t, int64_t, INT64_MAX
from libc.stdlib cimport realloc, free

from mmcore._entries cimport *
from mmcore._core cimport (Engine, row, CTR_PTE_MOVES, CTR_PMD_MOVES, CTR_PUD_MOVES,
                           CTR_PGTABLES_ALLOCATED, CTR_PGTABLES_FREED,
                           CTR_HUGE_PMD_MOVES, CTR_TLB_FLUSHES, CTR_PTE_SLOTS_VISITED,
                           WARN_PMD_NOT_NONE, WARN_PUD_NOT_NONE, WARN_HUGE_PMD_NOT_NONE)
from mmcore.huge_memory cimport split_huge_pmd, move_huge_pmd_deposit
from mmcore.memory cimport zap_level, free_pgd_range_c

PUD_STEP_NONE = C_PUD_STEP_NONE
PUD_STEP_IF_PUD_SIZED = C_PUD_STEP_IF_PUD_SIZED
PUD_STEP_ALWAYS = C_PUD_STEP_ALWAYS
WARN_SILENT = C_WARN_SILENT
WARN_ON = C_WARN_ON
WARN_ON_ONCE = C_WARN_ON_ONCE


class KernelBUG(RuntimeError):
    """The modelled kernel would hit BUG()/VM_BUG_ON() here."""


cdef class MoveControl:
    """``struct pagetable_move_control`` (mm/internal.h) and the policy of
    the kernel that runs the loop.

    Example::

        >>> from mmcore import MoveControl
        >>> pmc = MoveControl(0x40000000, 0x80000000, 1 << 30)
        >>> pmc.old_end == 0x40000000 + (1 << 30)
        True
    """
    # The fields are declared in mremap.pxd.

    def __init__(self, uint64_t old_addr, uint64_t new_addr, uint64_t len_in, *,
                 bint for_stack=False, bint need_rmap_locks=False, bint move_pmd=True,
                 bint move_pud=True, int pud_step=C_PUD_STEP_ALWAYS, int pmd_warn=C_WARN_ON_ONCE,
                 int pud_warn=C_WARN_ON_ONCE, int huge_pmd_warn=C_WARN_SILENT):
        # PAGETABLE_MOVE(): old_end is fixed here; realignment moves old_addr
        # and new_addr down but never old_end.
        if old_addr + len_in < old_addr:
            raise OverflowError("old_addr + len overflows")
        self.old_addr = old_addr
        self.new_addr = new_addr
        self.old_end = old_addr + len_in
        self.len_in = len_in
        self.for_stack = for_stack
        self.need_rmap_locks = need_rmap_locks
        self.move_pmd = move_pmd
        self.move_pud = move_pud
        for name, v in (("pud_step", pud_step), ("pmd_warn", pmd_warn), ("pud_warn", pud_warn),
                        ("huge_pmd_warn", huge_pmd_warn)):
            if not 0 <= v <= 2:
                raise ValueError(f"{name} must be 0, 1 or 2")
        self.pud_step = pud_step
        self.pmd_warn = pmd_warn
        self.pud_warn = pud_warn
        self.huge_pmd_warn = huge_pmd_warn

    def __repr__(self):
        return (f"MoveControl(old_addr={self.old_addr:#x}, new_addr={self.new_addr:#x}, "
                f"old_end={self.old_end:#x}, len_in={self.len_in:#x}, for_stack={self.for_stack})")


cdef inline uint64_t get_extent(uint64_t old_addr, uint64_t old_end, uint64_t new_addr,
                                uint64_t size) noexcept nogil:
    """get_extent(): the extent up to the next ``size`` boundary of both the
    source and the destination, and no further than old_end."""
    cdef uint64_t nxt = (old_addr + size) & ~(size - 1)
    # even if next overflowed, extent below will be ok
    cdef uint64_t extent = nxt - old_addr
    if extent > old_end - old_addr:
        extent = old_end - old_addr
    nxt = (new_addr + size) & ~(size - 1)
    if extent > nxt - new_addr:
        extent = nxt - new_addr
    return extent


cdef inline bint warn_if(Engine eng, int policy, int site, bint cond, uint64_t old_addr,
                         uint64_t new_addr) noexcept nogil:
    """``if (WARN_ON(cond))`` / ``WARN_ON_ONCE`` / a silent check."""
    if not cond:
        return False
    if policy != C_WARN_SILENT:
        eng.warn(site, policy == C_WARN_ON_ONCE, old_addr, new_addr)
    return True


cdef inline int64_t entry_index(Engine eng, uint64_t addr, int level) noexcept nogil:
    return <int64_t>((addr >> eng.shift[level]) & eng.imask[level])


cdef bint move_normal_pmd(Engine eng, MoveControl pmc, int64_t ot, int64_t oi, int64_t nt,
                          int64_t ni) noexcept nogil:
    """move_normal_pmd(): hand the whole PTE table to the new PMD slot."""
    cdef uint64_t pmd
    # The destination pmd shouldn't be established, free_pgtables() should
    # have released it.  Exec's overlapping stack shift breaks that (the WARNING
    # of the thread): fall back to moving PTEs one at a time.
    if warn_if(eng, pmc.pmd_warn, WARN_PMD_NOT_NONE, not pmd_none(row(eng, nt)[ni]),
               pmc.old_addr, pmc.new_addr):
        return False
    pmd = row(eng, ot)[oi]
    if not pmd_present(pmd) or pmd_leaf(pmd):  # racing with collapse?
        return False
    row(eng, ot)[oi] = 0                     # pmd_clear(old_pmd)
    row(eng, nt)[ni] = pmd                   # pmd_populate(mm, new_pmd, ...)
    eng.ctr[CTR_PMD_MOVES] += 1
    eng.ctr[CTR_TLB_FLUSHES] += 1            # flush_tlb_range(old_addr, +PMD_SIZE)
    return True


cdef bint move_normal_pud(Engine eng, MoveControl pmc, int64_t ot, int64_t oi, int64_t nt,
                          int64_t ni) noexcept nogil:
    """move_normal_pud(): hand the whole PMD table to the new PUD slot."""
    cdef uint64_t pud
    if warn_if(eng, pmc.pud_warn, WARN_PUD_NOT_NONE, not pud_none(row(eng, nt)[ni]),
               pmc.old_addr, pmc.new_addr):
        return False
    pud = row(eng, ot)[oi]
    row(eng, ot)[oi] = 0
    row(eng, nt)[ni] = pud
    eng.ctr[CTR_PUD_MOVES] += 1
    eng.ctr[CTR_TLB_FLUSHES] += 1
    return True


cdef bint move_huge_pmd(Engine eng, MoveControl pmc, int64_t ot, int64_t oi, int64_t nt,
                        int64_t ni) noexcept nogil:
    """move_huge_pmd() (mm/huge_memory.c): move a THP leaf whole."""
    cdef uint64_t pmd
    if warn_if(eng, pmc.huge_pmd_warn, WARN_HUGE_PMD_NOT_NONE, not pmd_none(row(eng, nt)[ni]),
               pmc.old_addr, pmc.new_addr):
        return False
    pmd = row(eng, ot)[oi]
    row(eng, ot)[oi] = 0                     # pmdp_huge_get_and_clear()
    move_huge_pmd_deposit(eng, ot, nt)       # pmd_move_must_withdraw(): the deposit follows
    row(eng, nt)[ni] = pmd | _PAGE_SOFT_DIRTY # move_soft_dirty_pmd(); set_pmd_at()
    eng.ctr[CTR_HUGE_PMD_MOVES] += 1
    if pmd_present(pmd):
        eng.ctr[CTR_TLB_FLUSHES] += 1
    return True


cdef void move_normal_pmd_run(Engine eng, MoveControl pmc, int64_t ot, int64_t oi, int64_t nt,
                              int64_t ni) noexcept nogil:
    """More move_normal_pmd() in a row, without going round the loop: while
    the next extent is again a whole PMD in the same two PMD tables, with a
    normal table at the source and nothing at the destination, the loop
    would do exactly this.  Anything else (a PUD boundary, a huge leaf, an
    established destination and its warning) goes back to the loop."""
    cdef uint64_t size = eng.pmd_size
    cdef int64_t last = <int64_t>eng.imask[eng.lpmd]
    cdef uint64_t pud_mask = eng.pud_size - 1
    cdef uint64_t *src = row(eng, ot)
    cdef uint64_t *dst = row(eng, nt)
    cdef uint64_t e
    cdef int64_t moved = 0
    while oi <= last and ni <= last and pmc.old_end - pmc.old_addr >= size:
        if pmc.pud_step != C_PUD_STEP_NONE and ((pmc.old_addr & pud_mask) == 0 or
                                                 (pmc.new_addr & pud_mask) == 0):
            break                            # the PUD step may act here
        e = src[oi]
        if pmd_none(e) or pmd_leaf(e) or not pmd_present(e) or not pmd_none(dst[ni]):
            break
        src[oi] = 0
        dst[ni] = e
        oi += 1
        ni += 1
        moved += 1
        pmc.old_addr += size
        pmc.new_addr += size
    eng.ctr[CTR_PMD_MOVES] += moved
    eng.ctr[CTR_TLB_FLUSHES] += moved


cdef void move_ptes(Engine eng, uint64_t extent, int64_t ot, int64_t oi, int64_t nt,
                    int64_t ni) noexcept nogil:
    """move_ptes(): move each non-none PTE of the extent to its new slot.

    Ascending order, as the kernel: correct for moves down, and for moves up
    only when source and destination do not overlap (Kirill's move-up case
    shows what happens otherwise)."""
    cdef uint64_t *old_ptep = row(eng, ot) + oi
    cdef uint64_t *new_ptep = row(eng, nt) + ni
    cdef int64_t nr = <int64_t>(extent >> eng.shift[eng.lpte])
    cdef int64_t k, moved = 0
    cdef uint64_t pte
    cdef bint force_flush = False
    for k in range(nr):
        pte = old_ptep[k]
        if pte_none(pte):
            continue
        if pte_present(pte):
            force_flush = True
            pte = pte_mksoft_dirty(pte)      # move_soft_dirty_pte()
        old_ptep[k] = 0                      # get_and_clear_full_ptes()
        new_ptep[k] = pte                    # set_ptes()
        moved += 1
    eng.ctr[CTR_PTE_MOVES] += moved
    eng.ctr[CTR_PTE_SLOTS_VISITED] += nr
    if force_flush:
        eng.ctr[CTR_TLB_FLUSHES] += 1


cdef struct WalkCache:
    # The table at one level covering the last address looked up, keyed by the
    # address bits above it: within a PUD-span the PMD table cannot change
    # under the loop except by a move_normal_pud(), which resets the cache.
    uint64_t key
    int64_t tid


cdef inline int64_t cached_walk(Engine eng, WalkCache *c, uint64_t addr, int level,
                                bint allocate) noexcept nogil:
    """walk_to()/alloc_to() with a one-entry cache (get_old_pmd()/alloc_new_pmd()
    walk from the pgd each time; the answer is the same within a span)."""
    cdef uint64_t key = addr >> eng.shift[level - 1] if level else 0
    cdef int64_t t
    if c.tid >= 0 and c.key == key:
        return c.tid
    t = eng.alloc_to(addr, level) if allocate else eng.walk_to(addr, level)
    if t >= 0:
        c.key, c.tid = key, t
    return t


cdef void recycle_pte_table(Engine eng, Recycle *rc, int64_t ot, int64_t oi, uint64_t span) noexcept nogil:
    """The source PTE table at slot oi of PMD table ot, all of whose span
    has just been moved, gives its row back for the destination's next
    pte_alloc() (see Recycle).  Without room to record it, it stays."""
    cdef uint64_t e = row(eng, ot)[oi]
    cdef int64_t t, ncap
    cdef uint64_t *na
    cdef uint64_t *nf
    if pmd_none(e) or pmd_leaf(e):
        return
    if rc.n == rc.cap:
        ncap = rc.cap * 2 if rc.cap else 256
        na = <uint64_t*>realloc(rc.addr, ncap * sizeof(uint64_t))
        if na == NULL:
            return
        rc.addr = na
        nf = <uint64_t*>realloc(rc.flags, ncap * sizeof(uint64_t))
        if nf == NULL:
            return
        rc.flags = nf
        rc.cap = ncap
    rc.addr[rc.n] = span
    rc.flags[rc.n] = entry_flags(e)
    rc.n += 1
    row(eng, ot)[oi] = 0
    t = entry_pfn(e)
    eng.tlevel[t] = -1                       # on the free list; tlive still counts it
    eng.tfree[eng.tnfree] = t
    eng.tnfree += 1


cdef void recycle_done(Engine eng, Recycle *rc) noexcept nogil:
    """free_pgtables() has run: the recycled tables are freed now, as the kernel's are."""
    eng.tlive -= rc.n
    eng.ctr[CTR_PGTABLES_FREED] += rc.n
    rc.n = 0


cdef int recycle_undo(Engine eng, Recycle *rc) noexcept nogil:
    """The move stopped early: give the source back the (empty) tables the
    kernel would still have there, outside the page limit and the counters
    (they never went away).  Returns -1 if the host has no memory for them."""
    cdef int64_t i, pt, t, saved = eng.max_pages
    cdef bint hit = eng.limit_hit
    eng.max_pages = INT64_MAX
    for i in range(rc.n):
        pt = eng.walk_to(rc.addr[i], eng.lpmd)
        t = eng.table_alloc(eng.lpte)
        if pt < 0 or t < 0:
            eng.max_pages = saved
            return -1
        eng.tlive -= 1
        eng.ctr[CTR_PGTABLES_ALLOCATED] -= 1
        row(eng, pt)[entry_index(eng, rc.addr[i], eng.lpmd)] = pfn_entry(t, rc.flags[i])
    eng.max_pages = saved
    eng.limit_hit = hit
    rc.n = 0
    return 0


cdef int move_page_tables_c(Engine eng, MoveControl pmc, Recycle *rc) noexcept nogil:
    """The loop of move_page_tables().  Returns -1 if a table allocation
    failed (the kernel breaks out; the caller sees less progress), -2 if the
    destination holds a huge leaf where a table must go (the kernel's
    VM_BUG_ON in alloc_new_pmd(); only a raw, overlapping move gets here).
    ``rc``: NULL, or where emptied source PTE tables are recycled."""
    cdef uint64_t extent
    cdef int64_t ot, nt, oi, ni
    cdef uint64_t e
    cdef int lpud = eng.lpud, lpmd = eng.lpmd, lpte = eng.lpte
    cdef bint have_pud_level = eng.nlev >= 3
    cdef WalkCache old_pud, new_pud, old_pmd, new_pmd
    old_pud.tid = new_pud.tid = old_pmd.tid = new_pmd.tid = -1
    if pmc.len_in == 0:
        return 0
    while pmc.old_addr < pmc.old_end:       # !pmc_done(pmc)
        # ---- PUD level --------------------------------------------------------
        extent = get_extent(pmc.old_addr, pmc.old_end, pmc.new_addr, eng.pud_size)
        if have_pud_level and (pmc.pud_step == C_PUD_STEP_ALWAYS or
                               (pmc.pud_step == C_PUD_STEP_IF_PUD_SIZED and pmc.move_pud
                                and extent == eng.pud_size)):
            ot = cached_walk(eng, &old_pud, pmc.old_addr, lpud, False)   # get_old_pud()
            oi = entry_index(eng, pmc.old_addr, lpud)
            if ot < 0 or pud_none(row(eng, ot)[oi]):
                pmc.old_addr += extent; pmc.new_addr += extent
                continue
            nt = cached_walk(eng, &new_pud, pmc.new_addr, lpud, True)    # alloc_new_pud()
            if nt < 0:
                return -1
            ni = entry_index(eng, pmc.new_addr, lpud)
            if pmc.move_pud and extent == eng.pud_size and not pud_leaf(row(eng, ot)[oi]):
                if move_normal_pud(eng, pmc, ot, oi, nt, ni):
                    old_pmd.tid = new_pmd.tid = -1                 # PMD tables changed hands
                    pmc.old_addr += extent; pmc.new_addr += extent
                    continue
        # ---- PMD level --------------------------------------------------------
        extent = get_extent(pmc.old_addr, pmc.old_end, pmc.new_addr, eng.pmd_size)
        ot = cached_walk(eng, &old_pmd, pmc.old_addr, lpmd, False)       # get_old_pmd()
        oi = entry_index(eng, pmc.old_addr, lpmd)
        if ot < 0 or pmd_none(row(eng, ot)[oi]):
            pmc.old_addr += extent; pmc.new_addr += extent
            continue
        nt = cached_walk(eng, &new_pmd, pmc.new_addr, lpmd, True)        # alloc_new_pmd()
        if nt < 0:
            return -2 if nt == -2 else -1
        ni = entry_index(eng, pmc.new_addr, lpmd)
        e = row(eng, ot)[oi]
        if pmd_trans_huge(e):
            if extent == eng.pmd_size and move_huge_pmd(eng, pmc, ot, oi, nt, ni):
                pmc.old_addr += extent; pmc.new_addr += extent
                continue
            if split_huge_pmd(eng, ot, oi) < 0:
                return -1
        elif pmc.move_pmd and extent == eng.pmd_size:
            if move_normal_pmd(eng, pmc, ot, oi, nt, ni):
                pmc.old_addr += extent; pmc.new_addr += extent
                move_normal_pmd_run(eng, pmc, ot, oi + 1, nt, ni + 1)
                continue
        if pmd_none(row(eng, ot)[oi]):
            pmc.old_addr += extent; pmc.new_addr += extent
            continue
        # pte_alloc(new_pmd)
        if pmd_none(row(eng, nt)[ni]):
            e = eng.table_alloc(lpte)
            if <int64_t>e < 0:
                return -1
            row(eng, nt)[ni] = pfn_entry(<int64_t>e, _PAGE_TABLE)
        elif pmd_leaf(row(eng, nt)[ni]):
            return -2  # VM_BUG_ON(pmd_trans_huge(*new_pmd)) in alloc_new_pmd()
        move_ptes(eng, extent, entry_pfn(row(eng, ot)[oi]), entry_index(eng, pmc.old_addr, lpte),
                  entry_pfn(row(eng, nt)[ni]), entry_index(eng, pmc.new_addr, lpte))
        if rc != NULL and (pmc.old_addr + extent) & (eng.pmd_size - 1) == 0 and \
                (pmc.old_addr & ~(eng.pmd_size - 1)) >= rc.lo and pmc.old_addr + extent <= rc.hi:
            recycle_pte_table(eng, rc, ot, oi, pmc.old_addr & ~(eng.pmd_size - 1))
        pmc.old_addr += extent; pmc.new_addr += extent   # pmc_next()
    return 0


def move_range(Engine eng not None, uint64_t old_addr, uint64_t new_addr, uint64_t old_end,
               uint64_t len_in, MoveControl policy not None):
    """The move_page_tables() loop without building a MoveControl per call:
    the addresses come as arguments, everything else from ``policy`` (a
    MoveControl used as a template; it is not modified).  Returns the final
    pmc.old_addr, or raises as move_page_tables() does.  pymm's syscalls use
    this; experiments can use either.

    Example::

        >>> policy = MoveControl(0, 0, 0, move_pmd=False)      # a kernel without PMD moves
        >>> hex(move_range(eng, 0x40000000, 0x80000000, 0x40200000, 0x200000, policy))
        '0x40200000'
        >>> eng.stats()["pte_moves"]
        512
    """
    cdef MoveControl pmc
    eng.enter()
    try:
        pmc = MoveControl.__new__(MoveControl)
        pmc.old_addr, pmc.new_addr, pmc.old_end, pmc.len_in = old_addr, new_addr, old_end, len_in
        pmc.for_stack, pmc.need_rmap_locks = policy.for_stack, policy.need_rmap_locks
        pmc.move_pmd, pmc.move_pud, pmc.pud_step = policy.move_pmd, policy.move_pud, policy.pud_step
        pmc.pmd_warn, pmc.pud_warn, pmc.huge_pmd_warn = policy.pmd_warn, policy.pud_warn, policy.huge_pmd_warn
        run_move(eng, pmc)
        return pmc.old_addr
    finally:
        eng.leave()


cdef MoveControl policy_copy(MoveControl policy):
    """A MoveControl with ``policy``'s kernel bits, to be given addresses."""
    cdef MoveControl pmc = MoveControl.__new__(MoveControl)
    pmc.for_stack, pmc.need_rmap_locks = policy.for_stack, policy.need_rmap_locks
    pmc.move_pmd, pmc.move_pud, pmc.pud_step = policy.move_pmd, policy.move_pud, policy.pud_step
    pmc.pmd_warn, pmc.pud_warn, pmc.huge_pmd_warn = policy.pmd_warn, policy.pud_warn, policy.huge_pmd_warn
    return pmc


cdef uint64_t move_and_unmap(Engine eng, MoveControl pmc, uint64_t old_addr, uint64_t new_addr,
                             uint64_t length, uint64_t floor, uint64_t ceiling) except? 0:
    """move_vma()'s page-table work: the loop as move_range() runs it (with
    pmc's policy), then, if every entry moved, unmap_source_vma()'s zap
    and free_pgtables()'s free_pgd_range().  Returns the loop's final
    old_addr."""
    cdef uint64_t end = old_addr + length
    cdef Recycle rc
    cdef int undone = 0
    rc.lo, rc.hi, rc.addr, rc.flags, rc.n, rc.cap = old_addr, end, NULL, NULL, 0, 0
    eng.enter()
    try:
        pmc.old_addr, pmc.new_addr, pmc.old_end, pmc.len_in = old_addr, new_addr, end, length
        try:
            run_move(eng, pmc, &rc)
        finally:
            with nogil:
                if pmc.old_addr == end and length:
                    zap_level(eng, 0, 0, old_addr, end)                    # unmap_vmas()
                    free_pgd_range_c(eng, old_addr, end, floor, ceiling)   # free_pgtables()
                    recycle_done(eng, &rc)
                elif rc.n:
                    undone = recycle_undo(eng, &rc)
            free(rc.addr)
            free(rc.flags)
        if undone < 0:
            raise MemoryError("move_page_tables: no host memory to give the source its tables back")
        return pmc.old_addr
    finally:
        eng.leave()


def move_vma_tables(Engine eng not None, uint64_t old_addr, uint64_t new_addr, uint64_t length,
                    MoveControl policy not None, uint64_t floor, uint64_t ceiling):
    """move_vma()'s page-table work in one call: move_page_tables() over
    [old_addr, old_addr+length) as :func:`move_range` runs it, then, if
    every entry moved, unmap_source_vma()'s zap_page_range() and
    free_pgd_range(old_addr, old_addr+length, floor, ceiling) (floor and
    ceiling: the neighbouring VMAs' end and start, as free_pgtables()
    finds them).  Returns the final pmc.old_addr; below old_addr+length
    nothing is unmapped (the caller moves the entries back).  The same
    steps as the three calls one after another, for a whole-VMA move.

    Example::

        >>> policy = MoveControl(0, 0, 0)
        >>> hex(move_vma_tables(eng, 0x40000000, 0x80000000, 0x200000, policy, 0, 0))
        '0x40200000'
        >>> eng.stats()["pmd_moves"], eng.stats()["pgtables_freed"] > 0
        (1, True)
    """
    if old_addr + length < old_addr:
        raise OverflowError("old_addr + length overflows")
    if floor > eng.va_limit or ceiling > eng.va_limit:
        raise ValueError("move_vma_tables: floor/ceiling beyond the address space")
    return move_and_unmap(eng, policy_copy(policy), old_addr, new_addr, length, floor, ceiling)


cdef inline uint64_t _u(object x) except? 0xFFFFFFFFFFFFFFFF:
    return <uint64_t>x


cdef Py_ssize_t _bisect_right(list starts, uint64_t x) except -1:
    """bisect.bisect_right() on a list of ints (the VMA tree's starts)."""
    cdef Py_ssize_t lo = 0, hi = len(starts), mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if x < _u(starts[mid]):
            hi = mid
        else:
            lo = mid + 1
    return lo


cdef class WholeVmaMove:
    """mremap(addr, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, new_addr) of one
    whole VMA to an empty place with no neighbour to merge with, for a
    kernel whose hooks change nothing there: do_mremap()'s checks,
    copy_vma() (the VMA itself moves: same fields, same references),
    move_page_tables(), and the source's unmap with the floor and ceiling
    free_pgtables() would use, in one call.  pymm keeps one per address
    space; the VMA tree is pymm's (its sorted ``starts`` and ``vmas``
    lists, objects with start, end, vm_flags, pgoff, anon and shm).

    :meth:`move` returns new_addr, or NOT_TAKEN (nothing changed: any other
    case and every error, which the general path takes), WARNED (moved;
    warnings are pending in the engine) or INCOMPLETE (the loop stopped
    early: nothing unmapped, the tree unchanged, :attr:`vma` and
    :attr:`done` say what and how much).

    Example::

        >>> class V:
        ...     def __init__(self, start, end):
        ...         self.start, self.end, self.vm_flags, self.pgoff, self.anon, self.shm = start, end, 0, 0, o, None
        >>> starts, vmas = [0x40000000], [V(0x40000000, 0x40200000)]
        >>> mover = WholeVmaMove(MoveControl(0, 0, 0), 1 << 47, 12, 1 << 21, False, 0)
        >>> hex(mover.move(eng, starts, vmas, 0x40000000, 0x200000, 0x80000000, 65530, 65536))
        '0x80000000'
        >>> hex(vmas[0].start), starts == [0x80000000], eng.stats()["pmd_moves"]
        ('0x80000000', True, 1)
    """
    cdef readonly MoveControl policy
    cdef MoveControl pmc                 # the policy's copy each move fills in
    cdef readonly uint64_t task_size, pmd_size, general_only
    cdef readonly int page_shift
    cdef readonly bint realign
    cdef public object vma
    cdef public uint64_t done

    NOT_TAKEN = -1
    WARNED = -2
    INCOMPLETE = -3

    def __init__(self, MoveControl policy not None, uint64_t task_size, int page_shift, uint64_t pmd_size,
                 bint realign, uint64_t general_only):
        if not 0 < page_shift < 32 or pmd_size & (pmd_size - 1) or pmd_size >> page_shift == 0:
            raise ValueError("page_shift and pmd_size must describe a page and a PMD")
        self.policy = policy
        self.pmc = policy_copy(policy)
        self.task_size = task_size
        self.page_shift = page_shift
        self.pmd_size = pmd_size
        self.realign = realign
        self.general_only = general_only

    def move(self, Engine eng not None, list starts not None, list vmas not None, uint64_t addr,
             uint64_t length, uint64_t new_addr, int64_t max_map_count, uint64_t mmap_min_addr):
        cdef uint64_t end = addr + length, new_end = new_addr + length
        cdef uint64_t pm = ((<uint64_t>1) << self.page_shift) - 1, dm = self.pmd_size - 1
        cdef uint64_t floor, ceiling, reached
        cdef Py_ssize_t n = len(vmas), i, j
        cdef object vma
        if len(starts) != n:
            raise ValueError("starts and vmas differ in length")
        # check_mremap_params(), get_unmapped_area()'s checks, prep_move_vma()'s map count
        if end < addr or new_end < new_addr or not length or (addr | length | new_addr) & pm \
                or new_end > self.task_size or (end > new_addr and new_end > addr) \
                or new_addr < mmap_min_addr or n + 2 >= max_map_count - 3:
            return -1
        i = _bisect_right(starts, addr) - 1                  # vma_lookup()
        if i < 0:
            return -1
        vma = vmas[i]
        if _u(vma.start) != addr or _u(vma.end) != end or _u(vma.vm_flags) & self.general_only:
            return -1                                         # part of a VMA: splits
        j = _bisect_right(starts, new_addr)                   # where copy_vma() puts the new VMA
        if (j and _u(vmas[j - 1].end) >= new_addr) or (j < n and _u(vmas[j].start) <= new_end):
            return -1                                         # to unmap, or a neighbour to merge
        if self.realign and addr & dm and not (addr ^ new_addr) & dm and length >= self.pmd_size - (addr & dm):
            return -1                                         # try_realign_addr() may act
        floor = new_end if j == i else (_u(vmas[i - 1].end) if i else 0)
        ceiling = new_addr if j == i + 1 else (_u(vmas[i + 1].start) if i + 1 < n else 0)
        reached = move_and_unmap(eng, self.pmc, addr, new_addr, length, floor, ceiling)
        if reached != end:
            self.vma, self.done = vma, reached - addr
            return -3
        if vma.shm is None and not vma.anon:
            vma.pgoff = new_addr >> self.page_shift          # copy_vma(): unfaulted, new pgoff
        vma.start, vma.end = new_addr, new_end
        if j == i or j == i + 1:                              # the same place in the order
            starts[i] = new_addr
        else:
            del starts[i]
            del vmas[i]
            if j > i:
                j -= 1
            starts.insert(j, new_addr)
            vmas.insert(j, vma)
        return -2 if eng.nwarn else new_addr


def move_page_tables(Engine eng not None, MoveControl pmc not None):
    """Run the move_page_tables() loop on ``eng`` as ``pmc`` describes.

    Moves the page-table entries of [pmc.old_addr, pmc.old_end) to
    pmc.new_addr and advances pmc.old_addr/new_addr as the kernel's loop
    does.  Returns True if the loop finished, False if it stopped early
    (out of memory).  How many bytes that counts as moved is the kernel
    version's business (pmc_progress() today, ``len + old_addr - old_end``
    in 5.8), so the caller computes it from pmc.

    Example::

        >>> pmc = MoveControl(0x40000000, 0x80000000, 1 << 30)
        >>> move_page_tables(eng, pmc)
        True
    """
    eng.enter()
    try:
        return run_move(eng, pmc)
    finally:
        eng.leave()


cdef object run_move(Engine eng, MoveControl pmc, Recycle *rc=NULL):
    """move_page_tables() for both entry points: validate pmc against the
    engine, run the loop, turn its failures into exceptions."""
    cdef uint64_t limit = eng.va_limit
    cdef int r
    if pmc.old_end < pmc.old_addr:
        raise ValueError("pmc.old_end is below pmc.old_addr")
    if pmc.old_end > limit or pmc.old_addr >= limit and pmc.len_in:
        raise ValueError("source range beyond the address space")
    if pmc.new_addr >= limit and pmc.len_in or pmc.new_addr + (pmc.old_end - pmc.old_addr) > limit:
        raise ValueError("destination range beyond the address space")
    if (pmc.old_addr | pmc.new_addr | pmc.old_end) & (eng.page_size - 1):
        raise ValueError("move_page_tables needs page-aligned addresses")
    with nogil:
        r = move_page_tables_c(eng, pmc, rc)
    if r == -2:
        raise KernelBUG(f"move_page_tables: destination {pmc.new_addr:#x} is mapped by a huge "
                        "PMD where a page table must go (VM_BUG_ON in alloc_new_pmd())")
    return r == 0
