# cython: language_level=3
"""fork's page-table half: kernel/fork.c dup_mmap() calls copy_page_range()
(mm/memory.c) for each VMA it copies, which shares private anonymous pages
copy-on-write (copy_present_pte(): both entries write-protected, one more
mapping of the page) and huge PMDs likewise (copy_huge_pmd(),
mm/huge_memory.c); exit_mmap() (mm/mmap.c) takes a process's page tables
down.  A process is an engine context (Engine.mm_alloc()/switch_mm()); the
frames and owners are shared by every context of the engine.

Example::

    >>> import mmcore
    >>> eng = mmcore.Engine(mmcore.X86_64)
    >>> o = eng.owner_new("anon")
    >>> GiB = 1 << 30
    >>> mmcore.handle_mm_fault(eng, GiB, GiB + 8192, vma_start=GiB, vma_end=GiB + 8192,
    ...                        owner=o, pgoff=GiB >> 12, write=True, fill=0x5a)
    >>> child = eng.mm_alloc()
    >>> mmcore.copy_page_range(eng, 0, child, GiB, GiB + 8192)
    >>> f = mmcore.translate(eng, GiB); eng.mapcount(f), mmcore.translate(eng, GiB, write=True)
    (2, -1)
    >>> eng.switch_mm(child); mmcore.read_bytes(eng, GiB, 2), eng.rss()
    ((b'ZZ', 2), (2, 0))
"""
from libc.stdint cimport uint64_t, int64_t

from mmcore._entries cimport *
from mmcore._core cimport Engine, row, span_end, is_zero_frame, rmap_owner, rmap_index, OWNER_SHMEM
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
                if idx < eng.onpages[owner] and eng.omapc[owner][idx] < 0xFFFF:
                    eng.omapc[owner][idx] += 1
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
    cdef int64_t dt, k, n
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
        >>> c = e2.mm_alloc(); mmcore.copy_page_range(e2, 0, c, GiB, GiB + 4096)
        >>> e2.switch_mm(c); e2.stats()["pgtables_allocated"], e2.n_tables
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
    tables but the pgd; Engine.mm_free() then frees the context.

    Example::

        >>> import mmcore; GiB = 1 << 30
        >>> e2 = mmcore.Engine(mmcore.X86_64); o2 = e2.owner_new("anon")
        >>> mmcore.handle_mm_fault(e2, GiB, GiB + 4096, vma_start=GiB, vma_end=GiB + 4096,
        ...                        owner=o2, pgoff=GiB >> 12, write=True)
        >>> c = e2.mm_alloc(); mmcore.copy_page_range(e2, 0, c, GiB, GiB + 4096)
        >>> mmcore.exit_mmap(e2, c); e2.mm_free(c)
        >>> e2.mapcount(mmcore.translate(e2, GiB)), e2.contexts
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
