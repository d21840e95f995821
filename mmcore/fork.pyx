# cython: language_level=3
"""fork's page-table half: kernel/fork.c dup_mmap() calls copy_page_range()
(mm/memory.c) for each VMA it copies, which shares private anonymous pages
copy-on-write (copy_present_pte(): both entries write-protected, one more
mapping of the page) and huge PMDs likewise (copy_huge_pmd(),
mm/huge_memory.c); exit_mmap() (mm/mmap.c) takes a process's page tables
down.  A process is an engine context (mm_alloc(), switch_mm(), mmdrop()); the
frames and owners are shared by every context of the engine.

Example::

    >>> import mmcore
    >>> eng = mmcore.Engine(mmcore.X86_64)
    >>> o = eng.owner_new("anon")
    >>> GiB = 1 << 30
    >>> mmcore.handle_mm_fault(eng, GiB, GiB + 8192, vma_start=GiB, vma_end=GiB + 8192,
    ...                        owner=o, pgoff=GiB >> 12, write=True, fill=0x5a)
    >>> child = mmcore.mm_alloc(eng)
    >>> mmcore.copy_page_range(eng, 0, child, GiB, GiB + 8192)
    >>> f = mmcore.translate(eng, GiB); mmcore.folio_mapcount(eng, f), mmcore.translate(eng, GiB, write=True)
    (2, -1)
    >>> mmcore.switch_mm(eng, child); mmcore.read_bytes(eng, GiB, 2), eng.rss()
    ((b'ZZ', 2), (2, 0))
"""
from libc.stdint cimport uint64_t, int64_t
from libc.stdlib cimport calloc, realloc
from libc.string cimport memset

from mmcore._entries cimport *
from mmcore._core cimport (Engine, Context, row, span_end, is_zero_frame, rmap_owner, rmap_index,
                           mapcount_extra, pgtable_trans_huge_deposit, shmem_mapped, OWNER_SHMEM, TAG_KIND_MASK, TAG_FREE,
                           CTR_PGTABLES_ALLOCATED,
                           CTR_PGTABLES_FREED)
from mmcore.memory cimport zap_level, free_pgd_range_c


cdef inline uint64_t copy_leaf(Engine eng, uint64_t *srcp, int64_t n, bint cow) noexcept nogil:
    """copy_present_pte() / copy_huge_pmd() on one present leaf mapping n
    frames: one more mapping of each (the zero page is not counted), both
    entries write-protected for a COW mapping; the child's entry is old."""
    cdef uint64_t e = srcp[0]
    cdef int64_t f = entry_pfn(e), i, owner, idx
    if not is_zero_frame(eng, f) and not pte_special(e):
        owner = rmap_owner(eng.frmap[f])
        if owner > 0 and eng.okind[owner] == OWNER_SHMEM:
            for i in range(n):
                idx = <int64_t>rmap_index(eng.frmap[f + i])
                shmem_mapped(eng, owner, idx)
            eng.rss_shmem += n
        else:
            for i in range(n):
                eng.fmapc[f + i] += 1
            eng.rss_anon += n
    if cow and pte_write(e):
        e &= ~(<uint64_t>_PAGE_RW)                # ptep_set_wrprotect() on the parent's
        srcp[0] = e
    return e & ~(<uint64_t>_PAGE_ACCESSED)       # pte_mkold()


cdef int copy_level(Engine eng, int l, int64_t st, uint64_t addr, uint64_t end, bint cow) noexcept nogil:
    """copy_p4d_range() -> copy_pud_range() -> copy_pmd_range() ->
    copy_pte_range(): below the parent's table st (level l), every leaf of
    [addr, end) into the current (the child's) tables.  -1: out of memory."""
    cdef uint64_t size = (<uint64_t>1) << eng.shift[l]
    cdef uint64_t nxt, e, c
    cdef int64_t i = (addr >> eng.shift[l]) & eng.imask[l]
    cdef int64_t dt, k, n, pgtable
    cdef uint64_t *src
    cdef uint64_t *dst
    if l == eng.lpte:
        dt = eng.alloc_to(addr, l)
        if dt < 0:
            return -1
        n = <int64_t>((end - addr + size - 1) >> eng.shift[l])
        src = row(eng, st) + i                 # after the allocation: the rows may have moved
        dst = row(eng, dt) + i
        for k in range(n):
            if src[k] == 0:
                continue
            dst[k] = copy_leaf(eng, src + k, 1, cow) if pte_present(src[k]) else src[k]
        return 0
    while addr < end:
        nxt = span_end(addr, end, size)
        e = row(eng, st)[i]
        if e != 0:
            if pmd_leaf(e):
                # copy_huge_pmd() (a VMA boundary never cuts a huge PMD: vma_adjust_trans_huge())
                dt = eng.alloc_to(addr, l)
                if dt < 0:
                    return -1
                if pmd_present(e):
                    # pte_alloc_one() + pgtable_trans_huge_deposit() for the child's
                    # copy: every huge PMD pymm makes is anonymous or the huge zero page
                    pgtable = eng.table_alloc(eng.lpte)
                    if pgtable < 0:
                        return -1
                    pgtable_trans_huge_deposit(eng, dt, pgtable)
                c = copy_leaf(eng, row(eng, st) + i, <int64_t>(size >> eng.shift[eng.lpte]), cow) \
                    if pmd_present(e) else e
                row(eng, dt)[i] = c
            elif copy_level(eng, l + 1, entry_pfn(e), addr, nxt, cow) < 0:
                return -1
        addr = nxt
        i += 1
    return 0


def copy_page_range(Engine eng not None, int64_t src, int64_t dst, uint64_t start, uint64_t end,
                    bint cow=True):
    """copy_page_range(dst_vma, src_vma) for [start, end): process context
    ``dst`` (the child, usually empty there) gets the entries of ``src``.
    ``cow``: a private writable-capable mapping (is_cow_mapping()): the
    anonymous pages become copy-on-write in both.  The child's counters and
    RSS count what it gets.

    Example::

        >>> import mmcore; GiB = 1 << 30
        >>> e2 = mmcore.Engine(mmcore.X86_64); o2 = e2.owner_new("anon")
        >>> mmcore.handle_mm_fault(e2, GiB, GiB + 4096, vma_start=GiB, vma_end=GiB + 4096,
        ...                        owner=o2, pgoff=GiB >> 12, write=True)
        >>> c = mmcore.mm_alloc(e2); mmcore.copy_page_range(e2, 0, c, GiB, GiB + 4096)
        >>> mmcore.switch_mm(e2, c); e2.stats()["pgtables_allocated"], e2.n_tables
        (3, 3)
    """
    cdef int before = eng.cur
    cdef int r
    cdef int64_t sroot
    eng.enter()
    try:
        eng._check_ctx(src)
        eng._check_ctx(dst)
        if src == dst:
            raise ValueError("copy_page_range: the child must be another process")
        eng._check_range(start, end)
        eng._check_page_aligned(start, end)
        with nogil:
            eng.switch_ctx(<int>src)
            sroot = eng.root
            eng.switch_ctx(<int>dst)
            r = copy_level(eng, 0, sroot, start, end, cow) if start < end else 0
            eng.switch_ctx(before)
        if r < 0:
            raise eng.oom_error("copy_page_range")
    finally:
        eng.leave()


def exit_mmap(Engine eng not None, int64_t ctx):
    """exit_mmap(): unmap everything process context ``ctx`` maps (pages
    another process still maps stay, one mapping fewer) and free its page
    tables but the pgd; mmdrop() then frees the context.

    Example::

        >>> import mmcore; GiB = 1 << 30
        >>> e2 = mmcore.Engine(mmcore.X86_64); o2 = e2.owner_new("anon")
        >>> mmcore.handle_mm_fault(e2, GiB, GiB + 4096, vma_start=GiB, vma_end=GiB + 4096,
        ...                        owner=o2, pgoff=GiB >> 12, write=True)
        >>> c = mmcore.mm_alloc(e2); mmcore.copy_page_range(e2, 0, c, GiB, GiB + 4096)
        >>> mmcore.exit_mmap(e2, c); mmcore.mmdrop(e2, c)
        >>> mmcore.folio_mapcount(e2, mmcore.translate(e2, GiB)), mmcore.mm_contexts(e2)
        (1, [0])
    """
    cdef int before = eng.cur
    eng.enter()
    try:
        eng._check_ctx(ctx)
        with nogil:
            eng.switch_ctx(<int>ctx)
            zap_level(eng, 0, eng.root, 0, eng.va_limit)
            free_pgd_range_c(eng, 0, eng.va_limit, 0, 0)
            eng.switch_ctx(before)
    finally:
        eng.leave()


# ---------------------------------------------------------------------- processes
def mm_alloc(Engine eng not None):
    """mm_alloc() + pgd_alloc() for fork: a new process context sharing the
    engine's frames and owners, with an empty pgd and zero counters.
    Returns its id; switch_mm() makes it current.  The first call also
    starts the per-frame map counts.

    Example::

        >>> import mmcore
        >>> e = mmcore.Engine(mmcore.X86_64)
        >>> child = mm_alloc(e)
        >>> switch_mm(e, child); e.context, e.n_tables, mm_contexts(e)
        (1, 0, [0, 1])
    """
    cdef int ctx, n
    cdef int64_t t
    cdef Context *nc
    eng.enter()
    try:
        if eng.fmapc == NULL and eng.grow_mapcount(max(eng.fcap, 1)) < 0:
            raise MemoryError("mm_alloc: the map counts")
        if eng.ctxs == NULL:
            eng.ctxs = <Context*>calloc(8, sizeof(Context))
            if eng.ctxs == NULL:
                raise MemoryError("mm_alloc")
            eng.nctx = 1
            eng.ctxs[0].used = True
        n = eng.nctx
        for ctx in range(n):
            if not eng.ctxs[ctx].used:
                break
        else:
            ctx = n
            if n % 8 == 0:
                nc = <Context*>realloc(eng.ctxs, (n + 8) * sizeof(Context))
                if nc == NULL:
                    raise MemoryError("mm_alloc")
                eng.ctxs = nc
        t = eng.table_alloc(0)
        if t < 0:
            raise eng.oom_error("mm_alloc: the pgd")
        eng.ctx_tlive -= 1                       # the pgd is the new process's
        eng.ctr[CTR_PGTABLES_ALLOCATED] -= 1
        if ctx == n:
            eng.nctx += 1
        memset(&eng.ctxs[ctx], 0, sizeof(Context))
        eng.ctxs[ctx].root = t
        eng.ctxs[ctx].tlive = 1
        eng.ctxs[ctx].used = True
        return ctx
    finally:
        eng.leave()


def switch_mm(Engine eng not None, int64_t ctx):
    """switch_mm(): make process context ``ctx`` current: every call below
    walks its page tables and counts into its counters, until the next
    switch.

    Example::

        >>> import mmcore
        >>> e = mmcore.Engine(mmcore.X86_64); c = mm_alloc(e)
        >>> switch_mm(e, c); switch_mm(e, 0); e.context
        0
    """
    eng.enter()
    try:
        if ctx != eng.cur:
            eng._check_ctx(ctx)
            eng.switch_ctx(<int>ctx)
    finally:
        eng.leave()


def mmdrop(Engine eng not None, int64_t ctx):
    """mmdrop() -> mm_free_pgd(): the context's pgd and slot go (not the
    current context's; exit_mmap() has emptied its page tables).

    Example::

        >>> import mmcore
        >>> e = mmcore.Engine(mmcore.X86_64); c = mm_alloc(e)
        >>> mmdrop(e, c); mm_contexts(e)
        [0]
    """
    cdef int64_t i, t
    eng.enter()
    try:
        eng._check_ctx(ctx)
        if ctx == eng.cur:
            raise ValueError("mmdrop: the current context cannot go (switch_mm() first)")
        t = eng.ctxs[ctx].root
        for i in range(eng.ents):
            if row(eng, t)[i] != 0:
                raise ValueError(f"mmdrop: context {ctx}'s page tables are not empty (exit_mmap first)")
        eng.table_free(t)
        eng.ctx_tlive += 1                       # it was the dropped context's
        eng.ctr[CTR_PGTABLES_FREED] -= 1
        eng.ctxs[ctx].used = False
    finally:
        eng.leave()


def mm_contexts(Engine eng not None):
    """The live process contexts of the engine, in id order.

    Example::

        >>> import mmcore
        >>> mm_contexts(mmcore.Engine(mmcore.X86_64))
        [0]
    """
    eng.enter()
    try:
        if eng.ctxs == NULL:
            return [0]
        return [i for i in range(eng.nctx) if eng.ctxs[i].used]
    finally:
        eng.leave()


def folio_mapcount(Engine eng not None, int64_t f):
    """folio_mapcount() of anonymous frame f: how many page-table entries
    map it, over every process of the engine (0: a free frame).

    Example::

        >>> import mmcore
        >>> e = mmcore.Engine(mmcore.X86_64); o = e.owner_new("anon")
        >>> mmcore.handle_mm_fault(e, 1 << 30, (1 << 30) + 4096, vma_start=1 << 30,
        ...                        vma_end=(1 << 30) + 4096, owner=o, pgoff=1 << 18, write=True)
        >>> folio_mapcount(e, mmcore.translate(e, 1 << 30))
        1
    """
    eng.enter()
    try:
        if not 0 <= f < eng.fhw:
            raise ValueError(f"frame {f} out of range")
        if (eng.ftag[f] & TAG_KIND_MASK) == TAG_FREE:
            return 0
        return 1 + mapcount_extra(eng, f)
    finally:
        eng.leave()


def anon_vma_parent(Engine eng not None, int64_t o):
    """anon_vma->parent: the anon_vma owner ``o`` was forked from (0: none;
    Engine.owner_new("anon", parent=...) sets it).

    Example::

        >>> import mmcore
        >>> e = mmcore.Engine(mmcore.X86_64); p = e.owner_new("anon")
        >>> anon_vma_parent(e, e.owner_new("anon", parent=p)) == p, anon_vma_parent(e, p)
        (True, 0)
    """
    eng.enter()
    try:
        eng._check_owner(o)
        return eng.oparent[o]
    finally:
        eng.leave()
