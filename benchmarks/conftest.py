"""pytest-benchmark suites.  Run: pytest benchmarks --benchmark-only

Moves change state, so every measurement uses benchmark.pedantic() with a
fresh setup per round.  Group names make --benchmark-group-by=group tables
readable.  The normal test run (pytest, testpaths=tests) never collects these.
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
