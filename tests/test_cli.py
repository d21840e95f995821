"""The command line: help, kernels, fuzz (finds linus-v2, nothing on 6.18,
works with a user's kernel), bench (a small run), python -m pymm."""
import contextlib
import io
import json
import runpy
import subprocess
import sys
import textwrap

import pytest

import pymm
from pymm.cli import build_parser, main
from pymm.demo import run_c_on_this_kernel
from pymm.kernels import KERNELS

SUBCOMMANDS = ("kernels", "demo", "fuzz", "bench", "show")


def run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_explains_itself_with_examples(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and all(c in text for c in SUBCOMMANDS)
    for cmd in SUBCOMMANDS:
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert "example" in capsys.readouterr().out, cmd


def test_no_command_prints_help(capsys):
    code, out, _ = run([], capsys)
    assert code == 0 and "usage: pymm" in out


def test_kernels_lists_the_catalogue(capsys):
    code, out, _ = run(["kernels"], capsys)
    assert code == 0
    names = [line.split()[0] for line in out.splitlines() if line and not line.startswith(" ")]
    assert names == list(KERNELS)
    assert "PTE/PMD/PUD" in out and "4.19           PTE " in out


def test_python_dash_m_pymm_runs():
    r = subprocess.run([sys.executable, "-m", "pymm", "kernels"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "6.18" in r.stdout


# -- fuzz ------------------------------------------------------------------------------------
def test_fuzz_finds_linus_v2_and_prints_two_reproducers(capsys, tmp_path):
    code, out, _ = run(["fuzz", "--kernel", "5.8+linus-v2", "--seconds", "50",
                        "--save", str(tmp_path / "repro")], capsys)
    assert code == 1 and "FOUND" in out and "orphan-pte" in out
    py = (tmp_path / "repro.py").read_text()
    c = (tmp_path / "repro.c").read_text()
    assert py in out and c in out
    # the Python reproducer replays the bug in pymm
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        runpy.run_path(str(tmp_path / "repro.py"))
    assert "orphan-pte" in buf.getvalue()
    # ... and on 6.18 the same program is clean
    fixed = py.replace("kernel='5.8+linus-v2'", "kernel='6.18'")
    assert fixed != py
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(fixed, "repro-6.18.py", "exec"), {})
    assert "orphan-pte" not in buf.getvalue() and "SIGSEGV" in buf.getvalue()
    # the C reproducer compiles and runs on this machine's kernel, which agrees with 6.18
    if pymm.host.available():
        got = run_c_on_this_kernel(c)
        if got is not None:
            assert "error" not in got, got
            assert got["returncode"] == 0
            probes = [line for line in got["stdout"].splitlines() if line.startswith("read ")]
            assert probes and all(line.endswith("signal 11") for line in probes)


def test_fuzz_finds_nothing_on_6_18_within_a_small_budget(capsys):
    code, out, _ = run(["fuzz", "--kernel", "6.18", "--max-examples", "400", "--seconds", "20"], capsys)
    assert code == 0 and "no invariant violation or warning found under 6.18" in out


def test_fuzz_takes_a_users_own_kernel(capsys, tmp_path, monkeypatch):
    (tmp_path / "mykernels.py").write_text(textwrap.dedent('''
        import pymm

        def align_always(move):
            """Linus's v2 idea without its VMA checks: align both ends down."""
            off = move.old_addr & (move.pmd_size - 1)
            if off and off == move.new_addr & (move.pmd_size - 1):
                move.old_addr -= off
                move.new_addr -= off
                move.len += off

        mine = pymm.KERNELS["5.8"].replace(name="mine", align=align_always,
                                           align_before_old_end=True)
        not_a_kernel = 42
    '''))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, _ = run(["fuzz", "--kernel", "mykernels:mine", "--seconds", "50",
                        "--save", str(tmp_path / "out" / "mine")], capsys)
    assert code == 1 and "kernel mykernels:mine" in out and "orphan-pte" in out
    # the reproducer names the kernel as pymm.MM(kernel=...) accepts it, and runs from the
    # folder that holds mykernels.py (issue 14, item 5)
    repro = tmp_path / "out" / "mine.py"
    assert "pymm.MM(kernel='mykernels:mine')" in repro.read_text()
    replay = subprocess.run([sys.executable, str(repro)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert replay.returncode == 0 and "orphan-pte" in replay.stdout, replay.stderr
    assert pymm.MM(kernel="mykernels:mine").kernel.align is not None
    for bad in ("mykernels:not_a_kernel", "mykernels:nope", "nomodule:x", "7.0"):
        with pytest.raises(SystemExit) as e:
            main(["fuzz", "--kernel", bad])
        assert e.value.code == 2
    assert "not a pymm.Kernel" in capsys.readouterr().err


# -- bench -----------------------------------------------------------------------------------
def test_bench_small_run_prints_the_table_and_writes_json(capsys, tmp_path):
    path = tmp_path / "bench.json"
    code, out, _ = run(["bench", "--size", "64M", "--reps", "1", "--no-host", "--json", str(path)], capsys)
    assert code == 0
    assert "per-PTE" in out and "PMD" in out and "PUD" in out
    data = json.loads(path.read_text())
    assert data and json.dumps(data)                       # machine-readable, non-empty


def test_bench_rejects_bad_sizes(capsys):
    for argv in (["bench", "--size", "lots"], ["bench", "--reps", "x"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2


def test_parser_builds_without_optional_extras():
    assert build_parser().prog == "pymm"


def test_progress_draws_on_a_terminal_and_stays_quiet_when_piped():
    from pymm.progress import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        with Progress("bench", total=4, stream=stream) as p:
            p.step("per-PTE")
            p.step("PMD-aligned")
    assert "bench [######..................] 1/4" in tty.getvalue()
    assert "bench [############............] 2/4" in tty.getvalue() and "PMD-aligned" in tty.getvalue()
    assert tty.getvalue().endswith("\r")               # the line is cleared at the end
    assert pipe.getvalue() == ""
