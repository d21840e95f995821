"""pymm demo: the July 2020 move_normal_pmd() thread, told by running it.

Each step names the kernel that ran and what happened, and prints the
kernel-style WARNING line where one fires.  Kirill's C program is shown as
the reproducer and, where gcc exists, compiled and run on this machine's
kernel beside pymm's 6.18.  It ends with a table of kernels x scenarios.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
from typing import Dict, List, Optional, TextIO

from pymm import scenarios as S
from pymm.arches import get_arch
from pymm.kernels import KERNELS
from pymm.progress import Progress

WRAP = 78


def _say(out: TextIO, text: str = "", indent: int = 0) -> None:
    pad = " " * indent
    for para in text.split("\n"):
        if not para.strip():
            out.write("\n")
            continue
        out.write(textwrap.fill(para, WRAP, initial_indent=pad, subsequent_indent=pad) + "\n")


def _head(out: TextIO, n: int, title: str) -> None:
    out.write(f"\n{'=' * WRAP}\n{n}. {title}\n{'=' * WRAP}\n")


def run_c_on_this_kernel(source: str, timeout: float = 10.0) -> Optional[Dict[str, object]]:
    """Compile ``source`` with gcc and run it here.  None if there is no
    compiler; otherwise its output, exit status and the signal that killed it."""
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if cc is None or sys.platform != "linux":
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = os.path.join(tmp, "kirill.c"), os.path.join(tmp, "kirill")
        with open(src, "w") as f:
            f.write(source)
        r = subprocess.run([cc, "-O0", "-o", exe, src], capture_output=True, text=True)
        if r.returncode:
            return {"error": r.stderr.strip()}
        r = subprocess.run([exe], capture_output=True, text=True, timeout=timeout)
        sig = -r.returncode if r.returncode < 0 else 0
        return {"stdout": r.stdout.strip(), "returncode": r.returncode,
                "signal": {11: "SIGSEGV", 7: "SIGBUS"}.get(sig, str(sig) if sig else "")}


def _warn_lines(out: TextIO, res) -> None:
    for w in res.warnings[:3]:
        out.write(f"    {w.split('  (')[0]}\n")
    if len(res.warnings) > 3:
        out.write(f"    ... and {len(res.warnings) - 3} more\n")


def demo(out: TextIO = sys.stdout, *, run_host: bool = True, execs: int = 2048, arch: str = "x86_64") -> int:
    """Tell the story; returns the exit status (0).  ``arch="i386-pae"`` (or
    ``"i386"``) replays it on the geometry of the boards it was reported on."""
    results: Dict[str, Dict[str, object]] = {k: {} for k in KERNELS}
    names = list(KERNELS)
    with Progress("demo", total=len(names) * 5) as prog:
        for k in names:
            results[k]["shift"] = S.stack_shift_warning(k, arch=arch)
            results[k]["kirill"] = S.kirill_test_case(k, arch=arch)
            results[k]["moveup"] = S.kirill_move_up(k, arch=arch)
            results[k]["ptenone"] = S.pte_none_regression(k, arch=arch)
            prog.step(k, advance=4)
            results[k]["naresh"] = S.naresh_runs(k, execs=execs, arch=arch)
            prog.step(f"{k}: {execs} execs")
    loops = {k: results[k]["naresh"] for k in ("5.8", "5.8+linus-v3", "5.8+linus-v4")}

    out.write("pymm demo: the move_normal_pmd() WARNING thread of July 2020, replayed on\n"
              "pymm's page-table engine under each kernel the thread produced.\n")
    if arch != "x86_64":
        out.write(f"arch: {get_arch(arch).describe()}\n")

    _head(out, 1, "The WARNING: 5.8, exec shifting the stack over itself")
    r = results["5.8"]["shift"]
    d = r.details
    _say(out, f"exec (shift_arg_pages) moves the stack VMA [{d['old_start']:#x}, {d['old_end']:#x}) "
              f"down by {d['shift'] >> 20} MiB.  The ranges overlap; the start is off a PMD boundary, so "
              "the first extent moves PTE by PTE and leaves an emptied page table in the PMD the "
              "next, PMD-sized extent moves onto.")
    out.write(f"  [5.8] {r.outcome}\n")
    _warn_lines(out, r)
    _say(out, "The kernel falls back to moving PTEs one by one: the warning is harmless, as "
              "Kirill says.", 2)

    _head(out, 2, "Kirill's fix (PATCHv2): no move_normal_pmd() on overlapping ranges")
    r = results["5.8+kirill"]["shift"]
    out.write(f"  [5.8+kirill] {r.outcome}\n")

    _head(out, 3, "Linus: align the range instead (\"IT IS ENTIRELY UNTESTED\")")
    r = results["5.8+linus-v2"]["shift"]
    out.write(f"  [5.8+linus-v2] stack shift: {r.outcome}\n")
    _say(out, "The warning is gone and the PMDs move whole, but try_to_align_range() runs after "
              "old_end is fixed: the bigger len never reaches the loop, it only inflates the "
              "return value, and exec's `length != move_page_tables()` turns that into -ENOMEM.", 2)
    _say(out, "\nKirill's reproducer, from the thread:")
    out.write(textwrap.indent(S.KIRILL_C, "    "))
    for k in ("5.8+linus-v2", "6.18"):
        r = results[k]["kirill"]
        out.write(f"  [{k}] {r.outcome}\n")
        for p in r.problems[:2]:
            out.write(f"      check: {p}\n")
    if run_host:
        host = run_c_on_this_kernel(S.KIRILL_C)
        here = f"Linux {platform.release()}"
        if host is None:
            out.write(f"  [{here}] no C compiler here: not run\n")
        elif "error" in host:
            out.write(f"  [{here}] could not compile: {host['error']}\n")
        else:
            if host["signal"]:
                what = f"killed by {host['signal']} reading DST[0], before printf ran"
            else:
                what = f"printed {host['stdout']!r}"
            agree = (host["signal"] == "SIGSEGV") == isinstance(results["6.18"]["kirill"].details["DST[0]"], str)
            out.write(f"  [this machine, {here}] {what}  "
                      f"({'agrees with' if agree else 'DISAGREES with'} pymm's 6.18)\n")

    _head(out, 4, "Kirill's move-up: what aligning the start does to an upward move")
    for k in ("5.8", "5.8+linus-v2"):
        out.write(f"  [{k}] {results[k]['moveup'].outcome}\n")
    r = S.kirill_move_up("5.8+kirill", aligned=True, arch=arch)
    out.write(f"  [5.8+kirill, aligned parameters] {r.outcome}\n")

    _head(out, 5, "Naresh's runs: v3 and v4 on the boards, an LTP-like loop of execs")
    for k in ("5.8+linus-v3", "5.8+linus-v4"):
        r = results[k]["shift"]
        out.write(f"  [{k}] stack shift: {r.outcome}\n")
        _warn_lines(out, r)
    for k, loop in loops.items():
        out.write(f"  {loop}\n")
    _say(out, "v3 and v4 never align the start of the stack move (old_addr > vm_start once the "
              "VMA was expanded down), so the warning stays, about once in 512 execs as on the "
              "boards.  On x86-64 v4 also inflates exec's length (the stack ends off a PMD "
              "boundary); on i386, where Naresh ran, STACK_TOP is PMD-aligned.", 2)

    _head(out, 6, "Kirill's regression concern: pte_none() slots on small mremaps")
    for k in ("5.8", "5.8+linus-v4", "6.18"):
        out.write(f"  [{k}] {results[k]['ptenone'].outcome}\n")

    _head(out, 7, "Where it ended: WARN_ON_ONCE (5.9), PUD moves (5.11), realignment (6.7)")
    for k in ("5.9", "5.11", "6.7", "6.18"):
        out.write(f"  [{k}] stack shift: {results[k]['shift'].outcome}\n")

    _head(out, 8, "Every kernel, every scenario")
    out.write(summary_table(results))
    return 0


def _cell_shift(r) -> str:
    if r.error:
        return "WARN+ENOMEM" if r.warned else "ENOMEM"
    return "WARN" if r.warned else ("ok/PMD" if r.stats.get("pmd_moves") else "ok/PTE")


def _cell_kirill(r) -> str:
    return "ORPHAN PTE" if r.orphans else "segv (ok)"


def _cell_moveup(r) -> str:
    return ("ok" if r.data_intact else "CORRUPT") + (" WARN" if r.warned else "")


def _cell_naresh(loop) -> str:
    return loop.rate + (f", ENOMEM x{loop.failed}" if loop.failed else "")


def summary_table(results) -> str:
    cols = [("stack shift", "shift", _cell_shift), ("Kirill's test", "kirill", _cell_kirill),
            ("move-up", "moveup", _cell_moveup),
            ("pte_none x", "ptenone", lambda r: f"{r.details['pte_slots_visited'] // r.details['pages']}x"),
            ("Naresh loop: warns", "naresh", _cell_naresh)]
    widths = [max(13, len(c[0])) for c in cols]
    lines = ["kernel".ljust(14) + "".join(c[0].ljust(w + 2) for c, w in zip(cols, widths))]
    lines.append("-" * len(lines[0]))
    for k, row in results.items():
        lines.append(k.ljust(14) + "".join(fn(row[key]).ljust(w + 2) for (_, key, fn), w in zip(cols, widths)))
    return "\n".join(lines) + "\n"
