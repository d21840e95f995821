"""pymm.MM: a process address space with Linux 6.18 syscall semantics.

The VMA tree and every syscall's decisions live here; the page tables, the
frames and every loop over them live in :mod:`mmcore`.  Each function below
names the kernel function it models.  Python work per call is proportional to
the VMAs it touches, never to the pages.

Example::

    >>> import pymm
    >>> mm = pymm.MM()
    >>> a = mm.mmap(0, 1 << 30, pymm.PROT_READ | pymm.PROT_WRITE,
    ...             pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
    >>> mm.memset(a, 0x5A, 1 << 30)
    >>> b = mm.mremap(a, 1 << 30, 1 << 30, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED,
    ...               a + (4 << 30))
    >>> mm.read(b + 12345, 2), mm.stats["pud_moves"]
    (b'ZZ', 1)
"""
from __future__ import annotations

import functools
import warnings as _warnings
from typing import Dict, List, Optional

import numpy as np

import mmcore
from mmcore import Engine, MoveControl
from pymm import constants as C
from pymm.errors import (EACCES, EBADF, EEXIST, EFAULT, EINVAL, ENOMEM, EPERM, BusError,
                          InvariantError,
                         KernelWarning, SegmentationFault, oserror)
from pymm.kernels import Kernel, PageTableMove, get_kernel
from pymm.vma import VMA, ShmemObject, Vma, VmaTree, perms, snapshot, view

U64 = (1 << 64) - 1
ARCHES = {"x86_64": mmcore.X86_64, "x86_64-la57": mmcore.X86_64_LA57}
THP_MODES = ("always", "madvise", "never")
_SITE_NAMES = {v: k for k, v in mmcore.WARN_SITES.items()}
PM_SOFT_DIRTY = np.uint64(1 << 55)
FAULT_AROUND_BYTES = 65536
MAX_READ = 1 << 32            # mm.read() returns bytes: 4 GiB at most per call
READ_CHUNK = 1 << 26


@functools.lru_cache(maxsize=None)
def _policy(move_pmd, for_stack, move_pud, pud_step, pmd_warn, pud_warn, huge_pmd_warn) -> MoveControl:
    """A MoveControl template per distinct kernel policy (templates are never
    modified: mmcore.move_range() copies the policy out of them)."""
    return MoveControl(0, 0, 0, for_stack=for_stack, move_pmd=move_pmd, move_pud=move_pud,
                       pud_step=pud_step, pmd_warn=pmd_warn, pud_warn=pud_warn,
                       huge_pmd_warn=huge_pmd_warn)


class _Errno(Exception):
    """Internal: a syscall's error return (-errno), turned into OSError at the edge."""

    def __init__(self, code):
        self.code = code


def _u64(value, name: str) -> int:
    """A syscall argument as the kernel sees it: an unsigned long.

    Negative ints wrap as they would through C (``-4096`` is ``2**64 - 4096``);
    anything else that is not an int is a TypeError."""
    if type(value) is int and 0 <= value <= U64:   # the common case, fast
        return value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    value = int(value)
    if not -(1 << 63) <= value <= U64:
        raise OverflowError(f"{name}={value:#x} does not fit an unsigned long")
    return value & U64


def _syscall(fn):
    """Wrap a syscall: errno -> OSError, and with check=True verify that a
    failed call changed nothing and that every invariant holds after it."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        if not self.check_enabled:
            try:
                return fn(self, *args, **kwargs)
            except _Errno as e:
                raise oserror(e.code, fn.__name__) from None
        before = self._state_digest()
        self._partial_ok = False
        try:
            result = fn(self, *args, **kwargs)
        except _Errno as e:
            # Linux leaves the address space as it was for every error it
            # checks up front; only calls that had already changed something
            # (mprotect/madvise over a hole, mremap after unmapping the
            # destination) may fail with a changed state.
            if self._state_digest() != before and not self._partial_ok:
                raise InvariantError([f"failed {fn.__name__} (errno {e.code}) changed the address space"],
                                     fn.__name__) from None
            self._check_now(fn.__name__)
            raise oserror(e.code, fn.__name__) from None
        self._check_now(fn.__name__)
        return result

    return wrapper


class MM:
    """A process address space: VMAs, page tables and memory.

    ``kernel``: a name from :data:`pymm.KERNELS` or a :class:`pymm.Kernel`
    (default ``"6.18"``); ``arch``: ``"x86_64"`` or ``"x86_64-la57"``;
    ``check=True`` runs :func:`pymm.check` after every call and raises
    :class:`pymm.InvariantError`; ``thp`` is
    /sys/kernel/mm/transparent_hugepage/enabled.

    Keyword-only extras: ``mmap_base`` (top of the top-down mmap area;
    default ``task_size - 128 MiB``, a non-randomised x86-64 layout),
    ``window=(lo, hi)`` (confine address selection, to mirror
    :class:`pymm.host.HostMM`), ``max_map_count``, ``privileged`` (may map
    below mmap_min_addr, as root can), ``commit_limit`` (bytes; a private
    writable mapping larger than this fails with ENOMEM, as the heuristic
    overcommit does beyond RAM + swap; default: no limit).

    Example::

        >>> mm = pymm.MM(kernel="5.8", thp="never")
        >>> mm.page_size, mm.pmd_size, hex(mm.task_size)
        (4096, 2097152, '0x7ffffffff000')
    """

    def __init__(self, kernel="6.18", arch="x86_64", check=False, thp="madvise", *,
                 mmap_base: Optional[int] = None, window=None,
                 max_map_count: int = C.DEFAULT_MAX_MAP_COUNT, privileged: bool = False,
                 commit_limit: Optional[int] = None, rlimit_stack: int = C.RLIMIT_STACK_DEFAULT):
        self._kernel: Kernel = get_kernel(kernel)
        if arch not in ARCHES:
            raise ValueError(f"unknown arch {arch!r}; choose from {', '.join(ARCHES)}")
        if thp not in THP_MODES:
            raise ValueError(f"thp must be one of {THP_MODES}, not {thp!r}")
        if not isinstance(check, bool):
            raise TypeError("check must be True or False")
        self.arch = arch
        self.geometry = ARCHES[arch]
        self.thp = thp
        self.engine = Engine(self.geometry)
        self.page_size = self.geometry.page_size
        self.page_shift = self.geometry.page_shift
        self.pmd_size = self.geometry.pmd_size
        self.pud_size = self.geometry.pud_size
        self.task_size = self.geometry.task_size
        self.map_window = self.geometry.map_window
        self._pmask = self.page_size - 1          # offset_in_page()
        # /sys/kernel/debug/fault_around_bytes (default 64 KiB): read faults
        # on shared memory also map the cached pages around them
        self._fault_around_pages = max(1, FAULT_AROUND_BYTES >> self.page_shift)
        self._va_limit = 1 << self.geometry.va_bits
        self.stack_guard_gap = C.STACK_GUARD_GAP_PAGES * self.page_size
        self.mmap_min_addr = C.MMAP_MIN_ADDR
        if max_map_count < 1:
            raise ValueError("max_map_count must be >= 1")
        self.max_map_count = int(max_map_count)
        self.privileged = bool(privileged)
        self.commit_limit = commit_limit
        self.rlimit_stack = int(rlimit_stack)
        # arch/x86/mm/mmap.c mmap_base() without randomisation: the gap below
        # the stack is the stack rlimit plus the guard gap, at least 128 MiB.
        gap = max(C.MIN_GAP, self.rlimit_stack + self.stack_guard_gap)
        self.mmap_base = (self.map_window - gap) if mmap_base is None else int(mmap_base)
        self.mmap_legacy_base = (self.map_window // 3 + self.page_size - 1) & ~(self.page_size - 1)
        self.window = None
        if window is not None:
            lo, hi = (int(x) for x in window)
            if not (0 <= lo < hi <= self.task_size) or (lo | hi) & (self.page_size - 1):
                raise ValueError("window must be page-aligned (lo, hi) inside the user address space")
            self.window = (lo, hi)
            self.mmap_base = hi
        self._tree = VmaTree()
        self._anon_refs: Dict[int, int] = {}
        self._shm_inode = 1024
        self.warnings: List[KernelWarning] = []
        self.check_enabled = False
        self._partial_ok = False
        self.start_stack = 0
        self.check_enabled = check

    # ------------------------------------------------------------------ public attributes
    @property
    def kernel(self) -> Kernel:
        """The kernel this address space runs (fixed at creation)."""
        return self._kernel

    @property
    def stats(self) -> Dict[str, int]:
        """Counters since creation or reset_stats(): pte_moves, pmd_moves,
        pud_moves, huge_pmd_moves, pgtables_allocated, pgtables_freed,
        tlb_flushes, pte_slots_visited, huge_pmd_splits, faults, cow_faults,
        warnings."""
        return self.engine.stats()

    def reset_stats(self) -> None:
        self.engine.reset_stats()

    @property
    def map_count(self) -> int:
        return len(self._tree)

    @property
    def rss(self) -> int:
        """Resident memory in bytes (RssAnon + RssShmem, as VmRSS)."""
        anon, shmem = self.engine.rss()
        return (anon + shmem) * self.page_size

    def status(self) -> Dict[str, int]:
        """The memory lines of /proc/pid/status, in kB, plus map_count."""
        anon, shmem = self.engine.rss()
        kb = self.page_size // 1024
        size = sum(v.end - v.start for v in self._tree)
        return {"VmSize": size // 1024, "VmRSS": (anon + shmem) * kb, "RssAnon": anon * kb,
                "RssShmem": shmem * kb, "VmPTE": self.engine.n_tables * kb,
                "map_count": self.map_count}

    # ------------------------------------------------------------------ check support
    def _state_digest(self):
        vmas = tuple((v.start, v.end, v.vm_flags, v.pgoff, v.anon, id(v.shm)) for v in self._tree)
        return (vmas, mmcore.digest(self.engine))

    def _check_now(self, after: str) -> None:
        from pymm.check import check
        problems = check(self)
        if problems:
            raise InvariantError(problems, after)

    # ------------------------------------------------------------------ owners
    def _attach(self, vma: Vma) -> None:
        if vma.anon:
            self._anon_refs[vma.anon] = self._anon_refs.get(vma.anon, 0) + 1
        if vma.shm is not None:
            vma.shm.refs += 1

    def _detach(self, vma: Vma) -> None:
        if vma.anon:
            n = self._anon_refs[vma.anon] - 1
            if n:
                self._anon_refs[vma.anon] = n
            else:
                del self._anon_refs[vma.anon]
                self.engine.owner_free(vma.anon)
        if vma.shm is not None:
            vma.shm.refs -= 1
            if vma.shm.refs == 0:
                self.engine.owner_free(vma.shm.owner)

    def _set_anon(self, vma: Vma, anon: int) -> None:
        if vma.anon == anon:
            return
        if vma.anon:
            self._detach_anon(vma)
        vma.anon = anon
        if anon:
            self._anon_refs[anon] = self._anon_refs.get(anon, 0) + 1

    def _detach_anon(self, vma: Vma) -> None:
        shm, vma.shm = vma.shm, None
        self._detach(vma)
        vma.shm = shm
        vma.anon = 0

    def _insert(self, vma: Vma) -> Vma:
        self._tree.insert(vma)
        self._attach(vma)
        return vma

    def _remove(self, vma: Vma) -> None:
        self._tree.remove(vma)
        self._detach(vma)

    # ------------------------------------------------------------------ views for kernel hooks
    def _prev_view(self, vma):
        v = self._tree.prev(self._tree.lookup(vma.start))
        return view(v) if v is not None else None

    def _next_view(self, vma):
        v = self._tree.next(self._tree.lookup(vma.start))
        return view(v) if v is not None else None

    def _intersection_view(self, start, end):
        v = self._tree.first_intersecting(start, end)
        return view(v) if v is not None else None

    # ------------------------------------------------------------------ helpers
    def _page_align(self, x: int) -> int:
        """PAGE_ALIGN(): rounds up, wrapping at 2**64 like the C macro."""
        return (x + self._pmask) & ~self._pmask & U64

    def _pages(self, nbytes: int) -> int:
        return nbytes >> self.page_shift

    def _split_huge_at(self, addr: int) -> None:
        """vma_adjust_trans_huge(): a VMA boundary inside a huge PMD splits it."""
        if addr & (self.pmd_size - 1) and addr < self.task_size:
            mmcore.split_huge_pmd_address(self.engine, addr)

    def _vm_start_gap(self, vma: Vma) -> int:
        if vma.vm_flags & C.VM_GROWSDOWN:
            return max(vma.start - self.stack_guard_gap, 0)
        return vma.start

    @staticmethod
    def _anon_ok(a1: int, a2: int) -> bool:
        """is_mergeable_anon_vma(): either has none yet, or they are the same."""
        return not a1 or not a2 or a1 == a2

    @staticmethod
    def _flags_mergeable(f1: int, f2: int) -> bool:
        """is_mergeable_vma() on vm_flags: equal but for VM_SOFTDIRTY."""
        return not ((f1 ^ f2) & ~C.VM_IGNORE_MERGE)

    def _can_merge_after(self, prev: Optional[Vma], start: int, vm_flags: int, anon: int, shm,
                         pgoff: int) -> bool:
        """can_vma_merge_after(): may prev absorb a range starting at start?"""
        return (prev is not None and prev.end == start and self._flags_mergeable(prev.vm_flags, vm_flags)
                and prev.shm is shm and self._anon_ok(prev.anon, anon)
                and prev.pgoff + prev.pages(self.page_shift) == pgoff)

    def _can_merge_before(self, nxt: Optional[Vma], end: int, vm_flags: int, anon: int, shm,
                          pgoff: int, pages: int) -> bool:
        """can_vma_merge_before(): may next absorb a range ending at end?"""
        return (nxt is not None and nxt.start == end and self._flags_mergeable(nxt.vm_flags, vm_flags)
                and nxt.shm is shm and self._anon_ok(anon, nxt.anon) and pgoff + pages == nxt.pgoff)

    # ------------------------------------------------------------------ VMA surgery (mm/vma.c)
    def _split_vma(self, vma: Vma, addr: int) -> Vma:
        """__split_vma(): cut vma at addr; returns the upper part."""
        upper = Vma(addr, vma.end, vma.vm_flags, vma.pgoff + self._pages(addr - vma.start),
                    vma.anon, vma.shm, vma.name)
        self._split_huge_at(addr)
        vma.end = addr
        self._insert(upper)
        return upper

    def _vma_merge_new_range(self, start: int, end: int, vm_flags: int, anon: int, shm, pgoff: int,
                             name: str = "") -> Optional[Vma]:
        """vma_merge_new_range(): let a new range [start, end) join its
        neighbours if compatible; returns the VMA now covering it, or None."""
        prev = self._tree.prev_of_addr(start)
        prev = prev if prev is not None and prev.end == start else None
        nxt = self._tree.find_vma(end)
        nxt = nxt if nxt is not None and nxt.start == end else None
        pages = self._pages(end - start)
        left = self._can_merge_after(prev, start, vm_flags, anon, shm, pgoff) and prev.name == name
        right = self._can_merge_before(nxt, end, vm_flags, anon, shm, pgoff, pages) and nxt.name == name
        if left and right and not self._anon_ok(prev.anon, nxt.anon):
            right = False
        if left and right:
            prev.end = nxt.end
            self._set_anon(prev, prev.anon or nxt.anon or anon)  # take the reference first
            self._remove(nxt)
            return prev
        if left:
            prev.end = end
            self._set_anon(prev, prev.anon or anon)
            return prev
        if right:
            self._tree.set_start(nxt, start)
            nxt.pgoff = pgoff
            self._set_anon(nxt, nxt.anon or anon)
            return nxt
        return None

    def _vma_modify(self, vma: Vma, start: int, end: int, vm_flags: int) -> Vma:
        """vma_modify_flags() -> vma_merge_existing_range() or split: give
        [start, end) of vma new flags, merging with a neighbour where the
        result is compatible, splitting otherwise.  Returns the VMA holding
        [start, end)."""
        left_side, right_side = start == vma.start, end == vma.end
        pgoff = vma.pgoff + self._pages(start - vma.start)
        pages = self._pages(end - start)
        prev = self._tree.prev(vma) if left_side else None
        nxt = self._tree.next(vma) if right_side else None
        merge_left = self._can_merge_after(prev, start, vm_flags, vma.anon, vma.shm, pgoff) and \
            prev.name == vma.name
        merge_right = self._can_merge_before(nxt, end, vm_flags, vma.anon, vma.shm, pgoff, pages) and \
            nxt.name == vma.name
        if merge_left and merge_right and not self._anon_ok(prev.anon, nxt.anon):
            merge_right = False
        if merge_left and merge_right:                  # prev + vma + next
            self._set_anon(prev, prev.anon or vma.anon or nxt.anon)
            prev.end = nxt.end
            self._remove(vma)
            self._remove(nxt)
            return prev
        if merge_left:
            self._set_anon(prev, prev.anon or vma.anon)
            if right_side:                               # prev absorbs all of vma
                prev.end = vma.end
                self._remove(vma)
            else:                                        # prev takes [start, end)
                self._split_huge_at(end)
                prev.end = end
                vma.pgoff += self._pages(end - vma.start)
                self._tree.set_start(vma, end)
            return prev
        if merge_right:
            self._set_anon(nxt, nxt.anon or vma.anon)
            if left_side:                                # next absorbs all of vma
                start_, pgoff_ = vma.start, vma.pgoff
                self._remove(vma)                        # first: starts stay unique
                self._tree.set_start(nxt, start_)
                nxt.pgoff = pgoff_
            else:                                        # next takes [start, end)
                self._split_huge_at(start)
                vma.end = start
                self._tree.set_start(nxt, start)
                nxt.pgoff = pgoff
            return nxt
        if start > vma.start:
            vma = self._split_vma_checked(vma, start)
        if end < vma.end:
            self._split_vma_checked(vma, end)
        vma.vm_flags = vm_flags
        return vma

    def _split_vma_checked(self, vma: Vma, addr: int) -> Vma:
        """split_vma(): refuses at max_map_count.  A failure after an
        earlier split leaves that split in place, as in the kernel."""
        if self.map_count >= self.max_map_count:
            raise _Errno(ENOMEM)
        self._partial_ok = True
        return self._split_vma(vma, addr)

    # ------------------------------------------------------------------ anon_vma
    def _anon_vma_prepare(self, vma: Vma) -> None:
        """anon_vma_prepare(): the first anonymous page needs an anon_vma;
        reuse a neighbour's when it could merge later (find_mergeable_anon_vma)."""
        if vma.anon or vma.shm is not None:
            return
        anon = 0
        nxt = self._tree.next(vma)
        if nxt is not None and self._anon_vma_compatible(vma, nxt) and nxt.anon:
            anon = nxt.anon
        else:
            prev = self._tree.prev(vma)
            if prev is not None and self._anon_vma_compatible(prev, vma) and prev.anon:
                anon = prev.anon
        if not anon:
            anon = self.engine.owner_new("anon")
        self._set_anon(vma, anon)

    def _anon_vma_compatible(self, a: Vma, b: Vma) -> bool:
        """anon_vma_compatible(): adjacent, same file, flags equal but for
        access bits, contiguous vm_pgoff."""
        return (a.end == b.start and a.shm is b.shm
                and not ((a.vm_flags ^ b.vm_flags) & ~(C.VM_ACCESS_FLAGS | C.VM_SOFTDIRTY))
                and b.pgoff == a.pgoff + self._pages(b.start - a.start))

    # ------------------------------------------------------------------ get_unmapped_area
    def _gaps_topdown(self, low: int, high: int, length: int) -> Optional[int]:
        """unmapped_area_topdown(): the end of the highest free gap in
        [low, high) at least ``length`` long (the gap below a VM_GROWSDOWN
        VMA stops stack_guard_gap short of it)."""
        vmas = self._tree._vmas
        nxt = self._tree.find_vma(high)
        i = len(vmas) if nxt is None else self._tree.index(nxt)
        gap_end = high
        while True:
            if i < len(vmas):
                gap_end = min(gap_end, self._vm_start_gap(vmas[i]), high)
            prev_end = vmas[i - 1].end if i > 0 else 0
            gap_start = max(prev_end, low)
            if gap_end >= gap_start and gap_end - gap_start >= length:
                return gap_end
            if i == 0 or prev_end <= low:
                return None
            i -= 1
            gap_end = high

    def _gaps_bottomup(self, low: int, high: int, length: int) -> Optional[int]:
        """unmapped_area(): the start of the lowest free gap in [low, high)."""
        v = self._tree.find_vma(low)
        i = len(self._tree) if v is None else self._tree.index(v)
        vmas = self._tree._vmas
        start = max(low, vmas[i - 1].end if i > 0 else 0)
        while start + length <= high:
            end = min(high, self._vm_start_gap(vmas[i])) if i < len(vmas) else high
            if end >= start and end - start >= length:
                return start
            if i >= len(vmas):
                return None
            start = max(start, vmas[i].end)
            i += 1
        return None

    def _hint_fits(self, addr: int, length: int) -> bool:
        """mmap_address_hint_valid() and the hole check for a hint."""
        if self.task_size - length < addr:
            return False
        if (addr > self.map_window) != (addr + length > self.map_window):
            return False
        if self.window and not (self.window[0] <= addr and addr + length <= self.window[1]):
            return False
        vma = self._tree.find_vma(addr)
        return vma is None or addr + length <= self._vm_start_gap(vma)

    def _arch_get_unmapped_area_topdown(self, addr: int, length: int, flags: int) -> int:
        """arch/x86/kernel/sys_x86_64.c arch_get_unmapped_area_topdown()."""
        if length > self.task_size:
            raise _Errno(ENOMEM)
        if flags & C.MAP_FIXED:
            return addr
        if addr:
            addr &= ~(self.page_size - 1) & U64
            if self._hint_fits(addr, length):
                return addr
        if flags & C.MAP_32BIT:
            return self._arch_get_unmapped_area_bottomup(addr, length, flags)
        low = max(self.page_size, self.mmap_min_addr)
        high = self.mmap_base
        if flags & C.MAP_ABOVE4G:
            low = max(low, 1 << 32)
        if addr > self.map_window:
            high += self.task_size - self.map_window
        if self.window:
            low, high = max(low, self.window[0]), min(high, self.window[1])
        end = self._gaps_topdown(low, high, length)
        if end is not None:
            return end - length
        return self._arch_get_unmapped_area_bottomup(addr, length, flags)

    def _arch_get_unmapped_area_bottomup(self, addr: int, length: int, flags: int) -> int:
        """arch_get_unmapped_area(): the legacy bottom-up search, the
        top-down one's fallback."""
        if flags & C.MAP_32BIT:
            low, high = 0x40000000, 0x80000000
        else:
            low = self.mmap_legacy_base
            high = self.task_size if addr > self.map_window else self.map_window
        if self.window:
            low, high = max(low, self.window[0]), min(high, self.window[1])
        start = self._gaps_bottomup(low, high, length)
        if start is None:
            raise _Errno(ENOMEM)
        return start

    def _thp_get_unmapped_area(self, length: int, flags: int) -> int:
        """thp_get_unmapped_area_vmflags() for anonymous memory: pad the
        request by a PMD, then align inside the padding."""
        size = self.pmd_size
        try:
            ret = self._arch_get_unmapped_area_topdown(0, length + size, flags)
        except _Errno:
            return self._arch_get_unmapped_area_topdown(0, length, flags)
        off_sub = (0 - ret) & (size - 1)
        if not off_sub:
            return ret + size  # MMF_TOPDOWN: keep to the top of the padded area
        return ret + off_sub

    def _get_unmapped_area(self, addr: int, length: int, flags: int, shared_file: bool) -> int:
        """__get_unmapped_area(): pick (or check) where a mapping goes."""
        if length > self.task_size:
            raise _Errno(ENOMEM)
        if not shared_file and not addr and not (flags & C.MAP_FIXED) \
                and length % self.pmd_size == 0:
            addr = self._thp_get_unmapped_area(length, flags)
        else:
            addr = self._arch_get_unmapped_area_topdown(addr, length, flags)
        if addr > self.task_size - length:
            raise _Errno(ENOMEM)
        if (self._pmask & addr):
            raise _Errno(EINVAL)
        if addr < self.mmap_min_addr and not self.privileged:
            raise _Errno(EPERM)  # security_mmap_addr()
        return addr

    # ------------------------------------------------------------------ munmap (mm/vma.c)
    def _free_pgtables(self, vmas: List[Vma], floor: int, ceiling: int) -> None:
        """free_pgtables(): free the page tables under the removed VMAs,
        gathering neighbours closer than a PMD into one free_pgd_range()."""
        i, n = 0, len(vmas)
        while i < n:
            addr, j = vmas[i].start, i
            while j + 1 < n and vmas[j + 1].start <= vmas[j].end + self.pmd_size:
                j += 1
            nxt_start = vmas[j + 1].start if j + 1 < n else ceiling
            mmcore.free_pgd_range(self.engine, addr, vmas[j].end, floor, nxt_start)
            i = j + 1

    def _do_munmap(self, start: int, length: int) -> None:
        """do_vmi_munmap() -> do_vmi_align_munmap(): split at the edges, zap,
        free page tables between the neighbours, drop the VMAs."""
        if (self._pmask & start) or start > self.task_size or length > self.task_size - start:
            raise _Errno(EINVAL)
        end = start + self._page_align(length)
        if end == start:
            raise _Errno(EINVAL)
        tree = self._tree
        i, j = tree.span(start, end)                     # the VMAs overlapping [start, end)
        if i == j:
            return
        first = tree[i]
        if first.start < start and end < first.end and len(tree) >= self.max_map_count:
            raise _Errno(ENOMEM)
        if first.start < start:
            self._split_vma(first, start)
            i, j = i + 1, j + 1
        if tree[j - 1].end > end:
            self._split_vma(tree[j - 1], end)
        vmas = tree[i:j]
        floor = tree[i - 1].end if i > 0 else 0
        ceiling = tree[j].start if j < len(tree) else 0
        for v in vmas:                                   # unmap_vmas()
            mmcore.zap_page_range(self.engine, v.start, v.end)
        self._free_pgtables(vmas, floor, ceiling)
        tree.remove_span(i, j)
        for v in vmas:
            self._detach(v)

    @_syscall
    def munmap(self, addr, length) -> None:
        """munmap(2).  Unmapping nothing is not an error.

        Example::

            >>> mm.munmap(a, 4096)
        """
        addr, length = _u64(addr, "addr"), _u64(length, "length")
        self._do_munmap(addr, length)

    # ------------------------------------------------------------------ mmap (mm/mmap.c)
    @_syscall
    def mmap(self, addr, length, prot, flags, fd=-1, offset=0) -> int:
        """mmap(2) of anonymous memory, private or shared.

        Returns the address.  File mappings fail with EBADF: the simulated
        process has no open files.

        Example::

            >>> a = mm.mmap(0, 8192, pymm.PROT_READ | pymm.PROT_WRITE,
            ...             pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
        """
        addr, length = _u64(addr, "addr"), _u64(length, "length")
        prot, flags = _u64(prot, "prot") & 0xFFFFFFFF, _u64(flags, "flags") & 0xFFFFFFFF
        fd, offset = _u64(fd, "fd"), _u64(offset, "offset")
        if (self._pmask & offset):                 # sys_mmap() on x86-64
            raise _Errno(EINVAL)
        if not flags & C.MAP_ANONYMOUS:
            raise _Errno(EBADF)                          # fget(fd) finds no file
        if flags & C.MAP_HUGETLB:
            raise NotImplementedError("MAP_HUGETLB (hugetlbfs) is not modelled by pymm")
        return self._do_mmap(addr, length, prot, flags)

    def _do_mmap(self, addr: int, length: int, prot: int, flags: int) -> int:
        """do_mmap() for anonymous memory."""
        if not length:
            raise _Errno(EINVAL)
        if flags & C.MAP_FIXED_NOREPLACE:
            flags |= C.MAP_FIXED
        if not flags & C.MAP_FIXED and addr and addr < self.mmap_min_addr:
            addr = self._page_align(self.mmap_min_addr)  # round_hint_to_min()
        length = self._page_align(length)
        if not length:
            raise _Errno(ENOMEM)
        if self.map_count > self.max_map_count:
            raise _Errno(ENOMEM)
        map_type = flags & C.MAP_TYPE
        if map_type not in (C.MAP_SHARED, C.MAP_PRIVATE):
            raise _Errno(EINVAL)
        shared = map_type == C.MAP_SHARED
        vm_flags = self._calc_vm_prot_bits(prot) | self._calc_vm_flag_bits(flags) \
            | C.VM_MAYREAD | C.VM_MAYWRITE | C.VM_MAYEXEC
        addr = self._get_unmapped_area(addr, length, flags, shared_file=shared)
        if flags & C.MAP_FIXED_NOREPLACE and self._tree.first_intersecting(addr, addr + length):
            raise _Errno(EEXIST)
        if shared:
            if vm_flags & C.VM_GROWSDOWN:
                raise _Errno(EINVAL)
            pgoff = 0
            vm_flags |= C.VM_SHARED | C.VM_MAYSHARE
        else:
            pgoff = addr >> self.page_shift
        if flags & C.MAP_NORESERVE:
            vm_flags |= C.VM_NORESERVE
        self._mmap_region(addr, length, vm_flags, pgoff, shared)
        if vm_flags & C.VM_LOCKED or flags & (C.MAP_POPULATE | C.MAP_NONBLOCK) == C.MAP_POPULATE:
            self._mm_populate(addr, length)
        return addr

    @staticmethod
    def _calc_vm_prot_bits(prot: int) -> int:
        return ((C.VM_READ if prot & C.PROT_READ else 0) | (C.VM_WRITE if prot & C.PROT_WRITE else 0)
                | (C.VM_EXEC if prot & C.PROT_EXEC else 0))

    @staticmethod
    def _calc_vm_flag_bits(flags: int) -> int:
        return ((C.VM_GROWSDOWN if flags & C.MAP_GROWSDOWN else 0)
                | (C.VM_LOCKED if flags & C.MAP_LOCKED else 0)
                | (C.VM_NOHUGEPAGE if flags & C.MAP_STACK else 0))

    def _accountable(self, vm_flags: int) -> bool:
        """accountable_mapping(): private writable memory is charged."""
        return vm_flags & (C.VM_NORESERVE | C.VM_SHARED | C.VM_WRITE) == C.VM_WRITE

    def _mmap_region(self, addr: int, length: int, vm_flags: int, pgoff: int, shared: bool) -> Vma:
        """__mmap_region(): unmap what MAP_FIXED covers, charge, merge or insert."""
        end = addr + length
        if self._accountable(vm_flags):
            if self.commit_limit is not None and length > self.commit_limit:
                raise _Errno(ENOMEM)
            vm_flags |= C.VM_ACCOUNT
        if self._tree.first_intersecting(addr, end) is not None:
            self._do_munmap(addr, length)
        vm_flags |= C.VM_SOFTDIRTY
        if shared:
            shm = ShmemObject(self.engine.owner_new("shmem", npages=self._pages(length)),
                              self._pages(length), self._next_inode())
            return self._insert(Vma(addr, end, vm_flags, pgoff, 0, shm))
        merged = self._vma_merge_new_range(addr, end, vm_flags, 0, None, pgoff)
        if merged is not None:
            return merged
        return self._insert(Vma(addr, end, vm_flags, pgoff))

    def _next_inode(self) -> int:
        self._shm_inode += 1
        return self._shm_inode

    # ------------------------------------------------------------------ mprotect (mm/mprotect.c)
    @_syscall
    def mprotect(self, addr, length, prot) -> None:
        """mprotect(2): new protection for [addr, addr+length).

        As in Linux, VMAs before a hole keep their new protection when the
        call then fails with ENOMEM.

        Example::

            >>> mm.mprotect(a, 4096, pymm.PROT_READ)
        """
        start, length = _u64(addr, "addr"), _u64(length, "length")
        prot = _u64(prot, "prot") & 0xFFFFFFFF
        grows = prot & (C.PROT_GROWSDOWN | C.PROT_GROWSUP)
        prot &= ~(C.PROT_GROWSDOWN | C.PROT_GROWSUP)
        if grows == C.PROT_GROWSDOWN | C.PROT_GROWSUP:
            raise _Errno(EINVAL)
        if (self._pmask & start):
            raise _Errno(EINVAL)
        if not length:
            return
        length = self._page_align(length)
        end = start + length
        if end <= start or end > U64:
            raise _Errno(ENOMEM)
        if prot & ~(C.PROT_READ | C.PROT_WRITE | C.PROT_EXEC | C.PROT_SEM):
            raise _Errno(EINVAL)                             # arch_validate_prot()
        vma = self._tree.find_vma(start)
        if vma is None or vma.start >= end:
            raise _Errno(ENOMEM)
        if grows & C.PROT_GROWSDOWN:
            start = vma.start
            if not vma.vm_flags & C.VM_GROWSDOWN:
                raise _Errno(EINVAL)
        elif vma.start > start:
            raise _Errno(ENOMEM)
        elif grows & C.PROT_GROWSUP:
            raise _Errno(EINVAL)                             # no VM_GROWSUP on x86
        nstart, tmp = start, vma.start
        while vma is not None and vma.start < end:           # for_each_vma_range()
            if vma.start != tmp:
                raise _Errno(ENOMEM)                         # a hole
            newflags = self._calc_vm_prot_bits(prot) | (vma.vm_flags & ~C.VM_ACCESS_FLAGS)
            if (newflags & ~(newflags >> 4)) & C.VM_ACCESS_FLAGS:
                raise _Errno(EACCES)                         # beyond VM_MAY*
            tmp = min(vma.end, end)
            vma = self._mprotect_fixup(vma, nstart, tmp, newflags)
            self._partial_ok = True                          # later errors keep this
            # the iterator sits on the (maybe merged) VMA: go on from its end
            tmp = nstart = vma.end
            vma = self._tree.find_vma(tmp)
        if tmp < end:
            raise _Errno(ENOMEM)

    def _mprotect_fixup(self, vma: Vma, start: int, end: int, newflags: int) -> Vma:
        """mprotect_fixup(): VM_ACCOUNT bookkeeping, merge/split, then
        change_protection() on the page tables."""
        oldflags = vma.vm_flags
        if newflags == oldflags:
            return vma
        if newflags & C.VM_WRITE:
            if not oldflags & (C.VM_ACCOUNT | C.VM_WRITE | C.VM_SHARED | C.VM_NORESERVE):
                newflags |= C.VM_ACCOUNT
        elif oldflags & C.VM_ACCOUNT and vma.shm is None and not vma.anon:
            newflags &= ~C.VM_ACCOUNT  # no anon_vma yet: the charge can go
        vma = self._vma_modify(vma, start, end, newflags)
        vma.vm_flags = newflags if vma.start == start and vma.end == end else vma.vm_flags
        mmcore.change_protection(self.engine, start, end, read=bool(newflags & C.VM_ACCESS_FLAGS),
                                 write=bool(newflags & C.VM_WRITE),
                                 exec_=bool(newflags & C.VM_EXEC))
        return vma

    # ------------------------------------------------------------------ madvise (mm/madvise.c)
    @_syscall
    def madvise(self, addr, length, advice) -> None:
        """madvise(2).  Modelled: MADV_DONTNEED (zap), MADV_HUGEPAGE /
        MADV_NOHUGEPAGE (VMA flags), MADV_NORMAL/RANDOM/SEQUENTIAL,
        MADV_DONTDUMP/DODUMP, MADV_WILLNEED/COLD/PAGEOUT/FREE (no page-table
        effect here: no swap, no memory pressure), MADV_POPULATE_READ/WRITE.

        Example::

            >>> mm.madvise(a, 2 << 20, pymm.MADV_HUGEPAGE)
        """
        start, len_in = _u64(addr, "addr"), _u64(length, "length")
        advice = _u64(advice, "advice") & 0xFFFFFFFF
        if advice >= 1 << 31:
            advice -= 1 << 32
        if advice not in C.MADV_VALID:
            raise _Errno(EINVAL)
        if (self._pmask & start):
            raise _Errno(EINVAL)
        length = self._page_align(len_in)
        if len_in and not length:
            raise _Errno(EINVAL)
        end = start + length
        if end > U64:
            raise _Errno(EINVAL)
        if end == start:
            return
        if advice in (C.MADV_POPULATE_READ, C.MADV_POPULATE_WRITE):
            self._madvise_populate(start, end, advice == C.MADV_POPULATE_WRITE)
            return
        handler = self._madvise_handler(advice)
        # madvise_walk_vmas(): apply to each mapped part; a hole is ENOMEM at the end
        unmapped = False
        vma = self._tree.find_vma(start)
        while True:
            if vma is None:
                raise _Errno(ENOMEM)
            if start < vma.start:
                unmapped = True
                start = vma.start
                if start >= end:
                    break
            tmp = min(vma.end, end)
            vma = handler(vma, start, tmp)                 # becomes "prev"
            self._partial_ok = True
            start = max(tmp, vma.end) if vma.start < tmp else tmp
            if start >= end:
                break
            vma = self._tree.find_vma(vma.end if vma.end > start else start)
        if unmapped:
            raise _Errno(ENOMEM)

    def _madvise_handler(self, advice: int):
        flag_changes = {
            C.MADV_NORMAL: (C.VM_SEQ_READ | C.VM_RAND_READ, 0),
            C.MADV_RANDOM: (C.VM_SEQ_READ, C.VM_RAND_READ),
            C.MADV_SEQUENTIAL: (C.VM_RAND_READ, C.VM_SEQ_READ),
            C.MADV_HUGEPAGE: (C.VM_NOHUGEPAGE, C.VM_HUGEPAGE),
            C.MADV_NOHUGEPAGE: (C.VM_HUGEPAGE, C.VM_NOHUGEPAGE),
            C.MADV_DONTDUMP: (0, C.VM_DONTDUMP),
            C.MADV_DODUMP: (C.VM_DONTDUMP, 0),
        }
        if advice in flag_changes:
            clear, set_ = flag_changes[advice]

            def update(vma, start, end):
                newflags = (vma.vm_flags & ~clear) | set_
                if newflags == vma.vm_flags:
                    return vma
                return self._vma_modify(vma, start, end, newflags)  # madvise_update_vma()
            return update
        if advice in (C.MADV_DONTNEED, C.MADV_DONTNEED_LOCKED):
            def dontneed(vma, start, end):
                if vma.vm_flags & C.VM_LOCKED and advice == C.MADV_DONTNEED:
                    raise _Errno(EINVAL)
                mmcore.zap_page_range(self.engine, start, end)   # zap_page_range_single()
                return vma
            return dontneed
        if advice in (C.MADV_WILLNEED, C.MADV_COLD, C.MADV_PAGEOUT, C.MADV_FREE):
            return lambda vma, start, end: vma
        raise NotImplementedError(f"madvise advice {advice} is valid on Linux but not modelled by pymm")

    def _madvise_populate(self, start: int, end: int, write: bool) -> None:
        """madvise_populate(): fault in from start as GUP does; a hole is
        ENOMEM, a VMA GUP refuses (check_vma_flags()) is EINVAL, a page
        beyond a shmem object is EFAULT.  What came before stays populated."""
        pos = start
        while pos < end:
            vma = self._tree.lookup(pos)
            if vma is None:
                raise _Errno(ENOMEM)
            if write and not vma.vm_flags & C.VM_WRITE or not write and not vma.vm_flags & C.VM_READ:
                raise _Errno(EINVAL)
            stop = min(end, vma.end)
            clipped = self._shmem_clip(vma, pos, stop)
            self._fault_range(vma, pos, clipped, write)
            self._partial_ok = True
            if clipped < stop:
                raise _Errno(EFAULT)                     # VM_FAULT_SIGBUS
            pos = stop

    # ------------------------------------------------------------------ faults and populate
    def _thp_allowed(self, vma: Vma) -> bool:
        """thp_vma_allowable_order(PMD_ORDER) for a fault."""
        if vma.shm is not None or self.thp == "never" or vma.vm_flags & C.VM_NOHUGEPAGE:
            return False
        return self.thp == "always" or bool(vma.vm_flags & C.VM_HUGEPAGE)

    def _shmem_clip(self, vma: Vma, start: int, end: int) -> int:
        """The end of [start, end) that lies inside the shmem object."""
        if vma.shm is None:
            return end
        obj_end = vma.start + ((vma.shm.npages - vma.pgoff) << self.page_shift)
        return max(start, min(end, obj_end))

    def _fault_range(self, vma: Vma, start: int, end: int, write: bool, fill: int = -1) -> None:
        """handle_mm_fault() for each page of [start, end) inside vma (and,
        with ``fill``, the memset of each page in the same pass)."""
        if end <= start:
            return
        thp = self._thp_allowed(vma)
        if vma.shm is None and (write or thp):
            self._anon_vma_prepare(vma)
        owner = vma.owner
        if not owner:
            # read faults without an anon_vma map the zero page only
            owner = self._read_only_owner()
        mmcore.handle_mm_fault(self.engine, start, end, vma_start=vma.start, vma_end=vma.end,
                               owner=owner, pgoff=vma.pgoff, write=write,
                               writable=bool(vma.vm_flags & C.VM_WRITE),
                               shared=vma.shm is not None, thp=thp,
                               exec_=bool(vma.vm_flags & C.VM_EXEC), fill=fill,
                               fault_around=self._fault_around_pages)

    def _read_only_owner(self) -> int:
        # The engine wants an owner id even for zero-page mappings; one
        # shared placeholder anon owner serves every VMA without an anon_vma.
        if not hasattr(self, "_zero_owner"):
            self._zero_owner = self.engine.owner_new("anon")
        return self._zero_owner

    def _mm_populate(self, start: int, length: int) -> None:
        """__mm_populate() for MAP_POPULATE/VM_LOCKED: fault in what may be,
        ignoring errors (PROT_NONE, beyond a shmem object)."""
        end = start + length
        for vma in self._tree.intersecting(start, end):
            if not vma.vm_flags & C.VM_ACCESS_FLAGS:
                continue
            s, e = max(start, vma.start), min(end, vma.end)
            write = vma.vm_flags & (C.VM_WRITE | C.VM_SHARED) == C.VM_WRITE
            self._fault_range(vma, s, self._shmem_clip(vma, s, e), write)

    def _handle_fault(self, addr: int, write: bool, end: int, fill: int = -1) -> int:
        """do_user_addr_fault(): find the VMA (growing a stack down if need
        be), check the access, then fault [addr, end) within it in one go."""
        vma = self._tree.find_vma(addr)
        if vma is None:
            raise SegmentationFault(addr, "SEGV_MAPERR", "no VMA")
        if vma.start > addr:
            if not vma.vm_flags & C.VM_GROWSDOWN or not self._expand_stack(vma, addr):
                raise SegmentationFault(addr, "SEGV_MAPERR", "no VMA")
        if write and not vma.vm_flags & C.VM_WRITE:
            raise SegmentationFault(addr, "SEGV_ACCERR", f"write to {perms(vma.vm_flags)} VMA")
        if not vma.vm_flags & C.VM_ACCESS_FLAGS:
            raise SegmentationFault(addr, "SEGV_ACCERR", "PROT_NONE VMA")
        page = addr & ~(self.page_size - 1)
        stop = self._page_align(min(end, vma.end))
        clipped = self._shmem_clip(vma, page, stop)
        if clipped <= page:
            if not write and self._fault_around_pages > 1:
                # do_read_fault() maps the cached neighbours before shmem_fault() fails
                mmcore.do_fault_around(self.engine, page, vma_start=vma.start, vma_end=vma.end,
                                       owner=vma.owner, pgoff=vma.pgoff,
                                       writable=bool(vma.vm_flags & C.VM_WRITE),
                                       exec_=bool(vma.vm_flags & C.VM_EXEC),
                                       fault_around=self._fault_around_pages)
            raise BusError(addr, "BUS_ADRERR", "beyond the end of the shared memory object")
        self._fault_range(vma, page, clipped, write, fill)
        return clipped

    def _expand_stack(self, vma: Vma, addr: int) -> bool:
        """expand_downwards(): grow a VM_GROWSDOWN VMA to cover addr."""
        addr &= ~(self.page_size - 1)
        if addr < self.mmap_min_addr:
            return False
        prev = self._tree.prev(vma)
        if prev is not None and not prev.vm_flags & C.VM_GROWSDOWN and \
                prev.vm_flags & C.VM_ACCESS_FLAGS and addr - prev.end < self.stack_guard_gap:
            return False
        if prev is not None and prev.end > addr:
            return False
        grow = self._pages(vma.start - addr)
        if grow > vma.pgoff or vma.end - addr > self.rlimit_stack:
            return False
        self._anon_vma_prepare(vma)
        self._tree.set_start(vma, addr)
        vma.pgoff -= grow
        return True

    # ------------------------------------------------------------------ memory access (the CPU)
    def _access_args(self, addr, length):
        addr, length = _u64(addr, "addr"), _u64(length, "length")
        if addr + length > 1 << 64:
            raise ValueError("access wraps around the address space")
        return addr, length

    def read(self, addr, length) -> bytes:
        """Read as the CPU would: through the page tables first (a present
        entry is used even outside every VMA), the fault handler on a miss.

        Example::

            >>> mm.read(a, 4)
            b'\\x00\\x00\\x00\\x00'
        """
        addr, length = self._access_args(addr, length)
        if length > MAX_READ:
            raise ValueError(f"read of {length:#x} bytes: at most {MAX_READ:#x} at a time")
        if addr + length > self.geometry.task_size + self.page_size:
            raise SegmentationFault(max(addr, self.task_size), "SEGV_MAPERR", "beyond task_size")
        out = []
        pos, end = addr, addr + length
        while pos < end:
            # in chunks: a read that faults early never allocates the whole buffer
            chunk = min(end - pos, READ_CHUNK)
            data, done = mmcore.read_bytes(self.engine, pos, chunk)
            out.append(data[:done])
            pos += done
            if done < chunk:
                self._handle_fault(pos, False, end)
        result = b"".join(out)
        if self.check_enabled:
            self._check_now("read")
        return result

    def write(self, addr, data) -> None:
        """Write bytes as the CPU would (copy-on-write, faults, segfaults).

        Example::

            >>> mm.write(a + 4090, b"hello, world")
        """
        addr = _u64(addr, "addr")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data must be bytes-like")
        data = bytes(data)
        end = addr + len(data)
        if end > self.task_size + self.page_size:
            raise SegmentationFault(max(addr, self.task_size), "SEGV_MAPERR", "beyond task_size")
        pos = addr
        view = memoryview(data)
        while pos < end:
            done = mmcore.write_bytes(self.engine, pos, view[pos - addr:])
            pos += done
            if pos < end:
                self._handle_fault(pos, True, end)
        if self.check_enabled:
            self._check_now("write")

    def memset(self, addr, value, length) -> None:
        """memset(): whole pages take the bulk path (one tag per page), so
        1 GiB costs milliseconds.

        Example::

            >>> mm.memset(a, 0x33, 2 << 20)
        """
        addr, length = self._access_args(addr, length)
        value = _u64(value, "value") & 0xFF
        end = addr + length
        if end > self.task_size + self.page_size:
            raise SegmentationFault(max(addr, self.task_size), "SEGV_MAPERR", "beyond task_size")
        ps = self.page_size
        head_end = min(end, self._page_align(addr))
        tail_start = max(head_end, end & ~(ps - 1))
        check, self.check_enabled = self.check_enabled, False
        try:
            if head_end > addr:
                self.write(addr, bytes([value]) * (head_end - addr))
            pos = head_end
            while pos < tail_start:
                pos = mmcore.memset_pages(self.engine, pos, tail_start, value)
                if pos < tail_start:
                    # fault in the rest of this VMA's part and fill it in one pass
                    pos = self._handle_fault(pos, True, tail_start, fill=value)
            if end > tail_start:
                self.write(tail_start, bytes([value]) * (end - tail_start))
        finally:
            self.check_enabled = check
        if check:
            self._check_now("memset")

    def stamp(self, addr, length) -> None:
        """Write into each whole page of the range its own page number
        (addr >> PAGE_SHIFT) as a repeated 8-byte word: distinct contents at
        O(1) per page, to check after a move that every page landed right."""
        addr, length = self._access_args(addr, length)
        if (addr | length) & self._pmask:
            raise ValueError("stamp needs a page-aligned range")
        pos, end = addr, addr + length
        while pos < end:
            pos = mmcore.stamp_pages(self.engine, pos, end)
            if pos < end:
                self._handle_fault(pos, True, end)

    # ------------------------------------------------------------------ mremap (mm/mremap.c)
    @_syscall
    def mremap(self, old_address, old_size, new_size, flags=0, new_address=0) -> int:
        """mremap(2) with Linux 6.18 semantics (do_mremap()).

        Shrink (across several VMAs), same-size no-op, expand in place,
        move with MREMAP_MAYMOVE, MREMAP_FIXED (6.17+: several VMAs, gaps
        kept) and MREMAP_DONTUNMAP.  The page tables move with the kernel's
        move_page_tables() (see ``mm.kernel``).

        Example::

            >>> new = mm.mremap(a, 4096, 8192, pymm.MREMAP_MAYMOVE)
        """
        addr = _u64(old_address, "old_address")
        old_len, new_len = _u64(old_size, "old_size"), _u64(new_size, "new_size")
        flags, new_addr = _u64(flags, "flags"), _u64(new_address, "new_address")
        pm = self._pmask
        old_len, new_len = (old_len + pm) & ~pm & U64, (new_len + pm) & ~pm & U64  # PAGE_ALIGN()
        self._check_mremap_params(addr, old_len, new_len, flags, new_addr)
        if self._kernel.multi_vma_move and flags & C.MREMAP_FIXED and old_len == new_len:
            return self._remap_move(addr, old_len, flags, new_addr)
        vma = self._tree.lookup(addr)
        self._check_prep_vma(vma, addr, old_len, new_len, flags)
        if flags & (C.MREMAP_FIXED | C.MREMAP_DONTUNMAP):
            return self._mremap_to(addr, old_len, new_len, flags, new_addr)
        return self._mremap_at(vma, addr, old_len, new_len, flags)

    def _check_mremap_params(self, addr, old_len, new_len, flags, new_addr) -> None:
        """check_mremap_params()."""
        if flags & ~(C.MREMAP_FIXED | C.MREMAP_MAYMOVE | C.MREMAP_DONTUNMAP):
            raise _Errno(EINVAL)
        if (self._pmask & addr):
            raise _Errno(EINVAL)
        if not new_len:
            raise _Errno(EINVAL)
        if new_len > self.task_size:
            raise _Errno(EINVAL)
        if not flags & (C.MREMAP_FIXED | C.MREMAP_DONTUNMAP):
            return
        if new_addr > self.task_size - new_len:
            raise _Errno(EINVAL)
        if (self._pmask & new_addr):
            raise _Errno(EINVAL)
        if not flags & C.MREMAP_MAYMOVE:
            raise _Errno(EINVAL)
        if flags & C.MREMAP_DONTUNMAP and old_len != new_len:
            raise _Errno(EINVAL)
        if addr + old_len > new_addr and new_addr + new_len > addr:   # vrm_overlaps()
            raise _Errno(EINVAL)
        if len(self._tree) + 2 >= self.max_map_count - 3:
            raise _Errno(ENOMEM)

    def _check_prep_vma(self, vma, addr, old_len, new_len, flags) -> None:
        """check_prep_vma(): the VMA-dependent checks, only where a new
        mapping will appear (expand or move)."""
        if vma is None:
            raise _Errno(EFAULT)
        will_map_new = new_len > old_len or flags & (C.MREMAP_FIXED | C.MREMAP_DONTUNMAP)
        if not will_map_new:
            return
        if not old_len and vma.shm is None:
            raise _Errno(EINVAL)   # "attempted to duplicate a private mapping with mremap"
        check_len = new_len if old_len > new_len else old_len
        if check_len > vma.end - addr:
            raise _Errno(EFAULT)
        if new_len == check_len:
            return
        pgoff = vma.pgoff + self._pages(addr - vma.start)
        if pgoff + self._pages(new_len) > U64:
            raise _Errno(EINVAL)

    def _remap_move(self, addr, length, flags, new_addr) -> int:
        """remap_move() (6.17): move every VMA in [addr, addr+length) to
        new_addr, keeping the gaps between them."""
        start, end = addr, addr + length
        vma = self._tree.lookup(start)
        if vma is not None and vma.end >= end:             # one VMA: the common case
            self._check_prep_vma(vma, start, length, length, flags)
            return self._mremap_to(start, length, length, flags, new_addr)
        target = new_addr
        res = None
        last_end = 0
        vmas = self._tree.intersecting(start, end)
        if not vmas or vmas[0].start > start:
            raise _Errno(EFAULT)                           # no gap at the start
        # Move in order; each move may reshape the tree, so re-find by address.
        pieces = [(max(v.start, start), min(end, v.end), v.start, v.end) for v in vmas]
        for i, (s, e, vstart, vend) in enumerate(pieces):
            offset = vstart - last_end if i else 0
            last_end = vend
            vma = self._tree.lookup(s)
            if vma is None:
                raise _Errno(EFAULT)
            if i == 0 and len(pieces) > 1 and not self._multi_allowed(vma):
                raise _Errno(EFAULT)
            self._check_prep_vma(vma, s, e - s, e - s, flags)
            r = self._mremap_to(s, e - s, e - s, flags, target + offset)
            if res is None:
                res = r
            target = r + (e - s)
        return res

    @staticmethod
    def _multi_allowed(vma: Vma) -> bool:
        return True  # anonymous and shmem VMAs; no uffd in pymm

    def _mremap_to(self, addr, old_len, new_len, flags, new_addr) -> int:
        """mremap_to(): the move to a chosen (FIXED) or found (DONTUNMAP) place."""
        if flags & C.MREMAP_FIXED:
            self._do_munmap(new_addr, new_len)
            self._partial_ok = True                        # the destination is gone for good
        if old_len > new_len:                              # shrink_vma()
            self._do_munmap(addr + new_len, old_len - new_len)
            self._partial_ok = True
            old_len = new_len
        vma = self._tree.lookup(addr)
        if vma is None:
            raise _Errno(EFAULT)                           # the source went with the unmap
        new_addr = self._vrm_set_new_addr(vma, addr, new_len, flags, new_addr)
        return self._move_vma(vma, addr, old_len, new_len, flags, new_addr)

    def _vrm_set_new_addr(self, vma, addr, new_len, flags, new_addr) -> int:
        """vrm_set_new_addr(): get_unmapped_area() for the destination."""
        map_flags = (C.MAP_FIXED if flags & C.MREMAP_FIXED else 0) | \
            (C.MAP_SHARED if vma.vm_flags & C.VM_MAYSHARE else 0)
        hint = new_addr if flags & (C.MREMAP_FIXED | C.MREMAP_DONTUNMAP) else 0
        return self._get_unmapped_area(hint, new_len, map_flags, shared_file=vma.shm is not None)

    def _mremap_at(self, vma, addr, old_len, new_len, flags) -> int:
        """mremap_at(): no new address asked for: no-op, shrink or expand."""
        if new_len == old_len:
            return addr
        if new_len < old_len:
            self._do_munmap(addr + new_len, old_len - new_len)
            return addr
        delta = new_len - old_len
        if vma.end - addr == old_len and self._vma_expandable(vma, delta):
            self._vma_merge_extend(vma, delta)             # expand_vma_in_place()
            if vma.vm_flags & C.VM_LOCKED:
                self._mm_populate(addr + old_len, delta)
            return addr
        if not flags & C.MREMAP_MAYMOVE:
            raise _Errno(ENOMEM)
        new_addr = self._vrm_set_new_addr(vma, addr, new_len, flags, 0)
        return self._move_vma(vma, addr, old_len, new_len, flags, new_addr)

    def _vma_expandable(self, vma: Vma, delta: int) -> bool:
        end = vma.end + delta
        if self._tree.first_intersecting(vma.end, end) is not None:
            return False
        if end > self.task_size:
            return False
        return not (self.window and end > self.window[1])

    def _vma_merge_extend(self, vma: Vma, delta: int) -> None:
        """vma_merge_extend(): grow vma by delta, joining the next VMA if it
        then touches a compatible one."""
        end = vma.end + delta
        nxt = self._tree.find_vma(end)
        pages = self._pages(end - vma.end)
        pgoff = vma.pgoff + self._pages(vma.end - vma.start)
        if self._can_merge_before(nxt, end, vma.vm_flags, vma.anon, vma.shm, pgoff, pages) \
                and nxt.name == vma.name and self._anon_ok(vma.anon, nxt.anon):
            self._set_anon(vma, vma.anon or nxt.anon)
            vma.end = nxt.end
            self._remove(nxt)
        else:
            vma.end = end

    def _copy_vma(self, vma: Vma, addr: int, length: int, pgoff: int):
        """copy_vma(): the destination VMA, merged with a neighbour if it can
        be.  Returns (new_vma, source_vma) since the source may have merged
        into the destination (an unfaulted VMA moved next to itself)."""
        vma_start = vma.start
        if vma.shm is None and not vma.anon:
            pgoff = addr >> self.page_shift  # unfaulted: take the new place's pgoff
        new = self._vma_merge_new_range(addr, addr + length, vma.vm_flags, vma.anon, vma.shm, pgoff,
                                        vma.name)
        if new is not None:
            src = new if new.start <= vma_start < new.end else vma
            return new, src
        new = self._insert(Vma(addr, addr + length, vma.vm_flags, pgoff, vma.anon, vma.shm, vma.name))
        return new, vma

    def _move_vma(self, vma: Vma, addr, old_len, new_len, flags, new_addr) -> int:
        """move_vma(): copy the VMA, move its page tables, unmap the source
        (or, with MREMAP_DONTUNMAP, leave it empty)."""
        if len(self._tree) >= self.max_map_count - 3:    # prep_move_vma()
            raise _Errno(ENOMEM)
        new_pgoff = vma.pgoff + self._pages(addr - vma.start)
        new_vma, vma = self._copy_vma(vma, new_addr, new_len, new_pgoff)
        moved = self._move_page_tables(vma, new_vma, addr, new_addr, old_len, for_stack=False)
        err = 0
        if moved < old_len:
            err = ENOMEM
            # move entries back, then unmap the new area instead of the old
            self._move_page_tables(new_vma, vma, new_addr, addr, moved, for_stack=False)
            addr, old_len = new_addr, new_len
        if not err and flags & C.MREMAP_DONTUNMAP:
            self._dontunmap_complete(vma, new_vma, addr, old_len)
        else:
            try:                                           # unmap_source_vma()
                self._do_munmap(addr, old_len)
            except _Errno:
                pass  # "OOM: unable to split vma, just get accounts right"; old_len 0 lands here too
        if err:
            self._partial_ok = True
            raise _Errno(err)
        return new_addr

    def _dontunmap_complete(self, vma: Vma, new_vma: Vma, addr: int, length: int) -> None:
        """dontunmap_complete(): the source keeps its VMA, loses VM_LOCKED, and
        its anon_vma if all of it moved.  (It keeps VM_ACCOUNT: this
        machine's 6.18 shows "ac" in smaps afterwards and re-merges the
        source with fresh accounted mappings.)"""
        vma.vm_flags &= ~(C.VM_LOCKED | C.VM_LOCKONFAULT)
        if new_vma is not vma and vma.start == addr and vma.end == addr + length:
            self._set_anon(vma, 0)

    # ------------------------------------------------------------------ move_page_tables
    def _move_page_tables(self, old_vma: Optional[Vma], new_vma: Optional[Vma], old_addr: int,
                          new_addr: int, length: int, for_stack: bool) -> int:
        """move_page_tables() as ``self.kernel`` runs it: overlap guard,
        align hook, the mmcore loop, warnings, and the kernel's idea of how
        many bytes that moved."""
        if not length:
            return 0
        k = self._kernel
        move = PageTableMove(old_addr, new_addr, length, old_vma, new_vma,  # views made lazily
                             for_stack and k.exec_passes_for_stack, self.page_size, self.pmd_size,
                             self.pud_size, old_addr + length, length, self)
        allow_pmd = k.pmd_moves
        if k.overlap_guard is not None:
            allow, warn_up = k.overlap_guard(move)
            allow_pmd = allow_pmd and allow
            if warn_up:
                self.engine.record_warning("overlap_up", old_addr, new_addr)
        if k.align is not None:
            k.align(move)
            if (move.old_addr, move.new_addr, move.len) != (old_addr, new_addr, length):
                self._validate_move(move)
            if k.align_before_old_end:
                move.old_end = move.old_addr + move.len
        end_addr = move.old_addr
        if move.old_addr < move.old_end:
            end_addr = mmcore.move_range(self.engine, move.old_addr, move.new_addr, move.old_end,
                                         move.len_in, self._move_policy(allow_pmd, move.for_stack))
        if self.engine.pending_warnings:
            self._collect_warnings()
        return k.progress(move, end_addr)

    def _move_policy(self, allow_pmd: bool, for_stack: bool) -> MoveControl:
        """The kernel's compile-time choices, as a MoveControl template."""
        k = self._kernel
        return _policy(allow_pmd, for_stack, k.pud_moves, k.pud_step, k.pmd_warn, k.pud_warn,
                       k.huge_pmd_warn)

    def _validate_move(self, move: PageTableMove) -> None:
        """An align hook (maybe a user's) must leave a sane move behind."""
        for name in ("old_addr", "new_addr", "len"):
            v = getattr(move, name)
            if type(v) is not int or not 0 <= v <= U64:
                raise ValueError(f"align hook left move.{name}={v!r}: not an unsigned long")
        if (move.old_addr | move.new_addr) & (self.page_size - 1):
            raise ValueError("align hook left an unaligned address")
        if move.old_addr >= self.task_size + self.page_size or \
                move.new_addr + (move.old_end - move.old_addr) > self._va_limit:
            raise ValueError("align hook moved the range outside the address space")

    def _collect_warnings(self) -> None:
        for site, old, new in self.engine.take_warnings():
            name = _SITE_NAMES[site]
            s = self.kernel.site(name)
            w = KernelWarning(s.function, s.location,
                              f"{s.message}; old_addr={old:#x} new_addr={new:#x}",
                              kernel=self.kernel.name, site=name, old_addr=old, new_addr=new)
            self.warnings.append(w)
            _warnings.warn(w, stacklevel=4)

    # ------------------------------------------------------------------ exec
    def setup_exec_stack(self, arg_bytes: int = 4096, top: Optional[int] = None) -> int:
        """create_init_stack_vma() + copy_strings(): the new process's first
        stack VMA at STACK_TOP_MAX, populated with ``arg_bytes`` of
        arguments (stamped, so moves can be checked).  Returns its start.

        Example::

            >>> mm = pymm.MM(kernel="5.8")
            >>> start = mm.setup_exec_stack(arg_bytes=3 << 20)
        """
        top = self.task_size if top is None else _u64(top, "top")
        size = self._page_align(max(int(arg_bytes), self.page_size))
        if (self._pmask & top) or size >= top or top > self.task_size:
            raise ValueError("stack top must be page aligned, above the stack size, within task_size")
        start = top - size
        if self._tree.first_intersecting(start, top):
            raise ValueError("the stack would overlap an existing mapping")
        flags = C.VM_STACK_FLAGS | C.VM_STACK_INCOMPLETE_SETUP | C.VM_SOFTDIRTY
        vma = self._insert(Vma(start, top, flags, start >> self.page_shift, name="[stack]"))
        self._fault_range(vma, start, top, True)
        mmcore.stamp_pages(self.engine, start, top)
        self.start_stack = top - 8
        return start

    @_syscall
    def shift_arg_pages(self, vma_start, shift, *, partial=None) -> None:
        """relocate_vma_down() (fs/exec.c shift_arg_pages() before 6.x): move
        the VMA starting at vma_start down by shift bytes, as exec moves the
        stack.  The ranges overlap when shift is smaller than the VMA.

        1. expand the VMA down over [new_start, old_end);
        2. move_page_tables(vma, old_start, vma, new_start, len, for_stack);
        3. free_pgd_range() of the tail (floor/ceiling as exec chooses);
        4. shrink the VMA to [new_start, new_end).

        ``partial=n`` stops after step 2 with only the first n bytes moved:
        the state the kernel's loop is in after its first extent (for
        pictures; the VMA is left expanded, as it is at that moment).

        Example::

            >>> mm.shift_arg_pages(start, 2 << 20)
        """
        vma_start, shift = _u64(vma_start, "vma_start"), _u64(shift, "shift")
        vma = self._tree.lookup(vma_start)
        if vma is None or vma.start != vma_start:
            raise ValueError(f"no VMA starts at {vma_start:#x}")
        if (self._pmask & shift):
            raise ValueError("shift must be page aligned")
        old_start, old_end = vma.start, vma.end
        length = old_end - old_start
        if shift > old_start:
            raise ValueError("shift would move the VMA below address 0")
        new_start, new_end = old_start - shift, old_end - shift
        if self._tree.find_vma(new_start) is not vma:
            raise _Errno(EFAULT)                       # a VMA sits in between
        if not shift:
            return
        if partial is not None:
            partial = _u64(partial, "partial")
            if partial & self._pmask or not 0 < partial <= length:
                raise ValueError("partial must be page aligned and within the VMA")
        self._tree.set_start(vma, new_start)             # vma_expand()
        if partial is not None:
            self._move_page_tables(vma, vma, old_start, new_start, partial, for_stack=True)
            return
        moved = self._move_page_tables(vma, vma, old_start, new_start, length, for_stack=True)
        if moved != length:
            raise _Errno(ENOMEM)                         # "rely on process cleanup"
        nxt = self._tree.next(vma)
        ceiling = nxt.start if nxt is not None else 0
        if new_end > old_start:                          # overlapping: clear from new_end
            mmcore.free_pgd_range(self.engine, new_end, old_end, new_end, ceiling)
        else:
            mmcore.free_pgd_range(self.engine, old_start, old_end, new_end, ceiling)
        self._split_huge_at(new_end)
        vma.end = new_end                                # vma_shrink()
        if self.start_stack and old_start <= self.start_stack < old_end:
            self.start_stack -= shift

    def move_page_tables(self, old_addr, new_addr, length, for_stack=False) -> int:
        """The bare move_page_tables() on the current page tables, for
        experiments: no VMA changes.  Returns the bytes the kernel reports
        moved.

        Example::

            >>> mm.move_page_tables(a, a + (1 << 30), 2 << 20)
            2097152
        """
        old_addr, new_addr = _u64(old_addr, "old_addr"), _u64(new_addr, "new_addr")
        length = _u64(length, "length")
        limit = 1 << self.geometry.va_bits
        if (old_addr | new_addr | length) & (self.page_size - 1):
            raise ValueError("move_page_tables needs page-aligned arguments")
        if old_addr + length > limit or new_addr + length > limit:
            raise ValueError("range beyond the address space")
        return self._move_page_tables(self._tree.lookup(old_addr), self._tree.lookup(new_addr),
                                      old_addr, new_addr, length, bool(for_stack))

    # ------------------------------------------------------------------ introspection
    def maps(self) -> List[VMA]:
        """The VMAs, sorted by start, as snapshots (see :class:`pymm.VMA`)."""
        return [snapshot(v) for v in self._tree]

    def format_maps(self) -> str:
        """The /proc/self/maps text."""
        lines = []
        for v in self._tree:
            if v.shm is not None:
                off, dev, ino, name = v.pgoff << self.page_shift, "00:01", v.shm.inode, "/dev/zero (deleted)"
            else:
                off, dev, ino, name = 0, "00:00", 0, v.name
            line = f"{v.start:08x}-{v.end:08x} {perms(v.vm_flags)} {off:08x} {dev} {ino} "
            if name:
                line = line.ljust(73) + name
            lines.append(line)
        return "\n".join(lines) + ("\n" if lines else "")

    def pagemap(self, addr, length) -> np.ndarray:
        """/proc/pid/pagemap entries, one uint64 per page: bit 63 present,
        61 file/shared-anon, 56 exclusively mapped, 55 soft-dirty, 0-54 PFN.

        Example::

            >>> pm = mm.pagemap(a, 4096)
            >>> bool(pm[0] >> 63)
            True
        """
        addr, length = _u64(addr, "addr"), _u64(length, "length")
        start = addr & ~(self.page_size - 1)
        end = self._page_align(addr + length)
        if end > 1 << self.geometry.va_bits:
            raise ValueError("pagemap range beyond the address space")
        n = (end - start) >> self.page_shift
        out = mmcore.pagemap(self.engine, start, n)
        for v in self._tree.intersecting(start, end):   # VM_SOFTDIRTY marks every entry
            if v.vm_flags & C.VM_SOFTDIRTY:
                lo = (max(v.start, start) - start) >> self.page_shift
                hi = (min(v.end, end) - start) >> self.page_shift
                out[lo:hi] |= PM_SOFT_DIRTY
        return out

    def walk(self, addr):
        """The page-table walk of addr, level by level (see pymm.walk.Walk).

        Example::

            >>> print(mm.walk(a))
        """
        from pymm.walk import Walk
        return Walk(self, _u64(addr, "addr"))

    def describe(self, start=0, end=None, *, check=True):
        """The page tables as merged ranges (4K/2M/1G, permissions, frame
        runs), per-level fill, empty tables kept alive and orphan entries;
        ``str()`` of the result is what ``pymm show`` prints; it also lists
        broken invariants unless ``check=False``.

        Example::

            >>> d = mm.describe()
            >>> d.ranges[0].page, len(d.empty_tables)
            ('4K', 0)
        """
        from pymm.show import describe
        limit = 1 << self.geometry.va_bits
        start = _u64(start, "start")
        end = limit if end is None else _u64(end, "end")
        if not start <= end <= limit:
            raise ValueError(f"describe() range [{start:#x}, {end:#x}) is not inside the address space")
        return describe(self, start, end, check=bool(check))

    def _repr_html_(self) -> str:
        """Rich display in a notebook: the maps and the page-table summary."""
        import html
        maps = html.escape(self.format_maps()) or "(no mappings)"
        return (f"<p><code>{html.escape(repr(self))}</code></p><pre>{maps}</pre>"
                + self.describe()._repr_html_())

    def __repr__(self):
        return (f"<pymm.MM kernel={self.kernel.name} arch={self.arch} vmas={self.map_count} "
                f"rss={self.rss >> 10} KiB tables={self.engine.n_tables}>")

