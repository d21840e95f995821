"""The lean mremap path (pymm/mm/mremap.py ``do_mremap()``'s WholeVmaMove) against
the general one: the same random programs, run once with each, must give
the same results, VMAs, page tables, counters and warnings (issue 11, item 3).
"""
import errno
import random
import warnings

import pytest

import mmcore
import pymm
from pymm import constants as C
from pymm.mm import mremap
from pymm.ops import PUD, Op, RandomDraws, draw_op

from helpers import GiB, PAGE, PRIV, RW

BASE = 0x100000000000


def _tables(mm):
    """The page tables without their row numbers (which table page a move
    recycles is the engine's business): each table's level, base and
    fill, and every VMA's leaves (entry bits, frames, contents)."""
    tree = mmcore.table_tree(mm.engine)
    shape = sorted(zip(tree["level"].tolist(), tree["base"].tolist(), tree["fill"].tolist()))
    leaves = []
    for v in mm.maps():
        runs = mmcore.leaf_runs(mm.engine, v.start, v.end)
        leaves.append(tuple(runs[k].tobytes() for k in ("start", "end", "level", "entry", "frame")))
        leaves.append(mmcore.page_tags(mm.engine, v.start, min(v.size >> 12, 1024)).tobytes())
    return shape, leaves


def _state(mm):
    """What a call leaves behind: VMAs, counters, tables, warnings, the
    status line, and every plain field of the MM (a counter that a move
    updates, such as an accounting total, must move alike both ways)."""
    vmas = [(v.start, v.end, v.vm_flags, v.pgoff, v.anon_vma, v.shmem, v.name) for v in mm.maps()]
    fields = {k: v for k, v in vars(mm).items() if type(v) in (int, bool, str, tuple, type(None))
              and k != "_whole_vma_move"}
    return (vmas, mm.stats, _tables(mm), [(w.site, w.old_addr, w.new_addr) for w in mm.warnings],
            mm.status(), fields, dict(mm._anon_refs))


def _program(mm, seed, n=40):
    """Random ops, and every other step a whole VMA of ``mm`` moved with
    MREMAP_FIXED to a random grid address (chosen from mm's state, so two
    runs that agree so far choose the same)."""
    rng = random.Random(seed)
    draws = RandomDraws(rng)
    for _ in range(n):
        op = draw_op(draws, BASE, slots=8, big=True)
        vmas = mm.maps()
        if vmas and rng.random() < 0.5:
            v = rng.choice(vmas)
            op = Op("mremap", (v.start, v.size, v.size, C.MREMAP_MAYMOVE | C.MREMAP_FIXED,
                               op.args[0] + rng.choice((0, PAGE, 2 << 20, 16 * PAGE))))
        yield op


def _run(kernel, seed, lean, monkeypatch):
    monkeypatch.setattr(mremap, "LEAN_MOVES", lean)
    mm = pymm.MM(kernel=kernel, check=True)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for op in _program(mm, seed):
            out.append((str(op), op.apply(mm)))
            out.append(_state(mm))
    return out


@pytest.mark.parametrize("kernel,lean", [("4.19", True), ("5.8", True), ("5.8+kirill", True),
                                         ("5.8+linus-v2", False), ("5.11", True), ("6.7", True),
                                         ("6.18", True)])
def test_lean_and_general_paths_agree(kernel, lean, monkeypatch):
    """(Linus's align hooks are not the stock ones: those kernels never go the lean way.)"""
    taken = []
    real = mremap.whole_vma_mover

    class Counting:                       # each MM's mover, counting the moves it takes
        def __init__(self, mover):
            self.mover = mover

        def move(self, *args):
            r = self.mover.move(*args)
            taken.append(r != mremap._NOT_TAKEN)
            return r

        def __getattr__(self, name):
            return getattr(self.mover, name)

        def __setattr__(self, name, value):
            if name == "mover":
                object.__setattr__(self, name, value)
            else:
                setattr(self.mover, name, value)

    monkeypatch.setattr(mremap, "whole_vma_mover", lambda mm: (lambda m: m and Counting(m))(real(mm)))
    for seed in range(12):
        fast, general = _run(kernel, seed, True, monkeypatch), _run(kernel, seed, False, monkeypatch)
        for i, (a, b) in enumerate(zip(fast, general)):
            assert a == b, f"seed {seed}, step {i // 2}: {fast[i - i % 2][0]}"
    assert sum(taken) >= 50 if lean else not any(taken)    # the lean path really ran, and often


def test_a_users_hook_still_runs(monkeypatch):
    """A kernel with hooks of its own goes the general way: they see the move."""
    seen = []
    k = pymm.KERNELS["6.18"].replace(align=lambda move: seen.append(move.len))
    mm = pymm.MM(kernel=k)
    mm.mmap(BASE, 2 << 20, RW, PRIV | C.MAP_FIXED)
    mm.memset(BASE, 1, 2 << 20)
    mm.mremap(BASE, 2 << 20, 2 << 20, C.MREMAP_MAYMOVE | C.MREMAP_FIXED, BASE + GiB)
    assert seen == [2 << 20]


def test_whole_vma_move_keeps_neighbours_tables():
    """floor/ceiling as free_pgtables() finds them: a neighbour in the same
    PTE table keeps it, the moved VMA's own table goes."""
    mm = pymm.MM(check=True)
    mm.mmap(BASE, 4 * PAGE, RW, PRIV | C.MAP_FIXED)
    mm.mmap(BASE + 8 * PAGE, 4 * PAGE, RW, PRIV | C.MAP_FIXED)
    mm.memset(BASE, 7, 4 * PAGE)
    mm.memset(BASE + 8 * PAGE, 7, 4 * PAGE)
    mm.reset_stats()
    new = mm.mremap(BASE + 8 * PAGE, 4 * PAGE, 4 * PAGE, C.MREMAP_MAYMOVE | C.MREMAP_FIXED, BASE + PUD)
    assert new == BASE + PUD and mm.read(new, 1) == b"\x07" and mm.read(BASE, 1) == b"\x07"
    assert mm.stats["pgtables_freed"] == 0          # the neighbour still uses the PTE table
    mm.mremap(BASE, 4 * PAGE, 4 * PAGE, C.MREMAP_MAYMOVE | C.MREMAP_FIXED, BASE + 2 * PUD)
    # now the PTE and PMD tables go; the PUD table also spans the first move's destination
    assert mm.stats["pgtables_freed"] == 2


@pytest.mark.parametrize("spare", [0, 1, 2, 4, 6])
def test_a_move_that_runs_out_of_tables_ends_alike(spare, monkeypatch):
    """The engine's page limit stops the loop early (ENOMEM): the lean path
    undoes it as move_vma() does, to the same state as the general path
    (with 4 or 6 tables to spare, source tables were already recycled
    when it stops: they must come back)."""
    undone = []
    real = mremap.move_failed
    monkeypatch.setattr(mremap, "move_failed", lambda *a: undone.append(1) or real(*a))
    results = []
    for lean in (True, False):
        monkeypatch.setattr(mremap, "LEAN_MOVES", lean)
        mm = pymm.MM(check=True)
        src = BASE + PAGE                      # per-PTE: the destination needs new tables
        mm.mmap(src, 16 << 20, RW, PRIV | C.MAP_FIXED)
        mm.memset(src, 3, 16 << 20)
        mm.engine.max_pages = mm.engine.pages_used + spare
        try:
            r = mm.mremap(src, 16 << 20, 16 << 20, C.MREMAP_MAYMOVE | C.MREMAP_FIXED, BASE + PUD + 2 * PAGE)
        except OSError as e:
            r = e.errno
        results.append((r, _state(mm)))
    assert results[0] == results[1]
    assert results[0][0] == errno.ENOMEM and undone == [1]    # the lean path's undo ran, once


def test_a_per_pte_move_recycles_the_source_tables():
    """Moving a whole VMA PTE by PTE, each source PTE table emptied by the
    loop serves the destination: the table rows in use grow by a few, not
    by the VMA's 16 tables; the counters are the kernel's all the same."""
    mm = pymm.MM(check=True)
    mm.mmap(BASE, 32 << 20, RW, PRIV | C.MAP_FIXED)
    mm.memset(BASE, 9, 32 << 20)
    rows = mm.engine.memory()["table_rows_used"]
    mm.reset_stats()
    new = mm.mremap(BASE, 32 << 20, 32 << 20, C.MREMAP_MAYMOVE | C.MREMAP_FIXED, BASE + PUD + PAGE)
    assert mm.engine.memory()["table_rows_used"] - rows <= 4
    s = mm.stats
    assert (s["pte_moves"], s["pgtables_allocated"], s["pgtables_freed"]) == (8192, 17 + 1, 16 + 1)
    assert mm.read(new, 1) == b"\t" and mm.read(new + (32 << 20) - 1, 1) == b"\t"


def test_the_bare_move_page_tables_keeps_the_source_tables():
    """mm.move_page_tables() changes no VMA: the source's emptied tables stay, as in the kernel."""
    mm = pymm.MM()
    mm.mmap(BASE, 8 << 20, RW, PRIV | C.MAP_FIXED)
    mm.memset(BASE, 9, 8 << 20)
    tables = mm.engine.n_tables
    mm.move_page_tables(BASE, BASE + PUD + PAGE, 8 << 20)
    # the destination's PMD table and 5 PTE tables come; none of the source's 4 goes
    assert mm.engine.n_tables == tables + 6 and mm.stats["pgtables_freed"] == 0
