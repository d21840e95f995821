"""mremap(): mm/mremap.c of Linux 6.18.

``do_mremap()`` and its ``vma_remap_struct`` flow: the parameter checks,
shrink, expand in place, ``mremap_to()`` for MREMAP_FIXED/DONTUNMAP,
``remap_move()`` (6.17: several VMAs with MREMAP_FIXED), ``move_vma()``.
:func:`move_page_tables` is the glue around mmcore's loop: it runs the
kernel's hooks (:class:`pymm.Kernel`: the overlap guard, the align hook,
how progress is counted), calls ``mmcore.move_range()`` and turns the
engine's warning records into :class:`pymm.KernelWarning`.  It is the hot
path of every move: O(1) Python per call, whatever the size.

Example (``mm.mremap()`` is a thin wrapper around :func:`do_mremap`)::

    >>> a = mm.mmap(0, 1 << 30, pymm.PROT_READ | pymm.PROT_WRITE,
    ...             pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
    >>> mm.memset(a, 1, 1 << 30)
    >>> hex(do_mremap(mm, a, 1 << 30, 1 << 30, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED, 1 << 40))
    '0x10000000000'
"""
from __future__ import annotations

import functools
from typing import Optional

import mmcore
from mmcore import MoveControl
from pymm import constants as C
from pymm.errors import EAGAIN, EFAULT, EINVAL, ENOMEM, EPERM, oops
from pymm.kernels import (DONTUNMAP_NONE, DONTUNMAP_PRIVATE_ANON, PageTableMove,
                          kirill_overlap_guard, pmc_progress, progress_len, try_realign_addr)
from pymm.mm.memory import mm_populate
from pymm.mm.mmap import get_unmapped_area
from pymm.mm.mseal import can_modify_vma
from pymm.mm.rlimit import account_locked, may_expand_vm, mlock_future_ok
from pymm.mm.syscall import U64, _Errno
from pymm.mm.vma import Vma, copy_vma, do_vmi_munmap, vma_merge_extend, vma_set_anon

_MOVE_FIXED = C.MREMAP_MAYMOVE | C.MREMAP_FIXED
LEAN_MOVES = True    # take the whole-VMA short cut where it applies (tests compare with False)
# VMAs whose move has more to it (mlock accounting, special mappings, mseal's
# VM_SEALED: EPERM): the general path
_GENERAL_ONLY = C.VM_LOCKED | C.VM_LOCKONFAULT | C.VM_PFNMAP | C.VM_IO | C.VM_DONTEXPAND | C.VM_HUGETLB \
    | C.VM_SEALED


# ---------------------------------------------------------------- do_mremap()
def do_mremap(mm, addr: int, old_len: int, new_len: int, flags: int, new_addr: int) -> int:
    """do_mremap(): check, then shrink, expand in place or move; returns the new address."""
    if flags == _MOVE_FIXED and old_len == new_len and LEAN_MOVES:
        # The common move: a whole VMA to an empty place with no neighbour to
        # merge with, under a kernel whose hooks change nothing there.  The
        # steps mremap_to() -> move_vma() take for it run in one mmcore call
        # (mmcore.WholeVmaMove: the checks, the VMA itself moves with the
        # fields and references copy_vma()'s new one would have, the tables
        # move, the source is zapped and freed with the floor and ceiling
        # free_pgtables() would use).  NOT_TAKEN: nothing changed; any other
        # case and every error go the general way below.
        try:
            mover = mm._whole_vma_move
        except AttributeError:
            mover = mm._whole_vma_move = whole_vma_mover(mm)
        if mover is not None:
            tree = mm._tree
            r = mover.move(mm.engine, tree._starts, tree._vmas, addr, old_len, new_addr,
                           mm.max_map_count, mm.mmap_min_addr)
            if r >= 0:
                return r
            if r != _NOT_TAKEN:
                return whole_vma_moved(mm, mover, r, addr, old_len, new_addr)
    pm = mm._pmask
    old_len, new_len = (old_len + pm) & ~pm & U64, (new_len + pm) & ~pm & U64  # PAGE_ALIGN()
    check_mremap_params(mm, addr, old_len, new_len, flags, new_addr)
    if mm._kernel.multi_vma_move and flags & C.MREMAP_FIXED and old_len == new_len:
        return remap_move(mm, addr, old_len, flags, new_addr)
    vma = mm._tree.lookup(addr)
    check_prep_vma(mm, vma, addr, old_len, new_len, flags)
    if flags & (C.MREMAP_FIXED | C.MREMAP_DONTUNMAP):
        return mremap_to(mm, addr, old_len, new_len, flags, new_addr)
    return mremap_at(mm, vma, addr, old_len, new_len, flags)


def whole_vma_moved(mm, mover, r: int, addr: int, length: int, new_addr: int) -> int:
    """After a WholeVmaMove that did not simply succeed: the warnings it
    recorded, and if the loop stopped early, move_vma()'s undo (ENOMEM)."""
    collect_warnings(mm)
    if r == _INCOMPLETE:
        vma, mover.vma = mover.vma, None
        return move_failed(mm, vma, addr, new_addr, length, mover.done)
    return new_addr


_NOT_TAKEN, _WARNED, _INCOMPLETE = (mmcore.WholeVmaMove.NOT_TAKEN, mmcore.WholeVmaMove.WARNED,
                                    mmcore.WholeVmaMove.INCOMPLETE)


def whole_vma_mover(mm) -> Optional[mmcore.WholeVmaMove]:
    """The address space's WholeVmaMove, or None if the kernel's hooks are
    not the stock ones that change nothing for a non-overlapping move:
    the overlap guard allows PMD moves, 6.7's try_realign_addr() (the
    mover leaves it the cases where it may act), progress counts what
    moved.  Each MM has its own (a move fills in its MoveControl without
    the GIL); what they are made from is worked out once per kernel."""
    k, m = mm._kernel, mm.machine
    key = (id(k), m.move_pmd, m.move_pud)
    made = _MOVER_POLICY.get(key)
    if made is None or made[0] is not k:
        ok = k.overlap_guard in (None, kirill_overlap_guard) and k.align in (None, try_realign_addr) \
            and k.progress in (progress_len, pmc_progress)
        policy = _policy(k.pmd_moves and m.move_pmd, False, k.pud_moves and m.move_pud, k.pud_step,
                         k.pmd_warn, k.pud_warn, k.huge_pmd_warn) if ok else None
        made = _MOVER_POLICY[key] = (k, policy)
    if made[1] is None:
        return None
    return mmcore.WholeVmaMove(made[1], mm.task_size, mm.page_shift, mm.pmd_size, k.align is not None,
                               _GENERAL_ONLY)


_MOVER_POLICY: dict = {}     # (id(kernel), HAVE_MOVE_PMD, HAVE_MOVE_PUD) -> (kernel, policy or None)


def move_failed(mm, vma: Vma, addr: int, new_addr: int, length: int, done: int) -> int:
    """move_vma()'s failure after a WholeVmaMove's move: the destination
    VMA appears as copy_vma() made it, the entries go back, and the new
    area is unmapped instead of the old (ENOMEM)."""
    new_vma, vma = copy_vma(mm, vma, new_addr, length, vma.pgoff)
    move_page_tables(mm, new_vma, vma, new_addr, addr, done, False)
    try:
        do_vmi_munmap(mm, new_addr, length)
    except _Errno:
        pass
    mm._partial_ok = True
    raise _Errno(ENOMEM)


def check_mremap_params(mm, addr: int, old_len: int, new_len: int, flags: int, new_addr: int) -> None:
    """check_mremap_params(): the checks that need no VMA."""
    if flags & ~(C.MREMAP_FIXED | C.MREMAP_MAYMOVE | C.MREMAP_DONTUNMAP):
        raise _Errno(EINVAL)
    if flags & C.MREMAP_DONTUNMAP and mm._kernel.mremap_dontunmap == DONTUNMAP_NONE:
        raise _Errno(EINVAL)                       # before 5.7 (e346b3813067): an unknown flag
    if (mm._pmask & addr):
        raise _Errno(EINVAL)
    if not new_len:
        raise _Errno(EINVAL)
    if new_len > mm.task_size:
        raise _Errno(EINVAL)
    if not flags & (C.MREMAP_FIXED | C.MREMAP_DONTUNMAP):
        return
    if new_addr > mm.task_size - new_len:
        raise _Errno(EINVAL)
    if (mm._pmask & new_addr):
        raise _Errno(EINVAL)
    if not flags & C.MREMAP_MAYMOVE:
        raise _Errno(EINVAL)
    if flags & C.MREMAP_DONTUNMAP and old_len != new_len:
        raise _Errno(EINVAL)
    if addr + old_len > new_addr and new_addr + new_len > addr:   # vrm_overlaps()
        raise _Errno(EINVAL)
    if len(mm._tree._vmas) + 2 >= mm.max_map_count - 3:
        raise _Errno(ENOMEM)


def check_prep_vma(mm, vma: Optional[Vma], addr: int, old_len: int, new_len: int, flags: int) -> None:
    """check_prep_vma(): the VMA-dependent checks, only where a new
    mapping will appear (expand or move)."""
    if vma is None:
        raise _Errno(EFAULT)
    if not can_modify_vma(vma):
        raise _Errno(EPERM)                            # mseal (6.10+)
    will_map_new = new_len > old_len or flags & (C.MREMAP_FIXED | C.MREMAP_DONTUNMAP)
    if not will_map_new:
        return
    if not old_len and vma.shm is None:
        raise _Errno(EINVAL)   # "attempted to duplicate a private mapping with mremap"
    if flags & C.MREMAP_DONTUNMAP:
        if mm._kernel.mremap_dontunmap == DONTUNMAP_PRIVATE_ANON:
            if vma.shm is not None:
                raise _Errno(EINVAL)                   # 5.7-5.12: private anonymous only
        elif vma.vm_flags & (C.VM_DONTEXPAND | C.VM_PFNMAP):
            raise _Errno(EINVAL)                       # a4609387859f (5.13)
    check_len = new_len if old_len > new_len else old_len
    if check_len > vma.end - addr:
        raise _Errno(EFAULT)
    if new_len == check_len:
        return
    pgoff = vma.pgoff + ((addr - vma.start) >> mm.page_shift)
    if pgoff + (new_len >> mm.page_shift) > U64:
        raise _Errno(EINVAL)
    # growth: the limits of remap_is_valid() (vma_to_resize() before 6.x: every catalogued kernel)
    if vma.vm_flags & (C.VM_DONTEXPAND | C.VM_PFNMAP):
        raise _Errno(EFAULT)
    delta = new_len - old_len
    if not mlock_future_ok(mm, vma.vm_flags, delta):
        raise _Errno(EAGAIN)
    if not may_expand_vm(mm, vma.vm_flags, delta >> mm.page_shift):
        raise _Errno(ENOMEM)


def remap_move(mm, addr: int, length: int, flags: int, new_addr: int) -> int:
    """remap_move() (6.17): move every VMA in [addr, addr+length) to
    new_addr, keeping the gaps between them."""
    start, end = addr, addr + length
    tree = mm._tree
    vma = tree.lookup(start)
    if vma is not None and vma.end >= end:             # one VMA: the common case
        check_prep_vma(mm, vma, start, length, length, flags)
        return mremap_to(mm, start, length, length, flags, new_addr, vma)
    target = new_addr
    res = None
    last_end = 0
    vmas = tree.intersecting(start, end)
    if not vmas or vmas[0].start > start:
        raise _Errno(EFAULT)                           # no gap at the start
    # Move in order; each move may reshape the tree, so re-find by address.
    pieces = [(max(v.start, start), min(end, v.end), v.start, v.end) for v in vmas]
    for i, (s, e, vstart, vend) in enumerate(pieces):
        offset = vstart - last_end if i else 0
        last_end = vend
        vma = tree.lookup(s)
        if vma is None:
            raise _Errno(EFAULT)
        if i == 0 and len(pieces) > 1 and not vma_multi_allowed(vma):
            raise _Errno(EFAULT)
        check_prep_vma(mm, vma, s, e - s, e - s, flags)
        r = mremap_to(mm, s, e - s, e - s, flags, target + offset)
        if res is None:
            res = r
        target = r + (e - s)
    return res


def vma_multi_allowed(vma: Vma) -> bool:
    """vma_multi_allowed(): may this VMA move as part of several? (no uffd in pymm)"""
    return True  # anonymous and shmem VMAs


def mremap_to(mm, addr: int, old_len: int, new_len: int, flags: int, new_addr: int,
              vma: Optional[Vma] = None) -> int:
    """mremap_to(): the move to a chosen (FIXED) or found (DONTUNMAP) place.
    ``vma``: the source VMA if the caller has it (found again after any unmap)."""
    dest = mm._tree.find_vma(new_addr) if flags & C.MREMAP_FIXED else None
    if dest is not None and dest.start < new_addr + new_len:
        do_vmi_munmap(mm, new_addr, new_len)           # (nothing there: nothing to unmap)
        mm._partial_ok = True                          # the destination is gone for good
        vma = None
    if old_len > new_len:                              # shrink_vma()
        do_vmi_munmap(mm, addr + new_len, old_len - new_len)
        mm._partial_ok = True
        old_len = new_len
        vma = None
    if vma is None:
        vma = mm._tree.lookup(addr)
    if vma is None:
        raise _Errno(EFAULT)                           # the source went with the unmap
    # MREMAP_DONTUNMAP keeps the source: the address space grows by old_len (5.7+)
    if flags & C.MREMAP_DONTUNMAP and not may_expand_vm(mm, vma.vm_flags, old_len >> mm.page_shift):
        raise _Errno(ENOMEM)
    new_addr = vrm_set_new_addr(mm, vma, addr, new_len, flags, new_addr)
    return move_vma(mm, vma, addr, old_len, new_len, flags, new_addr)


def vrm_set_new_addr(mm, vma: Vma, addr: int, new_len: int, flags: int, new_addr: int) -> int:
    """vrm_set_new_addr(): get_unmapped_area() for the destination."""
    map_flags = (C.MAP_FIXED if flags & C.MREMAP_FIXED else 0) | \
        (C.MAP_SHARED if vma.vm_flags & C.VM_MAYSHARE else 0)
    hint = new_addr if flags & (C.MREMAP_FIXED | C.MREMAP_DONTUNMAP) else 0
    return get_unmapped_area(mm, hint, new_len, map_flags, shared_file=vma.shm is not None)


def mremap_at(mm, vma: Vma, addr: int, old_len: int, new_len: int, flags: int) -> int:
    """mremap_at(): no new address asked for: no-op, shrink or expand."""
    if new_len == old_len:
        return addr
    if new_len < old_len:
        do_vmi_munmap(mm, addr + new_len, old_len - new_len)
        return addr
    delta = new_len - old_len
    if vma.end - addr == old_len and vma_expandable(mm, vma, delta):
        if not vrm_calc_charge(mm, vma, delta):        # expand_vma_in_place()
            raise _Errno(ENOMEM)
        vma_merge_extend(mm, vma, delta)
        account_locked(mm, vma.vm_flags, delta)        # vrm_stat_account()
        if vma.vm_flags & C.VM_LOCKED:
            mm_populate(mm, addr + old_len, delta)
        return addr
    if not flags & C.MREMAP_MAYMOVE:
        raise _Errno(ENOMEM)
    new_addr = vrm_set_new_addr(mm, vma, addr, new_len, flags, 0)
    return move_vma(mm, vma, addr, old_len, new_len, flags, new_addr)


def vrm_calc_charge(mm, vma: Vma, charge: int) -> bool:
    """vrm_calc_charge(): an accounted VMA charges what it grows by (all of
    the new length with MREMAP_DONTUNMAP); the machine's overcommit policy
    may refuse it (:meth:`pymm.Machine.vm_enough_memory`)."""
    return not vma.vm_flags & C.VM_ACCOUNT or mm.machine.vm_enough_memory(mm, max(charge, 0))


def vma_expandable(mm, vma: Vma, delta: int) -> bool:
    """vma_expandable(): nothing in the way of growing vma by delta, within TASK_SIZE."""
    end = vma.end + delta
    if mm._tree.first_intersecting(vma.end, end) is not None:
        return False
    if end > mm.task_size:
        return False
    return not (mm.window and end > mm.window[1])


def move_vma(mm, vma: Vma, addr: int, old_len: int, new_len: int, flags: int, new_addr: int) -> int:
    """move_vma(): copy the VMA, move its page tables, unmap the source
    (or, with MREMAP_DONTUNMAP, leave it empty)."""
    if len(mm._tree._vmas) >= mm.max_map_count - 3:  # prep_move_vma()
        raise _Errno(ENOMEM)
    if not vrm_calc_charge(mm, vma, new_len if flags & C.MREMAP_DONTUNMAP else max(new_len - old_len, 0)):
        raise _Errno(ENOMEM)
    locked = vma.vm_flags & C.VM_LOCKED
    new_pgoff = vma.pgoff + ((addr - vma.start) >> mm.page_shift)
    new_vma, vma = copy_vma(mm, vma, new_addr, new_len, new_pgoff)
    moved = move_page_tables(mm, vma, new_vma, addr, new_addr, old_len, False)
    err = 0
    if moved < old_len:
        err = ENOMEM
        # move entries back, then unmap the new area instead of the old
        move_page_tables(mm, new_vma, vma, new_addr, addr, moved, False)
        addr, old_len = new_addr, new_len
    account_locked(mm, locked, new_len)                # vrm_stat_account(vrm, new_len)
    if not err and flags & C.MREMAP_DONTUNMAP:
        dontunmap_complete(mm, vma, new_vma, addr, old_len)
    else:
        try:                                           # unmap_source_vma()
            do_vmi_munmap(mm, addr, old_len)
        except _Errno:
            pass  # "OOM: unable to split vma, just get accounts right"; old_len 0 lands here too
    if err:
        mm._partial_ok = True
        raise _Errno(err)
    if locked and new_len > old_len:   # 5.8 sys_mremap's mm_populate(); 6.17+ populate_expand
        mm_populate(mm, new_addr + old_len, new_len - old_len)
    return new_addr


def dontunmap_complete(mm, vma: Vma, new_vma: Vma, addr: int, length: int) -> None:
    """dontunmap_complete(): the source keeps its VMA, loses VM_LOCKED, and
    its anon_vma if all of it moved.  (It keeps VM_ACCOUNT: this
    machine's 6.18 shows "ac" in smaps afterwards and re-merges the
    source with fresh accounted mappings.)"""
    vma.vm_flags &= ~(C.VM_LOCKED | C.VM_LOCKONFAULT)
    if new_vma is not vma and vma.start == addr and vma.end == addr + length:
        vma_set_anon(mm, vma, 0)


# ---------------------------------------------------------------- move_page_tables(): hooks + mmcore
@functools.lru_cache(maxsize=None)
def _policy(move_pmd, for_stack, move_pud, pud_step, pmd_warn, pud_warn, huge_pmd_warn) -> MoveControl:
    """A MoveControl template per distinct kernel policy (templates are never
    modified: mmcore.move_range() copies the policy out of them)."""
    return MoveControl(0, 0, 0, for_stack=for_stack, move_pmd=move_pmd, move_pud=move_pud,
                       pud_step=pud_step, pmd_warn=pmd_warn, pud_warn=pud_warn,
                       huge_pmd_warn=huge_pmd_warn)


def move_page_tables(mm, old_vma: Optional[Vma], new_vma: Optional[Vma], old_addr: int,
                     new_addr: int, length: int, for_stack: bool) -> int:
    """move_page_tables() as ``mm.kernel`` runs it: overlap guard, align
    hook, the mmcore loop, warnings, and the kernel's idea of how many
    bytes that moved."""
    if not length:
        return 0
    k = mm._kernel
    move = PageTableMove(old_addr, new_addr, length, old_vma, new_vma,  # views made lazily
                         for_stack and k.exec_passes_for_stack, mm.page_size, mm.pmd_size,
                         mm.pud_size, old_addr + length, length, mm)
    allow_pmd = k.pmd_moves and mm.machine.move_pmd          # CONFIG_HAVE_MOVE_PMD of the arch
    if k.overlap_guard is not None:
        allow, warn_up = _overlap_guard(mm, k.overlap_guard, move)
        allow_pmd = allow_pmd and allow
        if warn_up:
            mm.engine.record_warning("overlap_up", old_addr, new_addr)
    if k.align is not None:
        _run_hook(mm, "align", k.align, move)
        if (move.old_addr, move.new_addr, move.len, move.old_end, move.len_in) != \
                (old_addr, new_addr, length, old_addr + length, length):
            validate_move(mm, move, old_addr, new_addr, length)
        if k.align_before_old_end:
            move.old_end = move.old_addr + move.len
    end_addr = move.old_addr
    if move.old_addr < move.old_end:
        # the kernel's compile-time choices, as a MoveControl template
        allow_pud = k.pud_moves and mm.machine.move_pud           # CONFIG_HAVE_MOVE_PUD of the arch
        policy = _policy(allow_pmd, move.for_stack, allow_pud, k.pud_step, k.pmd_warn, k.pud_warn,
                         k.huge_pmd_warn)
        end_addr = mmcore.move_range(mm.engine, move.old_addr, move.new_addr, move.old_end,
                                     move.len_in, policy)
    if mm.engine.pending_warnings:
        collect_warnings(mm)
    done = _run_hook(mm, "progress", k.progress, move, end_addr)
    if type(done) is not int or not 0 <= done <= U64:
        raise oops(mm, f"the kernel's progress hook returned {done!r}, not an unsigned long")
    return done


def _run_hook(mm, name: str, hook, *args):
    """Call a kernel hook; one that raises is an oops (the call is half done)."""
    try:
        return hook(*args)
    except BaseException as e:
        raise oops(mm, f"the kernel's {name} hook raised {type(e).__name__}: {e}") from e


def _overlap_guard(mm, hook, move: PageTableMove) -> tuple:
    """The overlap guard's (allow_move_normal_pmd, warn_moving_up), checked."""
    r = _run_hook(mm, "overlap_guard", hook, move)
    if type(r) is not tuple or len(r) != 2:
        raise oops(mm, f"the kernel's overlap_guard hook returned {r!r}, not a pair of bools")
    return bool(r[0]), bool(r[1])


def validate_move(mm, move: PageTableMove, old_addr: int, new_addr: int, length: int) -> None:
    """An align hook (maybe a user's) must leave a sane move behind: every
    field an unsigned long, pages aligned, old_end and len_in untouched,
    and each range widened by at most a PMD on either side."""
    for name in ("old_addr", "new_addr", "len", "old_end", "len_in"):
        v = getattr(move, name)
        if type(v) is not int or not 0 <= v <= U64:
            raise oops(mm, f"align hook left move.{name}={v!r}: not an unsigned long")
    if (move.old_end, move.len_in) != (old_addr + length, length):
        raise oops(mm, "align hook changed move.old_end or move.len_in (the kernel's own)")
    if (move.old_addr | move.new_addr | move.len) & (mm.page_size - 1):
        raise oops(mm, "align hook left an unaligned address or length")
    pmd = mm.pmd_size
    for name, start, addr in (("old", old_addr, move.old_addr), ("new", new_addr, move.new_addr)):
        if not start - pmd <= addr or addr + move.len > min(start + length + pmd, mm._va_limit):
            raise oops(mm, f"align hook moved the {name} range to [{addr:#x}, {addr + move.len:#x}), "
                           f"more than a PMD beyond [{start:#x}, {start + length:#x})")


def collect_warnings(mm) -> None:
    """WARN_ON()'s report, by the machine (a WARN_ON_ONCE fires once per boot);
    issued through warnings.warn() when the call is complete."""
    mm.machine.report_warnings(mm)
