# cython: language_level=3
"""Declarations of the page-table engine, shared by _core.pyx and _mremap.pyx."""
cimport cython
from libc.stdint cimport uint64_t, int64_t, uint32_t, uint16_t, uint8_t, int8_t

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


cdef struct FaultArgs:
    # What the fault handler needs from the VMA (mm/memory.c handle_mm_fault).
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
    bint fill            # memset() in the same pass: give every page fill_tag
    uint64_t fill_tag
    int64_t fault_around # fault_around_bytes / PAGE_SIZE: read faults on shmem map cached neighbours


cdef struct Warn:
    int site
    uint64_t old_addr
    uint64_t new_addr


# Problems found by Engine.check_scan (codes index mmcore._core.PROBLEM_CODES).
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

cdef struct Problem:
    int code
    uint64_t addr
    uint64_t found
    uint64_t expected

# Engine.leaf_runs(): merged runs of leaves.
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

# Engine.table_tree(): one row per reachable page-table page.
cdef struct TreeOut:
    int64_t n
    int64_t *table
    int64_t *parent
    int64_t *index
    int64_t *fill
    uint64_t *base
    int8_t *level
    uint8_t *seen

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

    # -- tables (mm/pgalloc) ------------------------------------------------
    cdef uint64_t* row(self, int64_t t) noexcept nogil
    cdef int64_t table_alloc(self, int level) noexcept nogil
    cdef void table_free(self, int64_t t) noexcept nogil
    cdef int64_t walk_to(self, uint64_t addr, int level) noexcept nogil
    cdef int64_t alloc_to(self, uint64_t addr, int level) noexcept nogil
    # -- frames -----------------------------------------------------------------
    cdef int grow_frames(self, int64_t need) noexcept nogil
    cdef int64_t frame_alloc(self, uint64_t rmap) noexcept nogil
    cdef int64_t frame_alloc_tagged(self, uint64_t rmap, uint64_t tag) noexcept nogil
    cdef void push_free_range(self, int64_t f, int64_t n) noexcept nogil
    cdef int64_t frame_alloc_huge(self, uint64_t rmap0) noexcept nogil
    cdef void set_tags_run(self, int64_t f, int64_t n, uint64_t tag) noexcept nogil
    cdef void frame_free(self, int64_t f) noexcept nogil
    cdef void frame_free_huge(self, int64_t f) noexcept nogil
    cdef void drop_buffer(self, int64_t f) noexcept nogil
    cdef bint is_zero_frame(self, int64_t f) noexcept nogil
    cdef void release_frame(self, int64_t f, bint huge) noexcept nogil
    cdef int64_t buf_alloc(self, int64_t f) noexcept nogil
    cdef void set_tag(self, int64_t f, uint64_t tag) noexcept nogil
    # -- owners -----------------------------------------------------------------
    cdef int64_t owner_slot(self) noexcept nogil
    cdef int _check_owner(self, int64_t o) except -1
    cdef int64_t shmem_get(self, int64_t o, int64_t index) noexcept nogil
    # -- faults, zap, free_pgd_range, mprotect ------------------------------------
    cdef int fault_pte(self, uint64_t *ptep, uint64_t va, FaultArgs *a) noexcept nogil
    cdef int _vma_fault_args(self, FaultArgs *a, uint64_t vma_start, uint64_t vma_end, int64_t owner,
                             uint64_t pgoff, bint shared, bint writable, bint exec_, bint protnone,
                             int fault_around) except -1
    cdef int64_t around_window(self, int64_t pte_off, uint64_t va, FaultArgs *a,
                               int64_t *to_pte) noexcept nogil
    cdef int64_t cached_index(self, int64_t pte_off, int64_t j, uint64_t va, FaultArgs *a) noexcept nogil
    cdef void do_fault_around(self, uint64_t *r, int64_t pte_off, uint64_t va, FaultArgs *a) noexcept nogil
    cdef int fault_huge(self, uint64_t *pmdp, uint64_t haddr, FaultArgs *a) noexcept nogil
    cdef int fault_range_c(self, uint64_t start, uint64_t end, FaultArgs *a) noexcept nogil
    cdef void zap_level(self, int l, int64_t t, uint64_t addr, uint64_t end) noexcept nogil
    cdef int split_huge_pmd(self, int64_t pmd_tid, int64_t pmd_idx) noexcept nogil
    cdef void free_entries(self, int l, int64_t t, uint64_t addr, uint64_t end,
                           uint64_t floor, uint64_t ceiling) noexcept nogil
    cdef void free_child(self, int l, int64_t pt, int64_t pi, uint64_t addr, uint64_t end,
                         uint64_t floor, uint64_t ceiling) noexcept nogil
    cdef void free_pgd_range_c(self, uint64_t addr, uint64_t end, uint64_t floor,
                               uint64_t ceiling) noexcept nogil
    cdef int change_level(self, int l, int64_t t, uint64_t addr, uint64_t end,
                          uint64_t prot, bint writable) noexcept nogil
    # -- the MMU and contents ------------------------------------------------------
    cdef int64_t translate_c(self, uint64_t addr, bint write) noexcept nogil
    cdef int64_t lookup_frame(self, uint64_t addr) noexcept nogil
    cdef int64_t set_tags_c(self, uint64_t start, uint64_t end, uint64_t tag, bint stamp) noexcept nogil
    cdef int64_t copy_bytes(self, uint64_t addr, uint8_t *buf, int64_t n, bint write) noexcept nogil
    cdef bint write_is_noop(self, int64_t f, int64_t off, uint8_t *src, int64_t n) noexcept nogil
    cdef void pagemap_c(self, uint64_t start, int64_t npages, uint64_t *out) noexcept nogil
    # -- warnings, checks ------------------------------------------------------------
    cdef bint warn(self, int site, int once, uint64_t old_addr, uint64_t new_addr) noexcept nogil
    cdef void runs_level(self, RunOut *o, int l, int64_t t, uint64_t addr, uint64_t end) noexcept nogil
    cdef void add_leaf(self, RunOut *o, uint64_t addr, uint64_t size, int l, uint64_t e) noexcept nogil
    cdef void tree_level(self, TreeOut *o, int l, int64_t t, uint64_t base, int64_t parent,
                         int64_t index) noexcept nogil
    cdef void scan_level(self, ScanState *s, int l, int64_t t, uint64_t base) noexcept nogil
    cdef void scan_leaf(self, ScanState *s, uint64_t addr, int64_t f) noexcept nogil
    cdef void scan_frames(self, ScanState *s) noexcept nogil
    cdef void scan_tables(self, ScanState *s) noexcept nogil
    cdef uint64_t digest_level(self, int l, int64_t t, uint64_t h) noexcept nogil
    cdef int _check_addr(self, uint64_t addr) except -1
    cdef int _check_range(self, uint64_t start, uint64_t end) except -1
    cdef int _check_pages(self, uint64_t start, int64_t npages) except -1
    cdef int _check_page_aligned(self, uint64_t start, uint64_t end) except -1
