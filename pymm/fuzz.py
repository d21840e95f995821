"""pymm fuzz: search syscall programs for a kernel's bugs, shrink, reproduce.

Runs random programs (see :mod:`pymm.ops`) on ``pymm.MM(kernel=...)`` and
looks for a broken invariant (:func:`pymm.check`) or a kernel warning.  The
search and the shrinking are hypothesis's (:func:`hypothesis.find`); the hit
comes back as the smallest program found, printable as a Python script and as
a C program to run on a real machine.

Example::

    >>> from pymm.fuzz import fuzz
    >>> fuzz("6.18", max_examples=50, seconds=30) is None     # 6.18: nothing to find
    True

    ``fuzz("5.8+linus-v2", seconds=60)`` finds Linus's v2 overcopy in about
    a minute; then ``print(hit.python)`` replays it in pymm and
    ``print(hit.c)`` is a C program for a real kernel (compile with gcc).
"""
from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from pymm.arches import get_arch
from pymm.kernels import Kernel, get_kernel
from pymm.mm import MM
from pymm.ops import Op, programs, run_program, to_c, to_python

DEFAULT_BASE = 0x100000000  # 4 GiB, where Kirill put SRC
CACHE_DIR = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pymm")


def _hypothesis_storage() -> None:
    """Keep hypothesis's files in ~/.cache/pymm/hypothesis, not in a
    ``.hypothesis/`` folder of the user's current directory (the search
    itself keeps no example database: database=None)."""
    os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(CACHE_DIR, "hypothesis"))


class _Interrupt:
    """Ctrl-C for the search: the handler records it, and the next program
    raises KeyboardInterrupt from ordinary code (raised inside one of
    hypothesis's gc callbacks it would be ignored, and the run go on)."""

    def __init__(self):
        self.hit = False
        self.old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        self.hit = True

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)


@dataclass
class Hit:
    """What the fuzzer found: the shrunk program and why it is a bug."""

    kernel: str
    program: List[Op]
    problems: List[str]
    warnings: List[str]
    probes: List[int] = field(default_factory=list)
    examples: int = 0
    seconds: float = 0.0
    arch: str = "x86_64"

    @property
    def python(self) -> str:
        return to_python(self.program, self.kernel, self.probes, arch=self.arch)

    @property
    def c(self) -> str:
        return to_c(self.program, self.probes)

    def summary(self) -> str:
        what = self.problems[:3] + self.warnings[:2]
        return (f"kernel {self.kernel}: {len(self.program)}-call program after {self.examples} "
                f"programs ({self.seconds:.1f} s):\n  " + "\n  ".join(what))


def evaluate(kernel: Kernel, program, arch: str = "x86_64") -> tuple:
    """Run a program; return (problems, warnings) as strings."""
    import warnings as _w
    mm = MM(kernel=kernel, check=False, arch=arch)
    with _w.catch_warnings():
        _w.simplefilter("ignore")
        run_program(mm, program)
    from pymm.check import check
    problems = check(mm)
    return [str(p) for p in problems], [str(w) for w in mm.warnings], problems


def drop_ops(program: List[Op], is_bug: Callable[[List[Op]], bool]) -> List[Op]:
    """Finish the shrink: remove single calls while the program still
    fails, until no call can go (hypothesis shrinks values well, but a call
    whose address later calls were derived from rarely goes by itself)."""
    i = 0
    while i < len(program):
        shorter = program[:i] + program[i + 1:]
        if shorter and is_bug(shorter):
            program = shorter
        else:
            i += 1
    return program


def fuzz(kernel="6.18", *, max_examples: int = 50000, seconds: float = 60.0,
         seed: Optional[int] = 0, base: int = DEFAULT_BASE, max_ops: int = 10,
         progress: Optional[Callable[[int, float], None]] = None,
         tally: Optional[dict] = None, arch: str = "x86_64") -> Optional[Hit]:
    """Search for a program that breaks an invariant or makes ``kernel`` warn.

    Returns the shrunk :class:`Hit`, or None when the budget (``max_examples``
    programs or ``seconds``) ran out.  ``kernel`` may be a name or a Kernel
    of your own.  The search runs in batches of hypothesis.find() with
    successive seeds, so the time budget is checked between batches.
    ``tally``, a dict, gets ``programs`` (run so far), ``seconds`` and
    ``found`` (a failing program seen, perhaps not yet shrunk) on return and
    on Ctrl-C (KeyboardInterrupt, raised between two programs).
    ``arch`` runs the programs on another arch (below 3 GiB on the 32-bit
    ones: ``base`` then moves to 1 GiB).
    """
    _hypothesis_storage()
    k = get_kernel(kernel)
    if get_arch(arch).task_size <= 1 << 32 and base == DEFAULT_BASE:
        base = 1 << 30
    start = time.monotonic()
    count = [0]
    strategy = programs(base=base, slots=8, max_ops=max_ops, big=True)

    stop = _Interrupt()
    tally = {} if tally is None else tally
    tally["found"] = False

    def is_bug(program) -> bool:
        if stop.hit:
            raise KeyboardInterrupt
        count[0] += 1
        if progress is not None and count[0] % 100 == 0:
            progress(count[0], time.monotonic() - start)
        problems, warns, _ = evaluate(k, program, arch)
        bug = bool(problems or warns)
        tally["found"] = tally["found"] or bug
        return bug

    try:
        with stop:
            hit = _search(k, strategy, is_bug, count, start, max_examples, seconds, seed, arch)
        if stop.hit:
            raise KeyboardInterrupt
        return hit
    finally:
        tally.update(programs=count[0], seconds=time.monotonic() - start)


def _search(k, strategy, is_bug, count, start, max_examples, seconds, seed, arch="x86_64") -> Optional[Hit]:
    import random

    from hypothesis import HealthCheck, Phase, find, settings
    from hypothesis.errors import NoSuchExample

    batch, rnd = 500, random.Random(seed)
    while count[0] < max_examples and time.monotonic() - start < seconds:
        cfg = settings(max_examples=min(batch, max_examples - count[0]), deadline=None,
                       database=None, phases=[Phase.generate, Phase.shrink],
                       suppress_health_check=list(HealthCheck))
        try:
            program = find(strategy, is_bug, settings=cfg, random=random.Random(rnd.getrandbits(64)))
        except NoSuchExample:
            continue
        program = drop_ops(list(program), is_bug)
        problems, warns, raw = evaluate(k, program, arch)
        probes = sorted({p.address for p in raw
                         if p.address and p.invariant in ("orphan-pte", "rmap-index", "rmap-owner")})[:4]
        return Hit(k.source or k.name, list(program), problems, warns, probes, count[0],
                   time.monotonic() - start, arch)
    return None
