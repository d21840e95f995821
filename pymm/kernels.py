"""The kernel catalogue: which ``move_page_tables()`` each kernel runs.

A :class:`Kernel` is data plus small hook functions.  Everything outside the
page-table move (VMA rules, errno) follows Linux 6.18; what differs is how the
move loop behaves:

* which whole-table moves exist (``move_normal_pmd``, ``move_normal_pud``);
* how the "destination already established" check warns (``WARN_ON`` each
  time, ``WARN_ON_ONCE``, silently) and where the kernel reports it;
* an overlap guard (Kirill's PATCHv2);
* an ``align`` hook that may move the start (and the length) before the
  loop, and whether it runs before or after ``old_end`` is computed;
* how the loop's progress becomes the return value (``len + old_addr -
  old_end`` up to 6.6; ``pmc_progress()`` since 6.7);
* whether ``MREMAP_FIXED`` may move several VMAs (6.17);
* where an anonymous mmap goes (``thp_align``: no THP alignment before
  6.7, any length >= PMD_SIZE in 6.7 (efa7df3e3bb5), PMD-multiple lengths
  since d4148aeab412) and whether ``MAP_STACK`` means ``VM_NOHUGEPAGE``
  (c4608d1bf7c6, 6.8);
* whether ``MADV_DONTNEED`` frees the PTE tables it empties
  (``pt_reclaim``: CONFIG_PT_RECLAIM, 6375e95f381e, 6.14; the arch must
  select ARCH_SUPPORTS_PT_RECLAIM, which only x86_64 does up to 6.18);
* what a write to the huge zero PMD gets (``huge_zero_wp_thp``): a THP in
  4.19 and since 6.13 (1ced09e0331f), a split and one copied 4 KiB page from
  5.8 (3917c80280c9, "thp: change CoW semantics for anon-THP") to 6.12.
  docs/kernels.md has the whole table.

Deriving a kernel of your own::

    >>> import pymm
    >>> def my_align(move):
    ...     # align the start down to the PMD when source and destination agree
    ...     # (Linus's idea, without any VMA checks: pymm.check will object)
    ...     off = move.old_addr & (move.pmd_size - 1)
    ...     if off and off == move.new_addr & (move.pmd_size - 1):
    ...         move.old_addr -= off
    ...         move.new_addr -= off
    ...         move.len += off
    >>> mine = pymm.KERNELS["5.8"].replace(name="5.8+mine", align=my_align)
    >>> mm = pymm.MM(kernel=mine, check=True)

Every scenario, check, benchmark and ``pymm fuzz --kernel`` works with it.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from collections import namedtuple
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import mmcore

U64 = (1 << 64) - 1

# Kernel.thp_align: how __get_unmapped_area() places an anonymous mapping
# without a hint.
THP_ALIGN_NONE = "none"                  # up to 6.6 (the 6.1-rc attempt f35b5d7d676e was reverted)
THP_ALIGN_ANY = "any"                    # 6.7: efa7df3e3bb5, any length >= PMD_SIZE
THP_ALIGN_PMD_MULTIPLE = "pmd-multiple"  # d4148aeab412: only lengths that are PMD multiples
THP_ALIGN_MODES = (THP_ALIGN_NONE, THP_ALIGN_ANY, THP_ALIGN_PMD_MULTIPLE)

# Kernel.mremap_dontunmap: which VMAs MREMAP_DONTUNMAP may move.
DONTUNMAP_NONE = "none"                  # before 5.7 (e346b3813067): the flag is EINVAL
DONTUNMAP_PRIVATE_ANON = "private-anon"  # 5.7-5.12: private anonymous VMAs only, else EINVAL
DONTUNMAP_ANY = "any"                    # 5.13+ (a4609387859f): all but VM_DONTEXPAND/VM_PFNMAP
DONTUNMAP_MODES = (DONTUNMAP_NONE, DONTUNMAP_PRIVATE_ANON, DONTUNMAP_ANY)

# Kernel.unmapped_area: how unmapped_area_topdown() treats a stack's guard gap.
UNMAPPED_AREA_RBTREE = "rbtree"          # before 6.1: every gap clipped by its upper VMA's guard gap
UNMAPPED_AREA_MAPLE = "maple"            # 58c5d0d6d522 (6.3): retry below a VM_GROWSDOWN neighbour's gap
UNMAPPED_AREA_MODES = (UNMAPPED_AREA_RBTREE, UNMAPPED_AREA_MAPLE)

WARN_SILENT = mmcore.WARN_SILENT
WARN_ON = mmcore.WARN_ON
WARN_ON_ONCE = mmcore.WARN_ON_ONCE

VmaView = namedtuple("VmaView", "start end vm_flags pgoff anon_vma shmem name")
VmaView.__doc__ = """A cheap read-only view of a VMA, what kernel hooks see (see PageTableMove).

Example::

    >>> a = mm.mmap(0, 8192, pymm.PROT_READ, pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
    >>> v = view(mm._tree.lookup(a))       # what move.old is for a move from a
    >>> v.start == a, v.end - v.start, v.anon_vma
    (True, 8192, None)
"""


def view(v) -> VmaView:
    """The VmaView of a pymm VMA (start, end, vm_flags, pgoff, anon, shm, name)."""
    return VmaView(v.start, v.end, v.vm_flags, v.pgoff, v.anon or None,
                   v.shm.owner if v.shm is not None else None, v.name)


class PageTableMove:
    """What a kernel's hooks see of one ``move_page_tables()`` call: the
    kernel's ``pagetable_move_control`` plus the VMAs around it.

    ``old_addr``, ``new_addr`` and ``len`` may be changed by an align hook;
    ``old_end`` is fixed at ``old_addr + len`` before the hook runs unless the
    kernel says ``align_before_old_end``.  ``old`` and ``new`` are the source
    and destination VMAs as read-only views (:class:`VmaView`:
    start, end, vm_flags, pgoff, anon_vma, shmem, name), possibly the same
    VMA for exec's stack shift; ``prev_of``/``next_of`` and
    ``find_vma_intersection`` look at their neighbours as the kernel's
    ``vm_prev``/``vm_next`` and ``find_vma_intersection()`` do.
    """

    __slots__ = ("old_addr", "new_addr", "len", "_old", "_new", "for_stack", "page_size",
                 "pmd_size", "pud_size", "old_end", "len_in", "mm")

    def __init__(self, old_addr: int, new_addr: int, len: int, old=None, new=None,
                 for_stack: bool = False, page_size: int = 4096, pmd_size: int = 2 << 20,
                 pud_size: int = 1 << 30, old_end: int = 0, len_in: int = 0, mm=None):
        self.old_addr, self.new_addr, self.len = old_addr, new_addr, len
        self._old, self._new, self.for_stack = old, new, for_stack
        self.page_size, self.pmd_size, self.pud_size = page_size, pmd_size, pud_size
        self.old_end = old_end or old_addr + len
        self.len_in = len_in or len
        self.mm = mm

    @property
    def old(self):
        """The source VMA (a read-only view), made when first asked for."""
        if self._old is not None and not isinstance(self._old, tuple):
            self._old = view(self._old)
        return self._old

    @property
    def new(self):
        """The destination VMA (a read-only view), made when first asked for."""
        if self._new is not None and not isinstance(self._new, tuple):
            self._new = view(self._new)
        return self._new

    def __repr__(self):
        return (f"PageTableMove(old_addr={self.old_addr:#x}, new_addr={self.new_addr:#x}, "
                f"len={self.len:#x}, old_end={self.old_end:#x}, for_stack={self.for_stack})")

    def prev_of(self, vma):
        """``vma->vm_prev`` (None at the bottom)."""
        return self.mm._prev_view(vma) if (self.mm is not None and vma is not None) else None

    def next_of(self, vma):
        """``vma->vm_next`` (None at the top)."""
        return self.mm._next_view(vma) if (self.mm is not None and vma is not None) else None

    def find_vma_intersection(self, start: int, end: int):
        """The first VMA intersecting [start, end), or None."""
        return self.mm._intersection_view(start, end) if self.mm is not None else None


# -- align hooks --------------------------------------------------------------------
def linus_try_to_align_range(check_start: bool, check_end: str) -> Callable[[PageTableMove], None]:
    """Linus's ``try_to_align_range()`` from the thread (July 2020).

    ``check_start``: v3's ``if (*old_addr > old->vm_start) return;`` in
    try_to_align_start().  ``check_end``: ``""`` (v2: none), ``"v3"``
    (``if (*old_addr < old->vm_end) return;``, as Naresh applied it) or
    ``"v4"`` (``if (*old_addr + *len < old->vm_end) return;``).

    The hook runs after ``old_end = old_addr + len``, so the loop still ends
    at the original old_end: **the length that try_to_align_end() computes
    never reaches the loop.**  It only inflates the 5.8 return value
    ``len + old_addr - old_end``.  mremap's ``moved_len < old_len`` test
    does not mind, but exec's ``length != move_page_tables()`` does: when the
    stack end is not PMD-aligned (x86-64's STACK_TOP_MAX ends ...fff000) the
    shift fails with -ENOMEM.  v2's start alignment inflates it the same way.
    """

    def before_prev(move, addr, vma):
        # ADDR_BEFORE_PREV(addr, vma): vma->vm_prev && addr < vma->vm_prev->vm_end
        prev = move.prev_of(vma)
        return prev is not None and addr < prev.end

    def after_next(move, addr, vma):
        # ADDR_AFTER_NEXT(addr, vma): vma->vm_next && addr > (PMD_MASK & vm_next->vm_start)
        nxt = move.next_of(vma)
        return nxt is not None and addr > (nxt.start & ~(move.pmd_size - 1))

    def try_to_align_start(move):
        mask = ~(move.pmd_size - 1)
        if check_start and move.old_addr > move.old.start:
            return
        if before_prev(move, move.old_addr & mask, move.old):
            return
        if before_prev(move, move.new_addr & mask, move.new):
            return
        # Bingo!
        move.len += move.new_addr & (move.pmd_size - 1)
        move.old_addr &= mask & U64
        move.new_addr &= mask & U64

    def try_to_align_end(move):
        if check_end == "v3" and move.old_addr < move.old.end:
            return
        if check_end == "v4" and move.old_addr + move.len < move.old.end:
            return
        if after_next(move, move.old_addr + move.len, move.old):
            return
        if after_next(move, move.new_addr + move.len, move.new):
            return
        # Mutual alignment means this is same for new/old addr
        end = (move.new_addr + move.len + move.pmd_size - 1) & ~(move.pmd_size - 1)
        move.len = (end - move.new_addr) & U64

    def try_to_align_range(move):
        if move.old is None or move.new is None:
            return
        if (move.old_addr ^ move.new_addr) & (move.pmd_size - 1):
            return
        try_to_align_start(move)
        try_to_align_end(move)

    try_to_align_range.__name__ = f"try_to_align_range_{'v4' if check_end == 'v4' else 'v3' if check_start else 'v2'}"
    return try_to_align_range


def can_align_down(move: PageTableMove, vma, addr_to_align: int, mask: int) -> bool:
    """mm/mremap.c can_align_down() (6.7, b1e5a3dee255 for the stack case)."""
    addr_masked = addr_to_align & mask
    # Not the start of the VMA: aligning down would eat part of the mapping.
    if not move.for_stack and vma.start != addr_to_align:
        return False
    # In the stack case we explicitly permit in-VMA alignment.
    if move.for_stack and addr_masked >= vma.start:
        return True
    # The realigned start must not fall on an existing mapping.
    return move.find_vma_intersection(addr_masked, vma.start) is None


def try_realign_addr(move: PageTableMove) -> None:
    """mm/mremap.c try_realign_addr()/can_realign_addr() (6.7, af8ca1c14906):
    align old_addr/new_addr down to the PMD when they are mutually aligned,
    the copy reaches the next PMD boundary and nothing lives in between.
    ``old_end`` stays, so only the start of the copy changes.

        boundary                        boundary
           .              |----------------.-----------|
           .              |          vma   .           |
      old_addr (aligned)  <- was old_addr   .      old_end
           <------------------------------------------->
                        move these page tables
    """
    align_mask = move.pmd_size - 1
    mask = ~align_mask & U64
    old_align = move.old_addr & align_mask
    new_align = move.new_addr & align_mask
    old_align_next = move.pmd_size - old_align
    if move.len_in < old_align_next:        # the copy must reach the boundary
        return
    if old_align == 0:                      # already aligned
        return
    if old_align != new_align:              # only mutually aligned moves
        return
    if move.old is None or move.new is None:
        return
    if not can_align_down(move, move.old, move.old_addr, mask) or \
            not can_align_down(move, move.new, move.new_addr, mask):
        return
    move.old_addr &= mask
    move.new_addr &= mask


# -- overlap guard --------------------------------------------------------------------
def kirill_overlap_guard(move: PageTableMove) -> tuple:
    """Kirill's PATCHv2: returns ``(allow_move_normal_pmd, warn_moving_up)``.

    shift_arg_pages() can call move_page_tables() on overlapping ranges; then
    move_normal_pmd() may meet an established destination PMD, so skip it.
    Moving up over an overlap would corrupt data: WARN_ON(overlaps).
    """
    if move.old_addr > move.new_addr:
        overlaps = move.old_addr - move.new_addr < move.len
        return (not overlaps, False)
    overlaps = move.new_addr - move.old_addr < move.len
    return (not overlaps, overlaps)


# -- return values ----------------------------------------------------------------------
def progress_len(move: PageTableMove, old_addr_after: int) -> int:
    """Up to 6.6: ``return len + old_addr - old_end; /* how much done */``,
    with whatever ``len`` the align hook left (unsigned arithmetic)."""
    return (move.len + old_addr_after - move.old_end) & U64


def pmc_progress(move: PageTableMove, old_addr_after: int) -> int:
    """6.7+: bytes of the *input* range done; 0 when a realigned start broke
    out of the loop before reaching it."""
    orig_old_addr = move.old_end - move.len_in
    return 0 if old_addr_after < orig_old_addr else old_addr_after - orig_old_addr


@dataclass(frozen=True)
class Warning_:
    """Where a warning site of a kernel reports (as its WARNING line would)."""

    location: str
    function: str
    message: str


@dataclass(frozen=True)
class Kernel:
    """One kernel version's ``move_page_tables()``: see the module docstring.

    Use :meth:`replace` to derive your own.
    """

    name: str
    models: str
    pmd_moves: bool = True
    pud_moves: bool = True
    pud_step: int = mmcore.PUD_STEP_ALWAYS
    pmd_warn: int = WARN_ON_ONCE
    pud_warn: int = WARN_ON_ONCE
    huge_pmd_warn: int = WARN_SILENT
    warn_sites: Dict[str, Warning_] = field(default_factory=dict, compare=False)
    overlap_guard: Optional[Callable] = None
    align: Optional[Callable] = None
    align_before_old_end: bool = False
    progress: Callable = pmc_progress
    exec_passes_for_stack: bool = True
    multi_vma_move: bool = True
    thp_align: str = THP_ALIGN_PMD_MULTIPLE
    map_stack_nohugepage: bool = True
    map_droppable: bool = True
    pt_reclaim: bool = True
    huge_zero_wp_thp: bool = True
    mseal: bool = True
    mremap_dontunmap: str = DONTUNMAP_ANY
    unmapped_area: str = UNMAPPED_AREA_MAPLE
    notes: str = ""
    # "module:attr" when loaded by get_kernel() from a user's module, so that
    # reproducers name the kernel in a form pymm.MM(kernel=...) accepts.
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self):
        """Every field checked when the Kernel is made, not when a move uses it."""
        for f in ("name", "models", "notes", "source"):
            if not isinstance(getattr(self, f), str):
                raise TypeError(f"Kernel.{f} must be a str, not {type(getattr(self, f)).__name__}")
        if not self.name:
            raise ValueError("Kernel.name must not be empty")
        for f in ("pmd_moves", "pud_moves", "align_before_old_end", "exec_passes_for_stack",
                  "multi_vma_move", "map_stack_nohugepage", "map_droppable", "mseal",
                  "pt_reclaim", "huge_zero_wp_thp"):
            if not isinstance(getattr(self, f), bool):
                raise TypeError(f"Kernel.{f} must be True or False, not {getattr(self, f)!r}")
        steps = (mmcore.PUD_STEP_NONE, mmcore.PUD_STEP_ALWAYS, mmcore.PUD_STEP_IF_PUD_SIZED)
        if type(self.pud_step) is not int or self.pud_step not in steps:
            raise ValueError(f"Kernel.pud_step must be one of mmcore.PUD_STEP_* {steps}, "
                             f"not {self.pud_step!r}")
        for f in ("pmd_warn", "pud_warn", "huge_pmd_warn"):
            v = getattr(self, f)
            if type(v) is not int or v not in (WARN_SILENT, WARN_ON, WARN_ON_ONCE):
                raise ValueError(f"Kernel.{f} must be WARN_SILENT, WARN_ON or WARN_ON_ONCE, not {v!r}")
        for f in ("overlap_guard", "align"):
            if getattr(self, f) is not None and not callable(getattr(self, f)):
                raise TypeError(f"Kernel.{f} must be a function or None")
        if not callable(self.progress):
            raise TypeError("Kernel.progress must be a function")
        if not isinstance(self.warn_sites, dict) or not all(
                isinstance(k, str) and isinstance(v, Warning_) for k, v in self.warn_sites.items()):
            raise TypeError("Kernel.warn_sites must map site names to Warning_s")
        unknown = set(self.warn_sites) - _SITE_KEYS
        if unknown:
            raise ValueError(f"Kernel.warn_sites: unknown sites {sorted(unknown)}; "
                             f"known: {sorted(_SITE_KEYS)}")
        if self.thp_align not in THP_ALIGN_MODES:
            raise ValueError(f"thp_align must be one of {THP_ALIGN_MODES}, not {self.thp_align!r}")
        if self.unmapped_area not in UNMAPPED_AREA_MODES:
            raise ValueError(f"unmapped_area must be one of {UNMAPPED_AREA_MODES}, not {self.unmapped_area!r}")
        if self.mremap_dontunmap not in DONTUNMAP_MODES:
            raise ValueError(f"mremap_dontunmap must be one of {DONTUNMAP_MODES}, "
                             f"not {self.mremap_dontunmap!r}")

    def replace(self, **changes) -> "Kernel":
        """A copy with some fields changed, e.g. ``replace(name="mine", align=f)``."""
        if "name" not in changes:
            changes["name"] = self.name + "+custom"
        return dataclasses.replace(self, **changes)

    def site(self, key: str) -> Warning_:
        default = {
            "pmd_not_none": Warning_("mm/mremap.c", "move_page_tables",
                                     "move_normal_pmd(): destination PMD already established"),
            "pud_not_none": Warning_("mm/mremap.c", "move_page_tables",
                                     "move_normal_pud(): destination PUD already established"),
            "huge_pmd_not_none": Warning_("mm/huge_memory.c", "move_huge_pmd",
                                          "move_huge_pmd(): destination PMD already established"),
            "overlap_up": Warning_("mm/mremap.c", "move_page_tables",
                                   "overlapping move up would corrupt data"),
        }
        return self.warn_sites.get(key, default[key])

    def __str__(self):
        return self.name


_SITE_KEYS = {"pmd_not_none", "pud_not_none", "huge_pmd_not_none", "overlap_up"}


def _pmd_site(line: str, function: str = "move_page_tables") -> Dict[str, Warning_]:
    return {"pmd_not_none": Warning_(f"mm/mremap.c:{line}", function,
                                     "move_normal_pmd(): destination PMD already established")}


def _pgt_entry_sites() -> Dict[str, Warning_]:
    """5.11+ (c49dd3401802): move_normal_pmd()/move_normal_pud() are static
    helpers of move_pgt_entry() and inlined there, so the WARNING line names
    move_pgt_entry.  Line numbers not established (see docs/kernels.md)."""
    return {"pmd_not_none": Warning_("mm/mremap.c", "move_pgt_entry",
                                     "move_normal_pmd(): destination PMD already established"),
            "pud_not_none": Warning_("mm/mremap.c", "move_pgt_entry",
                                     "move_normal_pud(): destination PUD already established")}


_NO_PMD_MOVES = dict(pmd_moves=False, pud_moves=False, pud_step=mmcore.PUD_STEP_NONE,
                     pmd_warn=WARN_SILENT, pud_warn=WARN_SILENT, huge_pmd_warn=WARN_ON,
                     progress=progress_len, exec_passes_for_stack=False, multi_vma_move=False,
                     thp_align=THP_ALIGN_NONE, map_stack_nohugepage=False, map_droppable=False,
                     pt_reclaim=False,
                     mseal=False, mremap_dontunmap=DONTUNMAP_NONE, unmapped_area=UNMAPPED_AREA_RBTREE)
_V5_8 = dict(pmd_moves=True, pud_moves=False, pud_step=mmcore.PUD_STEP_NONE, pmd_warn=WARN_ON,
             pud_warn=WARN_SILENT, huge_pmd_warn=WARN_ON, progress=progress_len,
             exec_passes_for_stack=False, multi_vma_move=False,
             thp_align=THP_ALIGN_NONE, map_stack_nohugepage=False, map_droppable=False,
             pt_reclaim=False, huge_zero_wp_thp=False,
             mseal=False, mremap_dontunmap=DONTUNMAP_PRIVATE_ANON, unmapped_area=UNMAPPED_AREA_RBTREE)


def _catalogue():
    k = {}
    k["4.19"] = Kernel(
        "4.19", "before 2c91bd4a4e2e (\"mm: speed up mremap by 20x on large regions\")",
        **_NO_PMD_MOVES, notes="per-PTE moves only; THP leaves moved whole")
    k["5.8"] = Kernel(
        "5.8", "v5.8-rc5, the kernel of the thread (2c91bd4a4e2e's move_normal_pmd)",
        warn_sites=_pmd_site("211", "move_page_tables+0x6ef/0x720"), **_V5_8,
        notes="WARN_ON(!pmd_none(*new_pmd)) then per-PTE fallback")
    k["5.8+kirill"] = Kernel(
        "5.8+kirill", "the thread's [PATCHv2] mm: Fix warning in move_normal_pmd()",
        warn_sites={**_pmd_site("211"),
                    "overlap_up": Warning_("mm/mremap.c:266", "move_page_tables",
                                           "WARN_ON(overlaps): moving up over an overlap")},
        overlap_guard=kirill_overlap_guard, **_V5_8,
        notes="overlapping ranges never use move_normal_pmd()")
    # Naresh built Linus's patches on mainline of 16 July 2020, which carried
    # f81fdd0c4ab7: its 19-line comment moved the WARN to line 230 and made it
    # WARN_ON_ONCE.
    linus = dict(_V5_8, pmd_warn=WARN_ON_ONCE,
                 warn_sites=_pmd_site("230", "move_page_tables+0x818/0x840"))
    k["5.8+linus-v2"] = Kernel(
        "5.8+linus-v2", "Linus's second patch: try_to_align_range() after old_end, no VMA-limit checks",
        align=linus_try_to_align_range(check_start=False, check_end=""), **linus,
        notes="Kirill's test moves a PTE outside every VMA and loses a source page")
    k["5.8+linus-v3"] = Kernel(
        "5.8+linus-v3", "v2 + the incremental checks as Naresh applied them "
        "(*old_addr > old->vm_start, *old_addr < old->vm_end)",
        align=linus_try_to_align_range(check_start=True, check_end="v3"), **linus,
        notes="no overcopy; the stack-shift warning remains")
    k["5.8+linus-v4"] = Kernel(
        "5.8+linus-v4", "v3 with *old_addr + *len < old->vm_end in try_to_align_end()",
        align=linus_try_to_align_range(check_start=True, check_end="v4"), **linus,
        notes="same warning on the stack shift (Naresh's second test)")
    k["5.9"] = Kernel(
        "5.9", "f81fdd0c4ab7 \"mm: document warning in move_normal_pmd() and make it warn only once\"",
        warn_sites=_pmd_site("230"), **dict(_V5_8, pmd_warn=WARN_ON_ONCE),
        notes="as 5.8 with WARN_ON_ONCE")
    k["5.11"] = Kernel(
        "5.11", "c49dd3401802 + be37c98d1134: move_normal_pud(), HAVE_MOVE_PUD",
        pmd_moves=True, pud_moves=True, pud_step=mmcore.PUD_STEP_IF_PUD_SIZED,
        pmd_warn=WARN_ON_ONCE, pud_warn=WARN_ON_ONCE, huge_pmd_warn=WARN_ON,
        progress=progress_len, exec_passes_for_stack=False, multi_vma_move=False,
        thp_align=THP_ALIGN_NONE, map_stack_nohugepage=False, map_droppable=False, pt_reclaim=False,
        huge_zero_wp_thp=False, warn_sites=_pgt_entry_sites(),
        mseal=False, mremap_dontunmap=DONTUNMAP_PRIVATE_ANON, unmapped_area=UNMAPPED_AREA_RBTREE,
        notes="+ PUD-level moves when extent == PUD_SIZE")
    k["6.7"] = Kernel(
        "6.7", "af8ca1c14906 + b1e5a3dee255: try_realign_addr(), can_align_down(), for_stack",
        align=try_realign_addr, progress=pmc_progress, multi_vma_move=False,
        thp_align=THP_ALIGN_ANY, map_stack_nohugepage=False, map_droppable=False, pt_reclaim=False,
        huge_zero_wp_thp=False, warn_sites=_pgt_entry_sites(),
        mseal=False, notes="+ realignment of mutually aligned starts to the PMD; exec passes for_stack")
    k["6.18"] = Kernel(
        "6.18", "the kernel this machine runs (6.17's multi-VMA MREMAP_FIXED moves)",
        align=try_realign_addr, progress=pmc_progress, multi_vma_move=True,
        warn_sites=_pgt_entry_sites(),
        notes="as 6.7, plus moves of several VMAs with MREMAP_FIXED")
    return k


KERNELS: Dict[str, Kernel] = _catalogue()
DEFAULT_KERNEL = "6.18"


def get_kernel(kernel) -> Kernel:
    """A Kernel from a catalogue name, a ``"module:attr"`` string or a Kernel.

    ``"module:attr"`` imports ``module`` (from the current folder too) and
    takes its ``attr``, which must be a :class:`Kernel`: scripts and fuzz
    reproducers name a user's kernel that way, as ``pymm fuzz --kernel`` does.

        >>> get_kernel("5.8").name
        '5.8'
        >>> get_kernel("pymm.kernels:DEFAULT_KERNEL")
        Traceback (most recent call last):
        ...
        TypeError: pymm.kernels:DEFAULT_KERNEL is a str, not a pymm.Kernel
    """
    if isinstance(kernel, Kernel):
        return kernel
    if isinstance(kernel, str):
        if kernel in KERNELS:
            return KERNELS[kernel]
        if ":" in kernel:
            return _load_kernel(kernel)
        raise ValueError(f"unknown kernel {kernel!r}; choose from {', '.join(KERNELS)}, "
                         "or name your own as 'module:attribute'")
    raise TypeError(f"kernel must be a name or a pymm.Kernel, not {type(kernel).__name__}")


def _import_from_cwd_too(module: str):
    """importlib.import_module, retried with the current folder on sys.path."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module.partition(".")[0] or os.getcwd() in sys.path:
            raise
    sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(os.getcwd())


def _load_kernel(spec: str) -> Kernel:
    """The Kernel named by ``spec`` = "module:attr", remembering ``spec`` as its source."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ValueError(f"kernel {spec!r}: expected 'module:attribute'")
    try:
        loaded = _import_from_cwd_too(module)
    except Exception as e:  # a user's module may fail in any way: say which, in one line
        raise ValueError(f"cannot load kernel {spec!r}: {type(e).__name__}: {e}") from None
    try:
        k = getattr(loaded, attr)
    except AttributeError:
        raise ValueError(f"cannot load kernel {spec!r}: module {module!r} has no {attr!r}") from None
    if not isinstance(k, Kernel):
        raise TypeError(f"{spec} is a {type(k).__name__}, not a pymm.Kernel")
    return k if k.source else dataclasses.replace(k, source=spec)
