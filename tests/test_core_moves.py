"""mmcore: the move_page_tables() loop, case by case and against a reference."""
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import mmcore
from mmcore import X86_64, X86_64_LA57, Engine, MoveControl, move_page_tables

from ref_mremap import RefMM, count_tables, export_tree

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
PAGE = 4096


def populated(ranges, geometry=X86_64, thp=False, fill=True):
    """An engine with each [start, end) of ``ranges`` faulted in (one anon owner)."""
    eng = Engine(geometry)
    o = eng.owner_new("anon")
    for start, end in ranges:
        mmcore.handle_mm_fault(eng, start, end, vma_start=start, vma_end=end, owner=o,
                               pgoff=start >> geometry.page_shift, write=True, thp=thp)
        if fill:
            mmcore.stamp_pages(eng, start, end)
    eng.reset_stats()
    return eng


def stamps(eng, start, npages):
    return [int(t) & ((1 << 62) - 1) for t in mmcore.page_tags(eng, start, npages)]


def run(eng, old, new, length, **policy):
    pmc = MoveControl(old, new, length, **policy)
    assert move_page_tables(eng, pmc)
    return pmc


# -- one case per path ---------------------------------------------------------------
def test_per_pte_move_moves_every_page_and_leaves_the_tables():
    eng = populated([(GiB, GiB + 4 * MiB)])
    before = stamps(eng, GiB, 1024)
    run(eng, GiB, 3 * GiB + PAGE, 4 * MiB)  # destination not mutually aligned
    s = eng.stats()
    assert (s["pte_moves"], s["pmd_moves"], s["pud_moves"]) == (1024, 0, 0)
    assert stamps(eng, 3 * GiB + PAGE, 1024) == before
    assert mmcore.translate(eng, GiB) == -1
    assert len(mmcore.walk(eng, GiB)) == 4  # move_ptes() leaves the emptied PTE tables behind


def test_pmd_aligned_move_hands_over_whole_pte_tables():
    eng = populated([(GiB, GiB + 8 * MiB)])
    before = stamps(eng, GiB, 2048)
    run(eng, GiB, 3 * GiB + 2 * MiB, 8 * MiB)
    s = eng.stats()
    assert (s["pte_moves"], s["pmd_moves"]) == (0, 4)
    assert s["pgtables_allocated"] == 1  # one PMD table at the destination, no PTE tables
    assert stamps(eng, 3 * GiB + 2 * MiB, 2048) == before


def test_pud_aligned_move_hands_over_a_whole_pmd_table():
    eng = populated([(GiB, 2 * GiB)], fill=False)
    run(eng, GiB, 5 * GiB, GiB)
    s = eng.stats()
    assert (s["pud_moves"], s["pmd_moves"], s["pte_moves"]) == (1, 0, 0)
    assert mmcore.translate(eng, 5 * GiB + 12345) >= 0 and mmcore.translate(eng, GiB) == -1


def test_without_move_pud_a_pud_aligned_move_uses_pmds():
    eng = populated([(GiB, GiB + 64 * MiB)], fill=False)
    run(eng, GiB, 5 * GiB, GiB, move_pud=False, pud_step=mmcore.PUD_STEP_NONE)
    assert (eng.stats()["pud_moves"], eng.stats()["pmd_moves"]) == (0, 32)


def test_4_19_policy_moves_only_ptes():
    eng = populated([(GiB, GiB + 8 * MiB)], fill=False)
    run(eng, GiB, 3 * GiB, 8 * MiB, move_pmd=False, move_pud=False, pud_step=0)
    s = eng.stats()
    assert (s["pte_moves"], s["pmd_moves"], s["pud_moves"]) == (2048, 0, 0)


def test_thp_leaf_moves_whole_when_both_sides_align():
    eng = populated([(GiB, GiB + 4 * MiB)], thp=True)
    before = stamps(eng, GiB, 1024)
    run(eng, GiB, 3 * GiB, 4 * MiB)
    s = eng.stats()
    assert (s["huge_pmd_moves"], s["huge_pmd_splits"], s["pte_moves"]) == (2, 0, 0)
    assert stamps(eng, 3 * GiB, 1024) == before
    assert mmcore.walk(eng, 3 * GiB)[-1][3] & (1 << 7)


def test_thp_leaf_is_split_when_the_destination_does_not_align():
    eng = populated([(GiB, GiB + 2 * MiB)], thp=True)
    before = stamps(eng, GiB, 512)
    run(eng, GiB, 3 * GiB + PAGE, 2 * MiB)
    s = eng.stats()
    assert (s["huge_pmd_moves"], s["huge_pmd_splits"], s["pte_moves"]) == (0, 1, 512)
    assert stamps(eng, 3 * GiB + PAGE, 512) == before


def test_overlapping_move_down_within_one_table_keeps_data():
    eng = populated([(GiB + 16 * PAGE, GiB + 48 * PAGE)])
    before = stamps(eng, GiB + 16 * PAGE, 32)
    run(eng, GiB + 16 * PAGE, GiB + 8 * PAGE, 32 * PAGE)  # down by 8 pages, overlapping
    assert stamps(eng, GiB + 8 * PAGE, 32) == before
    assert all(mmcore.translate(eng, GiB + i * PAGE) == -1 for i in range(40, 48))


def test_overlapping_move_up_corrupts_as_the_kernel_loop_would():
    # Kirill's point in the thread: iterating forward cannot move up over itself.
    eng = populated([(GiB, GiB + 32 * PAGE)])
    before = stamps(eng, GiB, 32)
    run(eng, GiB, GiB + 8 * PAGE, 32 * PAGE)
    after = stamps(eng, GiB + 8 * PAGE, 32)
    # Each forward step overwrites a source slot not moved yet: pages 0-7 hop
    # along by 8 slots until they land at the end, and pages 8-31 are lost.
    none = (1 << 62) - 1
    assert after[:24] == [none] * 24 and after[24:] == before[:8]
    assert eng.n_frames == 32  # the 24 lost frames are still allocated, mapped by nothing


def test_move_into_an_established_pmd_warns_and_falls_back_losing_nothing():
    # The WARN case: the destination PMD already holds an (empty) PTE table.
    eng = populated([(GiB, GiB + 4 * MiB), (3 * GiB + 4 * MiB, 3 * GiB + 4 * MiB + PAGE)])
    mmcore.zap_page_range(eng, 3 * GiB + 4 * MiB, 3 * GiB + 4 * MiB + PAGE)
    before = stamps(eng, GiB, 1024)
    # destination PMD #2 of the move is the empty table left at 3G+4M
    run(eng, GiB, 3 * GiB + 2 * MiB, 4 * MiB, pmd_warn=mmcore.WARN_ON)
    s = eng.stats()
    assert s["warnings"] == 1 and s["pmd_moves"] == 1 and s["pte_moves"] == 512
    assert eng.take_warnings() == [(0, GiB + 2 * MiB, 3 * GiB + 4 * MiB)]
    assert stamps(eng, 3 * GiB + 2 * MiB, 1024) == before


def test_warn_on_once_fires_once_per_engine():
    eng = populated([(GiB, GiB + 8 * MiB)])
    for dst in (3 * GiB, 5 * GiB):  # make two established empty destination tables
        mmcore.handle_mm_fault(eng, dst + 2 * MiB, dst + 2 * MiB + PAGE, vma_start=dst,
                               vma_end=dst + 8 * MiB, owner=1, pgoff=dst >> 12, write=True)
        mmcore.zap_page_range(eng, dst + 2 * MiB, dst + 2 * MiB + PAGE)
    run(eng, GiB, 3 * GiB, 4 * MiB, pmd_warn=mmcore.WARN_ON_ONCE)
    run(eng, GiB + 4 * MiB, 5 * GiB, 4 * MiB, pmd_warn=mmcore.WARN_ON_ONCE)
    assert eng.stats()["warnings"] == 1


def test_five_level_moves():
    eng = populated([(GiB, GiB + 4 * MiB)], geometry=X86_64_LA57)
    before = stamps(eng, GiB, 1024)
    run(eng, GiB, (1 << 48) + GiB, 4 * MiB)
    assert eng.stats()["pmd_moves"] == 2
    assert stamps(eng, (1 << 48) + GiB, 1024) == before


def test_raw_move_onto_a_huge_leaf_is_a_kernel_bug():
    eng = populated([(GiB, GiB + 4 * MiB)], thp=True)
    with pytest.raises(mmcore.KernelBUG):
        move_page_tables(eng, MoveControl(GiB, GiB + 2 * MiB, PAGE))


def test_move_control_validation():
    eng = populated([])
    with pytest.raises(ValueError):
        move_page_tables(eng, MoveControl(GiB + 1, 2 * GiB, PAGE))
    with pytest.raises(ValueError):
        move_page_tables(eng, MoveControl(GiB, 1 << 48, GiB))
    with pytest.raises(OverflowError):
        MoveControl(2**64 - PAGE, 0, 2 * PAGE)
    with pytest.raises(ValueError):
        MoveControl(0, 0, 0, pud_step=7)
    with pytest.raises(TypeError):
        move_page_tables(eng, None)


# -- the Cython loop against the pure-Python reference ---------------------------------
W = 64 * GiB  # a window spanning several PUDs and PGD-level tables


@st.composite
def scenarios(draw):
    nranges = draw(st.integers(1, 4))
    ranges = []
    for _ in range(nranges):
        start = W + draw(st.one_of(st.integers(0, 8 * 512 * 8).map(lambda k: k * PAGE * 64),
                                   st.integers(0, 7).map(lambda k: k * GiB)))
        npages = draw(st.sampled_from([1, 3, 64, 511, 512, 513, 1024, 1500]))
        ranges.append((start, start + npages * PAGE))
    thp = draw(st.booleans())
    src = draw(st.sampled_from([r[0] for r in ranges]))
    src += draw(st.sampled_from([0, PAGE, -PAGE, 2 * MiB, -2 * MiB, 511 * PAGE]))
    src = max(src, W)
    length = draw(st.sampled_from([PAGE, 17 * PAGE, 2 * MiB, 2 * MiB + PAGE, 6 * MiB, GiB, GiB + 2 * MiB]))
    how = draw(st.sampled_from(["same-pmd-offset", "same-pud-offset", "any", "overlap-down", "overlap-up"]))
    if how == "same-pmd-offset":
        new = W + 32 * GiB + draw(st.integers(0, 64)) * 2 * MiB + (src % (2 * MiB))
    elif how == "same-pud-offset":
        new = W + 32 * GiB + draw(st.integers(0, 4)) * GiB + (src % GiB)
    elif how == "any":
        new = W + 32 * GiB + draw(st.integers(0, 4096)) * PAGE
    elif how == "overlap-down":
        new = src - draw(st.sampled_from([PAGE, 2 * MiB, 2 * MiB + PAGE, 4 * MiB]))
    else:
        new = src + draw(st.sampled_from([PAGE, 2 * MiB, 4 * MiB]))
    if draw(st.integers(0, 5)) == 0:  # steer some cases onto whole PUDs
        src = draw(st.sampled_from([r[0] for r in ranges])) & ~(GiB - 1)
        length = draw(st.sampled_from([GiB, 2 * GiB, GiB + 2 * MiB]))
        new = W + 32 * GiB + draw(st.integers(0, 3)) * GiB + draw(st.sampled_from([0, 0, 2 * MiB]))
    assume(new >= W // 2)
    policy = draw(st.sampled_from([
        dict(move_pmd=False, move_pud=False, pud_step=0, pmd_warn=0),   # 4.19
        dict(move_pmd=True, move_pud=False, pud_step=0, pmd_warn=1),    # 5.8
        dict(move_pmd=True, move_pud=True, pud_step=1, pmd_warn=2),     # 5.11
        dict(move_pmd=True, move_pud=True, pud_step=2, pmd_warn=2),     # 6.x
    ]))
    return ranges, thp, src, new, length, policy


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_cython_loop_matches_the_reference(case):
    ranges, thp, src, new, length, policy = case
    eng = populated(ranges, thp=thp, fill=False)
    ref = RefMM(X86_64, export_tree(eng), eng.zero_frames[1])
    tables_before = count_tables(ref.root) + eng.deposited_tables    # one deposit per THP
    pmc = MoveControl(src, new, length, **policy)
    try:
        assert move_page_tables(eng, pmc)
    except mmcore.KernelBUG:
        assume(False)  # a raw move onto a THP: the kernel BUGs, nothing to compare
    ref_end = ref.move_page_tables(src, new, length, **policy)
    assert pmc.old_addr == ref_end
    assert export_tree(eng) == ref.root
    s = eng.stats()
    for k, v in ref.stats.items():
        assert s[k] == v, k
    assert eng.n_tables == tables_before + ref.stats["pgtables_allocated"]
    assert s["warnings"] == len(ref.warnings)
