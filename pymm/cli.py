"""The pymm command line.

    pymm bench          the 1 GiB table: pymm beside this machine's kernel
    pymm demo           the July 2020 thread, replayed kernel by kernel
    pymm fuzz           search syscall programs for a kernel's bugs
    pymm show           page tables as merged ranges, and pictures
    pymm sweep          kernels x arches x cases x sizes x THP: path taken and cost
    pymm kernels        the kernel catalogue
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from typing import List, Optional

EPILOG_MAIN = """examples:
  pymm bench                       # the 1 GiB mremap table, with this machine's kernel
  pymm demo                        # the thread's story, ending in a table
  pymm fuzz --kernel 5.8+linus-v2  # finds Kirill's overcopy, prints a C reproducer
  pymm show --demo --out pics/     # before/after pictures of the stack shift
"""


def _kernel_arg(value: str):
    """A catalogue name, or module:attribute naming a pymm.Kernel of your own."""
    from pymm.kernels import get_kernel
    try:
        return get_kernel(value)
    except (ValueError, TypeError) as e:
        raise argparse.ArgumentTypeError(str(e))


def _size(value: str) -> int:
    """Sizes like 4096, 2M, 1G, 64GiB: positive, and small enough to be a size."""
    v = value.strip().upper().replace("IB", "").replace("B", "")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        if v and v[-1] in mult:
            f = float(v[:-1]) * mult[v[-1]]
            if not math.isfinite(f) or f >= 1 << 64:
                raise OverflowError
            n = int(f)
        else:
            n = int(v, 0)
    except OverflowError:
        raise argparse.ArgumentTypeError(f"not a size: {value!r} is beyond a 64-bit address space")
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {value!r} (try 1G, 512M, 4096)")
    if n <= 0:
        raise argparse.ArgumentTypeError(f"not a size: {value!r} (a size is positive: try 1G)")
    return n


def _positive_int(value: str) -> int:
    try:
        n = int(value, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}")
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value} is too small: at least 1")
    return n


def _seconds(value: str) -> float:
    try:
        t = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}")
    if not (math.isfinite(t) and t > 0):
        raise argparse.ArgumentTypeError(f"{value} seconds: give a time above 0, like 10 or 0.5")
    return t


# -- output paths: checked before any work, created when missing --------------------------------
def output_file(path: Optional[str], what: str) -> Optional[str]:
    """None when ``path`` (a file to write; ``-`` is stdout) can be written,
    creating its folder if needed; otherwise the one-line reason it cannot."""
    if not path or path == "-":
        return None
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return f"{what} {path}: is a folder, give a file name"
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        return f"{what} {path}: cannot create the folder {folder}: {e.strerror or e}"
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        return f"{what} {path}: not writable"
    if os.path.isfile(path) and os.path.getsize(path) and not _ours(path):
        return (f"{what} {path}: exists and is not a file pymm writes there "
                f"({_OURS[what][1]}); remove it or choose another name")
    return None


# What an existing file must start with for pymm to overwrite it: only a
# previous output of the same option, never (say) /etc/passwd.
_OURS = {"--json": ((b"{",), "a JSON object"), "--plot": ((b"\x89PNG", b"%PDF", b"<?xml", b"<svg", b"%!PS"),
                                                          "a picture"),
         "--save": ((b"import pymm", b"/*", b"#include", b"#define", b"//"), "a reproducer")}


def _ours(path: str) -> bool:
    """Does the existing file look like one pymm wrote for this option?"""
    try:
        with open(path, "rb") as f:
            head = f.read(64).lstrip()
    except OSError:
        return False
    return any(head.startswith(m) for marks, _ in _OURS.values() for m in marks)


def output_dir(path: str, what: str) -> Optional[str]:
    """Like :func:`output_file`, for a folder to write files into."""
    if os.path.exists(path) and not os.path.isdir(path):
        return f"{what} {path}: exists and is not a folder"
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        return f"{what} {path}: cannot create the folder: {e.strerror or e}"
    if not os.access(path, os.W_OK):
        return f"{what} {path}: not writable"
    return None


BENCH_MAX = 64 << 30          # the sizes plot's largest point


def check_bench(args) -> Optional[str]:
    """bench's arguments against each other and against this machine."""
    from pymm.bench import PMD, _mem_available, fmt_size
    size = args.size
    if size > BENCH_MAX:
        return f"--size {fmt_size(size)}: at most {fmt_size(BENCH_MAX)} (the largest size it is built to time)"
    if size < 4 * PMD or size % PMD:
        return f"--size {fmt_size(size)}: must be a multiple of 2 MiB, at least 8 MiB"
    if args.reps < 1:
        return "--reps must be at least 1"
    avail = _mem_available()
    if size // 256 > avail // 2:      # pymm: page tags and PTEs, 16 bytes a page
        return (f"--size {fmt_size(size)}: pymm's tables need about {fmt_size(size // 256 >> 20 << 20)}, "
                f"this machine has {avail >> 20} MiB available")
    if not args.no_host and size > avail // 2:
        return (f"--size {fmt_size(size)}: the kernel column populates it for real and this machine "
                f"has {avail >> 20} MiB available: use --no-host or a smaller size")
    return None


def check_outputs(args) -> Optional[str]:
    """Every output path of a command, checked before it starts its work."""
    cmd = args.command
    if cmd == "bench":
        return check_bench(args) or output_file(args.json, "--json") or output_file(args.plot, "--plot")
    if cmd == "fuzz" and args.save:
        return output_file(args.save + ".py", "--save") or output_file(args.save + ".c", "--save")
    if cmd == "sweep":
        return output_dir(args.out, "--out")
    if cmd == "show" and args.demo:
        from pymm.show import demo_conflicts, fill_demo_defaults
        if demo_conflicts(args):          # refused by the command, before anything is created
            return None
        fill_demo_defaults(args)
        return output_dir(args.out, "--out")
    return None


# options whose value may start with "-" (argparse would take "-1G" for an option)
VALUE_OPTIONS = ("--size", "--reps", "--seconds", "--max-examples", "--ops", "--seed", "--walk",
                 "--execs", "--json", "--plot", "--save", "--out", "--workers", "--sizes", "--kernels",
                 "--arches", "--cases")


def join_negative_values(argv: List[str]) -> List[str]:
    """``--size -1G`` -> ``--size=-1G``, so that the value reaches its
    validator and gets a real message, not "expected one argument"."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in VALUE_OPTIONS and i + 1 < len(argv) and re.match(r"^-(\d|\.\d|inf|nan|$)",
                                                                 argv[i + 1], re.I):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def cmd_kernels(args) -> int:
    from pymm.kernels import KERNELS
    from pymm.machine import Machine
    if args.arch != "x86_64":
        print(f"on {Machine(arch=args.arch).arch_info.describe()}")
    for name, k in KERNELS.items():
        m = Machine(kernel=k, arch=args.arch)      # the arch's HAVE_MOVE_PMD/PUD for this version
        moves = ["PTE"] + (["PMD"] if k.pmd_moves and m.move_pmd else []) + \
            (["PUD"] if k.pud_moves and m.move_pud else [])
        print(f"{name:14s} {'/'.join(moves):12s} {k.models}")
        if k.notes:
            print(f"{'':14s} {'':12s} {k.notes}")
    return 0


def cmd_demo(args) -> int:
    from pymm.demo import demo
    return demo(sys.stdout, run_host=not args.no_host, execs=args.execs, arch=args.arch)


def cmd_fuzz(args) -> int:
    if args.workers or args.scheduler:
        return cmd_campaign(args)
    from pymm.fuzz import fuzz
    from pymm.progress import Progress
    kernel = args.kernel
    on = f" on {args.arch}" if args.arch != "x86_64" else ""
    print(f"fuzzing kernel {kernel.name}{on}: up to {args.max_examples} programs or {args.seconds:g} s "
          f"(seed {args.seed})", flush=True)
    tally: dict = {}
    try:
        with Progress("fuzz") as prog:
            hit = fuzz(kernel, arch=args.arch, max_examples=args.max_examples, seconds=args.seconds,
                       seed=args.seed,
                       max_ops=args.ops, progress=lambda n, t: (setattr(prog, "done", n), prog.show()),
                       tally=tally)
    except KeyboardInterrupt:
        found = ("a failing program was found, interrupted while shrinking it" if tally.get("found")
                 else "nothing found so far")
        print(f"interrupted: {tally.get('programs', 0)} programs run in {tally.get('seconds', 0):.1f} s "
              f"under {kernel.name}, {found}", file=sys.stderr)
        return 130
    if hit is None:
        print(f"no invariant violation or warning found under {kernel.name}: "
              f"{tally['programs']} programs run in {tally['seconds']:.1f} s")
        return 0
    print(f"\nFOUND: {hit.summary()}\n")
    _print_reproducers(hit)
    if args.save:
        _save(hit, args.save)
    return 1


def _print_reproducers(hit) -> None:
    print("# --- reproducer: Python, against pymm " + "-" * 38)
    print(hit.python)
    print("/* --- reproducer: C, for a real kernel (gcc repro.c && ./a.out) " + "-" * 12 + " */")
    print(hit.c)


def _save(hit, prefix: str) -> None:
    with open(prefix + ".py", "w") as f:
        f.write(hit.python)
    with open(prefix + ".c", "w") as f:
        f.write(hit.c)
    print(f"saved {prefix}.py and {prefix}.c")


def open_executor(args):
    """(executor, client, where) for --workers N or --scheduler ADDRESS, or
    (None, None, the one-line reason it cannot be had)."""
    if args.workers and args.scheduler:
        return None, None, "--workers and --scheduler: give one (a Dask cluster has its own workers)"
    if not args.scheduler:
        return None, None, None
    from pymm.pool import capacity, dask_client
    try:
        client = dask_client(args.scheduler)
    except ImportError as e:
        return None, None, f"--scheduler {e}"
    except OSError as e:
        return None, None, f"--scheduler: {e}"
    executor = client.get_executor()
    return executor, client, f"the Dask cluster at {args.scheduler} ({capacity(executor)} worker threads)"


def cmd_campaign(args) -> int:
    """pymm fuzz --workers/--scheduler: a campaign, progress over all workers."""
    from pymm.fuzz import TASK_PROGRAMS, campaign
    from pymm.progress import Progress
    executor, client, where = open_executor(args)
    if executor is None and where:
        print(f"pymm fuzz: {where}", file=sys.stderr)
        return 2
    kernel = args.kernel
    per_task = min(TASK_PROGRAMS, args.max_examples)
    tasks = -(-args.max_examples // per_task)
    on = f" on {args.arch}" if args.arch != "x86_64" else ""
    where = where or f"{args.workers} local worker process{'es' if args.workers > 1 else ''}"
    print(f"fuzzing kernel {kernel.name}{on}: up to {args.max_examples} programs or {args.seconds:g} s "
          f"(seed {args.seed}), {tasks} task{'s' if tasks > 1 else ''} of {per_task} programs on {where}",
          flush=True)
    last: dict = {"programs": 0, "findings": 0}
    start = time.monotonic()

    def show(prog, stats):
        last.update(stats)
        prog.done = stats["programs"]
        prog.show(f"programs, {stats['rate']:.0f}/s, {stats['findings']} finding"
                  f"{'s' if stats['findings'] != 1 else ''}, {stats['tasks']}/{tasks} tasks")
    try:
        with Progress("fuzz") as prog:
            c = campaign(kernel, seconds=args.seconds, executor=executor, workers=args.workers,
                         seed=args.seed, tasks=tasks, task_programs=per_task, max_ops=args.ops,
                         arch=args.arch, progress=lambda st: show(prog, st))
    except KeyboardInterrupt:
        print(f"interrupted after {time.monotonic() - start:.1f} s: {last['programs']} programs run in finished "
              f"tasks under {kernel.name}, {last['findings']} finding{'s' if last['findings'] != 1 else ''} so far",
              file=sys.stderr)
        return 130
    finally:
        if client is not None:
            client.close()
    for seed, why in c.lost:
        print(f"lost: the task of seed {seed} ({why}); replay it with pymm.fuzz.fuzz({c.kernel!r}, "
              f"seed={seed}, max_examples={per_task})", file=sys.stderr)
    totals = (f"{c.programs} programs run in {c.seconds:.1f} s ({c.rate:.0f}/s) by {c.tasks} tasks on "
              f"{len(c.workers)} worker{'s' if len(c.workers) != 1 else ''}")
    if not c.findings:
        print(f"no invariant violation or warning found under {kernel.name}: {totals}")
        return 0
    for i, f in enumerate(c.findings, 1):
        head = f"FOUND ({i} of {len(c.findings)})" if len(c.findings) > 1 else "FOUND"
        print(f"\n{head}: {f.hit.summary()}\n  found by {len(f.seeds)} task"
              f"{'s' if len(f.seeds) > 1 else ''} (seeds {', '.join(map(str, f.seeds[:8]))}"
              f"{', ...' if len(f.seeds) > 8 else ''}; {f.programs} distinct shrunk program"
              f"{'s' if f.programs > 1 else ''}); replay: {f.replay_call}\n")
        _print_reproducers(f.hit)
        if args.save:
            _save(f.hit, args.save if i == 1 else f"{args.save}-{i}")
    print(totals)
    return 1


def _list_of(parse, what: str):
    """An argparse type for a comma-separated list, each item through ``parse``."""
    def parse_list(value: str) -> list:
        items = [v.strip() for v in value.split(",")]
        if not all(items):
            raise argparse.ArgumentTypeError(f"{value!r}: an empty item in the list of {what} (a, b, c)")
        return [parse(v) for v in items]
    return parse_list


def _choice(options, what: str):
    def parse(value: str) -> str:
        if value not in options:
            raise argparse.ArgumentTypeError(f"unknown {what} {value!r}; choose from {', '.join(options)}")
        return value
    return parse


THP_CHOICES = {"off": [False], "on": [True], "both": [False, True]}


def cmd_sweep(args) -> int:
    """pymm sweep: the matrix, a table, a CSV (and Parquet), a picture."""
    from pymm.arches import get_arch
    from pymm.pool import InProcess
    from pymm.progress import Progress
    from pymm.sweep import path_table, sweep, write_csv, write_parquet
    from pymm.bench import _mem_available, fmt_size
    page = max(get_arch(a).geometry.page_size for a in args.arches)
    big = max(args.sizes)
    if big > BENCH_MAX or big // 256 > _mem_available() // 2:    # pymm: page tags and PTEs, 16 bytes a page
        print(f"pymm sweep: --sizes {fmt_size(big)}: at most {fmt_size(BENCH_MAX)}, and pymm's tables must fit "
              f"in half of this machine's {_mem_available() >> 20} MiB available", file=sys.stderr)
        return 2
    bad = [n for n in args.sizes if n % page]
    if bad:
        print(f"pymm sweep: --sizes {bad[0]}: not a multiple of the page size ({page >> 10} KiB on "
              f"{', '.join(a for a in args.arches if get_arch(a).geometry.page_size == page)})", file=sys.stderr)
        return 2
    executor, client, where = open_executor(args)
    if executor is None and where:
        print(f"pymm sweep: {where}", file=sys.stderr)
        return 2
    if executor is None and not args.workers:
        executor, where = InProcess(), "this process"
    where = where or f"{args.workers} local worker process{'es' if args.workers > 1 else ''}"
    kernels = [k.source or k.name for k in args.kernels]
    cells = len(kernels) * len(args.arches) * len(args.cases) * len(args.sizes) * len(THP_CHOICES[args.thp])
    print(f"sweeping {cells} cells ({len(kernels)} kernels x {len(args.arches)} arches x {len(args.cases)} "
          f"cases x {len(args.sizes)} sizes x THP {args.thp}) on {where}", flush=True)
    try:
        with Progress("sweep", total=cells) as prog:
            rows = sweep(kernels, args.arches, args.cases, args.sizes, THP_CHOICES[args.thp], reps=args.reps,
                         executor=executor, workers=args.workers,
                         progress=lambda done, total: (setattr(prog, "done", done), prog.show()))
    except RuntimeError as e:                    # tasks lost twice over
        print(f"pymm sweep: {e}", file=sys.stderr)
        return 1
    finally:
        if client is not None:
            client.close()
    print(path_table(rows))
    print("(! a kernel warning, X a broken invariant, - does not fit in the arch's user space)")
    csv_path = os.path.join(args.out, "sweep.csv")
    write_csv(rows, csv_path)
    wrote = [csv_path]
    if write_parquet(rows, os.path.join(args.out, "sweep.parquet")):
        wrote.append(os.path.join(args.out, "sweep.parquet"))
    from pymm.pictures import MATPLOTLIB_HINT, load_matplotlib, sweep_picture
    if load_matplotlib() is None:
        print(f"picture: {MATPLOTLIB_HINT}; none drawn")
    else:
        wrote.append(sweep_picture(rows, os.path.join(args.out, "sweep.png")))
    print("wrote " + ", ".join(wrote))
    return 0


def add_sweep_parser(sub) -> None:
    from pymm.arches import ARCHES
    from pymm.sweep import CASES, DEFAULT_SIZES
    p = sub.add_parser(
        "sweep", help="kernels x arches x cases x sizes x THP: the path each move takes and its cost",
        description="For each cell of the matrix, map and populate a region at the case's source "
        "alignment (PTE, half a PMD, PMD or PUD, and not twice that), move it with mremap(MREMAP_MAYMOVE|"
        "MREMAP_FIXED) to the case's destination alignment, and record the path counters, the warnings, "
        "the checker's verdict and the call's time.  Prints the paths as a table and writes "
        "OUT/sweep.csv (a row per cell), OUT/sweep.parquet (with pyarrow) and OUT/sweep.png.",
        epilog="examples:\n  pymm sweep --out sweep/\n"
        "  pymm sweep --kernels 4.19,5.8,6.18 --arches x86_64,arm64-4k --sizes 8M,1G,2G --thp off\n"
        "  pymm sweep --workers 2\n  pymm sweep --scheduler tcp://HOST:8786 --reps 5",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from pymm.kernels import KERNELS
    p.add_argument("--kernels", type=_list_of(_kernel_arg, "kernels"), default=list(KERNELS),
                   metavar="K1,K2", help="kernels: catalogue names or module:attribute (default: all)")
    p.add_argument("--arches", type=_list_of(_choice(list(ARCHES), "arch"), "arches"), default=["x86_64"],
                   metavar="A1,A2", help=f"arches among {', '.join(ARCHES)} (default x86_64)")
    p.add_argument("--cases", type=_list_of(_choice(list(CASES), "case"), "cases"), default=list(CASES),
                   metavar="C1,C2", help=f"source/destination alignments among {', '.join(CASES)} (default: all)")
    p.add_argument("--sizes", type=_list_of(_size, "sizes"), default=list(DEFAULT_SIZES), metavar="S1,S2",
                   help="region sizes (default 8M,1G)")
    p.add_argument("--thp", choices=list(THP_CHOICES), default="both",
                   help="THP off, on (MADV_HUGEPAGE before the populate), or both (default)")
    p.add_argument("--reps", type=_positive_int, default=1, help="runs per cell, the time is their median "
                   "(default 1)")
    p.add_argument("--out", default="sweep", metavar="DIR", help="folder for sweep.csv, sweep.parquet and "
                   "sweep.png (default ./sweep)")
    _add_scale_out(p, "sweep in tasks (one per kernel, arch, size and THP)")
    p.set_defaults(func=cmd_sweep)


def _add_scale_out(p, what: str) -> None:
    """--workers N and --scheduler ADDRESS."""
    p.add_argument("--workers", type=_positive_int, metavar="N",
                   help=f"run a {what}, on N local processes")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help=f"run a {what}, on the Dask cluster whose scheduler is at ADDRESS "
                   "(tcp://HOST:8786; needs pip install \"pymm[dask]\")")


def _add_arch(p) -> None:
    """--arch: one of pymm.ARCHES."""
    from pymm.arches import ARCHES
    p.add_argument("--arch", choices=list(ARCHES), default="x86_64",
                   help="paging geometry and user space of an arch (default x86_64)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pymm", description="Simulate what Linux does with page tables when memory moves: "
        "mremap() and exec's stack shift, at real scale, under kernels from 4.19 to 6.18.",
        epilog=EPILOG_MAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="command")

    k = sub.add_parser("kernels", help="list the kernel catalogue",
                       description="The kernels pymm models and what their move_page_tables() does.",
                       epilog="examples:\n  pymm kernels\n  pymm kernels --arch arm64-4k",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arch(k)
    k.set_defaults(func=cmd_kernels)

    d = sub.add_parser("demo", help="replay the July 2020 thread, kernel by kernel",
                       description="Tell the move_normal_pmd() thread's story: the WARNING, Kirill's fix, "
                       "Linus's patches, Kirill's test case (also run on this machine's kernel when gcc "
                       "exists), Naresh's runs, and what later kernels did.  Ends with a table.",
                       epilog="examples:\n  pymm demo | less\n  pymm demo --arch i386-pae   # on the boards "
                       "of the report", formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arch(d)
    d.add_argument("--no-host", action="store_true", help="do not compile and run Kirill's program here")
    d.add_argument("--execs", type=_positive_int, default=2048, help="execs in Naresh's loop (default 2048)")
    d.set_defaults(func=cmd_demo)

    f = sub.add_parser("fuzz", help="search syscall programs for a kernel's bugs",
                       description="Run random mmap/mremap/munmap/mprotect/madvise/access programs under a "
                       "kernel and look for a broken invariant (pymm.check) or a kernel warning.  A hit is "
                       "shrunk to a minimal program and printed as a Python script and as a C program; the "
                       "exit status is then 1.  Exit 0: nothing found within the budget.",
                       epilog="examples:\n  pymm fuzz --kernel 5.8+linus-v2\n"
                       "  pymm fuzz --kernel 6.18 --seconds 30\n"
                       "  pymm fuzz --kernel 6.18 --seconds 600 --workers 2      # a campaign on 2 processes\n"
                       "  pymm fuzz --kernel 6.18 --scheduler tcp://HOST:8786    # ... on a Dask cluster\n"
                       "  pymm fuzz --kernel mykernels:mine     # a Kernel of your own",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("--kernel", type=_kernel_arg, default="6.18",
                   help="catalogue name, or module:attribute of your own pymm.Kernel (default 6.18)")
    f.add_argument("--max-examples", type=_positive_int, default=50000,
                   help="programs to try, at least 1 (default 50000)")
    f.add_argument("--seconds", type=_seconds, default=60.0, help="time budget, above 0 (default 60)")
    f.add_argument("--seed", type=int, default=0, help="search seed (default 0)")
    f.add_argument("--ops", type=_positive_int, default=10,
                   help="longest program, at least 1 call (default 10)")
    f.add_argument("--save", metavar="PREFIX", help="also write PREFIX.py and PREFIX.c (a campaign's "
                   "further findings: PREFIX-2.py, ...)")
    _add_scale_out(f, "campaign: seeded tasks of up to 4000 programs each")
    _add_arch(f)
    f.set_defaults(func=cmd_fuzz)

    from pymm import bench as _bench, show as _show  # noqa: E402  (they add their own subcommands)
    _bench.add_parser(sub, _size)
    _show.add_parser(sub, _kernel_arg)
    add_sweep_parser(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(join_negative_values(sys.argv[1:] if argv is None else list(argv)))
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    if isinstance(getattr(args, "kernel", None), str):
        args.kernel = _kernel_arg(args.kernel)
    bad = check_outputs(args)
    if bad:
        print(f"pymm {args.command}: {bad}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
