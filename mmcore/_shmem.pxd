# cython: language_level=3
"""A shmem object's page cache (``mapping->i_pages``), stored sparsely.

The kernel keeps a shmem file's pages in an xarray: a radix tree of 64-slot
nodes (``XA_CHUNK_SHIFT`` 6, lib/xarray.c) allocated as pages arrive, so a
32 TiB ``MAP_SHARED|MAP_ANONYMOUS|MAP_NORESERVE`` object costs nothing
until it is touched.  This is the same tree: interior nodes of 64
pointers, leaves of 64 pages holding each page's frame (0: not in the
cache) and its map count.  A leaf is 384 bytes and an interior node 512,
so a page used costs the host at most ``(height + 1) * 512`` bytes of
tree, less than the page (4 KiB) it stands for, whatever the object's size.

Everything here is inline (compiled into each module that cimports it) and
nogil; the engine's owner table holds one ``ShmObj`` per shmem object.
"""
from libc.stdint cimport uint32_t, uint16_t, int64_t
from libc.stdlib cimport calloc, free

cdef enum:
    XA_CHUNK_SHIFT = 6
    XA_CHUNK_SIZE = 64
    XA_CHUNK_MASK = 63
    SHM_MAX_HEIGHT = 7          # 64 ** 7 pages: more than any object (2 ** 40 pages)


cdef struct ShmLeaf:
    uint32_t frame[XA_CHUNK_SIZE]   # the page's frame, 0 when the index is not in the cache
    uint16_t mapc[XA_CHUNK_SIZE]    # PTEs mapping it (saturates at 0xFFFF)


cdef struct ShmObj:
    void *root              # a ShmLeaf when height is 0, else void*[XA_CHUNK_SIZE]
    int height              # interior levels above the leaves
    int64_t nnodes          # nodes allocated, leaves included (xa_node slabs)
    int64_t last_key        # the leaf last found (index >> XA_CHUNK_SHIFT), -1: none
    ShmLeaf *last_leaf


cdef inline void shm_init(ShmObj *s, int64_t npages) noexcept nogil:
    """An empty object of npages pages: no node until the first page."""
    s.root = NULL
    s.height = 0
    while s.height < SHM_MAX_HEIGHT and ((npages - 1) >> (XA_CHUNK_SHIFT * (s.height + 1))) != 0:
        s.height += 1
    s.nnodes = 0
    s.last_key = -1
    s.last_leaf = NULL


cdef inline ShmLeaf* shm_leaf(ShmObj *s, int64_t index) noexcept nogil:
    """xas_load() down to the leaf holding index, or NULL when there is none.
    Runs of neighbouring pages hit the remembered leaf without a walk."""
    cdef int64_t key = index >> XA_CHUNK_SHIFT
    cdef void *node
    cdef int l
    if key == s.last_key:
        return s.last_leaf
    node = s.root
    l = s.height
    while l > 0 and node != NULL:
        node = (<void**>node)[(index >> (XA_CHUNK_SHIFT * l)) & XA_CHUNK_MASK]
        l -= 1
    if node != NULL:
        s.last_key = key
        s.last_leaf = <ShmLeaf*>node
    return <ShmLeaf*>node


cdef inline ShmLeaf* shm_leaf_create(ShmObj *s, int64_t index) noexcept nogil:
    """xas_create(): the leaf holding index, allocating the missing nodes
    on the way down.  NULL if the host has no memory (nodes already made
    stay, empty, until the object goes)."""
    cdef ShmLeaf *leaf = shm_leaf(s, index)
    cdef void **slot = &s.root
    cdef int l = s.height
    if leaf != NULL:
        return leaf
    while True:
        if slot[0] == NULL:
            slot[0] = calloc(1, sizeof(ShmLeaf) if l == 0 else XA_CHUNK_SIZE * sizeof(void*))
            if slot[0] == NULL:
                return NULL
            s.nnodes += 1
        if l == 0:
            break
        slot = &(<void**>slot[0])[(index >> (XA_CHUNK_SHIFT * l)) & XA_CHUNK_MASK]
        l -= 1
    s.last_key = index >> XA_CHUNK_SHIFT
    s.last_leaf = <ShmLeaf*>slot[0]
    return s.last_leaf


cdef inline ShmLeaf* shm_next_leaf(ShmObj *s, int64_t *pos) noexcept nogil:
    """xas_find() by leaves: the first leaf at or after index pos[0]
    (pos[0] becomes its first index), or NULL when there are no more.
    Empty slots are skipped inside their node; a node with nothing left is
    skipped whole, so a walk over every leaf visits each node a few times."""
    cdef void *node
    cdef void **slots
    cdef int l, i, j
    cdef int64_t limit = (<int64_t>1) << (XA_CHUNK_SHIFT * (s.height + 1))
    pos[0] &= ~(<int64_t>XA_CHUNK_MASK)
    if s.root == NULL:
        return NULL
    while pos[0] < limit:
        node = s.root
        l = s.height
        while l > 0:
            slots = <void**>node
            i = (pos[0] >> (XA_CHUNK_SHIFT * l)) & XA_CHUNK_MASK
            j = i
            while j < XA_CHUNK_SIZE and slots[j] == NULL:
                j += 1
            if j == XA_CHUNK_SIZE:
                break                    # nothing more below this node
            if j != i:                   # the first index of slot j
                pos[0] = ((pos[0] >> (XA_CHUNK_SHIFT * (l + 1))) << (XA_CHUNK_SHIFT * (l + 1))) \
                    | ((<int64_t>j) << (XA_CHUNK_SHIFT * l))
            node = slots[j]
            l -= 1
        if l == 0:
            return <ShmLeaf*>node
        # the node at level l (covering 64 ** (l + 1) pages) is used up: past it
        pos[0] = ((pos[0] >> (XA_CHUNK_SHIFT * (l + 1))) + 1) << (XA_CHUNK_SHIFT * (l + 1))
    return NULL


cdef inline void shm_free_nodes(void *node, int l) noexcept nogil:
    """Free a subtree's nodes (the frames are the caller's to free first)."""
    cdef int i
    if node == NULL:
        return
    if l > 0:
        for i in range(XA_CHUNK_SIZE):
            shm_free_nodes((<void**>node)[i], l - 1)
    free(node)


cdef inline void shm_destroy(ShmObj *s) noexcept nogil:
    """xa_destroy(): every node goes; the object reads as empty."""
    shm_free_nodes(s.root, s.height)
    s.root = NULL
    s.nnodes = 0
    s.last_key = -1
    s.last_leaf = NULL
