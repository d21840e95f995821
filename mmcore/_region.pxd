# cython: language_level=3
"""Growable arrays backed by reserved virtual memory.

A region reserves a large stretch of address space up front (MAP_NORESERVE,
so it costs nothing until touched) and hands out its prefix as the array
grows.  Pointers stay valid while the reservation lasts, new memory arrives
zero-filled (so fresh page-table rows need no memset), and past the first
2 MiB the host is asked for transparent huge pages, so growing by 512 tables
costs one host page fault rather than 512.  Only when a reservation is used up
does the region move (mremap on Linux, copy elsewhere).

Released regions go to a small pool (``region_release``) instead of back to
the host: the next engine takes them with their first huge page still
resident, so creating an address space costs no syscall and no 2 MiB
zero-fill, and does not sweep the CPU caches.  The releaser clears what was
used (streaming stores for the first 2 MiB, MADV_DONTNEED beyond), so a
pooled region reads as zero like a fresh one.
"""
from libc.stdint cimport uint8_t

cdef extern from *:
    """
    #include <sys/mman.h>
    #include <string.h>
    #ifndef MAP_NORESERVE
    #define MAP_NORESERVE 0
    #endif
    #ifndef MAP_ANONYMOUS
    #define MAP_ANONYMOUS MAP_ANON
    #endif
    typedef struct { unsigned char *base; size_t reserved; size_t used; } pymm_region;
    #define PYMM_HUGE_FROM ((size_t)0)

    static inline void pymm_region_advise(pymm_region *r) {
    #ifdef MADV_HUGEPAGE
        if (r->reserved > PYMM_HUGE_FROM)
            madvise(r->base + PYMM_HUGE_FROM, r->reserved - PYMM_HUGE_FROM, MADV_HUGEPAGE);
    #endif
    }

    /* The pool of released regions (one per process: engines are created
       and freed with the GIL held). */
    #define PYMM_POOL_MAX 6
    #define PYMM_POOL_KEEP ((size_t)4 << 20)
    static pymm_region pymm_pool[PYMM_POOL_MAX];
    static int pymm_pool_n = 0;

    #if defined(__SSE2__)
    #include <emmintrin.h>
    static inline void pymm_zero_nt(unsigned char *p, size_t n) {
        size_t i;
        for (i = 0; i + 8 <= n; i += 8) _mm_stream_si64((long long *)(p + i), 0);
        if (i < n) memset(p + i, 0, n - i);
        _mm_sfence();
    }
    #else
    static inline void pymm_zero_nt(unsigned char *p, size_t n) { memset(p, 0, n); }
    #endif

    static inline int pymm_region_init(pymm_region *r, size_t reserve) {
        void *p;
        int i;
        for (i = pymm_pool_n - 1; i >= 0; i--) {
            if (pymm_pool[i].reserved == reserve) {
                *r = pymm_pool[i];
                r->used = 0;
                pymm_pool[i] = pymm_pool[--pymm_pool_n];
                return 0;
            }
        }
        p = mmap(NULL, reserve, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) { r->base = NULL; r->reserved = 0; r->used = 0; return -1; }
        r->base = (unsigned char *)p; r->reserved = reserve; r->used = 0;
        pymm_region_advise(r);
        return 0;
    }

    /* Make the first `need` bytes usable; returns 0, or -1 if out of memory. */
    static inline int pymm_region_grow(pymm_region *r, size_t need) {
        size_t nres;
        void *p;
        if (need <= r->reserved) { if (need > r->used) r->used = need; return 0; }
        nres = r->reserved ? r->reserved : ((size_t)1 << 20);
        while (nres < need) nres *= 2;
    #if defined(__linux__) && defined(MREMAP_MAYMOVE)
        p = mremap(r->base, r->reserved, nres, MREMAP_MAYMOVE);
        if (p == MAP_FAILED) return -1;
    #else
        p = mmap(NULL, nres, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) return -1;
        memcpy(p, r->base, r->used);
        munmap(r->base, r->reserved);
    #endif
        r->base = (unsigned char *)p; r->reserved = nres; r->used = need;
        pymm_region_advise(r);
        return 0;
    }

    static inline void pymm_region_free(pymm_region *r) {
        if (r->base) munmap(r->base, r->reserved);
        r->base = NULL; r->reserved = 0; r->used = 0;
    }

    /* Done with r: keep it for the next engine if it still has its first
       reservation (`pool_size`), else unmap it.  `touched`: how much of it
       was used.  Past PYMM_POOL_KEEP that memory goes back to the host
       (MADV_DONTNEED: it reads as zero again); below it, it is cleared with
       streaming stores.  Either way the region comes back all zero, as a
       fresh mapping would. */
    static inline void pymm_region_release(pymm_region *r, size_t pool_size, size_t touched) {
        if (!r->base || r->reserved != pool_size || pymm_pool_n == PYMM_POOL_MAX) {
            pymm_region_free(r);
            return;
        }
        if (r->used > touched) touched = r->used;
        /* whole huge pages only: dropping part of one splits it, and the
           next engine would fault that stretch back 4 KiB at a time */
        touched = (touched + PYMM_POOL_KEEP - 1) & ~(PYMM_POOL_KEEP - 1);
        if (touched > r->reserved) touched = r->reserved;
        if (touched > PYMM_POOL_KEEP)
            madvise(r->base + PYMM_POOL_KEEP, touched - PYMM_POOL_KEEP, MADV_DONTNEED);
        pymm_zero_nt(r->base, touched < PYMM_POOL_KEEP ? touched : PYMM_POOL_KEEP);
        pymm_pool[pymm_pool_n++] = *r;
        r->base = NULL; r->reserved = 0; r->used = 0;
    }
    """
    ctypedef struct pymm_region:
        uint8_t *base
        size_t reserved
        size_t used
    int region_init "pymm_region_init"(pymm_region *r, size_t reserve) nogil
    int region_grow "pymm_region_grow"(pymm_region *r, size_t need) nogil
    void region_free "pymm_region_free"(pymm_region *r) nogil
    void region_release "pymm_region_release"(pymm_region *r, size_t pool_size, size_t touched) nogil
