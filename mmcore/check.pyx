# cython: language_level=3
"""The invariant scan and the digest, after mm/page_table_check.c.

With CONFIG_PAGE_TABLE_CHECK the kernel keeps per-page map counts as entries
are set and cleared (page_table_check_set()/page_table_check_clear()) and
BUGs when an anonymous page is mapped writable twice or a freed page is still
mapped (__page_table_check_zero()).  pymm checks the same things, and the
rmap and the table tree, in one scan after each syscall: walk every table
and leaf, count the mappings of each frame, compare with the VMAs.

Example::

    >>> import numpy as np, mmcore
    >>> eng = mmcore.Engine(mmcore.X86_64)
    >>> o = eng.owner_new("anon")
    >>> mmcore.handle_mm_fault(eng, 1 << 30, (1 << 30) + 4096, vma_start=1 << 30,
    ...                        vma_end=(1 << 30) + 4096, owner=o, pgoff=(1 << 30) >> 12, write=True)
    >>> v = lambda *xs, t=np.uint64: np.array(xs, dtype=t)
    >>> mmcore.check_scan(eng, v(1 << 30), v((1 << 30) + 4096), v(o, t=np.int64), v((1 << 30) >> 12))
    []
"""
from libc.stdlib cimport calloc, free
from libc.stdint cimport uint64_t, int64_t, uint8_t
cimport numpy as cnp

from mmcore._entries cimport *
from mmcore._core cimport (Engine, row, is_zero_frame, rmap_owner, rmap_index, mapcount_extra,
                           OWNER_SHMEM, shmem_mapcount, TAG_KIND_MASK, TAG_FREE)

cnp.import_array()

# Problems reported by check_scan() (see pymm.check).
PROBLEM_CODES = (
    "orphan-pte",          # a present leaf maps an address outside every VMA
    "rmap-owner",          # frame's owner is not the VMA's anon_vma / shmem object
    "rmap-index",          # frame's index is not vm_pgoff + offset
    "maps-free-frame",     # a leaf points at a frame the allocator thinks is free
    "double-mapped",       # an anonymous frame is mapped by more than one leaf
    "lost-frame",          # an allocated anonymous frame is mapped by no leaf
    "shmem-mapcount",      # a shmem page's map count differs from its mappings
    "table-unreachable",   # an allocated page-table page is not in the tree
    "table-level",         # a table is linked at the wrong level or twice
    "stale-table",         # a page-table page covers no VMA (should have been freed)
    "frame-count",         # the allocator's live-frame count disagrees with the scan
    "deposit",             # a PMD table's deposited PTE tables differ from its huge PMDs
    "anon-mapcount",       # a frame forked processes share: mappings differ from its map count
    "writable-shared",     # a COW-shared anonymous frame is mapped writable
)

# Indices into PROBLEM_CODES.
cdef enum:
    P_ORPHAN = 0
    P_RMAP_OWNER = 1
    P_RMAP_INDEX = 2
    P_MAPS_FREE_FRAME = 3
    P_DOUBLE_MAPPED = 4
    P_LOST_FRAME = 5
    P_SHMEM_MAPCOUNT = 6
    P_TABLE_UNREACHABLE = 7
    P_TABLE_LEVEL = 8
    P_STALE_TABLE = 9
    P_FRAME_COUNT = 10
    P_DEPOSIT = 11
    P_ANON_MAPCOUNT = 12
    P_WRITABLE_SHARED = 13

cdef struct Problem:
    int code
    uint64_t addr
    uint64_t found
    uint64_t expected

cdef struct ScanState:
    int64_t nv
    uint64_t *vstart
    uint64_t *vend
    int64_t *vowner
    uint64_t *vpgoff
    int64_t cursor
    Problem *probs
    int nprob
    int maxprob
    uint8_t *seen_tables
    uint8_t *frame_maps


cdef inline void add_problem(ScanState *s, int code, uint64_t addr, uint64_t found,
                             uint64_t expected) noexcept nogil:
    if s.nprob < s.maxprob:
        s.probs[s.nprob].code = code
        s.probs[s.nprob].addr = addr
        s.probs[s.nprob].found = found
        s.probs[s.nprob].expected = expected
    s.nprob += 1


cdef int64_t find_vma(ScanState *s, uint64_t addr) noexcept nogil:
    """The VMA containing addr (leaves arrive in address order: a cursor)."""
    while s.cursor < s.nv and s.vend[s.cursor] <= addr:
        s.cursor += 1
    if s.cursor < s.nv and s.vstart[s.cursor] <= addr:
        return s.cursor
    return -1


cdef bint vma_intersects(ScanState *s, uint64_t start, uint64_t end) noexcept nogil:
    """Does any VMA intersect [start, end)?  Binary search."""
    cdef int64_t lo = 0, hi = s.nv, mid
    while lo < hi:
        mid = (lo + hi) // 2
        if s.vend[mid] <= start:
            lo = mid + 1
        else:
            hi = mid
    return lo < s.nv and s.vstart[lo] < end


cdef inline uint64_t mix(uint64_t h, uint64_t v) noexcept nogil:
    h ^= v + <uint64_t>0x9e3779b97f4a7c15 + (h << 6) + (h >> 2)
    return h * <uint64_t>1099511628211


def check_scan(Engine eng not None, cnp.uint64_t[::1] vstart not None, cnp.uint64_t[::1] vend not None,
               cnp.int64_t[::1] vowner not None, cnp.uint64_t[::1] vpgoff not None,
               int max_problems=100):
    """Walk every table and leaf and test the invariants against the VMAs
    (sorted, non-overlapping arrays).  Returns a list of problems:
    ``(code, address, found, expected)``; see PROBLEM_CODES.  What
    CONFIG_PAGE_TABLE_CHECK and check_mm() check, all at once.  The
    current process only: check_processes() checks a fork family.

    Example::

        >>> v = lambda *xs, t=np.uint64: np.array(xs, dtype=t)
        >>> check_scan(eng, v(0x40000000), v(0x40200000), v(o, t=np.int64), v(0x40000))
        []
        >>> check_scan(eng, v(0x40000000), v(0x40100000), v(o, t=np.int64), v(0x40000),
        ...            max_problems=1)      # a VMA that ends at 1 MiB: pages mapped past it
        [('orphan-pte', 1074790400, 257, 0)]
    """
    return check_processes(eng, [(eng.context, vstart, vend, vowner, vpgoff)], max_problems)


def check_processes(Engine eng not None, list processes not None, int max_problems=100):
    """check_scan() over every process of a fork family at once:
    ``processes`` lists ``(context, vstart, vend, vowner, vpgoff)``, one
    per live context of the engine.  Map counts are checked across them
    (a frame forked processes share is mapped once per process), and a
    frame's owner may be its VMA's anon_vma or one it was forked from.

    Example::

        >>> v = lambda *xs, t=np.uint64: np.array(xs, dtype=t)
        >>> check_processes(eng, [(0, v(0x40000000), v(0x40200000), v(o, t=np.int64), v(0x40000))])
        []
    """
    cdef int64_t nv
    cdef int64_t k
    cdef int cur, c
    cdef bint whole
    cdef ScanState s
    cdef cnp.uint64_t[::1] vstart, vend, vpgoff
    cdef cnp.int64_t[::1] vowner
    eng.enter()
    try:
        live = set([0] if eng.ctxs == NULL else [i for i in range(eng.nctx) if eng.ctxs[i].used])
        cur = eng.cur
        seen = set()
        for p in processes:
            if not isinstance(p, tuple) or len(p) != 5:
                raise TypeError("each process is (context, vstart, vend, vowner, vpgoff)")
            ctx = p[0]
            vstart, vend, vowner, vpgoff = p[1], p[2], p[3], p[4]
            if ctx not in live or ctx in seen:
                raise ValueError(f"process context {ctx} does not exist or is listed twice")
            seen.add(ctx)
            nv = vstart.shape[0]
            if vend.shape[0] != nv or vowner.shape[0] != nv or vpgoff.shape[0] != nv:
                raise ValueError("VMA arrays must have the same length")
            for k in range(1, nv):
                if vstart[k] < vend[k - 1]:
                    raise ValueError("VMA arrays must be sorted and non-overlapping")
            for k in range(nv):
                if vend[k] <= vstart[k]:
                    raise ValueError("empty VMA in check_scan")
        s.nprob = 0
        s.maxprob = max_problems
        s.probs = <Problem*>calloc(max(max_problems, 1), sizeof(Problem))
        s.seen_tables = <uint8_t*>calloc(max(eng.thw, 1), 1)
        s.frame_maps = <uint8_t*>calloc(max(eng.fhw, 1), 1)
        if s.probs == NULL or s.seen_tables == NULL or s.frame_maps == NULL:
            free(s.probs); free(s.seen_tables); free(s.frame_maps)
            raise MemoryError("check_scan: out of memory")
        try:
            for p in processes:
                c = p[0]
                vstart, vend, vowner, vpgoff = p[1], p[2], p[3], p[4]
                nv = vstart.shape[0]
                s.nv = nv
                s.vstart = &vstart[0] if nv else NULL
                s.vend = &vend[0] if nv else NULL
                s.vowner = &vowner[0] if nv else NULL
                s.vpgoff = &vpgoff[0] if nv else NULL
                s.cursor = 0
                with nogil:
                    eng.switch_ctx(c)
                    s.seen_tables[eng.root] = 1
                    scan_level(eng, &s, 0, eng.root, 0)
            whole = len(processes) == len(live)   # the whole family: every frame, every table
            with nogil:
                eng.switch_ctx(cur)
                if whole:
                    scan_frames(eng, &s)
                    scan_tables(eng, &s)
            return [(PROBLEM_CODES[s.probs[k].code], s.probs[k].addr, s.probs[k].found, s.probs[k].expected)
                    for k in range(min(s.nprob, max_problems))]
        finally:
            eng.switch_ctx(cur)
            free(s.probs); free(s.seen_tables); free(s.frame_maps)
    finally:
        eng.leave()


cdef void scan_level(Engine eng, ScanState *s, int l, int64_t t, uint64_t base) noexcept nogil:
    """The walk: every leaf of table t (level l) to scan_leaf(), every child
    table checked for its level, a second link and a VMA under it."""
    cdef uint64_t size = (<uint64_t>1) << eng.shift[l]
    cdef int64_t i, child, f, n, j, huge = 0
    cdef uint64_t e, addr
    cdef uint64_t *r
    for i in range(1 << eng.bits[l]):
        r = row(eng, t)
        e = r[i]
        if e == 0:
            continue
        addr = base + (<uint64_t>i << eng.shift[l])
        if l == eng.lpte or pmd_leaf(e):
            if l != eng.lpte:
                huge += 1
            if not pte_present(e):
                continue
            n = 1 if l == eng.lpte else <int64_t>(size >> eng.shift[eng.lpte])
            f = entry_pfn(e)
            for j in range(n):
                scan_leaf(eng, s, addr + (<uint64_t>j << eng.shift[eng.lpte]), f + j, pte_write(e))
            continue
        child = entry_pfn(e)
        if child < 0 or child >= eng.thw or eng.tlevel[child] != l + 1 or s.seen_tables[child]:
            add_problem(s, P_TABLE_LEVEL, addr, <uint64_t>child, <uint64_t>(l + 1))
            continue
        s.seen_tables[child] = 1
        # a page-table page must cover at least one VMA
        if not vma_intersects(s, addr, addr + size):
            add_problem(s, P_STALE_TABLE, addr, <uint64_t>child, 0)
        scan_level(eng, s, l + 1, child, addr)
    if l == eng.lpmd:
        scan_deposit(eng, s, t, base, huge)


cdef void scan_deposit(Engine eng, ScanState *s, int64_t t, uint64_t base, int64_t huge) noexcept nogil:
    """One PTE table deposited with PMD table t for each of its ``huge``
    huge PMDs (pgtable_trans_huge_deposit(); split PMD locks hang the
    deposit off the PMD table), each a free-standing PTE table.  Found ones
    count as reached."""
    cdef int64_t d = eng.tdeposit[t], n = 0
    while d >= 0 and n <= huge:
        if d >= eng.thw or eng.tlevel[d] != eng.lpte or s.seen_tables[d]:
            add_problem(s, P_TABLE_LEVEL, base, <uint64_t>d, <uint64_t>eng.lpte)
            return
        s.seen_tables[d] = 1
        n += 1
        d = eng.tdepnext[d]
    if n != huge:
        add_problem(s, P_DEPOSIT, base, <uint64_t>n, <uint64_t>huge)


cdef void scan_leaf(Engine eng, ScanState *s, uint64_t addr, int64_t f, bint writable) noexcept nogil:
    """page_table_check_set(): count one mapping of frame f, and check its
    rmap against the VMA that maps addr."""
    cdef int64_t v, owner, expect_owner, a
    cdef uint64_t idx, expect_idx
    if f < 0 or f >= eng.fhw:
        add_problem(s, P_MAPS_FREE_FRAME, addr, <uint64_t>f, 0)
        return
    if is_zero_frame(eng, f):
        v = find_vma(s, addr)
        if v < 0:
            add_problem(s, P_ORPHAN, addr, <uint64_t>f, 0)
        return
    if (eng.ftag[f] & TAG_KIND_MASK) == TAG_FREE:
        add_problem(s, P_MAPS_FREE_FRAME, addr, <uint64_t>f, 0)
        return
    if s.frame_maps[f] < 255:
        s.frame_maps[f] += 1
    v = find_vma(s, addr)
    if v < 0:
        add_problem(s, P_ORPHAN, addr, <uint64_t>f, 0)
        return
    owner = rmap_owner(eng.frmap[f])
    idx = rmap_index(eng.frmap[f])
    expect_owner = s.vowner[v]
    expect_idx = s.vpgoff[v] + ((addr - s.vstart[v]) >> eng.shift[eng.lpte])
    if writable and mapcount_extra(eng, f) > 0:
        add_problem(s, P_WRITABLE_SHARED, addr, <uint64_t>f, 0)
    a = expect_owner
    while a > 0 and a != owner and eng.oparent != NULL and a < eng.ohw:
        a = eng.oparent[a]                    # the anon_vmas a forked VMA's chains to
    if owner != expect_owner and a != owner:
        add_problem(s, P_RMAP_OWNER, addr, <uint64_t>owner, <uint64_t>expect_owner)
    elif idx != expect_idx:
        add_problem(s, P_RMAP_INDEX, addr, idx, expect_idx)


cdef void scan_frames(Engine eng, ScanState *s) noexcept nogil:
    """__page_table_check_zero() turned around: every live frame's map count
    (one for an anonymous page, the object's count for shmem) against the
    mappings the walk found."""
    cdef int64_t f, owner, idx, mapc, live = 0
    for f in range(eng.fhw):
        if is_zero_frame(eng, f) or (eng.ftag[f] & TAG_KIND_MASK) == TAG_FREE:
            continue
        live += 1
        owner = rmap_owner(eng.frmap[f])
        if owner > 0 and owner < eng.ohw and eng.okind[owner] == OWNER_SHMEM:
            idx = <int64_t>rmap_index(eng.frmap[f])
            mapc = shmem_mapcount(eng, owner, idx)
            if mapc >= 0 and mapc != s.frame_maps[f] and s.frame_maps[f] < 255:
                add_problem(s, P_SHMEM_MAPCOUNT, <uint64_t>f, s.frame_maps[f], <uint64_t>mapc)
        elif s.frame_maps[f] == 0:
            add_problem(s, P_LOST_FRAME, <uint64_t>f, 0, 1)
        elif mapcount_extra(eng, f) > 0:
            if s.frame_maps[f] != 1 + mapcount_extra(eng, f) and s.frame_maps[f] < 255:
                add_problem(s, P_ANON_MAPCOUNT, <uint64_t>f, s.frame_maps[f], 1 + mapcount_extra(eng, f))
        elif s.frame_maps[f] > 1:
            add_problem(s, P_DOUBLE_MAPPED, <uint64_t>f, s.frame_maps[f], 1)
    if live != eng.flive:
        add_problem(s, P_FRAME_COUNT, 0, <uint64_t>live, <uint64_t>eng.flive)


cdef void scan_tables(Engine eng, ScanState *s) noexcept nogil:
    """check_mm()'s "non-zero pgtables_bytes": an allocated page-table page
    the walk did not reach would leak."""
    cdef int64_t t
    for t in range(eng.thw):
        if eng.tlevel[t] >= 0 and not s.seen_tables[t]:
            add_problem(s, P_TABLE_UNREACHABLE, <uint64_t>t, <uint64_t>eng.tlevel[t], 0)


def digest(Engine eng not None):
    """A 64-bit hash of everything mapped: each reachable entry with its
    position, and the contents and rmap of each mapped frame.  Equal
    digests before and after a failed syscall mean it changed nothing.
    pymm's own check; the kernel has none.

    Example::

        >>> d = digest(eng)
        >>> digest(eng) == d
        True
    """
    cdef uint64_t h
    eng.enter()
    try:
        h = 1469598103934665603
        with nogil:
            h = digest_level(eng, 0, eng.root, h)
        return h
    finally:
        eng.leave()


cdef uint64_t digest_level(Engine eng, int l, int64_t t, uint64_t h) noexcept nogil:
    """digest() below table t (level l), entries in address order."""
    cdef int64_t i
    cdef uint64_t e
    for i in range(1 << eng.bits[l]):
        e = row(eng, t)[i]
        if e == 0:
            continue
        h = mix(h, (<uint64_t>l << 56) ^ (<uint64_t>i << 40) ^ <uint64_t>t)
        if l == eng.lpte or pmd_leaf(e):
            h = mix(h, e)
            if pte_present(e) and entry_pfn(e) < eng.fhw:
                h = mix(h, eng.ftag[entry_pfn(e)])
                h = mix(h, eng.frmap[entry_pfn(e)])
        else:
            h = mix(h, entry_flags(e))
            h = digest_level(eng, l + 1, entry_pfn(e), h)
    return h
