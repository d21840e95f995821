"""Issue 12: mlock/munlock/mseal/setrlimit/getrlimit, and item 6, the limits
of the mremap flow.

On 6.18 (this machine's kernel) every case runs on pymm and on the host
(HostMM is an unprivileged process: RLIMIT_MEMLOCK 8 MiB, no CAP_IPC_LOCK).
Where the catalogue's older kernels differ, the expected errno comes from
that release's mm/mremap.c, cited at the test.
"""
import errno

import numpy as np
import pytest

import pymm
from pymm import host

from helpers import err, host_or_skip

P = 4096
M = 1 << 20
RW = pymm.PROT_READ | pymm.PROT_WRITE
ANON = pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS
SHARED = pymm.MAP_SHARED | pymm.MAP_ANONYMOUS
MAYMOVE, FIXED, DONTUNMAP = pymm.MREMAP_MAYMOVE, pymm.MREMAP_FIXED, pymm.MREMAP_DONTUNMAP



def both():
    """A pymm MM and a HostMM placing mappings in the same window."""
    host_or_skip()
    h = host.HostMM()
    return pymm.MM(window=h.window, check=True), h


def smaps_flags(h):
    """(start, VmFlags) of each VMA of the host helper, from /proc/PID/smaps."""
    out, start = [], None
    with open(f"/proc/{h._proc.pid}/smaps") as f:
        for line in f:
            if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
                start = int(line.split("-")[0], 16)
            elif line.startswith("VmFlags:"):
                out.append((start, line.split()[1:]))
    return out


def locked(mm, addr, length):
    """Which VMAs starting in [addr, addr+length) are VM_LOCKED (smaps' "lo" on the host)."""
    if isinstance(mm, pymm.MM):
        return [bool(v.vm_flags & pymm.VM_LOCKED) for v in mm.maps() if addr <= v.start < addr + length]
    return ["lo" in fl for start, fl in smaps_flags(mm) if addr <= start < addr + length]


def present(mm, addr, length):
    return ((mm.pagemap(addr, length) >> np.uint64(63)) != 0).tolist()


def vm_size(target):
    """VmSize in bytes: pymm's status(), the host helper's /proc/PID/status."""
    if isinstance(target, pymm.MM):
        return target.status()["VmSize"] << 10
    with open(f"/proc/{target._proc.pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmSize")) << 10


# ---------------------------------------------------------------- the API
def test_rlimit_defaults_and_names():
    mm = pymm.MM()
    assert mm.getrlimit(pymm.RLIMIT_MEMLOCK) == (8 * M, 8 * M) == mm.getrlimit("MEMLOCK")
    assert mm.getrlimit("AS") == (pymm.RLIM_INFINITY,) * 2
    assert (pymm.RLIMIT_AS, pymm.RLIMIT_MEMLOCK) == (9, 8)
    mm.setrlimit("MEMLOCK", (P, 2 * P))
    assert mm.getrlimit(pymm.RLIMIT_MEMLOCK) == (P, 2 * P)
    assert err(mm.setrlimit, "MEMLOCK", 3 * P) == errno.EPERM        # raising the hard limit
    assert err(mm.setrlimit, "MEMLOCK", (2 * P, P)) == errno.EINVAL  # soft above hard
    with pytest.raises(ValueError):
        mm.setrlimit("STACK", 1)
    pymm.MM(privileged=True).setrlimit("MEMLOCK", 1 << 40)           # CAP_SYS_RESOURCE


def test_mlock_munlock_split_merge_and_populate():
    mm = pymm.MM(check=True)
    a = mm.mmap(0, 4 * P, RW, ANON)
    mm.mlock(a + P + 5, P)                          # rounds out to two whole pages
    assert locked(mm, a, 4 * P) == [False, True, False]
    assert present(mm, a, 4 * P) == [False, True, True, False]
    assert mm.status()["VmLck"] == 8
    mm.munlock(a, 4 * P)
    assert len(mm.maps()) == 1 and mm.status()["VmLck"] == 0
    assert present(mm, a, 4 * P) == [False, True, True, False]      # munlock keeps the pages


def test_mlock_onfault_does_not_populate():
    mm = pymm.MM(check=True)
    a = mm.mmap(0, 4 * P, RW, ANON)
    mm.mlock(a, 4 * P, pymm.MLOCK_ONFAULT)
    assert mm.maps()[0].vm_flags & pymm.VM_LOCKONFAULT and present(mm, a, 4 * P) == [False] * 4
    assert err(mm.mlock, a, P, 2) == errno.EINVAL


def test_mseal_is_enosys_before_6_10():
    # mm/mseal.c came with 8be7258aad44 (v6.10); 6.7's syscall table has no mseal
    mm = pymm.MM("6.7")
    a = mm.mmap(0, P, RW, ANON)
    assert err(mm.mseal, a, P) == errno.ENOSYS
    assert not pymm.KERNELS["6.7"].mseal and pymm.KERNELS["6.18"].mseal


CASES = {
    # name: (setup, call) -> the errno of call on a fresh mapping
    "mlock over RLIMIT_MEMLOCK": lambda mm, a: mm.mlock(mm.mmap(0, 9 * M, RW, ANON), 9 * M),
    "MAP_LOCKED over RLIMIT_MEMLOCK": lambda mm, a: mm.mmap(0, 9 * M, RW, ANON | pymm.MAP_LOCKED),
    "mlock PROT_NONE": lambda mm, a: (mm.mprotect(a, P, pymm.PROT_NONE), mm.mlock(a, P)),
    "mlock with a hole": lambda mm, a: (mm.munmap(a + P, P), mm.mlock(a, 3 * P)),
    "mlock under RLIMIT_MEMLOCK 0": lambda mm, a: (mm.setrlimit("MEMLOCK", 0), mm.mlock(a, P)),
    "mseal with flags": lambda mm, a: mm.mseal(a, P, 1),
    "mseal over a hole": lambda mm, a: (mm.munmap(a + P, P), mm.mseal(a, 3 * P)),
    "munmap sealed": lambda mm, a: (mm.mseal(a + P, P), mm.munmap(a, 3 * P)),
    "mprotect sealed": lambda mm, a: (mm.mseal(a, P), mm.mprotect(a, P, pymm.PROT_READ)),
    "mprotect sealed, same prot": lambda mm, a: (mm.mseal(a, P), mm.mprotect(a, P, RW)),
    "MAP_FIXED over sealed": lambda mm, a: (mm.mseal(a, P), mm.mmap(a, P, RW, ANON | pymm.MAP_FIXED)),
    "mremap sealed": lambda mm, a: (mm.mseal(a, P), mm.mremap(a, P, P, MAYMOVE | FIXED, a - 64 * M)),
    "mremap onto sealed": lambda mm, a: (mm.mseal(a + 2 * P, P), mm.mremap(a, P, P, MAYMOVE | FIXED, a + 2 * P)),
    "DONTNEED sealed rw": lambda mm, a: (mm.mseal(a, P), mm.madvise(a, P, pymm.MADV_DONTNEED)),
    "DONTNEED sealed ro": lambda mm, a: (mm.mprotect(a, P, pymm.PROT_READ), mm.mseal(a, P),
                                         mm.madvise(a, P, pymm.MADV_DONTNEED)),
    "WILLNEED sealed ro": lambda mm, a: (mm.mprotect(a, P, pymm.PROT_READ), mm.mseal(a, P),
                                         mm.madvise(a, P, pymm.MADV_WILLNEED)),
    # item 6: mremap growth limits
    "grow locked beyond RLIMIT_MEMLOCK": lambda mm, a: (mm.mlock(a, P), mm.mremap(a, P, 9 * M, MAYMOVE)),
    "grow locked FIXED beyond": lambda mm, a: (mm.mlock(a, P), mm.mremap(a, P, 9 * M, MAYMOVE | FIXED, a - 64 * M)),
    "grow locked within": lambda mm, a: (mm.mlock(a, P), mm.mremap(a, P, 2 * M, MAYMOVE)),
}
EXPECTED = {
    "mlock over RLIMIT_MEMLOCK": errno.ENOMEM, "MAP_LOCKED over RLIMIT_MEMLOCK": errno.EAGAIN,
    "mlock PROT_NONE": errno.ENOMEM, "mlock with a hole": errno.ENOMEM,
    "mlock under RLIMIT_MEMLOCK 0": errno.EPERM, "mseal with flags": errno.EINVAL,
    "mseal over a hole": errno.ENOMEM, "munmap sealed": errno.EPERM, "mprotect sealed": errno.EPERM,
    "mprotect sealed, same prot": errno.EPERM, "MAP_FIXED over sealed": errno.EPERM,
    "mremap sealed": errno.EPERM, "mremap onto sealed": errno.EPERM, "DONTNEED sealed rw": 0,
    "DONTNEED sealed ro": errno.EPERM, "WILLNEED sealed ro": 0,
    "grow locked beyond RLIMIT_MEMLOCK": errno.EAGAIN, "grow locked FIXED beyond": errno.EAGAIN,
    "grow locked within": 0,
}


def run_case(mm, name):
    a = mm.mmap(0, 3 * P, RW, ANON)
    mm.memset(a, 7, 3 * P)
    e = err(CASES[name], mm, a)
    return e, mm.format_maps()


@pytest.mark.parametrize("name", list(CASES))
def test_limits_and_seals_on_pymm(name):
    assert run_case(pymm.MM(check=True), name)[0] == EXPECTED[name]


@pytest.mark.parametrize("name", list(CASES))
def test_limits_and_seals_match_the_host(name):
    m, h = both()
    with h:
        assert run_case(m, name) == run_case(h, name)


def hole_case(mm):
    a = mm.mmap(0, 3 * P, RW, ANON)
    mm.munmap(a + 2 * P, P)
    return err(mm.mlock, a, 3 * P), locked(mm, a, 3 * P), present(mm, a, 2 * P)


def test_mlock_before_a_hole_stays_locked_unpopulated():
    # apply_vma_lock_flags() returns -ENOMEM at the hole, after locking what came
    # before, and do_mlock() returns before __mm_populate()
    assert hole_case(pymm.MM(check=True)) == (errno.ENOMEM, [True], [False, False])


def test_mlock_before_a_hole_matches_the_host():
    m, h = both()
    with h:
        assert hole_case(m) == hole_case(h)


# ---------------------------------------------------------------- item 6: RLIMIT_AS, commit, DONTEXPAND
def as_cases(mm):
    """RLIMIT_AS at VmSize + 8 pages: what fits and what does not."""
    mm.setrlimit("AS", (vm_size(mm) + 8 * P, pymm.RLIM_INFINITY))
    a = mm.mmap(0, 8 * P, RW, ANON)
    out = [err(mm.mmap, 0, P, RW, ANON),                            # mmap_region(): may_expand_vm
           err(mm.mremap, a, 4 * P, 8 * P, MAYMOVE),                # growth: may_expand_vm(delta)
           err(mm.mremap, a, 4 * P, 4 * P, MAYMOVE | DONTUNMAP),    # DONTUNMAP: may_expand_vm(old_len)
           err(mm.mmap, a, 8 * P, RW, ANON | pymm.MAP_FIXED)]       # replacing: no growth
    mm.munmap(a + 4 * P, 4 * P)
    out.append(err(mm.mremap, a, 4 * P, 4 * P, MAYMOVE | DONTUNMAP))
    return out


def test_rlimit_as_on_pymm():
    assert as_cases(pymm.MM(check=True)) == [errno.ENOMEM, errno.ENOMEM, errno.ENOMEM, 0, 0]


def test_rlimit_as_matches_the_host():
    m, h = both()
    with h:
        assert as_cases(m) == as_cases(h)


def test_rlimit_as_stops_stack_growth():
    mm = pymm.MM(check=True)
    s = mm.mmap(0, 16 * P, RW, ANON | pymm.MAP_GROWSDOWN)
    mm.setrlimit("AS", vm_size(mm) + P)
    mm.write(s - P, b"x")                                          # one page more: fits
    with pytest.raises(pymm.SegmentationFault):
        mm.write(s - 2 * P, b"x")                                  # acct_stack_growth()


@pytest.mark.parametrize("kernel", ["4.19", "5.8", "6.18"])
def test_commit_limit_on_growth(kernel):
    # vrm_calc_charge() (6.x); vma_to_resize()'s security_vm_enough_memory_mm(charged) and
    # move_vma()'s DONTUNMAP charge of new_len (5.7+) before: every catalogued kernel
    mm = pymm.MM(kernel, check=True, commit_limit=4 * M)
    a = mm.mmap(0, 2 * M, RW, ANON)
    assert err(mm.mremap, a, 2 * M, 7 * M, MAYMOVE) == errno.ENOMEM     # charges 5 MiB
    assert err(mm.mremap, a, 2 * M, 6 * M, MAYMOVE) == 0                # charges 4 MiB
    b = mm.mmap(0, 5 * M, RW, ANON | pymm.MAP_NORESERVE)                # not accounted
    assert err(mm.mremap, b, 5 * M, 12 * M, MAYMOVE) == 0


def test_commit_limit_dontunmap_charges_new_len():
    mm = pymm.MM(check=True, commit_limit=4 * M)
    a = mm.mmap(0, 4 * M, RW, ANON)
    assert err(mm.mremap, a, 4 * M, 4 * M, MAYMOVE | DONTUNMAP) == 0
    mm2 = pymm.MM(check=True, commit_limit=3 * M)
    b = mm2.mmap(0, 3 * M, RW, ANON)
    mm2.commit_limit = 2 * M                                        # as if memory went away
    assert err(mm2.mremap, b, 3 * M, 3 * M, MAYMOVE | DONTUNMAP) == errno.ENOMEM


def test_dontexpand_refuses_growth_and_dontunmap():
    # remap_is_valid(): VM_DONTEXPAND growth is EFAULT, DONTUNMAP EINVAL (5.13+).  No
    # anonymous mapping carries the flag; a driver's would: set it by hand.
    mm = pymm.MM()
    a = mm.mmap(0, 2 * P, RW, ANON)
    mm._tree.lookup(a).vm_flags |= pymm.VM_DONTEXPAND
    assert err(mm.mremap, a, P, 4 * P, MAYMOVE) == errno.EFAULT
    assert err(mm.mremap, a, P, P, MAYMOVE | DONTUNMAP) == errno.EINVAL
    assert err(mm.mremap, a, 2 * P, P) == 0                         # shrinking is fine


@pytest.mark.parametrize("kernel,shared_errno,flag_errno", [
    ("4.19", errno.EINVAL, errno.EINVAL),   # no MREMAP_DONTUNMAP: an unknown flag
    ("5.8", errno.EINVAL, 0),               # e346b3813067 (5.7): private anonymous only
    ("5.11", errno.EINVAL, 0),
    ("6.7", 0, 0),                          # a4609387859f (5.13): any but DONTEXPAND/PFNMAP
    ("6.18", 0, 0),
])
def test_dontunmap_per_kernel(kernel, shared_errno, flag_errno):
    mm = pymm.MM(kernel, check=True)
    s = mm.mmap(0, P, RW, SHARED)
    a = mm.mmap(0, P, RW, ANON)
    assert err(mm.mremap, s, P, P, MAYMOVE | DONTUNMAP) == shared_errno
    assert err(mm.mremap, a, P, P, MAYMOVE | DONTUNMAP) == flag_errno


def test_shared_dontunmap_matches_the_host():
    m, h = both()
    with h:
        res = []
        for mm in (m, h):
            s = mm.mmap(0, P, RW, SHARED)
            mm.write(s, b"shared")
            n = mm.mremap(s, P, P, MAYMOVE | DONTUNMAP)
            res.append((mm.read(n, 6), mm.read(s, 6)))
        assert res[0] == res[1] == (b"shared", b"shared")


def dontunmap_locked(mm):
    """MREMAP_DONTUNMAP of a 4 MiB locked VMA: locked_vm counts it twice
    (dontunmap_complete(): "we won't unmap we don't need to touch locked_vm"),
    so a 2 MiB MAP_LOCKED then exceeds the 8 MiB RLIMIT_MEMLOCK."""
    a = mm.mmap(0, 4 * M, RW, ANON | pymm.MAP_LOCKED)
    mm.mremap(a, 4 * M, 4 * M, MAYMOVE | DONTUNMAP)
    first = vm_lck(mm)
    return first, err(mm.mmap, 0, 2 * M, RW, ANON | pymm.MAP_LOCKED), vm_lck(mm)


def vm_lck(target):
    if isinstance(target, pymm.MM):
        return target.status()["VmLck"]
    with open(f"/proc/{target._proc.pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmLck"))


def test_locked_vm_drifts_after_dontunmap():
    assert dontunmap_locked(pymm.MM(check=True)) == (8192, errno.EAGAIN, 8192)


def test_locked_vm_drift_matches_the_host():
    # found by the long differential run
    m, h = both()
    with h:
        assert dontunmap_locked(m) == dontunmap_locked(h)
