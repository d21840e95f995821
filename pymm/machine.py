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

from typing import Dict, List, Optional, Set

import mmcore
from pymm import constants as C
from pymm.arches import ARCHES, Arch, get_arch, kernel_version
from pymm.errors import KernelWarning
from pymm.kernels import Kernel, get_kernel

THP_MODES = ("always", "madvise", "never")
_SITE_NAMES = {v: k for k, v in mmcore.WARN_SITES.items()}


class Machine:
    """One boot: kernel, arch, THP setting, sysctls and the warnings.

    ``kernel``: a name from :data:`pymm.KERNELS`, ``"module:attr"`` or a
    :class:`pymm.Kernel`; ``arch``: a name from :data:`pymm.ARCHES`;
    ``thp``: ``"always"``, ``"madvise"`` or ``"never"``;
    ``max_map_count`` (vm.max_map_count) and ``commit_limit`` (bytes, the
    overcommit limit; ``None``: no limit) apply to every process.

    Example::

        >>> m = pymm.Machine(kernel="5.8", arch="x86_64", thp="never")
        >>> mm = m.spawn()
        >>> mm.machine is m, mm.kernel.name, mm.thp, m.processes
        (True, '5.8', 'never', 1)
    """

    # The class of the processes spawn() starts: pymm.mm.mm_struct sets it to
    # MM (it imports this module, so this module cannot import it).
    process_type = None

    def __init__(self, kernel="6.18", arch="x86_64", thp: str = "madvise", *,
                 max_map_count: int = C.DEFAULT_MAX_MAP_COUNT, commit_limit: Optional[int] = None):
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
        if isinstance(max_map_count, bool) or not isinstance(max_map_count, int):
            raise TypeError("max_map_count must be an int")
        if max_map_count < 1:
            raise ValueError("max_map_count must be >= 1")
        self.max_map_count = max_map_count
        if commit_limit is not None and (isinstance(commit_limit, bool) or not isinstance(commit_limit, int)
                                         or commit_limit < 0):
            raise ValueError("commit_limit must be None or a byte count >= 0")
        self.commit_limit = commit_limit
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
        """
        for k in ("kernel", "arch", "thp", "max_map_count", "commit_limit", "machine"):
            if k in process:
                raise TypeError(f"spawn() takes no {k!r}: it is the machine's")
        return self.process_type(self.kernel, self.arch, check, self.thp, machine=self,
                                 max_map_count=self.max_map_count, commit_limit=self.commit_limit,
                                 **process)

    def _attach(self, mm) -> int:
        """A new process: its pid (1, 2, ... in spawn order)."""
        self.processes += 1
        return self.processes

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


__all__ = ["Machine", "THP_MODES", "ARCHES"]
