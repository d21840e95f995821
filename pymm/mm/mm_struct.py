"""pymm.MM: a process address space, the kernel's ``struct mm_struct``
(include/linux/mm_types.h) with Linux 6.18 syscall semantics.

:class:`MM` holds the state: the VMA tree, the page-table engine
(:mod:`mmcore`), counters, limits and the warnings.  Its public methods are
thin: validate the arguments as the syscall boundary reads them, call the
function that models the kernel's (one module per kernel file, see
:mod:`pymm.mm`), and with ``check=True`` verify the result.  Python work per
call is proportional to the VMAs it touches, never to the pages.

Example::

    >>> import pymm
    >>> mm = pymm.MM()
    >>> a = mm.mmap(pymm.HOST_WINDOW[0], 1 << 30, pymm.PROT_READ | pymm.PROT_WRITE,
    ...             pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS | pymm.MAP_FIXED)
    >>> mm.memset(a, 0x5A, 1 << 30)
    >>> b = mm.mremap(a, 1 << 30, 1 << 30, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED,
    ...               a + (4 << 30))
    >>> mm.read(b + 12345, 2), mm.stats["pud_moves"]
    (b'ZZ', 1)
"""
from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Dict, List, Optional

import numpy as np

import mmcore
from mmcore import Engine

if TYPE_CHECKING:                      # annotations only: describe and walk build on MM
    from pymm.describe import Description
    from pymm.walk import Walk
from pymm import constants as C
from pymm import errors
from pymm.errors import KernelWarning
from pymm.kernels import Kernel, get_kernel, view
from pymm.machine import ARCHES, THP_MODES, Machine, default_ram  # noqa: F401  (re-exported)
from pymm.mm.exec import create_init_stack_vma, relocate_vma_down
from pymm.mm.fork import dup_mmap, join_machine
from pymm.mm.madvise import do_madvise
from pymm.mm.memory import FAULT_AROUND_BYTES, cpu_memset, cpu_read, cpu_stamp, cpu_write
from pymm.mm.mlock import do_mlock, do_munlock
from pymm.mm.mmap import sys_mmap
from pymm.mm.mprotect import do_mprotect_pkey
from pymm.mm.mremap import do_mremap, move_page_tables
from pymm.mm.mseal import do_mseal
from pymm.mm.rlimit import default_rlimits, do_prlimit, resource_number
from pymm.mm.syscall import U64, _Errno, _byte_value, _int_arg, _read_locked, _serialised, _syscall, _u64, check_now
from pymm.mm.task_mmu import pagemap_read, show_maps, task_mem
from pymm.mm.vma import VMA, VmaTree, do_vmi_munmap, page_align, snapshot

MAX_READ = 1 << 32            # mm.read() returns bytes: 4 GiB at most per call


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
    below mmap_min_addr, as root can), ``commit_limit`` (bytes; overrides
    the overcommit limit, see :class:`pymm.Machine`: by default a private
    writable or shared mapping larger than ``ram`` fails with ENOMEM, as
    Linux's heuristic overcommit does beyond RAM + swap), ``ram`` (bytes
    of frames and page tables the simulated machine has; past it the OOM
    killer ends the process: :class:`pymm.OutOfMemory`, the MM is dead;
    default :func:`default_ram`, a quarter of this host's memory).

    ``machine``: the :class:`pymm.Machine` to run on (use ``m.spawn()``);
    by default a new machine of its own, built from ``kernel``, ``arch``,
    ``thp``, ``max_map_count`` and ``commit_limit``.

    Example::

        >>> mm = pymm.MM(kernel="5.8", thp="never")
        >>> mm.page_size, mm.pmd_size, hex(mm.task_size)
        (4096, 2097152, '0x7ffffffff000')
    """

    _family = None                                # the ForkFamily once forked (pymm.mm.fork)

    def __init__(self, kernel="6.18", arch="x86_64", check=False, thp="madvise", *,
                 mmap_base: Optional[int] = None, window=None,
                 max_map_count: int = C.DEFAULT_MAX_MAP_COUNT, privileged: bool = False,
                 commit_limit: Optional[int] = None, rlimit_stack: int = C.RLIMIT_STACK_DEFAULT,
                 ram: Optional[int] = None, machine: Optional[Machine] = None):
        self._lock = threading.RLock()            # mm->mmap_lock: see _serialised()
        self._busy: Optional[str] = None
        self._warn_queue: List[KernelWarning] = []
        self.dead: Optional[str] = None           # why, after a KernelOops or OutOfMemory
        max_map_count = _int_arg(max_map_count, "max_map_count", 1, 1 << 31)
        if commit_limit is not None:
            commit_limit = _int_arg(commit_limit, "commit_limit", 0, 1 << 64)
        if machine is None:                       # a machine with one process
            machine = Machine(kernel, arch, thp, max_map_count=max_map_count, commit_limit=commit_limit,
                              ram=ram)
        elif not isinstance(machine, Machine):
            raise TypeError(f"machine must be a pymm.Machine, not {type(machine).__name__}")
        elif (get_kernel(kernel), arch, thp, max_map_count, commit_limit, ram or machine.ram) != (
                machine.kernel, machine.arch, machine.thp, machine.max_map_count, machine.commit_limit,
                machine.ram):
            raise ValueError("kernel, arch, thp, max_map_count, commit_limit and ram are the machine's: "
                             "start a process with machine.spawn()")
        if not isinstance(check, bool):
            raise TypeError("check must be True or False")
        self.machine = machine
        self._kernel: Kernel = machine.kernel
        self.arch = machine.arch
        self.geometry = machine.geometry
        thp = self.thp = machine.thp
        self.engine = Engine(self.geometry)
        self.page_size = self.geometry.page_size
        self.page_shift = self.geometry.page_shift
        self.pmd_size = self.geometry.pmd_size
        self.pud_size = self.geometry.pud_size
        self.task_size = machine.arch_info.task_size          # the arch's TASK_SIZE
        self.map_window = machine.arch_info.mmap_window
        self.stack_top = machine.arch_info.stack_top          # STACK_TOP_MAX
        self._pmask = self.page_size - 1          # offset_in_page()
        # /sys/kernel/debug/fault_around_bytes (default 64 KiB): read faults
        # on shared memory also map the cached pages around them
        self._fault_around_pages = max(1, FAULT_AROUND_BYTES >> self.page_shift)
        self._va_limit = 1 << self.geometry.va_bits
        self.stack_guard_gap = C.STACK_GUARD_GAP_PAGES * self.page_size
        self.mmap_min_addr = C.MMAP_MIN_ADDR
        if not isinstance(privileged, bool):
            raise TypeError("privileged must be True or False")
        self.privileged = privileged
        self.rlimit_stack = _int_arg(rlimit_stack, "rlimit_stack", 0, 1 << 64)
        self.rlimits = default_rlimits()          # RLIMIT_MEMLOCK, RLIMIT_AS: (soft, hard)
        self.locked_vm = 0                        # mm->locked_vm, pages (see pymm.mm.rlimit)
        self.ram = machine.ram                    # the machine's (MemTotal)
        self.engine.max_pages = min(self.ram // self.page_size, (1 << 63) - 1)   # frames + tables
        # arch/x86/mm/mmap.c mmap_base() without randomisation: the gap below
        # the stack is the stack rlimit plus the guard gap, at least 128 MiB.
        gap = max(C.MIN_GAP, self.rlimit_stack + self.stack_guard_gap)
        self.mmap_base = (self.map_window - gap) if mmap_base is None else \
            _int_arg(mmap_base, "mmap_base", self.page_size, self.task_size)
        if self.mmap_base & self._pmask:
            raise ValueError(f"mmap_base={self.mmap_base:#x} is not page aligned")
        self.mmap_legacy_base = machine.arch_info.unmapped_base
        self.window = None
        if window is not None:
            if not isinstance(window, (tuple, list)) or len(window) != 2:
                raise TypeError("window must be a pair (lo, hi)")
            lo, hi = (_int_arg(x, "window", 0, 1 << 64) for x in window)
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
        self._zero_owner = 0                      # memory.zero_page_owner(), made on first use
        self.check_enabled = check
        self._ctx = 0                             # the engine context (fork.py)
        self.pid = machine._attach(self)

    # ----------------------------------------------------------------------------------- public attributes
    @property
    def max_map_count(self) -> int:
        """vm.max_map_count: the machine's sysctl, read at each use."""
        return self.machine.max_map_count

    @property
    def commit_limit(self) -> Optional[int]:
        """The machine's overcommit limit override (None: derived)."""
        return self.machine.commit_limit

    @commit_limit.setter
    def commit_limit(self, value: Optional[int]) -> None:
        self.machine.commit_limit = value         # a sysctl: the whole machine's

    @property
    def kernel(self) -> Kernel:
        """The kernel this address space runs (fixed at creation)."""
        return self._kernel

    @property
    @_read_locked
    def stats(self) -> Dict[str, int]:
        """Counters since creation or reset_stats(): pte_moves, pmd_moves,
        pud_moves, huge_pmd_moves, pgtables_allocated, pgtables_freed,
        tlb_flushes, pte_slots_visited, huge_pmd_splits, faults, cow_faults,
        warnings."""
        return self.engine.stats()

    @_serialised
    def reset_stats(self) -> None:
        """Zero the counters of :attr:`stats`.

        Example::

            >>> mm.reset_stats(); mm.stats["pte_moves"]
            0
        """
        self.engine.reset_stats()

    @property
    @_read_locked
    def map_count(self) -> int:
        """mm->map_count: the number of VMAs (limited by ``max_map_count``,
        as vm.max_map_count limits the kernel's).

        Example::

            >>> mm.map_count
            1
        """
        return len(self._tree)

    @property
    @_read_locked
    def rss(self) -> int:
        """Resident memory in bytes (RssAnon + RssShmem, as VmRSS)."""
        anon, shmem = self.engine.rss()
        return (anon + shmem) * self.page_size

    @_read_locked
    def status(self) -> Dict[str, int]:
        """The memory lines of /proc/pid/status that pymm models, in kB, under
        the kernel's names (VmSize, VmLck, VmRSS, RssAnon, RssShmem, VmPTE),
        plus map_count; differences between two calls compare one to one
        with :meth:`pymm.host.HostMM.status` (see task_mmu.task_mem()).

        Example::

            >>> m = pymm.MM()
            >>> a = m.mmap(0, 2 << 20, pymm.PROT_READ | pymm.PROT_WRITE,
            ...            pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
            >>> m.madvise(a, 2 << 20, pymm.MADV_HUGEPAGE); m.write(a, b"x")
            >>> m.status()["RssAnon"], m.status()["VmPTE"]   # a THP; a PUD, a PMD, the deposit
            (2048, 12)
        """
        return task_mem(self)

    # ------------------------------------------------------------------------------ views for kernel hooks
    # PageTableMove.prev_of/next_of/find_vma_intersection ask the mm for these
    # (pymm.kernels cannot import pymm.mm: it sits below it).
    def _prev_view(self, vma):
        """vma->vm_prev, as a read-only VmaView (None at the bottom)."""
        v = self._tree.prev(self._tree.lookup(vma.start))
        return view(v) if v is not None else None

    def _next_view(self, vma):
        """vma->vm_next, as a read-only VmaView (None at the top)."""
        v = self._tree.next(self._tree.lookup(vma.start))
        return view(v) if v is not None else None

    def _intersection_view(self, start, end):
        """find_vma_intersection(), as a read-only VmaView."""
        v = self._tree.first_intersecting(start, end)
        return view(v) if v is not None else None

    # --------------------------------------------------------------------------- munmap: vma.py (mm/vma.c)
    @_serialised
    @_syscall
    def munmap(self, addr: int, length: int) -> None:
        """munmap(2).  Unmapping nothing is not an error.

        Example::

            >>> mm.munmap(a, 4096)
        """
        addr, length = _u64(addr, "addr"), _u64(length, "length")
        do_vmi_munmap(self, addr, length)

    # --------------------------------------------------------------------------- mmap: mmap.py (mm/mmap.c)
    @_serialised
    @_syscall
    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int = -1, offset: int = 0) -> int:
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
        return sys_mmap(self, addr, length, prot, flags, fd, offset)

    # --------------------------------------------------------------- mprotect: mprotect.py (mm/mprotect.c)
    @_serialised
    @_syscall
    def mprotect(self, addr: int, length: int, prot: int) -> None:
        """mprotect(2): new protection for [addr, addr+length).

        As in Linux, VMAs before a hole keep their new protection when the
        call then fails with ENOMEM.

        Example::

            >>> mm.mprotect(a, 4096, pymm.PROT_READ)
        """
        start, length = _u64(addr, "addr"), _u64(length, "length")
        prot = _u64(prot, "prot") & 0xFFFFFFFF
        do_mprotect_pkey(self, start, length, prot)

    # ------------------------------------------------------------------ madvise: madvise.py (mm/madvise.c)
    @_serialised
    @_syscall
    def madvise(self, addr: int, length: int, advice: int) -> None:
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
        do_madvise(self, start, len_in, advice)

    # ----------------------------------------- mlock, mseal, limits: mlock.py, mseal.py, rlimit.py
    @_serialised
    @_syscall
    def mlock(self, addr: int, length: int, flags: int = 0) -> None:
        """mlock(2), or mlock2(2) with ``flags`` (MLOCK_ONFAULT): lock the
        range and populate it.  Beyond RLIMIT_MEMLOCK: ENOMEM.

        Example::

            >>> mm.mlock(a, 8192)
        """
        addr, length, flags = _u64(addr, "addr"), _u64(length, "length"), _u64(flags, "flags")
        if flags & ~C.MLOCK_ONFAULT:
            raise _Errno(errors.EINVAL)
        do_mlock(self, addr, length, C.VM_LOCKED | (C.VM_LOCKONFAULT if flags else 0))

    @_serialised
    @_syscall
    def munlock(self, addr: int, length: int) -> None:
        """munlock(2).

        Example::

            >>> mm.munlock(a, 8192)
        """
        do_munlock(self, _u64(addr, "addr"), _u64(length, "length"))

    @_serialised
    @_syscall
    def mseal(self, addr: int, length: int, flags: int = 0) -> None:
        """mseal(2) (Linux 6.10+; ENOSYS on older kernels): the range can no
        longer be unmapped, moved, grown or reprotected (EPERM).

        Example::

            >>> mm.mseal(a, 4096)
        """
        do_mseal(self, _u64(addr, "addr"), _u64(length, "length"), _u64(flags, "flags"))

    @_serialised
    @_syscall
    def setrlimit(self, resource, limit) -> None:
        """setrlimit(2) for ``pymm.RLIMIT_AS`` / ``pymm.RLIMIT_MEMLOCK`` (or
        "AS" / "MEMLOCK"): ``limit`` is bytes (soft and hard, as ``ulimit``
        sets them) or a pair (soft, hard); ``pymm.RLIM_INFINITY`` is none.
        Raising the hard limit is EPERM (an unprivileged process).

        Example::

            >>> mm.setrlimit("MEMLOCK", 1 << 20); mm.getrlimit(pymm.RLIMIT_MEMLOCK)
            (1048576, 1048576)
        """
        resource = resource_number(resource)
        soft, hard = (limit, limit) if not isinstance(limit, (tuple, list)) else tuple(limit)
        do_prlimit(self, resource, _u64(soft, "limit"), _u64(hard, "limit"))

    @_read_locked
    def getrlimit(self, resource) -> tuple:
        """getrlimit(2): (soft, hard) in bytes.

        Example::

            >>> pymm.MM().getrlimit("AS") == (pymm.RLIM_INFINITY, pymm.RLIM_INFINITY)
            True
        """
        return self.rlimits[resource_number(resource)]

    # -------------------------------------------------------- memory access, as the CPU does it: memory.py
    def _access_args(self, addr, length):
        addr, length = _u64(addr, "addr"), _u64(length, "length")
        if addr + length > 1 << 64:
            raise ValueError("access wraps around the address space")
        return addr, length

    @functools.partial(_serialised, allow_dead=True)
    def read(self, addr: int, length: int) -> bytes:
        """Read as the CPU would: through the page tables first (a present
        entry is used even outside every VMA), the fault handler on a miss.

        Example::

            >>> mm.read(a, 4)
            b'\\x00\\x00\\x00\\x00'
        """
        addr, length = self._access_args(addr, length)
        if length > MAX_READ:
            raise ValueError(f"read of {length:#x} bytes: at most {MAX_READ:#x} at a time")
        result = cpu_read(self, addr, length)
        if self.check_enabled:
            check_now(self, "read")
        return result

    @_serialised
    def write(self, addr: int, data: bytes) -> None:
        """Write bytes as the CPU would (copy-on-write, faults, segfaults).

        Example::

            >>> mm.write(a + 4090, b"hello, world")
        """
        addr = _u64(addr, "addr")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data must be bytes-like")
        cpu_write(self, addr, bytes(data))
        if self.check_enabled:
            check_now(self, "write")

    @_serialised
    def memset(self, addr: int, value: int, length: int) -> None:
        """memset(): whole pages take the bulk path (one tag per page), so
        1 GiB costs milliseconds.

        Example::

            >>> mm.memset(a, 0x33, 2 << 20)
        """
        addr, length = self._access_args(addr, length)
        value = _byte_value(value)
        cpu_memset(self, addr, value, length)
        if self.check_enabled:
            check_now(self, "memset")

    @_serialised
    def stamp(self, addr: int, length: int) -> None:
        """Write into each whole page of the range its own page number
        (addr >> PAGE_SHIFT) as a repeated 8-byte word: distinct contents at
        O(1) per page, to check after a move that every page landed right."""
        addr, length = self._access_args(addr, length)
        if (addr | length) & self._pmask:
            raise ValueError("stamp needs a page-aligned range")
        cpu_stamp(self, addr, length)

    # ----------------------------------------------------------------------------- fork: fork.py (kernel/fork.c)
    @_serialised
    @_syscall
    def fork(self) -> "MM":
        """fork(2)'s address space: a child process on the same machine
        (dup_mmap()).  Private anonymous pages are shared copy-on-write,
        shared mappings stay shared, MADV_DONTFORK VMAs are left out and
        MADV_WIPEONFORK ones come up zero-filled in the child.

        Example::

            >>> child = mm.fork()
            >>> child.machine is mm.machine, child.pid > mm.pid, child.format_maps() == mm.format_maps()
            (True, True, True)
        """
        return dup_mmap(self)

    def _join_machine(self, other: "MM") -> None:
        """Machine.spawn(): this new, empty process shares ``other``'s engine
        (see pymm.mm.fork.join_machine)."""
        if self._tree._vmas or self._family is not None:
            raise RuntimeError("only a new, empty process can join its machine's engine")
        join_machine(self, other)

    # --------------------------------------------------------------------- mremap: mremap.py (mm/mremap.c)
    @_serialised
    @_syscall
    def mremap(self, old_address: int, old_size: int, new_size: int, flags: int = 0,
               new_address: int = 0) -> int:
        """mremap(2) with Linux 6.18 semantics (do_mremap()).

        Shrink (across several VMAs), same-size no-op, expand in place,
        move with MREMAP_MAYMOVE, MREMAP_FIXED (6.17+: several VMAs, gaps
        kept) and MREMAP_DONTUNMAP.  The page tables move with the kernel's
        move_page_tables() (see ``mm.kernel``).

        Example::

            >>> new = mm.mremap(a, 4096, 8192, pymm.MREMAP_MAYMOVE)
        """
        if type(old_address) is type(old_size) is type(new_size) is type(flags) is type(new_address) \
                is int and 0 <= (old_address | old_size | new_size | flags | new_address) <= U64:
            return do_mremap(self, old_address, old_size, new_size, flags, new_address)  # _u64()'s fast case
        addr = _u64(old_address, "old_address")
        old_len, new_len = _u64(old_size, "old_size"), _u64(new_size, "new_size")
        flags, new_addr = _u64(flags, "flags"), _u64(new_address, "new_address")
        return do_mremap(self, addr, old_len, new_len, flags, new_addr)

    # ------------------------------------------------------------ exec: exec.py (mm/vma_exec.c, fs/exec.c)
    @_serialised
    def setup_exec_stack(self, arg_bytes: int = 4096, top: Optional[int] = None) -> int:
        """create_init_stack_vma() + copy_strings(): the new process's first
        stack VMA at STACK_TOP_MAX, populated with ``arg_bytes`` of
        arguments (stamped, so moves can be checked).  Returns its start.

        Example::

            >>> mm = pymm.MM(kernel="5.8")
            >>> start = mm.setup_exec_stack(arg_bytes=3 << 20)
        """
        top = self.stack_top if top is None else _u64(top, "top")
        size = page_align(self, max(int(arg_bytes), self.page_size))
        if (self._pmask & top) or size >= top or top > self.task_size:
            raise ValueError("stack top must be page aligned, above the stack size, within task_size")
        start = top - size
        if self._tree.first_intersecting(start, top):
            raise ValueError("the stack would overlap an existing mapping")
        return create_init_stack_vma(self, start, top)

    @_serialised
    @_syscall
    def shift_arg_pages(self, vma_start: int, shift: int, *, partial: Optional[int] = None) -> None:
        """relocate_vma_down() (fs/exec.c shift_arg_pages() before 6.x): move
        the VMA starting at vma_start down by shift bytes, as exec moves the
        stack.  The ranges overlap when shift is smaller than the VMA.

        1. expand the VMA down over [new_start, old_end);
        2. move_page_tables(vma, old_start, vma, new_start, len, for_stack);
        3. free_pgd_range() of the tail (floor/ceiling as exec chooses);
        4. shrink the VMA to [new_start, new_end).

        If move_page_tables() reports fewer bytes than asked (the thread's
        ``5.8+linus-v2..v4`` when the stack ends off a PMD boundary), the
        kernel returns -ENOMEM with the stack half-shifted and exec, past its
        point of no return, kills the process with SIGSEGV.  pymm does the
        same: OSError(ENOMEM), the half-shifted state kept, and the MM dead
        (``mm.dead`` says why; reads still work, other calls raise
        KernelOops).  With ``check=True`` too: no InvariantError.

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
        if shift > vma.start:
            raise ValueError("shift would move the VMA below address 0")
        relocate_vma_down(self, vma, shift, partial)

    @_serialised
    def move_page_tables(self, old_addr: int, new_addr: int, length: int, for_stack: bool = False) -> int:
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
        # mm/mremap.c's move_page_tables(), the function, not this method
        return move_page_tables(self, self._tree.lookup(old_addr), self._tree.lookup(new_addr),
                                old_addr, new_addr, length, bool(for_stack))

    # ------------------------------------------------ introspection: task_mmu.py, pymm.walk, pymm.describe
    @_read_locked
    def maps(self) -> List[VMA]:
        """The VMAs, sorted by start, as snapshots (see :class:`pymm.VMA`)."""
        return [snapshot(v) for v in self._tree]

    @_read_locked
    def format_maps(self) -> str:
        """The /proc/self/maps text."""
        return show_maps(self)

    @_read_locked
    def pagemap(self, addr: int, length: int) -> np.ndarray:
        """/proc/pid/pagemap entries, one uint64 per page: bit 63 present,
        61 file/shared-anon, 56 exclusively mapped, 55 soft-dirty, 0-54 PFN.

        Example::

            >>> pm = mm.pagemap(a, 4096)
            >>> bool(pm[0] >> 63)
            True
        """
        addr, length = _u64(addr, "addr"), _u64(length, "length")
        start = addr & ~(self.page_size - 1)
        if addr + length >= 1 << 64:       # a negative length, read as unsigned long
            raise ValueError("pagemap range wraps around the address space")
        end = page_align(self, addr + length)
        if end > 1 << self.geometry.va_bits:
            raise ValueError("pagemap range beyond the address space")
        return pagemap_read(self, start, end)

    @_read_locked
    def walk(self, addr: int) -> "Walk":
        """The page-table walk of addr, level by level (see pymm.walk.Walk).

        Example::

            >>> print(mm.walk(a))
        """
        from pymm.walk import Walk
        return Walk(self, _u64(addr, "addr"))

    @_read_locked
    def describe(self, start: int = 0, end: Optional[int] = None, *, check: bool = True) -> "Description":
        """The page tables as merged ranges (4K/2M/1G, permissions, frame
        runs), per-level fill, empty tables kept alive and orphan entries;
        ``str()`` of the result is what ``pymm show`` prints; it also lists
        broken invariants unless ``check=False``.

        Example::

            >>> d = mm.describe()
            >>> d.ranges[0].page, len(d.empty_tables)
            ('4K', 0)
        """
        from pymm.describe import describe
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

    @_read_locked
    def __reduce_ex__(self, protocol):
        raise TypeError("a pymm.MM cannot be pickled or copied (its page tables live in the C "
                        "engine): make a new MM and replay the calls")

    def __copy__(self):
        self.__reduce_ex__(0)

    def __repr__(self) -> str:
        return (f"<pymm.MM kernel={self.kernel.name} arch={self.arch} vmas={self.map_count} "
                f"rss={self.rss >> 10} KiB tables={self.engine.n_tables}>")



Machine.process_type = MM                         # what Machine.spawn() starts
