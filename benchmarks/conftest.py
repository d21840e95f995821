"""pytest-benchmark suites.  Run: pytest benchmarks --benchmark-only

Moves change state, so every measurement uses benchmark.pedantic() with a
fresh setup per round.  Group names make --benchmark-group-by=group tables
readable.  The normal test run (pytest, testpaths=tests) never collects these.

A setup must drop the previous round's MM itself before building the next
(hold it in a list the setup clears): pedantic() releases the previous
round's arguments when the new ones arrive, right before the timing, and an
engine's release (the pool's memset, MADV_DONTNEED of the rest) just before
a microsecond call slows it: a PUD move measured 16 us that way against 7 us.
"""
import pytest

from pymm import host


@pytest.fixture(scope="session")
def hostmm():
    if not host.available():
        pytest.skip(f"host kernel oracle unavailable: {host.unavailable_reason()}")
    h = host.HostMM()
    yield h
    h.close()
