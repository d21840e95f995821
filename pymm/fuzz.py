"""pymm fuzz: search syscall programs for a kernel's bugs, shrink, reproduce.

Runs random programs (see :mod:`pymm.ops`, :func:`~pymm.ops.random_program`)
on ``pymm.MM(kernel=...)`` and looks for a broken invariant
(:func:`pymm.check`) or a kernel warning.  The search draws programs from a
seeded ``random.Random`` (hypothesis's engine cost ~10 ms a program, far
more than running it); a failing program is then shrunk: calls dropped, then
lengths, values and flags made simpler, while it still fails.  The hit comes
back as that program, printable as a Python script and as a C program to run
on a real machine.

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

from pymm.kernels import Kernel, get_kernel
from pymm.mm import MM
from pymm.ops import LENGTHS, MAP_FLAGS, MREMAP_FLAGS, PMD, PROTS, Op, random_program, run_program, to_c, \
    to_python

DEFAULT_BASE = 0x100000000  # 4 GiB, where Kirill put SRC
CACHE_DIR = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pymm")


class _Interrupt:
    """Ctrl-C for the search: the handler records it, and the next program
    raises KeyboardInterrupt from ordinary code, between two programs."""

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

    @property
    def python(self) -> str:
        return to_python(self.program, self.kernel, self.probes)

    @property
    def c(self) -> str:
        return to_c(self.program, self.probes)

    def summary(self) -> str:
        what = self.problems[:3] + self.warnings[:2]
        return (f"kernel {self.kernel}: {len(self.program)}-call program after {self.examples} "
                f"programs ({self.seconds:.1f} s):\n  " + "\n  ".join(what))


def evaluate(kernel: Kernel, program) -> tuple:
    """Run a program; return (problems, warnings) as strings."""
    import warnings as _w
    mm = MM(kernel=kernel, check=False)
    with _w.catch_warnings():
        _w.simplefilter("ignore")
        run_program(mm, program)
    from pymm.check import check
    problems = check(mm)
    return [str(p) for p in problems], [str(w) for w in mm.warnings], problems


def drop_ops(program: List[Op], is_bug: Callable[[List[Op]], bool]) -> List[Op]:
    """Remove single calls while the program still fails, until no call can go."""
    i = 0
    while i < len(program):
        shorter = program[:i] + program[i + 1:]
        if shorter and is_bug(shorter):
            program = shorter
        else:
            i += 1
    return program


_LENGTH_ARGS = {"mmap": (1,), "munmap": (1,), "mremap": (1, 2), "mprotect": (1,), "madvise": (1,),
                "memset": (2,), "read": (1,)}
_COMMON = {("mmap", 2): PROTS[0], ("mmap", 3): MAP_FLAGS[0], ("mprotect", 2): PROTS[0],
           ("mremap", 3): MREMAP_FLAGS[0]}


def simpler(op: Op):
    """Simpler versions of one call, simplest first: shorter lengths, value
    1, one byte written, the common prot and flags, an address at the start
    of its PMD."""
    args = op.args
    for i in _LENGTH_ARGS.get(op.name, ()):
        for n in (1,) + LENGTHS:
            if n < args[i] and (n > 1 or op.name == "read"):
                yield Op(op.name, args[:i] + (n,) + args[i + 1:])
    if op.name == "memset" and args[1] != 1:
        yield Op(op.name, (args[0], 1, args[2]))
    if op.name == "write" and (len(args[1]) > 1 or args[1] != b"\x01"):
        yield Op(op.name, (args[0], b"\x01"))
    for (name, i), v in _COMMON.items():
        if name == op.name and args[i] != v:
            yield Op(op.name, args[:i] + (v,) + args[i + 1:])
    if args[0] & (PMD - 1):
        yield Op(op.name, (args[0] & ~(PMD - 1),) + args[1:])


def shrink(program: List[Op], is_bug: Callable[[List[Op]], bool], budget: int = 2000) -> List[Op]:
    """Make a failing program as small and plain as it goes while it still
    fails: drop calls, then simplify each call (:func:`simpler`), again
    until nothing changes or ``budget`` more programs were run."""
    tries = [0]

    def still_fails(p):
        tries[0] += 1
        return is_bug(p)

    while True:
        before = program
        program = drop_ops(program, still_fails)
        for i in range(len(program)):
            for op in simpler(program[i]):
                if tries[0] >= budget:
                    return program
                candidate = program[:i] + [op] + program[i + 1:]
                if still_fails(candidate):
                    program = candidate
                    break
        if program == before or tries[0] >= budget:
            return program


def fuzz(kernel="6.18", *, max_examples: int = 50000, seconds: float = 60.0,
         seed: Optional[int] = 0, base: int = DEFAULT_BASE, max_ops: int = 10,
         progress: Optional[Callable[[int, float], None]] = None,
         tally: Optional[dict] = None) -> Optional[Hit]:
    """Search for a program that breaks an invariant or makes ``kernel`` warn.

    Returns the shrunk :class:`Hit`, or None when the budget (``max_examples``
    programs or ``seconds``) ran out.  ``kernel`` may be a name or a Kernel
    of your own; ``seed`` (None: a random one) fixes the programs tried.
    ``tally``, a dict, gets ``programs`` (run so far, shrinking included),
    ``seconds`` and ``found`` (a failing program seen, perhaps not yet
    shrunk) on return and on Ctrl-C (KeyboardInterrupt, raised between two
    programs).
    """
    import random

    k = get_kernel(kernel)
    start = time.monotonic()
    count = [0]
    stop = _Interrupt()
    tally = {} if tally is None else tally
    tally["found"] = False

    def is_bug(program) -> bool:
        if stop.hit:
            raise KeyboardInterrupt
        count[0] += 1
        if progress is not None and count[0] % 100 == 0:
            progress(count[0], time.monotonic() - start)
        problems, warns, _ = evaluate(k, program)
        return bool(problems or warns)

    try:
        with stop:
            rng = random.Random(seed)
            while count[0] < max_examples and (count[0] & 15 or time.monotonic() - start < seconds):
                program = random_program(rng, base=base, slots=8, max_ops=max_ops, big=True)
                if is_bug(program):
                    tally["found"] = True
                    return _hit(k, shrink(program, is_bug), count[0], start)
        if stop.hit:
            raise KeyboardInterrupt
        return None
    finally:
        tally.update(programs=count[0], seconds=time.monotonic() - start)


def _hit(k, program: List[Op], count: int, start: float) -> Hit:
    problems, warns, raw = evaluate(k, program)
    probes = sorted({p.address for p in raw
                     if p.address and p.invariant in ("orphan-pte", "rmap-index", "rmap-owner")})[:4]
    return Hit(k.source or k.name, list(program), problems, warns, probes, count,
               time.monotonic() - start)
