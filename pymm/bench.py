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

Example::

    $ pymm bench                      # 1 GiB, 9 repetitions, about 20 s
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


def run_pymm_once(kernel: str, case: str, size: int, arch: str = "x86_64"):
    """One measured move on a fresh MM: (ns, counters)."""
    src, dst = addresses(case, size, arch)
    mm = (MM(kernel=kernel, window=(WINDOW_LO, WINDOW_LO + (16 << 40))) if arch == "x86_64"
          else MM(kernel=kernel, arch=arch))
    mm.mmap(src, size, RW, PRIV)
    if CASES[case][2]:
        mm.madvise(src, size, C.MADV_HUGEPAGE)
    mm.memset(src, 0x5A, size)
    mm.reset_stats()
    t0 = time.perf_counter_ns()
    r = mm.mremap(src, size, size, MOVE, dst)
    t1 = time.perf_counter_ns()
    assert r == dst
    return t1 - t0, mm.stats


def run_host_once(h, case: str, size: int) -> int:
    src, dst = addresses(case, size)
    h.mmap(src, size, RW, PRIV)
    if CASES[case][2]:
        h.madvise(src, size, C.MADV_HUGEPAGE)
    h.memset(src, 0x5A, size)
    try:
        r, ns = h.timed_mremap(src, size, size, MOVE, dst)
    finally:
        h.munmap(src, size)
        h.munmap(dst, size)
    return ns


def measure(kernel: str, case: str, size: int, reps: int, h=None, arch: str = "x86_64") -> Row:
    """pymm's reps (after one unmeasured warm-up run), then the host's."""
    pymm_ns, path = [], None
    for i in range(reps + 1):
        ns, stats = run_pymm_once(kernel, case, size, arch)
        if i:
            pymm_ns.append(ns)
        path = {k: stats[k] for k in ("pte_moves", "pmd_moves", "pud_moves", "huge_pmd_moves")}
    row = Row(case, kernel, size, path, pymm_ns)
    if h is not None:
        measure_host(row, h, reps)
    return row


def measure_host(row: Row, h, reps: int) -> None:
    row.host_ns = [run_host_once(h, row.case, row.size) for _ in range(reps)]


# -- the cost model ----------------------------------------------------------------------
@dataclass
class CostModel:
    """t = a + b*PTEs + c*PMDs + d*PUDs (ns), fitted to kernel runs."""

    a: float
    b: float
    c: float
    d: float
    points: int

    def predict(self, path: Dict[str, int]) -> float:
        return (self.a + self.b * path["pte_moves"] + self.c * (path["pmd_moves"] + path["huge_pmd_moves"])
                + self.d * path["pud_moves"])

    def __str__(self):
        return (f"t = {self.a / 1e3:.1f} us + {self.b:.2f} ns/PTE + {self.c / 1e3:.3f} us/PMD "
                f"+ {self.d / 1e3:.2f} us/PUD  (fit on {self.points} kernel runs)")


def fit_cost_model(rows: List[Row]) -> Optional[CostModel]:
    pts = [(r.path, t) for r in rows for t in r.host_ns]
    if len(pts) < 4:
        return None
    X = np.array([[1.0, p["pte_moves"], p["pmd_moves"] + p["huge_pmd_moves"], p["pud_moves"]]
                  for p, _ in pts])
    y = np.array([t for _, t in pts], dtype=float)
    # Least squares with no negative cost (a negative cost per entry is noise,
    # not physics): drop the most negative term and refit until none is left.
    keep = list(range(4))
    while True:
        sol, *_ = np.linalg.lstsq(X[:, keep], y, rcond=None)
        if sol.min() >= 0 or len(keep) == 1:
            break
        keep.pop(int(np.argmin(sol)))
    coef = np.zeros(4)
    coef[keep] = np.maximum(sol, 0.0)
    return CostModel(*coef, points=len(pts))


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


def table(rows: List[Row], model: Optional[CostModel]) -> str:
    head = ["case", "path taken (pymm)", "pymm", "kernel", "pymm/kernel", "model"]
    body = []
    for r in rows:
        ratio = f"{r.pymm_median / r.host_median:.2f}x" if r.host_median else "-"
        label = f"{r.case} [{r.kernel}]"
        if r.case == "PUD-aligned" and r.size < PUD:
            label += " (< 1 GiB: no PUD to move)"
        body.append([label, r.path_text(), fmt_ns(r.pymm_median),
                     fmt_ns(r.host_median), ratio, fmt_ns(model.predict(r.path)) if model else "-"])
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
    if pte and pmd and pud and pte.host_ns:
        a, b, c = pte.host_median, pmd.host_median, pud.host_median
        out.append(f"this kernel, per-PTE : PMD : PUD:            {fmt_ns(a)} : {fmt_ns(b)} : {fmt_ns(c)}"
                   f" = {a / b:.1f}x, then {b / c:.1f}x")
    out.append("(2c91bd4a4e2e reported 3.4-3.6 ms -> 144-160 us on 1 GiB; the PUD patch 206 us -> 15.6 us)")
    return out


def run(size: int = PUD, reps: int = 9, host: Optional[bool] = None, out=None,
        json_path: Optional[str] = None, plot_path: Optional[str] = None, arch: str = "x86_64") -> int:
    from pymm import host as host_mod
    out = sys.stdout if out is None else out
    if arch != "x86_64":                   # this machine's kernel is x86-64: no kernel column
        host, plot_path = False, None
        out.write(f"arch: {get_arch(arch).describe()}\n")
    use_host = host_mod.available() if host is None else host
    h = host_mod.HostMM() if use_host else None
    plan = [(case, "6.18") for case in CASES] + [("PMD-aligned", "4.19"), ("PMD-aligned", "5.8")]
    fit_sizes = [s for s in (size // 16, size // 4) if s >= 4 * PMD]
    steps = len(plan) + (len(CASES) + len(fit_sizes) * 3 if h else 0)
    out.write(f"pymm bench: mremap(MREMAP_MAYMOVE|MREMAP_FIXED) of a populated {fmt_size(size)} region, "
              f"median of {reps}\nmachine: Linux {platform.release()}, {os.cpu_count()} CPUs; kernel column: "
              + ("this machine's kernel, timed inside a child process\n\n" if h else
                 "skipped (--no-host)\n\n" if host is False else
                 f"unavailable ({host_mod.unavailable_reason()})\n\n"))
    out.flush()
    rows: Dict[str, Row] = {}
    fit_rows: List[Row] = []
    try:
        with Progress("bench", total=steps) as prog:
            # pymm first, the kernel after: the child's 1 GiB memsets sweep the
            # caches, and would otherwise land in the middle of pymm's runs
            for case, kernel in plan:
                prog.show(f"{case} [{kernel}]")
                rows[case if kernel == "6.18" else f"{kernel} {case}"] = measure(kernel, case, size, reps,
                                                                                 arch=arch)
                prog.step()
            for case in CASES if h else []:
                prog.show(f"{case} [this kernel]")
                measure_host(rows[case], h, reps)
                prog.step()
            for s in fit_sizes if h else []:
                for case in ("per-PTE", "PMD-aligned", "PUD-aligned"):
                    prog.show(f"cost model: {case} {fmt_size(s)}")
                    fit_rows.append(measure("6.18", case, s, max(3, reps // 2), h))
                    prog.step()
    finally:
        if h is not None:
            h.close()
    model = fit_cost_model([r for r in rows.values() if r.host_ns] + fit_rows)
    ordered = list(rows.values())
    out.write(table(ordered, model) + "\n\n")
    out.write("The \"20x\":\n  " + "\n  ".join(twenty_x(rows)) + "\n")
    if model:
        out.write(f"\nCost model of this kernel: {model}\n")
        est = ["PMD-aligned", "4.19 PMD-aligned"]
        for key in est:
            r = rows.get(key)
            if r:
                out.write(f"  {r.kernel}'s path for the PMD-aligned move ({r.path_text()}) would cost about "
                          f"{fmt_ns(model.predict(r.path))} here\n")
    if json_path:
        doc = {"size": size, "reps": reps, "machine": platform.release(),
               "rows": [dict(asdict(r), pymm_median=r.pymm_median, host_median=r.host_median)
                        for r in ordered],
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
    ax.text(0.01, 0.01, f"kernel curves stop at {fmt_size(host_limit)}: the child must populate the "
            "region in real memory (limit: 4 GiB, or a quarter of MemAvailable)",
            transform=ax.transAxes, fontsize=7, color="#555555")
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
        "THP) and time it: pymm's whole call, and this machine's kernel inside a child process. Shows "
        "the path each case takes, the ratio, the \"20x\" lines and a cost model of the kernel.",
        epilog="examples:\n  pymm bench\n  pymm bench --size 256M --reps 9\n"
        "  pymm bench --json bench.json --plot sizes.png",
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--size", type=size_type, default=PUD, help="region size (default 1G)")
    p.add_argument("--reps", type=int, default=9, help="repetitions per case; medians shown (default 9)")
    p.add_argument("--no-host", action="store_true", help="skip this machine's kernel")
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
    return run(size=args.size, reps=args.reps, host=False if args.no_host else None,
               json_path=args.json, plot_path=args.plot, out=sys.stderr if args.json == "-" else None,
               arch=arch)
