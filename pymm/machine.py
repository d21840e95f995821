"""pymm.Machine: one boot of a kernel, on which processes (:class:`pymm.MM`) run.

What is per boot in Linux is the machine's: the kernel, the arch, the THP
setting (/sys/kernel/mm/transparent_hugepage/enabled), the sysctls
(vm.max_map_count, the overcommit limit) and the state of the
``WARN_ON_ONCE()`` sites: each site's ``static bool __warned``
(include/asm-generic/bug.h) lives in the kernel image, so it fires once per
boot, not once per process.  ``m.spawn()`` starts a process; ``m.warnings``
is the boot's log of warnings, in order.  ``pymm.MM(...)`` is a machine
with one process.

Example::

    >>> import warnings
    >>> m = pymm.Machine(kernel="5.9")
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     for _ in range(3):   # three execs, each shifting the stack over itself
    ...         mm = m.spawn()
    ...         start = mm.setup_exec_stack(arg_bytes=3 << 20, top=0xC0000000)
    ...         mm.shift_arg_pages(start, 2 << 20)
    >>> len(m.warnings), mm.machine is m, mm.stats["warnings"]
    (1, True, 1)
"""
from __future__ import annotations

import os
import weakref
from typing import Dict, List, Optional, Set

import mmcore
from pymm import constants as C
from pymm.arches import ARCHES, Arch, get_arch, kernel_version
from pymm.errors import KernelWarning
from pymm.kernels import Kernel, get_kernel

THP_MODES = ("always", "madvise", "never")
_SITE_NAMES = {v: k for k, v in mmcore.WARN_SITES.items()}
OVERCOMMIT_GUESS, OVERCOMMIT_ALWAYS, OVERCOMMIT_NEVER = 0, 1, 2     # include/uapi/linux/mman.h


def default_ram() -> int:
    """The simulated machine's RAM when ``ram=`` is not given: a quarter
    of this host's (MemTotal), at most 64 GiB, at least 256 MiB, so that no
    pymm call can push the host into its own OOM killer (every simulated
    page-table page is a real 4 KiB page here)."""
    total = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    total = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if not total:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total = 4 << 30
    return min(max(total // 4, 256 << 20), 64 << 30) & ~0xFFF


class Sysctl:
    """A /proc/sys/vm entry of a :class:`Machine`: checked when set, and read
    by the machine's processes each time they need it, so a change reaches
    the processes already running (as ``sysctl -w`` does)."""

    def __init__(self, lo: int, hi: int, optional: bool = False):
        self.lo, self.hi, self.optional = lo, hi, optional

    def __set_name__(self, owner, name: str) -> None:
        self.name, self.attr = name, "_" + name

    def __get__(self, obj, objtype=None):
        return self if obj is None else getattr(obj, self.attr)

    def __set__(self, obj, value) -> None:
        if value is None and self.optional:
            setattr(obj, self.attr, None)
            return
        if isinstance(value, bool) or not hasattr(type(value), "__index__"):
            raise TypeError(f"{self.name} must be an int{' or None' if self.optional else ''}, "
                            f"not {type(value).__name__}")
        value = value.__index__()
        if not self.lo <= value <= self.hi:
            raise ValueError(f"{self.name}={value} is out of range [{self.lo}, {self.hi}]")
        setattr(obj, self.attr, value)


class Machine:
    """One boot: kernel, arch, THP setting, sysctls and the warnings.

    ``kernel``: a name from :data:`pymm.KERNELS`, ``"module:attr"`` or a
    :class:`pymm.Kernel`; ``arch``: a name from :data:`pymm.ARCHES`;
    ``thp``: ``"always"``, ``"madvise"`` or ``"never"``;
    ``ram``: bytes of RAM (default :func:`default_ram`; no swap).

    The sysctls apply to every process, also after a change:
    ``max_map_count`` (vm.max_map_count), ``overcommit_memory`` (0: the
    heuristic, Linux's default: one charge larger than RAM + swap fails
    with ENOMEM; 1: always allow; 2: strict, the machine's Committed_AS may
    not pass CommitLimit), ``overcommit_ratio`` (percent, default 50) and
    ``overcommit_kbytes`` (default 0) that make CommitLimit, and
    ``commit_limit`` (bytes; ``None``, the default: derived as Linux does;
    a number overrides the limit of the policy in force: RAM + swap under
    0, CommitLimit under 2).  See :meth:`meminfo`.

    Example::

        >>> m = pymm.Machine(kernel="5.8", arch="x86_64", thp="never")
        >>> mm = m.spawn()
        >>> mm.machine is m, mm.kernel.name, mm.thp, m.processes
        (True, '5.8', 'never', 1)
    """

    # The class of the processes spawn() starts: pymm.mm.mm_struct sets it to
    # MM (it imports this module, so this module cannot import it).
    process_type = None

    max_map_count = Sysctl(1, (1 << 31) - 1)
    overcommit_memory = Sysctl(0, 2)
    overcommit_ratio = Sysctl(0, 1 << 31)
    overcommit_kbytes = Sysctl(0, 1 << 54)
    commit_limit = Sysctl(0, 1 << 64, optional=True)
    admin_reserve_kbytes = Sysctl(0, 1 << 54)
    user_reserve_kbytes = Sysctl(0, 1 << 54)

    def __init__(self, kernel="6.18", arch="x86_64", thp: str = "madvise", *,
                 max_map_count: int = C.DEFAULT_MAX_MAP_COUNT, commit_limit: Optional[int] = None,
                 ram: Optional[int] = None, overcommit_memory: int = OVERCOMMIT_GUESS,
                 overcommit_ratio: int = 50, overcommit_kbytes: int = 0):
        self.kernel: Kernel = get_kernel(kernel)
        self.arch_info: Arch = get_arch(arch)
        self.arch: str = self.arch_info.name
        if thp not in THP_MODES:
            raise ValueError(f"thp must be one of {THP_MODES}, not {thp!r}")
        self.thp = thp
        # CONFIG_HAVE_MOVE_PMD / CONFIG_HAVE_MOVE_PUD: does this kernel select them on this arch?
        version = kernel_version(self.kernel.name)
        self.move_pmd = self.arch_info.has_move_pmd(version)
        self.move_pud = self.arch_info.has_move_pud(version)
        self.max_map_count = max_map_count
        self.commit_limit = commit_limit
        self.overcommit_memory = overcommit_memory
        self.overcommit_ratio = overcommit_ratio
        self.overcommit_kbytes = overcommit_kbytes
        if ram is None:
            ram = default_ram()
        if isinstance(ram, bool) or not hasattr(type(ram), "__index__"):
            raise TypeError(f"ram must be an int, not {type(ram).__name__}")
        page = self.geometry.page_size
        if not 64 * page <= ram.__index__() <= 1 << 64:
            raise ValueError(f"ram={ram} is out of range [{64 * page}, {1 << 64}]")
        self._ram = ram.__index__()
        # mm/util.c init_admin_reserve()/init_user_reserve(): 1/32 of the
        # free memory at boot, at most 8 MiB and 128 MiB
        self.admin_reserve_kbytes = min(self._ram // 1024 // 32, 1 << 13)
        self.user_reserve_kbytes = min(self._ram // 1024 // 32, 1 << 17)
        self._procs: "weakref.WeakSet" = weakref.WeakSet()
        self.warnings: List[KernelWarning] = []
        self._warned_once: Set[str] = set()      # WARN_ON_ONCE sites that fired (__warned)
        self.suppressed: Dict[str, int] = {}     # once-sites hit again after the first report
        self.processes = 0                       # processes spawned so far (the next pid - 1)

    @property
    def geometry(self) -> mmcore.Geometry:
        """The arch's paging geometry (:mod:`mmcore.geometry`)."""
        return self.arch_info.geometry

    def spawn(self, *, check: bool = False, **process) -> "pymm.MM":  # noqa: F821
        """Start a process on this machine: a new, empty address space.

        ``check`` and the per-process keywords of :class:`pymm.MM`
        (``mmap_base``, ``window``, ``privileged``, ``rlimit_stack``) are
        passed on; the kernel, arch, THP setting and sysctls are the
        machine's.

        Example::

            >>> m = pymm.Machine()
            >>> a, b = m.spawn(), m.spawn()
            >>> a.machine is b.machine, (a.pid, b.pid)
            (True, (1, 2))
            >>> a.engine is b.engine          # one physical memory: the machine's RAM bounds both
            True
        """
        for k in ("kernel", "arch", "thp", "max_map_count", "commit_limit", "ram", "machine"):
            if k in process:
                raise TypeError(f"spawn() takes no {k!r}: it is the machine's")
        running = [p for p in list(self._procs) if not p.dead]
        mm = self.process_type(self.kernel, self.arch, check, self.thp, machine=self,
                               max_map_count=self.max_map_count, commit_limit=self.commit_limit,
                               **process)
        if running:
            mm._join_machine(running[0])     # one boot, one physical memory: the machine's engine
        return mm

    @property
    def ram(self) -> int:
        """The machine's RAM in bytes (MemTotal; fixed at boot)."""
        return self._ram

    def _attach(self, mm) -> int:
        """A new process: its pid (1, 2, ... in spawn order)."""
        self.processes += 1
        self._procs.add(mm)
        return self.processes

    def vm_commit_limit(self) -> int:
        """vm_commit_limit() (mm/util.c), in bytes: overcommit_kbytes, or
        RAM * overcommit_ratio / 100, plus swap (none); ``commit_limit``
        overrides it."""
        if self.commit_limit is not None:
            return self.commit_limit
        if self.overcommit_kbytes:
            return self.overcommit_kbytes * 1024
        return self._ram * self.overcommit_ratio // 100

    def committed(self) -> int:
        """vm_committed_as in bytes: what the running processes have charged
        (their VM_ACCOUNT mappings, and each shmem object made without
        MAP_NORESERVE, in full).  Work proportional to their VMAs."""
        total, objects = 0, {}
        for mm in list(self._procs):
            for v in mm._tree._vmas:
                if v.shm is not None:
                    if not v.vm_flags & C.VM_NORESERVE:
                        objects[id(v.shm)] = v.shm.npages * mm.page_size
                elif v.vm_flags & C.VM_ACCOUNT:
                    total += v.end - v.start
        return total + sum(objects.values())

    def vm_enough_memory(self, mm, nbytes: int) -> bool:
        """__vm_enough_memory() (mm/util.c): may ``mm`` charge ``nbytes``
        more?  0 (OVERCOMMIT_GUESS): not if it alone is more than RAM + swap
        (or ``commit_limit``); 1: always; 2 (OVERCOMMIT_NEVER): only if
        Committed_AS stays below CommitLimit less the root reserve (unless
        ``mm.privileged``) and the user reserve."""
        if self.overcommit_memory == OVERCOMMIT_ALWAYS:
            return True
        if self.overcommit_memory == OVERCOMMIT_GUESS:
            return nbytes <= (self._ram if self.commit_limit is None else self.commit_limit)
        allowed = self.vm_commit_limit()
        if not mm.privileged:
            allowed -= self.admin_reserve_kbytes * 1024
        total_vm = sum(v.end - v.start for v in mm._tree._vmas)
        allowed -= min(total_vm // 32, self.user_reserve_kbytes * 1024)
        return self.committed() + nbytes < allowed

    def meminfo(self) -> Dict[str, int]:
        """The overcommit lines of /proc/meminfo, in kB.

        Example::

            >>> m = pymm.Machine(ram=1 << 30, overcommit_memory=2)
            >>> mm = m.spawn()
            >>> _ = mm.mmap(0, 64 << 20, pymm.PROT_READ | pymm.PROT_WRITE,
            ...             pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
            >>> m.meminfo()
            {'MemTotal': 1048576, 'SwapTotal': 0, 'CommitLimit': 524288, 'Committed_AS': 65536}
        """
        return {"MemTotal": self._ram // 1024, "SwapTotal": 0,
                "CommitLimit": self.vm_commit_limit() // 1024, "Committed_AS": self.committed() // 1024}

    def _policy(self, site: str) -> int:
        """The kernel's WARN_ON / WARN_ON_ONCE / silent choice for a site."""
        k = self.kernel
        return {"pmd_not_none": k.pmd_warn, "pud_not_none": k.pud_warn,
                "huge_pmd_not_none": k.huge_pmd_warn}.get(site, mmcore.WARN_ON)

    def report_warnings(self, mm) -> None:
        """WARN_ON()'s report: ``mm``'s engine records become KernelWarnings,
        in ``mm.warnings`` and :attr:`warnings`, and are issued with
        :func:`warnings.warn` when the call is complete; a ``WARN_ON_ONCE``
        site reports once per machine."""
        for code, old, new in mm.engine.take_warnings():
            site = _SITE_NAMES[code]
            if self._policy(site) == mmcore.WARN_ON_ONCE:
                if site in self._warned_once:
                    self.suppressed[site] = self.suppressed.get(site, 0) + 1
                    continue
                self._warned_once.add(site)
            s = self.kernel.site(site)
            w = KernelWarning(s.function, s.location,
                              f"{s.message}; old_addr={old:#x} new_addr={new:#x}",
                              kernel=self.kernel.name, site=site, old_addr=old, new_addr=new, pid=mm.pid)
            mm.warnings.append(w)
            self.warnings.append(w)
            mm._warn_queue.append(w)            # the MM issues it when the call is complete

    def __repr__(self) -> str:
        return (f"<pymm.Machine kernel={self.kernel.name} arch={self.arch} thp={self.thp} "
                f"processes={self.processes} warnings={len(self.warnings)}>")


__all__ = ["Machine", "Sysctl", "THP_MODES", "ARCHES", "default_ram",
           "OVERCOMMIT_GUESS", "OVERCOMMIT_ALWAYS", "OVERCOMMIT_NEVER"]
