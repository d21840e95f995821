"""The thread's scenarios, each a function that runs one kernel and reports.

Every function takes a kernel (a name from :data:`pymm.KERNELS` or a
:class:`pymm.Kernel` of your own) and returns a :class:`Result`: the
warnings (kernel-style lines), the move counters, whether the data came
through intact, the orphan entries and other broken invariants, segfaults
and failures.

1. :func:`stack_shift_warning`: exec's overlapping stack shift, the WARNING.
2. :func:`kirill_test_case`: Kirill's C program (PTE outside every VMA).
3. :func:`kirill_move_up`: the "move up" example that corrupts data.
4. :func:`naresh_runs`: an LTP-like loop of execs, how often it warns.
5. :func:`pte_none_regression`: extra ``pte_none`` slots on small mremaps.

Example::

    >>> from pymm import scenarios
    >>> r = scenarios.stack_shift_warning("5.8")
    >>> r.warned, r.data_intact
    (True, True)
    >>> print(r.warnings[0])
    WARNING: CPU: 0 PID: 1 at mm/mremap.c:211 move_page_tables+0x6ef/0x720  (...)
"""
from __future__ import annotations

import random
import warnings as _warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

import mmcore
from pymm import constants as C
from pymm.check import check
from pymm.errors import SegmentationFault
from pymm.kernels import get_kernel
from pymm.machine import Machine
from pymm.mm import MM

MiB = 1 << 20
PAGE = 4096
PMD = 2 * MiB


@dataclass
class Result:
    """What a scenario found under one kernel."""

    scenario: str
    kernel: str
    outcome: str
    warnings: List[str] = field(default_factory=list)
    stats: Dict[str, int] = field(default_factory=dict)
    data_intact: Optional[bool] = None
    orphans: List[int] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)
    segfaults: Dict[str, str] = field(default_factory=dict)
    error: Optional[str] = None
    details: Dict[str, object] = field(default_factory=dict)

    @property
    def warned(self) -> bool:
        return bool(self.warnings)

    def __str__(self):
        return f"[{self.kernel}] {self.scenario}: {self.outcome}"


def _quiet(fn):
    """Run fn with pymm's KernelWarnings recorded, not printed (the result
    carries them)."""
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        return fn()


def _finish(res: Result, mm: MM) -> Result:
    res.warnings = [str(w) for w in mm.warnings]
    res.stats = dict(mm.stats)
    problems = check(mm)
    res.problems = [str(p) for p in problems]
    res.orphans = sorted({p.address for p in problems if p.invariant == "orphan-pte"})
    return res


# -- stages: a scenario's address space, and the move still to run ----------------------
@dataclass
class Stage:
    """A scenario split in two: the address space it sets up, and the move
    it then runs (``act()``).  Pictures and ``pymm show`` look at ``mm``
    before and after; ``window`` is the address range worth drawing.
    ``first_step()``, where given, runs instead of ``act()`` only as far as
    the move loop's first extent: the state the second extent meets.

    Example::

        >>> st = stack_shift_stage("5.8")
        >>> before = st.mm.describe()
        >>> st.act()
        >>> st.mm.stats["pmd_moves"]
        0
    """

    name: str
    mm: MM
    act: Callable[[], object]
    window: Tuple[int, int]
    first_step: Optional[Callable[[], object]] = None
    details: Dict[str, int] = field(default_factory=dict)


def _mm(kernel, arch: str) -> MM:
    """A one-process machine of that kernel and arch."""
    return MM(kernel=get_kernel(kernel), arch=arch)


def _scale(mm: MM) -> int:
    """The arch's PMD in x86-64 PMDs: the thread's offsets are scaled by it,
    so each scenario keeps its shape (1 on x86-64, 16 on arm64-16k)."""
    return max(1, mm.pmd_size // PMD)


def _low(mm: MM, addr: int) -> int:
    """The thread's 64-bit addresses (4 GiB, 5 GiB, 8 GiB) moved below 3 GiB
    on a 32-bit user space, keeping their PMD alignment."""
    return addr if mm.task_size > 16 << 30 else addr // 4


def stack_shift_stage(kernel="5.8", *, stack_bytes: Optional[int] = None, shift: Optional[int] = None,
                      stack_top: Optional[int] = None, arch: str = "x86_64") -> Stage:
    """The stack VMA of a new exec, and its shift down by ``shift`` (see
    :func:`stack_shift_warning`)."""
    mm = _mm(kernel, arch)
    pmd = mm.pmd_size
    if stack_bytes is None:     # two PMDs, and half one more where the top is PMD-aligned (i386,
        aligned_top = not (mm.stack_top if stack_top is None else stack_top) & (pmd - 1)
        stack_bytes = 2 * pmd + (pmd // 2 if aligned_top else 0)   # arm64): off a boundary
    shift = pmd if shift is None else shift
    start = mm.setup_exec_stack(arg_bytes=stack_bytes, top=stack_top)
    top = mm.maps()[0].end
    boundary = (start + pmd - 1) & ~(pmd - 1)
    window = ((start - shift) & ~(pmd - 1), (top + pmd - 1) & ~(pmd - 1))
    first = (lambda: mm.shift_arg_pages(start, shift, partial=boundary - start)) if boundary != start else None
    return Stage("stack shift", mm, lambda: mm.shift_arg_pages(start, shift), window, first,
                 {"old_start": start, "old_end": top, "shift": shift})


# -- 1. the WARNING -----------------------------------------------------------------------
def stack_shift_warning(kernel="5.8", *, stack_bytes: Optional[int] = None, shift: Optional[int] = None,
                        stack_top: Optional[int] = None, arch: str = "x86_64") -> Result:
    """Exec's stack shift over an overlapping range.

    The stack VMA starts off a PMD boundary and spans more than a PMD; the
    shift is a multiple of PMD_SIZE and smaller than the stack::

        new_start        old_start  B1              old_end
           |<--- shift --->|--------|---- full PMD ---|--...
        the first extent is per-PTE (old_start is off a boundary): its
        source PTE table, in the PMD just below B1, is left empty; then the
        PMD-sized extent at B1 moves to that very PMD, whose table is still
        there: WARN_ON(!pmd_none(*new_pmd)).

    ``stack_top`` defaults to the arch's STACK_TOP_MAX (x86-64: task_size,
    which ends ...fff000, off a PMD boundary; i386: 0xC0000000, aligned);
    ``stack_bytes`` to two PMDs of the arch (and half one more where the
    top is PMD-aligned, so that the start is off a boundary), ``shift`` to
    one PMD.
    """
    st = stack_shift_stage(kernel, stack_bytes=stack_bytes, shift=shift, stack_top=stack_top, arch=arch)
    mm, start, top = st.mm, st.details["old_start"], st.details["old_end"]
    shift = st.details["shift"]
    res = Result(st.name, mm.kernel.name, "")
    npages = (top - start) // mm.page_size
    before = mmcore.page_tags(mm.engine, start, npages)
    mm.reset_stats()
    try:
        _quiet(st.act)
    except OSError as e:
        res.error = f"shift_arg_pages failed: {e.strerror.split(' [')[0]} (exec would abort)"
    after = mmcore.page_tags(mm.engine, start - shift, npages)
    res.data_intact = bool(np.array_equal(before, after))
    _finish(res, mm)
    bits = []
    if res.warned:
        bits.append(f"WARNING x{len(res.warnings)} at {mm.warnings[0].location}")
    else:
        bits.append("no warning")
    bits.append(f"{res.stats['pmd_moves']} PMD / {res.stats['pte_moves']} PTE moves")
    bits.append("data intact" if res.data_intact else "DATA CORRUPTED")
    if res.error:
        bits.append("exec fails with ENOMEM")
    res.outcome = ", ".join(bits)
    res.details = dict(st.details)
    return res


# -- 2. Kirill's C test case -------------------------------------------------------------
KIRILL_C = r"""#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define SRC_ADDR ((char *)(4UL << 30))
#define DST_ADDR ((char *)(5UL << 30))


int main(void)
{
	mmap(SRC_ADDR, 2UL << 20, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	madvise(SRC_ADDR, 2UL << 20, MADV_NOHUGEPAGE);
	memset(SRC_ADDR, 0x33, 2UL << 20);

	mremap(SRC_ADDR + 4096, 4096, 4096, MREMAP_MAYMOVE | MREMAP_FIXED,
		     DST_ADDR + 4096);
	printf("0: %#x 4096: %#x\n", DST_ADDR[0], DST_ADDR[4096]);
	return 0;
}
"""

SRC_ADDR, DST_ADDR = 4 << 30, 5 << 30


def _read_byte(mm, addr):
    try:
        return mm.read(addr, 1)[0]
    except SegmentationFault as f:
        return f"SIGSEGV ({f.code})"


def kirill_stage(kernel="6.18", *, arch: str = "x86_64") -> Stage:
    """Kirill's program up to its mremap(), which ``act()`` runs (on another
    arch: one PMD of that arch, one page of it moved)."""
    mm = _mm(kernel, arch)
    src, dst, pmd, page = _low(mm, SRC_ADDR), _low(mm, DST_ADDR), mm.pmd_size, mm.page_size
    mm.mmap(src, pmd, C.PROT_READ | C.PROT_WRITE, C.MAP_PRIVATE | C.MAP_ANONYMOUS)
    mm.madvise(src, pmd, C.MADV_NOHUGEPAGE)
    mm.memset(src, 0x33, pmd)
    return Stage("Kirill's test case", mm,
                 lambda: mm.mremap(src + page, page, page, C.MREMAP_MAYMOVE | C.MREMAP_FIXED, dst + page),
                 (src, dst + pmd), details={"src": src, "dst": dst})


def kirill_test_case(kernel="6.18", *, arch: str = "x86_64") -> Result:
    """Kirill's program from the thread, call for call.

    Correct kernels: DST[0] segfaults (nothing is mapped there) and
    DST[4096] == 0x33.  Linus's v2 aligns the one-page move down to the
    PMD and drags SRC's first PTE along: DST[0] reads 0x33 from a PTE
    outside every VMA, and SRC[0] has lost its page (it reads 0 now).
    """
    st = kirill_stage(kernel, arch=arch)
    mm = st.mm
    src, dst, page = st.details["src"], st.details["dst"], mm.page_size
    res = Result(st.name, mm.kernel.name, "")
    _quiet(st.act)
    # printf("0: %#x 4096: %#x") reads DST[0] first: on a correct kernel that
    # faults, so read DST[4096] separately, and SRC[0] before the check.
    _finish(res, mm)
    dst0, dst4096 = _read_byte(mm, dst), _read_byte(mm, dst + page)
    src0 = _read_byte(mm, src)
    res.segfaults = {k_: v for k_, v in (("DST[0]", dst0), ("DST[4096]", dst4096)) if isinstance(v, str)}
    res.details = {"DST[0]": dst0, "DST[4096]": dst4096, "SRC[0]": src0}
    res.data_intact = src0 == 0x33 and dst4096 == 0x33
    d0 = dst0 if isinstance(dst0, str) else f"{dst0:#x}"
    res.outcome = (f"DST[0] = {d0}, DST[4096] = {dst4096:#x}" if not isinstance(dst4096, str)
                   else f"DST[0] = {d0}, DST[4096] = {dst4096}")
    if res.orphans:
        res.outcome += f"; PTE outside every VMA at {res.orphans[0]:#x}; SRC[0] lost its page ({src0:#x})"
    return res


# -- 3. Kirill's move-up example ----------------------------------------------------------
MOVE_UP_BASE = 1 << 30


def kirill_move_up(kernel="5.8+linus-v2", *, aligned: bool = False, arch: str = "x86_64") -> Result:
    """Kirill's example: old=0x0123000, new=0x1123000, len=0x1000000, inside
    one VMA as in the stack relocation case (offset by 1 GiB, since page 0
    is not mappable), with the VMA's first 0x1123000 bytes populated.

    As given, the move is adjacent, not overlapping.  Linus's
    try_to_align_start() turns it into old=0x0, new=0x1000000,
    len=0x1123000: an upward overlap.  The first PMD-sized extent meets the
    destination's established table (the WARN Kirill predicted), falls back
    to move_ptes(), and, walking forwards, overwrites the entries of pages
    it has not moved yet.  ``aligned=True`` runs those aligned parameters on
    every kernel: Kirill's PATCHv2 then says WARN_ON(overlaps) instead.
    On an arch with bigger PMDs every offset is scaled by PMD / 2 MiB.

        0x0000000   0x0123000          0x1000000   0x1123000        0x2123000
        |-----------|-------- source ---|----------|...... destination ....|
        aligned:   [old_addr ...................... old_end)
                               [new_addr .............................)
    """
    k = get_kernel(kernel)
    mm = _mm(k, arch)
    f, b = _scale(mm), MOVE_UP_BASE
    o1, o2, n16 = 0x0123000 * f, 0x1123000 * f, 0x1000000 * f
    old, new, length = b + o1, b + o2, n16
    if aligned:
        old, new, length = b, b + n16, o2
    res = Result("Kirill's move-up" + (" (aligned)" if aligned else ""), k.name, "")
    # scaled up (64 KiB pages: 8.5 GiB) the area is larger than a small
    # machine's RAM: NORESERVE, so the heuristic overcommit does not refuse it
    noreserve = C.MAP_NORESERVE if f > 1 else 0
    mm.mmap(b, 0x2200000 * f, C.PROT_READ | C.PROT_WRITE,
            C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED | noreserve)
    mm.madvise(b, 0x2200000 * f, C.MADV_NOHUGEPAGE)
    mm.stamp(b, o2)
    npages = n16 // mm.page_size
    before = mmcore.page_tags(mm.engine, b + o1, npages)
    mm.reset_stats()
    moved = _quiet(lambda: mm.move_page_tables(b + o1, b + o2, n16)
                   if not aligned else mm.move_page_tables(old, new, length))
    after = mmcore.page_tags(mm.engine, b + o2, npages)
    res.data_intact = bool(np.array_equal(before, after))
    _finish(res, mm)
    res.details = {"moved": moved, "old": old, "new": new, "len": length}
    bits = ["data intact" if res.data_intact else "DATA CORRUPTED"]
    wrong = int(np.count_nonzero(after != before))
    if wrong:
        bits.append(f"{wrong} of {npages} destination pages wrong")
    bits.append(f"WARNING at {mm.warnings[0].location}" if res.warned else "no warning")
    res.outcome = ", ".join(bits)
    return res


# -- 4. Naresh's runs ---------------------------------------------------------------------
I386_STACK_TOP = 0xC0000000   # STACK_TOP_MAX on i386: PMD-aligned
I386_STACK_RND_PAGES = 0x7FF  # STACK_RND_MASK for 32-bit tasks: 8 MiB of randomisation


@dataclass
class ExecLoop:
    """An LTP-like loop of execs under one kernel."""

    kernel: str
    execs: int
    hits: int                   # execs where the WARN condition fired
    printed: int                # warnings a console would show (WARN_ON_ONCE: one per boot)
    failed: int                 # execs where shift_arg_pages() returned an error
    corrupted: int
    pmd_moves: int
    first_warning: Optional[str]
    shifts_that_warned: List[int]

    @property
    def rate(self) -> str:
        return f"1 in {self.execs / self.hits:.0f}" if self.hits else "never"

    def __str__(self):
        return (f"[{self.kernel}] {self.execs} execs: warning condition {self.hits}x ({self.rate}), "
                f"printed {self.printed}x, exec failures {self.failed}, corrupted {self.corrupted}")


def random_stack_shift(rnd: random.Random, rnd_pages: int = I386_STACK_RND_PAGES, page: int = PAGE) -> int:
    """setup_arg_pages()'s stack_shift = STACK_TOP_MAX - stack_top, where
    stack_top = PAGE_ALIGN(arch_align_stack(randomize_stack_top(STACK_TOP))):
    a random number of pages (STACK_RND_MASK), then up to 8 KiB more
    (arch_align_stack), rounded back up to a page."""
    shift = (rnd.getrandbits(32) & rnd_pages) * page
    jitter = rnd.randrange(8192) & ~0xF
    return shift + ((jitter + page - 1) // page) * page


def naresh_runs(kernel="5.8", *, execs: int = 2048, arg_bytes: int = 9 * MiB, seed: int = 0,
                stack_top: Optional[int] = None, rnd_pages: int = I386_STACK_RND_PAGES,
                arch: str = "x86_64") -> ExecLoop:
    """An LTP-like loop of execs with large arguments and a randomised stack
    top, as on Naresh's i386 boards (PAE: 2 MiB PMDs, a PMD-aligned
    STACK_TOP_MAX): each exec shifts the stack by a random, page-granular
    amount of up to 8 MiB (:func:`random_stack_shift`).  1 shift in 512 is
    a multiple of PMD_SIZE; with arguments larger than the shift the ranges
    overlap and 5.8 warns: about once in 512 execs.  Seedable.

    All execs run on one :class:`pymm.Machine`, so a WARN_ON_ONCE prints
    once for the loop, as on the board.  ``arch="i386-pae"`` (or
    ``"i386"``) runs them on the board's own geometry; by default x86-64
    stands in, with i386's stack top.
    """
    k = get_kernel(kernel)
    machine = Machine(kernel=k, arch=arch)   # one boot: a WARN_ON_ONCE prints once
    page = machine.geometry.page_size
    if stack_top is None:                    # x86-64 stands in for the i386 board by default
        stack_top = I386_STACK_TOP if arch == "x86_64" else machine.arch_info.stack_top
    rnd = random.Random(seed)
    hits = failed = corrupted = pmd_moves = 0
    shifts: List[int] = []
    for _ in range(execs):
        mm = machine.spawn()
        start = mm.setup_exec_stack(arg_bytes=arg_bytes, top=stack_top)
        shift = random_stack_shift(rnd, rnd_pages, page)
        npages = (stack_top - start) // page
        before = mmcore.page_tags(mm.engine, start, npages)
        try:
            _quiet(lambda: mm.shift_arg_pages(start, shift))
        except OSError:
            failed += 1
        if not np.array_equal(before, mmcore.page_tags(mm.engine, start - shift, npages)):
            corrupted += 1
        pmd_moves += mm.stats["pmd_moves"]
        if mm.stats["warnings"]:             # the condition hit, printed or not
            hits += 1
            shifts.append(shift)
    printed = len(machine.warnings)
    first = str(machine.warnings[0]) if machine.warnings else None
    return ExecLoop(k.name, execs, hits, printed, failed, corrupted, pmd_moves, first, shifts)


# -- 5. Kirill's regression concern ---------------------------------------------------------
def pte_none_regression(kernel="5.8+linus-v4", *, pages: int = 8, offset: Optional[int] = None,
                        arch: str = "x86_64") -> Result:
    """A small mremap from the start of a VMA that sits ``offset`` into its
    PMD, to a mutually aligned destination.

    Linus's patches align the start down to the PMD even though no
    PMD-sized extent follows: move_ptes() then walks every pte_none() slot
    from the PMD start.  6.7's can_realign_addr() only realigns when the
    copy reaches the next PMD boundary.  Measured in PTE slots visited.
    ``offset`` defaults to half the arch's PMD (1 MiB on x86-64).
    """
    k = get_kernel(kernel)
    mm = _mm(k, arch)
    offset = mm.pmd_size // 2 if offset is None else offset
    src = _low(mm, 4 << 30) + offset
    dst = _low(mm, 8 << 30) + offset
    n = pages * mm.page_size
    mm.mmap(src, n, C.PROT_READ | C.PROT_WRITE, C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED)
    mm.memset(src, 0x5A, n)
    mm.reset_stats()
    _quiet(lambda: mm.mremap(src, n, n, C.MREMAP_MAYMOVE | C.MREMAP_FIXED, dst))
    res = Result("small-mremap pte_none", k.name, "")
    res.data_intact = mm.read(dst, n) == b"\x5a" * n
    _finish(res, mm)
    slots = res.stats["pte_slots_visited"]
    res.details = {"pte_slots_visited": slots, "ptes_moved": res.stats["pte_moves"], "pages": pages}
    res.outcome = f"{slots} PTE slots visited for {pages} pages ({slots / pages:.0f}x)"
    return res


SCENARIOS = {
    "stack shift": stack_shift_warning,
    "Kirill's test case": kirill_test_case,
    "Kirill's move-up": kirill_move_up,
    "small-mremap pte_none": pte_none_regression,
}
