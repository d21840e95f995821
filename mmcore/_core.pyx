# cython: language_level=3
"""The page-table engine's storage: tables, frames, owners, counters, warnings.

What a process's struct mm_struct holds and the allocators behind it: the
page-table pages (pte_alloc_one()/pmd_alloc_one()/... and their frees,
include/asm-generic/pgalloc.h), the data frames (alloc_page()/put_page(),
mm/page_alloc.c), the anon_vmas and shmem objects that own frames (mm/rmap.c,
mm/shmem.c's page cache), the mm's counters (MM_ANONPAGES, MM_SHMEMPAGES,
the page-table count) and the WARN_ON()s that fired.  What acts on them lives
in modules named for their kernel files, as functions taking the engine:
memory.pyx (mm/memory.c), huge_memory.pyx, mprotect.pyx, mremap.pyx,
pagewalk.pyx and check.pyx.  The per-page helpers they share (row(),
frame allocation, set_tag(), release_frame(), ...) are inline in _core.pxd.

The engine knows nothing of VMAs: the caller (pymm) passes what a VMA would
tell the kernel (bounds, owner, vm_pgoff, protection) with each call.

Storage
-------
* Page-table pages are rows of one growable 2-D ``uint64`` array
  (``tables[n, entries_per_table]``); a row's id plays the role of the table's
  physical frame number.  Row 0 is the root (the pgd).  Freed rows go on a
  free list.
* Data frames are numbered separately.  Per frame the engine keeps two flat
  arrays, 16 bytes in all:

  - ``tag``  (64 bits): what the page holds.  Bits 62-63 give the kind:
    FILL (the page is one byte repeated, in bits 0-7), BUF (bytes written below
    page granularity live in a side buffer, slot in bits 0-61), STAMP (the
    8-byte little-endian word in bits 0-61, repeated) or FREE (the frame is
    unallocated; bits 0-61 link the free list).
  - ``rmap`` (64 bits): ``page->index`` (bits 0-43, the linear page offset
    the rmap uses) and the owner id (bits 44-63: anon_vma or shmem object).

  Map counts: an anonymous frame exists exactly while one leaf maps it (no
  fork here), so its count is implied; shmem frames keep theirs in the
  object's page array, as the page cache keeps its pages.  The checker counts
  the real mappings and compares.
* Frame 0 is the zero page; a PTRS_PER_PTE-aligned block is the huge zero page.

Every loop over entries or pages below is typed C without the GIL.  Every
method callable from Python validates its arguments first.
"""
from libc.stdlib cimport malloc, realloc, free, calloc
from libc.string cimport memset, memcpy
cimport cython
from libc.stdint cimport uint64_t, int64_t, uint32_t, uint16_t, uint8_t, int8_t, INT64_MAX
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING

cimport numpy as cnp
import numpy as np
import operator

from mmcore._entries cimport *
from mmcore._region cimport region_init, region_grow, region_release, region_ptr, region_cap
from mmcore._shmem cimport shm_init, shm_next_leaf, shm_destroy, XA_CHUNK_SIZE

cnp.import_array()

COUNTER_NAMES = (
    "pte_moves", "pmd_moves", "pud_moves", "huge_pmd_moves",
    "pgtables_allocated", "pgtables_freed", "tlb_flushes",
    "pte_slots_visited", "huge_pmd_splits", "faults", "cow_faults", "warnings",
)

WARN_SITES = {
    "pmd_not_none": WARN_PMD_NOT_NONE,
    "pud_not_none": WARN_PUD_NOT_NONE,
    "huge_pmd_not_none": WARN_HUGE_PMD_NOT_NONE,
    "overlap_up": WARN_OVERLAP_UP,
}

cdef size_t REGION_RESERVE = 1 << 30   # address space reserved per big array (grows if needed)
MAX_OWNERS = 1 << (64 - 44)  # owner ids fit the 20 bits above the 44-bit index
# Largest per-page array a call returns (pagemap, page_tags): 512 GiB of
# address space, 1 GiB of uint64.  Beyond it a request is refused rather
# than left to the allocator (with overcommit, np.zeros would succeed and
# the fill would exhaust the machine).
MAX_ARRAY_PAGES = 1 << 27


class EngineBusy(RuntimeError):
    """A call reached an Engine while another thread's call was running on it."""


class EngineOutOfMemory(MemoryError):
    """The engine's page limit (Engine.max_pages: page tables + frames) is
    reached.  The call stopped where the kernel's allocation would have
    failed; what it did before stays done."""


# The engine's own limits on a geometry (mmcore.geometry.Geometry checks the
# same when it is built; the engine does not rely on that).
MIN_PAGE_SHIFT, MAX_PAGE_SHIFT = 10, 20
MAX_LEVEL_BITS = 16
MAX_VA_BITS = 57


def engine_geometry(geometry):
    """The numbers an Engine takes from ``geometry``: (bits per level as a
    tuple of ints, page_shift, va_bits), each checked against the engine's
    limits, and the geometry's derived properties checked to agree with
    them (pymm reads those).  ValueError/TypeError otherwise.

    Example::

        >>> from mmcore.geometry import X86_64
        >>> engine_geometry(X86_64)
        ((9, 9, 9, 9), 12, 48)
    """
    def as_int(name, v):
        if type(v) is not int:
            raise TypeError(f"geometry {name} must be an int, not {type(v).__name__}")
        return v
    bits = geometry.level_bits
    if type(bits) is not tuple:
        raise TypeError("geometry level_bits must be a tuple of ints")
    bits = tuple(as_int("level_bits", b) for b in bits)
    page_shift = as_int("page_shift", geometry.page_shift)
    if not 2 <= len(bits) <= MAXLEV:
        raise ValueError(f"geometry has {len(bits)} levels; the engine supports 2..{MAXLEV}")
    if not MIN_PAGE_SHIFT <= page_shift <= MAX_PAGE_SHIFT:
        raise ValueError(f"geometry page_shift {page_shift} outside {MIN_PAGE_SHIFT}..{MAX_PAGE_SHIFT}")
    if any(not 1 <= b <= MAX_LEVEL_BITS for b in bits):
        raise ValueError(f"geometry bits per level {bits} outside 1..{MAX_LEVEL_BITS}")
    va_bits = page_shift + sum(bits)
    if va_bits > MAX_VA_BITS:
        raise ValueError(f"geometry translates {va_bits} bits; the engine supports at most {MAX_VA_BITS}")
    # what pymm reads from the geometry must describe the same tables
    derived = (("levels", geometry.levels, len(bits)), ("va_bits", geometry.va_bits, va_bits),
               ("page_size", geometry.page_size, 1 << page_shift))
    for name, got, want in derived:
        if got != want:
            raise ValueError(f"geometry {name} is {got!r} but its level_bits/page_shift give {want}")
    for l in range(len(bits)):
        if geometry.shift(l) != page_shift + sum(bits[l + 1:]):
            raise ValueError(f"geometry shift({l}) disagrees with its level_bits/page_shift")
    return bits, page_shift, va_bits


@cython.final
cdef class Engine:
    """A process's page tables and the memory they map.

    Example::

        >>> from mmcore import Engine, X86_64, handle_mm_fault
        >>> eng = Engine(X86_64)
        >>> o = eng.owner_new("anon")
        >>> handle_mm_fault(eng, 0x40000000, 0x40200000, vma_start=0x40000000,
        ...                 vma_end=0x40200000, owner=o, pgoff=0x40000, write=True)
        >>> eng.stats()["faults"], eng.rss()
        (512, (512, 0))
    """

    def __cinit__(self, geometry):
        from mmcore.geometry import Geometry
        if not isinstance(geometry, Geometry):
            raise TypeError("Engine(geometry): a mmcore.geometry.Geometry is required")
        cdef int l
        cdef int page_shift
        # The engine reads the geometry's primary numbers once, checks them
        # against its own limits (MAXLEV levels, its arrays' sizes) and
        # derives everything else itself: a subclass or an
        # object.__setattr__ cannot make it index out of bounds.
        bits, page_shift, va_bits = engine_geometry(geometry)
        self.geometry = geometry
        self.nlev = len(bits)
        self.lpte = self.nlev - 1
        self.lpmd = self.nlev - 2
        self.lpud = self.nlev - 3 if self.nlev >= 3 else 0
        self.ents = 0
        for l in range(self.nlev):
            self.bits[l] = bits[l]
            self.shift[l] = page_shift + sum(bits[l + 1:])
            self.imask[l] = ((<uint64_t>1) << self.bits[l]) - 1
            if (1 << self.bits[l]) > self.ents:
                self.ents = 1 << self.bits[l]
        self.page_size = (<uint64_t>1) << page_shift
        self.pmd_size = (<uint64_t>1) << self.shift[self.lpmd]
        self.pud_size = (<uint64_t>1) << self.shift[self.lpud]
        self.ptrs_per_pte = (<uint64_t>1) << self.bits[self.lpte]
        self.va_limit = (<uint64_t>1) << va_bits
        # Reserve address space for the big arrays: 1 GiB each, touched on use.
        # three arrays, three stagger slots (see _region.pxd: no aliasing)
        if region_init(&self.rtbl, REGION_RESERVE, 0) < 0 or region_init(&self.rftag, REGION_RESERVE, 1) < 0 \
                or region_init(&self.rfrmap, REGION_RESERVE, 2) < 0:
            raise MemoryError("cannot reserve address space for the engine")
        self.tbl = <uint64_t*>region_ptr(&self.rtbl)
        self.ftag = <uint64_t*>region_ptr(&self.rftag)
        self.frmap = <uint64_t*>region_ptr(&self.rfrmap)
        self.fcap = <int64_t>(min(region_cap(&self.rftag), region_cap(&self.rfrmap)) // sizeof(uint64_t))
        self.ffree_head = -1
        self.fhuge_head = -1
        self.ofree_head = -1
        self.huge_zero = -1
        self.max_pages = INT64_MAX
        # root table (the pgd)
        if self.table_alloc(0) != 0:
            raise MemoryError("cannot allocate the root table")
        self.ctr[CTR_PGTABLES_ALLOCATED] = 0  # the pgd comes with the mm
        # frame 0: the zero page; then the huge zero folio (a whole aligned block)
        if frame_alloc(self, 0) != 0:
            raise MemoryError("cannot allocate the zero page")
        self.huge_zero = self.frame_alloc_huge(0)
        if self.huge_zero < 0:
            raise MemoryError("cannot allocate the huge zero page")
        self.flive = 0  # the zero pages are not counted as allocated memory
        # owner 0 means "no owner"
        if self.owner_slot() != 0:
            raise MemoryError("cannot allocate the owner table")

    def __dealloc__(self):
        cdef int64_t i
        if self.bufs != NULL:
            for i in range(self.bhw):
                free(self.bufs[i])  # free slots hold NULL
            free(self.bufs)
        free(self.bfree)
        if self.oshm != NULL:
            for i in range(self.ohw):
                if self.okind[i] == OWNER_SHMEM:
                    shm_destroy(&self.oshm[i])
        free(self.oshm); free(self.onpages); free(self.okind)
        free(self.tlevel); free(self.tfree); free(self.tdeposit); free(self.tdepnext)
        free(self.ctxs); free(self.oparent); free(self.orefs)
        if self.fmapc != NULL:
            region_release(&self.rfmapc, REGION_RESERVE, <size_t>self.fhw * sizeof(uint32_t))
        # to the pool, zeroed as far as used: a region may come back as any
        # of the three, and table_alloc() relies on fresh rows reading zero
        region_release(&self.rtbl, REGION_RESERVE, <size_t>self.thw * self.ents * sizeof(uint64_t))
        region_release(&self.rftag, REGION_RESERVE, <size_t>self.fhw * sizeof(uint64_t))
        region_release(&self.rfrmap, REGION_RESERVE, <size_t>self.fhw * sizeof(uint64_t))

    # ------------------------------------------------------------------ one call at a time
    cdef int enter(self) except -1:
        """Claim the engine for one call (every entry point that touches the
        storage does, and leave()s in a finally).  A second thread arriving
        while a call runs gets EngineBusy, never a crash: the loops run
        without the GIL, and two of them on one address space would corrupt
        it, as two CPUs changing page tables without mmap_lock would."""
        if not busy_try_enter(&self.busy):
            raise EngineBusy("this mmcore.Engine is in use by another thread: calls on one engine (one "
                             "address space) must not overlap; serialise them (pymm.MM does) or give "
                             "each thread its own engine")
        self.limit_hit = False
        return 0

    cdef void leave(self) noexcept nogil:
        busy_leave(&self.busy)

    cdef object oom_error(self, str what):
        """The exception for an allocation that failed during ``what``:
        EngineOutOfMemory at the page limit, MemoryError if the host refused."""
        if self.limit_hit:
            self.limit_hit = False
            return EngineOutOfMemory(f"{what}: the engine's limit of {self.max_pages} pages (page "
                                     f"tables + frames, Engine.max_pages) is reached")
        return MemoryError(f"{what}: the host is out of memory")

    # ------------------------------------------------------------------ tables
    cdef int64_t table_alloc(self, int level) noexcept nogil:
        """pte_alloc_one()/pmd_alloc_one()/...: a zeroed page-table page."""
        cdef int64_t t, ncap
        cdef size_t rowbytes = self.ents * sizeof(uint64_t)
        cdef int8_t *nl
        cdef int64_t *nf
        if over_limit(self, 1):
            return -1
        if self.tnfree > 0:
            self.tnfree -= 1
            t = self.tfree[self.tnfree]
            memset(row(self, t), 0, rowbytes) # a recycled row may hold old entries
        else:
            if self.thw == self.tcap:
                ncap = self.tcap * 2 if self.tcap else 64
                nl = <int8_t*>realloc(self.tlevel, ncap * sizeof(int8_t))
                if nl == NULL:
                    return -1
                self.tlevel = nl
                nf = <int64_t*>realloc(self.tfree, ncap * sizeof(int64_t))
                if nf == NULL:
                    return -1
                self.tfree = nf
                nf = <int64_t*>realloc(self.tdeposit, ncap * sizeof(int64_t))
                if nf == NULL:
                    return -1
                self.tdeposit = nf
                nf = <int64_t*>realloc(self.tdepnext, ncap * sizeof(int64_t))
                if nf == NULL:
                    return -1
                self.tdepnext = nf
                self.tcap = ncap
            if <size_t>(self.thw + 1) * rowbytes > region_cap(&self.rtbl):
                if region_grow(&self.rtbl, <size_t>(self.thw + 1) * rowbytes) < 0:
                    return -1
                self.tbl = <uint64_t*>region_ptr(&self.rtbl)
            t = self.thw  # never used: still zero from mmap
            self.thw += 1
        self.tlevel[t] = <int8_t>level
        self.tdeposit[t] = -1
        self.tdepnext[t] = -1
        self.tlive += 1
        self.ctx_tlive += 1
        self.ctr[CTR_PGTABLES_ALLOCATED] += 1
        return t

    cdef void table_free(self, int64_t t) noexcept nogil:
        """pte_free_tlb()/pmd_free_tlb()/...: give a page-table page back."""
        self.tlevel[t] = -1
        self.tfree[self.tnfree] = t
        self.tnfree += 1
        self.tlive -= 1
        self.ctx_tlive -= 1
        self.ctr[CTR_PGTABLES_FREED] += 1

    cdef int64_t walk_to(self, uint64_t addr, int level) noexcept nogil:
        """The table at ``level`` that covers addr: -1 if an entry above is
        none, -2 if a huge leaf above maps it (pmd_offset() after the checks
        get_old_pmd() makes)."""
        cdef int64_t t = self.root
        cdef int l
        cdef uint64_t e
        for l in range(level):
            e = row(self, t)[(addr >> self.shift[l]) & self.imask[l]]
            if e == 0:
                return -1
            if pmd_leaf(e):
                return -2
            t = entry_pfn(e)
        return t

    cdef int64_t alloc_to(self, uint64_t addr, int level) noexcept nogil:
        """Like walk_to() but allocating missing tables on the way:
        p4d_alloc(), pud_alloc(), pmd_alloc(), pte_alloc().  -1: out of
        memory; -2: a huge leaf is in the way (split it first)."""
        cdef int64_t t = self.root, n
        cdef int l
        cdef uint64_t e
        cdef int64_t i
        for l in range(level):
            i = (addr >> self.shift[l]) & self.imask[l]
            e = row(self, t)[i]
            if e == 0:
                n = self.table_alloc(l + 1)
                if n < 0:
                    return -1
                row(self, t)[i] = pfn_entry(n, _PAGE_TABLE)
                t = n
            elif pmd_leaf(e):
                return -2
            else:
                t = entry_pfn(e)
        return t

    # ------------------------------------------------------------------ frames
    cdef int grow_frames(self, int64_t need) noexcept nogil:
        """Make room for ``need`` frames in the per-frame arrays."""
        if need <= self.fcap:
            return 0
        if need > <int64_t>0xFFFFFFFF:
            return -1  # shmem page arrays store frame ids in 32 bits
        if region_grow(&self.rftag, <size_t>need * sizeof(uint64_t)) < 0 or \
                region_grow(&self.rfrmap, <size_t>need * sizeof(uint64_t)) < 0:
            return -1
        self.ftag = <uint64_t*>region_ptr(&self.rftag)
        self.frmap = <uint64_t*>region_ptr(&self.rfrmap)
        self.fcap = <int64_t>(min(region_cap(&self.rftag), region_cap(&self.rfrmap)) // sizeof(uint64_t))
        if self.fmapc != NULL:
            return self.grow_mapcount(self.fcap)
        return 0

    cdef int grow_mapcount(self, int64_t need) noexcept nogil:
        """Per-frame map counts (page->_mapcount), from the first fork on:
        room for ``need`` frames, the new ones zero (mapped once at most).
        A reserved region: untouched counts cost nothing."""
        if need <= self.mapc_cap:
            return 0
        if self.fmapc == NULL:
            if region_init(&self.rfmapc, REGION_RESERVE, 3) < 0:
                return -1
        if <size_t>need * sizeof(uint32_t) > region_cap(&self.rfmapc):
            if region_grow(&self.rfmapc, <size_t>need * sizeof(uint32_t)) < 0:
                return -1
        self.fmapc = <uint32_t*>region_ptr(&self.rfmapc)
        self.mapc_cap = <int64_t>(region_cap(&self.rfmapc) // sizeof(uint32_t))
        return 0

    cdef void push_free_range(self, int64_t f, int64_t n) noexcept nogil:
        cdef int64_t i
        for i in range(f + n - 1, f - 1, -1):
            self.ftag[i] = TAG_FREE | (<uint64_t>self.ffree_head if self.ffree_head >= 0 else TAG_VALUE_MASK)
            self.frmap[i] = 0
            self.ffree_head = i
            self.fnfree += 1

    cdef int64_t frame_alloc_huge(self, uint64_t rmap0) noexcept nogil:
        """alloc a PMD-order folio: PTRS_PER_PTE frames, aligned as a huge
        PFN must be.  Frame i gets index rmap0's index + i."""
        cdef int64_t f, base, i, n = <int64_t>self.ptrs_per_pte
        if over_limit(self, n):
            return -1
        if self.fhuge_head >= 0:
            f = self.fhuge_head
            self.fhuge_head = <int64_t>(self.ftag[f] & TAG_VALUE_MASK)
            if self.fhuge_head == <int64_t>TAG_VALUE_MASK:
                self.fhuge_head = -1
            self.fnhuge -= 1
        else:
            base = (self.fhw + n - 1) & ~(n - 1)
            if base + n > self.fcap and self.grow_frames(base + n) < 0:
                return -1
            if base > self.fhw:
                self.push_free_range(self.fhw, base - self.fhw)
            f = base
            self.fhw = base + n
        for i in range(n):
            self.ftag[f + i] = TAG_FILL
            self.frmap[f + i] = rmap0 + <uint64_t>i if rmap0 else 0
        self.flive += n
        return f

    cdef void set_tags_run(self, int64_t f, int64_t n, uint64_t tag) noexcept nogil:
        """Give frames f .. f+n-1 new contents (the subpages of a huge page)."""
        cdef int64_t i
        for i in range(n):
            drop_buffer(self, f + i)
            self.ftag[f + i] = tag

    cdef void frame_free_huge(self, int64_t f) noexcept nogil:
        """free a whole PMD-order folio back to the huge free list."""
        cdef int64_t i, n = <int64_t>self.ptrs_per_pte
        for i in range(1, n):
            drop_buffer(self, f + i)
            self.ftag[f + i] = TAG_FREE | TAG_VALUE_MASK
            self.frmap[f + i] = 0
        drop_buffer(self, f)
        self.ftag[f] = TAG_FREE | (<uint64_t>self.fhuge_head if self.fhuge_head >= 0 else TAG_VALUE_MASK)
        self.frmap[f] = 0
        self.fhuge_head = f
        self.fnhuge += 1
        self.flive -= n

    cdef int64_t buf_alloc(self, int64_t f) noexcept nogil:
        """Materialise a byte buffer for frame f (its current content copied)."""
        cdef int64_t slot, ncap
        cdef uint8_t **nb
        cdef int64_t *nf
        cdef uint8_t *b
        cdef uint64_t tag = self.ftag[f]
        if (tag & TAG_KIND_MASK) == TAG_BUF:
            return <int64_t>(tag & TAG_VALUE_MASK)
        b = <uint8_t*>malloc(self.page_size)
        if b == NULL:
            return -1
        fill_page(b, tag, <int64_t>self.page_size, NULL, 0)
        if self.bnfree > 0:
            self.bnfree -= 1
            slot = self.bfree[self.bnfree]
        else:
            if self.bhw == self.bcap:
                ncap = self.bcap * 2 if self.bcap else 64
                nb = <uint8_t**>realloc(self.bufs, ncap * sizeof(uint8_t*))
                if nb == NULL:
                    free(b)
                    return -1
                self.bufs = nb
                nf = <int64_t*>realloc(self.bfree, ncap * sizeof(int64_t))
                if nf == NULL:
                    free(b)
                    return -1
                self.bfree = nf
                self.bcap = ncap
            slot = self.bhw
            self.bhw += 1
        self.bufs[slot] = b
        self.ftag[f] = TAG_BUF | <uint64_t>slot
        self.blive += 1
        return slot

    # ------------------------------------------------------------------ owners
    cdef int64_t owner_slot(self) noexcept nogil:
        cdef int64_t o, ncap
        if self.ofree_head >= 0:
            o = self.ofree_head
            self.ofree_head = self.onpages[o]
            self.oparent[o] = 0
            self.orefs[o] = 1
            return o
        if self.ohw == self.ocap:
            ncap = self.ocap * 2 if self.ocap else 64
            if ncap > (1 << (64 - RMAP_INDEX_BITS)):
                ncap = 1 << (64 - RMAP_INDEX_BITS)
            if ncap == self.ocap:
                return -1
            self.okind = <uint8_t*>realloc(self.okind, ncap * sizeof(uint8_t))
            self.oshm = <ShmObj*>realloc(self.oshm, ncap * sizeof(ShmObj))
            self.onpages = <int64_t*>realloc(self.onpages, ncap * sizeof(int64_t))
            self.oparent = <int64_t*>realloc(self.oparent, ncap * sizeof(int64_t))
            self.orefs = <int64_t*>realloc(self.orefs, ncap * sizeof(int64_t))
            if self.okind == NULL or self.oshm == NULL or self.onpages == NULL \
                    or self.oparent == NULL or self.orefs == NULL:
                return -1
            self.ocap = ncap
        o = self.ohw
        self.ohw += 1
        self.okind[o] = OWNER_FREE
        shm_init(&self.oshm[o], 1)
        self.onpages[o] = 0
        self.oparent[o] = 0
        self.orefs[o] = 1
        return o

    def owner_new(self, kind, int64_t npages=0, int64_t parent=0):
        """A new owner id: ``"anon"`` (an anon_vma) or ``"shmem"`` (a shmem
        object of ``npages`` pages, the backing of a MAP_SHARED|MAP_ANONYMOUS
        mapping).  A shmem object's pages are stored sparsely (a radix tree,
        as the kernel's xarray): it costs per page used, not per page of size.
        ``parent``: the anon_vma a forked VMA's new one chains to
        (anon_vma_fork(): anon_vma->parent); it lives while this one does.

        Example::

            >>> eng.owner_new("shmem", npages=16)
            2
        """
        cdef int64_t o
        self.enter()
        try:
            if kind not in ("anon", "shmem"):
                raise ValueError("owner kind must be 'anon' or 'shmem'")
            if kind == "shmem" and not 0 < npages <= (1 << 40):
                raise ValueError(f"shmem object size {npages} pages out of range")
            if parent:
                self._check_owner(parent)
                if kind != "anon" or self.okind[parent] != OWNER_ANON:
                    raise ValueError("only an anon_vma has a parent, and it is an anon_vma")
            o = self.owner_slot()
            if o < 0:
                raise MemoryError("out of owner ids")
            if kind == "anon":
                self.okind[o] = OWNER_ANON
                if parent:
                    self.oparent[o] = parent
                    self.orefs[parent] += 1
            else:
                shm_init(&self.oshm[o], npages)
                self.okind[o] = OWNER_SHMEM
                self.onpages[o] = npages
            self.olive += 1
            return o
        finally:
            self.leave()

    def owner_free(self, int64_t o):
        """The last VMA using owner ``o`` went away.  A shmem object drops its
        pages; it must have none mapped (zap first).  An anonymous owner's
        stale frames, if a caller left any, are the checker's to report.
        An anon_vma that forked VMAs' anon_vmas chain to stays until they go
        (put_anon_vma(): its refcount), then goes with them."""
        cdef int64_t i, p
        self.enter()
        try:
            self._check_owner(o)
            if self.okind[o] == OWNER_SHMEM:
                i = shmem_first_mapped(self, o)
                if i >= 0:
                    raise ValueError(f"shmem object {o} still has page {i} mapped: zap it first")
            while o:
                self.orefs[o] -= 1
                if self.orefs[o] > 0:
                    break
                p = self.oparent[o]
                self._owner_release(o)
                o = p
        finally:
            self.leave()

    cdef void _owner_release(self, int64_t o) noexcept nogil:
        """The owner's storage goes: a shmem object's pages (its sparse tree), the id."""
        if self.okind[o] == OWNER_SHMEM:
            shmem_evict_subtree(self, self.oshm[o].root, self.oshm[o].height)
            self.oshm[o].root = NULL
            shm_destroy(&self.oshm[o])
        self.okind[o] = OWNER_FREE
        self.onpages[o] = self.ofree_head
        self.ofree_head = o
        self.olive -= 1

    def owner_kind(self, int64_t o):
        self.enter()
        try:
            self._check_owner(o)
            return {OWNER_ANON: "anon", OWNER_SHMEM: "shmem"}[self.okind[o]]
        finally:
            self.leave()

    def shmem_resident(self, int64_t o, int64_t start=0, count=None):
        """Pages present in shmem object ``o`` (its page cache), as a bool
        array: pages ``[start, start + count)``, by default the whole object.
        At most 2**30 pages at a time.

        Example::

            >>> o = eng.owner_new("shmem", npages=1 << 30)     # 4 TiB, nothing used
            >>> eng.shmem_resident(o, 0, 4).tolist(), eng.shmem_info(o)["nrpages"]
            ([False, False, False, False], 0)
        """
        cdef int64_t n, pos, i, lo, hi
        cdef ShmLeaf *leaf
        cdef cnp.uint8_t[:] v
        self.enter()
        try:
            self._check_shmem(o)
            n = self.onpages[o] - start if count is None else operator.index(count)
            if not (0 <= start and 0 <= n and start + n <= self.onpages[o]):
                raise ValueError(f"pages [{start}, {start} + {n}) are not inside the object "
                                 f"({self.onpages[o]} pages)")
            if n > (1 << 30):
                raise ValueError(f"{n} pages at once: ask for at most 2**30")
            out = np.zeros(n, dtype=np.bool_)
            v = out.view(np.uint8)
            pos = start
            with nogil:
                while True:
                    leaf = shm_next_leaf(&self.oshm[o], &pos)
                    if leaf == NULL or pos >= start + n:
                        break
                    lo = max(pos, start)
                    hi = min(pos + XA_CHUNK_SIZE, start + n)
                    for i in range(lo, hi):
                        v[i - start] = leaf.frame[i - pos] != 0
                    pos += XA_CHUNK_SIZE
            return out
        finally:
            self.leave()

    def shmem_info(self, int64_t o):
        """Shmem object ``o``: its size in pages, the pages in its cache
        (mapping->nrpages) and the radix-tree nodes holding them.

        Example::

            >>> o = eng.owner_new("shmem", npages=1 << 33)     # 32 TiB
            >>> eng.shmem_info(o)
            {'npages': 8589934592, 'nrpages': 0, 'nodes': 0}
        """
        self.enter()
        try:
            self._check_shmem(o)
            return {"npages": self.onpages[o], "nrpages": shmem_nrpages(self, o),
                    "nodes": self.oshm[o].nnodes}
        finally:
            self.leave()

    cdef int _check_shmem(self, int64_t o) except -1:
        self._check_owner(o)
        if self.okind[o] != OWNER_SHMEM:
            raise ValueError(f"owner {o} is not a shmem object")
        return 0

    cdef int _check_owner(self, int64_t o) except -1:
        if not 0 < o < self.ohw or self.okind[o] == OWNER_FREE:
            raise ValueError(f"owner {o} does not exist")
        return 0

    # ------------------------------------------------------------------ processes (fork.pyx)
    cdef void switch_ctx(self, int ctx) noexcept nogil:
        """switch_mm(): save the current process's pgd and counters, load ctx's."""
        cdef Context *c
        if ctx == self.cur:
            return
        c = &self.ctxs[self.cur]
        c.root, c.tlive, c.rss_anon, c.rss_shmem = self.root, self.ctx_tlive, self.rss_anon, self.rss_shmem
        memcpy(c.ctr, self.ctr, sizeof(self.ctr))
        c.warned_once = self.warned_once
        c = &self.ctxs[ctx]
        self.root, self.ctx_tlive, self.rss_anon, self.rss_shmem = c.root, c.tlive, c.rss_anon, c.rss_shmem
        memcpy(self.ctr, c.ctr, sizeof(self.ctr))
        self.warned_once = c.warned_once
        self.cur = ctx

    cdef int _check_ctx(self, int64_t ctx) except -1:
        if not ((ctx == 0 and self.ctxs == NULL) or (self.ctxs != NULL and 0 <= ctx < self.nctx
                                                     and self.ctxs[ctx].used)):
            raise ValueError(f"process context {ctx} does not exist")
        return 0

    @property
    def context(self):
        """The current process context (0: the engine's first process; see mmcore.fork)."""
        return self.cur

    # ------------------------------------------------------------------ accounting
    def stats(self):
        """Counters since creation or the last reset_stats()."""
        cdef int i
        return {COUNTER_NAMES[i]: self.ctr[i] for i in range(NCTR)}

    def reset_stats(self):
        cdef int i
        self.enter()
        try:
            for i in range(NCTR):
                self.ctr[i] = 0
        finally:
            self.leave()

    def rss(self):
        """(anonymous pages mapped, shmem pages mapped): MM_ANONPAGES and
        MM_SHMEMPAGES of /proc/pid/status's VmRSS."""
        return self.rss_anon, self.rss_shmem

    def memory(self):
        """What the engine holds: live tables and frames, and host bytes."""
        cdef int64_t o, nodes = 0
        for o in range(self.ohw):
            if self.okind[o] == OWNER_SHMEM:
                nodes += self.oshm[o].nnodes
        return {
            "tables": self.tlive - 1,
            "deposited_tables": self.ndeposited,
            "table_rows_used": self.thw,
            "frames": self.flive,
            "frame_rows_used": self.fhw,
            "buffers": self.blive,
            "owners": self.olive,
            # table rows as the host backs them (2 MiB huge pages) plus each
            # table's level byte, free-list slot and two deposit links
            "host_bytes_tables": ((self.thw * self.ents * 8 + (2 << 20) - 1) & ~((2 << 20) - 1))
                                 + self.tcap * 25,
            "host_bytes_frames": self.fhw * 16,
            "host_bytes_buffers": self.blive * <int64_t>self.page_size + self.bcap * 8,
            "shmem_nodes": nodes,                   # at most 512 bytes each (_shmem.pxd)
            "host_bytes_shmem": nodes * 512 + self.ocap * (sizeof(ShmObj) + 9),
        }

    @property
    def max_pages(self):
        """The most pages the engine may hold at once, page-table pages and
        frames together (the zero pages not counted), as the simulated
        machine's RAM: an allocation past it fails as the kernel's would
        (a fault raises EngineOutOfMemory, move_page_tables() stops early
        and returns False), and the state stays consistent.  None (the
        default, or any value from 2**63 - 1 up): no limit.  Setting it
        below pages_used is allowed (nothing more can be allocated).

        Example::

            >>> e = Engine(X86_64)
            >>> e.max_pages = 100
            >>> e.max_pages, e.pages_used     # the pgd is a page too
            (100, 1)
        """
        return None if self.max_pages == INT64_MAX else self.max_pages

    @max_pages.setter
    def max_pages(self, value):
        if value is None:
            self.max_pages = INT64_MAX
            return
        if isinstance(value, bool) or not hasattr(type(value), "__index__"):
            raise TypeError("max_pages must be an int or None")
        value = operator.index(value)
        if value < 1:
            raise ValueError(f"max_pages={value} must be a positive page count (or None)")
        self.max_pages = min(value, INT64_MAX)     # 2**63 - 1 and beyond: no limit

    @property
    def pages_used(self):
        """Pages the engine holds: page-table pages (the pgd included) and frames."""
        return self.tlive + self.flive

    @property
    def busy(self):
        """True while a call runs on this engine (in any thread)."""
        return self.busy != 0

    @property
    def pending_warnings(self):
        """Warnings recorded and not yet taken."""
        return self.nwarn

    def take_warnings(self):
        """The warnings recorded since the last call: (site, old_addr, new_addr)."""
        cdef int i
        self.enter()
        try:
            out = [(self.warns[i].site, self.warns[i].old_addr, self.warns[i].new_addr)
                   for i in range(min(self.nwarn, MAXWARN))]
            self.nwarn = 0
            return out
        finally:
            self.leave()

    cdef bint warn(self, int site, int once, uint64_t old_addr, uint64_t new_addr) noexcept nogil:
        """WARN_ON()/WARN_ON_ONCE(): record the warning; returns the condition
        (always true here), as the kernel macros do."""
        cdef uint64_t bit = (<uint64_t>1) << site
        if once and (self.warned_once & bit):
            return True
        self.warned_once |= bit
        if self.nwarn < MAXWARN:
            self.warns[self.nwarn].site = site
            self.warns[self.nwarn].old_addr = old_addr
            self.warns[self.nwarn].new_addr = new_addr
        self.nwarn += 1
        self.ctr[CTR_WARNINGS] += 1
        return True

    def record_warning(self, str site, uint64_t old_addr=0, uint64_t new_addr=0, bint once=False):
        """Record a warning that fired in Python-level kernel code (an align
        hook, an overlap guard) in the same stream as the core's."""
        self.enter()
        try:
            if site not in WARN_SITES:
                raise ValueError(f"unknown warning site {site!r}")
            self.warn(WARN_SITES[site], once, old_addr, new_addr)
        finally:
            self.leave()

    # ------------------------------------------------------------------ introspection
    def table_levels(self):
        """Level of every table row (-1 for a free row), as an int8 array."""
        cdef int8_t[:] v
        cdef int64_t i
        self.enter()
        try:
            out = np.empty(self.thw, dtype=np.int8)
            v = out
            for i in range(self.thw):
                v[i] = self.tlevel[i]
            return out
        finally:
            self.leave()

    def table_row(self, int64_t t):
        """A copy of page-table page t (a row of the tables array)."""
        cdef uint64_t[:] v
        cdef int64_t i
        self.enter()
        try:
            if not 0 <= t < self.thw or self.tlevel[t] < 0:
                raise ValueError(f"table {t} is not allocated")
            out = np.empty(self.ents, dtype=np.uint64)
            v = out
            for i in range(self.ents):
                v[i] = row(self, t)[i]
            return out
        finally:
            self.leave()

    def frame_info(self, int64_t f):
        """(tag, owner, index) of frame f."""
        self.enter()
        try:
            if not 0 <= f < self.fhw:
                raise ValueError(f"frame {f} out of range")
            return self.ftag[f], rmap_owner(self.frmap[f]), rmap_index(self.frmap[f])
        finally:
            self.leave()

    def frame_bytes(self, int64_t f):
        """The bytes frame f holds (one page)."""
        self.enter()
        try:
            if not 0 <= f < self.fhw or (self.ftag[f] & TAG_KIND_MASK) == TAG_FREE:
                raise ValueError(f"frame {f} is not allocated")
            out = PyBytes_FromStringAndSize(NULL, self.page_size)
            fill_page(<uint8_t*>PyBytes_AS_STRING(out), self.ftag[f], <int64_t>self.page_size, self.bufs, 0)
            return out
        finally:
            self.leave()

    # ------------------------------------------------------------------ validation
    cdef int _check_addr(self, uint64_t addr) except -1:
        if addr >= self.va_limit:
            raise ValueError(f"address {addr:#x} beyond the address space ({self.va_limit:#x})")
        return 0

    cdef int _check_range(self, uint64_t start, uint64_t end) except -1:
        if end < start:
            raise ValueError(f"range end {end:#x} below start {start:#x}")
        if end > self.va_limit:
            raise ValueError(f"range end {end:#x} beyond the address space ({self.va_limit:#x})")
        return 0

    cdef int _check_pages(self, uint64_t start, int64_t npages) except -1:
        """A per-page array request: npages pages from start, inside the
        address space, and small enough to allocate (MAX_ARRAY_PAGES)."""
        if not 0 <= npages <= MAX_ARRAY_PAGES:
            raise ValueError(f"npages={npages} must be in [0, {MAX_ARRAY_PAGES}] (one array entry "
                             "per page; ask for a large range in pieces)")
        return self._check_range(start, start + (<uint64_t>npages << self.shift[self.lpte]))

    cdef int _check_page_aligned(self, uint64_t start, uint64_t end) except -1:
        if (start | end) & (self.page_size - 1):
            raise ValueError("range must be page aligned")
        return 0

    # ------------------------------------------------------------------ sizes
    @property
    def page_size(self):
        return self.page_size

    @property
    def pmd_size(self):
        return self.pmd_size

    @property
    def pud_size(self):
        return self.pud_size

    @property
    def levels(self):
        return self.nlev

    @property
    def entries_per_table(self):
        return self.ents

    @property
    def n_tables(self):
        """Page-table pages below the root (the pgd comes with the mm) of
        the current process, the PTE tables deposited with huge PMDs
        included, as VmPTE counts them."""
        return self.ctx_tlive - 1

    @property
    def deposited_tables(self):
        """PTE tables deposited with huge PMDs (pgtable_trans_huge_deposit():
        one per anonymous THP or huge zero PMD).  They count in n_tables,
        as the kernel counts them in VmPTE.

        Example::

            >>> Engine(X86_64).deposited_tables
            0
        """
        return self.ndeposited

    @property
    def n_frames(self):
        return self.flive

    @property
    def zero_frames(self):
        """(zero page, first frame of the huge zero page)."""
        return 0, self.huge_zero


