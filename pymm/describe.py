"""What the page tables hold: ``mm.describe()``'s data model and builder.

``describe()`` reads the tree the way gdb-pt-dump or volatility's walkers
do: present leaves merged into ranges (one row per run of 4K, 2M or 1G
leaves with the same permissions inside one VMA), the tables per level and
how full they are, the empty tables the kernel keeps alive, and any entry
that maps an address outside every VMA.  :class:`Description` prints itself
(``str()``, ``_repr_html_``) and serialises (``as_dict``, ``to_json``);
``pymm show`` (:mod:`pymm.show`) is the command line around it.

It reads an address space only through ``mm.maps()``, ``mm.engine`` and
:func:`pymm.check`, so it sits below :mod:`pymm.mm`, which imports it.

Example::

    >>> import pymm
    >>> mm = pymm.MM()
    >>> a = mm.mmap(0, 3 << 20, pymm.PROT_READ | pymm.PROT_WRITE,
    ...             pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS | pymm.MAP_POPULATE)
    >>> d = mm.describe()
    >>> [(r.page, r.perms, r.pages) for r in d.ranges]
    [('4K', 'rw-', 768)]
    >>> print(d)                      # the same as `pymm show` prints
"""
from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

import mmcore
from pymm.arches import leaf_level_name
from pymm.check import check as check_mm

# Leaves merge into one row only if these entry bits agree (mmcore's RUN_FLAG_MASK).
_P, _RW, _PSE, _PROTNONE, _SPECIAL, _NX = 1, 2, 1 << 7, 1 << 8, 1 << 9, 1 << 63
FRAME_RUNS_KEPT = 8
ROW_FLAG_MASK = np.uint64(_P | _RW | 4 | _PSE | _PROTNONE | _SPECIAL | _NX)


def size_label(nbytes: int) -> str:
    """4096 -> '4K', 2 MiB -> '2M', 1 GiB -> '1G'."""
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if nbytes >= 1 << shift and nbytes % (1 << shift) == 0:
            return f"{nbytes >> shift}{unit}"
    return str(nbytes)


def human(nbytes: int) -> str:
    """A byte count for people: '6.0 MiB'."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift:
            return f"{nbytes / (1 << shift):.1f} {unit}"
    return f"{nbytes} B"


def entry_perms(entry: int) -> str:
    """What the MMU allows through a leaf: 'rw-', 'r-x', or '---' for PROT_NONE."""
    if not entry & _P:
        return "---"
    return "r" + ("w" if entry & _RW else "-") + ("-" if entry & _NX else "x")


@dataclass(frozen=True)
class MappedRange:
    """Address-contiguous leaves of one size and permission, inside one VMA
    (or outside all of them: ``orphan``).  ``frames`` lists the first runs
    of consecutive frames as (first frame, pages), at most FRAME_RUNS_KEPT
    of them; ``frame_runs`` counts them all."""

    start: int
    end: int
    page: str                  # leaf size: "4K", "2M", "1G"
    level: str                 # "pte", "pmd" or "pud"
    perms: str                 # from the entries: "rw-", "r--", "---" ...
    frames: Tuple[Tuple[int, int], ...]
    frame_runs: int
    pages: int                 # base pages mapped (a 2M leaf counts 512)
    zero_page: bool            # every leaf maps the (huge) zero page
    vma: Optional[str]         # "rw-p [stack]"; None when no VMA covers it
    orphan: bool

    def frames_text(self, shown: int = 2) -> str:
        if self.zero_page:
            return "zero page"
        parts = [f"{f}" if n == 1 else f"{f}-{f + n - 1}" for f, n in self.frames[:shown]]
        more = self.frame_runs - shown
        return ", ".join(parts) + (f" +{more} runs" if more > 0 else "")


@dataclass(frozen=True)
class LevelFill:
    """The tables of one level and how full they are."""

    level: str
    tables: int
    used: int                  # entries that are not none, summed
    capacity: int              # tables * entries per table
    min_fill: int
    max_fill: int

    @property
    def percent(self) -> float:
        return 100.0 * self.used / self.capacity if self.capacity else 0.0


@dataclass(frozen=True)
class TableInfo:
    """One page-table page: its id, level, the first address it covers,
    where it hangs (parent table and slot) and its fill."""

    table: int
    level: str
    base: int
    span: int
    parent: int
    index: int
    fill: int
    parent_level: Optional[str]

    @property
    def slot(self) -> str:
        """Where it hangs: 'pmd[509] of table 2'."""
        return "root" if self.parent < 0 else f"{self.parent_level}[{self.index}] of table {self.parent}"


@dataclass
class Description:
    """What ``mm.describe()`` found.  ``str()`` is the plain-text report,
    :meth:`as_dict` / :meth:`to_json` the machine-readable one."""

    kernel: str
    arch: str
    levels: int
    entries_per_table: int
    vmas: List[str]
    ranges: List[MappedRange]
    fill: List[LevelFill]
    tables: List[TableInfo]
    unreachable_tables: int
    problems: List[str] = field(default_factory=list)
    empty_note: str = "a PMD/PUD move onto one warns: WARN_ON(!pmd_none(*new_pmd))"
    deposited_tables: int = 0      # PTE tables deposited with huge PMDs (not in the tree)

    @property
    def empty_tables(self) -> List[TableInfo]:
        """Tables below the root with no entry at all: kept alive until
        free_pgtables(), and what a PMD or PUD move landing on them meets."""
        return [t for t in self.tables if t.parent >= 0 and t.fill == 0]

    @property
    def orphans(self) -> List[MappedRange]:
        return [r for r in self.ranges if r.orphan]

    @property
    def mapped_bytes(self) -> int:
        return sum(r.end - r.start for r in self.ranges)

    # -- output --------------------------------------------------------------------------
    def as_dict(self) -> Dict[str, object]:
        d = asdict(self)
        d["empty_tables"] = [asdict(t) for t in self.empty_tables]
        d["orphans"] = [asdict(r) for r in self.orphans]
        d["mapped_bytes"] = self.mapped_bytes
        return d

    def to_json(self, **kw) -> str:
        return json.dumps(self.as_dict(), **kw)

    def format(self, max_rows: Optional[int] = 40) -> str:
        """The plain-text report; ``max_rows=None`` lists every range."""
        out = [f"{self.arch}, {self.levels}-level paging, kernel {self.kernel}: "
               f"{len(self.vmas)} VMA(s), {human(self.mapped_bytes)} mapped, "
               f"{len(self.tables)} page-table pages"
               + (f" (+ {self.deposited_tables} deposited with huge PMDs)" if self.deposited_tables else "")]
        out.append("")
        out.append("mapped ranges (present leaves merged; frames are the physical runs)")
        if not self.ranges:
            out.append("  (nothing mapped)")
        else:
            out.append(f"  {'start':>16} {'end':>16} {'size':>10} page perms  {'frames':<22} vma")
            rows = self.ranges if max_rows is None else self.ranges[:max_rows]
            for r in rows:
                where = r.vma if r.vma else "!! ORPHAN: outside every VMA"
                out.append(f"{'!!' if r.orphan else '  '}{r.start:#16x} {r.end:#16x} "
                           f"{size_label(r.end - r.start) if (r.end - r.start) % 1024 == 0 else r.end - r.start:>10}"
                           f" {r.page:>4} {r.perms:5}  {r.frames_text():<22} {where}")
            if len(rows) < len(self.ranges):
                out.append(f"  ... {len(self.ranges) - len(rows)} more ranges (--all lists them)")
        out.append("")
        out.append("page tables")
        out.append(f"  {'level':6} {'tables':>7} {'entries used':>18} {'fill':>7}  min-max per table")
        for f in self.fill:
            out.append(f"  {f.level:6} {f.tables:7d} {f.used:>9d} / {f.capacity:<7d} {f.percent:6.1f}%"
                       f"  {f.min_fill}-{f.max_fill}")
        empty = self.empty_tables
        out.append("")
        out.append(f"empty tables kept alive ({self.empty_note})")
        if not empty:
            out.append("  none")
        for t in empty:
            out.append(f"  {t.level} table {t.table} covering {t.base:#x}-{t.base + t.span:#x}, "
                       f"at {t.slot}")
        out.append("")
        orphans = self.orphans
        out.append("orphan entries (present leaves outside every VMA)")
        if not orphans:
            out.append("  none")
        for r in orphans:
            out.append(f"!! {r.start:#x}-{r.end:#x}: {r.pages} page(s) mapped, frames {r.frames_text()}")
        if self.unreachable_tables:
            out.append(f"!! {self.unreachable_tables} allocated table(s) not reachable from the root")
        if self.problems:
            out.append("")
            out.append(f"broken invariants (pymm.check): {len(self.problems)}"
                       + ("" if len(self.problems) < 100 else " or more"))
            out.extend(f"!! {p}" for p in self.problems[:5])
            if len(self.problems) > 5:
                out.append(f"   ... {len(self.problems) - 5} more (pymm.check(mm) lists them)")
        return "\n".join(out)

    def __str__(self):
        return self.format()

    def _repr_html_(self) -> str:
        e = html.escape
        red = ' style="background:#fdd"'
        rows = "".join(
            f"<tr{red if r.orphan else ''}><td><code>{r.start:#x}</code></td>"
            f"<td><code>{r.end:#x}</code></td><td>{r.page}</td><td>{e(r.perms)}</td>"
            f"<td>{e(r.frames_text())}</td><td>{e(r.vma or 'ORPHAN: outside every VMA')}</td></tr>"
            for r in self.ranges[:200])
        fills = "".join(f"<tr><td>{f.level}</td><td>{f.tables}</td><td>{f.used}/{f.capacity}</td>"
                        f"<td>{f.percent:.1f}%</td></tr>" for f in self.fill)
        empty = "".join(f"<li>{t.level} table {t.table} covering <code>{t.base:#x}</code> at {e(t.slot)}</li>"
                        for t in self.empty_tables) or "<li>none</li>"
        return (f"<div><b>{e(self.arch)}, kernel {e(self.kernel)}</b>: {len(self.vmas)} VMA(s), "
                f"{human(self.mapped_bytes)} mapped, {len(self.tables)} page-table pages"
                "<table><tr><th>start</th><th>end</th><th>page</th><th>perms</th><th>frames</th>"
                f"<th>vma</th></tr>{rows}</table>"
                f"<table><tr><th>level</th><th>tables</th><th>used</th><th>fill</th></tr>{fills}</table>"
                f"<p>Empty tables kept alive:</p><ul>{empty}</ul></div>")


# -- building a description -----------------------------------------------------------------
def describe(mm, start: int = 0, end: Optional[int] = None, check: bool = True) -> Description:
    """The page tables of ``mm`` as merged ranges, per-level fill, empty
    tables and orphans (see :class:`Description`).  ``MM.describe()`` calls
    this.  ``check=False`` skips pymm.check (for states caught mid-move,
    where the rmap is legitimately out of step).

    Example::

        >>> print(pymm.describe.describe(mm))
    """
    g = mm.geometry
    eng = mm.engine
    end = (1 << g.va_bits) if end is None else end
    vmas = mm.maps()                        # snapshots: start, end, perms, name
    runs = mmcore.leaf_runs(eng, start, end)
    tree = mmcore.table_tree(eng)
    ranges = _ranges(mm, runs, vmas)
    tables = [TableInfo(t, g.level_names[lv], b, 1 << g.shift(lv - 1) if lv else 1 << g.va_bits,
                        p, i, f, g.level_names[lv - 1] if lv else None)
              for t, lv, b, p, i, f in zip(*(tree[k].tolist() for k in
                                              ("table", "level", "base", "parent", "index", "fill")))]
    fill = []
    for lv, name in enumerate(g.level_names):
        sel = tree["fill"][tree["level"] == lv]
        if sel.size:
            fill.append(LevelFill(name, int(sel.size), int(sel.sum()), int(sel.size) * g.entries(lv),
                                  int(sel.min()), int(sel.max())))
    problems = []
    if check:
        problems = [str(p) for p in check_mm(mm) if p.invariant != "orphan-pte"]
    return Description(mm.kernel.name, mm.arch, g.levels, g.entries(g.levels - 1),
                       [f"{v.start:#x}-{v.end:#x} {v.perms} {v.name}".rstrip() for v in vmas],
                       ranges, fill, tables, eng.n_tables + 1 - len(tables) - eng.deposited_tables,
                       problems, _empty_note(mm.kernel), eng.deposited_tables)


def _empty_note(kernel) -> str:
    """What an empty table kept alive means under this kernel's own policy
    (move_page_tables(): only a PMD/PUD move meets it; pmd_warn says if it warns)."""
    moves = "/".join(m for m, on in (("PMD", kernel.pmd_moves), ("PUD", kernel.pud_moves)) if on)
    if not moves:
        return "harmless here: this kernel moves PTE by PTE, move_ptes() fills them"
    if kernel.pmd_warn == mmcore.WARN_SILENT and kernel.pud_warn == mmcore.WARN_SILENT:
        return f"a {moves} move onto one falls back to move_ptes(), silently"
    return f"a {moves} move onto one warns: WARN_ON(!pmd_none(*new_pmd))"


def _ranges(mm, runs: Dict[str, np.ndarray], vmas) -> List[MappedRange]:
    """Cut the engine's leaf runs at VMA boundaries, then merge runs that
    touch, share size and permissions and lie in the same VMA into rows."""
    g = mm.geometry
    vstart = np.array([v.start for v in vmas], dtype=np.uint64)
    vend = np.array([v.end for v in vmas], dtype=np.uint64)
    s, e, lv, ent, fr = _cut_at(runs, np.unique(np.concatenate([vstart, vend])), g.page_shift)
    if not s.size:
        return []
    vi = np.searchsorted(vstart, s, side="right") - 1
    covered = (vi >= 0) & (s < vend[np.maximum(vi, 0)])
    vi = np.where(covered, vi, -1)
    key = ent & ROW_FLAG_MASK
    huge_zero = mm.engine.zero_frames[1]
    new_row = np.ones(s.size, dtype=bool)
    new_row[1:] = (s[1:] != e[:-1]) | (lv[1:] != lv[:-1]) | (key[1:] != key[:-1]) | (vi[1:] != vi[:-1])
    bounds = np.append(np.flatnonzero(new_row), s.size)
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        level = int(lv[a])
        kept = range(a, min(b, a + FRAME_RUNS_KEPT))      # Python work per row stays bounded
        frames = tuple((int(fr[k]), int(e[k] - s[k]) >> g.page_shift) for k in kept)
        v = vmas[vi[a]] if vi[a] >= 0 else None
        zero = bool(fr[a] == 0 or 0 <= fr[a] - huge_zero < g.entries(g.levels - 1))
        out.append(MappedRange(int(s[a]), int(e[b - 1]), size_label(1 << g.shift(level)), leaf_level_name(g, level),
                               entry_perms(int(ent[a])), frames, int(b - a),
                               int(e[b - 1] - s[a]) >> g.page_shift, zero,
                               f"{v.perms} {v.name}".rstrip() if v else None, v is None))
    return out


def _cut_at(runs, cuts: np.ndarray, page_shift: int):
    """Split every run that crosses a cut (a VMA boundary): a run inside
    one VMA stays whole, so only runs over a boundary (rare) are split."""
    s, e = runs["start"], runs["end"]
    lv, ent, fr = runs["level"], runs["entry"], runs["frame"]
    if not s.size or not cuts.size:
        return s, e, lv, ent, fr
    nxt = np.searchsorted(cuts, s, side="right")
    crossing = np.flatnonzero((nxt < cuts.size) & (cuts[np.minimum(nxt, cuts.size - 1)] < e))
    if not crossing.size:
        return s, e, lv, ent, fr
    cols = [list(c) for c in (s, e, lv, ent, fr)]
    for k in crossing[::-1]:                     # from the back: indices stay valid
        lo, hi = int(s[k]), int(e[k])
        inner = [int(c) for c in cuts[(cuts > lo) & (cuts < hi)]]
        edges = [lo] + inner + [hi]
        zero = int(ent[k]) & _SPECIAL
        pieces = [(a, b, lv[k], ent[k], fr[k] if zero else fr[k] + ((a - lo) >> page_shift))
                  for a, b in zip(edges[:-1], edges[1:])]
        for col, vals in zip(cols, zip(*pieces)):
            col[k:k + 1] = list(vals)
    return (np.array(cols[0], dtype=np.uint64), np.array(cols[1], dtype=np.uint64),
            np.array(cols[2], dtype=np.int8), np.array(cols[3], dtype=np.uint64),
            np.array(cols[4], dtype=np.int64))
