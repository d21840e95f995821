# cython: language_level=3
"""Walks of the page tables (mm/pagewalk.c, fs/proc/task_mmu.c, mm/ptdump.c).

* translate(): the MMU's walk of one address, with its checks (translate_c,
  inline in pagewalk.pxd so the CPU's accesses in memory.pyx compile it in).
* walk(): the software walk of one address, level by level.
* pagemap(): /proc/pid/pagemap (pagemap_read() in fs/proc/task_mmu.c).
* page_tags(): what each page holds, for integrity checks at scale.
* leaf_runs(): the present leaves merged into runs (walk_page_range() with a
  merging callback); backs pymm's describe().
* table_tree(): every reachable page-table page, as mm/ptdump.c walks them.

None of them changes anything.

Example::

    >>> import mmcore
    >>> eng = mmcore.Engine(mmcore.X86_64)
    >>> o = eng.owner_new("anon")
    >>> GiB = 1 << 30
    >>> mmcore.handle_mm_fault(eng, GiB, GiB + 4096, vma_start=GiB, vma_end=GiB + 4096, owner=o,
    ...                        pgoff=GiB >> 12, write=True)
    >>> [level for level, table, index, entry in mmcore.walk(eng, GiB)]
    [0, 1, 2, 3]
    >>> mmcore.translate(eng, GiB) == mmcore.translate(eng, GiB + 4095) > 0
    True
"""
from libc.stdlib cimport malloc, realloc, free
from libc.stdint cimport uint64_t, int64_t, uint8_t, int8_t

import numpy as np

from mmcore._entries cimport *
from mmcore._core cimport (Engine, row, span_end, is_zero_frame, rmap_owner, rmap_index,
                           mapcount_extra, OWNER_SHMEM, shmem_mapcount)

# Leaves merge into one run only if these bits agree (not A, D or soft-dirty).
cdef uint64_t RUN_FLAG_MASK = (_PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_PSE | _PAGE_PROTNONE
                               | _PAGE_SPECIAL | _PAGE_NX)

# leaf_runs(): merged runs of leaves.
cdef struct LeafRun:
    uint64_t start
    uint64_t end
    uint64_t entry
    int64_t frame
    int level

cdef struct RunOut:
    LeafRun *runs
    int64_t n
    int64_t cap
    int oom

# table_tree(): one row per reachable page-table page.
cdef struct TreeOut:
    int64_t n
    int64_t *table
    int64_t *parent
    int64_t *index
    int64_t *fill
    uint64_t *base
    int8_t *level
    uint8_t *seen


def translate(Engine eng not None, uint64_t addr, bint write=False):
    """The frame the MMU would use for an access to addr, or -1 (fault):
    the hardware walk, with its present and write checks.

    Example::

        >>> translate(eng, 0x40000000)     # the first frame after the zero page
        1
    """
    eng.enter()
    try:
        eng._check_addr(addr)
        return translate_c(eng, addr, write)
    finally:
        eng.leave()


def walk(Engine eng not None, uint64_t addr):
    """The software walk of addr (pgd_offset(), p4d_offset(), ...,
    pte_offset_map() as walk_page_range() descends), one tuple per level
    visited: ``(level, table_id, index, entry)``.  It stops at a leaf or an
    entry that is not present.

    Example::

        >>> level, table, index, entry = walk(eng, 0x40000000)[-1]    # the PTE
        >>> level, table, index, hex(entry)
        (3, 3, 0, '0x8000000000001867')
    """
    cdef int64_t t
    cdef int l
    cdef uint64_t e
    cdef int64_t i
    eng.enter()
    try:
        t = eng.root
        eng._check_addr(addr)
        out = []
        for l in range(eng.nlev):
            i = (addr >> eng.shift[l]) & eng.imask[l]
            e = row(eng, t)[i]
            out.append((l, t, i, e))
            if not pte_present(e) or l == eng.lpte or pmd_leaf(e):
                break
            t = entry_pfn(e)
        return out
    finally:
        eng.leave()


def page_tags(Engine eng not None, uint64_t start, int64_t npages):
    """pymm's own: the content tag of each page of [start, start + npages
    pages), the raw 64-bit tag, or 2**64-1 where no page is mapped.  For
    integrity checks at scale (compare before and after a move).

    Example::

        >>> mmcore.stamp_pages(eng, 0x40000000, 0x40002000)
        1073750016
        >>> [hex(t) for t in page_tags(eng, 0x40000000, 3)]     # STAMP, STAMP, FILL 0
        ['0x8000000000040000', '0x8000000000040001', '0x0']
        >>> hex(page_tags(eng, 0x40200000, 1)[0])                 # nothing mapped
        '0xffffffffffffffff'
    """
    cdef uint64_t[:] v
    cdef int64_t i, f
    cdef uint64_t tag
    eng.enter()
    try:
        eng._check_pages(start, npages)
        out = np.empty(npages, dtype=np.uint64)
        v = out
        with nogil:
            for i in range(npages):
                f = lookup_frame(eng, start + (<uint64_t>i << eng.shift[eng.lpte]))
                if f < 0:
                    v[i] = <uint64_t>0xFFFFFFFFFFFFFFFF
                else:
                    tag = eng.ftag[f]
                    v[i] = tag
        return out
    finally:
        eng.leave()


def pagemap(Engine eng not None, uint64_t start, int64_t npages):
    """pagemap_read() (fs/proc/task_mmu.c): /proc/pid/pagemap entries for
    npages pages from start: bit 63 present, 61 file-page/shared-anon, 56
    exclusively mapped, 55 soft-dirty (from the entry; the caller ORs in
    VM_SOFTDIRTY), 0-54 PFN.

    Example::

        >>> hex(int(pagemap(eng, 0x40000000, 1)[0]))
        '0x8180000000000001'
    """
    cdef uint64_t[:] v
    eng.enter()
    try:
        eng._check_pages(start, npages)
        out = np.zeros(npages, dtype=np.uint64)
        v = out
        with nogil:
            pagemap_c(eng, start, npages, &v[0] if npages else NULL)
        return out
    finally:
        eng.leave()


cdef void pagemap_c(Engine eng, uint64_t start, int64_t npages, uint64_t *out) noexcept nogil:
    """pagemap_pmd_range() + pte_to_pagemap_entry(): one entry per page."""
    cdef int64_t i, t, f, owner, idx, sub
    cdef int l
    cdef uint64_t e, addr, val
    for i in range(npages):
        addr = start + (<uint64_t>i << eng.shift[eng.lpte])
        t = eng.root
        val = 0
        for l in range(eng.nlev):
            e = row(eng, t)[(addr >> eng.shift[l]) & eng.imask[l]]
            if not pte_present(e):
                break
            if l == eng.lpte or pmd_leaf(e):
                f = entry_pfn(e)
                if l != eng.lpte:
                    sub = <int64_t>((addr >> eng.shift[eng.lpte]) & ((((<uint64_t>1) << eng.shift[l]) >> eng.shift[eng.lpte]) - 1))
                    f += sub
                val = ((<uint64_t>1) << 63) | (<uint64_t>f & ((<uint64_t>1 << 55) - 1))
                if pte_soft_dirty(e):
                    val |= (<uint64_t>1) << 55
                if not is_zero_frame(eng, f):
                    owner = rmap_owner(eng.frmap[f])
                    if owner > 0 and eng.okind[owner] == OWNER_SHMEM:
                        val |= (<uint64_t>1) << 61
                        idx = <int64_t>rmap_index(eng.frmap[f])
                        if shmem_mapcount(eng, owner, idx) == 1:
                            val |= (<uint64_t>1) << 56
                    elif mapcount_extra(eng, f if l == eng.lpte else entry_pfn(e)) == 0:
                        # mapped once (not shared with a forked process); for a huge
                        # PMD 6.15+ asks of the folio's first page, whatever the
                        # page (pagemap_pmd_range: __folio_page_mapped_exclusively(folio, page))
                        val |= (<uint64_t>1) << 56
                elif l != eng.lpte:
                    val |= (<uint64_t>1) << 61  # the huge zero folio is not anon
                break
            t = entry_pfn(e)
        out[i] = val


def leaf_runs(Engine eng not None, uint64_t start, uint64_t end):
    """The present leaves in [start, end), merged into runs: address-
    contiguous leaves of one level, with the same permission bits, that
    map consecutive frames (or all the zero page).  Returns a dict of
    arrays: ``start``, ``end``, ``level``, ``entry`` (the first leaf's
    entry) and ``frame`` (the first frame).  Backs ``MM.describe()``.
    walk_page_range() with pte_entry/pmd_entry callbacks that merge.

    Example::

        >>> runs = leaf_runs(eng, 0x40000000, 0x40200000)    # 512 PTEs faulted in
        >>> [(hex(s), hex(e), int(f)) for s, e, f in zip(runs["start"], runs["end"], runs["frame"])]
        [('0x40000000', '0x401ff000', 1), ('0x401ff000', '0x40200000', 1024)]

    (frames 512-1023 hold the huge zero page, so the last page got 1024.)
    """
    cdef RunOut o
    eng.enter()
    try:
        eng._check_range(start, end)
        o.n = 0
        o.cap = 64
        o.oom = 0
        o.runs = <LeafRun *>malloc(o.cap * sizeof(LeafRun))
        if o.runs == NULL:
            raise MemoryError()
        try:
            with nogil:
                runs_level(eng, &o, 0, eng.root, start, end)
            if o.oom:
                raise MemoryError()
            out = {k: np.empty(o.n, dtype=d) for k, d in (
                ("start", np.uint64), ("end", np.uint64), ("level", np.int8),
                ("entry", np.uint64), ("frame", np.int64))}
            for i in range(o.n):
                out["start"][i] = o.runs[i].start
                out["end"][i] = o.runs[i].end
                out["level"][i] = o.runs[i].level
                out["entry"][i] = o.runs[i].entry
                out["frame"][i] = o.runs[i].frame
            return out
        finally:
            free(o.runs)
    finally:
        eng.leave()


cdef void runs_level(Engine eng, RunOut *o, int l, int64_t t, uint64_t addr, uint64_t end) noexcept nogil:
    """walk_p4d_range() -> walk_pud_range() -> ... -> walk_pte_range() below
    table t (level l), each present leaf to add_leaf()."""
    cdef uint64_t size = (<uint64_t>1) << eng.shift[l]
    cdef uint64_t nxt, e
    cdef int64_t i = (addr >> eng.shift[l]) & eng.imask[l]
    while addr < end and not o.oom:
        nxt = span_end(addr, end, size)
        e = row(eng, t)[i]
        if e != 0:
            if l == eng.lpte or pmd_leaf(e):
                if pte_present(e):
                    add_leaf(eng, o, addr & ~(size - 1), size, l, e)
            else:
                runs_level(eng, o, l + 1, entry_pfn(e), addr, nxt)
        addr = nxt
        i += 1


cdef void add_leaf(Engine eng, RunOut *o, uint64_t addr, uint64_t size, int l, uint64_t e) noexcept nogil:
    """pymm's own: extend the last run with this leaf, or start a new run."""
    cdef int64_t f = entry_pfn(e)
    cdef LeafRun *r
    cdef LeafRun *grown
    if o.n:
        r = &o.runs[o.n - 1]
        if (r.end == addr and r.level == l and (r.entry & RUN_FLAG_MASK) == (e & RUN_FLAG_MASK)
                and (f == r.frame + <int64_t>((addr - r.start) >> eng.shift[eng.lpte])
                     or (is_zero_frame(eng, f) and is_zero_frame(eng, r.frame)))):
            r.end = addr + size
            return
    if o.n == o.cap:
        grown = <LeafRun *>realloc(o.runs, 2 * o.cap * sizeof(LeafRun))
        if grown == NULL:
            o.oom = 1
            return
        o.runs = grown
        o.cap *= 2
    r = &o.runs[o.n]
    r.start, r.end, r.level, r.entry, r.frame = addr, addr + size, l, e, f
    o.n += 1


def table_tree(Engine eng not None):
    """Every page-table page reachable from the root, parents first:
    a dict of arrays ``table``, ``level``, ``parent`` (-1 for the root),
    ``index`` (the slot in the parent), ``base`` (first address it
    covers) and ``fill`` (entries that are not none).  Tables missing
    from it but allocated are what the checker calls unreachable.  The
    walk mm/ptdump.c makes over every table.

    Example::

        >>> tree = table_tree(eng)
        >>> int(tree["fill"][0])     # entries used in the pgd
        1
    """
    cdef TreeOut o
    cdef int64_t n
    cdef int64_t[::1] vt, vp, vi, vf
    cdef uint64_t[::1] vb
    cdef int8_t[::1] vl
    cdef uint8_t[::1] vs
    eng.enter()
    try:
        n = eng.thw
        cols = {k: np.zeros(n, dtype=np.int64) for k in ("table", "parent", "index", "fill")}
        cols["base"] = np.zeros(n, dtype=np.uint64)
        cols["level"] = np.zeros(n, dtype=np.int8)
        seen = np.zeros(n, dtype=np.uint8)
        vt, vp, vi, vf = cols["table"], cols["parent"], cols["index"], cols["fill"]
        vb = cols["base"]
        vl = cols["level"]
        vs = seen
        o.n = 0
        o.table, o.parent, o.index, o.fill = &vt[0], &vp[0], &vi[0], &vf[0]
        o.base, o.level, o.seen = &vb[0], &vl[0], &vs[0]
        with nogil:
            tree_level(eng, &o, 0, eng.root, 0, -1, -1)
        return {k: v[:o.n].copy() for k, v in cols.items()}
    finally:
        eng.leave()


cdef void tree_level(Engine eng, TreeOut *o, int l, int64_t t, uint64_t base, int64_t parent,
                     int64_t index) noexcept nogil:
    """ptdump_pgd_entry() ... ptdump_pte_entry(): record table t (level l)
    and descend into its children."""
    cdef int64_t k = o.n, i, fill = 0, child
    cdef uint64_t *r
    cdef uint64_t e
    if t < 0 or t >= eng.thw or o.seen[t] or eng.tlevel[t] != l:
        return          # corrupt link: the checker reports it (table-level)
    r = row(eng, t)
    o.seen[t] = 1
    o.n += 1
    o.table[k], o.level[k], o.base[k], o.parent[k], o.index[k] = t, l, base, parent, index
    for i in range(eng.ents):
        e = r[i]
        if e == 0:
            continue
        fill += 1
        if l < eng.lpte and not pmd_leaf(e) and pte_present(e):
            tree_level(eng, o, l + 1, entry_pfn(e), base + (<uint64_t>i << eng.shift[l]), t, i)
    o.fill[k] = fill
