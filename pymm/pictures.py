"""Before/after pictures of page tables, for ``pymm show --demo``.

A picture shows a window of PMD slots.  Under each slot hangs its PTE
table, drawn as a 16 x 32 grid of its 512 entries; a cell's colour is the
page's original position in the range (so data that moved shows up as a
shifted gradient), white where the entry is none.  The border of a table
says where it came from, compared with the first snapshot:

    green, thick   the same table now under another slot: moved whole by
                   move_normal_pmd() (one entry rewritten)
    orange         a table that did not exist before: allocated by the move
                   and filled PTE by PTE by move_ptes()
    light orange   the same table in the same slot, its PTEs rewritten one by
                   one (the data under it is another part of the range now)
    grey           the same table in the same slot, unchanged
    red, dashed    a table with no entries, kept alive: under a kernel that
                   moves PMDs and warns (5.8's WARN_ON(!pmd_none(*new_pmd))),
                   a PMD move that lands on it warns; the label says what it
                   means under the kernel drawn (:func:`borders`)

A kernel whose exec fails (5.8+linus-v2: shift_arg_pages() returns ENOMEM)
is drawn as the tables were when it failed, and the caption says so.

matplotlib is an optional extra (``pip install "pymm[plot]"``).

Example::

    >>> from pymm.pictures import stack_shift_pictures
    >>> paths = stack_shift_pictures(["5.8", "6.7"], out_dir=".")
"""
from __future__ import annotations

import os
import warnings as _warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

import mmcore
from pymm.kernels import get_kernel
from pymm.walk import PFN_MASK

GRID = (16, 32)                        # 512 PTEs per table, as a 16 x 32 grid
STAMP_KIND, KIND_SHIFT, VALUE_MASK = 2, 62, (1 << 62) - 1
BORDERS = {   # kind: colour, width, style, legend, label under the table
    "moved": ("#1a9850", 3.0, "-", "moved whole by move_normal_pmd()", "moved whole from pmd[{src}]"),
    "new": ("#f46d43", 2.0, "-", "new table, filled PTE by PTE (move_ptes)", "new, filled PTE by PTE"),
    "refilled": ("#fdae61", 2.0, "-", "same table, its PTEs rewritten one by one (move_ptes)",
                 "same table, refilled PTE by PTE"),
    "stayed": ("#777777", 1.2, "-", "same table, same slot, same PTEs", ""),
    "empty": ("#d73027", 2.5, "--", "EMPTY table kept alive: a PMD move onto it warns",
              "EMPTY: a PMD move onto it warns"),
}


def empty_table_note(kernel) -> str:
    """What an empty PTE table kept alive means under ``kernel``, from its
    own policy: move_page_tables() only meets it with a PMD move (pmd_moves,
    HAVE_MOVE_PMD, v5.0+), and only warns where pmd_warn says so."""
    if not kernel.pmd_moves:
        return "no PMD moves in this kernel: move_ptes() fills it, nothing warns"
    if kernel.pmd_warn == mmcore.WARN_SILENT:
        return "a PMD move onto it falls back to move_ptes(), silently"
    return "a PMD move onto it warns"


def borders(kernel) -> Dict[str, tuple]:
    """BORDERS with the texts that depend on the kernel's policy; kinds the
    kernel cannot produce (a PMD move under 4.19) are left out."""
    out = dict(BORDERS)
    note = empty_table_note(kernel)
    out["empty"] = BORDERS["empty"][:3] + (f"EMPTY table kept alive: {note}", f"EMPTY: {note}")
    if not kernel.pmd_moves:
        del out["moved"]
    return out


MATPLOTLIB_HINT = "needs matplotlib, an optional extra: pip install 'pymm[plot]' (or pip install matplotlib)"


def load_matplotlib():
    """matplotlib.pyplot with the Agg backend, or None if it is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def require_matplotlib():
    """matplotlib.pyplot, or exit with a message saying how to get it."""
    plt = load_matplotlib()
    if plt is None:
        raise SystemExit(f"pictures {MATPLOTLIB_HINT}")
    return plt


@dataclass
class Slot:
    """One PMD slot of a snapshot: its entry, and the PTE table under it."""

    addr: int
    index: int
    entry: int
    table: Optional[int]        # PTE table id, None if the slot is none (or a huge leaf)
    fill: int                   # entries used in that table
    contents: np.ndarray        # per PTE: position of the page's original data, -1 none


@dataclass
class Snapshot:
    """A window of PMD slots at one moment, with a caption."""

    caption: str
    slots: List[Slot]


def snapshot(mm, window, caption: str, origin: int, npages: int) -> Snapshot:
    """Capture the PMD slots of ``window`` = (start, end), both PMD aligned.
    ``origin``/``npages``: the range whose pages were stamped before the move;
    a page's colour is its original position in it."""
    g, eng = mm.geometry, mm.engine
    pmd, per = g.pmd_size, g.entries(g.levels - 1)
    slots = []
    for addr in range(window[0], window[1], pmd):
        steps = mmcore.walk(eng, addr)
        level, table, index, entry = steps[-1] if len(steps) < g.levels else steps[-2]
        pte_table = entry_table(entry) if level == g.levels - 2 and entry & 1 and not entry & 0x80 else None
        fill = int(np.count_nonzero(eng.table_row(pte_table))) if pte_table is not None else 0
        tags = mmcore.page_tags(eng, addr, per)
        pos = np.full(per, -1.0)
        stamped = (tags >> np.uint64(KIND_SHIFT)) == STAMP_KIND
        pages = (tags & np.uint64(VALUE_MASK)).astype(np.int64)
        rel = pages - (origin >> g.page_shift)
        ok = stamped & (rel >= 0) & (rel < npages)
        pos[ok] = rel[ok] / max(npages - 1, 1)
        slots.append(Slot(addr, int((addr >> g.shift(g.levels - 2)) & (per - 1)), entry,
                          pte_table, fill, pos))
    return Snapshot(caption, slots)


def entry_table(entry: int) -> int:
    """The table id a pmd entry points to (pmd_pfn())."""
    return (entry & PFN_MASK) >> 12


def provenance(slot: Slot, first: Snapshot) -> Optional[str]:
    """How the table under ``slot`` relates to the first snapshot."""
    if slot.table is None:
        return None
    if slot.fill == 0:
        return "empty"
    before = {s.table: s for s in first.slots if s.table is not None}
    if slot.table not in before:
        return "new"
    old = before[slot.table]
    if old.addr != slot.addr:
        return "moved"
    return "stayed" if np.array_equal(old.contents, slot.contents) else "refilled"


def draw(snaps: Sequence[Snapshot], title: str, subtitle: str, path: str,
         kinds: Optional[Dict[str, tuple]] = None) -> str:
    """One figure: a row per snapshot, a column per PMD slot.  ``kinds``:
    the borders and their texts (default :data:`BORDERS`; see :func:`borders`)."""
    kinds = BORDERS if kinds is None else kinds
    plt = require_matplotlib()
    from matplotlib.patches import Patch, Rectangle
    nslots = len(snaps[0].slots)
    fig, axes = plt.subplots(len(snaps), 1, figsize=(2.9 * nslots + 1.2, 2.55 * len(snaps) + 1.4),
                             squeeze=False)
    cmap = plt.get_cmap("viridis").with_extremes(under="white")
    first = snaps[0]
    for ax, snap in zip(axes[:, 0], snaps):
        ax.set_xlim(-0.05, nslots)
        ax.set_ylim(-0.32, 1.28)
        ax.axis("off")
        ax.text(-0.03, 1.22, snap.caption, fontsize=10.5, weight="bold", va="bottom")
        for k, slot in enumerate(snap.slots):
            x0 = k + 0.04
            ax.text(x0, 1.07, f"pmd[{slot.index}]  {slot.addr:#x}", fontsize=8.5, family="monospace")
            kind = provenance(slot, first)
            if slot.table is None:
                label = "pmd_none: no table" if slot.entry == 0 else f"entry {slot.entry:#x}"
                ax.text(x0, 0.94, label, fontsize=8.5, color="#555555")
                ax.add_patch(Rectangle((x0, 0.0), 0.9, 0.86, fill=False, ec="#cccccc", ls=":"))
                continue
            ax.text(x0, 0.94, f"-> PTE table #{slot.table} ({slot.fill}/{slot.contents.size} used)",
                    fontsize=8.5)
            grid = slot.contents.reshape(GRID)
            ax.imshow(grid, cmap=cmap, vmin=0.0, vmax=1.0, extent=(x0, x0 + 0.9, 0.0, 0.86),
                      aspect="auto", interpolation="nearest")
            color, width, style, _, text = kinds.get(kind, BORDERS[kind])
            ax.add_patch(Rectangle((x0, 0.0), 0.9, 0.86, fill=False, ec=color, lw=width, ls=style))
            if kind == "moved":
                text = text.format(src=next(s.index for s in first.slots if s.table == slot.table))
            if text:
                ax.text(x0, -0.1, text, fontsize=8, color=color, va="top", weight="bold")
    handles = [Patch(fc="white", ec=c, lw=w, ls=s, label=t) for c, w, s, t, _ in kinds.values()]
    fig.legend(handles=handles, loc="lower right", bbox_to_anchor=(0.99, 0.005), ncol=2, fontsize=8.5,
               frameon=False)
    fig.suptitle(title, fontsize=13, weight="bold", y=0.995)
    fig.text(0.5, 0.955, subtitle, ha="center", fontsize=9, color="#333333", va="top")
    fig.tight_layout(rect=(0, 0.09, 1, 0.93))
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
    cax = fig.add_axes((0.04, 0.055, 0.3, 0.014))
    cb = fig.colorbar(sm, cax=cax, orientation="horizontal")
    cb.set_ticks([0, 1], labels=["first page", "last page"])
    cb.ax.tick_params(labelsize=8)
    cb.set_label("cell = one PTE; colour = where its page's data started (white: pte_none)", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def stack_shift_pictures(kernels: Sequence = ("5.8", "6.7"), out_dir: str = ".",
                         fmt: str = "png", arch: str = "x86_64") -> List[str]:
    """Exec's stack shift (the thread's WARNING) under each kernel: before,
    after the move loop's first extent, and after shift_arg_pages().
    Writes ``stack-shift-<kernel>.<fmt>`` (``stack-shift-<kernel>-<arch>``
    off x86-64) into out_dir; returns the paths."""
    from pymm.scenarios import stack_shift_stage
    require_matplotlib()
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for kernel in kernels:
        k = get_kernel(kernel)
        shots = []
        failed = None
        for phase in ("before", "first", "after"):
            st = stack_shift_stage(k, arch=arch)
            d = st.details
            npages = (d["old_end"] - d["old_start"]) >> st.mm.page_shift
            if phase == "first" and st.first_step is None:
                continue
            with _warnings.catch_warnings():
                _warnings.simplefilter("ignore")
                try:
                    {"before": lambda: None, "first": st.first_step, "after": st.act}[phase]()
                except OSError as e:    # exec's ENOMEM: a result, drawn as the tables are then
                    failed = f"{e.strerror.split(' [')[0]}" if e.strerror else str(e)
            caption = _caption(phase, st, k, failed if phase == "after" else None)
            shots.append(snapshot(st.mm, st.window, caption, d["old_start"], npages))
        safe = "".join(c if c.isalnum() or c in ".+-_" else "_" for c in k.name)
        on = "" if arch == "x86_64" else f"-{arch}"
        path = os.path.join(out_dir, f"stack-shift-{safe}{on}.{fmt}")
        d, mm = st.details, st.mm
        draw(shots, f"exec's stack shift under {k.name}{' on ' + arch if on else ''}: {k.models}"[:110],
             f"move_page_tables(old=stack start, new=start - {d['shift'] >> 20} MiB, "
             f"len={(d['old_end'] - d['old_start']) >> 20} MiB): the ranges overlap; the stack starts "
             f"off a PMD boundary", path, borders(k))
        paths.append(path)
    return paths


def _caption(phase: str, st, k, failed: Optional[str] = None) -> str:
    d, stats = st.details, st.mm.stats
    if phase == "before":
        return (f"before: stack VMA {d['old_start']:#x}-{d['old_end']:#x}, "
                f"to move down by {d['shift'] >> 20} MiB")
    moves = f"PMD moves: {stats['pmd_moves']}, PTE moves: {stats['pte_moves']}"
    warned = f", WARNING x{len(st.mm.warnings)} at {st.mm.warnings[0].location}" if st.mm.warnings else ""
    if phase == "first":
        return f"after the loop's first extent ({moves}{warned})"
    if failed:
        return (f"exec FAILS: shift_arg_pages() returned ENOMEM ({failed}), the process is killed; "
                f"tables as left: {moves}{warned}")
    return f"after shift_arg_pages(): {moves}{warned}, tail tables freed"


# -- pymm sweep: the path each cell took, and its cost ---------------------------------------------
PATH_COLOURS = {"PUD": "#1a9850", "PMD": "#4575b4", "huge PMD": "#8073ac", "PTE": "#d73027",
                "mixed": "#91bfdb", "none": "#eeeeee", "failed": "#999999", "skipped": "#ffffff"}


def path_colour(row: dict) -> str:
    """The colour key of a sweep cell: its path, ``mixed`` (say PMD+PTE),
    ``failed`` (the move did not happen), ``skipped`` (the cell does not fit)."""
    if row["status"].startswith("skipped"):
        return "skipped"
    if row["status"] != "ok":
        return "failed"
    return row["path"] if row["path"] in PATH_COLOURS else "mixed"


def _fmt_ns(ns) -> str:
    if ns is None:
        return ""
    return f"{ns / 1e6:.1f}ms" if ns >= 1e6 else f"{ns / 1e3:.0f}us"


def sweep_picture(rows: Sequence[dict], path: str) -> str:
    """One panel per (arch, THP): a row per (case, size), a column per
    kernel; a cell's colour is the path its move took, its text the call's
    time in pymm, ``!`` a warning and ``X`` a broken invariant."""
    plt = require_matplotlib()
    from matplotlib.patches import Patch
    kernels = list(dict.fromkeys(r["kernel"] for r in rows))
    facets = list(dict.fromkeys((r["arch"], r["thp"]) for r in rows))
    lines = list(dict.fromkeys((r["case"], r["size"]) for r in rows))
    cell = {(r["arch"], r["thp"], r["case"], r["size"], r["kernel"]): r for r in rows}
    ncols = min(2, len(facets))
    nrows = -(-len(facets) // ncols)
    w, h = 1.0 + 0.75 * len(kernels), 1.2 + 0.26 * len(lines)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * w + 1.5, nrows * h + 1.2), squeeze=False)
    for ax, (arch, thp) in zip(axes.flat, facets):
        for y, (case, size) in enumerate(lines):
            for x, k in enumerate(kernels):
                r = cell.get((arch, thp, case, size, k))
                if r is None:
                    continue
                key = path_colour(r)
                ax.add_patch(plt.Rectangle((x, y), 1, 1, facecolor=PATH_COLOURS[key], edgecolor="white"))
                text = _fmt_ns(r["ns"]) + ("!" if r["warnings"] else "") + ("X" if r["check"] != "ok" else "")
                if key not in ("skipped",):
                    ax.text(x + 0.5, y + 0.5, text or r["status"][:8], ha="center", va="center", fontsize=6,
                            color="white" if key in ("PUD", "PMD", "PTE", "huge PMD") else "black")
        ax.set_xlim(0, len(kernels))
        ax.set_ylim(len(lines), 0)
        ax.set_xticks([i + 0.5 for i in range(len(kernels))], kernels, rotation=45, ha="right", fontsize=7)
        ax.set_yticks([i + 0.5 for i in range(len(lines))],
                      [f"{c}, {s >> 20} MiB" if s >= 1 << 20 else f"{c}, {s} B" for c, s in lines], fontsize=7)
        ax.set_title(f"{arch}, THP {'on (MADV_HUGEPAGE)' if thp else 'off'}", fontsize=9)
    for ax in list(axes.flat)[len(facets):]:
        ax.axis("off")
    used = {path_colour(r) for r in rows}
    fig.legend(handles=[Patch(facecolor=c, edgecolor="#999999", label=k) for k, c in PATH_COLOURS.items()
                        if k in used], loc="upper right", fontsize=7, title="path taken", title_fontsize=7)
    fig.suptitle("mremap(MREMAP_MAYMOVE|MREMAP_FIXED) of a populated region: the path taken and its time "
                 "in pymm (! a warning, X a broken invariant)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.9, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
