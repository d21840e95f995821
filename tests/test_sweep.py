"""pymm sweep (issue 16, item 3): the matrix on a process pool matches the
plain loop cell by cell, the paths are the kernels', the table, Parquet and
picture are written, and every wrong option is one line."""
import csv
import os

import pytest

from pymm.pool import InProcess
from pymm.sweep import CASES, COLUMNS, place, sweep, write_csv, write_parquet
from tests.helpers import run_cli as run

MATRIX = dict(kernels=["4.19", "5.8", "5.8+linus-v2", "6.18"], arches=["x86_64", "arm64-4k", "i386-pae"],
              cases=list(CASES), sizes=[8 << 20, 1 << 30], thp=[False, True])


@pytest.fixture(scope="module")
def serial():
    return sweep(**MATRIX, executor=InProcess())


def cells(rows):
    return {(r["kernel"], r["arch"], r["case"], r["size"], r["thp"]): r for r in rows}


def test_a_process_pool_sweep_matches_the_plain_loop_cell_by_cell(serial):
    pooled = sweep(**MATRIX, workers=2)
    assert len(pooled) == len(serial) == 4 * 3 * 10 * 2 * 2
    assert [r["kernel"] for r in pooled] == [r["kernel"] for r in serial]      # the matrix's order
    for a, b in zip(serial, pooled):
        assert {k: v for k, v in a.items() if k != "ns"} == {k: v for k, v in b.items() if k != "ns"}
    assert all(r["ns"] > 0 for r in pooled if r["status"] == "ok")


def test_the_paths_are_the_kernels(serial):
    c = cells(serial)
    path = lambda k, a, case, size=1 << 30, thp=False: c[(k, a, case, size, thp)]["path"]
    assert path("6.18", "x86_64", "PUD/PUD") == "PUD"                 # HAVE_MOVE_PUD, 5.11+
    assert path("5.8", "x86_64", "PUD/PUD") == "PMD"
    assert path("4.19", "x86_64", "PMD/PMD") == "PTE"                 # x86's HAVE_MOVE_PMD is 5.0
    assert path("5.8", "arm64-4k", "PMD/PMD") == "PTE"                # arm64 moves PMDs from 5.10
    assert path("6.18", "arm64-4k", "PMD/PMD") == "PMD"
    assert path("6.18", "x86_64", "PMD/PMD", thp=True) == "huge PMD"
    assert path("6.18", "x86_64", "PTE/PTE") == "PTE" and c[("6.18", "x86_64", "PTE/PTE", 1 << 30, False)][
        "pte_moves"] == (1 << 30) >> 12
    assert path("6.18", "x86_64", "half-PMD/half-PMD") == "PMD+PTE"
    assert c[("6.18", "i386-pae", "PUD/PUD", 1 << 30, False)]["status"].startswith("skipped")
    assert all(r["check"] == "ok" for r in serial if r["status"] == "ok")


def test_cells_sit_at_their_alignment_and_not_twice_it():
    for case, (s_unit, d_unit) in CASES.items():
        src, dst = place(case, 8 << 20, "x86_64")
        for addr, unit in ((src, s_unit), (dst, d_unit)):
            al = {"pte": 4096, "half-pmd": 1 << 20, "pmd": 2 << 20, "pud": 1 << 30}[unit]
            assert addr % al == 0 and addr % (2 * al) == al, (case, hex(addr))
        assert abs(dst - src) >= 8 << 20


def test_the_table_round_trips_through_csv_and_parquet(serial, tmp_path):
    write_csv(serial, tmp_path / "t.csv")
    with open(tmp_path / "t.csv") as f:
        back = list(csv.DictReader(f))
    assert list(back[0]) == list(COLUMNS) and len(back) == len(serial)
    assert [r["path"] for r in back] == [r["path"] for r in serial]
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    assert write_parquet(serial, tmp_path / "t.parquet")
    assert pq.read_table(tmp_path / "t.parquet").to_pylist() == serial




def test_pymm_sweep_prints_the_paths_and_writes_the_table_and_picture(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out_dir = tmp_path / "out"
    code, out, err = run(["sweep", "--kernels", "5.8,6.18", "--cases", "PMD/PMD,PUD/PUD", "--sizes", "1G",
                          "--thp", "off", "--workers", "2", "--out", str(out_dir)], capsys)
    assert code == 0 and "Traceback" not in err
    assert "sweeping 4 cells" in out and "on 2 local worker processes" in out
    line = next(x for x in out.splitlines() if "PUD/PUD" in x)
    assert line.split()[-2:] == ["PMD", "PUD"]
    assert {"sweep.csv", "sweep.png"} <= set(os.listdir(out_dir))
    assert (out_dir / "sweep.png").stat().st_size > 10_000
    with open(out_dir / "sweep.csv") as f:
        assert len(list(csv.DictReader(f))) == 4


@pytest.mark.parametrize("argv,words", [
    (["--kernels", "4.19,,6.18"], "an empty item"),
    (["--kernels", "9.9"], "unknown kernel '9.9'"),
    (["--arches", "sparc"], "unknown arch 'sparc'"),
    (["--cases", "PMD/XYZ"], "unknown case 'PMD/XYZ'"),
    (["--sizes", "0"], "a size is positive"),
    (["--sizes", "-1G"], "a size is positive"),
    (["--sizes", "12K", "--arches", "arm64-64k"], "not a multiple of the page size (64 KiB on arm64-64k)"),
    (["--sizes", "1T"], "at most 64 GiB"),
    (["--thp", "maybe"], "invalid choice"),
    (["--reps", "0"], "at least 1"),
    (["--workers", "0"], "at least 1"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "give one"),
])
def test_wrong_sweep_options_are_one_line(argv, words, tmp_path, capsys):
    code, out, err = run(["sweep", "--out", str(tmp_path / "o"), *argv], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert words in err.strip().splitlines()[-1]


def test_an_out_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("x")
    code, out, err = run(["sweep", "--out", str(f)], capsys)
    assert code == 2 and out == "" and "is not a folder" in err
