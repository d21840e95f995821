"""Constants and small helpers shared by the tests."""
import os

import pytest

import pymm
from pymm import host

RW = pymm.PROT_READ | pymm.PROT_WRITE
PRIV = pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS
SHARED = pymm.MAP_SHARED | pymm.MAP_ANONYMOUS
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
PAGE = 4096


def long_runs() -> bool:
    """True with --long or PYMM_LONG=1: run thousands of examples."""
    return os.environ.get("PYMM_LONG", "") not in ("", "0")


def host_or_skip():
    if not host.available():
        pytest.skip(f"the host-kernel oracle is unavailable here: {host.unavailable_reason()}")


def run_cli(argv, capsys):
    """``pymm ARGV`` in this process: (exit code, stdout, stderr), argparse's
    own SystemExit included."""
    from pymm.cli import main
    try:
        code = main(argv)
    except SystemExit as e:          # argparse's own errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def err(fn, *args):
    """The errno of a call, 0 when it succeeds (pymm and HostMM alike)."""
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    return 0
