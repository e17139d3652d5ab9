"""No run is left RUNNING by a dead process: heartbeats, lost runs ended KILLED (by the next
run of the experiment, the sweep's end, the command), a killed holder's training lock taken
over. Real stores, real SIGKILLs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from aead.store import shared as shared_models
from aead.tracking import heartbeat
from aead.tracking.runs import Tracker
from tests import servers
from tests.helpers import QUICK, REPO

KEY = "cd" * 32


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    return uri, client, client.create_experiment("jobs")


def _run_with_beat(client, experiment, beat: float | None, interval: float = 1.0) -> str:
    run = client.create_run(experiment).info.run_id
    if beat is not None:
        client.set_tag(run, heartbeat.INTERVAL_TAG, str(interval))
        client.set_tag(run, heartbeat.HEARTBEAT_TAG, f"{beat:.3f}")
    return run


def test_a_run_whose_heartbeat_stopped_is_ended_killed_and_others_are_left(store):
    uri, client, experiment = store
    now = time.time()
    lost = _run_with_beat(client, experiment, now - 3.5)  # 3.5 intervals of silence
    alive = _run_with_beat(client, experiment, now - 2.5)  # within 3 intervals
    old = _run_with_beat(client, experiment, None)  # made before heartbeats: never judged
    done = _run_with_beat(client, experiment, now - 100)
    client.set_terminated(done, "FINISHED")

    assert heartbeat.end_lost_runs(uri, [experiment], now=now) == [lost]
    ended = client.get_run(lost)
    assert ended.info.status == "KILLED"
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now - 3.5))
    assert ended.data.tags["aead.end_reason"] == f"lost: no heartbeat since {since}"
    status = {r: client.get_run(r).info.status for r in (alive, old, done)}
    assert status == {alive: "RUNNING", old: "RUNNING", done: "FINISHED"}


def test_a_run_beats_while_it_works_and_its_start_ends_the_lost_runs(store):
    uri, client, experiment = store
    lost = _run_with_beat(client, experiment, time.time() - 60)
    with Tracker(uri, "jobs", "working", heartbeat_s=0.2) as tracker:
        first = float(client.get_run(tracker.run_id).data.tags[heartbeat.HEARTBEAT_TAG])
        time.sleep(0.7)
        later = float(client.get_run(tracker.run_id).data.tags[heartbeat.HEARTBEAT_TAG])
        assert later > first  # renewed by the thread while the run works
        assert client.get_run(lost).info.status == "KILLED"  # ended when this run began
    assert client.get_run(tracker.run_id).info.status == "FINISHED"


def _wait_for(predicate, seconds: float, what: str, *jobs: subprocess.Popen):
    """Poll until predicate holds; a job that dies first fails at once, with its log."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        for job in jobs:
            if job.poll() is not None:
                pytest.fail(f"{job.log.name} exited {job.returncode} before {what}:\n{_tail(job)}")
        time.sleep(1.0)  # gently: the jobs write to the same SQLite file
    pytest.fail(f"timed out waiting for {what}:\n" + "\n".join(_tail(job) for job in jobs))


def _tail(job: subprocess.Popen, lines: int = 40) -> str:
    return "\n".join(open(job.log.name).read().splitlines()[-lines:])


def _job(tmp_path, name: str, env: dict, *overrides: str) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "aead.run", *QUICK, "model=dense", "trainer.epochs=500",
        "trainer.patience=0",  # no early stop: a loaded machine must not see the model finish
        "tracking.log_model=false", "tracking.heartbeat_s=1", f"hydra.run.dir={tmp_path / name}",
        *overrides,
    ]  # fmt: skip
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
    job = subprocess.Popen(
        command, cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
    )
    job.log = log
    return job


def _training_run(client, experiment_name: str, pid: int):
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    for run in client.search_runs([experiment.experiment_id]):
        if run.data.tags.get("aead.pid") == str(pid) and "val_loss" in run.data.metrics:
            return run
    return None


@pytest.mark.slow
def test_a_sigkilled_job_is_ended_by_the_command(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(uri)
    client.search_experiments()  # the store's tables made now, not by two processes at once
    job = _job(tmp_path, "job", {"MLFLOW_TRACKING_URI": uri}, f"cache.dir={tmp_path / 'cache'}")
    try:
        run = _wait_for(lambda: _training_run(client, "aead", job.pid), 180, "an epoch", job)
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=30)
    assert client.get_run(run.info.run_id).info.status == "RUNNING"  # the lie a kill leaves
    time.sleep(heartbeat.MISSED * 1.0 + 1)
    done = subprocess.run(
        [sys.executable, "-m", "aead.tracking.heartbeat", "--tracking-uri", uri,
         "--experiment", "aead"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"[aead] 1 lost run(s) ended KILLED in {uri}" in done.stdout
    ended = client.get_run(run.info.run_id)
    assert ended.info.status == "KILLED"
    assert ended.data.tags["aead.end_reason"].startswith("lost: no heartbeat since ")


@pytest.mark.slow
def test_a_sigkilled_lock_holder_is_taken_over_within_the_lease(tmp_path):
    with servers.mlflow_server(tmp_path) as base:
        env = {"MLFLOW_TRACKING_URI": base}
        shared = ["cache.shared=true", "experiment_name=lease"]
        holder = _job(tmp_path, "holder", env, *shared, f"cache.dir={tmp_path / 'cache-a'}")
        client = MlflowClient(base)
        try:
            held = _wait_for(
                lambda: _training_run(client, "lease", holder.pid), 180, "training", holder
            )
            waiter = _job(tmp_path, "waiter", env, *shared, f"cache.dir={tmp_path / 'cache-b'}")
            try:
                _wait_for(
                    lambda: "waiting for run" in (tmp_path / "waiter.log").read_text(),
                    120, "the second job to wait for the lock", waiter,
                )  # fmt: skip
                holder.send_signal(signal.SIGKILL)
                holder.wait(timeout=30)
                killed_at = time.monotonic()
                _wait_for(
                    lambda: "[aead] training " in (tmp_path / "waiter.log").read_text(),
                    120, "the take-over", waiter,
                )  # fmt: skip
                waited = time.monotonic() - killed_at
                # then it trains: an epoch logged (its first epoch traces the model: 2-4 s
                # alone, 25 s once beside the suite's heaviest tests, so not timed)
                took_over = _wait_for(
                    lambda: _training_run(client, "lease", waiter.pid), 120, "an epoch", waiter
                )
            finally:
                waiter.send_signal(signal.SIGTERM)
                waiter.wait(timeout=60)
        finally:
            if holder.poll() is None:
                holder.kill()
        # the lease: 3 missed 1-second heartbeats, the waiter's next 3-second poll, and room
        # for a loaded machine (4.6 s in a CI run on 2 busy cores)
        assert waited < heartbeat.MISSED * 1.0 + 3 + 10, waited
        log = (tmp_path / "waiter.log").read_text()
        assert f"waiting for run {held.info.run_id}" in log
        locks = [e for e in client.search_experiments(view_type=ViewType.ALL)
                 if e.name.startswith(shared_models.LOCK_PREFIX)]  # fmt: skip
        owners = {e.name.rsplit("-", 1)[1]: e.tags.get(shared_models.LOCK_OWNER_TAG) for e in locks}
        assert owners == {"0": held.info.run_id, "1": took_over.info.run_id}  # the next attempt
        # the waiter, stopped by SIGTERM, ended KILLED; the dead holder is lost: the command
        # (or the next run of the experiment) ends it
        assert client.get_run(took_over.info.run_id).info.status == "KILLED"
        assert client.get_run(held.info.run_id).info.status == "RUNNING"
        assert heartbeat.end_lost_runs(base) == [held.info.run_id]
        reason = client.get_run(held.info.run_id).data.tags["aead.end_reason"]
        assert reason.startswith("lost: no heartbeat since ")
