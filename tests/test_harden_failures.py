"""Issue #15 item 4: a failing mmap(MAP_FIXED) keeps what Linux 6.18 keeps; failures are OSErrors."""
import errno

import pytest

import pymm

RW = pymm.PROT_READ | pymm.PROT_WRITE
ANON = pymm.MAP_ANONYMOUS
SHARED_FIXED = pymm.MAP_SHARED | ANON | pymm.MAP_FIXED
MAP_NORESERVE = 0x4000
A = 1 << 40


def _precious(mm):
    a = mm.mmap(A, 1 << 21, RW, pymm.MAP_PRIVATE | ANON | pymm.MAP_FIXED)
    mm.write(a, b"precious")
    return a


def test_huge_shared_noreserve_fixed_never_loses_the_old_mapping():
    """The issue's 32 TiB MAP_SHARED|ANON|FIXED|NORESERVE: the host accepts
    it, and so does pymm (the object's pages are stored sparsely)."""
    mm = pymm.MM(check=True)
    a = _precious(mm)
    assert mm.mmap(A, 1 << 45, RW, SHARED_FIXED | MAP_NORESERVE) == A
    assert mm.maps()[0].end == A + (1 << 45)
    assert mm.read(a, 8) == b"\0" * 8


def test_shared_charge_refused_leaves_a_gap_as_the_host_does():
    """Without NORESERVE shmem_acct_size() charges the whole object; refused,
    6.18 fails with ENOMEM after the PTEs were cleared: the old mapping is
    gone (the host: 32 TiB without NORESERVE -> ENOMEM, nothing left)."""
    mm = pymm.MM(check=True, commit_limit=1 << 30)
    _precious(mm)
    with pytest.raises(OSError) as e:
        mm.mmap(A, 2 << 30, RW, SHARED_FIXED)
    assert e.value.errno == errno.ENOMEM
    assert mm.maps() == []
    assert pymm.check(mm) == []


def test_shared_noreserve_is_not_charged():
    mm = pymm.MM(check=True, commit_limit=1 << 30)
    _precious(mm)
    assert mm.mmap(A, 2 << 30, RW, SHARED_FIXED | MAP_NORESERVE) == A


def test_private_charge_refused_keeps_the_old_mapping():
    """__mmap_prepare()'s charge fails before vms_clean_up_area(): reattached."""
    mm = pymm.MM(check=True, commit_limit=1 << 30)
    a = _precious(mm)
    with pytest.raises(OSError) as e:
        mm.mmap(A, 2 << 30, RW, pymm.MAP_PRIVATE | ANON | pymm.MAP_FIXED)
    assert e.value.errno == errno.ENOMEM
    assert mm.read(a, 8) == b"precious"


def test_storage_failure_is_enomem_and_changes_nothing():
    """pymm's own storage refusing an object (8 PiB on la57 is past the core's
    limit) is ENOMEM with the old mapping intact, checked by check=True."""
    mm = pymm.MM(arch="x86_64-la57", check=True)
    a = _precious(mm)
    with pytest.raises(OSError) as e:
        mm.mmap(A, 1 << 53, RW, SHARED_FIXED | MAP_NORESERVE)
    assert e.value.errno == errno.ENOMEM
    assert mm.read(a, 8) == b"precious"


def test_check_true_catches_a_non_errno_failure_that_changed_state(monkeypatch):
    """check=True verifies every failed call, not only errno failures."""
    import pymm.mm.mmap as mmap_mod
    mm = pymm.MM(check=True)
    _precious(mm)

    def broken_link(mm_, vma):
        raise RuntimeError("boom")           # after the old range was unmapped

    monkeypatch.setattr(mmap_mod, "vma_link", broken_link)
    with pytest.raises(pymm.InvariantError, match="RuntimeError"):
        mm.mmap(A, 4 << 20, RW, SHARED_FIXED)


def _host_commit_limit():
    """What the heuristic overcommit lets one allocation have: RAM + swap."""
    info = dict(line.split(":", 1) for line in open("/proc/meminfo"))
    return (int(info["MemTotal"].split()[0]) + int(info["SwapTotal"].split()[0])) * 1024


@pytest.mark.parametrize("noreserve", [False, True])
def test_huge_shared_fixed_matches_the_host(noreserve):
    """The host oracle: 32 TiB MAP_SHARED|ANON|FIXED over a mapping.  Without
    NORESERVE: ENOMEM and the old mapping gone (both); with it both map it."""
    from pymm import host
    from tests.helpers import host_or_skip
    host_or_skip()
    window = (0x100000000000, 0x300000000000)
    flags = SHARED_FIXED | (MAP_NORESERVE if noreserve else 0)
    results = []
    with host.HostMM(window=window) as h:
        for target in (h, pymm.MM(window=window, commit_limit=_host_commit_limit(), check=True)):
            lo = window[0]
            target.mmap(lo, 1 << 21, RW, pymm.MAP_PRIVATE | ANON | pymm.MAP_FIXED)
            target.write(lo, b"precious")
            try:
                target.mmap(lo, 1 << 45, RW, flags)
                outcome = "mapped"
            except OSError as e:
                outcome = errno.errorcode[e.errno]
            results.append((outcome, [(v.start, v.end) for v in target.maps()]))
    host_result, pymm_result = results
    if noreserve:
        assert host_result == ("mapped", [(window[0], window[0] + (1 << 45))])
        assert pymm_result == host_result
    else:
        assert host_result == ("ENOMEM", [])
        assert pymm_result == host_result
