"""Populate 1 GiB on a fresh MM (issue 11 item 2: <= 5 ms), as a new user's
first session does it::

    mm = pymm.MM(); a = mm.mmap(0, 1 << 30, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS); mm.memset(a, 1, 1 << 30)

Each round times the whole sequence, MM() included, on a new MM:

* ``pooled``: the engine's arrays come from the process's pool of released
  regions (what every MM after the first gets);
* ``host-fresh``: the pool is held empty, so the arrays are new host memory
  and every huge page of them is a host first-touch (what the first MM of a
  process pays).

Measured on AMD EPYC (family 25), 2 vCPU KVM, Linux 6.18, THP=madvise,
medians of 15 rounds over several runs: pooled 0.6-0.9 ms, host-fresh
2.6-3.4 ms (the first MM of a new process: median 3.3 ms over 7 processes).
Host-fresh depends on the host: each 2 MiB huge page of the arrays is one
host fault (about 0.2 ms here, up to 3 ms when the VM's own memory is cold),
and without THP (MADV_HUGEPAGE ignored) the same 6 MiB cost 1,536 faults,
about 7 ms; pooled rounds do not fault at all.
"""
import pytest

import mmcore
import pymm
from pymm import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE

GiB = 1 << 30


def first_session():
    mm = pymm.MM()
    a = mm.mmap(0, GiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    mm.memset(a, 1, GiB)
    return mm


@pytest.mark.benchmark(group="populate 1 GiB on a fresh MM")
def test_fresh_mm_populate_pooled(benchmark):
    first_session()                  # fills the pool once
    mm = benchmark.pedantic(first_session, rounds=15, warmup_rounds=1)
    assert mm.engine.rss() == (GiB >> 12, 0)


@pytest.mark.benchmark(group="populate 1 GiB on a fresh MM")
def test_fresh_mm_populate_host_fresh(benchmark):
    held = []

    def setup():
        held.clear()
        # engines alive take every pooled region: the MM under test maps new ones
        held.extend(mmcore.Engine(mmcore.X86_64) for _ in range(3))
        return (), {}

    mm = benchmark.pedantic(first_session, setup=setup, rounds=15)
    assert mm.engine.rss() == (GiB >> 12, 0)
