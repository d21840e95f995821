"""pymm fuzz --workers / --scheduler (issue 16, item 2): the output and exit
codes of pymm fuzz, reproducers written by the client, one line for every
wrong input or missing Dask."""
import sys

import pytest

from tests.helpers import run_cli as run




def test_fuzz_on_two_workers_finds_the_bug_and_saves_reproducers(tmp_path, capsys):
    prefix = tmp_path / "repro" / "hit"
    code, out, err = run(["fuzz", "--kernel", "5.8+linus-v2", "--workers", "2", "--max-examples", "8000",
                          "--save", str(prefix)], capsys)
    assert code == 1 and "Traceback" not in err
    assert "2 tasks of 4000 programs on 2 local worker processes" in out
    assert out.count("FOUND: kernel 5.8+linus-v2: 2-call program") == 1
    assert "found by " in out and "replay: pymm.fuzz.fuzz('5.8+linus-v2', seed=" in out
    assert "# --- reproducer: Python" in out and "int main(void)" in out
    assert prefix.with_suffix(".py").read_text().startswith("import pymm")
    assert "mremap(" in prefix.with_suffix(".c").read_text()


def test_fuzz_on_workers_finding_nothing_exits_0(capsys):
    code, out, err = run(["fuzz", "--kernel", "6.18", "--workers", "1", "--max-examples", "300"], capsys)
    assert code == 0 and err == ""
    assert "no invariant violation or warning found under 6.18: 300 programs run" in out


def test_scheduler_without_dask_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)      # as if Dask were not installed
    code, out, err = run(["fuzz", "--scheduler", "tcp://127.0.0.1:8786"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and 'pip install "pymm[dask]"' in err


@pytest.mark.parametrize("argv,words", [
    (["--scheduler", "nonsense"], "not a Dask scheduler address"),
    (["--scheduler", "tcp://127.0.0.1:1"], "no Dask scheduler at 'tcp://127.0.0.1:1'"),
    (["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], "give one"),
    (["--workers", "0"], "at least 1"),
    (["--workers", "-2"], "at least 1"),
    (["--workers", "two"], "not a whole number"),
])
def test_wrong_scale_out_options_are_one_line(argv, words, capsys):
    pytest.importorskip("distributed")
    code, out, err = run(["fuzz", *argv], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert words in err.strip().splitlines()[-1]


def test_ctrl_c_ends_a_campaign_with_one_line_and_status_130():
    import os
    import signal
    import subprocess
    import time
    p = subprocess.Popen([sys.executable, "-m", "pymm", "fuzz", "--kernel", "6.18", "--workers", "2",
                          "--seconds", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        assert p.stdout.readline().startswith("fuzzing kernel 6.18")
        time.sleep(1.5)
        os.killpg(p.pid, signal.SIGINT)          # as a terminal's Ctrl-C: the client and its workers
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130 and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("interrupted after ")


@pytest.mark.parametrize("greeting", [None, b"HTTP/1.1 426 Upgrade Required\r\n\r\n"])
def test_a_service_that_is_not_dask_is_one_line_not_a_hang(greeting, capsys):
    """Another service on the port (Dask's dashboard on 8787, a web server):
    silent until asked, or talking HTTP at once.  Once seen: a 90 s hang, and
    a traceback from msgpack asking for 3 EiB."""
    import socket
    import threading
    pytest.importorskip("distributed")
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    conns = []

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            conns.append(c)
            if greeting:
                c.sendall(greeting)

    threading.Thread(target=serve, daemon=True).start()
    try:
        code, out, err = run(["fuzz", "--scheduler", f"tcp://127.0.0.1:{port}", "--seconds", "1"], capsys)
    finally:
        srv.close()
        for c in conns:
            c.close()
    assert code == 2 and out == "" and "Traceback" not in err
    assert "not as a Dask scheduler" in err.strip().splitlines()[-1]
