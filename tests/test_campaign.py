"""Fuzz campaigns on real executors (issue 16): a local process pool, a
distributed.LocalCluster, and a real ``dask scheduler`` with two
``dask worker`` processes started here; a worker killed mid-campaign costs
its tasks only.  Every run searches 5.8+linus-v2 and must find Kirill's bug
(Linus's v2 overcopy) as exactly one finding.  A sweep on the LocalCluster
matches the plain loop cell by cell."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pymm.fuzz import campaign, fuzz, task_seed
from pymm.pool import InProcess
from pymm.sweep import sweep

KERNEL = "5.8+linus-v2"
SMALL = dict(seconds=120, seed=0, tasks=3, task_programs=4000)
SIGNATURE = (KERNEL, "x86_64", ("orphan-pte",))


def one_finding(c, tasks=3):
    assert c.tasks == tasks and c.lost == []
    assert [f.signature for f in c.findings] == [SIGNATURE]
    return c.findings[0]


@pytest.fixture(scope="module")
def serial():
    """The plain loop: the same tasks, one after the other, here."""
    return campaign(KERNEL, executor=InProcess(), **SMALL)


@pytest.fixture(scope="module")
def pool_run():
    return campaign(KERNEL, workers=2, **SMALL)


def test_a_process_pool_campaign_finds_kirills_bug_once(pool_run, serial):
    f, g = one_finding(pool_run), one_finding(serial)
    assert f.seeds == g.seeds and f.programs == len(f.seeds) >= 1    # one bug, one shrunk program a seed
    assert f.hit.program == g.hit.program and pool_run.programs == serial.programs
    assert f.hit.program[-1].name == "mremap" and len(f.hit.program) <= 3
    assert 1 <= len(pool_run.workers) <= 2 and pool_run.reruns == []


def test_a_finding_replays_from_its_seed_on_one_machine(pool_run):
    f = pool_run.findings[0]
    assert f.replay().program == f.hit.program
    empty = [task_seed(0, i) for i in range(3) if task_seed(0, i) not in f.seeds]
    for s in empty[:1]:                  # a task that found nothing finds nothing again
        assert fuzz(KERNEL, seed=s, max_examples=4000, seconds=float("inf")) is None


def test_a_killed_pool_worker_costs_only_its_tasks():
    killed = []

    def kill_one(stats):
        if not killed:
            pid = int(stats["worker"].rsplit(":", 1)[1])
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    c = campaign(KERNEL, workers=2, seconds=120, seed=0, tasks=6, task_programs=2000, progress=kill_one)
    f = one_finding(c, tasks=6)
    assert killed and c.reruns                           # the broken pool's tasks ran again
    assert set(f.seeds) <= set(range(6)) and f.replay_args["seed"] in f.seeds


def test_a_pool_passed_in_that_breaks_reports_its_tasks_lost():
    from concurrent.futures import ProcessPoolExecutor
    killed = []

    def kill_one(stats):
        if not killed:
            killed.append(int(stats["worker"].rsplit(":", 1)[1]))
            os.kill(killed[0], signal.SIGKILL)

    with ProcessPoolExecutor(2) as pool:
        c = campaign("6.18", executor=pool, seconds=120, seed=0, tasks=6, task_programs=500, progress=kill_one)
    assert killed and c.lost and c.tasks + len(c.lost) <= 6          # not ours to restart: reported
    assert all("process pool broke" in why for _, why in c.lost)


def _same_as_pool(c, pool_run):
    f, g = one_finding(c), pool_run.findings[0]
    assert (f.seeds, f.hit.program, f.hit.problems) == (g.seeds, g.hit.program, g.hit.problems)


def test_a_local_dask_cluster_runs_the_same_campaign(pool_run):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        c = campaign(KERNEL, executor=client.get_executor(), **SMALL)
        matrix = dict(kernels=["5.8", "6.18"], arches=["x86_64", "arm64-4k"], sizes=[8 << 20, 1 << 30])
        on_dask = sweep(**matrix, executor=client.get_executor())
    _same_as_pool(c, pool_run)
    here = sweep(**matrix, executor=InProcess())
    assert [{k: v for k, v in r.items() if k != "ns"} for r in on_dask] == \
        [{k: v for k, v in r.items() if k != "ns"} for r in here]


def _start(argv, log):
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(procs):
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.fixture
def dask_cluster(tmp_path):
    """A real ``dask scheduler`` and two ``dask worker`` processes on localhost,
    random ports; yields (address, worker Popens); torn down whatever happens."""
    pytest.importorskip("distributed")
    dask = str(Path(sys.executable).with_name("dask"))
    if not os.path.exists(dask):
        pytest.skip("no dask command next to this Python")
    sched_file = tmp_path / "scheduler.json"
    log = open(tmp_path / "cluster.log", "w")
    procs = [_start([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(sched_file)], log)]
    try:
        deadline = time.monotonic() + 30
        while not sched_file.exists() or not sched_file.read_text().strip():
            assert time.monotonic() < deadline and procs[0].poll() is None, (tmp_path / "cluster.log").read_text()
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        workers = [_start([dask, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                           "--name", f"w{i}"], log) for i in range(2)]
        procs += workers
        yield address, workers
    finally:
        _stop(procs[1:])
        _stop(procs[:1])
        log.close()


def test_a_real_dask_scheduler_and_workers_survive_a_killed_worker(dask_cluster, pool_run, capsys, tmp_path):
    import distributed
    from pymm.cli import main
    address, workers = dask_cluster
    with distributed.Client(address, timeout=30) as client:
        client.wait_for_workers(2, timeout=60)
        c = campaign(KERNEL, executor=client.get_executor(), **SMALL)
        _same_as_pool(c, pool_run)
        assert len(c.workers) >= 1
        assert main(["fuzz", "--kernel", KERNEL, "--scheduler", address, "--max-examples", "8000"]) == 1
        out = capsys.readouterr().out
        assert f"on the Dask cluster at {address} (2 worker threads)" in out
        assert out.count("FOUND: kernel 5.8+linus-v2") == 1 and "found by " in out
        assert main(["sweep", "--kernels", "5.8,6.18", "--cases", "PUD/PUD", "--sizes", "1G", "--thp", "off",
                     "--scheduler", address, "--out", str(tmp_path / "sweep")]) == 0
        out = capsys.readouterr().out
        assert "sweeping 2 cells" in out and f"on the Dask cluster at {address}" in out
        assert next(x for x in out.splitlines() if "PUD/PUD" in x).split()[-2:] == ["PMD", "PUD"]
        assert (tmp_path / "sweep" / "sweep.csv").exists()
        killed = []

        def kill_one(stats):
            if not killed:
                workers[0].kill()
                killed.append(workers[0].pid)

        c = campaign(KERNEL, executor=client.get_executor(), seconds=120, seed=0, tasks=6,
                     task_programs=2000, progress=kill_one)
    f = one_finding(c, tasks=6)
    assert killed and workers[0].wait(10) is not None
    assert set(f.seeds) <= set(range(6))
