"""Seeing the tables: mm.walk traces (4 and 5 levels), mm.describe(),
`pymm show` and its pictures."""
import json
import sys

import numpy as np
import pytest

import mmcore
import pymm
from pymm import scenarios
from pymm.cli import main
from pymm.describe import describe

from helpers import GiB, MiB, PAGE, PRIV, RW


def populated(mm, size, addr=GiB, **kw):
    a = mm.mmap(addr, size, RW, PRIV | pymm.MAP_FIXED)
    if kw.get("nohuge", True):
        mm.madvise(a, size, pymm.MADV_NOHUGEPAGE)
    mm.memset(a, 0x11, size)
    return a


# -- walk ------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch,levels", [("x86_64", 4), ("x86_64-la57", 5)])
def test_walk_goes_level_by_level_to_the_frame(arch, levels):
    mm = pymm.MM(arch=arch)
    base = (1 << 52) if levels == 5 else GiB
    a = populated(mm, 4 * MiB, base)
    addr = a + 3 * MiB + 5 * PAGE + 0x123
    w = mm.walk(addr)
    g = mm.geometry
    assert [s.level_name for s in w] == list(g.level_names)
    assert [s.index for s in w] == [(addr >> g.shift(lv)) & 511 for lv in range(levels)]
    assert [s.leads_to for s in w] == ["table"] * (levels - 1) + ["frame"]
    # each step's table is the previous step's target
    assert all(w.steps[i + 1].table == w.steps[i].target for i in range(levels - 1))
    assert w.frame == w.steps[-1].target and w.offset == 0x123
    assert mm.engine.frame_info(w.frame)[2] == (addr >> 12)  # page->index: anon linear offset
    text = str(w)
    assert f"{levels} levels" in text and "pte 261 | offset 0x123" in text
    assert f"= frame {w.frame} + offset 0x123" in text
    html = w._repr_html_()
    assert html.count("<tr>") == levels + 1


@pytest.mark.parametrize("arch,levels", [("x86_64", 4), ("x86_64-la57", 5)])
def test_walk_miss_stops_at_the_none_entry(arch, levels):
    mm = pymm.MM(arch=arch)
    base = (1 << 52) if levels == 5 else GiB
    a = populated(mm, 2 * MiB, base)
    w = mm.walk(a + 2 * MiB)                      # same PMD table, next slot: none
    assert not w.hit and w.frame is None
    assert [s.leads_to for s in w][-1] == "miss" and len(w) == levels - 1
    assert "miss" in str(w)


def test_walk_of_a_huge_leaf():
    mm = pymm.MM(thp="always")
    a = mm.mmap(GiB, 4 * MiB, RW, PRIV | pymm.MAP_FIXED)
    mm.write(a + 2 * MiB + 0x5000, b"x")
    w = mm.walk(a + 2 * MiB + 0x5010)
    assert w.steps[-1].leads_to == "huge" and w.leaf_level == "pmd" and "PS" in w.steps[-1].flags
    assert w.frame == (w.steps[-1].entry >> 12 & ((1 << 40) - 1)) + 5
    assert mm.read(a + 2 * MiB + 0x5000, 1) == b"x"


@pytest.mark.parametrize("bad", [-1, 1 << 64, "0x1000", 1.5, None])
def test_walk_rejects_bad_addresses(bad):
    mm = pymm.MM()
    with pytest.raises((TypeError, OverflowError, ValueError)):
        mm.walk(bad)
    with pytest.raises(ValueError):
        mm.walk(1 << 48)


# -- describe --------------------------------------------------------------------------------
def test_describe_merges_leaves_into_ranges_by_size_and_permission():
    mm = pymm.MM(check=True)
    a = populated(mm, 4 * MiB)
    mm.mprotect(a + MiB, MiB, pymm.PROT_READ)
    mm.mprotect(a + 3 * MiB, PAGE, pymm.PROT_NONE)
    d = mm.describe()
    rows = [(r.start - a, r.end - a, r.page, r.perms) for r in d.ranges]
    assert rows == [(0, MiB, "4K", "rw-"), (MiB, 2 * MiB, "4K", "r--"),
                    (2 * MiB, 3 * MiB, "4K", "rw-"), (3 * MiB, 3 * MiB + PAGE, "4K", "---"),
                    (3 * MiB + PAGE, 4 * MiB, "4K", "rw-")]
    assert sum(r.pages for r in d.ranges) == 1024 and d.mapped_bytes == 4 * MiB
    assert not d.orphans and not d.empty_tables and not d.problems
    # every frame of the ranges is the one the walk finds
    for r in d.ranges:
        f0, _ = r.frames[0]
        assert mm.walk(r.start).frame == f0


def test_describe_splits_ranges_at_vma_boundaries_with_identical_ptes():
    mm = pymm.MM(thp="never", check=True)
    a = mm.mmap(GiB, 2 * MiB, RW, PRIV | pymm.MAP_FIXED)
    mm.memset(a, 0x11, 2 * MiB)
    mm.madvise(a + MiB, MiB, pymm.MADV_HUGEPAGE)    # a VMA split invisible in the PTEs
    assert mm.map_count == 2
    runs = mmcore.leaf_runs(mm.engine, a, a + 2 * MiB)
    assert any(s < a + MiB < e for s, e in zip(runs["start"], runs["end"]))  # one run spans both
    d = mm.describe()
    assert [(r.start - a, r.end - a, r.perms) for r in d.ranges] == [(0, MiB, "rw-"), (MiB, 2 * MiB, "rw-")]
    # the frames go on exactly where the cut was made
    f0, n0 = d.ranges[0].frames[-1]
    assert d.ranges[1].frames[0][0] == f0 + n0 == mm.walk(a + MiB).frame


def test_describe_huge_leaves_and_zero_page():
    mm = pymm.MM(thp="always", check=True)
    a = mm.mmap(GiB, 4 * MiB, RW, PRIV | pymm.MAP_FIXED)
    mm.memset(a, 1, 4 * MiB)
    b = mm.mmap(2 * GiB, 8 * PAGE, pymm.PROT_READ, PRIV | pymm.MAP_FIXED)
    mm.madvise(b, 8 * PAGE, pymm.MADV_NOHUGEPAGE)
    for i in range(8):
        mm.read(b + i * PAGE, 1)                     # read faults map the zero page
    d = mm.describe()
    huge = [r for r in d.ranges if r.page == "2M"]
    assert [(r.start, r.end) for r in huge] == [(a, a + 4 * MiB)] and huge[0].level == "pmd"
    zero = [r for r in d.ranges if r.zero_page]
    assert [(r.start, r.end, r.perms) for r in zero] == [(b, b + 8 * PAGE, "r--")]
    assert zero[0].frames_text() == "zero page"


def test_describe_counts_tables_and_fill_exactly():
    mm = pymm.MM()
    populated(mm, 3 * MiB)
    d = mm.describe()
    assert len(d.tables) == mm.engine.n_tables + 1 and d.unreachable_tables == 0
    levels = mm.engine.table_levels()
    for t in d.tables:
        assert levels[t.table] == mm.geometry.level_names.index(t.level)
        assert t.fill == int(np.count_nonzero(mm.engine.table_row(t.table)))
    by = {f.level: (f.tables, f.used) for f in d.fill}
    assert by == {"pgd": (1, 1), "pud": (1, 1), "pmd": (1, 2), "pte": (2, 768)}


def test_stack_shift_first_extent_leaves_the_empty_table_that_warns():
    st = scenarios.stack_shift_stage("5.8")
    st.first_step()
    d = st.mm.describe(check=False)
    (empty,) = d.empty_tables
    assert (empty.level, empty.parent_level, empty.index) == ("pte", "pmd", 509)
    assert empty.base == 0x7fffffa00000 and empty.span == 2 * MiB
    assert "pte table" in str(d) and "pmd[509]" in str(d)
    with pytest.warns(pymm.KernelWarning):
        st2 = scenarios.stack_shift_stage("5.8")
        st2.act()
    assert not st2.mm.describe().empty_tables       # refilled by the fallback move_ptes()
    st3 = scenarios.stack_shift_stage("6.7")
    st3.first_step()
    assert not st3.mm.describe(check=False).empty_tables and st3.mm.stats["pmd_moves"] == 1


@pytest.mark.parametrize("kernel,orphans", [("5.8+linus-v2", 1), ("6.18", 0), ("5.8", 0)])
def test_describe_highlights_orphans(kernel, orphans):
    import warnings
    st = scenarios.kirill_stage(kernel)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st.act()
    d = st.mm.describe()
    assert len(d.orphans) == orphans
    if orphans:
        o = d.orphans[0]
        assert (o.start, o.end, o.vma) == (scenarios.DST_ADDR, scenarios.DST_ADDR + PAGE, None)
        assert "!! ORPHAN" in str(d)
        assert json.loads(d.to_json())["orphans"][0]["start"] == scenarios.DST_ADDR


def test_describe_json_round_trips_and_html_renders():
    mm = pymm.MM()
    populated(mm, MiB)
    d = mm.describe()
    data = json.loads(d.to_json())
    assert data["mapped_bytes"] == MiB and data["ranges"][0]["page"] == "4K"
    assert {f["level"] for f in data["fill"]} == {"pgd", "pud", "pmd", "pte"}
    html = mm._repr_html_()
    assert "<table>" in html and "rw-p" in html and "4K" in html


def test_describe_range_is_validated():
    mm = pymm.MM()
    with pytest.raises(ValueError):
        mm.describe(GiB, 0)
    with pytest.raises(ValueError):
        mm.describe(0, 1 << 60)
    with pytest.raises(TypeError):
        mm.describe("0")
    assert describe(mm).ranges == []


# -- pymm show -------------------------------------------------------------------------------
def test_show_cli_text_json_and_walk(capsys):
    assert main(["show", "--phase", "first"]) == 0
    out = capsys.readouterr().out
    assert "pte table 3 covering 0x7fffffa00000-0x7fffffc00000, at pmd[509]" in out
    assert main(["show", "kirill", "--kernel", "5.8+linus-v2", "--json", "--walk", "0x140000000"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["orphans"][0]["start"] == 0x140000000
    assert data["walks"][0]["steps"][-1]["leads_to"] == "frame"
    assert main(["show", "--kernel", "5.8"]) == 0
    assert "WARNING: CPU: 0 PID: 1 at mm/mremap.c:211" in capsys.readouterr().out


def test_show_demo_writes_pictures(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert main(["show", "--demo", "--out", str(tmp_path)]) == 0
    paths = capsys.readouterr().out.split()
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == ["stack-shift-5.8.png", "stack-shift-6.7.png"]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_pictures_name_where_each_table_came_from():
    from pymm.pictures import provenance, snapshot
    shots = {}
    for k in ("5.8", "6.7"):
        st = scenarios.stack_shift_stage(k)
        d = st.details
        n = (d["old_end"] - d["old_start"]) // PAGE
        first = snapshot(st.mm, st.window, "before", d["old_start"], n)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            st.act()
        after = snapshot(st.mm, st.window, "after", d["old_start"], n)
        shots[k] = [provenance(s, first) for s in after.slots]
    assert shots["5.8"] == ["new", "refilled", "refilled", None]
    assert shots["6.7"] == ["moved", "moved", "new", None]


def test_pictures_without_matplotlib_say_how_to_get_it(monkeypatch):
    from pymm import pictures
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(SystemExit, match=r"pip install 'pymm\[plot\]'"):
        pictures.require_matplotlib()


def test_show_rejects_bad_arguments(capsys):
    for argv in (["show", "nosuch"], ["show", "--kernel", "9.9"], ["show", "--walk", "zz"],
                 ["show", "--demo", "--kernels", "5.8,nope"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    assert "error" in capsys.readouterr().err


def test_walk_names_bit_8_protnone_only_when_not_present():
    mm = pymm.MM()
    a = populated(mm, 2 * PAGE)
    mm.mprotect(a + PAGE, PAGE, pymm.PROT_NONE)
    assert "G" not in mm.walk(a).steps[-1].flags and "P" in mm.walk(a).steps[-1].flags
    last = mm.walk(a + PAGE).steps[-1]
    assert "PROTNONE" in last.flags and "P" not in last.flags and last.leads_to == "frame"
