"""pymm sweep: which path a move takes, and what it costs, across kernels x
arches x alignment cases x sizes x THP.

Each cell maps a region at the case's source alignment, populates it (with
``MADV_HUGEPAGE`` first when THP is on), moves it with ``mremap(MREMAP_MAYMOVE
| MREMAP_FIXED)`` to the case's destination alignment, and records the path
counters of that call, the warnings, the checker's verdict and the call's
time (median of ``reps`` runs, each on a fresh MM).  The cases are those of
``pymm bench`` and of the kernel's ``mremap_test.c``: a source aligned to a
PTE, half a PMD, a PMD or a PUD (and not to twice that), a destination
likewise, in the arch's own page, PMD and PUD sizes.

The result is a tidy table, one row per cell (:data:`COLUMNS`), written as
CSV (and Parquet when pyarrow is installed), and a picture of the path taken
and its cost (:func:`pymm.pictures.sweep_picture`).  Cells run in tasks on
any ``concurrent.futures.Executor``: a local process pool, a Dask cluster,
or :class:`pymm.pool.InProcess` for a plain loop here.

Example::

    >>> from pymm.pool import InProcess
    >>> from pymm.sweep import sweep
    >>> rows = sweep(kernels=["4.19", "6.18"], cases=["PMD/PMD"], sizes=[8 << 20], thp=[False],
    ...              executor=InProcess())
    >>> [(r["kernel"], r["path"], r["pmd_moves"], r["check"]) for r in rows]
    [('4.19', 'PTE', 0, 'ok'), ('6.18', 'PMD', 4, 'ok')]
"""
from __future__ import annotations

import csv
import errno
import statistics
import time
import warnings as _warnings
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from pymm import constants as C
from pymm.arches import get_arch
from pymm.kernels import KERNELS
from pymm.mm import MM

# case: (source alignment, destination alignment), in units of the arch's geometry: the
# alignment pairs of mremap_test.c (its "1MB" is half an x86 PMD), in its order; pymm bench's
# per-PTE, PMD-aligned and PUD-aligned cases are PTE/PTE, PMD/PMD and PUD/PUD
CASES: Dict[str, tuple] = {
    "PTE/PTE": ("pte", "pte"),
    "half-PMD/PTE": ("half-pmd", "pte"),
    "half-PMD/half-PMD": ("half-pmd", "half-pmd"),
    "PMD/PTE": ("pmd", "pte"),
    "PMD/half-PMD": ("pmd", "half-pmd"),
    "PMD/PMD": ("pmd", "pmd"),
    "PUD/PTE": ("pud", "pte"),
    "PUD/half-PMD": ("pud", "half-pmd"),
    "PUD/PMD": ("pud", "pmd"),
    "PUD/PUD": ("pud", "pud"),
}
DEFAULT_KERNELS = tuple(KERNELS)
DEFAULT_SIZES = (8 << 20, 1 << 30)
PATH_KEYS = ("pud_moves", "pmd_moves", "huge_pmd_moves", "pte_moves")
COUNTERS = PATH_KEYS + ("pgtables_allocated", "pgtables_freed", "tlb_flushes", "huge_pmd_splits")
COLUMNS = ("kernel", "arch", "case", "src_align", "dst_align", "size", "thp", "status", "src", "dst",
           "path") + COUNTERS + ("warnings", "warning_sites", "check", "ns")
MOVE = C.MREMAP_MAYMOVE | C.MREMAP_FIXED
PRIV = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED
RW = C.PROT_READ | C.PROT_WRITE


def alignment(unit: str, arch: str) -> int:
    """Bytes of ``pte``/``half-pmd``/``pmd``/``pud`` on ``arch``.

    >>> alignment("half-pmd", "x86_64"), alignment("pud", "arm64-16k") >> 30
    (1048576, 64)
    """
    g = get_arch(arch).geometry
    return {"pte": g.page_size, "half-pmd": g.pmd_size // 2, "pmd": g.pmd_size, "pud": g.pud_size}[unit]


def _first(at_least: int, align: int) -> int:
    """The first address >= at_least aligned to ``align`` but not to 2 * align."""
    k = -(-(at_least - align) // (2 * align))
    return max(k, 0) * 2 * align + align


def place(case: str, size: int, arch: str = "x86_64") -> Optional[tuple]:
    """(source, destination) of a cell, each aligned to its case's alignment
    and not to twice that, apart; a destination aligned to a PTE only also
    sits at another offset in its PMD than the source (else the two would
    be mutually PMD-aligned after the first PMD).  None when the arch's user
    space has no room for both (a PUD/PUD pair in i386-pae's 3 GiB).

    >>> [hex(a) for a in place("PMD/half-PMD", 8 << 20)]
    ['0x10000200000', '0x10000f00000']
    """
    a = get_arch(arch)
    s_al, d_al = (alignment(u, arch) for u in CASES[case])
    pmd = a.geometry.pmd_size
    floor = 64 << 20 if a.task_size <= 1 << 32 else 1 << 40
    src = _first(floor, s_al)
    if src + size > a.task_size:
        return None
    for dst in (_first(src + size + 2 * pmd, d_al),                    # above the source, else below
                (src - 2 * pmd - size - d_al) // (2 * d_al) * 2 * d_al + d_al):
        if 2 * d_al < pmd and (dst - src) % pmd == 0:
            dst += 2 * d_al          # a PTE-aligned destination, not at the source's offset in its PMD
        if floor <= dst and dst + size <= a.task_size and (dst + size <= src or dst >= src + size):
            return src, dst
    return None


def path_label(stats: Dict[str, int]) -> str:
    """The path a move took: PUD, PMD, huge PMD, PTE, or a mix like ``PMD+PTE``.

    >>> path_label({"pud_moves": 0, "pmd_moves": 3, "huge_pmd_moves": 0, "pte_moves": 256})
    'PMD+PTE'
    """
    names = {"pud_moves": "PUD", "pmd_moves": "PMD", "huge_pmd_moves": "huge PMD", "pte_moves": "PTE"}
    return "+".join(names[k] for k in PATH_KEYS if stats.get(k)) or "none"


def run_cell(kernel: str, arch: str, case: str, size: int, thp: bool, reps: int = 1) -> dict:
    """One cell: map, populate, move, check; a row of :data:`COLUMNS`."""
    from pymm.check import check
    row = dict(kernel=kernel, arch=arch, case=case, src_align=alignment(CASES[case][0], arch),
               dst_align=alignment(CASES[case][1], arch), size=size, thp=thp, status="ok", src=None,
               dst=None, path="", warnings=0, warning_sites="", check="", ns=None)
    row.update(dict.fromkeys(COUNTERS, 0))
    where = place(case, size, arch)
    if size % get_arch(arch).geometry.page_size:
        row["status"] = "skipped: not a multiple of the page size"
        return row
    if where is None:
        row["status"] = "skipped: no room in this arch's user space"
        return row
    src, dst = where
    row.update(src=src, dst=dst)
    times = []
    for _ in range(reps):
        mm = MM(kernel=kernel, arch=arch)
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            try:
                mm.mmap(src, size, RW, PRIV)
                if thp:
                    mm.madvise(src, size, C.MADV_HUGEPAGE)
                mm.memset(src, 0x5A, size)
                mm.reset_stats()
                t0 = time.perf_counter_ns()
                mm.mremap(src, size, size, MOVE, dst)
                times.append(time.perf_counter_ns() - t0)
            except OSError as e:
                row["status"] = errno.errorcode.get(e.errno, str(e.errno))
            except Exception as e:       # the MM died (KernelOops, OutOfMemory): a result too
                row["status"] = type(e).__name__
        stats = mm.stats
        row.update({k: stats[k] for k in COUNTERS})
        row["path"] = path_label(stats)
        row["warnings"] = len(mm.warnings)
        row["warning_sites"] = ";".join(sorted({f"{w.function} {w.location}" for w in mm.warnings}))
        try:
            problems = check(mm)
            row["check"] = "ok" if not problems else ";".join(sorted({p.invariant for p in problems}))
        except Exception as e:           # a dead MM may not be checkable
            row["check"] = f"not checked: {type(e).__name__}"
        if row["status"] != "ok":
            break
    row["ns"] = int(statistics.median(times)) if times else None
    return row


def sweep_task(kernel: str, arch: str, size: int, thp: bool, cases: Sequence[str], reps: int) -> List[dict]:
    """One task: every case of one (kernel, arch, size, THP)."""
    return [run_cell(kernel, arch, case, size, thp, reps) for case in cases]


def sweep(kernels: Iterable = DEFAULT_KERNELS, arches: Iterable[str] = ("x86_64",),
          cases: Iterable[str] = tuple(CASES), sizes: Iterable[int] = DEFAULT_SIZES,
          thp: Iterable[bool] = (False, True), *, reps: int = 1, executor=None,
          workers: Optional[int] = None, progress: Optional[Callable[[int, int], None]] = None) -> List[dict]:
    """The matrix kernels x arches x cases x sizes x THP, one row per cell
    (:data:`COLUMNS`), in that order whatever ran it.

    ``executor``: any ``concurrent.futures.Executor`` (None: a local process
    pool of ``workers``; ``pymm.pool.InProcess()``: a plain loop here; a Dask
    ``Client``'s ``get_executor()``).  ``progress(done, total)`` counts cells.
    A task whose worker died is run again once; cells still missing then
    raise RuntimeError naming them.
    """
    from pymm.fuzz import kernel_spec
    from pymm.pool import run_tasks
    specs = [kernel_spec(k) for k in kernels]
    arches, cases, sizes, thp = list(arches), list(cases), list(sizes), [bool(t) for t in thp]
    for a in arches:
        get_arch(a)
    for c in cases:
        if c not in CASES:
            raise ValueError(f"unknown case {c!r}; choose from {', '.join(CASES)}")
    for s in sizes:
        if not isinstance(s, int) or s <= 0:
            raise ValueError(f"a size is a positive number of bytes, not {s!r}")
    if not isinstance(reps, int) or reps < 1:
        raise ValueError(f"reps must be a whole number of at least 1, not {reps!r}")
    groups = [(k, a, s, t) for k in specs for a in arches for s in sizes for t in thp]
    total = len(groups) * len(cases)
    done: Dict[tuple, List[dict]] = {}

    def on_result(key, rows):
        done[key] = rows
        if progress is not None:
            progress(len(done) * len(cases), total)

    lost = run_tasks(sweep_task, [(g, g + (cases, reps)) for g in groups], executor=executor,
                     workers=workers, on_result=on_result)
    if lost:
        raise RuntimeError(f"{len(lost)} sweep task(s) lost: " +
                           "; ".join(f"{k} ({why})" for k, why in lost[:3]))
    by_cell = {(r["kernel"], r["arch"], r["case"], r["size"], r["thp"]): r for g in groups for r in done[g]}
    return [by_cell[(k, a, c, s, t)] for k in specs for a in arches for c in cases for s in sizes for t in thp]


def write_csv(rows: List[dict], path: str) -> None:
    """The table as CSV, one row per cell, :data:`COLUMNS` in order."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)


def write_parquet(rows: List[dict], path: str) -> bool:
    """The table as Parquet; False (nothing written) without pyarrow."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return False
    pq.write_table(pa.Table.from_pylist(rows), path)
    return True


def path_table(rows: List[dict]) -> str:
    """The path each cell took, as text: a line per (arch, THP, case, size), a column per kernel."""
    kernels = list(dict.fromkeys(r["kernel"] for r in rows))
    keys = list(dict.fromkeys((r["arch"], r["thp"], r["case"], r["size"]) for r in rows))
    cell = {(r["arch"], r["thp"], r["case"], r["size"], r["kernel"]): r for r in rows}

    def text(r):
        if r["status"].startswith("skipped"):
            return "-"
        t = r["path"] if r["status"] == "ok" else r["status"]
        return t + ("!" if r["warnings"] else "") + ("X" if r["check"] != "ok" else "")
    head = ["arch", "THP", "case", "size"] + kernels
    body = [[a, "on" if t else "off", c, _fmt_size(s)] + [text(cell[(a, t, c, s, k)]) for k in kernels]
            for a, t, c, s in keys]
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    line = lambda cells: "  ".join(v.ljust(w) for v, w in zip(cells, widths)).rstrip()
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


def _fmt_size(n: int) -> str:
    for unit, div in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return str(n)
