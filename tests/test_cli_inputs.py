"""Issue 14's defects, one test each: every command, kernel and wrong input
ends cleanly with one line, and output paths are checked before the work."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pymm.cli import main
from pymm.kernels import KERNELS
from tests.helpers import run_cli as run




# -- 1. exec's ENOMEM is a result --------------------------------------------------------
@pytest.mark.parametrize("kernel", ["5.8+linus-v2", "5.8+linus-v4"])
def test_show_reports_exec_enomem_with_the_tables(kernel, capsys):
    code, out, err = run(["show", "--kernel", kernel], capsys)
    assert code == 0 and "Traceback" not in err
    assert "exec fails here: shift_arg_pages() returned ENOMEM" in out
    assert "page tables" in out and "[stack]" in out
    code, out, _ = run(["show", "--kernel", kernel, "--json"], capsys)
    assert code == 0 and "ENOMEM" in json.loads(out)["error"]


def test_show_demo_draws_a_failing_exec(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code, out, _ = run(["show", "--demo", "--kernels", "4.19,5.8+linus-v2", "--out", str(tmp_path)],
                       capsys)
    assert code == 0
    assert sorted(os.listdir(tmp_path)) == ["stack-shift-4.19.png", "stack-shift-5.8+linus-v2.png"]


# -- 2. a walk outside the address space -------------------------------------------------
@pytest.mark.parametrize("addr", ["0x1000000000000000", "-1"])
def test_walk_of_a_bad_address_is_one_line_naming_the_range(addr, capsys):
    code, out, err = run(["show", "--walk", addr], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "0x0-0xffffffffffff" in err and "x86_64" in err


# -- 3. output paths ------------------------------------------------------------------------
def test_bad_output_paths_fail_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cases = [["bench", "--size", "8M", "--reps", "1", "--no-host", "--json", f"{blocker}/b.json"],
             ["bench", "--size", "8M", "--reps", "1", "--no-host", "--plot", f"{blocker}/p.png"],
             ["fuzz", "--seconds", "60", "--save", f"{blocker}/x"],
             ["show", "--demo", "--out", str(blocker)]]
    for argv in cases:
        t0 = time.monotonic()
        code, out, err = run(argv, capsys)
        assert code == 2 and out == "" and err.count("\n") == 1, argv
        assert str(blocker) in err and time.monotonic() - t0 < 30, argv


def test_missing_output_folders_are_created(tmp_path, capsys):
    target = tmp_path / "new" / "dir" / "b.json"
    code, out, _ = run(["bench", "--size", "8M", "--reps", "1", "--no-host", "--json", str(target)],
                       capsys)
    assert code == 0 and json.loads(target.read_text())["size"] == 8 << 20


def test_bench_json_dash_writes_stdout(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["bench", "--size", "8M", "--reps", "1", "--no-host", "--json", "-"], capsys)
    assert code == 0 and not os.path.exists("-")
    assert json.loads(out)["size"] == 8 << 20 and "per-PTE" in err


# -- 4. fuzz ---------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["--ops", "0"], ["--ops", "-3"], ["--seconds", "0"], ["--seconds", "-1"],
                                  ["--seconds", "nan"], ["--max-examples", "0"],
                                  ["--max-examples", "-1"]])
def test_fuzz_refuses_empty_budgets(argv, capsys):
    code, out, err = run(["fuzz"] + argv, capsys)
    assert code == 2 and "Traceback" not in err and argv[0] in err


def test_fuzz_summary_counts_programs_run_and_leaves_no_hypothesis_folder(tmp_path, capsys,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(["fuzz", "--kernel", "6.18", "--max-examples", "30", "--seconds", "20"], capsys)
    assert code == 0
    assert "30 programs run in" in out and "budget" not in out.splitlines()[-1]
    assert not os.path.exists(tmp_path / ".hypothesis")


def test_fuzz_ctrl_c_exits_130_and_says_how_far_it_got(tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "pymm", "fuzz", "--seconds", "60"], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().startswith("fuzzing kernel")
    time.sleep(1.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, (out, err)
    assert "interrupted:" in err and "programs run in" in err and "Traceback" not in err


# -- 8. labels from the kernel's policy ----------------------------------------------------
def test_empty_table_labels_follow_the_kernel(capsys):
    _, out, _ = run(["show", "--kernel", "4.19", "--phase", "first"], capsys)
    assert "onto one warns" not in out and "PTE by PTE" in out
    _, out, _ = run(["show", "--kernel", "5.8", "--phase", "first"], capsys)
    assert "a PMD move onto one warns" in out
    from pymm.pictures import borders
    b419 = borders(KERNELS["4.19"])
    assert "moved" not in b419 and "onto it warns" not in b419["empty"][3]
    assert "warns" in borders(KERNELS["5.8"])["empty"][3]


# -- 9. --demo with options it would ignore -------------------------------------------------
@pytest.mark.parametrize("argv", [["--json"], ["kirill"], ["--walk", "0x7fffffa00000"],
                                  ["--kernel", "6.18"], ["--phase", "first"]])
def test_demo_refuses_options_it_would_ignore(argv, capsys, tmp_path):
    code, out, err = run(["show", "--demo", "--out", str(tmp_path / "pics")] + argv, capsys)
    assert code == 2 and err.count("\n") == 1 and "--demo" in err and os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv", [["--kernels", "4.19"], ["--out", "pics"], ["--format", "svg"]])
def test_demo_options_without_demo_are_refused(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["show"] + argv, capsys)
    assert code == 2 and argv[0] in err and "--demo" in err and os.listdir(tmp_path) == []


def test_demo_defaults_draw_5_8_and_6_7_here(capsys, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(["show", "--demo"], capsys)
    assert code == 0 and sorted(os.listdir(tmp_path)) == ["stack-shift-5.8.png", "stack-shift-6.7.png"]


# -- 10. bench edge cases ----------------------------------------------------------------------
@pytest.mark.parametrize("size,why", [("1e400G", "64-bit"), ("-1G", "positive"), ("1T", "at most"),
                                      ("3M", "multiple of 2 MiB"), ("0", "positive")])
def test_bench_refuses_bad_sizes_with_a_reason(size, why, capsys):
    code, out, err = run(["bench", "--size", size, "--no-host"], capsys)
    assert code == 2 and why in err and "Traceback" not in err


def test_bench_labels_pud_aligned_below_a_pud(capsys):
    code, out, _ = run(["bench", "--size", "256M", "--reps", "1", "--no-host"], capsys)
    row = next(line for line in out.splitlines() if line.startswith("PUD-aligned"))
    assert code == 0 and "no PUD to move" in row and "128 PMDs" in row


def test_bench_help_says_what_plot_costs(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "minutes" in capsys.readouterr().out


def test_sizes_plot_says_why_kernel_curves_stop_and_what_pmd_vs_pud_means():
    from pymm.bench import plot_notes
    stop, pud = plot_notes(2 << 30)
    assert stop.startswith("kernel curves stop at 2 GiB")
    assert "PUD" in pud and "syscall layer" in pud


# -- 12. package hygiene --------------------------------------------------------------------------
def test_package_files_license_typing_changelog():
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    lic = (root / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in lic and "Version 2, June 1991" in lic
    assert "END OF TERMS AND CONDITIONS" in lic             # the full text, not a stub
    toml = (root / "pyproject.toml").read_text()
    assert 'license = { text = "GPL-2.0-only" }' in toml and "authors" in toml
    assert (root / "pymm" / "py.typed").exists() and 'pymm = ["py.typed"]' in toml
    assert 'mmcore = ["*.c", "*.html"]' in toml.split("[tool.setuptools.exclude-package-data]")[1]
    assert "## [Unreleased]" in (root / "CHANGELOG.md").read_text()


def test_public_docstrings_and_hints():
    import inspect
    import pymm
    for name in ("reset_stats", "map_count"):
        assert "Example" in inspect.getdoc(getattr(pymm.MM, name)), name
    hints = inspect.signature(pymm.MM.mremap).parameters
    assert all(p.annotation is not inspect.Parameter.empty for n, p in hints.items() if n != "self")


def test_walk_prints_a_flag_legend(capsys):
    _, out, _ = run(["show", "--walk", "0x7fffffa01234"], capsys)
    legend = out.split("flags:")[1]
    for flag in ("P present", "RW", "US", "PS", "SD soft-dirty", "NX"):
        assert flag in legend


# -- found by a newcomer's trial ---------------------------------------------------------------
def test_pagemap_of_a_negative_length_is_refused():
    import pymm
    mm = pymm.MM()
    a = mm.mmap(0, 4096, pymm.PROT_READ | pymm.PROT_WRITE, pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
    with pytest.raises(ValueError, match="wraps"):
        mm.pagemap(a, -1)
    assert len(mm.pagemap(a, 4096)) == 1


def test_bench_below_a_pud_prints_no_pud_ratio(capsys, monkeypatch):
    from pymm import host
    if not host.available():
        pytest.skip("no host kernel to compare with: " + host.unavailable_reason())
    code, out, _ = run(["bench", "--size", "64M", "--reps", "1"], capsys)
    assert code == 0
    kernel_line = next(line for line in out.splitlines() if line.strip().startswith("this kernel, per-PTE"))
    assert "PUD" not in kernel_line and "then" not in kernel_line


def test_an_existing_file_pymm_did_not_write_is_never_overwritten(tmp_path, capsys):
    """A newcomer's `pymm bench --json /etc/passwd` (as root) replaced the
    file.  Now only a previous output of the same kind is overwritten."""
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0:root:/root:/bin/bash\n")
    for argv in (["bench", "--size", "8M", "--reps", "1", "--no-host", "--json", str(victim)],
                 ["bench", "--size", "8M", "--reps", "1", "--no-host", "--plot", str(victim)]):
        code, out, err = run(argv, capsys)
        assert code == 2 and out == "" and err.count("\n") == 1 and "exists and is not" in err, argv
    assert victim.read_text() == "root:x:0:0:root:/root:/bin/bash\n"
    again = tmp_path / "b.json"
    for _ in range(2):                                   # its own output: overwritten
        code, _, _ = run(["bench", "--size", "8M", "--reps", "1", "--no-host", "--json", str(again)], capsys)
        assert code == 0 and json.loads(again.read_text())["size"] == 8 << 20
