"""Smoke test of the command line (issue 14): every subcommand, under every
catalogued kernel, with its main options, and a set of wrong inputs.  Each
run must end with exit status 0, 1 or 2 and no traceback.

Runs in-process through pymm.cli.main() with small sizes and budgets, so the
whole module stays well under a minute on 2 cores.
"""
import contextlib
import io
import traceback

import pytest

from pymm.cli import main
from pymm.kernels import KERNELS


def run(argv):
    """(exit status, stdout + stderr) of ``pymm argv``; an exception that
    escapes main() is reported as a traceback, which the tests refuse."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            code = None
            err.write(traceback.format_exc())
    return code, out.getvalue() + err.getvalue()


def ok(argv, allowed=(0, 1, 2)):
    code, text = run(argv)
    assert code in allowed and "Traceback" not in text, f"pymm {' '.join(argv)} -> {code}\n{text[-2000:]}"
    return code, text


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_show_under_every_kernel(kernel):
    for scenario in ("stack-shift", "kirill"):
        for phase in ("before", "first", "after"):
            ok(["show", scenario, "--kernel", kernel, "--phase", phase])
        ok(["show", scenario, "--kernel", kernel, "--json"])
    code, text = ok(["show", "--kernel", kernel, "--all", "--walk", "0x7fffffa01234",
                     "--walk", "0x7ffffffff000"], allowed=(0,))
    assert "walk of 0x7fffffa01234" in text and "flags:" in text


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_fuzz_under_every_kernel(kernel, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, text = ok(["fuzz", "--kernel", kernel, "--max-examples", "20", "--seconds", "1",
                     "--ops", "3", "--seed", "1", "--save", str(tmp_path / "out" / "hit")],
                    allowed=(0, 1))
    assert "programs run in" in text or "FOUND" in text


def test_show_demo_under_every_kernel(tmp_path):
    pytest.importorskip("matplotlib")
    code, text = ok(["show", "--demo", "--kernels", ",".join(KERNELS), "--out", str(tmp_path),
                     "--format", "svg"], allowed=(0,))
    assert len(list(tmp_path.iterdir())) == len(KERNELS)


def test_the_other_subcommands(tmp_path):
    ok([], allowed=(0,))
    ok(["kernels"], allowed=(0,))
    ok(["demo", "--no-host", "--execs", "8"], allowed=(0,))
    code, text = ok(["bench", "--size", "8M", "--reps", "1", "--no-host", "--json",
                     str(tmp_path / "b.json")], allowed=(0,))
    assert (tmp_path / "b.json").exists()
    for cmd in ("kernels", "demo", "fuzz", "bench", "show"):
        ok([cmd, "--help"], allowed=(0,))


WRONG = [
    ["nonsense"], ["show", "--kernel", "9.99"], ["show", "--kernel", "nomodule:attr"],
    ["show", "--kernel", "pymm:MM"], ["show", "--phase", "middle"], ["show", "--walk", "xyz"],
    ["show", "--walk", "-1"], ["show", "--walk", "0x1000000000000000"], ["show", "nosuchscenario"],
    ["show", "--kernels", "5.8,9.99", "--demo"], ["show", "--demo", "--json"],
    ["show", "--demo", "--walk", "0x1000"], ["show", "kirill", "--demo"],
    ["show", "--format", "gif", "--demo"], ["show", "--demo", "--out", "/etc/passwd"],
    ["show", "--kernels", "6.18"], ["show", "--out", "pics"],
    ["fuzz", "--kernel", "9.99"], ["fuzz", "--ops", "0"], ["fuzz", "--ops", "-3"],
    ["fuzz", "--seconds", "0"], ["fuzz", "--seconds", "-1"], ["fuzz", "--seconds", "nan"],
    ["fuzz", "--seconds", "inf"], ["fuzz", "--max-examples", "0"], ["fuzz", "--max-examples", "x"],
    ["fuzz", "--seed", "x"], ["fuzz", "--save", "/etc/passwd/x"],
    ["bench", "--size", "1e400G"], ["bench", "--size", "-1G"], ["bench", "--size", "1T"],
    ["bench", "--size", "0"], ["bench", "--size", "3M"], ["bench", "--size", "lots"],
    ["bench", "--reps", "0"], ["bench", "--reps", "-2"], ["bench", "--json", "/etc/passwd/x.json"],
    ["bench", "--plot", "/etc/passwd/p.png"], ["demo", "--execs", "0"], ["demo", "--execs", "x"],
    ["kernels", "--bogus"],
]


@pytest.mark.parametrize("argv", WRONG, ids=[" ".join(a) for a in WRONG])
def test_wrong_inputs_end_with_one_clean_error(argv):
    code, text = ok(argv, allowed=(2,))
    assert text.strip(), argv
