"""Issue #15 items 8-9: HostMM stays in its window and survives a hostile caller."""
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

import pymm
from pymm import host
from tests.helpers import host_or_skip

RW = pymm.PROT_READ | pymm.PROT_WRITE
ANON = pymm.MAP_ANONYMOUS
MAP_DROPPABLE = 0x08
MREMAP_DONTUNMAP = 4
LO, HI = host.DEFAULT_WINDOW


@pytest.fixture
def h():
    host_or_skip()
    hm = host.HostMM()
    yield hm
    hm.close()


def _all_inside(hm):
    """Every mapping the helper has outside its own start-up set lies in the window."""
    return all(LO <= v.start and v.end <= HI for v in hm.maps())


def _below_stack(hm):
    """An address 32 MiB below the helper's stack (left unfenced before)."""
    with open(f"/proc/{hm._proc.pid}/maps") as f:
        stack = next(int(line.split("-")[0], 16) for line in f if "[stack]" in line)
    return (stack - (32 << 20)) & ~0xFFFFF


def test_droppable_over_the_helpers_data_is_refused(h):
    with pytest.raises(ValueError, match="flags"):
        h.mmap(0x4a6000, 4096, RW, MAP_DROPPABLE | ANON | pymm.MAP_FIXED)
    with pytest.raises(ValueError, match="flags"):
        h.mmap(0, 4096, RW, pymm.MAP_PRIVATE | ANON | 0x40)          # MAP_32BIT


def test_fixed_noreplace_outside_the_window_is_refused(h):
    below_stack = _below_stack(h)
    with pytest.raises(ValueError, match="window"):
        h.mmap(below_stack, 4096, RW, pymm.MAP_PRIVATE | ANON | pymm.MAP_FIXED_NOREPLACE)


@pytest.mark.parametrize("hint", ["below-stack", 0x7ffff0000000, 0x500000, 0x10000, HI])
def test_hints_outside_the_window_land_inside(h, hint):
    hint = _below_stack(h) if hint == "below-stack" else hint
    a = h.mmap(hint, 1 << 20, RW, pymm.MAP_PRIVATE | ANON)
    assert LO <= a and a + (1 << 20) <= HI


def test_dontunmap_hint_outside_the_window_lands_inside(h):
    a = h.mmap(0, 1 << 20, RW, pymm.MAP_PRIVATE | ANON)
    h.write(a, b"x")
    b = h.mremap(a, 1 << 20, 1 << 20, pymm.MREMAP_MAYMOVE | MREMAP_DONTUNMAP, _below_stack(h))
    assert LO <= b < HI and h.read(b, 1) == b"x"


def test_window_over_the_helpers_image_is_refused():
    host_or_skip()
    with pytest.raises(RuntimeError, match="overlaps the helper's own mappings"):
        host.HostMM(window=(0x400000, 0x10000000))


def test_threads_on_one_hostmm_get_their_own_answers(h):
    bases = [LO + (i + 1) * (1 << 32) for i in range(4)]
    errors = []

    def work(base):
        try:
            for n in range(40):
                a = h.mmap(base, 1 << 16, RW, pymm.MAP_PRIVATE | ANON | pymm.MAP_FIXED)
                if a != base:
                    errors.append(f"mmap({base:#x}) answered {a:#x}")
                h.write(a, base.to_bytes(8, "little"))
                if h.read(a, 8) != base.to_bytes(8, "little"):
                    errors.append(f"read at {base:#x} got another thread's data")
                h.munmap(a, 1 << 16)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    ts = [threading.Thread(target=work, args=(b,)) for b in bases]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert errors == []


def test_interrupted_call_does_not_desync_the_next(h, monkeypatch):
    """A KeyboardInterrupt between request and reply: the next call must not
    get the old answer; the HostMM refuses further use instead."""
    real = h._read

    def interrupted(n):
        raise KeyboardInterrupt

    monkeypatch.setattr(h, "_read", interrupted)
    with pytest.raises(KeyboardInterrupt):
        h.mmap(LO, 4096, RW, pymm.MAP_PRIVATE | ANON | pymm.MAP_FIXED)
    monkeypatch.setattr(h, "_read", real)
    with pytest.raises(RuntimeError, match="interrupted"):
        h.mmap(LO + (1 << 30), 4096, RW, pymm.MAP_PRIVATE | ANON | pymm.MAP_FIXED)


def test_format_maps_is_not_cut_at_a_buffer(h):
    """30,000 VMAs: well past the helper's 1 MiB buffer."""
    a = h.mmap(LO, 60000 * 4096, RW, pymm.MAP_PRIVATE | ANON | pymm.MAP_FIXED)
    for i in range(0, 60000, 2):
        h.mprotect(a + i * 4096, 4096, pymm.PROT_READ)
    text = h.format_maps()
    assert len(text) > 1 << 20
    assert len(h.maps()) == 60000 and text.endswith("\n")


def test_pagemap_has_a_size_cap(h):
    with pytest.raises(ValueError, match="at most"):
        h.pagemap(LO, 1 << 45)


def test_close_after_the_child_died_reaps_it():
    host_or_skip()
    hm = host.HostMM()
    pid = hm._proc.pid
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match="died"):
        hm.mmap(0, 4096, RW, pymm.MAP_PRIVATE | ANON)
    hm.close()                                          # no BrokenPipeError
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)                     # reaped: no zombie


def test_a_stopped_child_times_out():
    host_or_skip()
    hm = host.HostMM(timeout=0.5)
    os.kill(hm._proc.pid, signal.SIGSTOP)
    with pytest.raises(RuntimeError, match="did not answer"):
        hm.mmap(0, 4096, RW, pymm.MAP_PRIVATE | ANON)
    hm.close()
    assert hm._proc is None


def _fresh_build(tmp_path, env_extra):
    """Build the helper in a fresh cache folder in a child Python."""
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), **env_extra)
    code = textwrap.dedent("""
        from pymm import host
        try:
            print("built", host.helper_path())
        except RuntimeError as e:
            print("error", e)
    """)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300).stdout


@pytest.mark.skipif(sys.platform != "linux", reason="the host helper is Linux only")
def test_compiler_failure_says_something(tmp_path):
    out = _fresh_build(tmp_path, {"CC": "/bin/false"})
    assert out.startswith("error") and "exit status 1" in out and "/bin/false" in out


@pytest.mark.skipif(sys.platform != "linux" or not os.path.isdir("/dev/shm"),
                    reason="needs Linux and /dev/shm")
def test_build_across_filesystems(tmp_path):
    """$TMPDIR on another filesystem (tmpfs) than the cache: no EXDEV."""
    out = _fresh_build(tmp_path, {"TMPDIR": "/dev/shm"})
    assert out.startswith("built"), out


@pytest.mark.skipif(sys.platform != "linux", reason="Linux only")
def test_address_space_rlimit_gives_a_visible_reason():
    """Under RLIMIT_AS the fences cannot be mapped: the reason says so."""
    host_or_skip()
    code = textwrap.dedent("""
        import resource
        from pymm import host
        host.helper_path()
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
        print(host.available(), host.unavailable_reason())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120).stdout
    assert out.startswith("False") and "fence" in out, out
