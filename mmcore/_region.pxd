# cython: language_level=3
"""Growable arrays backed by reserved virtual memory.

A region reserves a large stretch of address space up front (MAP_NORESERVE,
so it costs nothing until touched) and hands out its prefix as the array
grows.  Pointers stay valid while the reservation lasts, new memory arrives
zero-filled (so fresh page-table rows need no memset), and past the first
2 MiB the host is asked for transparent huge pages, so growing by 512 tables
costs one host page fault rather than 512.  Only when a reservation is used up
does the region move (mremap on Linux, copy elsewhere).
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

    static inline int pymm_region_init(pymm_region *r, size_t reserve) {
        void *p = mmap(NULL, reserve, PROT_READ | PROT_WRITE,
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
    """
    ctypedef struct pymm_region:
        uint8_t *base
        size_t reserved
        size_t used
    int region_init "pymm_region_init"(pymm_region *r, size_t reserve) nogil
    int region_grow "pymm_region_grow"(pymm_region *r, size_t need) nogil
    void region_free "pymm_region_free"(pymm_region *r) nogil
