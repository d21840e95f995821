"""fork(): kernel/fork.c's dup_mm() and dup_mmap().

The child's VMAs are copies of the parent's, except those marked
VM_DONTCOPY (``MADV_DONTFORK``); a VM_WIPEONFORK VMA (``MADV_WIPEONFORK``)
is copied without its anon_vma or pages, so the child finds zero-filled
memory there.  Each copied VMA with an anon_vma gets a new one of its own,
chained to the parent's (``anon_vma_fork()``), and its page tables are
copied: private anonymous pages become copy-on-write in both processes
(``copy_page_range()``, ``copy_huge_pmd()``, in :mod:`mmcore.fork`).
Shared mappings are not copied: the child faults their pages in from the
shmem object, as Linux does.  ``VM_LOCKED`` is not inherited.

Processes forked from one another share one :class:`mmcore.Engine` (the
frames, the owners): each is a context of it, with its own pgd and
counters.  A :class:`ForkFamily` keeps them: it makes the caller's
context current before each call (``switch_mm()``), refuses a call on one
process while another of the family runs (a kernel hook), and takes down
the page tables of a process that is gone (``exit_mmap()``) at the next
call.

Example::

    >>> mm = pymm.MM()
    >>> a = mm.mmap(0, 8192, pymm.PROT_READ | pymm.PROT_WRITE,
    ...             pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
    >>> mm.write(a, b"parent")
    >>> child = mm.fork()
    >>> child.write(a, b"child!")            # copy-on-write: the child's own page now
    >>> mm.read(a, 6), child.read(a, 6), child.stats["cow_faults"]
    (b'parent', b'child!', 1)
"""
from __future__ import annotations

import weakref
from typing import Dict, List, Tuple

import mmcore
from pymm import constants as C
from pymm.errors import ENOMEM, ReentrantCallError
from pymm.mm.syscall import _Errno
from pymm.mm.vma import Vma, VmaTree, vma_link

# What a child does not inherit of a VMA's flags (dup_mmap(): vm_flags_clear(tmp, VM_LOCKED_MASK)).
VM_LOCKED_MASK = C.VM_LOCKED | C.VM_LOCKONFAULT


def is_cow_mapping(vm_flags: int) -> bool:
    """is_cow_mapping(): private and may become writable."""
    return vm_flags & (C.VM_SHARED | C.VM_MAYWRITE) == C.VM_MAYWRITE


class ForkFamily:
    """The processes that share one engine since a fork: context -> MM."""

    def __init__(self, first):
        self.engine = first.engine
        self.procs: Dict[int, weakref.ref] = {}
        self.dead: List[Tuple[int, VmaTree, Dict[int, int]]] = []
        self.add(first)

    def add(self, mm) -> None:
        mm._family = self
        self.procs[mm._ctx] = weakref.ref(mm)
        fin = weakref.finalize(mm, self.dead.append, (mm._ctx, mm._tree, mm._anon_refs))
        fin.atexit = False

    def live(self) -> list:
        """The family's processes still referenced, in context order."""
        out = []
        for ctx in sorted(self.procs):
            p = self.procs[ctx]()
            if p is not None:
                out.append(p)
        return out

    def switch(self, mm) -> None:
        """switch_mm() to ``mm`` before one of its calls; reap the dead."""
        for ref in self.procs.values():
            p = ref()
            if p is not None and p is not mm and p._busy:
                raise ReentrantCallError(f"a call on pid {mm.pid} while {p._busy}() runs on pid {p.pid} "
                                         "of the same fork family (from a kernel hook?): refused")
        mmcore.switch_mm(self.engine, mm._ctx)
        if self.dead:
            self.reap()

    def reap(self) -> None:
        """exit_mmap() + mmdrop() of the processes that are gone."""
        eng = self.engine
        while self.dead:
            ctx, tree, anon_refs = self.dead.pop()
            self.procs.pop(ctx, None)
            exit_process(eng, ctx, tree, anon_refs)


def exit_process(eng, ctx: int, tree: VmaTree, anon_refs: Dict[int, int]) -> None:
    """exit_mmap(): zap and free the page tables, drop the VMAs' references
    (unlink_anon_vmas(), fput()), then the pgd (mmdrop())."""
    mmcore.exit_mmap(eng, ctx)
    for v in tree:
        if v.shm is not None:
            v.shm.refs -= 1
            if v.shm.refs == 0:
                eng.owner_free(v.shm.owner)
    for o in anon_refs:
        eng.owner_free(o)
    mmcore.mmdrop(eng, ctx)


def new_process(parent, ctx: int):
    """dup_mm(): the child's mm_struct, the parent's copied field by field,
    with its own VMA tree, references, warnings and lock state."""
    child = object.__new__(type(parent))
    child.__dict__.update(parent.__dict__)
    for k, v in child.__dict__.items():          # per-process tables (rlimits, ...): the child's own copy
        if isinstance(v, (dict, list, set)):
            child.__dict__[k] = type(v)(v)
    child._busy = None
    child._warn_queue = []
    child.warnings = []
    child._partial_ok = False
    child._tree = VmaTree()
    child._anon_refs = {}
    child._ctx = ctx
    if "locked_vm" in child.__dict__:            # mm_init(): nothing locked (VM_LOCKED is not inherited)
        child.locked_vm = 0
    child.pid = parent.machine._attach(child)
    return child


def dup_mmap(parent):
    """dup_mmap(): the child process of ``parent`` (see the module's text).

    Out of memory (the engine's page limit) the child is taken down again
    and fork fails with ENOMEM, the parent unchanged but for the pages now
    write-protected.
    """
    eng = parent.engine
    family = parent._family or ForkFamily(parent)
    if family.dead:
        family.reap()
    ctx = mmcore.mm_alloc(eng)
    child = new_process(parent, ctx)
    try:
        for v in parent._tree:
            if v.vm_flags & C.VM_DONTCOPY:
                continue
            anon = 0
            wipe = bool(v.vm_flags & C.VM_WIPEONFORK)
            if v.anon and not wipe:
                anon = eng.owner_new("anon", parent=v.anon)         # anon_vma_fork()
            vma_link(child, Vma(v.start, v.end, v.vm_flags & ~VM_LOCKED_MASK, v.pgoff, anon, v.shm, v.name))
            if anon:
                # vma_needs_copy(): only a VMA with an anon_vma has pages to copy
                mmcore.copy_page_range(eng, parent._ctx, ctx, v.start, v.end, cow=is_cow_mapping(v.vm_flags))
    except MemoryError:
        exit_process(eng, ctx, child._tree, child._anon_refs)
        raise _Errno(ENOMEM) from None
    family.add(child)
    return child


def join_machine(mm, other) -> None:
    """A process spawned on a machine that already runs ``other``: one boot
    has one physical memory, so the new, still empty address space becomes
    a context of the machine's engine (its own pgd, as mm_alloc() gives
    it) instead of an engine of its own.  The machine's RAM then bounds the
    sum of its processes, and their calls are serialised as a fork
    family's are (one engine, one lock).
    """
    eng = other.engine
    family = other._family or ForkFamily(other)
    if family.dead:
        family.reap()
    try:
        ctx = mmcore.mm_alloc(eng)
    except MemoryError:                          # no page for the pgd: fork()'s ENOMEM
        raise OSError(ENOMEM, "spawn: out of memory (the machine's ram is used up)") from None
    mm.engine = eng
    mm._ctx = ctx
    mm._lock = other._lock
    family.add(mm)


__all__ = ["dup_mmap", "ForkFamily", "is_cow_mapping", "exit_process", "join_machine"]
