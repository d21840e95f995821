"""Issue #15 item 4 (leftover): a shmem object's pages are stored sparsely,
paid for per page used, not per page of the object's size."""
import errno

import pytest

import mmcore
import pymm

RW = pymm.PROT_READ | pymm.PROT_WRITE
ANON = pymm.MAP_ANONYMOUS
SHARED_FIXED = pymm.MAP_SHARED | ANON | pymm.MAP_FIXED
MAP_NORESERVE = 0x4000
A = 1 << 40
TiB = 1 << 40
MiB = 1 << 20


def test_32_tib_shared_noreserve_maps_and_costs_per_page():
    """The issue's call: MAP_SHARED|ANON|FIXED|NORESERVE, 32 TiB, over a
    mapping.  It succeeds (the host kernel's answer), and touching a few
    pages far apart costs a few pages and a few radix nodes."""
    mm = pymm.MM(check=True)
    a = mm.mmap(A, 1 << 21, RW, pymm.MAP_PRIVATE | ANON | pymm.MAP_FIXED)
    mm.write(a, b"precious")
    assert mm.mmap(A, 32 * TiB, RW, SHARED_FIXED | MAP_NORESERVE) == A
    assert [(v.start, v.end) for v in mm.maps()] == [(A, A + 32 * TiB)]
    assert mm.read(A, 8) == b"\0" * 8                 # the new object, not the old page
    offsets = [0, 4096, 5 * TiB + 12345, 17 * TiB, 32 * TiB - 4096]
    for i, off in enumerate(offsets):
        mm.write(A + off, b"page %d" % i)
    for i, off in enumerate(offsets):
        assert mm.read(A + off, 6) == b"page %d" % i
    owner = mm.maps()[0].shmem
    info = mm.engine.shmem_info(owner)
    assert info["npages"] == 32 * TiB // 4096
    assert info["nrpages"] == len(offsets)
    assert info["nodes"] <= 6 * len(offsets)          # a path of 64-slot nodes per page at most
    mem = mm.engine.memory()
    assert mem["host_bytes_shmem"] < 1 * MiB          # a dense table of 2**33 pages would be 48 GiB
    assert mm.engine.rss()[1] == len(offsets)
    mm.munmap(A, 32 * TiB)
    assert mm.engine.memory()["frames"] == 0 and mm.engine.memory()["shmem_nodes"] == 0


def test_shmem_pages_count_against_ram():
    """A huge NORESERVE object maps, but its pages are the machine's RAM:
    touching more than ``ram`` is the OOM killer, as for private memory."""
    mm = pymm.MM(ram=64 * MiB, thp="never")
    a = mm.mmap(A, 1 * TiB, RW, SHARED_FIXED | MAP_NORESERVE)
    mm.memset(a, 1, 16 * MiB)
    with pytest.raises(pymm.OutOfMemory):
        mm.memset(a + 512 * MiB, 2, 128 * MiB)


def test_shared_populate_and_fault_around_across_leaves():
    """MAP_POPULATE fills every page of a shared object; fault-around maps
    the cached neighbours across the radix tree's 64-page leaves."""
    mm = pymm.MM(check=True)
    n = 300                                            # spans five 64-page leaves
    a = mm.mmap(A, n * 4096, RW, pymm.MAP_SHARED | ANON | pymm.MAP_FIXED | pymm.MAP_POPULATE)
    owner = mm.maps()[0].shmem
    assert mm.engine.shmem_info(owner)["nrpages"] == n
    assert mm.engine.shmem_resident(owner).all()
    mm.memset(a, 9, n * 4096)
    mm.munmap(a, n * 4096)
    # a second object: write pages 60..70 through one mapping, read them through another
    b = mm.mmap(A, n * 4096, RW, pymm.MAP_SHARED | ANON | pymm.MAP_FIXED)
    mm.memset(b + 60 * 4096, 5, 11 * 4096)
    owner = mm.maps()[0].shmem
    assert mm.engine.shmem_resident(owner, 56, 20).tolist() == [False] * 4 + [True] * 11 + [False] * 5
    # moved 8 pages off the object's alignment: the 16-page window around
    # index 64 covers indices 56..71, in two leaves of the object's tree
    c = mm.mremap(b, n * 4096, n * 4096, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED, A + TiB + 8 * 4096)
    mm.madvise(c, n * 4096, pymm.MADV_DONTNEED)        # unmapped, still cached
    assert mm.engine.rss()[1] == 0
    assert mm.read(c + 64 * 4096, 1) == b"\5"           # one read fault, neighbours 60..70 mapped
    assert mm.engine.rss()[1] == 11
    assert mm.read(c + 59 * 4096, 1) == b"\0" and mm.engine.rss()[1] == 12


def test_engine_shmem_object_of_2_40_pages():
    """The engine's own limit (2**40 pages): created at once, sparse."""
    eng = mmcore.Engine(mmcore.X86_64)
    o = eng.owner_new("shmem", npages=1 << 40)
    assert eng.shmem_info(o) == {"npages": 1 << 40, "nrpages": 0, "nodes": 0}
    assert not eng.shmem_resident(o, (1 << 40) - 8, 8).any()
    with pytest.raises(ValueError, match="at most 2"):
        eng.shmem_resident(o)
    with pytest.raises(ValueError, match="inside the object"):
        eng.shmem_resident(o, (1 << 40) - 8, 9)
    eng.owner_free(o)
    with pytest.raises(ValueError, match="not a shmem object"):
        eng.shmem_info(eng.owner_new("anon"))


def test_owner_free_names_the_page_still_mapped():
    mm = pymm.MM()
    a = mm.mmap(A, 1 << 30, RW, SHARED_FIXED)
    mm.write(a + 777 * 4096, b"x")
    owner = mm.maps()[0].shmem
    with pytest.raises(ValueError, match="page 777 mapped"):
        mm.engine.owner_free(owner)


def test_shared_noreserve_matches_the_host():
    """The host oracle, 32 TiB MAP_SHARED|ANON|FIXED|NORESERVE over a
    mapping in its window: both map it, and a far page reads back."""
    from pymm import host
    from tests.helpers import host_or_skip
    host_or_skip()
    window = (0x100000000000, 0x300000000000)
    lo = window[0]
    results = []
    with host.HostMM(window=window) as h:
        for target in (h, pymm.MM(window=window, check=True)):
            target.mmap(lo, 1 << 21, RW, pymm.MAP_PRIVATE | ANON | pymm.MAP_FIXED)
            target.write(lo, b"precious")
            try:
                target.mmap(lo, 32 * TiB, RW, SHARED_FIXED | MAP_NORESERVE)
                outcome = "mapped"
            except OSError as e:
                outcome = errno.errorcode[e.errno]
            target.write(lo + 31 * TiB, b"far")
            results.append((outcome, [(v.start, v.end) for v in target.maps()],
                            target.read(lo, 8), target.read(lo + 31 * TiB, 3)))
    assert results[0] == ("mapped", [(lo, lo + 32 * TiB)], b"\0" * 8, b"far")
    assert results[1] == results[0]
