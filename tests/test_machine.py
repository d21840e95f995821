"""pymm.Machine: one boot, many processes; WARN_ON_ONCE fires once per boot (issue 13, item 1)."""
import errno
import warnings

import pytest

import pymm
from pymm import constants as C
from pymm.scenarios import I386_STACK_TOP, MiB, naresh_runs

PMD = 2 * MiB


def _naresh_exec(m: pymm.Machine) -> pymm.MM:
    """One of Naresh's execs that hit the warning: 9 MiB of arguments, the
    stack shifted down by a PMD multiple, so old and new ranges overlap."""
    mm = m.spawn()
    start = mm.setup_exec_stack(arg_bytes=9 * MiB, top=I386_STACK_TOP)
    mm.shift_arg_pages(start, PMD)
    return mm


@pytest.mark.parametrize("kernel", ["5.8", "5.9"])
def test_100_execs_on_one_machine_print_5_8_warning_every_time_5_9_once(kernel):
    # the catalogue: 5.8 (v5.8-rc5) has WARN_ON(!pmd_none(*new_pmd)); 5.9 has
    # f81fdd0c4ab7's WARN_ON_ONCE
    assert pymm.KERNELS["5.8"].pmd_warn == pymm.kernels.WARN_ON
    assert pymm.KERNELS["5.9"].pmd_warn == pymm.kernels.WARN_ON_ONCE
    m = pymm.Machine(kernel=kernel)
    with warnings.catch_warnings(record=True) as issued:
        warnings.simplefilter("always")
        mms = [_naresh_exec(m) for _ in range(100)]
    issued = [w for w in issued if issubclass(w.category, pymm.KernelWarning)]
    assert all(mm.stats["warnings"] >= 1 for mm in mms)          # every exec hit the condition
    if kernel == "5.8":                                            # WARN_ON: every exec prints
        assert all(len(mm.warnings) == mm.stats["warnings"] for mm in mms)
        assert len(m.warnings) == len(issued) == sum(mm.stats["warnings"] for mm in mms) >= 100
        assert m.suppressed == {}
    else:                                                          # WARN_ON_ONCE: the first exec
        assert len(m.warnings) == len(issued) == 1 and mms[0].warnings == m.warnings
        assert not any(mm.warnings for mm in mms[1:])
        assert m.suppressed == {"pmd_not_none": 99}
    assert {w.site for w in m.warnings} == {"pmd_not_none"}
    assert m.warnings == [w for mm in mms for w in mm.warnings]    # the boot's log, in order


def test_separate_machines_each_print_their_once_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = _naresh_exec(pymm.Machine(kernel="5.9")), _naresh_exec(pymm.Machine(kernel="5.9"))
    assert len(a.warnings) == len(b.warnings) == 1
    assert a.machine is not b.machine


def test_a_plain_MM_is_a_machine_with_one_process():
    mm = pymm.MM(kernel="5.8", thp="never", max_map_count=100, commit_limit=1 << 30)
    m = mm.machine
    assert isinstance(m, pymm.Machine) and m.processes == 1 and mm.pid == 1
    assert (m.kernel.name, m.arch, m.thp, m.max_map_count, m.commit_limit) == \
        ("5.8", "x86_64", "never", 100, 1 << 30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = mm.setup_exec_stack(arg_bytes=3 * MiB, top=I386_STACK_TOP)
        mm.shift_arg_pages(start, PMD)
    assert m.warnings == mm.warnings and len(m.warnings) == mm.stats["warnings"] >= 1


def test_spawn_gives_processes_the_machines_settings():
    m = pymm.Machine(kernel="5.11", arch="x86_64-la57", thp="always", max_map_count=7, commit_limit=4096)
    a, b = m.spawn(), m.spawn(check=True)
    for mm in (a, b):
        assert mm.machine is m and mm.kernel is m.kernel and mm.arch == "x86_64-la57"
        assert mm.thp == "always" and mm.max_map_count == 7 and mm.commit_limit == 4096
    assert (a.pid, b.pid, m.processes) == (1, 2, 2)
    assert b.check_enabled and not a.check_enabled
    assert a.engine is b.engine and a._ctx != b._ctx        # one memory, two address spaces (pgds)
    a.mmap(1 << 32, 4096, C.PROT_READ | C.PROT_WRITE, C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED)
    assert a.map_count == 1 and b.map_count == 0
    # the sysctl is the machine's: vm.max_map_count = 7 limits each process
    for i in range(7):                                     # do_mmap: map_count > max fails
        a.mmap((1 << 32) + (i + 1) * 8192, 4096, C.PROT_READ, C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED)
    with pytest.raises(OSError):
        a.mmap((1 << 33), 4096, C.PROT_READ, C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED)


@pytest.mark.parametrize("bad,err", [
    (dict(kernel="9.9"), ValueError), (dict(arch="sparc"), ValueError), (dict(thp="sometimes"), ValueError),
    (dict(max_map_count=0), ValueError), (dict(max_map_count="7"), TypeError),
    (dict(commit_limit=-1), ValueError)])
def test_machine_validates_its_settings(bad, err):
    with pytest.raises(err):
        pymm.Machine(**bad)


def test_spawn_refuses_the_machines_settings_and_MM_refuses_a_mismatch():
    m = pymm.Machine(kernel="5.8")
    with pytest.raises(TypeError, match="machine's"):
        m.spawn(kernel="6.18")
    with pytest.raises(ValueError, match="spawn"):
        pymm.MM(machine=m)                                 # kernel 6.18 (the default) != 5.8
    assert pymm.MM(kernel="5.8", machine=m).machine is m
    with pytest.raises(TypeError):
        pymm.MM(machine="5.8")


@pytest.mark.parametrize("kernel", ["5.8", "5.9"])
def test_naresh_runs_uses_one_machine(kernel):
    loop = naresh_runs(kernel, execs=1200, seed=1)
    assert loop.hits >= 2                                  # about 1 in 512
    assert loop.printed >= loop.hits if kernel == "5.8" else loop.printed == 1


def test_the_boot_log_names_the_process_that_warned():
    m = pymm.Machine(kernel="5.8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _naresh_exec(m), _naresh_exec(m)
    assert {w.pid for w in m.warnings} == {1, 2}
    assert str(m.warnings[-1]).startswith("WARNING: CPU: 0 PID: 2 at mm/mremap.c:211")
    import pickle
    assert pickle.loads(pickle.dumps(m.warnings[-1])).pid == 2


def test_spawned_processes_share_the_machines_ram():
    """One boot, one physical memory: two spawned processes together cannot
    use more than the machine's ram (each alone could)."""
    m = pymm.Machine(ram=256 << 20)
    a, b = m.spawn(), m.spawn()
    assert a.engine is b.engine
    length = 200 << 20
    x = a.mmap(0, length, 3, 0x22)
    a.memset(x, 1, length)
    y = b.mmap(0, length, 3, 0x22)
    with pytest.raises(pymm.OutOfMemory):
        b.memset(y, 2, length)
    assert b.dead and not a.dead
    assert a.read(x + length - 1, 1) == b"\x01" and pymm.check(a) == []
    with pytest.raises(OSError) as e:          # not even a pgd left for a third process
        m.spawn()
    assert e.value.errno == errno.ENOMEM


def test_spawned_processes_have_their_own_address_spaces():
    m = pymm.Machine()
    a, b = m.spawn(), m.spawn()
    x = a.mmap(1 << 30, 4096, 3, 0x32)
    b.mmap(1 << 30, 4096, 3, 0x32)
    a.write(x, b"aaaa")
    b.write(x, b"bbbb")
    assert a.read(x, 4) == b"aaaa" and b.read(x, 4) == b"bbbb"
    assert a.status()["RssAnon"] == b.status()["RssAnon"] == 4
    assert pymm.check(a) == [] and pymm.check(b) == []
    del b
    assert a.read(x, 4) == b"aaaa"       # the other's exit leaves this one alone
