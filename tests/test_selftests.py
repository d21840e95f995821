"""tools/testing/selftests/mm/mremap_test.c and mremap_dontunmap.c, as pytest.

Every case runs twice: on pymm (with check=True, so every invariant is
verified after each call) and on this machine's kernel through HostMM.  The
helpers follow the C ones line by line; addresses start at the HostMM window
instead of mmap_min_addr, so both runs pick the same addresses.
"""
import errno
import random
from dataclasses import dataclass

import pytest

import pymm
from pymm import host

from helpers import GiB, KiB, MiB, PAGE, PRIV, RW, SHARED

PTE, PMD, PUD = PAGE, 2 * MiB, GiB
SEED = 20200715
THRESHOLD = 4 * MiB  # VALIDATION_DEFAULT_THRESHOLD
BASE = host.DEFAULT_WINDOW[0]


def rand_bytes(n, seed=SEED):
    return random.Random(seed).randbytes(n)


@dataclass
class Config:
    src_alignment: int
    dest_alignment: int
    region_size: int
    overlapping: bool = False
    dest_preamble_size: int = 0


def is_remap_region_valid(mm, addr, size):
    """MAP_FIXED_NOREPLACE probe: False if something is mapped there."""
    try:
        a = mm.mmap(addr, size, RW, pymm.MAP_FIXED_NOREPLACE | SHARED)
    except OSError as e:
        return e.errno != errno.EEXIST
    mm.munmap(a, size)
    return True


def get_source_mapping(mm, c):
    """Map region_size at an address aligned to src_alignment but not to twice
    that (to avoid coincidental extra alignment), above some headroom."""
    addr = 0
    min_addr = BASE + 10 * 4 * MiB
    while True:
        addr += c.src_alignment
        if addr < min_addr:
            addr = min_addr - min_addr % c.src_alignment  # the C loop, without the crawl
            continue
        try:
            src = mm.mmap(addr, c.region_size, RW, pymm.MAP_FIXED_NOREPLACE | SHARED)
        except OSError as e:
            if e.errno in (errno.EPERM, errno.EEXIST):
                continue
            return None
        if src & (c.src_alignment - 1) or not src & c.src_alignment:
            mm.munmap(src, c.region_size)
            continue
        return src


def is_range_mapped(mm, start, end):
    return any(v.start <= start and v.end >= end for v in mm.maps())


def remap_region(mm, c, rand):
    """The core of each alignment case: map, fill, mremap(FIXED), verify."""
    threshold = min(THRESHOLD, c.region_size)
    src = get_source_mapping(mm, c)
    if src is None:
        return False
    mm.write(src, rand[:threshold])
    align_mask = ~(c.dest_alignment - 1)
    offset = -c.dest_alignment if c.overlapping else c.dest_alignment
    addr = (src + c.region_size + offset) & align_mask
    addr += c.dest_preamble_size
    if not addr & c.dest_alignment:
        addr |= c.dest_alignment
    while not is_remap_region_valid(mm, addr, c.region_size) and not c.overlapping:
        addr += c.dest_alignment
    preamble = None
    if c.dest_preamble_size:
        preamble = mm.mmap(addr - c.dest_preamble_size, c.dest_preamble_size, RW,
                           pymm.MAP_FIXED_NOREPLACE | SHARED)
        mm.write(preamble, rand[:c.dest_preamble_size])
    try:
        dest = mm.mremap(src, c.region_size, c.region_size,
                         pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED, addr)
    except OSError:
        mm.munmap(src, c.region_size)
        return False
    ok = mm.read(dest, threshold) == rand[:threshold]
    if preamble is not None:
        ok = ok and mm.read(preamble, c.dest_preamble_size) == rand[:c.dest_preamble_size]
        mm.munmap(preamble, c.dest_preamble_size)
    mm.munmap(dest, c.region_size)
    mm.munmap(src, c.region_size)
    return ok


CASES = [
    # name, config, expect failure
    ("Source and Destination Regions Overlapping", Config(PAGE, PAGE, PAGE, overlapping=True), True),
    ("Destination Address Misaligned (1KB-aligned)", Config(PAGE, PAGE // 4, PAGE), True),
    ("Source Address Misaligned (1KB-aligned)", Config(PAGE // 4, PAGE, PAGE), True),
    ("8KB mremap - Source PTE-aligned, Destination PTE-aligned", Config(PTE, PTE, 2 * PTE), False),
    ("2MB mremap - Source 1MB-aligned, Destination PTE-aligned", Config(MiB, PTE, 2 * MiB), False),
    ("2MB mremap - Source 1MB-aligned, Destination 1MB-aligned", Config(MiB, MiB, 2 * MiB), False),
    ("4MB mremap - Source PMD-aligned, Destination PTE-aligned", Config(PMD, PTE, 4 * MiB), False),
    ("4MB mremap - Source PMD-aligned, Destination 1MB-aligned", Config(PMD, MiB, 4 * MiB), False),
    ("4MB mremap - Source PMD-aligned, Destination PMD-aligned", Config(PMD, PMD, 4 * MiB), False),
    ("2GB mremap - Source PUD-aligned, Destination PTE-aligned", Config(PUD, PTE, 2 * GiB), False),
    ("2GB mremap - Source PUD-aligned, Destination 1MB-aligned", Config(PUD, MiB, 2 * GiB), False),
    ("2GB mremap - Source PUD-aligned, Destination PMD-aligned", Config(PUD, PMD, 2 * GiB), False),
    ("2GB mremap - Source PUD-aligned, Destination PUD-aligned", Config(PUD, PUD, 2 * GiB), False),
    ("5MB mremap - Source 1MB-aligned, Destination 1MB-aligned", Config(MiB, MiB, 5 * MiB), False),
    ("5MB mremap - Source 1MB-aligned, Dest 1MB-aligned with 40MB Preamble",
     Config(MiB, MiB, 5 * MiB, dest_preamble_size=10 * 4 * MiB), False),
    ("1GB mremap - Source PTE-aligned, Destination PTE-aligned", Config(PAGE, PAGE, GiB), False),
    ("1GB mremap - Source PMD-aligned, Destination PMD-aligned", Config(PMD, PMD, GiB), False),
    ("1GB mremap - Source PUD-aligned, Destination PUD-aligned", Config(PUD, PUD, GiB), False),
]


@pytest.mark.parametrize("name,config,expect_failure", CASES, ids=[c[0] for c in CASES])
def test_alignment_matrix(target, name, config, expect_failure):
    assert remap_region(target, config, rand_bytes(40 * MiB)) is (not expect_failure)


def _paths(config, kernel="6.18", touch_every=MiB):
    """Run one alignment case on pymm and report (pte, pmd, pud) moves."""
    mm = pymm.MM(kernel=kernel, window=host.DEFAULT_WINDOW, check=True)
    src = get_source_mapping(mm, config)
    for off in range(0, config.region_size, touch_every):
        mm.write(src + off, b"x")
    dst = (src + config.region_size + config.dest_alignment) & ~(config.dest_alignment - 1)
    dst |= config.dest_alignment
    mm.reset_stats()
    mm.mremap(src, config.region_size, config.region_size, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED, dst)
    s = mm.stats
    return s["pte_moves"], s["pmd_moves"], s["pud_moves"]


def test_alignment_matrix_takes_the_kernels_paths():
    """Which path each case takes: PUD moves need PUD alignment on both sides,
    PMD moves PMD alignment, anything else moves PTE by PTE."""
    assert _paths(Config(PUD, PUD, 2 * GiB), touch_every=GiB) == (0, 0, 2)
    assert _paths(Config(PUD, PMD, 2 * GiB), touch_every=GiB) == (0, 2, 0)
    assert _paths(Config(PUD, PTE, 2 * GiB), touch_every=GiB) == (2, 0, 0)
    assert _paths(Config(PMD, PMD, 4 * MiB), touch_every=2 * MiB) == (0, 2, 0)
    assert _paths(Config(PMD, MiB, 4 * MiB), touch_every=2 * MiB) == (2, 0, 0)


def test_5mb_mutually_aligned_move_is_realigned_by_6_7_only():
    """The 5 MiB case: source and destination both sit 1 MiB into a PMD.
    6.7's try_realign_addr() moves the start down to the PMD, so all three
    PMDs move whole; 5.8 first walks the odd 1 MiB PTE by PTE."""
    c = Config(MiB, MiB, 5 * MiB)
    assert _paths(c, kernel="6.18") == (0, 3, 0)
    assert _paths(c, kernel="6.7") == (0, 3, 0)
    assert _paths(c, kernel="5.8") == (1, 2, 0)
    assert _paths(c, kernel="4.19") == (5, 0, 0)


def test_mremap_expand_merge(target):
    start = target.mmap(0, 3 * PAGE, RW, PRIV)
    target.munmap(start + PAGE, PAGE)
    target.mremap(start, PAGE, 2 * PAGE, 0)
    assert is_range_mapped(target, start, start + 3 * PAGE)
    target.munmap(start, 3 * PAGE)


def test_mremap_expand_merge_offset(target):
    start = target.mmap(0, 3 * PAGE, RW, PRIV)
    target.munmap(start + 2 * PAGE, PAGE)
    target.mremap(start + PAGE, PAGE, 2 * PAGE, 0)
    assert is_range_mapped(target, start, start + 3 * PAGE)
    target.munmap(start, 3 * PAGE)


def test_mremap_move_within_range(target):
    """|DDDDddddSSSSssss|: moving the s half must not disturb S."""
    rand = rand_bytes(2 * MiB)
    size = 20 * MiB
    ptr = target.mmap(0, size, RW, PRIV)
    target.memset(ptr, 0, size)
    src = (ptr + 6 * MiB) & ~(2 * MiB - 1)
    target.write(src, rand)
    dest = src - 2 * MiB
    target.mremap(src + MiB, MiB, MiB, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED, dest + MiB)
    assert target.read(src, MiB) == rand[:MiB]
    assert target.read(dest + MiB, MiB) == rand[MiB:]
    target.munmap(ptr, size)


def test_mremap_move_1mb_from_start(target):
    """An mremap aligning down must not destroy the start of the mapping
    because the aligned-down address fell on a hole."""
    rand = rand_bytes(2 * MiB)
    c = Config(MiB + 256 * KiB, 0, 6 * MiB)
    src = get_source_mapping(target, c)
    dest = get_source_mapping(target, c)
    target.write(src, rand)
    target.munmap(dest, MiB)
    target.mremap(src + MiB, MiB, MiB, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED, dest + MiB)
    assert target.read(src, MiB) == rand[:MiB]
    assert target.read(dest + MiB, MiB) == rand[MiB:2 * MiB]
    target.munmap(src, 6 * MiB)
    target.munmap(dest, 6 * MiB)


@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "fixed"])
def test_mremap_shrink_multiple_vmas(target, inplace):
    size = 10 * PAGE
    ptr = target.mmap(0, size, RW, PRIV)
    tgt = target.mmap(0, size, RW, PRIV)
    target.munmap(tgt, size)
    for i in range(1, 10, 2):
        target.munmap(ptr + i * PAGE, PAGE)
    if inplace:
        res = target.mremap(ptr, size, PAGE, 0)
        assert res == ptr
    else:
        res = target.mremap(ptr, size, PAGE, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED, tgt)
        assert res == tgt
    spans = [(v.start, v.end) for v in target.maps() if ptr <= v.start < ptr + size]
    assert spans == ([(ptr, ptr + PAGE)] if inplace else [])
    target.munmap(tgt, size)
    target.munmap(ptr, size)


def _multiple_vma_pattern_ok(mm, ptr, rand):
    off = 0
    for i in range(0, 11, 2):
        n = 2 * PAGE if i == 4 else PAGE
        if mm.read(ptr + i * PAGE, n) != rand[off:off + n]:
            return False
        off += n
    return True


@pytest.mark.parametrize("dont_unmap", [False, True], ids=["", "dontunmap"])
def test_mremap_move_multiple_vmas(target, dont_unmap):
    flags = pymm.MREMAP_FIXED | pymm.MREMAP_MAYMOVE | (pymm.MREMAP_DONTUNMAP if dont_unmap else 0)
    size = 11 * PAGE
    rand = rand_bytes(7 * PAGE)
    ptr = target.mmap(0, size, RW, PRIV)
    tgt = target.mmap(0, 2 * size, RW, PRIV)
    target.munmap(tgt, 2 * size)
    #  0   2   4 5 6   8   10 offset in buffer
    # |*| |*| |*****| |*| |*|
    for i in range(1, 10, 2):
        if i != 5:
            target.munmap(ptr + i * PAGE, PAGE)
    off = 0
    for i in range(0, 11, 2):
        n = 2 * PAGE if i == 4 else PAGE
        target.write(ptr + i * PAGE, rand[off:off + n])
        off += n
    target.mremap(ptr, size, size, flags, tgt)                  # move the whole thing
    assert _multiple_vma_pattern_ok(target, tgt, rand)
    target.mremap(tgt, size, size, flags, tgt + size)           # next to itself
    assert _multiple_vma_pattern_ok(target, tgt + size, rand)
    target.mmap(tgt, size, pymm.PROT_NONE, PRIV | pymm.MAP_FIXED)
    target.mremap(tgt + size, size, size, flags, tgt)           # move and overwrite
    assert _multiple_vma_pattern_ok(target, tgt, rand)
    target.munmap(tgt, 2 * size)
    target.munmap(ptr, size)


@pytest.mark.parametrize("dont_unmap", [False, True], ids=["", "dontunmap"])
def test_mremap_move_multiple_vmas_split(target, dont_unmap):
    flags = pymm.MREMAP_FIXED | pymm.MREMAP_MAYMOVE | (pymm.MREMAP_DONTUNMAP if dont_unmap else 0)
    size = 10 * PAGE
    rand = rand_bytes(10 * PAGE)
    ptr = target.mmap(0, size, RW, PRIV)
    tgt = target.mmap(0, size, RW, PRIV)
    target.munmap(tgt, size)
    target.munmap(ptr + 5 * PAGE, PAGE)
    for i in range(10):
        if i != 5:
            target.write(ptr + i * PAGE, rand[i * PAGE:(i + 1) * PAGE])
    target.mremap(ptr + 2 * PAGE, size - 3 * PAGE, size - 3 * PAGE, flags, tgt)
    for i in range(7):
        if i == 3:
            continue                                             # the hole moved along
        assert target.read(tgt + i * PAGE, PAGE) == rand[(i + 2) * PAGE:(i + 3) * PAGE], i
    target.munmap(tgt, size)
    target.munmap(ptr, size)


# -- mremap_dontunmap.c -------------------------------------------------------------
def _contains(mm, addr, size, byte):
    return mm.read(addr, size) == bytes([byte]) * size


@pytest.mark.parametrize("flags,left", [(PRIV, 0), (SHARED, ord("a"))], ids=["private", "shmem"])
def test_mremap_dontunmap_simple(target, flags, left):
    """The source keeps its VMA: private memory reads zero (its PTEs moved),
    shmem still reads its data (the pages stay in the object)."""
    n = 5 * PAGE
    src = target.mmap(0, n, RW, flags)
    target.memset(src, ord("a"), n)
    dest = target.mremap(src, n, n, pymm.MREMAP_DONTUNMAP | pymm.MREMAP_MAYMOVE, 0)
    assert _contains(target, dest, n, ord("a"))
    assert _contains(target, src, n, left)
    target.munmap(dest, n)
    target.munmap(src, n)


def test_mremap_dontunmap_simple_fixed(target):
    n = 5 * PAGE
    dest = target.mmap(0, n, RW, PRIV)
    target.memset(dest, ord("X"), n)
    src = target.mmap(0, n, RW, PRIV)
    target.memset(src, ord("a"), n)
    r = target.mremap(src, n, n, pymm.MREMAP_FIXED | pymm.MREMAP_DONTUNMAP | pymm.MREMAP_MAYMOVE, dest)
    assert r == dest
    assert _contains(target, dest, n, ord("a"))
    assert _contains(target, src, n, 0)
    target.munmap(dest, n)
    target.munmap(src, n)


def test_mremap_dontunmap_partial_mapping(target):
    src = target.mmap(0, 10 * PAGE, RW, PRIV)
    target.memset(src, ord("a"), 10 * PAGE)
    dest = target.mremap(src + 5 * PAGE, 5 * PAGE, 5 * PAGE,
                         pymm.MREMAP_DONTUNMAP | pymm.MREMAP_MAYMOVE, 0)
    assert _contains(target, src, 5 * PAGE, ord("a"))
    assert _contains(target, src + 5 * PAGE, 5 * PAGE, 0)
    assert _contains(target, dest, 5 * PAGE, ord("a"))
    target.munmap(dest, 5 * PAGE)
    target.munmap(src, 10 * PAGE)


def test_mremap_dontunmap_partial_mapping_overwrite(target):
    src = target.mmap(0, 5 * PAGE, RW, PRIV)
    target.memset(src, ord("a"), 5 * PAGE)
    dest = target.mmap(0, 10 * PAGE, RW, PRIV)
    target.memset(dest, ord("X"), 10 * PAGE)
    r = target.mremap(src, 5 * PAGE, 5 * PAGE,
                      pymm.MREMAP_DONTUNMAP | pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED, dest)
    assert r == dest
    assert _contains(target, src, 5 * PAGE, 0)
    assert _contains(target, dest, 5 * PAGE, ord("a"))
    assert _contains(target, dest + 5 * PAGE, 5 * PAGE, ord("X"))
    target.munmap(dest, 10 * PAGE)
    target.munmap(src, 5 * PAGE)


def test_kernel_support_for_mremap_dontunmap(target):
    src = target.mmap(0, PAGE, pymm.PROT_NONE, PRIV)
    dest = target.mremap(src, PAGE, PAGE, pymm.MREMAP_DONTUNMAP | pymm.MREMAP_MAYMOVE, 0)
    target.munmap(dest, PAGE)
    target.munmap(src, PAGE)
