"""Issue #15 (leftover): the simulated machine's overcommit policy.  By
default vm.overcommit_memory = 0, as on Linux: one charge larger than the
machine's RAM + swap (pymm has no swap) fails with ENOMEM.  Sysctls changed
on a Machine reach its running processes (issue #13)."""
import errno

import pytest

import pymm

RW = pymm.PROT_READ | pymm.PROT_WRITE
PRIV = pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS
SHARED = pymm.MAP_SHARED | pymm.MAP_ANONYMOUS
FIXED = pymm.MAP_FIXED
NORESERVE = 0x4000
MiB, GiB, TiB = 1 << 20, 1 << 30, 1 << 40
A = 1 << 40


def _enomem(fn, *args):
    with pytest.raises(OSError) as e:
        fn(*args)
    assert e.value.errno == errno.ENOMEM


def test_default_policy_is_the_heuristic_against_the_machines_ram():
    m = pymm.Machine(ram=1 * GiB)
    assert (m.overcommit_memory, m.overcommit_ratio, m.overcommit_kbytes, m.commit_limit) == (0, 50, 0, None)
    mm = m.spawn()
    _enomem(mm.mmap, A, GiB + 4096, RW, PRIV | FIXED)           # more than RAM + swap
    _enomem(mm.mmap, A, GiB + 4096, RW, SHARED | FIXED)         # the shmem object's charge too
    assert mm.maps() == []
    assert mm.mmap(A, GiB, RW, PRIV | FIXED) == A               # exactly RAM: allowed
    assert mm.mmap(A + TiB, GiB, RW, PRIV | FIXED) == A + TiB   # each charge alone: no total
    assert mm.mmap(A + 2 * TiB, 32 * TiB, RW, PRIV | FIXED | NORESERVE) == A + 2 * TiB
    assert mm.mmap(A + 40 * TiB, 32 * TiB, pymm.PROT_READ, PRIV | FIXED) == A + 40 * TiB  # not charged
    assert mm.mmap(A + 80 * TiB, 32 * TiB, RW, SHARED | FIXED | NORESERVE) == A + 80 * TiB


def test_a_plain_MM_uses_its_ram():
    mm = pymm.MM(ram=256 * MiB)
    assert mm.machine.ram == mm.ram == 256 * MiB
    _enomem(mm.mmap, A, 256 * MiB + 4096, RW, PRIV | FIXED)
    with pytest.raises(ValueError, match="machine's"):
        pymm.MM(machine=mm.machine, ram=512 * MiB)
    with pytest.raises(TypeError, match="machine's"):
        mm.machine.spawn(ram=512 * MiB)


def test_map_fixed_over_charged_memory_charges_only_the_difference():
    """__mmap_prepare(): charged = pglen - vms->nr_accounted."""
    mm = pymm.MM(ram=1 * GiB)
    mm.mmap(A, 512 * MiB, RW, PRIV | FIXED)
    assert mm.mmap(A, GiB + 256 * MiB, RW, PRIV | FIXED) == A   # 768 MiB new: allowed
    _enomem(mm.mmap, A + 2 * GiB, GiB + 256 * MiB, RW, PRIV | FIXED)


def test_always_overcommit():
    m = pymm.Machine(ram=1 * GiB, overcommit_memory=pymm.machine.OVERCOMMIT_ALWAYS)
    mm = m.spawn()
    assert mm.mmap(A, 32 * TiB, RW, PRIV | FIXED) == A
    assert mm.mmap(A + 32 * TiB, 32 * TiB, RW, SHARED | FIXED) == A + 32 * TiB


def test_strict_overcommit_counts_the_machines_commitments():
    """Mode 2: Committed_AS (every process's charges) stays below CommitLimit
    = RAM * 50% less the root reserve (8 MiB) and the user reserve
    (min(total_vm / 32, 32 MiB) on a 1 GiB machine)."""
    m = pymm.Machine(ram=1 * GiB, overcommit_memory=2)
    a, b = m.spawn(), m.spawn()
    assert m.meminfo() == {"MemTotal": 1 << 20, "SwapTotal": 0, "CommitLimit": 512 << 10, "Committed_AS": 0}
    assert a.mmap(A, 400 * MiB, RW, PRIV | FIXED) == A
    assert b.mmap(A, 60 * MiB, RW, SHARED | FIXED) == A           # a shmem object: charged in full
    assert m.meminfo()["Committed_AS"] == 460 << 10
    _enomem(a.mmap, A + GiB, 50 * MiB, RW, PRIV | FIXED)          # 510 >= 504 - 12.5
    assert a.mmap(A + GiB, 30 * MiB, RW, PRIV | FIXED) == A + GiB  # 490 < 491.5
    assert a.mmap(A + 2 * GiB, 1 * TiB, pymm.PROT_READ, PRIV | FIXED)   # read-only: no charge
    assert a.mmap(A + 4 * TiB, 1 * TiB, RW, PRIV | FIXED | NORESERVE)  # NORESERVE: no charge
    b.munmap(A, 60 * MiB)                                          # the object goes: uncharged
    assert m.meminfo()["Committed_AS"] == 430 << 10
    m.commit_limit = 4 * GiB                                       # overrides CommitLimit
    assert m.meminfo()["CommitLimit"] == 4 << 20
    assert b.mmap(A, 2 * GiB, RW, PRIV | FIXED) == A


def test_strict_overcommit_root_may_use_the_admin_reserve():
    m = pymm.Machine(ram=1 * GiB, overcommit_memory=2)
    user, root = m.spawn(), m.spawn(privileged=True)
    _enomem(user.mmap, A, 506 * MiB, RW, PRIV | FIXED)             # 506 >= 512 - 8
    assert root.mmap(A, 506 * MiB, RW, PRIV | FIXED) == A         # 506 < 512


def test_sysctl_changes_reach_running_processes():
    """Issue #13: vm.* written on the machine apply to the processes already
    running, as ``sysctl -w`` does, not only to processes spawned later."""
    m = pymm.Machine(ram=1 * GiB)
    mm = m.spawn()
    _enomem(mm.mmap, A, 2 * GiB, RW, PRIV | FIXED)
    m.overcommit_memory = 1
    assert mm.mmap(A, 2 * GiB, RW, PRIV | FIXED) == A
    m.overcommit_memory = 2
    _enomem(mm.mmap, A + TiB, 4096, RW, PRIV | FIXED)              # 2 GiB already committed
    m.max_map_count = 2
    assert mm.max_map_count == 2
    mm.mmap(A + 2 * TiB, 4096, pymm.PROT_READ, PRIV | FIXED)
    mm.mmap(A + 3 * TiB, 4096, pymm.PROT_READ, PRIV | FIXED)
    _enomem(mm.mmap, A + 4 * TiB, 4096, pymm.PROT_READ, PRIV | FIXED)   # map_count 3 > 2
    m.max_map_count = 100
    assert mm.mmap(A + 4 * TiB, 4096, pymm.PROT_READ, PRIV | FIXED) == A + 4 * TiB


@pytest.mark.parametrize("name,value,err", [
    ("overcommit_memory", 3, ValueError), ("overcommit_memory", "1", TypeError),
    ("overcommit_ratio", -1, ValueError), ("max_map_count", 0, ValueError),
    ("commit_limit", 1.5, TypeError), ("overcommit_kbytes", True, TypeError)])
def test_sysctls_are_checked_when_written(name, value, err):
    m = pymm.Machine()
    before = getattr(m, name)
    with pytest.raises(err, match=name):
        setattr(m, name, value)
    assert getattr(m, name) == before
    with pytest.raises(err, match=name):
        pymm.Machine(**{name: value})


def _host_heuristic_memtotal() -> int:
    """The host's MemTotal in bytes, for the boundary tests against it; they
    skip unless the host runs overcommit mode 0 without swap (what pymm models)."""
    from tests.helpers import host_or_skip
    host_or_skip()
    with open("/proc/sys/vm/overcommit_memory") as f:
        if f.read().strip() != "0":
            pytest.skip("the host does not run the heuristic overcommit (vm.overcommit_memory != 0)")
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    if int(info["SwapTotal"].split()[0]):
        pytest.skip("the host has swap; pymm models none")
    return int(info["MemTotal"].split()[0]) * 1024


def test_heuristic_boundary_matches_the_host():
    """The host oracle (vm.overcommit_memory = 0): a private writable or a
    shared mapping of exactly MemTotal + SwapTotal maps, one page more is
    ENOMEM; pymm on a machine of that RAM (no swap) answers the same."""
    from pymm import host
    limit = _host_heuristic_memtotal()
    lo = pymm.HOST_WINDOW[0]
    results = []
    with host.HostMM() as h:
        for target in (h, pymm.MM(window=h.window, ram=limit)):
            out = []
            for flags in (PRIV, SHARED):
                for length in (limit, limit + 4096):
                    try:
                        target.munmap(target.mmap(lo, length, RW, flags | FIXED), length)
                        out.append("mapped")
                    except OSError as e:
                        out.append(errno.errorcode[e.errno])
            results.append(out)
    assert results[0] == ["mapped", "ENOMEM"] * 2
    assert results[1] == results[0]


def test_mremap_growth_is_charged():
    """vrm_calc_charge(): growing an accounted mapping charges the growth
    (in place or moved); MREMAP_DONTUNMAP charges the whole new copy."""
    mm = pymm.MM(ram=1 * GiB)
    a = mm.mmap(A, 512 * MiB, RW, PRIV | FIXED)
    _enomem(mm.mremap, a, 512 * MiB, 2 * GiB, 0)                        # in place: 1.5 GiB more
    _enomem(mm.mremap, a, 512 * MiB, 2 * GiB, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED, A + TiB)
    assert mm.mremap(a, 512 * MiB, 1 * GiB, 0) == a                     # 512 MiB more: allowed
    mm.machine.overcommit_memory = 2                                    # 1 GiB committed, limit 512 MiB
    _enomem(mm.mremap, a, 1 * GiB, 1 * GiB, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED | 4, A + TiB)
    r = mm.mmap(A + 2 * TiB, 4096, pymm.PROT_READ, PRIV | FIXED)        # not accounted: no charge
    assert mm.mremap(r, 4096, 1 * GiB, 0) == r


def test_mremap_growth_boundary_matches_the_host():
    """The host (mode 0): growing a private writable mapping by more than
    MemTotal is ENOMEM, by a page less than that it grows."""
    from pymm import host
    limit = _host_heuristic_memtotal()
    lo = pymm.HOST_WINDOW[0]
    results = []
    with host.HostMM() as h:
        for target in (h, pymm.MM(window=h.window, ram=limit)):
            out = []
            for grow in (limit, limit + 4096):
                a = target.mmap(lo, 1 << 20, RW, PRIV | FIXED)
                try:
                    target.mremap(a, 1 << 20, (1 << 20) + grow, 0)
                    out.append("grown")
                except OSError as e:
                    out.append(errno.errorcode[e.errno])
                target.munmap(lo, (1 << 20) + grow)
            results.append(out)
    assert results[0] == ["grown", "ENOMEM"]
    assert results[1] == results[0]


def test_mprotect_to_writable_is_charged():
    """mprotect_fixup(): private memory turning writable is charged then."""
    mm = pymm.MM(ram=1 * GiB)
    a = mm.mmap(A, 2 * GiB, pymm.PROT_READ, PRIV | FIXED)
    _enomem(mm.mprotect, a, 2 * GiB, RW)
    assert mm.maps()[0].prot == pymm.PROT_READ                          # unchanged
    mm.mprotect(a, 1 * GiB, RW)                                         # 1 GiB: allowed
    mm.mprotect(a, 1 * GiB, pymm.PROT_READ)
    mm.mprotect(a, 1 * GiB, RW)                                         # still VM_ACCOUNT: no charge
    b = mm.mmap(A + TiB, 2 * GiB, pymm.PROT_READ, PRIV | FIXED | NORESERVE)
    mm.mprotect(b, 2 * GiB, RW)                                         # NORESERVE: never charged


def test_stack_growth_is_charged():
    """acct_stack_growth()'s last test: under strict overcommit a stack
    cannot grow past CommitLimit (the access is a SIGSEGV)."""
    m = pymm.Machine(ram=1 * GiB, overcommit_memory=2)
    mm = m.spawn(rlimit_stack=1 * GiB)
    top = A + GiB
    s = mm.mmap(top - 64 * 1024, 64 * 1024, RW, PRIV | FIXED | pymm.MAP_GROWSDOWN)
    mm.write(s - 4096, b"grown")                                        # within the limit: grows
    assert mm.maps()[0].start == s - 4096
    mm.mmap(A + TiB, 490 * MiB, RW, PRIV | FIXED)                        # the rest of CommitLimit
    with pytest.raises(pymm.SegmentationFault):
        mm.write(s - 64 * MiB, b"x")


def test_mprotect_boundary_matches_the_host():
    """The host (mode 0): PROT_READ private memory of MemTotal + a page
    cannot turn writable; of MemTotal it can."""
    from pymm import host
    limit = _host_heuristic_memtotal()
    lo = pymm.HOST_WINDOW[0]
    results = []
    with host.HostMM() as h:
        for target in (h, pymm.MM(window=h.window, ram=limit)):
            out = []
            for length in (limit, limit + 4096):
                a = target.mmap(lo, length, pymm.PROT_READ, PRIV | FIXED)
                try:
                    target.mprotect(a, length, RW)
                    out.append("writable")
                except OSError as e:
                    out.append(errno.errorcode[e.errno])
                target.munmap(a, length)
            results.append(out)
    assert results[0] == ["writable", "ENOMEM"]
    assert results[1] == results[0]
