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
    cdef uint32_t **oframes
    cdef uint16_t **omapc
    cdef int64_t *onpages
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
    # -- owners -----------------------------------------------------------------
    cdef int64_t owner_slot(self) noexcept nogil
    cdef int _check_owner(self, int64_t o) except -1
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


cdef inline void release_frame(Engine eng, int64_t f, bint huge) noexcept nogil:
    """What zap_pte_range()/zap_huge_pmd() do with the page behind a
    cleared entry: anonymous pages are freed, shmem pages stay in their
    object (only the map count drops), the zero page is never freed."""
    cdef int64_t owner, idx, n, i
    if is_zero_frame(eng, f):
        return
    n = <int64_t>eng.ptrs_per_pte if huge else 1
    owner = rmap_owner(eng.frmap[f])
    if owner > 0 and eng.okind[owner] == OWNER_SHMEM:
        for i in range(n):
            idx = <int64_t>rmap_index(eng.frmap[f + i])
            if idx < eng.onpages[owner] and eng.omapc[owner][idx] > 0:
                eng.omapc[owner][idx] -= 1
            eng.rss_shmem -= 1
        return
    eng.rss_anon -= n
    if huge:
        eng.frame_free_huge(f)
    else:
        frame_free(eng, f)


cdef inline int64_t shmem_get(Engine eng, int64_t o, int64_t index) noexcept nogil:
    """shmem_get_folio(): the object's page at index, allocated on first
    use; counts one more mapping of it."""
    cdef int64_t f
    if index < 0 or index >= eng.onpages[o]:
        return -1
    f = eng.oframes[o][index]
    if f == 0:
        f = frame_alloc(eng, rmap_word(o, <uint64_t>index))
        if f < 0:
            return -1
        eng.oframes[o][index] = <uint32_t>f
    if eng.omapc[o][index] < 0xFFFF:
        eng.omapc[o][index] += 1
    return f
