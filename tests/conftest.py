"""Shared fixtures: pymm and the real kernel behind one interface."""
import os

import pytest

import pymm
from pymm import host

from helpers import host_or_skip


def pytest_addoption(parser):
    parser.addoption("--long", action="store_true", default=False,
                     help="run the long property/differential runs (thousands of examples)")


def pytest_configure(config):
    if config.getoption("--long", default=False):
        os.environ["PYMM_LONG"] = "1"


@pytest.fixture(params=["pymm", "host"])
def target(request):
    """An address space: pymm.MM (checked after every call) or the real kernel,
    both confined to the same window so their address choices agree."""
    if request.param == "host":
        host_or_skip()
        h = host.HostMM()
        yield h
        h.close()
    else:
        yield pymm.MM(window=host.DEFAULT_WINDOW, check=True)


@pytest.fixture
def mm():
    return pymm.MM(check=True)


def pytest_terminal_summary(terminalreporter):
    """How much the differential run compared (for the closing notes)."""
    import sys
    diff = sys.modules.get("test_differential")
    if diff is not None and diff.STATS["steps"]:
        s = diff.STATS
        terminalreporter.write_line(f"differential: {s['sequences']} sequences, {s['steps']} steps, "
                                    f"{s['pages_compared']} page contents compared")
    fork = sys.modules.get("test_fork_differential")
    if fork is not None and fork.STATS["steps"]:
        s = fork.STATS
        terminalreporter.write_line(f"fork differential: {s['sequences']} sequences, {s['forks']} forks, "
                                    f"{s['steps']} steps, {s['pages_compared']} page contents compared")
