"""The pymm command line.

    pymm bench          the 1 GiB table: pymm beside this machine's kernel
    pymm demo           the July 2020 thread, replayed kernel by kernel
    pymm fuzz           search syscall programs for a kernel's bugs
    pymm show           page tables as merged ranges, and pictures
    pymm kernels        the kernel catalogue
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import List, Optional

EPILOG_MAIN = """examples:
  pymm bench                       # the 1 GiB mremap table, with this machine's kernel
  pymm demo                        # the thread's story, ending in a table
  pymm fuzz --kernel 5.8+linus-v2  # finds Kirill's overcopy, prints a C reproducer
  pymm show --demo --out pics/     # before/after pictures of the stack shift
"""


def _kernel_arg(value: str):
    """A catalogue name, or module:attribute naming a pymm.Kernel of your own."""
    from pymm.kernels import KERNELS, Kernel
    if value in KERNELS:
        return KERNELS[value]
    if ":" in value:
        mod, _, attr = value.partition(":")
        sys.path.insert(0, ".")
        try:
            k = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise argparse.ArgumentTypeError(f"cannot load {value}: {e}")
        if not isinstance(k, Kernel):
            raise argparse.ArgumentTypeError(f"{value} is a {type(k).__name__}, not a pymm.Kernel")
        return k
    raise argparse.ArgumentTypeError(f"unknown kernel {value!r} (choose from {', '.join(KERNELS)}, "
                                     "or module:attribute)")


def _size(value: str) -> int:
    """Sizes like 4096, 2M, 1G, 64GiB."""
    v = value.strip().upper().replace("IB", "").replace("B", "")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        if v and v[-1] in mult:
            return int(float(v[:-1]) * mult[v[-1]])
        return int(v, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {value!r} (try 1G, 512M, 4096)")


def cmd_kernels(args) -> int:
    from pymm.kernels import KERNELS
    for name, k in KERNELS.items():
        moves = ["PTE"] + (["PMD"] if k.pmd_moves else []) + (["PUD"] if k.pud_moves else [])
        print(f"{name:14s} {'/'.join(moves):12s} {k.models}")
        if k.notes:
            print(f"{'':14s} {'':12s} {k.notes}")
    return 0


def cmd_demo(args) -> int:
    from pymm.demo import demo
    return demo(sys.stdout, run_host=not args.no_host, execs=args.execs)


def cmd_fuzz(args) -> int:
    from pymm.fuzz import fuzz
    from pymm.progress import Progress
    kernel = args.kernel
    print(f"fuzzing kernel {kernel.name}: up to {args.max_examples} programs or {args.seconds:g} s "
          f"(seed {args.seed})", flush=True)
    with Progress("fuzz") as prog:
        hit = fuzz(kernel, max_examples=args.max_examples, seconds=args.seconds, seed=args.seed,
                   max_ops=args.ops, progress=lambda n, t: (setattr(prog, "done", n), prog.show()))
    if hit is None:
        print(f"no invariant violation or warning found under {kernel.name} "
              f"({args.max_examples} programs / {args.seconds:g} s budget)")
        return 0
    print(f"\nFOUND: {hit.summary()}\n")
    print("# --- reproducer: Python, against pymm " + "-" * 38)
    print(hit.python)
    print("/* --- reproducer: C, for a real kernel (gcc repro.c && ./a.out) " + "-" * 12 + " */")
    print(hit.c)
    if args.save:
        with open(args.save + ".py", "w") as f:
            f.write(hit.python)
        with open(args.save + ".c", "w") as f:
            f.write(hit.c)
        print(f"saved {args.save}.py and {args.save}.c")
    return 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pymm", description="Simulate what Linux does with page tables when memory moves: "
        "mremap() and exec's stack shift, at real scale, under kernels from 4.19 to 6.18.",
        epilog=EPILOG_MAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="command")

    k = sub.add_parser("kernels", help="list the kernel catalogue",
                       description="The kernels pymm models and what their move_page_tables() does.",
                       epilog="example:\n  pymm kernels", formatter_class=argparse.RawDescriptionHelpFormatter)
    k.set_defaults(func=cmd_kernels)

    d = sub.add_parser("demo", help="replay the July 2020 thread, kernel by kernel",
                       description="Tell the move_normal_pmd() thread's story: the WARNING, Kirill's fix, "
                       "Linus's patches, Kirill's test case (also run on this machine's kernel when gcc "
                       "exists), Naresh's runs, and what later kernels did.  Ends with a table.",
                       epilog="example:\n  pymm demo | less", formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--no-host", action="store_true", help="do not compile and run Kirill's program here")
    d.add_argument("--execs", type=int, default=2048, help="execs in Naresh's loop (default 2048)")
    d.set_defaults(func=cmd_demo)

    f = sub.add_parser("fuzz", help="search syscall programs for a kernel's bugs",
                       description="Run random mmap/mremap/munmap/mprotect/madvise/access programs under a "
                       "kernel and look for a broken invariant (pymm.check) or a kernel warning.  A hit is "
                       "shrunk to a minimal program and printed as a Python script and as a C program; the "
                       "exit status is then 1.  Exit 0: nothing found within the budget.",
                       epilog="examples:\n  pymm fuzz --kernel 5.8+linus-v2\n"
                       "  pymm fuzz --kernel 6.18 --seconds 30\n"
                       "  pymm fuzz --kernel mykernels:mine     # a Kernel of your own",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("--kernel", type=_kernel_arg, default="6.18",
                   help="catalogue name, or module:attribute of your own pymm.Kernel (default 6.18)")
    f.add_argument("--max-examples", type=int, default=50000, help="programs to try (default 50000)")
    f.add_argument("--seconds", type=float, default=60.0, help="time budget (default 60)")
    f.add_argument("--seed", type=int, default=0, help="search seed (default 0)")
    f.add_argument("--ops", type=int, default=10, help="longest program (default 10 calls)")
    f.add_argument("--save", metavar="PREFIX", help="also write PREFIX.py and PREFIX.c")
    f.set_defaults(func=cmd_fuzz)

    from pymm import bench as _bench, show as _show  # noqa: E402  (they add their own subcommands)
    _bench.add_parser(sub, _size)
    _show.add_parser(sub, _kernel_arg)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    if isinstance(getattr(args, "kernel", None), str):
        args.kernel = _kernel_arg(args.kernel)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
