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
from libc.stdint cimport uint64_t, int64_t

from mmcore._entries cimport *
from mmcore._core cimport (Engine, row, CTR_PTE_MOVES, CTR_PMD_MOVES, CTR_PUD_MOVES,
                           CTR_HUGE_PMD_MOVES, CTR_TLB_FLUSHES, CTR_PTE_SLOTS_VISITED,
                           WARN_PMD_NOT_NONE, WARN_PUD_NOT_NONE, WARN_HUGE_PMD_NOT_NONE)
from mmcore.huge_memory cimport split_huge_pmd, move_huge_pmd_deposit

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


cdef int move_page_tables_c(Engine eng, MoveControl pmc) noexcept nogil:
    """The loop of move_page_tables().  Returns -1 if a table allocation
    failed (the kernel breaks out; the caller sees less progress), -2 if the
    destination holds a huge leaf where a table must go (the kernel's
    VM_BUG_ON in alloc_new_pmd(); only a raw, overlapping move gets here)."""
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


cdef object run_move(Engine eng, MoveControl pmc):
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
        r = move_page_tables_c(eng, pmc)
    if r == -2:
        raise KernelBUG(f"move_page_tables: destination {pmc.new_addr:#x} is mapped by a huge "
                        "PMD where a page table must go (VM_BUG_ON in alloc_new_pmd())")
    return r == 0
