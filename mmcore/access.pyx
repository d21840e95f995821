# cython: language_level=3
"""The CPU's loads and stores through the MMU (mm/memory.c's
__access_remote_vm(), as /proc/pid/mem and ptrace copy, and what a user
store does to a present page).

* read_bytes() / write_bytes(): page by page as __access_remote_vm()
  copies; a store to a page not mapped writable stops there, and the caller
  (pymm) faults it in (memory.pyx) and retries.
* memset_pages() / stamp_pages(): whole-page stores, one content tag per
  page, no 4 KiB buffer.

Nothing here allocates a page or a table: a miss is the caller's fault to
handle.  Long calls work in SIGNAL_CHUNK pieces and answer Ctrl-C between
them.

Example::

    >>> import mmcore
    >>> eng = mmcore.Engine(mmcore.X86_64)
    >>> o = eng.owner_new("anon")
    >>> GiB = 1 << 30
    >>> mmcore.handle_mm_fault(eng, GiB, GiB + 8192, vma_start=GiB, vma_end=GiB + 8192,
    ...                        owner=o, pgoff=GiB >> 12, write=True)
    >>> mmcore.access.memset_pages(eng, GiB, GiB + 8192, 0x5a) == GiB + 8192
    True
    >>> mmcore.access.read_bytes(eng, GiB + 4095, 2), mmcore.access.read_bytes(eng, GiB + 8190, 4)
    ((b'ZZ', 2), (b'ZZ', 2))
"""
from libc.string cimport memcpy
from libc.stdlib cimport malloc, free
from libc.stdint cimport uint64_t, int64_t, uint8_t
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_CheckSignals

from mmcore._core cimport (Engine, span_end, set_tag, fill_page, TAG_FILL, TAG_STAMP, TAG_KIND_MASK,
                           TAG_VALUE_MASK, SIGNAL_CHUNK)
from mmcore.pagewalk cimport translate_c

MAX_READ_BYTES = 1 << 32      # read_bytes() returns one bytes object


cdef int uniform_byte(uint8_t *p, int64_t n) noexcept nogil:
    """pymm's own: the byte every position of p holds, or -1 (a whole-page
    write of one byte stays a FILL tag)."""
    cdef int64_t i
    for i in range(1, n):
        if p[i] != p[0]:
            return -1
    return p[0] if n else -1


cdef int64_t set_tags_c(Engine eng, uint64_t start, uint64_t end, uint64_t tag, bint stamp) noexcept nogil:
    """The CPU's stores of a memset() over whole pages (no kernel function:
    what the MMU lets through): give every page of [start, end) (page
    aligned) new contents.  Returns the first address that would fault."""
    cdef uint64_t addr = start
    cdef int64_t f
    cdef uint64_t ps = eng.page_size
    while addr < end:
        f = translate_c(eng, addr, True)
        if f < 0:
            return <int64_t>addr
        if stamp:
            set_tag(eng, f, TAG_STAMP | ((addr >> eng.shift[eng.lpte]) & TAG_VALUE_MASK))
        else:
            set_tag(eng, f, tag)
        addr += ps
    return <int64_t>end


cdef int64_t set_tags_chunked(Engine eng, uint64_t start, uint64_t end, uint64_t tag,
                              bint stamp) except -2:
    """set_tags_c() in SIGNAL_CHUNK pieces, checking for signals between them."""
    cdef uint64_t pos = start, stop
    cdef int64_t r
    while pos < end:
        stop = span_end(pos, end, SIGNAL_CHUNK)
        with nogil:
            r = set_tags_c(eng, pos, stop, tag, stamp)
        if r < <int64_t>stop:
            return r
        pos = stop
        if pos < end:
            PyErr_CheckSignals()
    return <int64_t>end


def memset_pages(Engine eng not None, uint64_t start, uint64_t end, int value):
    """memset() of whole pages by the CPU: fill [start, end) with byte
    ``value``, one tag per page, no 4 KiB buffer.  Returns the first address
    that faulted (== end when all were present and writable).

    Example::

        >>> memset_pages(eng, 0x40000000, 0x40200000, 0xff)
        1075838976
    """
    eng.enter()
    try:
        eng._check_range(start, end)
        eng._check_page_aligned(start, end)
        if not 0 <= value <= 255:
            raise ValueError("memset value must be a byte (0..255)")
        return set_tags_chunked(eng, start, end, TAG_FILL | <uint64_t>value, False)
    finally:
        eng.leave()


def stamp_pages(Engine eng not None, uint64_t start, uint64_t end):
    """The CPU writes into each page of [start, end) its own page number
    (addr >> PAGE_SHIFT) as a repeated 8-byte word: unique contents at O(1)
    per page, for checking that data lands where it should after a move.
    Returns the first address that faulted, as memset_pages().

    Example::

        >>> stamp_pages(eng, 0x40000000, 0x40200000)
        1075838976
    """
    eng.enter()
    try:
        eng._check_range(start, end)
        eng._check_page_aligned(start, end)
        return set_tags_chunked(eng, start, end, 0, True)
    finally:
        eng.leave()


cdef int64_t copy_bytes(Engine eng, uint64_t addr, uint8_t *buf, int64_t n, bint write) noexcept nogil:
    """The CPU's loads/stores through the MMU, page by page as
    __access_remote_vm() copies: read/write n bytes at addr.  Returns the
    count done before the first fault (the caller handles it and retries)."""
    cdef int64_t done = 0, f, chunk, off, slot
    cdef uint64_t ps = eng.page_size
    while done < n:
        f = translate_c(eng, addr, write)
        if f < 0:
            return done
        off = <int64_t>(addr & (ps - 1))
        chunk = <int64_t>ps - off
        if chunk > n - done:
            chunk = n - done
        if write:
            if write_is_noop(eng, f, off, buf + done, chunk):
                pass
            elif off == 0 and chunk == <int64_t>ps and uniform_byte(buf + done, chunk) >= 0:
                set_tag(eng, f, TAG_FILL | <uint64_t>uniform_byte(buf + done, chunk))
            else:
                slot = eng.buf_alloc(f)
                if slot < 0:
                    return -1
                memcpy(eng.bufs[slot] + off, buf + done, chunk)
        else:
            fill_page(buf + done, eng.ftag[f], chunk, eng.bufs, off)
        done += chunk
        addr += chunk
    return done


cdef bint write_is_noop(Engine eng, int64_t f, int64_t off, uint8_t *src, int64_t n) noexcept nogil:
    """pymm's own: would writing src change a FILL page?  (Keeps it a tag.)"""
    cdef uint64_t tag = eng.ftag[f]
    cdef int64_t i
    if (tag & TAG_KIND_MASK) != TAG_FILL:
        return False
    for i in range(n):
        if src[i] != (tag & 0xff):
            return False
    return True


def read_bytes(Engine eng not None, uint64_t addr, int64_t n):
    """Read n bytes at addr as the CPU would (__access_remote_vm() without
    FOLL_WRITE).  Returns ``(data, done)``: data is the ``done`` bytes read
    before the first fault (``len(data) == done``), nothing more.

    Example::

        >>> memset_pages(eng, 0x40000000, 0x40001000, 0xff)
        1073745920
        >>> read_bytes(eng, 0x40000ffe, 4)       # the next page still holds zeros
        (b'\\xff\\xff\\x00\\x00', 4)
    """
    cdef uint8_t *p
    cdef int64_t done
    eng.enter()
    try:
        if not 0 <= n <= MAX_READ_BYTES:
            raise ValueError(f"length {n} must be in [0, {MAX_READ_BYTES}]")
        eng._check_range(addr, addr + <uint64_t>n)
        # Read into scratch memory and hand out only the bytes written: the
        # result never holds what a buffer held before (issue: freed secrets).
        # A large malloc is mmap-backed, so only the pages read are touched.
        p = <uint8_t*>malloc(n if n > 0 else 1)
        if p == NULL:
            raise MemoryError(f"cannot allocate {n} bytes to read into")
        try:
            with nogil:
                done = copy_bytes(eng, addr, p, n, False)
            return PyBytes_FromStringAndSize(<char*>p, done), done
        finally:
            free(p)
    finally:
        eng.leave()


def write_bytes(Engine eng not None, uint64_t addr, const uint8_t[::1] data not None):
    """Write data at addr as the CPU would (__access_remote_vm() with
    FOLL_WRITE); returns the bytes written before the first fault.

    Example::

        >>> write_bytes(eng, 0x40000ffe, b"abcd")    # straddles two pages
        4
    """
    cdef int64_t n, done
    eng.enter()
    try:
        n = data.shape[0]
        eng._check_range(addr, addr + <uint64_t>n)
        if n == 0:
            return 0
        with nogil:
            done = copy_bytes(eng, addr, <uint8_t*>&data[0], n, True)
        if done < 0:
            raise MemoryError("out of memory materialising a page buffer")
        return done
    finally:
        eng.leave()
