# cython: language_level=3
"""The fault path, zap and free_pgd_range (mm/memory.c).

* handle_mm_fault(): the PTE-level handlers (do_anonymous_page(),
  do_read_fault()/do_shared_fault() on shmem with do_fault_around(),
  do_wp_page()); a PMD-sized folio goes to huge_memory.pyx.
* zap_page_range(): zap_page_range_single() and the zap_p4d_range() ->
  ... -> zap_pte_range() walk; page-table pages stay, unless the caller
  asks for CONFIG_PT_RECLAIM's freeing of emptied PTE tables.
* free_pgd_range(): frees the page-table pages of a range that no other VMA
  can use, with the kernel's floor/ceiling arithmetic.

The CPU's loads and stores (__access_remote_vm(), also in mm/memory.c) are
in access.pyx.  Every function takes the Engine first, as the kernel's take
the mm; what a VMA would tell the kernel (bounds, owner, vm_pgoff,
protection) comes as arguments.  Every loop over pages runs without the
GIL, after the arguments are validated.

Example::

    >>> import mmcore
    >>> eng = mmcore.Engine(mmcore.X86_64)
    >>> o = eng.owner_new("anon")
    >>> GiB = 1 << 30
    >>> mmcore.memory.handle_mm_fault(eng, GiB, GiB + 8192, vma_start=GiB, vma_end=GiB + 8192,
    ...                               owner=o, pgoff=GiB >> 12, write=True, fill=0x5a)
    >>> mmcore.read_bytes(eng, GiB + 4095, 2)
    (b'ZZ', 2)
    >>> mmcore.memory.zap_page_range(eng, GiB, GiB + 8192); eng.rss()
    (0, 0)
"""
from libc.stdint cimport uint64_t, int64_t
from cpython.exc cimport PyErr_CheckSignals

from mmcore._entries cimport *
from mmcore._core cimport (Engine, FaultArgs, row, span_end, rmap_word, rmap_index, is_zero_frame,
                           set_tag, frame_alloc, frame_alloc_tagged, release_frame, shmem_get,
                           shmem_lookup, shmem_leaf,
                           fits, mapcount_extra, frame_copy, CTR_FAULTS, CTR_COW, OWNER_SHMEM, RMAP_INDEX_MASK,
                           TAG_FILL, TAG_VALUE_MASK,
                           SIGNAL_CHUNK)
from mmcore.huge_memory cimport fault_huge, split_huge_pmd, zap_huge_pmd, zap_deposited_table
from mmcore._shmem cimport ShmLeaf, XA_CHUNK_SHIFT, XA_CHUNK_MASK

# ---------------------------------------------------------------------- faults
cdef int fault_pte(Engine eng, uint64_t *ptep, uint64_t va, FaultArgs *a) noexcept nogil:
    """handle_pte_fault(): do_anonymous_page(), do_shared_fault()/
    do_read_fault() on shmem, and do_wp_page() for a write to a
    read-only entry.  With a.fill the page then gets a.fill_tag (a
    memset in the same pass).  Returns -1 when out of memory."""
    cdef uint64_t e = ptep[0], index
    cdef int64_t f
    cdef uint64_t flags
    if e == 0:
        index = a.pgoff + ((va - a.vma_start) >> eng.shift[eng.lpte])
        if a.shared:
            f = shmem_get(eng, a.owner, <int64_t>index)
            if f < 0:
                return -1
            flags = a.prot | (_PAGE_RW if a.writable else 0)
            if a.write:
                flags |= _PAGE_DIRTY | _PAGE_SOFT_DIRTY
            eng.rss_shmem += 1
            if a.fill:
                set_tag(eng, f, a.fill_tag)
        elif a.write or not a.zero_page:
            f = frame_alloc_tagged(eng, rmap_word(a.owner, index), a.fill_tag if a.fill else TAG_FILL)
            if f < 0:
                return -1
            flags = a.prot
            if a.writable:
                flags |= _PAGE_RW | _PAGE_DIRTY | _PAGE_SOFT_DIRTY
            eng.rss_anon += 1
        else:
            f = 0  # my_zero_pfn(): read fault on private anonymous memory
            flags = a.prot | _PAGE_SPECIAL
        ptep[0] = pfn_entry(f, flags)
        eng.ctr[CTR_FAULTS] += 1
        return 0
    if a.write and a.writable and not pte_write(e):
        # do_wp_page(): write to a present read-only entry in a writable VMA
        f = entry_pfn(e)
        if pte_special(e) or is_zero_frame(eng, f):
            index = a.pgoff + ((va - a.vma_start) >> eng.shift[eng.lpte])
            f = frame_alloc(eng, rmap_word(a.owner, index))  # wp_page_copy()
            if f < 0:
                return -1
            eng.rss_anon += 1
            eng.ctr[CTR_COW] += 1
            e = pfn_entry(f, (entry_flags(e) & ~_PAGE_SPECIAL) | _PAGE_RW | _PAGE_DIRTY | _PAGE_SOFT_DIRTY)
        elif not a.shared and mapcount_extra(eng, f) > 0:
            # wp_page_copy(): another process maps the page too (fork's COW)
            index = a.pgoff + ((va - a.vma_start) >> eng.shift[eng.lpte])
            f = frame_copy(eng, f, rmap_word(a.owner, index))
            if f < 0:
                return -1
            eng.fmapc[entry_pfn(e)] -= 1
            eng.ctr[CTR_COW] += 1
            e = pfn_entry(f, entry_flags(e) | _PAGE_RW | _PAGE_DIRTY | _PAGE_SOFT_DIRTY)
        else:
            if not a.shared and eng.fmapc != NULL:
                # wp_can_reuse_anon_folio() -> folio_move_anon_rmap(): the
                # page, mapped only here now, joins this VMA's anon_vma
                eng.frmap[f] = rmap_word(a.owner, rmap_index(eng.frmap[f]))
            e = e | _PAGE_RW | _PAGE_DIRTY | _PAGE_SOFT_DIRTY  # reuse / wp_page_shared()
        ptep[0] = e
        eng.ctr[CTR_FAULTS] += 1
    if a.fill and pte_write(e) and pte_hw_present(e):
        set_tag(eng, entry_pfn(e), a.fill_tag)
    return 0


cdef int fault_anon_run(Engine eng, uint64_t *ptep, int64_t n, uint64_t va, FaultArgs *a) noexcept nogil:
    """do_anonymous_page() for n consecutive none PTEs at once, as the
    kernel's batched anonymous fault (alloc_anon_folio() + set_ptes()) maps
    a run: when every entry is none and no free huge block waits to be
    broken up, the frames are the freed ones first (the free list, in its
    order) and then the next fresh ones, so tags, rmaps and entries are
    straight stores.  Exactly what n calls of fault_pte() would leave.
    Returns 1 if done, 0 if the run does not qualify (the caller goes one
    PTE at a time), -1 when out of memory."""
    cdef int64_t k, f, f0, nfree = 0
    cdef uint64_t flags, rm0, tag
    cdef uint64_t *ftag
    cdef uint64_t *frmap
    if a.shared or not (a.write or not a.zero_page) or eng.fhuge_head >= 0 or not fits(eng, n):
        return 0
    for k in range(n):
        if ptep[k] != 0:
            return 0
    # room for n fresh frames, whatever the free list covers: no array moves below
    if eng.fhw + n > eng.fcap and eng.grow_frames(eng.fhw + n) < 0:
        return -1
    rm0 = rmap_word(a.owner, a.pgoff + ((va - a.vma_start) >> eng.shift[eng.lpte]))
    tag = a.fill_tag if a.fill else TAG_FILL
    flags = a.prot
    if a.writable:
        flags |= _PAGE_RW | _PAGE_DIRTY | _PAGE_SOFT_DIRTY
    ftag = eng.ftag
    frmap = eng.frmap
    k = 0
    while k < n and eng.ffree_head >= 0:   # frame_alloc_tagged()'s free-list pop, inline
        f = eng.ffree_head
        eng.ffree_head = <int64_t>(ftag[f] & TAG_VALUE_MASK)
        if eng.ffree_head == <int64_t>TAG_VALUE_MASK:
            eng.ffree_head = -1
        ftag[f] = tag
        frmap[f] = rm0 + <uint64_t>k
        ptep[k] = pfn_entry(f, flags)
        k += 1
    nfree = k
    eng.fnfree -= nfree
    f0 = eng.fhw - k
    eng.fhw += n - k
    for k in range(nfree, n):
        ftag[f0 + k] = tag
        frmap[f0 + k] = rm0 + <uint64_t>k   # the index bits cannot carry: vma_fault_args() checked
    for k in range(nfree, n):
        ptep[k] = pfn_entry(f0 + k, flags)
    eng.flive += n
    eng.rss_anon += n
    eng.ctr[CTR_FAULTS] += n
    return 1


cdef int64_t around_window(Engine eng, int64_t pte_off, uint64_t va, FaultArgs *a,
                           int64_t *to_pte) noexcept nogil:
    """do_fault_around()'s from_pte/to_pte for a fault at va (PTE index pte_off):
    [from_pte, to_pte), fault_around-aligned, clamped to the VMA and to
    this PTE table.  Returns from_pte."""
    cdef int64_t nr = a.fault_around
    cdef int64_t vma_off = <int64_t>((va - a.vma_start) >> eng.shift[eng.lpte])
    cdef int64_t vma_pages = <int64_t>((a.vma_end - a.vma_start) >> eng.shift[eng.lpte])
    cdef int64_t from_pte = max(pte_off - pte_off % nr, pte_off - min(pte_off, vma_off))
    to_pte[0] = min(min(from_pte + nr, <int64_t>eng.ptrs_per_pte), pte_off + vma_pages - vma_off)
    return from_pte


cdef int64_t cached_index(Engine eng, int64_t pte_off, int64_t j, uint64_t va, FaultArgs *a) noexcept nogil:
    """filemap_map_pages()'s page-cache lookup (next_uptodate_folio()): the
    object's page behind PTE j of the window (j - pte_off pages from va), or
    0 when it is not in the page cache."""
    cdef int64_t index = <int64_t>a.pgoff + <int64_t>((va - a.vma_start) >> eng.shift[eng.lpte]) \
        + (j - pte_off)
    return shmem_lookup(eng, a.owner, index)


cdef void do_fault_around_c(Engine eng, uint64_t *r, int64_t pte_off, uint64_t va, FaultArgs *a) noexcept nogil:
    """do_fault_around() + filemap_map_pages() on a PTE table already there:
    before a read fault on a shmem page, map the neighbours already in the
    object (the page cache) whose PTEs are none.  Nothing is allocated.
    The window's indices are consecutive: one leaf lookup per 64 pages."""
    cdef int64_t j, f, to_pte, index, key = -1
    cdef int64_t from_pte = around_window(eng, pte_off, va, a, &to_pte)
    cdef int64_t index0 = <int64_t>a.pgoff + <int64_t>((va - a.vma_start) >> eng.shift[eng.lpte]) - pte_off
    cdef uint64_t flags = a.prot | (_PAGE_RW if a.writable else 0)
    cdef ShmLeaf *leaf = NULL
    for j in range(from_pte, to_pte):
        if r[j] != 0:
            continue
        index = index0 + j
        if (index >> XA_CHUNK_SHIFT) != key:
            key = index >> XA_CHUNK_SHIFT
            leaf = shmem_leaf(eng, a.owner, index)
        if leaf == NULL:
            continue
        f = leaf.frame[index & XA_CHUNK_MASK]
        if f == 0:
            continue                          # not in the page cache: left to a fault
        if leaf.mapc[index & XA_CHUNK_MASK] < 0xFFFF:
            leaf.mapc[index & XA_CHUNK_MASK] += 1
        eng.rss_shmem += 1
        r[j] = pfn_entry(f, flags)


cdef int vma_fault_args(Engine eng, FaultArgs *a, uint64_t vma_start, uint64_t vma_end, int64_t owner,
                         uint64_t pgoff, bint shared, bint writable, bint exec_, bint protnone,
                         int fault_around) except -1:
    """The VMA half of the struct vm_fault that __handle_mm_fault() builds:
    validate what the VMA tells the fault handler and fill those fields of a."""
    eng._check_range(vma_start, vma_end)
    eng._check_owner(owner)
    if shared != (eng.okind[owner] == OWNER_SHMEM):
        raise ValueError("shared faults need a shmem owner, private ones an anon owner")
    if pgoff + ((vma_end - vma_start) >> eng.shift[eng.lpte]) > RMAP_INDEX_MASK:
        raise OverflowError("vm_pgoff too large for the rmap index")
    if not 1 <= fault_around <= <int>eng.ptrs_per_pte or fault_around & (fault_around - 1):
        raise ValueError("fault_around must be a power of two from 1 to PTRS_PER_PTE pages")
    a.vma_start, a.vma_end, a.owner, a.pgoff = vma_start, vma_end, owner, pgoff
    a.prot = _PAGE_PROTNONE | _PAGE_ACCESSED if protnone else \
        (_PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED | (0 if exec_ else _PAGE_NX))
    a.writable = writable and not protnone
    a.shared = shared
    a.fault_around = fault_around
    a.huge_zero_thp = True
    return 0


def do_fault_around(Engine eng not None, uint64_t addr, *, uint64_t vma_start, uint64_t vma_end,
                    int64_t owner, uint64_t pgoff, bint writable=True, bint exec_=False,
                    int fault_around=16):
    """do_fault_around() alone, for a read fault at addr in a shared VMA
    whose page lies beyond the object (the fault then SIGBUSes, but the
    cached neighbours stay mapped).  The PTE table is allocated only if
    a page is found, as filemap_map_pages() installs it.

    Example::

        >>> shm = eng.owner_new("shmem", npages=4)          # the VMA below is 16 pages
        >>> handle_mm_fault(eng, 0x50000000, 0x50001000, vma_start=0x50000000,
        ...                 vma_end=0x50010000, owner=shm, pgoff=0, shared=True)  # page 0 cached
        >>> zap_page_range(eng, 0x50000000, 0x50001000)
        >>> do_fault_around(eng, 0x50008000, vma_start=0x50000000, vma_end=0x50010000,
        ...                 owner=shm, pgoff=0)                # page 8 lies beyond the object
        >>> mmcore.translate(eng, 0x50000000) > 0               # page 0 is mapped again
        True
    """
    cdef FaultArgs a
    cdef int64_t pte_off, from_pte, to_pte, j, t
    cdef bint found
    eng.enter()
    try:
        found = False
        vma_fault_args(eng, &a, vma_start, vma_end, owner, pgoff, True, writable, exec_, False,
                       fault_around)
        if not (vma_start <= addr < vma_end) or (addr | vma_start | vma_end) & (eng.page_size - 1):
            raise ValueError("fault_around needs a page-aligned address inside the VMA")
        a.write = False
        pte_off = <int64_t>((addr >> eng.shift[eng.lpte]) & eng.imask[eng.lpte])
        with nogil:
            from_pte = around_window(eng, pte_off, addr, &a, &to_pte)
            for j in range(from_pte, to_pte):
                if cached_index(eng, pte_off, j, addr, &a) != 0:
                    found = True
                    break
            if found:
                t = eng.alloc_to(addr, eng.lpte)
                if t >= 0:
                    do_fault_around_c(eng, row(eng, t), pte_off, addr, &a)
        if found and t < 0:
            raise eng.oom_error("do_fault_around: allocating a page table")
    finally:
        eng.leave()


def pmd_alloc(Engine eng not None, uint64_t addr):
    """__handle_mm_fault()'s p4d_alloc(), pud_alloc() and pmd_alloc() alone:
    the tables down to the PMD table covering addr, as a fault leaves them
    when it fails further down (shmem_fault()'s SIGBUS past the object's
    end).  Nothing is done where a huge leaf maps addr.

    Example::

        >>> n = eng.n_tables
        >>> pmd_alloc(eng, 0x7f0000000000)           # a new PUD and PMD table
        >>> eng.n_tables - n
        2
    """
    cdef int64_t t
    eng.enter()
    try:
        eng._check_addr(addr)
        with nogil:
            t = eng.alloc_to(addr, eng.lpmd)
        if t == -1:
            raise eng.oom_error("pmd_alloc")
    finally:
        eng.leave()


cdef int fault_range_c(Engine eng, uint64_t start, uint64_t end, FaultArgs *a) noexcept nogil:
    """handle_mm_fault() -> __handle_mm_fault() for every page of [start,
    end), as get_user_pages() (mm/gup.c) or the CPU touching each page in
    turn would: one PTE table at a time."""
    cdef uint64_t addr = start, nxt, haddr
    cdef int64_t pmd_t, pmd_i, pte_t, i, i0, n
    cdef int r0
    cdef uint64_t *pmdp
    cdef uint64_t *r
    while addr < end:
        nxt = span_end(addr, end, eng.pmd_size)
        pmd_t = eng.alloc_to(addr, eng.lpmd)
        if pmd_t < 0:
            return -1
        pmd_i = (addr >> eng.shift[eng.lpmd]) & eng.imask[eng.lpmd]
        pmdp = row(eng, pmd_t) + pmd_i
        haddr = addr & ~(eng.pmd_size - 1)
        if pmd_leaf(pmdp[0]) or (pmdp[0] == 0 and a.thp and not a.shared and haddr >= a.vma_start
                                 and haddr + eng.pmd_size <= a.vma_end and haddr + eng.pmd_size > haddr):
            r0 = fault_huge(eng, pmd_t, pmd_i, haddr, a)
            if r0 < 0:
                return -1
            if r0 == 0:
                addr = nxt
                continue
            # VM_FAULT_FALLBACK: handle_pte_fault() below; a huge PMD there is
            # split first (__split_huge_pmd(): into its deposit, cannot fail)
            if pmd_leaf(row(eng, pmd_t)[pmd_i]) and split_huge_pmd(eng, pmd_t, pmd_i) < 0:
                return -1
        pte_t = eng.alloc_to(addr, eng.lpte)
        if pte_t < 0:
            return -1
        r = row(eng, pte_t)
        i0 = (addr >> eng.shift[eng.lpte]) & eng.imask[eng.lpte]
        n = <int64_t>((nxt - addr) >> eng.shift[eng.lpte])
        r0 = fault_anon_run(eng, r + i0, n, addr, a)
        if r0 < 0:
            return -1
        if r0 == 1:
            addr = nxt
            continue
        for i in range(n):
            if a.fault_around > 1 and a.shared and not a.write and r[i0 + i] == 0:
                do_fault_around_c(eng, r, i0 + i, addr + (<uint64_t>i << eng.shift[eng.lpte]), a)
            if fault_pte(eng, r + i0 + i, addr + (<uint64_t>i << eng.shift[eng.lpte]), a) < 0:
                return -1
            r = row(eng, pte_t)  # the table array may have moved
        addr = nxt
    return 0


cdef int fault_range_chunked(Engine eng, uint64_t start, uint64_t end, FaultArgs *a) except -2:
    """fault_range_c() over [start, end) in SIGNAL_CHUNK pieces (1 GiB of
    address space, a few ms of work) without the GIL, with
    PyErr_CheckSignals() between them, as __get_user_pages() checks
    fatal_signal_pending() between pages: a KeyboardInterrupt (or
    whatever a signal handler raises) propagates, the pages done stay done.
    Returns 0, or -1 when out of memory."""
    cdef uint64_t pos = start, stop
    cdef int r = 0
    while pos < end:
        stop = span_end(pos, end, SIGNAL_CHUNK)
        with nogil:
            r = fault_range_c(eng, pos, stop, a)
        if r < 0:
            return -1
        pos = stop
        if pos < end:
            PyErr_CheckSignals()
    return 0


def handle_mm_fault(Engine eng not None, uint64_t start, uint64_t end, *, uint64_t vma_start,
                    uint64_t vma_end, int64_t owner, uint64_t pgoff, bint write=False,
                    bint writable=True, bint shared=False, bint thp=False, bint zero_page=True,
                    bint exec_=False, bint protnone=False, int fill=-1, int fault_around=1,
                    bint huge_zero_thp=True):
    """handle_mm_fault() for every page of [start, end), which must lie in
    the VMA [vma_start, vma_end).  ``write`` makes them write faults.
    ``fault_around`` (pages, a power of two): read faults on shmem first
    map the cached neighbours in that window (do_fault_around()).
    ``huge_zero_thp``: a write to a huge zero PMD replaces it by a THP
    (4.19's do_huge_pmd_wp_page(), 6.13+'s do_huge_zero_wp_pmd()); False:
    the PMD is split and one page copied (5.8 to 6.12, 3917c80280c9).

    Permission checks are the caller's (the VMA's) job, as they are in
    do_user_addr_fault(); this only installs entries.

    Example::

        >>> handle_mm_fault(eng, 0x7f0000000000, 0x7f0000001000, vma_start=0x7f0000000000,
        ...                 vma_end=0x7f0000001000, owner=o, pgoff=0x7f0000000, write=True)
    """
    cdef FaultArgs a
    cdef int r
    eng.enter()
    try:
        eng._check_range(start, end)
        vma_fault_args(eng, &a, vma_start, vma_end, owner, pgoff, shared, writable, exec_, protnone,
                       fault_around)
        if not (vma_start <= start and end <= vma_end):
            raise ValueError("fault range must lie inside the VMA")
        if shared:
            if pgoff + ((end - vma_start) >> eng.shift[eng.lpte]) > <uint64_t>eng.onpages[owner]:
                raise ValueError("fault beyond the end of the shmem object (SIGBUS)")
        a.write = write
        a.thp = thp
        a.zero_page = zero_page
        a.huge_zero_thp = huge_zero_thp
        if not -1 <= fill <= 255:
            raise ValueError("fill must be a byte value (or -1 for none)")
        if fill >= 0 and not write:
            raise ValueError("fill needs write faults")
        a.fill = fill >= 0
        a.start, a.end = start, end
        a.fill_tag = TAG_FILL | <uint64_t>(fill if fill >= 0 else 0)
        r = fault_range_chunked(eng, start, end, &a)
        if r < 0:
            raise eng.oom_error("handle_mm_fault")
    finally:
        eng.leave()


# ---------------------------------------------------------------------- zap
cdef void zap_level(Engine eng, int l, int64_t t, uint64_t addr, uint64_t end) noexcept nogil:
    """unmap_page_range() -> zap_p4d_range() -> ... -> zap_pte_range():
    clear the leaves of [addr, end) below table t (level l), keep the
    tables.  Huge PMDs only partly covered are split first."""
    zap_levels(eng, l, t, addr, end, False)


cdef void zap_levels(Engine eng, int l, int64_t t, uint64_t addr, uint64_t end,
                     bint reclaim_pt) noexcept nogil:
    """zap_level(), and with ``reclaim_pt`` (zap_details.reclaim_pt,
    CONFIG_PT_RECLAIM, 6.14's 6375e95f381e) a PTE table whose whole PMD
    range was zapped is freed: reclaim_pt_is_enabled() (``end - start >=
    PMD_SIZE`` in zap_pte_range()), then try_get_and_clear_pmd() and
    free_pte().  Every entry of such a table is none after the zap."""
    cdef uint64_t size = (<uint64_t>1) << eng.shift[l]
    cdef uint64_t nxt, e
    cdef int64_t i = (addr >> eng.shift[l]) & eng.imask[l]
    cdef int64_t n, k
    cdef uint64_t *r
    if l == eng.lpte:                    # zap_pte_range(): one tight pass over the slots
        n = <int64_t>((end - addr + size - 1) >> eng.shift[l])
        r = row(eng, t) + i
        for k in range(n):
            e = r[k]
            if e != 0:
                r[k] = 0
                if pte_present(e):
                    release_frame(eng, entry_pfn(e), False)
        return
    while addr < end:
        nxt = span_end(addr, end, size)
        r = row(eng, t)
        e = r[i]
        if e != 0:
            if pmd_leaf(e):
                if nxt - addr == size:
                    zap_huge_pmd(eng, t, i)   # the folio and the deposited table go
                elif l == eng.lpmd and split_huge_pmd(eng, t, i) == 0:
                    zap_levels(eng, l + 1, entry_pfn(row(eng, t)[i]), addr, nxt, False)
            else:
                zap_levels(eng, l + 1, entry_pfn(e), addr, nxt, reclaim_pt)
                if reclaim_pt and l == eng.lpmd and nxt - addr == size:
                    r[i] = 0                  # try_get_and_clear_pmd()
                    eng.table_free(entry_pfn(e))   # free_pte()
        addr = nxt
        i += 1


def zap_page_range(Engine eng not None, uint64_t start, uint64_t end, *, bint reclaim_pt=False):
    """zap_page_range_single(): unmap the pages of [start, end), freeing
    anonymous frames.  Page-table pages stay (free_pgd_range's job), except
    with ``reclaim_pt`` (madvise(MADV_DONTNEED) under CONFIG_PT_RECLAIM):
    then each PTE table whose whole PMD range lies in [start, end) is freed.

    Example::

        >>> zap_page_range(eng, 0x40000000, 0x40200000)   # MADV_DONTNEED
        >>> mmcore.handle_mm_fault(eng, 0x40000000, 0x40001000, vma_start=0x40000000,
        ...                        vma_end=0x40200000, owner=o, pgoff=0x40000, write=True)
        >>> n = eng.n_tables
        >>> zap_page_range(eng, 0x40000000, 0x40200000, reclaim_pt=True)
        >>> eng.n_tables == n - 1                          # the emptied PTE table went
        True
    """
    eng.enter()
    try:
        eng._check_range(start, end)
        with nogil:
            zap_levels(eng, 0, eng.root, start, end, reclaim_pt)
    finally:
        eng.leave()


# ---------------------------------------------------------------------- free_pgd_range
cdef void free_entries(Engine eng, int l, int64_t t, uint64_t addr, uint64_t end,
                       uint64_t floor, uint64_t ceiling) noexcept nogil:
    """The loop body of free_pmd_range()/free_pud_range()/...: walk the
    entries of table t (level l) over [addr, end) and free what hangs below."""
    cdef uint64_t size = (<uint64_t>1) << eng.shift[l]
    cdef uint64_t nxt, e
    cdef int64_t i = (addr >> eng.shift[l]) & eng.imask[l]
    cdef uint64_t *r
    while True:
        nxt = span_end(addr, end, size)
        r = row(eng, t)
        e = r[i]
        if e != 0:
            if pmd_leaf(e):
                r[i] = 0  # pmd_none_or_clear_bad(): a leaf here is "bad"
                zap_deposited_table(eng, t)   # unlike the kernel, which would leak it
            elif l == eng.lpmd:
                r[i] = 0  # free_pte_range()
                eng.table_free(entry_pfn(e))
            else:
                free_child(eng, l + 1, t, i, addr, nxt, floor, ceiling)
        addr = nxt
        i += 1
        if addr == end:
            break


cdef void free_child(Engine eng, int l, int64_t pt, int64_t pi, uint64_t addr, uint64_t end,
                     uint64_t floor, uint64_t ceiling) noexcept nogil:
    """free_pmd_range() (and its siblings one level up): free below the
    table at level l hanging from entry pi of table pt, then free that
    table too if no VMA between floor and ceiling can still use it."""
    cdef int64_t t = entry_pfn(row(eng, pt)[pi])
    cdef uint64_t start = addr
    cdef uint64_t mask = ~(((<uint64_t>1) << eng.shift[l - 1]) - 1)
    free_entries(eng, l, t, addr, end, floor, ceiling)
    start &= mask
    if start < floor:
        return
    if ceiling:
        ceiling &= mask
        if not ceiling:
            return
    if end - 1 > ceiling - 1:
        return
    row(eng, pt)[pi] = 0
    eng.table_free(t)


cdef void free_pgd_range_c(Engine eng, uint64_t addr, uint64_t end, uint64_t floor,
                           uint64_t ceiling) noexcept nogil:
    """free_pgd_range(): the floor/ceiling trimming ("the next few lines have
    given us lots of grief"), then the walk from the pgd."""
    cdef uint64_t pmd_mask = ~(eng.pmd_size - 1)
    addr &= pmd_mask
    if addr < floor:
        addr += eng.pmd_size
        if not addr:
            return
    if ceiling:
        ceiling &= pmd_mask
        if not ceiling:
            return
    if end - 1 > ceiling - 1:
        end -= eng.pmd_size
    if addr > end - 1:
        return
    free_entries(eng, 0, eng.root, addr, end, floor, ceiling)


def free_pgd_range(Engine eng not None, uint64_t addr, uint64_t end, uint64_t floor,
                   uint64_t ceiling):
    """mm/memory.c free_pgd_range(addr, end, floor, ceiling).

    Frees the page-table pages under [addr, end) whose whole span lies
    inside [floor, ceiling); a table shared with a VMA outside stays.
    ``ceiling == 0`` means the top of the address space, as in the kernel.

    Example::

        >>> free_pgd_range(eng, 0x40000000, 0x40200000, 0, 0)
    """
    eng.enter()
    try:
        if end <= addr:
            raise ValueError("free_pgd_range: end must be above addr")
        if addr >= eng.va_limit or end > eng.va_limit:
            raise ValueError("free_pgd_range: range beyond the address space")
        if floor > eng.va_limit or ceiling > eng.va_limit:
            raise ValueError("free_pgd_range: floor/ceiling beyond the address space")
        with nogil:
            free_pgd_range_c(eng, addr, end, floor, ceiling)
    finally:
        eng.leave()
