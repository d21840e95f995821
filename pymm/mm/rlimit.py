"""Resource limits: kernel/sys.c ``do_prlimit()`` and the checks of mm/mmap.c that read them.

``mm->locked_vm`` is a counter (:func:`account_locked`), ``mm->total_vm`` the
sum of the VMAs.  An MM models an unprivileged process: RLIMIT_MEMLOCK 8 MiB (soft and hard),
RLIMIT_AS unlimited, no CAP_IPC_LOCK or CAP_SYS_RESOURCE unless
``MM(privileged=True)``.

Example (``mm.setrlimit()`` is a thin wrapper around :func:`do_prlimit`)::

    >>> mm = pymm.MM()
    >>> do_prlimit(mm, pymm.RLIMIT_AS, 1 << 20, 1 << 20)
    >>> may_expand_vm(mm, 0, 256), may_expand_vm(mm, 0, 257)
    (True, False)
"""
from __future__ import annotations

from typing import Dict, Tuple

from pymm import constants as C
from pymm.errors import EINVAL, EPERM
from pymm.mm.syscall import _Errno


def default_rlimits() -> Dict[int, Tuple[int, int]]:
    """INIT_RLIMITS as an unprivileged process sees them: (soft, hard) per resource."""
    return {C.RLIMIT_MEMLOCK: (C.MLOCK_LIMIT, C.MLOCK_LIMIT),
            C.RLIMIT_AS: (C.RLIM_INFINITY, C.RLIM_INFINITY)}


def rlimit(mm, resource: int) -> int:
    """rlimit(): the soft limit of ``resource`` in bytes (RLIM_INFINITY: none)."""
    return mm.rlimits[resource][0]


def do_prlimit(mm, resource: int, soft: int, hard: int) -> None:
    """do_prlimit(): soft above hard is EINVAL; raising the hard limit
    needs CAP_SYS_RESOURCE (``privileged``), else EPERM."""
    if soft > hard:
        raise _Errno(EINVAL)
    if hard > mm.rlimits[resource][1] and not mm.privileged:
        raise _Errno(EPERM)
    mm.rlimits[resource] = (soft, hard)


def locked_vm(mm) -> int:
    """mm->locked_vm, in pages.  A counter, as in the kernel, not the sum of
    the VM_LOCKED VMAs: MREMAP_DONTUNMAP adds the moved VMA and never takes
    the source off (dontunmap_complete(): "we won't unmap"), so it drifts up."""
    return mm.locked_vm


def account_locked(mm, vm_flags: int, nbytes: int) -> None:
    """mm->locked_vm += nbytes of a VM_LOCKED VMA (negative: -=)."""
    if vm_flags & C.VM_LOCKED:
        mm.locked_vm += nbytes >> mm.page_shift if nbytes >= 0 else -((-nbytes) >> mm.page_shift)


def total_vm(mm) -> int:
    """mm->total_vm, in pages: every VMA."""
    return sum(v.end - v.start for v in mm._tree) >> mm.page_shift


def can_do_mlock(mm) -> bool:
    """can_do_mlock(): a non-zero RLIMIT_MEMLOCK, or CAP_IPC_LOCK (``privileged``)."""
    return rlimit(mm, C.RLIMIT_MEMLOCK) != 0 or mm.privileged


def may_expand_vm(mm, vm_flags: int, npages: int) -> bool:
    """may_expand_vm() (mm/mmap.c): total_vm + npages within RLIMIT_AS
    (RLIMIT_DATA, unlimited here, is not modelled)."""
    limit = rlimit(mm, C.RLIMIT_AS)
    if limit == C.RLIM_INFINITY:
        return True
    return total_vm(mm) + npages <= limit >> mm.page_shift


def mlock_future_ok(mm, vm_flags: int, nbytes: int) -> bool:
    """mlock_future_ok() (mm/mmap.c; mlock_future_check() before 6.5):
    locking nbytes more stays within RLIMIT_MEMLOCK, or CAP_IPC_LOCK."""
    if not vm_flags & C.VM_LOCKED or mm.privileged:
        return True
    limit = rlimit(mm, C.RLIMIT_MEMLOCK)
    return limit == C.RLIM_INFINITY or \
        (nbytes >> mm.page_shift) + locked_vm(mm) <= limit >> mm.page_shift


def resource_number(resource) -> int:
    """An RLIMIT_* number or name ("AS", "MEMLOCK"), of the two pymm models."""
    if isinstance(resource, str):
        if resource.upper() not in C.RLIMIT_NAMES:
            raise ValueError(f"resource {resource!r}: pymm models {sorted(C.RLIMIT_NAMES)}")
        return C.RLIMIT_NAMES[resource.upper()]
    if type(resource) is not int or resource not in C.RLIMIT_NAMES.values():
        raise ValueError(f"resource {resource!r}: pymm models RLIMIT_AS ({C.RLIMIT_AS}) "
                         f"and RLIMIT_MEMLOCK ({C.RLIMIT_MEMLOCK})")
    return resource
