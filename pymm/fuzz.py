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
from typing import Callable, List, Optional, Tuple

from pymm.arches import get_arch
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
    arch: str = "x86_64"
    broke: Tuple[str, ...] = ()     # what broke: invariant names and warning sites, sorted


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
         tally: Optional[dict] = None, arch: str = "x86_64") -> Optional[Hit]:
    """Search for a program that breaks an invariant or makes ``kernel`` warn.

    Returns the shrunk :class:`Hit`, or None when the budget (``max_examples``
    programs or ``seconds``) ran out.  ``kernel`` may be a name or a Kernel
    of your own; ``seed`` (None: a random one) fixes the programs tried.
    ``tally``, a dict, gets ``programs`` (run so far, shrinking included),
    ``seconds`` and ``found`` (a failing program seen, perhaps not yet
    shrunk) on return and on Ctrl-C (KeyboardInterrupt, raised between two
    programs).
    ``arch`` runs the programs on another arch (below 3 GiB on the 32-bit
    ones: ``base`` then moves to 1 GiB).
    """
    import random

    k = get_kernel(kernel)
    if get_arch(arch).task_size <= 1 << 32 and base == DEFAULT_BASE:
        base = 1 << 30
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
        problems, warns, _ = evaluate(k, program, arch)
        return bool(problems or warns)

    try:
        with stop:
            rng = random.Random(seed)
            while count[0] < max_examples and (count[0] & 15 or time.monotonic() - start < seconds):
                program = random_program(rng, base=base, slots=8, max_ops=max_ops, big=True)
                if is_bug(program):
                    tally["found"] = True
                    return _hit(k, shrink(program, is_bug), count[0], start, arch)
        if stop.hit:
            raise KeyboardInterrupt
        return None
    finally:
        tally.update(programs=count[0], seconds=time.monotonic() - start)


def _hit(k, program: List[Op], count: int, start: float, arch: str = "x86_64") -> Hit:
    problems, warns, raw = evaluate(k, program, arch)
    probes = sorted({p.address for p in raw
                     if p.address and p.invariant in ("orphan-pte", "rmap-index", "rmap-owner")})[:4]
    return Hit(k.source or k.name, list(program), problems, warns, probes, count,
               time.monotonic() - start, arch, broke=_broke(k, program, arch, raw))


def _broke(k, program: List[Op], arch: str, raw) -> Tuple[str, ...]:
    """What broke, without addresses: the invariants (``orphan-pte``) and
    the warning sites (``WARN move_normal_pmd mm/mremap.c:211``)."""
    import warnings as _w
    mm = MM(kernel=k, check=False, arch=arch)
    with _w.catch_warnings():
        _w.simplefilter("ignore")
        run_program(mm, program)
    sites = {f"WARN {w.function} {w.location}" for w in mm.warnings}
    return tuple(sorted({p.invariant for p in raw} | sites))


# -- campaigns: many seeded searches on any concurrent.futures.Executor ---------------------------
TASK_PROGRAMS = 4000          # programs a task searches: about a second on 6.18


@dataclass
class TaskResult:
    """What one task sent back: its seed, programs run, time, the shrunk hit (or None) and where it ran."""

    seed: int
    programs: int
    seconds: float
    hit: Optional[Hit]
    worker: str


@dataclass
class Finding:
    """One bug of a campaign: its signature (kernel, arch, what broke), the
    smallest shrunk program found for it, and every task seed that found it."""

    signature: Tuple[str, str, Tuple[str, ...]]
    hit: Hit
    seeds: List[int]
    programs: int                 # distinct shrunk programs found for it
    replay_args: dict

    @property
    def replay_call(self) -> str:
        """The call that finds it again on one machine."""
        a = self.replay_args
        extra = "".join(f", {k}={a[k]!r}" for k in ("arch", "max_ops", "base")
                        if a[k] != {"arch": "x86_64", "max_ops": 10, "base": DEFAULT_BASE}[k])
        return (f"pymm.fuzz.fuzz({a['kernel']!r}, seed={a['seed']}, max_examples={a['max_examples']}, "
                f"seconds=float('inf'){extra})")

    def replay(self) -> Optional[Hit]:
        """Run the first seed that found it again, here: the same hit."""
        return fuzz(seconds=float("inf"), **self.replay_args)


@dataclass
class Campaign:
    """A campaign's result: deduplicated findings, totals, and the task
    seeds that were re-run or lost (a lost seed replays like a finding's)."""

    kernel: str
    arch: str
    seed: int
    findings: List[Finding]
    programs: int
    seconds: float
    tasks: int
    reruns: List[int]
    lost: List[Tuple[int, str]]
    workers: List[str]
    busy: float = 0.0             # seconds the tasks ran, summed over workers

    @property
    def rate(self) -> float:
        """Programs per second, over the campaign's wall time."""
        return self.programs / self.seconds if self.seconds else 0.0


def kernel_spec(kernel) -> str:
    """The name a worker loads ``kernel`` by: a catalogue name or
    ``module:attribute`` (a Kernel object does not cross processes)."""
    from pymm.kernels import KERNELS
    k = get_kernel(kernel)
    if k.source:
        return k.source
    if KERNELS.get(k.name) is k:
        return k.name
    raise ValueError(f"kernel {k.name!r} has no name a worker can load: put it in a module and pass "
                     "'module:attribute'")


def task_seed(seed: int, index: int) -> int:
    """Task ``index`` of campaign ``seed``: campaign 0's tasks are seeds 0, 1, 2, ..."""
    return (seed << 32) + index


def campaign_task(spec: str, seed: int, programs: int, arch: str = "x86_64", max_ops: int = 10,
                  base: int = DEFAULT_BASE, attempt: int = 0) -> TaskResult:
    """One task of a campaign, as a worker runs it: search ``programs``
    programs from ``seed`` and shrink what it finds, here.  Its result
    depends only on its arguments (``attempt`` is only there to make a
    re-run a new call)."""
    import socket
    tally: dict = {}
    hit = fuzz(spec, max_examples=programs, seconds=float("inf"), seed=seed, base=base,
               max_ops=max_ops, tally=tally, arch=arch)
    return TaskResult(seed, tally["programs"], tally["seconds"], hit, f"{socket.gethostname()}:{os.getpid()}")


def campaign(kernel, *, seconds: float, executor=None, workers: Optional[int] = None,
             seed: Optional[int] = None, tasks: Optional[int] = None, task_programs: int = TASK_PROGRAMS,
             max_ops: int = 10, arch: str = "x86_64", base: int = DEFAULT_BASE, retries: int = 1,
             progress: Optional[Callable[[dict], None]] = None) -> Campaign:
    """A fuzz campaign: seeded searches of ``task_programs`` programs each on
    ``executor`` (any ``concurrent.futures.Executor``; None: a local process
    pool of ``workers`` processes; ``client.get_executor()`` of a Dask
    ``distributed.Client`` runs it on a cluster), until ``seconds`` have
    passed (the tasks then running finish) or ``tasks`` tasks ran.

    Each task shrinks what it finds where it found it; the campaign returns
    the findings deduplicated by signature: the kernel, the arch and what
    broke (invariants, warning sites), with the smallest shrunk program and
    every seed that found it.  A task's result depends only on its seed
    (:func:`task_seed`; ``seed`` None picks one): ``finding.replay()``
    finds it again on one machine.  A task whose worker died is re-run
    ``retries`` times, then listed in ``lost``.  ``progress(stats)`` gets
    ``programs``, ``seconds``, ``rate``, ``findings``, ``tasks`` and the
    ``worker`` of the last result, in the client, after each task.  The
    result's ``busy`` sums the tasks' own times: ``busy / seconds`` is how
    many workers were searching, on average.

        >>> from pymm.fuzz import campaign
        >>> c = campaign("5.8+linus-v2", seconds=30, workers=1, seed=0, tasks=1, task_programs=4000)
        >>> [f.signature for f in c.findings]
        [('5.8+linus-v2', 'x86_64', ('orphan-pte',))]
    """
    import random
    from pymm.pool import run_tasks
    spec = kernel_spec(kernel)
    get_arch(arch)
    if not (isinstance(seconds, (int, float)) and seconds > 0):
        raise ValueError(f"seconds must be above 0, not {seconds!r}")
    for name, v in (("tasks", tasks), ("task_programs", task_programs), ("workers", workers)):
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ValueError(f"{name} must be a whole number of at least 1, not {v!r}")
    if get_arch(arch).task_size <= 1 << 32 and base == DEFAULT_BASE:
        base = 1 << 30
    seed = random.SystemRandom().randrange(1 << 31) if seed is None else seed
    start = time.monotonic()
    results: List[TaskResult] = []
    reruns: List[int] = []
    found: dict = {}

    def on_result(key, r: TaskResult):
        results.append(r)
        if r.hit is not None:
            found.setdefault(_signature(r.hit), []).append(r)
        if progress is not None:
            elapsed = time.monotonic() - start
            n = sum(x.programs for x in results)
            progress({"programs": n, "seconds": elapsed, "rate": n / elapsed if elapsed else 0.0,
                      "findings": len(found), "tasks": len(results), "worker": r.worker})

    def items():
        i = 0
        while tasks is None or i < tasks:
            s = task_seed(seed, i)
            yield s, (spec, s, task_programs, arch, max_ops, base)
            i += 1

    lost = run_tasks(campaign_task, items(), executor=executor, workers=workers,
                     deadline=start + seconds, retries=retries, on_result=on_result, attempt_kw="attempt",
                     on_retry=lambda key, why: reruns.append(key))
    args = dict(kernel=spec, max_examples=task_programs, max_ops=max_ops, arch=arch, base=base)
    findings = [_finding(sig, rs, args) for sig, rs in found.items()]
    findings.sort(key=lambda f: (min(f.seeds), f.signature))
    return Campaign(spec, arch, seed, findings, sum(r.programs for r in results), time.monotonic() - start,
                    len(results), sorted(set(reruns)), sorted(lost), sorted({r.worker for r in results}),
                    sum(r.seconds for r in results))


def _signature(hit: Hit) -> Tuple[str, str, Tuple[str, ...]]:
    """Findings are the same bug when kernel, arch and what broke agree (as
    syzkaller groups crashes by title): seeds shrink one bug to programs
    that differ in addresses and in how they fault pages in."""
    return (hit.kernel, hit.arch, hit.broke)


def _finding(sig, results: List[TaskResult], args: dict) -> Finding:
    """The findings of one signature: the smallest shrunk program (fewest
    calls, then the lowest seed) stands for them all."""
    results = sorted(results, key=lambda r: (len(r.hit.program), r.seed))
    best = results[0]
    distinct = {tuple(r.hit.program) for r in results}
    return Finding(sig, best.hit, sorted(r.seed for r in results), len(distinct), dict(args, seed=best.seed))
