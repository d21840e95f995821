"""pymm bench: the 1 GiB mremap() table, pymm beside this machine's kernel.

For each case (per-PTE, PMD-aligned, PUD-aligned, THP PMD-aligned) it maps
and populates the region, moves it with ``mremap(MREMAP_MAYMOVE |
MREMAP_FIXED)`` and times the call: pymm's whole call including Python, and
the real kernel's syscall measured inside a child process
(:class:`pymm.host.HostMM`, CLOCK_MONOTONIC around the syscall).  Both run
at the same addresses.  The path column comes from pymm's counters.

It ends with the "20x" lines (2c91bd4a4e2e, and the PUD follow-up), and a
cost model fitted to the kernel's own runs, ``t = a + b*PTEs + c*PMDs +
d*PUDs``, which estimates what a kernel variant's path would cost here.

Rounds are interleaved (every case once in pymm and once in the kernel,
round after round, after one unrecorded warm-up round), each timed call
follows an untimed one-page mremap on both sides, and each row shows min,
median and IQR.  The run also times the physical limit of a per-PTE move
(numpy copying and clearing the region's PTEs) and names the machine.

Example::

    $ pymm bench                      # 1 GiB, 9 rounds, about a minute
    $ pymm bench --size 256M --reps 9 --json out.json --plot sizes.png
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import numpy as np

from pymm import constants as C
from pymm.arches import ARCHES, Arch, get_arch
from pymm.mm import MM
from pymm.progress import Progress

PAGE = 4096
PMD = 2 << 20
PUD = 1 << 30
WINDOW_LO = 0x100000000000
BASE = WINDOW_LO + (1 << 40)          # PUD-aligned, inside HostMM's window
PRIV = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED
RW = C.PROT_READ | C.PROT_WRITE
MOVE = C.MREMAP_MAYMOVE | C.MREMAP_FIXED
GiB32 = 1 << 30                       # 32-bit arches: the source region starts at 1 GiB

# case -> (source offset, destination offset, THP?)
CASES = {
    "per-PTE": (PAGE, 2 * PAGE, False),
    "PMD-aligned": (PMD, PMD, False),
    "PUD-aligned": (0, 0, False),
    "THP, PMD-aligned": (PMD, PMD, True),
}


@dataclass
class Row:
    case: str
    kernel: str
    size: int
    path: Dict[str, int]
    pymm_ns: List[int]
    host_ns: List[int] = field(default_factory=list)
    model_ns: Optional[float] = None

    @property
    def pymm_median(self) -> float:
        return statistics.median(self.pymm_ns)

    @property
    def host_median(self) -> Optional[float]:
        return statistics.median(self.host_ns) if self.host_ns else None

    def path_text(self) -> str:
        p = self.path
        parts = [(p["pud_moves"], "PUD"), (p["pmd_moves"], "PMD"), (p["huge_pmd_moves"], "huge PMD"),
                 (p["pte_moves"], "PTE")]
        return " + ".join(f"{n} {what}{'s' if n != 1 else ''}" for n, what in parts if n) or "nothing"


def spread(ns: List[float]) -> Optional[Dict[str, float]]:
    """min, median and interquartile range of a list of times.

    >>> spread([10, 20, 30, 40, 50])
    {'min': 10, 'median': 30, 'iqr': 20.0}
    """
    if not ns:
        return None
    iqr = 0.0
    if len(ns) > 1:
        q = statistics.quantiles(ns, n=4, method="inclusive")
        iqr = q[2] - q[0]
    return {"min": min(ns), "median": statistics.median(ns), "iqr": iqr}


def addresses(case: str, size: int, arch: str = "x86_64"):
    """(source, destination) of a case: inside HostMM's window on x86-64;
    on another arch with that arch's page, PMD and PUD (see arch_addresses)."""
    if not arch.startswith("x86_64"):
        return arch_addresses(case, size, get_arch(arch))
    src_off, dst_off, _ = CASES[case]
    src = BASE + src_off
    span = ((size + src_off + PUD - 1) // PUD + 1) * PUD
    return src, BASE + span + dst_off


def arch_addresses(case: str, size: int, a: Arch):
    """The cases on another arch: offsets of its page/PMD/PUD (the PUD
    case aligns to the PMD where the PUD is folded).  A 3 GiB user space
    holds two 1 GiB regions only with the destination below the source."""
    g = a.geometry
    page, pmd = g.page_size, g.pmd_size
    pud = g.pud_size if g.levels > 2 else pmd
    offs = {"per-PTE": (pmd + 2 * page, pmd + page), "PMD-aligned": (pmd, pmd), "PUD-aligned": (pud, pud),
            "THP, PMD-aligned": (pmd, pmd)}[case]
    if a.task_size <= 1 << 32:
        return GiB32 + offs[0], offs[1]
    base = max(pud, 1 << 40)
    span = ((size + offs[0] + pud - 1) // pud + 1) * pud
    return base + offs[0], base + span + offs[1]


PRIME = WINDOW_LO + (8 << 40)           # the warm-up call's page, far from the measured region


def run_pymm_once(kernel: str, case: str, size: int, warm: bool = True, arch: str = "x86_64"):
    """One measured move on a fresh MM: (ns, counters).  Right before it,
    an untimed one-page mremap in the same MM warms the syscall path, as
    run_host_once() does in the kernel: the figure is the call's own work,
    not the cache state the populate left behind (``warm=False``: no
    warm-up call, the first call after the populate).  On another arch
    there is no HostMM window, and no warm-up page in it."""
    src, dst = addresses(case, size, arch)
    prime = arch == "x86_64"
    mm = (MM(kernel=kernel, window=(WINDOW_LO, WINDOW_LO + (16 << 40))) if prime
          else MM(kernel=kernel, arch=arch))
    warm = warm and prime
    mm.mmap(src, size, RW, PRIV)
    if prime:
        mm.mmap(PRIME, PAGE, RW, PRIV)
    if CASES[case][2]:
        mm.madvise(src, size, C.MADV_HUGEPAGE)
    mm.memset(src, 0x5A, size)
    if prime:
        mm.memset(PRIME, 0x5A, PAGE)
    mm.reset_stats()
    if warm:
        mm.mremap(PRIME, PAGE, PAGE, MOVE, PRIME + PUD)
    t0 = time.perf_counter_ns()
    r = mm.mremap(src, size, size, MOVE, dst)
    t1 = time.perf_counter_ns()
    assert r == dst
    stats = mm.stats
    if warm:
        stats["pte_moves"] -= 1                          # the warm-up's page
    return t1 - t0, stats


def run_host_once(h, case: str, size: int, warm: bool = True) -> int:
    """The same in this machine's kernel: populate, warm-up call, timed call."""
    src, dst = addresses(case, size)
    h.mmap(src, size, RW, PRIV)
    h.mmap(PRIME, PAGE, RW, PRIV)
    if CASES[case][2]:
        h.madvise(src, size, C.MADV_HUGEPAGE)
    h.memset(src, 0x5A, size)
    h.memset(PRIME, 0x5A, PAGE)
    try:
        if warm:
            h.mremap(PRIME, PAGE, PAGE, MOVE, PRIME + PUD)
        r, ns = h.timed_mremap(src, size, size, MOVE, dst)
    finally:
        h.munmap(PRIME, PUD + PAGE)
        h.munmap(src, size)
        h.munmap(dst, size)
    return ns


PATH_KEYS = ("pte_moves", "pmd_moves", "pud_moves", "huge_pmd_moves")


def measure_rows(plan, size: int, reps: int, h=None, warmup: int = 1, limit: Optional[List[int]] = None,
                 prog=None, warm: bool = True, arch: str = "x86_64") -> List[Row]:
    """Time each (case, kernel) of plan ``reps`` times, interleaved: every
    round runs each case once in pymm and, for 6.18 rows, once in this
    machine's kernel, then (if ``limit`` is a list) the copy limit.  The
    first ``warmup`` rounds are not recorded.  A slow phase of the machine
    thus lands on every row alike instead of on one."""
    rows = [Row(case, kernel, size, {}, []) for case, kernel in plan]
    for rnd in range(warmup + reps):
        keep = rnd >= warmup
        for row in rows:
            ns, stats = run_pymm_once(row.kernel, row.case, size, warm, arch)
            row.path = {k: stats[k] for k in PATH_KEYS}
            if keep:
                row.pymm_ns.append(ns)
            if h is not None and row.kernel == "6.18":
                ns = run_host_once(h, row.case, size, warm)
                if keep:
                    row.host_ns.append(ns)
            if prog is not None:
                prog.step()
        if limit is not None:
            ns = copy_limit_ns(size)
            if keep:
                limit.append(ns)
    return rows


def measure(kernel: str, case: str, size: int, reps: int, h=None, arch: str = "x86_64") -> Row:
    """One row: pymm's reps and, with ``h``, the host's, interleaved after one warm-up round."""
    return measure_rows([(case, kernel)], size, reps, h, arch=arch)[0]


# -- the physical limit ------------------------------------------------------------------
_LIMIT_ARRAYS: Dict[int, tuple] = {}


def copy_limit_ns(size: int) -> int:
    """What moving ``size`` bytes of PTEs one by one costs at the least on
    this machine: copy the size/4096 eight-byte entries to a second array
    and clear the first, with numpy (one streaming pass each).

    >>> copy_limit_ns(1 << 20) > 0
    True
    """
    n = size // PAGE
    if n not in _LIMIT_ARRAYS:
        _LIMIT_ARRAYS.clear()
        src, dst = np.full(n, 0x8000000000000067, np.uint64), np.zeros(n, np.uint64)
        np.copyto(dst, src)                              # first touch outside the timing
        _LIMIT_ARRAYS[n] = (src, dst)
    src, dst = _LIMIT_ARRAYS[n]
    src.fill(0x8000000000000067)
    t0 = time.perf_counter_ns()
    np.copyto(dst, src)                                  # the new page table's entries
    src.fill(0)                                          # pte_clear() of the old ones
    return time.perf_counter_ns() - t0


# -- the machine ---------------------------------------------------------------------------
def machine() -> Dict[str, object]:
    """CPU model, kernel release and THP setting: what a figure depends on.

    >>> sorted(machine())
    ['cpu', 'cpus', 'kernel', 'nt_threshold', 'thp', 'virtualized']
    """
    info: Dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model", "flags") and key not in info:
                    info[key] = val.strip()
                if not line.strip() and info:
                    break
    except OSError:
        pass
    cpu = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info:
        cpu += f" (family {info['cpu family']} model {info.get('model', '?')})"
    thp = "unknown"
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            words = f.read().split()
        thp = next((w[1:-1] for w in words if w.startswith("[")), thp)
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "kernel": f"{platform.system()} {platform.release()}",
            "thp": thp, "virtualized": "hypervisor" in info.get("flags", "").split(),
            "nt_threshold": nt_threshold()}


def nt_threshold() -> Optional[int]:
    """glibc's glibc.cpu.x86_non_temporal_threshold: above it memcpy() and
    memset() use streaming stores.  glibc derives it from the CPU's cache
    sizes, so it differs between x86-64 parts (192 MiB on the AMD EPYC VM
    the README was measured on, about 1 MiB on some Intel parts); the copy
    limit's numpy copy (8 bytes a page: 2 MiB for 1 GiB) may fall either
    side.  None where the loader cannot say (not glibc, not x86-64).

    >>> t = nt_threshold(); t is None or t > 0
    True
    """
    import subprocess
    for ld in ("/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"):
        if not os.path.exists(ld):
            continue
        try:
            out = subprocess.run([ld, "--list-tunables"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        for line in out.splitlines():
            if line.startswith("glibc.cpu.x86_non_temporal_threshold:"):
                try:
                    return int(line.split(":")[1].split()[0], 0)
                except (IndexError, ValueError):
                    return None
    return None


def machine_text(m: Dict[str, object]) -> str:
    nt = m.get("nt_threshold")
    return (f"{m['cpu']}, {m['cpus']} CPUs{' (virtual machine)' if m['virtualized'] else ''}, "
            f"{m['kernel']}, THP {m['thp']}"
            + (f", glibc streaming stores above {fmt_size(nt)}" if nt else ""))


# -- the cost model ----------------------------------------------------------------------
@dataclass
class CostModel:
    """t = a + b*PTEs + c*PMDs + d*PUDs (ns), fitted to kernel runs."""

    a: float
    b: float
    c: float
    d: float
    points: int
    r2: float = 1.0
    rel_err: float = 0.0

    def predict(self, path: Dict[str, int]) -> float:
        return (self.a + self.b * path["pte_moves"] + self.c * (path["pmd_moves"] + path["huge_pmd_moves"])
                + self.d * path["pud_moves"])

    def __str__(self):
        return (f"t = {self.a / 1e3:.1f} us + {self.b:.2f} ns/PTE + {self.c / 1e3:.3f} us/PMD "
                f"+ {self.d / 1e3:.2f} us/PUD\n  fit on the medians of {self.points} kernel rows: "
                f"R^2 {self.r2:.3f}, median error {100 * self.rel_err:.0f}%")


def fit_cost_model(rows: List[Row]) -> Optional[CostModel]:
    """Fit t = a + b*PTEs + c*PMDs + d*PUDs to the kernel's medians, one point
    per row, weighting each by 1/t so that a 30 us row counts as much as a
    3 ms one (relative error); no coefficient may be negative."""
    pts = [(r.path, r.host_median) for r in rows if r.host_ns]
    if len(pts) < 4:
        return None
    X = np.array([[1.0, p["pte_moves"], p["pmd_moves"] + p["huge_pmd_moves"], p["pud_moves"]]
                  for p, _ in pts])
    y = np.array([t for _, t in pts], dtype=float)
    w = 1.0 / np.maximum(y, 1.0)
    # Least squares with no negative cost (a negative cost per entry is noise,
    # not physics): drop the most negative term and refit until none is left.
    keep = list(range(4))
    while True:
        sol, *_ = np.linalg.lstsq(X[:, keep] * w[:, None], y * w, rcond=None)
        if sol.min() >= 0 or len(keep) == 1:
            break
        keep.pop(int(np.argmin(sol)))
    coef = np.zeros(4)
    coef[keep] = np.maximum(sol, 0.0)
    pred = X @ coef
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - pred) ** 2).sum()) / ss_tot if ss_tot else 1.0
    rel = float(np.median(np.abs(pred - y) / np.maximum(y, 1.0)))
    return CostModel(*coef, points=len(pts), r2=r2, rel_err=rel)


# -- formatting ----------------------------------------------------------------------------
def fmt_ns(ns: Optional[float]) -> str:
    if ns is None:
        return "-"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} us"
    return f"{ns:.0f} ns"


def fmt_size(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


def fmt_spread(ns: List[int]) -> str:
    s = spread(ns)
    return f"{fmt_ns(s['min'])} / {fmt_ns(s['iqr'])}" if s else "-"


def table(rows: List[Row], model: Optional[CostModel]) -> str:
    head = ["case", "path taken (pymm)", "pymm", "min / IQR", "kernel", "min / IQR", "pymm/kernel", "model"]
    body = []
    for r in rows:
        ratio = f"{r.pymm_median / r.host_median:.2f}x" if r.host_median else "-"
        label = f"{r.case} [{r.kernel}]"
        if r.case == "PUD-aligned" and r.size < PUD:
            label += " (< 1 GiB: no PUD to move)"
        body.append([label, r.path_text(), fmt_ns(r.pymm_median), fmt_spread(r.pymm_ns),
                     fmt_ns(r.host_median), fmt_spread(r.host_ns), ratio,
                     fmt_ns(model.predict(r.path)) if model else "-"])
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


def twenty_x(rows: Dict[str, Row]) -> List[str]:
    out = []
    pte, pmd, pud = rows.get("per-PTE"), rows.get("PMD-aligned"), rows.get("PUD-aligned")
    old, new = rows.get("4.19 PMD-aligned"), rows.get("5.8 PMD-aligned")
    if pte and pmd:
        out.append(f"pymm, per-PTE vs PMD-aligned:               {fmt_ns(pte.pymm_median)} / "
                   f"{fmt_ns(pmd.pymm_median)} = {pte.pymm_median / pmd.pymm_median:.1f}x")
    if old and new:
        out.append(f"pymm, 4.19 vs 5.8 on the PMD-aligned case:  {fmt_ns(old.pymm_median)} / "
                   f"{fmt_ns(new.pymm_median)} = {old.pymm_median / new.pymm_median:.1f}x")
    if pte and pmd and pte.host_ns:
        a, b = pte.host_median, pmd.host_median
        if pud and pud.path.get("pud_moves"):
            c = pud.host_median
            out.append(f"this kernel, per-PTE : PMD : PUD:            {fmt_ns(a)} : {fmt_ns(b)} : "
                       f"{fmt_ns(c)} = {a / b:.1f}x, then {b / c:.1f}x")
        else:                        # below a PUD there is no PUD move to compare
            out.append(f"this kernel, per-PTE : PMD:                  {fmt_ns(a)} : {fmt_ns(b)} = {a / b:.1f}x")
    out.append("(2c91bd4a4e2e reported 3.4-3.6 ms -> 144-160 us on 1 GiB; the PUD patch 206 us -> 15.6 us)")
    return out


def limit_line(size: int, limit: List[int], pte: Optional[Row]) -> str:
    s = spread(limit)
    text = (f"copy limit: numpy copies and clears the {size // PAGE:,} PTEs of {fmt_size(size)} in "
            f"{fmt_ns(s['median'])} (min {fmt_ns(s['min'])}, IQR {fmt_ns(s['iqr'])})")
    if pte is not None:
        text += f"; pymm's per-PTE move is {pte.pymm_median / s['median']:.1f}x that"
    return text


def run(size: int = PUD, reps: int = 9, host: Optional[bool] = None, out=None,
        json_path: Optional[str] = None, plot_path: Optional[str] = None, warm: bool = True,
        arch: str = "x86_64") -> int:
    from pymm import host as host_mod
    out = sys.stdout if out is None else out
    if arch != "x86_64":                   # this machine's kernel is x86-64: no kernel column
        host, plot_path = False, None
        out.write(f"arch: {get_arch(arch).describe()}\n")
    use_host = host_mod.available() if host is None else host
    h = host_mod.HostMM() if use_host else None
    plan = [(case, "6.18") for case in CASES] + [("PMD-aligned", "4.19"), ("PMD-aligned", "5.8")]
    fit_sizes = [s for s in (size // 16, size // 8, size // 4, size // 2) if s >= 4 * PMD] if h else []
    fit_reps = max(3, reps // 2)
    fit_plan = [("per-PTE", "6.18"), ("PMD-aligned", "6.18"), ("PUD-aligned", "6.18")]
    # a second PUD point (two PUDs) pins the per-PUD cost; one point alone
    # leaves it to the noise of a single row
    pud_fit = [2 * size] if h and size % PUD == 0 and 2 * size <= min(4 << 30, _mem_available() // 4) else []
    steps = len(plan) * (reps + 1) + (len(fit_sizes) * len(fit_plan) + len(pud_fit)) * (fit_reps + 1)
    mach = machine()
    out.write(f"pymm bench: mremap(MREMAP_MAYMOVE|MREMAP_FIXED) of a populated {fmt_size(size)} region, "
              f"{reps} rounds after a warm-up round, pymm and kernel interleaved;\n"
              + ("each timed call follows an untimed one-page mremap in the same address space, in pymm "
                 "and the kernel alike\n" if warm else
                 "--cold: each timed call is the first after the populate, in pymm and the kernel alike\n")
              + f"machine: {machine_text(mach)}\n"
              + "kernel column: " + ("this machine's kernel, timed inside a child process\n\n" if h else
                                   "skipped (--no-host)\n\n" if host is False else
                                   f"unavailable ({host_mod.unavailable_reason()})\n\n"))
    out.flush()
    limit: List[int] = []
    fit_rows: List[Row] = []
    try:
        with Progress("bench", total=steps) as prog:
            main_rows = measure_rows(plan, size, reps, h, limit=limit, prog=prog, warm=warm,
                                     arch=arch)
            for s in fit_sizes:
                fit_rows += measure_rows(fit_plan, s, fit_reps, h, prog=prog, warm=warm)
            for s in pud_fit:
                fit_rows += measure_rows([("PUD-aligned", "6.18")], s, fit_reps, h, prog=prog, warm=warm)
    finally:
        if h is not None:
            h.close()
    rows = {(r.case if r.kernel == "6.18" else f"{r.kernel} {r.case}"): r for r in main_rows}
    model = fit_cost_model([r for r in main_rows if r.host_ns] + fit_rows)
    for r in main_rows + fit_rows:
        r.model_ns = model.predict(r.path) if model else None
    out.write(table(main_rows, model) + "\n(min / IQR: the fastest round and the interquartile range)\n\n")
    out.write(limit_line(size, limit, rows.get("per-PTE")) + "\n\n")
    out.write("The \"20x\":\n  " + "\n  ".join(twenty_x(rows)) + "\n")
    if model:
        out.write(f"\nCost model of this kernel: {model}\n")
        for key in ("PMD-aligned", "4.19 PMD-aligned"):
            r = rows.get(key)
            if r:
                out.write(f"  {r.kernel}'s path for the PMD-aligned move ({r.path_text()}) would cost about "
                          f"{fmt_ns(model.predict(r.path))} here\n")
    if json_path:
        pte = rows.get("per-PTE")
        lim = spread(limit)
        doc = {"size": size, "reps": reps, "warmup_rounds": 1, "warm_call": warm, "machine": mach,
               "rows": [dict(asdict(r), pymm=spread(r.pymm_ns), host=spread(r.host_ns),
                             pymm_median=r.pymm_median, host_median=r.host_median) for r in main_rows],
               "copy_limit": dict(lim, ns=limit, per_pte_multiple=pte.pymm_median / lim["median"]
                                  if pte else None),
               "fit_rows": [asdict(r) for r in fit_rows],
               "cost_model": asdict(model) if model else None}
        if json_path == "-":                 # stdout: the table went to stderr (see cli)
            json.dump(doc, sys.stdout, indent=1)
            sys.stdout.write("\n")
        else:
            with open(json_path, "w") as f:
                json.dump(doc, f, indent=1)
            out.write(f"\nwrote {json_path}\n")
    if plot_path:
        out.write(plot_sizes(plot_path, reps=max(3, reps // 2), host=use_host) + "\n")
    return 0


def plot_notes(host_limit: int) -> List[str]:
    """What the sizes plot needs said beside its curves.

    >>> print(plot_notes(4 << 30)[0])
    kernel curves stop at 4 GiB: the child must populate the region in real memory (limit: 4 GiB, or a quarter of MemAvailable)
    """
    return [f"kernel curves stop at {fmt_size(host_limit)}: the child must populate the region in real "
            "memory (limit: 4 GiB, or a quarter of MemAvailable)",
            "at 1-4 GiB, pymm's PMD- and PUD-aligned calls cost mostly the fixed Python syscall "
            "layer (tens of us), not the moves: which of the two is faster there is noise"]


def plot_sizes(path: str, reps: int = 3, host: bool = True,
               sizes=(1 << 20, 16 << 20, 256 << 20, 1 << 30, 4 << 30, 16 << 30, 64 << 30)) -> str:
    """Time versus region size, log-log, for each alignment: pymm beside the
    kernel (the kernel only up to what this machine can populate)."""
    from pymm.pictures import MATPLOTLIB_HINT, load_matplotlib
    plt = load_matplotlib()
    if plt is None:
        return f"--plot {MATPLOTLIB_HINT}; no plot written"
    from pymm import host as host_mod
    h = host_mod.HostMM() if host and host_mod.available() else None
    host_limit = min(4 << 30, _mem_available() // 4)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    colors = {"per-PTE": "tab:red", "PMD-aligned": "tab:blue", "PUD-aligned": "tab:green"}
    try:
        with Progress("plot", total=len(sizes) * 3) as prog:
            for case, color in colors.items():
                xs, ys, hx, hy = [], [], [], []
                for s in sizes:
                    if case == "PUD-aligned" and s < PUD:
                        prog.step()
                        continue
                    prog.show(f"{case} {fmt_size(s)}")
                    row = measure("6.18", case, s, reps, h if (h and s <= host_limit) else None)
                    xs.append(s)
                    ys.append(row.pymm_median / 1e3)
                    if row.host_ns:
                        hx.append(s)
                        hy.append(row.host_median / 1e3)
                    prog.step()
                ax.plot(xs, ys, "-o", color=color, label=f"pymm, {case}")
                if hx:
                    ax.plot(hx, hy, "--s", color=color, alpha=0.7, label=f"kernel, {case}")
    finally:
        if h is not None:
            h.close()
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(list(sizes), [fmt_size(s) for s in sizes])
    ax.set_xlabel("region size")
    ax.text(0.01, 0.01, "\n".join(plot_notes(host_limit)), transform=ax.transAxes, fontsize=7,
            color="#555555", va="bottom")
    ax.set_ylabel("mremap() time (us)")
    ax.set_title(f"mremap of a populated region: pymm vs Linux {platform.release()}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return f"wrote {path}"


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def add_parser(sub, size_type):
    p = sub.add_parser(
        "bench", help="the 1 GiB mremap table, pymm beside this machine's kernel",
        description="Move a populated region with mremap() in each alignment case (per-PTE, PMD, PUD, "
        "THP) and time it: pymm's whole call, and this machine's kernel inside a child process, in "
        "interleaved rounds after a warm-up round. Shows the machine, the path each case takes, "
        "min/median/IQR, the ratio, the per-PTE copy limit measured in the same run, the \"20x\" "
        "lines and a cost model of the kernel with its fit quality.",
        epilog="examples:\n  pymm bench\n  pymm bench --size 256M --reps 9\n"
        "  pymm bench --json bench.json --plot sizes.png",
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--size", type=size_type, default=PUD, help="region size (default 1G)")
    p.add_argument("--reps", type=int, default=9, help="measured rounds (each case once per round, after one warm-up round; default 9)")
    p.add_argument("--no-host", action="store_true", help="skip this machine's kernel")
    p.add_argument("--cold", action="store_true", help="time the first call after the populate, "
                   "without the untimed one-page mremap before it (both sides)")
    p.add_argument("--arch", choices=list(ARCHES), default="x86_64",
                   help="run pymm on another arch's geometry (no kernel column then; default x86_64)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON (- for stdout; the table "
                   "then goes to stderr)")
    p.add_argument("--plot", metavar="PATH", help="also write a PNG: time vs size (1 MiB-64 GiB), "
                   "log-log; adds about 1-2 minutes (it runs each case at 7 sizes)")
    p.set_defaults(func=lambda a: _cmd(a))


def _cmd(args) -> int:
    arch = getattr(args, "arch", "x86_64")
    pmd = get_arch(arch).geometry.pmd_size
    least = min(4 * pmd, PUD)             # 1 GiB is two PMDs on arm64-64k
    if args.size < least or args.size % pmd:
        print(f"pymm bench: --size must be a multiple of {fmt_size(pmd)}, at least {fmt_size(least)}"
              + (f" on {arch}" if arch != "x86_64" else ""), file=sys.stderr)
        return 2
    if get_arch(arch).task_size <= 1 << 32 and args.size > 1 << 30:
        print(f"pymm bench: --size is at most 1G on {arch} (a 3 GiB user space)", file=sys.stderr)
        return 2
    if args.reps < 1:
        print("pymm bench: --reps must be at least 1", file=sys.stderr)
        return 2
    return run(size=args.size, reps=args.reps, host=False if args.no_host else None, warm=not args.cold,
               json_path=args.json, plot_path=args.plot, out=sys.stderr if args.json == "-" else None,
               arch=arch)
