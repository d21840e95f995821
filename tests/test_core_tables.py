"""mmcore: walks, faults, zap, free_pgd_range, contents and validation."""
import numpy as np
import pytest

import mmcore
from mmcore import ARM64_64K, X86_64, X86_64_LA57, Engine
from mmcore.geometry import Geometry

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
P, RW, US, A, D, PSE, PN, SPECIAL, SD = 1, 2, 4, 32, 64, 128, 256, 512, 2048
NX = 1 << 63


def anon_engine(geometry=X86_64):
    eng = Engine(geometry)
    return eng, eng.owner_new("anon")


def populate(eng, owner, start, end, *, write=True, thp=False, vma=None):
    vs, ve = vma or (start, end)
    mmcore.handle_mm_fault(eng, start, end, vma_start=vs, vma_end=ve, owner=owner,
                           pgoff=vs >> eng.geometry.page_shift, write=write, thp=thp)


# -- geometry -----------------------------------------------------------------
def test_x86_64_geometry_sizes():
    assert (X86_64.page_size, X86_64.pmd_size, X86_64.pud_size) == (4 * KiB, 2 * MiB, GiB)
    assert X86_64.task_size == 0x7FFFFFFFF000
    assert X86_64_LA57.task_size == (1 << 56) - 4096
    assert X86_64_LA57.map_window == (1 << 47) - 4096
    assert X86_64.index(0x7F1234567000, "pgd") == 0xFE
    assert X86_64_LA57.shift("p4d") == 39


def test_arm64_64k_geometry_has_512mib_pmds():
    assert ARM64_64K.pmd_size == 512 * MiB
    assert ARM64_64K.entries("pte") == 8192
    assert ARM64_64K.page_size == 64 * KiB


def test_geometry_rejects_nonsense():
    with pytest.raises(ValueError):
        Geometry("bad", 12, (9,), ("pte",), 20)
    with pytest.raises(ValueError):
        Geometry("bad", 12, (9, 9), ("a",), 20)
    with pytest.raises(ValueError):
        X86_64.level("p4d")


# -- walks and translation ------------------------------------------------------
@pytest.mark.parametrize("geometry", [X86_64, X86_64_LA57, ARM64_64K], ids=lambda g: g.name)
def test_walk_visits_every_level_and_translates(geometry):
    eng, o = anon_engine(geometry)
    ps = geometry.page_size
    addr = 3 * geometry.pud_size + 5 * geometry.pmd_size + 7 * ps
    populate(eng, o, addr, addr + ps)
    steps = mmcore.walk(eng, addr + 123)
    assert [s[0] for s in steps] == list(range(geometry.levels))
    # each step indexes with the address bits of its level
    for level, _tid, index, _entry in steps:
        assert index == geometry.index(addr, level)
    last = steps[-1][3]
    assert last & P and last & RW and last & D
    frame = mmcore.translate(eng, addr + 123)
    assert frame == (last & ((1 << 52) - 1)) >> 12
    assert mmcore.translate(eng, addr + ps) == -1  # the next page was never touched
    # an unpopulated address stops the walk at the first none entry
    miss = mmcore.walk(eng, addr + geometry.pud_size)
    assert miss[-1][3] == 0


def test_walk_of_empty_space_stops_at_root():
    eng, _ = anon_engine()
    assert mmcore.walk(eng, 0x7F0000000000) == [(0, 0, 0xFE, 0)]


# -- faults ----------------------------------------------------------------------
def test_read_fault_maps_the_zero_page_and_write_copies_it():
    eng, o = anon_engine()
    base = 64 * GiB
    populate(eng, o, base, base + 4096, write=False)
    e = mmcore.walk(eng, base)[-1][3]
    assert e & SPECIAL and not e & RW
    assert mmcore.translate(eng, base) == 0 and mmcore.translate(eng, base, write=True) == -1
    assert eng.rss() == (0, 0)  # the zero page is not RSS
    populate(eng, o, base, base + 4096, write=True)
    f = mmcore.translate(eng, base, write=True)
    assert f > 0 and eng.stats()["cow_faults"] == 1 and eng.rss() == (1, 0)


def test_thp_fault_installs_a_huge_leaf_only_when_the_pmd_fits_the_vma():
    eng, o = anon_engine()
    vs, ve = 8 * GiB + 4096, 8 * GiB + 6 * MiB  # 2 MiB blocks at 8G+2M and 8G+4M fit
    populate(eng, o, vs, ve, thp=True, vma=(vs, ve))
    levels = [len(mmcore.walk(eng, a)) for a in (vs, 8 * GiB + 2 * MiB, 8 * GiB + 4 * MiB)]
    assert levels == [4, 3, 3]  # the first PMD is partial: PTEs
    assert mmcore.walk(eng, 8 * GiB + 2 * MiB)[-1][3] & PSE
    assert eng.rss()[0] == 511 + 1024
    # subpages of a huge leaf translate to consecutive frames
    f0 = mmcore.translate(eng, 8 * GiB + 2 * MiB)
    assert mmcore.translate(eng, 8 * GiB + 2 * MiB + 5 * 4096) == f0 + 5
    assert f0 % 512 == 0  # a huge PFN is aligned


def test_thp_read_fault_maps_the_huge_zero_page():
    eng, o = anon_engine()
    populate(eng, o, 2 * GiB, 2 * GiB + 2 * MiB, write=False, thp=True)
    e = mmcore.walk(eng, 2 * GiB)[-1][3]
    assert e & PSE and not e & RW
    assert mmcore.translate(eng, 2 * GiB) == eng.zero_frames[1]
    populate(eng, o, 2 * GiB, 2 * GiB + 2 * MiB, write=True, thp=True)
    assert eng.rss()[0] == 512 and eng.stats()["cow_faults"] == 1


def test_populate_then_zap_round_trip_frees_frames_keeps_tables():
    eng, o = anon_engine()
    populate(eng, o, GiB, GiB + 4 * MiB)
    tables = eng.n_tables
    assert eng.n_frames == 1024 and eng.rss() == (1024, 0)
    mmcore.zap_page_range(eng, GiB, GiB + 4 * MiB)
    assert eng.n_frames == 0 and eng.rss() == (0, 0)
    assert eng.n_tables == tables  # zap keeps page tables
    assert mmcore.translate(eng, GiB) == -1
    # and frames are reused after a zap
    populate(eng, o, GiB, GiB + 4096)
    assert eng.memory()["frame_rows_used"] < 1024 + 1024


def test_partial_zap_of_a_huge_leaf_splits_it():
    eng, o = anon_engine()
    populate(eng, o, GiB, GiB + 2 * MiB, thp=True)
    mmcore.zap_page_range(eng, GiB, GiB + 4096)
    assert eng.stats()["huge_pmd_splits"] == 1
    assert mmcore.translate(eng, GiB) == -1 and mmcore.translate(eng, GiB + 4096) >= 0
    assert eng.rss()[0] == 511


def test_shmem_pages_survive_zap_in_their_object():
    eng = Engine(X86_64)
    obj = eng.owner_new("shmem", npages=4)
    mmcore.handle_mm_fault(eng, GiB, GiB + 4 * 4096, vma_start=GiB, vma_end=GiB + 4 * 4096,
                           owner=obj, pgoff=0, write=True, shared=True)
    f = mmcore.translate(eng, GiB)
    mmcore.write_bytes(eng, GiB, b"hello")
    mmcore.zap_page_range(eng, GiB, GiB + 4 * 4096)
    assert eng.rss() == (0, 0)
    assert eng.shmem_resident(obj).all()  # pages still in the object
    mmcore.handle_mm_fault(eng, GiB, GiB + 4096, vma_start=GiB, vma_end=GiB + 4 * 4096,
                           owner=obj, pgoff=0, shared=True)
    assert mmcore.translate(eng, GiB) == f
    assert mmcore.read_bytes(eng, GiB, 5) == (b"hello", 5)


def test_fault_validation():
    eng, o = anon_engine()
    with pytest.raises(ValueError):
        mmcore.handle_mm_fault(eng, GiB, GiB + 4096, vma_start=GiB + 4096, vma_end=GiB + 8192,
                               owner=o, pgoff=0)
    with pytest.raises(ValueError):
        mmcore.handle_mm_fault(eng, GiB, GiB + 4096, vma_start=GiB, vma_end=GiB + 4096, owner=999,
                               pgoff=0)
    with pytest.raises(ValueError):
        mmcore.handle_mm_fault(eng, GiB, GiB + 4096, vma_start=GiB, vma_end=GiB + 4096, owner=o,
                               pgoff=0, shared=True)
    with pytest.raises(ValueError):
        mmcore.handle_mm_fault(eng, 1 << 48, (1 << 48) + 4096, vma_start=1 << 48,
                               vma_end=(1 << 48) + 4096, owner=o, pgoff=0)
    with pytest.raises(OverflowError):
        mmcore.handle_mm_fault(eng, GiB, GiB + 4096, vma_start=GiB, vma_end=GiB + 4096, owner=o,
                               pgoff=-1)
    with pytest.raises((OverflowError, TypeError)):
        mmcore.translate(eng, -1)


# -- contents -----------------------------------------------------------------------
def test_memset_pages_is_a_tag_and_reads_back():
    eng, o = anon_engine()
    populate(eng, o, GiB, GiB + 8 * 4096)
    assert mmcore.memset_pages(eng, GiB, GiB + 8 * 4096, 0xAB) == GiB + 8 * 4096
    data, n = mmcore.read_bytes(eng, GiB + 4000, 200)
    assert n == 200 and data == b"\xab" * 200
    assert eng.memory()["buffers"] == 0  # whole-page fills need no buffer


def test_memset_pages_stops_at_the_first_fault():
    eng, o = anon_engine()
    populate(eng, o, GiB, GiB + 2 * 4096)
    assert mmcore.memset_pages(eng, GiB, GiB + 4 * 4096, 1) == GiB + 2 * 4096


def test_sub_page_write_materialises_one_buffer():
    eng, o = anon_engine()
    populate(eng, o, GiB, GiB + 2 * 4096)
    mmcore.memset_pages(eng, GiB, GiB + 2 * 4096, 0x11)
    assert mmcore.write_bytes(eng, GiB + 4094, b"abcd") == 4  # straddles two pages
    assert eng.memory()["buffers"] == 2
    assert mmcore.read_bytes(eng, GiB + 4092, 8)[0] == b"\x11\x11abcd\x11\x11"
    mmcore.memset_pages(eng, GiB, GiB + 4096, 0)  # a whole-page fill drops the buffer
    assert eng.memory()["buffers"] == 1


def test_stamp_pages_gives_each_page_its_own_number():
    eng, o = anon_engine()
    populate(eng, o, GiB, GiB + 3 * 4096)
    mmcore.stamp_pages(eng, GiB, GiB + 3 * 4096)
    word = mmcore.read_bytes(eng, GiB + 4096, 8)[0]
    assert int.from_bytes(word, "little") == (GiB + 4096) >> 12
    tags = mmcore.page_tags(eng, GiB, 4)
    assert len(set(tags[:3].tolist())) == 3 and tags[3] == 2**64 - 1


def test_read_stops_at_unmapped_and_write_at_read_only():
    eng, o = anon_engine()
    populate(eng, o, GiB, GiB + 4096)
    data, n = mmcore.read_bytes(eng, GiB + 4000, 200)
    assert n == 96
    populate(eng, o, GiB + 4096, GiB + 8192, write=False)  # zero page: read-only
    assert mmcore.write_bytes(eng, GiB + 4090, b"x" * 10) == 6


def test_pagemap_bits():
    eng, o = anon_engine()
    populate(eng, o, GiB, GiB + 4096)
    populate(eng, o, GiB + 4096, GiB + 8192, write=False)
    pm = mmcore.pagemap(eng, GiB, 3)
    assert pm[0] >> 63 == 1 and (pm[0] >> 56) & 1 == 1 and (pm[0] >> 55) & 1 == 1
    assert pm[0] & ((1 << 55) - 1) == mmcore.translate(eng, GiB)
    assert pm[1] >> 63 == 1 and (pm[1] >> 56) & 1 == 0  # zero page: not exclusive
    assert pm[2] == 0


def test_change_protection_prot_none_keeps_pages_present():
    eng, o = anon_engine()
    populate(eng, o, GiB, GiB + 4096)
    mmcore.change_protection(eng, GiB, GiB + 4096, read=False, write=False)
    e = mmcore.walk(eng, GiB)[-1][3]
    assert not e & P and e & PN
    assert mmcore.translate(eng, GiB) == -1
    assert mmcore.pagemap(eng, GiB, 1)[0] >> 63 == 1  # pte_present() counts PROT_NONE
    mmcore.change_protection(eng, GiB, GiB + 4096, read=True, write=True)
    assert mmcore.translate(eng, GiB, write=True) > 0


# -- free_pgd_range -------------------------------------------------------------------
def test_free_pgd_range_frees_tables_whose_span_is_free():
    eng, o = anon_engine()
    populate(eng, o, 4 * GiB, 4 * GiB + 4096)
    assert eng.n_tables == 3  # pud, pmd, pte tables
    mmcore.zap_page_range(eng, 4 * GiB, 4 * GiB + 4096)
    mmcore.free_pgd_range(eng, 4 * GiB, 4 * GiB + 4096, 0, 0)
    assert eng.n_tables == 0 and mmcore.walk(eng, 4 * GiB) == [(0, 0, 0, 0)]
    assert eng.stats()["pgtables_freed"] == 3


def test_free_pgd_range_keeps_a_pte_table_a_neighbour_shares():
    eng, o = anon_engine()
    a, b = 4 * GiB, 4 * GiB + 64 * KiB  # same PMD
    populate(eng, o, a, a + 4096)
    populate(eng, o, b, b + 4096)
    mmcore.zap_page_range(eng, a, a + 4096)
    # the neighbouring VMA starts at b: the ceiling
    mmcore.free_pgd_range(eng, a, a + 4096, 0, b)
    assert eng.n_tables == 3 and mmcore.translate(eng, b) >= 0


def test_free_pgd_range_frees_the_pte_table_but_keeps_shared_upper_levels():
    eng, o = anon_engine()
    a, b = 4 * GiB, 4 * GiB + 8 * MiB  # same PUD, different PMDs
    populate(eng, o, a, a + 4096)
    populate(eng, o, b, b + 4096)
    mmcore.zap_page_range(eng, a, a + 4096)
    mmcore.free_pgd_range(eng, a, a + 4096, 0, b)
    assert eng.n_tables == 3  # pud + pmd + b's pte table
    assert len(mmcore.walk(eng, a)) == 3 and mmcore.walk(eng, a)[-1][3] == 0


def test_free_pgd_range_floor_ceiling_rounding_matches_the_kernel():
    eng, o = anon_engine()
    # floor inside the PMD of addr: the first PMD must not be freed
    populate(eng, o, 4 * GiB, 4 * GiB + 4 * MiB)
    mmcore.zap_page_range(eng, 4 * GiB, 4 * GiB + 4 * MiB)
    mmcore.free_pgd_range(eng, 4 * GiB + 4096, 4 * GiB + 4 * MiB, 4 * GiB + 4096, 0)
    assert len(mmcore.walk(eng, 4 * GiB)) == 4  # first PTE table kept (floor)
    assert len(mmcore.walk(eng, 4 * GiB + 2 * MiB)) == 3  # second freed


def test_free_pgd_range_argument_checks():
    eng, _ = anon_engine()
    with pytest.raises(ValueError):
        mmcore.free_pgd_range(eng, GiB, GiB, 0, 0)
    with pytest.raises(ValueError):
        mmcore.free_pgd_range(eng, 0, 1 << 50, 0, 0)


# -- the checker's scan ------------------------------------------------------------------
def _vmas(*spans, owner, shift=12):
    starts = np.array([s for s, _ in spans], dtype=np.uint64)
    ends = np.array([e for _, e in spans], dtype=np.uint64)
    return (starts, ends, np.array([owner] * len(spans), dtype=np.int64),
            np.array([s >> shift for s, _ in spans], dtype=np.uint64))


def test_check_scan_is_clean_on_a_consistent_state_and_finds_orphans():
    eng, o = anon_engine()
    populate(eng, o, GiB, GiB + 64 * KiB)
    assert mmcore.check_scan(eng, *_vmas((GiB, GiB + 64 * KiB), owner=o)) == []
    probs = mmcore.check_scan(eng, *_vmas((GiB, GiB + 32 * KiB), owner=o))
    codes = {p[0] for p in probs}
    assert codes == {"orphan-pte"} and len(probs) == 8


def test_check_scan_finds_misplaced_pages():
    eng, o = anon_engine()
    populate(eng, o, GiB, GiB + 4096)
    pmc = mmcore.MoveControl(GiB, 2 * GiB, 4096)
    mmcore.move_page_tables(eng, pmc)
    # pretend the VMA did not move: the page sits where rmap says it should not
    probs = mmcore.check_scan(eng, *_vmas((2 * GiB, 2 * GiB + 4096), owner=o))
    assert [p[:2] for p in probs if p[0] != "stale-table"] == [("rmap-index", 2 * GiB)]
    # and the source's PMD and PTE tables, never freed, cover no VMA any more
    assert sorted(p[1] for p in probs if p[0] == "stale-table") == [GiB, GiB]


def test_check_scan_finds_lost_frames():
    eng, o = anon_engine()
    populate(eng, o, GiB, GiB + 4096)
    mmcore.free_pgd_range(eng, GiB, GiB + 4096, 0, 0)  # frees a table that still maps a page
    probs = mmcore.check_scan(eng, *_vmas((GiB, GiB + 4096), owner=o))
    assert "lost-frame" in {p[0] for p in probs}


def test_digest_changes_with_contents_and_mappings():
    eng, o = anon_engine()
    d0 = mmcore.digest(eng)
    populate(eng, o, GiB, GiB + 4096)
    d1 = mmcore.digest(eng)
    mmcore.memset_pages(eng, GiB, GiB + 4096, 7)
    d2 = mmcore.digest(eng)
    assert len({d0, d1, d2}) == 3
    assert mmcore.digest(eng) == d2


def test_engines_reuse_released_memory_and_it_reads_as_zero():
    """Freed engines hand their arrays to the next one (a pool): every
    table row and every frame the new engine hands out must look fresh."""
    import gc
    GiB, MiB = 1 << 30, 1 << 20
    for size in (3 * GiB, 8 * MiB):                 # beyond and within the kept 4 MiB
        eng = mmcore.Engine(mmcore.X86_64)
        o = eng.owner_new("anon")
        mmcore.handle_mm_fault(eng, GiB, GiB + size, vma_start=GiB, vma_end=GiB + size, owner=o,
                               pgoff=GiB >> 12, write=True, fill=0xAB)
        del eng
        gc.collect()
        fresh = mmcore.Engine(mmcore.X86_64)
        o = fresh.owner_new("anon")
        base = 64 * GiB
        # zero-page reads: tables, no frames
        mmcore.handle_mm_fault(fresh, base, base + 4 * GiB, vma_start=base, vma_end=base + 4 * GiB,
                               owner=o, pgoff=base >> 12, write=False)
        tree = mmcore.table_tree(fresh)
        assert tree["fill"][tree["level"] == 3].tolist() == [512] * 2048
        pm = mmcore.pagemap(fresh, base, 1 << 20)
        assert bool(((pm >> np.uint64(63)) == 1).all())             # every page present ...
        assert not (pm & np.uint64((1 << 55) - 1)).any()            # ... as the zero page
        mmcore.handle_mm_fault(fresh, base, base + 2 * MiB, vma_start=base, vma_end=base + 4 * GiB,
                               owner=o, pgoff=base >> 12, write=True)
        assert mmcore.read_bytes(fresh, base + 12345, 4)[0] == b"\0\0\0\0"
