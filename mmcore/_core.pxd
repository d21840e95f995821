# cython: language_level=3
"""Declarations of _core.pyx, the engine's storage, shared by every mmcore
module: Engine's fields and methods, the counter/owner/warning enums, the
frame tag layout, FaultArgs (the fault path's struct vm_fault) and, at the
end, the per-entry and per-page helpers as inline functions."""
cimport cython
from libc.stdint cimport uint64_t, int64_t, uint32_t, uint16_t, uint8_t, int8_t
from libc.stdlib cimport free
from libc.string cimport memset, memcpy

from mmcore._region cimport pymm_region
from mmcore._shmem cimport (ShmObj, ShmLeaf, shm_leaf, shm_leaf_create, shm_next_leaf, XA_CHUNK_SIZE,
                            XA_CHUNK_MASK, XA_CHUNK_SHIFT)

cdef enum:
    MAXLEV = 5
    MAXWARN = 64

# Indices into Engine.ctr.  Names match pymm's mm.stats keys.
cdef enum:
    CTR_PTE_MOVES
    CTR_PMD_MOVES
    CTR_PUD_MOVES
    CTR_HUGE_PMD_MOVES
    CTR_PGTABLES_ALLOCATED
    CTR_PGTABLES_FREED
    CTR_TLB_FLUSHES
    CTR_PTE_SLOTS_VISITED
    CTR_HUGE_PMD_SPLITS
    CTR_FAULTS
    CTR_COW
    CTR_WARNINGS
    NCTR

cdef enum:
    OWNER_FREE = 0
    OWNER_ANON = 1
    OWNER_SHMEM = 2

# Where a warning fired (the kernel object maps a site to "mm/mremap.c:211").
cdef enum:
    WARN_PMD_NOT_NONE = 0      # move_normal_pmd: WARN_ON(!pmd_none(*new_pmd))
    WARN_PUD_NOT_NONE = 1      # move_normal_pud: WARN_ON(!pud_none(*new_pud))
    WARN_HUGE_PMD_NOT_NONE = 2 # move_huge_pmd:   WARN_ON(!pmd_none(*new_pmd))
    WARN_OVERLAP_UP = 3        # Kirill's PATCHv2: WARN_ON(overlaps) moving up
    NWARNSITES = 4

cdef extern from *:
    """
    #define PYMM_TAG_KIND_MASK (3ULL << 62)
    #define PYMM_TAG_FILL 0ULL
    #define PYMM_TAG_BUF (1ULL << 62)
    #define PYMM_TAG_STAMP (2ULL << 62)
    #define PYMM_TAG_FREE (3ULL << 62)
    #define PYMM_TAG_VALUE_MASK ((1ULL << 62) - 1)
    #define PYMM_RMAP_INDEX_BITS 44
    #define PYMM_RMAP_INDEX_MASK ((1ULL << 44) - 1)
    #define PYMM_NO_FRAME (-1LL)
    """
    const uint64_t TAG_KIND_MASK "PYMM_TAG_KIND_MASK"
    const uint64_t TAG_FILL "PYMM_TAG_FILL"
    const uint64_t TAG_BUF "PYMM_TAG_BUF"
    const uint64_t TAG_STAMP "PYMM_TAG_STAMP"
    const uint64_t TAG_FREE "PYMM_TAG_FREE"
    const uint64_t TAG_VALUE_MASK "PYMM_TAG_VALUE_MASK"
    const int RMAP_INDEX_BITS "PYMM_RMAP_INDEX_BITS"
    const uint64_t RMAP_INDEX_MASK "PYMM_RMAP_INDEX_MASK"


# One call at a time per engine: an atomic flag taken by every entry point
# that touches the storage (Engine.enter()/leave()).
cdef extern from *:
    """
    static inline int pymm_try_enter(int *flag) {
    #if defined(__GNUC__) || defined(__clang__)
        int expected = 0;
        return __atomic_compare_exchange_n(flag, &expected, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
    #else
        if (*flag) return 0;   /* callers hold the GIL here */
        *flag = 1;
        return 1;
    #endif
    }
    static inline void pymm_leave(int *flag) {
    #if defined(__GNUC__) || defined(__clang__)
        __atomic_store_n(flag, 0, __ATOMIC_RELEASE);
    #else
        *flag = 0;
    #endif
    }
    """
    bint busy_try_enter "pymm_try_enter"(int *flag) noexcept nogil
    void busy_leave "pymm_leave"(int *flag) noexcept nogil


# Long calls (populate, memset) run in pieces of this much address space and
# look for a signal between them: a piece is a few ms of work.
cdef extern from *:
    """
    #define PYMM_SIGNAL_CHUNK (((unsigned long long)1) << 30)
    """
    const uint64_t SIGNAL_CHUNK "PYMM_SIGNAL_CHUNK"


cdef struct FaultArgs:
    # struct vm_fault: what the fault handler needs from the VMA and the fault
    # (memory.pyx's handle_mm_fault(), huge_memory.pyx's fault_huge()).
    uint64_t start       # the range faulted (what a fill covers)
    uint64_t end
    uint64_t vma_start
    uint64_t vma_end
    int64_t owner        # anon_vma or shmem object id
    uint64_t pgoff       # vma->vm_pgoff
    uint64_t prot        # vm_page_prot without RW: P|US|A [|NX], or PROTNONE
    bint writable        # VM_WRITE
    bint shared          # VM_SHARED: pages live in the shmem object
    bint write           # FAULT_FLAG_WRITE
    bint thp             # a PMD-sized folio may be used (thp_vma_allowable_order)
    bint zero_page       # map the (huge) zero page on read faults
    bint huge_zero_thp   # a write to the huge zero PMD gets a THP (4.19, 6.13+), not a split
    bint fill            # memset() in the same pass: give every page fill_tag
    uint64_t fill_tag
    int64_t fault_around # fault_around_bytes / PAGE_SIZE: read faults on shmem map cached neighbours


cdef struct Context:
    # One process's share of an engine its fork family uses (switch_mm()):
    # what is per mm_struct while the frames and owners are the machine's.
    int64_t root         # the pgd's table id
    int64_t tlive        # page-table pages of this process, the pgd included
    int64_t rss_anon, rss_shmem
    int64_t ctr[NCTR]
    uint64_t warned_once # WARN_ON_ONCE sites it hit (the Machine reports one per boot)
    bint used


cdef struct Warn:
    int site
    uint64_t old_addr
    uint64_t new_addr


@cython.final
cdef class Engine:
    cdef readonly object geometry
    cdef int nlev, lpte, lpmd, lpud
    cdef int shift[MAXLEV + 1]
    cdef int bits[MAXLEV + 1]
    cdef uint64_t imask[MAXLEV + 1]
    cdef uint64_t page_size, pmd_size, pud_size, ptrs_per_pte
    cdef uint64_t va_limit
    cdef int64_t ents
    # page-table pages: rows of one growable 2-D uint64 array
    cdef pymm_region rtbl, rftag, rfrmap
    cdef uint64_t *tbl
    cdef int8_t *tlevel
    cdef int64_t tcap, thw, tlive
    cdef int64_t *tfree
    cdef int64_t tnfree
    # THP deposits (pgtable_trans_huge_deposit()): per PMD table, the head of
    # its stack of deposited PTE tables (-1: none), as the kernel hangs them
    # off the PMD table's page (pmd_huge_pte()); per deposited table, the next
    # one down.  ndeposited: deposited tables in all (they count in tlive).
    cdef int64_t *tdeposit
    cdef int64_t *tdepnext
    cdef int64_t ndeposited
    # data frames
    cdef uint64_t *ftag
    cdef uint64_t *frmap
    cdef int64_t fcap, fhw, flive
    cdef int64_t ffree_head, fnfree
    cdef int64_t fhuge_head, fnhuge
    cdef int64_t huge_zero
    # byte buffers for pages written below page granularity
    cdef uint8_t **bufs
    cdef int64_t *bfree
    cdef int64_t bcap, bhw, bnfree, blive
    # owners: anon_vma ids and shmem objects
    cdef uint8_t *okind
    cdef ShmObj *oshm                  # a shmem object's page cache (_shmem.pxd)
    cdef int64_t *onpages              # its size in pages (the free list's link when free)
    cdef int64_t ocap, ohw, ofree_head, olive
    # accounting
    cdef int64_t ctr[NCTR]
    cdef int64_t rss_anon, rss_shmem
    cdef Warn warns[MAXWARN]
    cdef int nwarn
    cdef uint64_t warned_once
    cdef int busy                      # a call is running (enter()/leave())
    cdef int64_t max_pages             # limit on live page tables + frames (INT64_MAX: none)
    cdef bint limit_hit                # an allocation failed at max_pages (oom_error() clears it)
    # processes forked from this engine's first one (kernel/fork.c): each a
    # context with its own pgd and counters; one is current (switch_mm())
    cdef int64_t root                  # the current process's pgd (0 until a fork)
    cdef int64_t ctx_tlive             # its page-table pages, the pgd included
    cdef Context *ctxs                 # NULL until the first fork
    cdef int nctx, cur
    cdef uint32_t *fmapc               # per frame: mappings beyond the first (NULL until a fork)
    cdef int64_t mapc_cap
    cdef pymm_region rfmapc            # fmapc's reserved memory (zero until touched)
    cdef int64_t *oparent              # per owner: the anon_vma it was forked from (anon_vma->parent)
    cdef int64_t *orefs                # per owner: references (its MM's, its children's)

    # -- one call at a time ------------------------------------------------------
    cdef int enter(self) except -1
    cdef void leave(self) noexcept nogil
    cdef object oom_error(self, str what)
    # -- tables (mm/pgalloc) ------------------------------------------------
    cdef int64_t table_alloc(self, int level) noexcept nogil
    cdef void table_free(self, int64_t t) noexcept nogil
    cdef int64_t walk_to(self, uint64_t addr, int level) noexcept nogil
    cdef int64_t alloc_to(self, uint64_t addr, int level) noexcept nogil
    # -- frames -----------------------------------------------------------------
    cdef int grow_frames(self, int64_t need) noexcept nogil
    cdef void push_free_range(self, int64_t f, int64_t n) noexcept nogil
    cdef int64_t frame_alloc_huge(self, uint64_t rmap0) noexcept nogil
    cdef void set_tags_run(self, int64_t f, int64_t n, uint64_t tag) noexcept nogil
    cdef void frame_free_huge(self, int64_t f) noexcept nogil
    cdef int64_t buf_alloc(self, int64_t f) noexcept nogil
    cdef int grow_mapcount(self, int64_t need) noexcept nogil
    # -- processes (contexts) -----------------------------------------------------
    cdef void switch_ctx(self, int ctx) noexcept nogil
    cdef int _check_ctx(self, int64_t ctx) except -1
    # -- owners -----------------------------------------------------------------
    cdef int64_t owner_slot(self) noexcept nogil
    cdef int _check_owner(self, int64_t o) except -1
    cdef void _owner_release(self, int64_t o) noexcept nogil
    cdef int _check_shmem(self, int64_t o) except -1
    # -- warnings -------------------------------------------------------------------
    cdef bint warn(self, int site, int once, uint64_t old_addr, uint64_t new_addr) noexcept nogil
    # -- validation at the Python boundary ---------------------------------------------
    cdef int _check_addr(self, uint64_t addr) except -1
    cdef int _check_range(self, uint64_t start, uint64_t end) except -1
    cdef int _check_pages(self, uint64_t start, int64_t npages) except -1
    cdef int _check_page_aligned(self, uint64_t start, uint64_t end) except -1


# ---------------------------------------------------------------------------
# Per-entry and per-page helpers.  They are inline here, not methods, so that
# every module cimporting this file compiles them into its own loops: a call
# across modules to a method of Engine would be an indirect (vtable) call.

cdef inline uint64_t span_end(uint64_t addr, uint64_t end, uint64_t size) noexcept nogil:
    """pXd_addr_end(): the next ``size`` boundary after addr, or end if nearer."""
    cdef uint64_t boundary = (addr + size) & ~(size - 1)
    return boundary if boundary - 1 < end - 1 else end


cdef inline uint64_t rmap_word(int64_t owner, uint64_t index) noexcept nogil:
    """A frame's rmap word: the owner (anon_vma / shmem object) and page->index."""
    return ((<uint64_t>owner) << RMAP_INDEX_BITS) | (index & RMAP_INDEX_MASK)


cdef inline int64_t rmap_owner(uint64_t w) noexcept nogil:
    return <int64_t>(w >> RMAP_INDEX_BITS)


cdef inline uint64_t rmap_index(uint64_t w) noexcept nogil:
    return w & RMAP_INDEX_MASK


cdef inline uint64_t* row(Engine eng, int64_t t) noexcept nogil:
    """The entries of page-table page t (page_address() of the table's page)."""
    return eng.tbl + t * eng.ents


cdef inline bint is_zero_frame(Engine eng, int64_t f) noexcept nogil:
    """is_zero_pfn() / is_huge_zero_pfn()."""
    return f == 0 or (f >= eng.huge_zero and f < eng.huge_zero + <int64_t>eng.ptrs_per_pte)


cdef inline void fill_page(uint8_t *dst, uint64_t tag, int64_t n, uint8_t **bufs, int64_t off) noexcept nogil:
    """Produce n bytes of a page's contents from offset off."""
    cdef uint64_t kind = tag & TAG_KIND_MASK
    cdef uint64_t word
    cdef int64_t i
    if kind == TAG_BUF:
        memcpy(dst, bufs[tag & TAG_VALUE_MASK] + off, n)
    elif kind == TAG_STAMP:
        word = tag & TAG_VALUE_MASK
        for i in range(n):
            dst[i] = <uint8_t>(word >> (8 * ((off + i) & 7)))
    else:
        memset(dst, <int>(tag & 0xff), n)


cdef inline void drop_buffer(Engine eng, int64_t f) noexcept nogil:
    """Forget frame f's byte buffer (its contents are about to change)."""
    cdef int64_t slot
    if (eng.ftag[f] & TAG_KIND_MASK) == TAG_BUF:
        slot = <int64_t>(eng.ftag[f] & TAG_VALUE_MASK)
        free(eng.bufs[slot])
        eng.bufs[slot] = NULL
        eng.bfree[eng.bnfree] = slot
        eng.bnfree += 1
        eng.blive -= 1
        eng.ftag[f] = TAG_FILL


cdef inline void set_tag(Engine eng, int64_t f, uint64_t tag) noexcept nogil:
    """Give frame f new contents."""
    drop_buffer(eng, f)
    eng.ftag[f] = tag


cdef inline void pgtable_trans_huge_deposit(Engine eng, int64_t pmd_tid, int64_t pgtable) noexcept nogil:
    """mm/pgtable-generic.c pgtable_trans_huge_deposit(): keep PTE table
    ``pgtable`` with the PMD table ``pmd_tid`` for a huge PMD of it to split into."""
    eng.tdepnext[pgtable] = eng.tdeposit[pmd_tid]
    eng.tdeposit[pmd_tid] = pgtable
    eng.ndeposited += 1


cdef inline int64_t pgtable_trans_huge_withdraw(Engine eng, int64_t pmd_tid) noexcept nogil:
    """mm/pgtable-generic.c pgtable_trans_huge_withdraw(): take back a PTE
    table deposited with PMD table ``pmd_tid`` (-1 if none is there)."""
    cdef int64_t t = eng.tdeposit[pmd_tid]
    if t >= 0:
        eng.tdeposit[pmd_tid] = eng.tdepnext[t]
        eng.tdepnext[t] = -1
        eng.ndeposited -= 1
    return t


cdef inline bint fits(Engine eng, int64_t n) noexcept nogil:
    """Do n more pages (frames or page tables) fit under the engine's limit?"""
    return eng.tlive + eng.flive <= eng.max_pages - n


cdef inline bint over_limit(Engine eng, int64_t n) noexcept nogil:
    """An allocation of n pages is about to fail if they do not fit; the
    engine remembers why (oom_error() says so)."""
    if fits(eng, n):
        return False
    eng.limit_hit = True
    return True


cdef inline int64_t frame_alloc_tagged(Engine eng, uint64_t rmap, uint64_t tag) noexcept nogil:
    """A frame that starts out holding ``tag`` (a fault and a memset in one)."""
    cdef int64_t f
    if over_limit(eng, 1):
        return -1
    if eng.ffree_head >= 0:
        f = eng.ffree_head
        eng.ffree_head = <int64_t>(eng.ftag[f] & TAG_VALUE_MASK)
        if eng.ffree_head == <int64_t>TAG_VALUE_MASK:
            eng.ffree_head = -1
        eng.fnfree -= 1
    elif eng.fhuge_head >= 0:
        # break up a free huge block rather than grow
        f = eng.fhuge_head
        eng.fhuge_head = <int64_t>(eng.ftag[f] & TAG_VALUE_MASK)
        if eng.fhuge_head == <int64_t>TAG_VALUE_MASK:
            eng.fhuge_head = -1
        eng.fnhuge -= 1
        eng.push_free_range(f + 1, <int64_t>eng.ptrs_per_pte - 1)
    else:
        if eng.fhw >= eng.fcap and eng.grow_frames(eng.fhw + 1) < 0:
            return -1
        f = eng.fhw
        eng.fhw += 1
    eng.ftag[f] = tag                          # plain stores: the fault path reads these back
    eng.frmap[f] = rmap
    eng.flive += 1
    return f


cdef inline int64_t frame_alloc(Engine eng, uint64_t rmap) noexcept nogil:
    """alloc_page(): one zero-filled frame."""
    return frame_alloc_tagged(eng, rmap, TAG_FILL)


cdef inline void frame_free(Engine eng, int64_t f) noexcept nogil:
    """put_page() of an anonymous page whose last mapping went away."""
    drop_buffer(eng, f)
    eng.ftag[f] = TAG_FREE | (<uint64_t>eng.ffree_head if eng.ffree_head >= 0 else TAG_VALUE_MASK)
    eng.frmap[f] = 0
    eng.ffree_head = f
    eng.fnfree += 1
    eng.flive -= 1


cdef inline int64_t frame_copy(Engine eng, int64_t f, uint64_t rmap) noexcept nogil:
    """copy_user_highpage() for wp_page_copy(): a new frame holding what
    frame f holds."""
    cdef int64_t g = frame_alloc_tagged(eng, rmap, eng.ftag[f])
    cdef int64_t slot
    if g < 0:
        return -1
    if (eng.ftag[f] & TAG_KIND_MASK) == TAG_BUF:
        eng.ftag[g] = TAG_FILL               # its own buffer, a copy of f's bytes
        slot = eng.buf_alloc(g)
        if slot < 0:
            frame_free(eng, g)
            return -1
        memcpy(eng.bufs[slot], eng.bufs[eng.ftag[f] & TAG_VALUE_MASK], eng.page_size)
    return g


cdef inline bint put_shared(Engine eng, int64_t f, int64_t n) noexcept nogil:
    """folio_remove_rmap_*() on a frame (n = 1) or a PMD-mapped folio (n =
    PTRS_PER_PTE) another process may still map (after a fork): drop one
    mapping of each frame; frames left unmapped are freed one by one.
    False when none was shared (the caller frees the whole as before)."""
    cdef int64_t i
    cdef bint shared = False
    for i in range(n):
        if eng.fmapc[f + i]:
            shared = True
            break
    if not shared:
        return False
    for i in range(n):
        if eng.fmapc[f + i]:
            eng.fmapc[f + i] -= 1
        else:
            frame_free(eng, f + i)
    return True


cdef inline uint32_t mapcount_extra(Engine eng, int64_t f) noexcept nogil:
    """folio_mapcount() - 1 of an anonymous frame: how many more processes map it."""
    return eng.fmapc[f] if eng.fmapc != NULL and f < eng.mapc_cap else 0


cdef inline void release_frame(Engine eng, int64_t f, bint huge) noexcept nogil:
    """What zap_pte_range()/zap_huge_pmd() do with the page behind a
    cleared entry: anonymous pages are freed, shmem pages stay in their
    object (only the map count drops), the zero page is never freed."""
    cdef int64_t owner, n, i
    if is_zero_frame(eng, f):
        return
    n = <int64_t>eng.ptrs_per_pte if huge else 1
    owner = rmap_owner(eng.frmap[f])
    if owner > 0 and eng.okind[owner] == OWNER_SHMEM:
        for i in range(n):
            shmem_unmapped(eng, owner, <int64_t>rmap_index(eng.frmap[f + i]))
            eng.rss_shmem -= 1
        return
    eng.rss_anon -= n
    if eng.fmapc != NULL and put_shared(eng, f, n):
        return                                 # still mapped by another process
    if huge:
        eng.frame_free_huge(f)
    else:
        frame_free(eng, f)


cdef inline ShmLeaf* shmem_leaf(Engine eng, int64_t o, int64_t index) noexcept nogil:
    """The leaf of shmem object o's page cache holding index, or NULL
    (none yet, or index beyond the object)."""
    cdef ShmObj *s = &eng.oshm[o]
    if index < 0 or index >= eng.onpages[o]:
        return NULL
    if (index >> XA_CHUNK_SHIFT) == s.last_key:    # the common case, without a call
        return s.last_leaf
    return shm_leaf(s, index)


cdef inline int64_t shmem_lookup(Engine eng, int64_t o, int64_t index) noexcept nogil:
    """filemap_get_entry(): the frame of object o's page at index, or 0
    when it is not in the page cache."""
    cdef ShmLeaf *leaf = shmem_leaf(eng, o, index)
    return 0 if leaf == NULL else leaf.frame[index & XA_CHUNK_MASK]


cdef inline int64_t shmem_mapcount(Engine eng, int64_t o, int64_t index) noexcept nogil:
    """folio_mapcount() of object o's page at index; -1 when not in the cache."""
    cdef ShmLeaf *leaf = shmem_leaf(eng, o, index)
    if leaf == NULL or leaf.frame[index & XA_CHUNK_MASK] == 0:
        return -1
    return leaf.mapc[index & XA_CHUNK_MASK]


cdef inline void shmem_mapped(Engine eng, int64_t o, int64_t index) noexcept nogil:
    """One more PTE maps object o's page at index (it is in the cache)."""
    cdef ShmLeaf *leaf = shmem_leaf(eng, o, index)
    if leaf != NULL and leaf.mapc[index & XA_CHUNK_MASK] < 0xFFFF:
        leaf.mapc[index & XA_CHUNK_MASK] += 1


cdef inline void shmem_unmapped(Engine eng, int64_t o, int64_t index) noexcept nogil:
    """One PTE fewer maps object o's page at index; the page stays cached."""
    cdef ShmLeaf *leaf = shmem_leaf(eng, o, index)
    if leaf != NULL and leaf.mapc[index & XA_CHUNK_MASK] > 0:
        leaf.mapc[index & XA_CHUNK_MASK] -= 1


cdef inline int64_t shmem_get(Engine eng, int64_t o, int64_t index) noexcept nogil:
    """shmem_get_folio(): the object's page at index, allocated on first
    use (the page and, as in the xarray, the nodes on its way); counts
    one more mapping of it."""
    cdef int64_t f
    cdef ShmLeaf *leaf
    cdef int64_t slot = index & XA_CHUNK_MASK
    if index < 0 or index >= eng.onpages[o]:
        return -1
    if (index >> XA_CHUNK_SHIFT) == eng.oshm[o].last_key:
        leaf = eng.oshm[o].last_leaf
    else:
        leaf = shm_leaf_create(&eng.oshm[o], index)
        if leaf == NULL:
            return -1
    f = leaf.frame[slot]
    if f == 0:
        f = frame_alloc(eng, rmap_word(o, <uint64_t>index))
        if f < 0:
            return -1
        leaf.frame[slot] = <uint32_t>f
    if leaf.mapc[slot] < 0xFFFF:
        leaf.mapc[slot] += 1
    return f


cdef inline int64_t shmem_nrpages(Engine eng, int64_t o) noexcept nogil:
    """mapping->nrpages of object o: its pages in the cache (a walk over its leaves)."""
    cdef int64_t pos = 0, n = 0
    cdef int i
    cdef ShmLeaf *leaf
    while True:
        leaf = shm_next_leaf(&eng.oshm[o], &pos)
        if leaf == NULL:
            return n
        for i in range(XA_CHUNK_SIZE):
            n += leaf.frame[i] != 0
        pos += XA_CHUNK_SIZE


cdef inline int64_t shmem_first_mapped_in(void *node, int l, int64_t base) noexcept nogil:
    """The first index at or after base that a PTE maps in a subtree of an
    object's cache (level l, first index base), or -1."""
    cdef int i
    cdef int64_t r
    cdef ShmLeaf *leaf
    if node == NULL:
        return -1
    if l == 0:
        leaf = <ShmLeaf*>node
        for i in range(XA_CHUNK_SIZE):
            if leaf.mapc[i]:
                return base + i
        return -1
    for i in range(XA_CHUNK_SIZE):
        if (<void**>node)[i] != NULL:
            r = shmem_first_mapped_in((<void**>node)[i], l - 1, base + ((<int64_t>i) << (XA_CHUNK_SHIFT * l)))
            if r >= 0:
                return r
    return -1


cdef inline int64_t shmem_first_mapped(Engine eng, int64_t o) noexcept nogil:
    """The first page of shmem object o that a PTE still maps, or -1."""
    return shmem_first_mapped_in(eng.oshm[o].root, eng.oshm[o].height, 0)


cdef inline void shmem_evict_subtree(Engine eng, void *node, int l) noexcept nogil:
    """shmem_evict_inode() -> shmem_truncate_range(), then xa_destroy(), in
    one pass: free the pages of a subtree of an object's cache (none is
    mapped any more) and its nodes.  The caller clears the root."""
    cdef int i
    cdef ShmLeaf *leaf
    if node == NULL:
        return
    if l == 0:
        leaf = <ShmLeaf*>node
        for i in range(XA_CHUNK_SIZE):
            if leaf.frame[i] != 0:
                frame_free(eng, leaf.frame[i])
    else:
        for i in range(XA_CHUNK_SIZE):
            if (<void**>node)[i] != NULL:
                shmem_evict_subtree(eng, (<void**>node)[i], l - 1)
    free(node)
