"""``pymm show``: a scenario's page tables, printed.

Sets up a scenario, runs it to a phase and prints what ``mm.describe()``
found (:mod:`pymm.describe`: merged ranges, per-level fill, empty tables,
orphans), the maps and any walks asked for; ``--json`` for machines,
``--demo`` for pictures (:mod:`pymm.pictures`).

Example::

    $ pymm show kirill --kernel 5.8+linus-v2 --walk 0x140000000
"""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import List, Optional

from pymm.arches import ARCHES


# -- pymm show ---------------------------------------------------------------------------------
def _stages():
    from pymm import scenarios
    return {"stack-shift": scenarios.stack_shift_stage, "kirill": scenarios.kirill_stage}


def _address(value: str) -> int:
    try:
        return int(value, 0)
    except ValueError:
        import argparse
        raise argparse.ArgumentTypeError(f"not an address: {value!r} (try 0x7fffffa00000)")


def bad_walk_address(addrs, geometry) -> Optional[str]:
    """A one-line complaint about the first address outside ``geometry``'s
    address space, or None when every address can be walked."""
    limit = 1 << geometry.va_bits
    for a in addrs:
        if not 0 <= a < limit:
            shown = f"{a:#x}" if a >= 0 else str(a)
            return (f"--walk {shown}: not an address on {geometry.name} "
                    f"({geometry.va_bits}-bit virtual addresses: 0x0-{limit - 1:#x})")
    return None


ARM64_LEGEND = """descriptor bits: valid, table (bit 1: a table, or a page at the last level; clear in a
  block), AP[1]=EL0 user access, AP[2]=RO read-only, AF access flag, nG not global, DBM writable
  (dirty bit management), PXN/UXN privileged/user execute never, DIRTY/PROT_NONE Linux's software
  bits, PXNTable no privileged execution below this table"""

FLAG_LEGEND = """flags: P present, RW writable, US user, A accessed, D dirty, PS page size (a huge leaf:
  2M in a pmd, 1G in a pud), G global (PROTNONE in a non-present entry: PROT_NONE),
  SPECIAL no struct page (pte_special), SD soft-dirty, NX no execute"""

EXEC_ENOMEM = ("exec fails here: shift_arg_pages() returned ENOMEM, so exec gives up and the "
               "process is killed (SIGSEGV); the tables below are as they were when it failed")


def run_phase(step) -> Optional[str]:
    """Run a stage's step with kernel warnings recorded, not printed.  An
    error the kernel reports (exec's ENOMEM) is a result: returns its text."""
    import warnings as _warnings
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        try:
            if step is not None:
                step()
        except OSError as e:
            if "shift_arg_pages" in str(e):
                return EXEC_ENOMEM
            return f"the move failed: {e}"
    return None


def demo_conflicts(args) -> List[str]:
    """The options ``--demo`` would ignore, as given on the command line."""
    given = []
    if args.scenario != "stack-shift":
        given.append(f"scenario {args.scenario!r}")
    for opt, default in (("json", False), ("all", False), ("walk", []), ("phase", "after")):
        if getattr(args, opt) != default:
            given.append("--" + opt)
    if args.kernel is not None:
        given.append("--kernel (use --kernels)")
    return given


def host_soft_dirty() -> Optional[bool]:
    """Whether this machine's kernel sets pagemap's soft-dirty bit 55
    (CONFIG_MEM_SOFT_DIRTY): writes a page in a HostMM child and reads the
    bit back.  None where HostMM cannot run.

    Example::

        >>> host_soft_dirty() in (True, False, None)
        True
    """
    from pymm import constants as C
    from pymm import host
    if not host.available():
        return None
    with host.HostMM() as h:
        a = h.mmap(0, 4096, C.PROT_READ | C.PROT_WRITE, C.MAP_PRIVATE | C.MAP_ANONYMOUS)
        h.write(a, b"x")
        return bool(int(h.pagemap(a, 4096)[0]) >> 55 & 1)


def demo_only(args) -> List[str]:
    """The --demo options given without --demo."""
    return [f"--{o}" for o in ("kernels", "out", "format") if getattr(args, o) is not None]


def fill_demo_defaults(args) -> None:
    """--kernels 5.8,6.7, --out . and --format png unless given."""
    from pymm.kernels import get_kernel
    if args.kernels is None:
        args.kernels = [get_kernel("5.8"), get_kernel("6.7")]
    args.out = "." if args.out is None else args.out
    args.format = args.format or "png"


def cmd_show(args) -> int:
    import sys
    if not args.demo and demo_only(args):
        print(f"pymm show: {', '.join(demo_only(args))} only go with --demo", file=sys.stderr)
        return 2
    if args.demo:
        bad = demo_conflicts(args)
        if bad:
            print(f"pymm show: --demo draws the stack shift for --kernels; it cannot take "
                  f"{', '.join(bad)}", file=sys.stderr)
            return 2
        from pymm.pictures import stack_shift_pictures
        fill_demo_defaults(args)
        for path in stack_shift_pictures(args.kernels, out_dir=args.out, fmt=args.format, arch=args.arch):
            print(path)
        return 0
    stage = _stages()[args.scenario](args.kernel or "5.8", arch=args.arch)
    mm = stage.mm
    bad = bad_walk_address(args.walk, mm.geometry)
    if bad:
        print(f"pymm show: {bad}", file=sys.stderr)
        return 2
    step = {"before": None, "first": stage.first_step, "after": stage.act}[args.phase]
    if args.phase == "first" and step is None:
        print(f"{args.scenario} has no separate first extent", file=sys.stderr)
        return 2
    failed = run_phase(step)
    d = mm.describe(check=args.phase != "first")
    walks = [mm.walk(a) for a in args.walk]
    if args.json:
        out = d.as_dict()
        out["scenario"], out["phase"] = args.scenario, args.phase
        out["error"] = failed
        out["warnings"] = [str(w) for w in mm.warnings]
        out["walks"] = [{"addr": w.addr, "frame": w.frame, "steps": [asdict(s) for s in w]} for w in walks]
        print(json.dumps(out, indent=1))
        return 0
    print(f"scenario {args.scenario!r}, {args.phase}, kernel {mm.kernel.name}, arch {mm.arch}")
    if failed:
        print(failed)
    for w in mm.warnings:
        print(w)
    print()
    print(mm.format_maps(), end="")
    print()
    print(d.format(max_rows=None if args.all else 40))
    for w in walks:
        print()
        print(w)
    if walks:
        print()
        print(ARM64_LEGEND if mm.machine.arch_info.entry_format == "arm64" else FLAG_LEGEND)
    return 0


SHOW_HELP = """examples:
  pymm show                                  # the stack shift under 5.8, after the move
  pymm show --phase first                    # ... as the second extent finds it: an empty table
  pymm show kirill --kernel 5.8+linus-v2     # the orphan PTE of Kirill's test case
  pymm show --walk 0x7fffffa00000            # and a walk, level by level
  pymm show --phase first --json | jq .empty_tables   # the table the second extent meets
  pymm show --demo --out pics/               # before/after pictures (needs matplotlib)
"""


def add_parser(sub, kernel_arg) -> None:
    """Register ``pymm show`` on the CLI's subparsers."""
    import argparse
    p = sub.add_parser(
        "show", help="page tables as merged ranges, walks, and pictures",
        description="Set up a scenario, run it to a phase, and print its page tables as merged "
        "ranges (4K/2M/1G, permissions, frame runs), per-level fill, empty tables kept alive and "
        "orphan entries.  --demo draws before/after pictures of the stack shift instead.",
        epilog=SHOW_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", nargs="?", default="stack-shift", choices=sorted(_stages()),
                   help="what to set up (default stack-shift)")
    p.add_argument("--kernel", type=kernel_arg, default=None,
                   help="catalogue name or module:attribute (default 5.8)")
    p.add_argument("--arch", choices=list(ARCHES), default="x86_64",
                   help="paging geometry and user space of an arch (default x86_64)")
    p.add_argument("--phase", choices=("before", "first", "after"), default="after",
                   help="before the move, after the loop's first extent, or after it (default)")
    p.add_argument("--walk", type=_address, action="append", default=[], metavar="ADDR",
                   help="also trace the walk of ADDR (repeatable)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--all", action="store_true", help="list every range (default: the first 40)")
    p.add_argument("--demo", action="store_true",
                   help="write pictures of the stack shift, before/after, one file per kernel")
    p.add_argument("--kernels", type=lambda v: [kernel_arg(k) for k in v.split(",")], default=None,
                   help="comma-separated kernels for --demo (default 5.8,6.7)")
    p.add_argument("--out", default=None, metavar="DIR", help="where --demo writes (default: here)")
    p.add_argument("--format", choices=("png", "svg"), default=None, help="picture format for --demo "
                   "(default png)")
    p.set_defaults(func=cmd_show)
