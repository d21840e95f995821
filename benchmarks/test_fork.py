"""fork() of 1 GiB of written private anonymous memory (issue 13 item 2):
pymm's ``mm.fork()`` against the kernel's fork() of the same address space
(``HostMM.fork()``, which also pays a helper round trip and two FIFOs).

Measured on AMD EPYC (family 25), 2 vCPU KVM, Linux 6.18, THP=madvise,
medians over runs on a busy shared VM: 4K pages pymm 0.7-1.5 ms / kernel
27-126 ms; THP pymm 0.12 ms / kernel 1.9-6.6 ms.  Then a write to all of
it in the child (copy-on-write of every page) costs pymm about 3 ms.
"""
import pytest

import pymm
from pymm import host
from pymm import constants as C

GiB = 1 << 30
BASE = host.DEFAULT_WINDOW[0] + GiB


def populated(p, thp):
    a = p.mmap(BASE, GiB, C.PROT_READ | C.PROT_WRITE, C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED)
    p.madvise(a, GiB, C.MADV_HUGEPAGE if thp else C.MADV_NOHUGEPAGE)
    p.madvise(a, GiB, C.MADV_POPULATE_WRITE)
    return p


@pytest.mark.parametrize("thp", [False, True], ids=["4K", "THP"])
def test_pymm_fork_1g(benchmark, thp):
    benchmark.group = f"fork 1 GiB ({'THP' if thp else '4K'})"

    def setup():
        return (populated(pymm.MM(window=host.DEFAULT_WINDOW), thp),), {}

    def run(mm):
        assert mm.fork().rss == GiB
    benchmark.pedantic(run, setup=setup, rounds=9)


@pytest.mark.parametrize("thp", [False, True], ids=["4K", "THP"])
def test_host_fork_1g(benchmark, thp):
    if not host.available():
        pytest.skip(f"host kernel oracle unavailable: {host.unavailable_reason()}")
    benchmark.group = f"fork 1 GiB ({'THP' if thp else '4K'})"
    parents = []

    def setup():
        parents.append(populated(host.HostMM(), thp))
        return (parents[-1],), {}

    def run(h):
        h.fork().close()
    try:
        benchmark.pedantic(run, setup=setup, rounds=5)
    finally:
        for h in parents:
            h.close()
