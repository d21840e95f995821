"""pymm.MM semantics: faults, THP, zap, stack growth, maps, accounting, exec.

Tests taking the ``target`` fixture run on pymm and on the real kernel.
"""
import numpy as np
import pytest

import mmcore
import pymm
from pymm import host

from helpers import GiB, MiB, PAGE, PRIV, RW, SHARED

PRESENT = np.uint64(1 << 63)


# -- the CPU's view: segfaults ------------------------------------------------------
def test_read_of_unmapped_memory_is_segv_maperr(target):
    a = target.mmap(0, PAGE, RW, PRIV)
    target.munmap(a, PAGE)
    with pytest.raises(pymm.SegmentationFault) as e:
        target.read(a + 8, 1)
    assert (e.value.code, e.value.address) == ("SEGV_MAPERR", a + 8)


def test_prot_none_is_segv_accerr(target):
    a = target.mmap(0, PAGE, pymm.PROT_NONE, PRIV)
    with pytest.raises(pymm.SegmentationFault) as e:
        target.read(a, 1)
    assert e.value.code == "SEGV_ACCERR"
    with pytest.raises(pymm.SegmentationFault):
        target.write(a, b"x")


def test_write_to_read_only_is_segv_accerr_and_read_is_zero(target):
    a = target.mmap(0, PAGE, pymm.PROT_READ, PRIV)
    assert target.read(a, 4) == b"\0" * 4
    with pytest.raises(pymm.SegmentationFault) as e:
        target.write(a + 100, b"x")
    assert (e.value.code, e.value.address) == ("SEGV_ACCERR", a + 100)


def test_mprotect_read_only_then_write_faults_and_data_stays(target):
    a = target.mmap(0, 2 * PAGE, RW, PRIV)
    target.write(a, b"keep")
    target.mprotect(a, 2 * PAGE, pymm.PROT_READ)
    with pytest.raises(pymm.SegmentationFault):
        target.write(a, b"x")
    assert target.read(a, 4) == b"keep"
    target.mprotect(a, 2 * PAGE, RW)
    target.write(a, b"more")
    assert target.read(a, 4) == b"more"


def test_read_across_into_a_hole_faults_at_the_hole(target):
    a = target.mmap(0, 2 * PAGE, RW, PRIV)
    target.munmap(a + PAGE, PAGE)
    with pytest.raises(pymm.SegmentationFault) as e:
        target.read(a + PAGE - 2, 4)
    assert e.value.address == a + PAGE


def test_shared_mapping_grown_beyond_its_object_is_sigbus(target):
    room = target.mmap(0, 4 * PAGE, RW, PRIV)
    target.munmap(room, 4 * PAGE)
    a = target.mmap(room, PAGE, RW, SHARED | pymm.MAP_FIXED)   # a 1-page object
    assert target.mremap(a, PAGE, 3 * PAGE, 0) == a           # grown in place
    target.write(a, b"ok")
    with pytest.raises(pymm.BusError) as e:
        target.read(a + PAGE, 1)
    assert (e.value.code, e.value.address) == ("BUS_ADRERR", a + PAGE)


# -- a C-like scenario -------------------------------------------------------------
def test_mmap_memset_mremap_read(target):
    size = 8 * MiB
    a = target.mmap(0, size, RW, PRIV)
    target.memset(a, 0x5A, size)
    target.write(a + 12345, b"marker")
    b = target.mremap(a, size, 2 * size, pymm.MREMAP_MAYMOVE)
    assert target.read(b + 12345, 6) == b"marker"
    assert target.read(b + size - 1, 1) == b"\x5a"
    assert target.read(b + size, 1) == b"\0"   # the grown part is fresh memory
    maps = [(v.start, v.end) for v in target.maps()]
    assert (b, b + 2 * size) in maps


def test_shared_memory_is_shared_between_mappings(target):
    a = target.mmap(0, 4 * PAGE, RW, SHARED)
    b = target.mremap(a, 0, 4 * PAGE, pymm.MREMAP_MAYMOVE)   # duplicate (old_size 0)
    assert b != a
    target.write(a + PAGE, b"shared!")
    assert target.read(b + PAGE, 7) == b"shared!"


# -- THP ----------------------------------------------------------------------------------
def test_madv_hugepage_fault_maps_a_whole_pmd(target):
    a = target.mmap(0, 4 * MiB, RW, PRIV)  # THP-aligned: len is a multiple of 2 MiB
    assert a % (2 * MiB) == 0
    target.madvise(a, 4 * MiB, pymm.MADV_HUGEPAGE)
    target.write(a + 5, b"x")
    pm = target.pagemap(a, 4 * MiB)
    assert ((pm & PRESENT) != 0).sum() == 512        # one fault, the whole 2 MiB
    target.madvise(a, 2 * MiB, pymm.MADV_DONTNEED)
    assert ((target.pagemap(a, 4 * MiB) & PRESENT) != 0).sum() == 0
    assert target.read(a + 5, 1) == b"\0"


def test_without_madvise_faults_are_4k(target):
    a = target.mmap(0, 4 * MiB, RW, PRIV)
    target.write(a + 5, b"x")
    assert ((target.pagemap(a, 4 * MiB) & PRESENT) != 0).sum() == 1


def test_thp_fault_needs_the_aligned_pmd_inside_the_vma(target):
    a = target.mmap(0, 4 * MiB, RW, PRIV)
    target.munmap(a, PAGE)  # the first PMD no longer fits the VMA
    target.madvise(a + PAGE, 4 * MiB - PAGE, pymm.MADV_HUGEPAGE)
    target.write(a + PAGE, b"x")
    target.write(a + 2 * MiB, b"y")
    pm = target.pagemap(a, 4 * MiB)
    assert ((pm[:512] & PRESENT) != 0).sum() == 1
    assert ((pm[512:] & PRESENT) != 0).sum() == 512


def test_pymm_thp_leaf_is_a_pmd_in_the_walk():
    mm = pymm.MM(check=True)
    a = mm.mmap(0, 2 * MiB, RW, PRIV)
    mm.madvise(a, 2 * MiB, pymm.MADV_HUGEPAGE)
    mm.write(a, b"x")
    w = mm.walk(a + 4096 * 3)
    assert w.leaf_level == "pmd" and len(w) == 3
    mm2 = pymm.MM(thp="always", check=True)
    b = mm2.mmap(0, 2 * MiB, RW, PRIV)
    mm2.write(b, b"x")
    assert mm2.walk(b).leaf_level == "pmd"
    mm3 = pymm.MM(thp="never", check=True)
    c = mm3.mmap(0, 2 * MiB, RW, PRIV)
    mm3.madvise(c, 2 * MiB, pymm.MADV_HUGEPAGE)
    mm3.write(c, b"x")
    assert mm3.walk(c).leaf_level == "pte"


# -- stacks -----------------------------------------------------------------------------------
def test_growsdown_mapping_grows_on_access_below(target):
    a = target.mmap(0, 4 * PAGE, RW, PRIV | pymm.MAP_GROWSDOWN)
    target.write(a - PAGE, b"grown")
    assert target.read(a - PAGE, 5) == b"grown"
    starts = [v.start for v in target.maps()]
    assert a - PAGE in starts


# -- /proc/self/maps text ------------------------------------------------------------------------
def test_format_maps_matches_the_kernels_text():
    from helpers import host_or_skip
    host_or_skip()
    m = pymm.MM(window=host.DEFAULT_WINDOW)
    with host.HostMM() as h:
        for t in (m, h):
            a = t.mmap(0, 4 * PAGE, RW, PRIV)
            t.mprotect(a, PAGE, pymm.PROT_READ | pymm.PROT_EXEC)
            t.mmap(0, 2 * PAGE, RW, SHARED)
        mine = [line.split() for line in m.format_maps().splitlines()]
        theirs = [line.split() for line in h.format_maps().splitlines()]
        # inode numbers of shmem objects differ between the two processes
        for row in mine + theirs:
            if row[1].endswith("s"):
                row[4] = "<inode>"
        assert mine == theirs


def test_format_maps_layout():
    mm = pymm.MM()
    a = mm.mmap(0x10000000, PAGE, RW, PRIV | pymm.MAP_FIXED)
    s = mm.mmap(0x20000000, PAGE, RW, SHARED | pymm.MAP_FIXED)
    lines = mm.format_maps().splitlines()
    assert lines[0] == f"{a:08x}-{a + PAGE:08x} rw-p 00000000 00:00 0 "
    assert lines[1].startswith(f"{s:08x}-{s + PAGE:08x} rw-s 00000000 00:01 ")
    assert lines[1].endswith("/dev/zero (deleted)") and lines[1].index("/dev") == 73


# -- accounting ----------------------------------------------------------------------------------
def test_rss_counts_resident_pages_not_the_zero_page(mm):
    a = mm.mmap(0, 8 * PAGE, RW, PRIV)
    mm.read(a, 8 * PAGE)
    assert mm.rss == 0
    mm.memset(a, 1, 3 * PAGE)
    assert mm.rss == 3 * PAGE
    s = mm.mmap(0, 4 * PAGE, RW, SHARED)
    mm.write(s, b"x")
    assert mm.status()["RssShmem"] == 4 and mm.status()["RssAnon"] == 12


def test_max_map_count_gives_enomem_and_keeps_the_first_split():
    mm = pymm.MM(max_map_count=6, check=True)
    a = mm.mmap(0, 16 * PAGE, RW, PRIV)
    for i in (1, 3):
        mm.mprotect(a + i * PAGE, PAGE, pymm.PROT_READ)   # 1 -> 3 -> 5 VMAs
    with pytest.raises(OSError) as e:
        mm.mprotect(a + 5 * PAGE, PAGE, pymm.PROT_READ)   # needs two splits, room for one
    assert e.value.errno == 12
    assert mm.map_count == 6                              # split_vma() #1 stayed
    assert [v.perms for v in mm.maps()][-2:] == ["rw-p", "rw-p"]


# -- exec and the raw move ------------------------------------------------------------------------
@pytest.mark.parametrize("shift", [64 * MiB, 2 * MiB, 2 * MiB + 8 * PAGE], ids=["apart", "pmd", "odd"])
def test_shift_arg_pages_keeps_the_data(shift):
    mm = pymm.MM(check=True)
    start = mm.setup_exec_stack(arg_bytes=5 * MiB)
    top = mm.task_size
    before = mmcore.page_tags(mm.engine, start, (top - start) // PAGE)
    mm.shift_arg_pages(start, shift)
    v = mm.maps()[0]
    assert (v.start, v.end) == (start - shift, top - shift)
    assert (mmcore.page_tags(mm.engine, start - shift, (top - start) // PAGE) == before).all()
    assert mm.warnings == []


def test_shift_arg_pages_refuses_when_a_vma_is_in_the_way():
    mm = pymm.MM(check=True)
    start = mm.setup_exec_stack(arg_bytes=PAGE)
    mm.mmap(start - 4 * PAGE, PAGE, RW, PRIV | pymm.MAP_FIXED)
    with pytest.raises(OSError) as e:
        mm.shift_arg_pages(start, 8 * PAGE)
    assert e.value.errno == 14


def test_raw_move_page_tables_changes_no_vma():
    mm = pymm.MM()
    a = mm.mmap(0, 4 * MiB, RW, PRIV)
    mm.memset(a, 7, 4 * MiB)
    maps = mm.format_maps()
    assert mm.move_page_tables(a, a - 64 * MiB, 2 * MiB) == 2 * MiB
    assert mm.format_maps() == maps
    assert mm.read(a - 64 * MiB, 1) == b"\7"         # orphan, but the MMU does not care
    assert {p.invariant for p in pymm.check(mm)} == {"orphan-pte", "stale-table"}


# -- argument validation --------------------------------------------------------------------------
@pytest.mark.parametrize("call", [
    ("mmap", "0", PAGE, RW, PRIV), ("mmap", 0, 1.5, RW, PRIV), ("munmap", None, PAGE),
    ("mremap", 0, PAGE, PAGE, True), ("read", [], 1), ("write", 0, "text"),
])
def test_wrong_types_are_type_errors(mm, call):
    with pytest.raises(TypeError):
        getattr(mm, call[0])(*call[1:])


def test_values_beyond_64_bits_are_overflow_errors(mm):
    with pytest.raises(OverflowError):
        mm.mmap(1 << 64, PAGE, RW, PRIV)
    with pytest.raises(OverflowError):
        mm.munmap(0, -(1 << 64))


def test_unknown_kernel_arch_thp_are_value_errors():
    with pytest.raises(ValueError):
        pymm.MM(kernel="2.6")
    with pytest.raises(ValueError):
        pymm.MM(arch="arm64")
    with pytest.raises(ValueError):
        pymm.MM(thp="sometimes")
    with pytest.raises(TypeError):
        pymm.MM(kernel=5.8)


def test_stamp_writes_each_page_its_page_number_and_faults_pages_in(mm):
    a = mm.mmap(0, 8 * PAGE, RW, PRIV)
    mm.stamp(a + PAGE, 3 * PAGE)
    for i in (1, 2, 3):
        assert mm.read(a + i * PAGE + 8, 8) == ((a >> 12) + i).to_bytes(8, "little")
    assert mm.read(a, 1) == b"\0" and mm.rss == 3 * PAGE      # page 0: the zero page, not RSS
    with pytest.raises(ValueError):
        mm.stamp(a + 1, PAGE)
    with pytest.raises(ValueError):
        mm.stamp(a, PAGE + 1)


def present(target, addr, npages):
    return "".join(str(int(p) >> 63) for p in target.pagemap(addr, npages * PAGE))


def aligned_hole(target, npages, align=16 * PAGE):
    """A free, ``align``-aligned stretch of npages pages."""
    r = target.mmap(0, npages * PAGE + align, pymm.PROT_NONE, PRIV)
    target.munmap(r, npages * PAGE + align)
    return (r + align - 1) & ~(align - 1)


def test_read_fault_on_shared_memory_maps_the_cached_neighbours(target):
    """do_fault_around(): a read fault on shmem maps the pages of its
    64 KiB-aligned window that are already in the object, clamped to the
    VMA; pages not in the object stay unmapped.  (Found by the long
    differential run: pymm mapped only the faulting page.)"""
    X = target.mmap(aligned_hole(target, 40), 40 * PAGE, RW, SHARED | pymm.MAP_FIXED | pymm.MAP_POPULATE)
    target.madvise(X, 40 * PAGE, pymm.MADV_DONTNEED)      # PTEs gone, pages stay in the object
    target.read(X + 17 * PAGE, 1)
    assert present(target, X, 40) == "0" * 16 + "1" * 16 + "0" * 8
    target.munmap(X, 40 * PAGE)
    Z = target.mmap(aligned_hole(target, 24) + 3 * PAGE, 20 * PAGE, RW, SHARED | pymm.MAP_FIXED)
    for i in (2, 6, 17):
        target.write(Z + i * PAGE, b"x")
    target.madvise(Z, 20 * PAGE, pymm.MADV_DONTNEED)
    target.read(Z + PAGE, 1)                               # window clamped to the VMA start
    assert present(target, Z, 20) == "01100010000000000000"
    target.write(Z + 18 * PAGE, b"y")                      # write faults do not fault around
    assert present(target, Z, 20) == "01100010000000000010"


def test_a_read_fault_beyond_a_shmem_object_still_maps_the_cached_neighbours(target):
    """do_read_fault(): fault-around runs before shmem_fault() finds the page
    beyond the object's end; the neighbours stay mapped, then SIGBUS.
    (Found by the long differential run.)"""
    X = target.mmap(aligned_hole(target, 32), 31 * PAGE, RW, SHARED | pymm.MAP_FIXED | pymm.MAP_POPULATE)
    # a second view of the object, one page longer than it, 64 KiB aligned
    Y = target.mremap(X, 0, 32 * PAGE, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED, aligned_hole(target, 32))
    with pytest.raises(pymm.BusError):
        target.read(Y + 31 * PAGE, 1)
    assert present(target, Y, 32) == "0" * 16 + "1" * 15 + "0"   # the faulting page's window only


def test_memset_into_a_fresh_huge_page_fills_only_what_it_covers(target):
    """A write fault that allocates a THP during memset() fills only the
    bytes memset covers.  (Found by the long differential run: pymm filled
    the whole 2 MiB.)"""
    X = target.mmap(aligned_hole(target, 1024, align=2 << 20), 4 << 20, RW, PRIV | pymm.MAP_FIXED)
    target.madvise(X, 4 << 20, pymm.MADV_HUGEPAGE)
    target.memset(X + 2 * PAGE, 1, 3 * PAGE)
    target.memset(X + (2 << 20) - PAGE, 2, 2 * PAGE)
    got = [target.read(X + off, 1) for off in (0, PAGE, 2 * PAGE, 5 * PAGE, (2 << 20) - PAGE,
                                                 2 << 20, (2 << 20) + PAGE)]
    assert got == [b"\0", b"\0", b"\1", b"\0", b"\2", b"\2", b"\0"]
