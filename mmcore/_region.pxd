# cython: language_level=3
"""Growable arrays backed by reserved virtual memory.

A region reserves a large stretch of address space up front (MAP_NORESERVE,
so it costs nothing until touched) and hands out its prefix as the array
grows.  Pointers stay valid while the reservation lasts, new memory arrives
zero-filled (so fresh page-table rows need no memset), and the host is asked
for transparent huge pages (MADV_HUGEPAGE, where it has them), so growing by
512 tables costs one host page fault rather than 512.  Only when a
reservation is used up does the region move (mremap on Linux, copy
elsewhere).

Each array starts ``k * (4096 + 192)`` bytes into its reservation (``k``: the
array's slot, 0, 1, 2 ...).  Reservations come back from the host on large
power-of-two boundaries, so without this offset the engine's arrays (tables,
frame tags, frame rmaps) would sit exactly 1 GiB apart: the i-th element of
each maps to the same L1/L2 cache set and the same 4 KiB store-forwarding
alias on every x86-64 (Intel and AMD alike), and a loop touching all three
stalls.  The offset is a whole number of pages plus three cache lines, so
it holds whatever the host's page and cache geometry: portable by
construction.

Released regions go to a small pool (``region_release``) instead of back to
the host: the next engine takes them with their first 8 MiB still
resident, so creating an address space costs no syscall and no 2 MiB
zero-fill.  The releaser clears what was used (plain memset for the first
8 MiB, in 64 KiB pieces, MADV_DONTNEED beyond), so a pooled region reads
as zero like a fresh one.  No streaming (non-temporal) stores anywhere: a line written with one
and read back soon goes to DRAM on some x86-64 parts.
"""
from libc.stdint cimport uint8_t

cdef extern from *:
    """
    #include <sys/mman.h>
    #include <string.h>
    #include <stddef.h>
    #ifndef MAP_NORESERVE
    #define MAP_NORESERVE 0
    #endif
    #ifndef MAP_ANONYMOUS
    #define MAP_ANONYMOUS MAP_ANON
    #endif
    /* base: the reservation; off: where the array starts in it (the
       stagger); reserved: the reservation's size; used: array bytes handed
       out so far. */
    typedef struct { unsigned char *base; size_t reserved; size_t used; size_t off; } pymm_region;
    #define PYMM_REGION_STAGGER ((size_t)4096 + 192)

    /* Reserve n bytes of address space, aligned to PYMM_ALIGN whatever the
       host's mmap() placement policy: THP can back only aligned 2 MiB
       stretches, and the pool's clearing works in whole huge pages.
       NULL if the host refuses. */
    #define PYMM_ALIGN ((size_t)2 << 20)
    static inline void *pymm_reserve(size_t n) {
        unsigned char *p, *a;
        size_t slop = PYMM_ALIGN;
        if (n + slop < n) return NULL;
        p = (unsigned char *)mmap(NULL, n + slop, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if ((void *)p == MAP_FAILED) return NULL;
        a = (unsigned char *)(((size_t)p + PYMM_ALIGN - 1) & ~(PYMM_ALIGN - 1));
        if (a > p) munmap(p, (size_t)(a - p));
        if (a + n < p + n + slop) munmap(a + n, (size_t)((p + n + slop) - (a + n)));
        return a;
    }

    static inline void pymm_region_advise(pymm_region *r) {
    #ifdef MADV_HUGEPAGE
        madvise(r->base, r->reserved, MADV_HUGEPAGE);
    #endif
    }

    /* The pool of released regions (one per process: engines are created
       and freed with the GIL held). */
    #define PYMM_POOL_MAX 6
    /* kept resident per pooled region: a 1 GiB populate and a per-PTE move
       of it (about 4.1 MiB of tables) fit, so the next engine faults nothing */
    #define PYMM_POOL_KEEP ((size_t)8 << 20)
    static pymm_region pymm_pool[PYMM_POOL_MAX];
    static int pymm_pool_n = 0;

    /* glibc's memset() turns to non-temporal stores above a size it derives
       from the CPU's cache sizes (glibc.cpu.x86_non_temporal_threshold:
       192 MiB on the AMD EPYC VM pymm was tuned on, under 1 MiB on parts
       with a small L3 share per thread), and lines written that way leave
       the cache.  The pool clears in pieces below any such threshold, so
       the lines stay cached for the next engine on every x86-64. */
    #define PYMM_CLEAR_PIECE ((size_t)64 << 10)
    static inline void pymm_clear(unsigned char *p, size_t n) {
        size_t k;
        for (k = 0; k < n; k += PYMM_CLEAR_PIECE)
            memset(p + k, 0, n - k < PYMM_CLEAR_PIECE ? n - k : PYMM_CLEAR_PIECE);
    }

    /* The array of r: its first byte, and how many bytes it may use before
       the reservation must grow. */
    static inline unsigned char *pymm_region_ptr(pymm_region *r) { return r->base + r->off; }
    static inline size_t pymm_region_cap(pymm_region *r) { return r->reserved - r->off; }

    /* A region whose array starts at slot k's stagger: k * (4096 + 192). */
    static inline int pymm_region_init(pymm_region *r, size_t reserve, int k) {
        void *p;
        int i;
        for (i = pymm_pool_n - 1; i >= 0; i--) {
            if (pymm_pool[i].reserved == reserve) {
                *r = pymm_pool[i];
                r->used = 0;
                r->off = (size_t)k * PYMM_REGION_STAGGER;
                pymm_pool[i] = pymm_pool[--pymm_pool_n];
                return 0;
            }
        }
        p = pymm_reserve(reserve);
        if (p == NULL) { r->base = NULL; r->reserved = 0; r->used = 0; r->off = 0; return -1; }
        r->base = (unsigned char *)p; r->reserved = reserve; r->used = 0;
        r->off = (size_t)k * PYMM_REGION_STAGGER;
        pymm_region_advise(r);
        return 0;
    }

    /* Make the first `need` array bytes usable; returns 0, or -1 if out of memory. */
    static inline int pymm_region_grow(pymm_region *r, size_t need) {
        size_t nres, total = need + r->off;
        void *p;
        if (total < need) return -1;
        if (total <= r->reserved) { if (need > r->used) r->used = need; return 0; }
        nres = r->reserved ? r->reserved : ((size_t)1 << 20);
        while (nres < total) { if (nres * 2 < nres) return -1; nres *= 2; }
        p = pymm_reserve(nres);
        if (p == NULL) return -1;
    #if defined(__linux__) && defined(MREMAP_MAYMOVE) && defined(MREMAP_FIXED)
        /* move the old pages (whole huge PMDs: both ends are aligned) over
           the start of the new reservation */
        if (mremap(r->base, r->reserved, r->reserved, MREMAP_MAYMOVE | MREMAP_FIXED, p) == MAP_FAILED) {
            munmap(p, nres);
            return -1;
        }
    #else
        memcpy(p, r->base, r->reserved);   /* the engine may use all of it */
        munmap(r->base, r->reserved);
    #endif
        r->base = (unsigned char *)p; r->reserved = nres; r->used = need;
        pymm_region_advise(r);
        return 0;
    }

    static inline void pymm_region_free(pymm_region *r) {
        if (r->base) munmap(r->base, r->reserved);
        r->base = NULL; r->reserved = 0; r->used = 0; r->off = 0;
    }

    /* Done with r: keep it for the next engine if it still has its first
       reservation (`pool_size`), else unmap it.  `touched`: how many array
       bytes were used.  Past PYMM_POOL_KEEP that memory goes back to the
       host (MADV_DONTNEED: it reads as zero again); below it, it is cleared
       with memset.  Either way the region comes back all zero, as a fresh
       mapping would. */
    static inline void pymm_region_release(pymm_region *r, size_t pool_size, size_t touched) {
        if (!r->base || r->reserved != pool_size || pymm_pool_n == PYMM_POOL_MAX) {
            pymm_region_free(r);
            return;
        }
        size_t drop;
        if (r->used > touched) touched = r->used;
        touched += r->off;
        if (touched > r->reserved) touched = r->reserved;
        /* clear what was written, up to the part kept resident ... */
        pymm_clear(r->base, touched < PYMM_POOL_KEEP ? touched : PYMM_POOL_KEEP);
        /* ... and give the rest back in whole huge pages: dropping part of
           one splits it, and the next engine would fault that stretch back
           4 KiB at a time */
        drop = (touched + PYMM_ALIGN - 1) & ~(PYMM_ALIGN - 1);
        if (drop > r->reserved) drop = r->reserved;
        if (drop > PYMM_POOL_KEEP)
            madvise(r->base + PYMM_POOL_KEEP, drop - PYMM_POOL_KEEP, MADV_DONTNEED);
        pymm_pool[pymm_pool_n++] = *r;
        r->base = NULL; r->reserved = 0; r->used = 0; r->off = 0;
    }
    """
    ctypedef struct pymm_region:
        uint8_t *base
        size_t reserved
        size_t used
        size_t off
    uint8_t *region_ptr "pymm_region_ptr"(pymm_region *r) noexcept nogil
    size_t region_cap "pymm_region_cap"(pymm_region *r) noexcept nogil
    int region_init "pymm_region_init"(pymm_region *r, size_t reserve, int k) noexcept nogil
    int region_grow "pymm_region_grow"(pymm_region *r, size_t need) noexcept nogil
    void region_free "pymm_region_free"(pymm_region *r) noexcept nogil
    void region_release "pymm_region_release"(pymm_region *r, size_t pool_size, size_t touched) noexcept nogil
