"""Sweeps beyond one process, through Hydra's own launcher plugins, against real servers the
tests start on 127.0.0.1 (tests/servers.py): joblib + `mlflow server` on PostgreSQL, a Ray
head + `mlflow server` (models found through the server), and submitit's local executor."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose
from mlflow import MlflowClient

from tests import servers
from tests.helpers import QUICK, hydra_config


def _sweep(tmp_path: Path, *overrides: str, env: dict | None = None, timeout=480):
    command = [sys.executable, "-m", "aead.run", "-m", *QUICK, "tracking.log_model=false",
               f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides]  # fmt: skip
    done = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _tags(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def test_launcher_configs_compose():
    """The shipped launcher configs: Ray joins a running cluster without the plugin's object
    store size; Slurm's resources sit in one file to copy and edit."""
    with hydra_config():
        ray = compose("config", ["hydra/launcher=ray"], return_hydra_config=True).hydra.launcher
        slurm = compose(
            "config", ["hydra/launcher=submitit_slurm"], return_hydra_config=True
        ).hydra.launcher
    assert ray._target_.endswith("RayLauncher")
    assert "object_store_memory" in ray.ray.init and ray.ray.init.object_store_memory is None
    assert ray.ray.remote.num_cpus == 1 and ray.ray.remote.max_retries == 0
    assert slurm._target_.endswith("SlurmLauncher")
    assert slurm.partition is None and slurm.cpus_per_task == 2 and slurm.timeout_min == 60
    assert slurm.signal_delay_s == 120  # a field the file leaves out comes from the plugin


def test_a_job_whose_ray_worker_died_is_lost_alone(tmp_path, monkeypatch):
    """What the Ray launcher does with a job whose worker died: its RUNNING run ends KILLED,
    its job record says why, and the sweep's summary lists it with the failed jobs."""
    import mlflow
    from omegaconf import open_dict
    from ray.exceptions import WorkerCrashedError

    from aead import sweeps
    from hydra_plugins.aead_hydra.ray_launcher import lost_job

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    overrides = ["seed=3", f"tracking.uri={uri}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    with hydra_config():
        config = compose("config", overrides, return_hydra_config=True)
    with open_dict(config):
        config.hydra.job.num, config.hydra.overrides.task = 1, ["seed=3"]
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.set_experiment(config.experiment_name).experiment_id
    client = MlflowClient(uri)
    job_run = client.create_run(experiment, tags={"sweep_id": "sweep", "sweep_job": "1"})
    other = client.create_run(experiment, tags={"sweep_id": "sweep", "sweep_job": "0"})
    monkeypatch.chdir(tmp_path)
    callback = sweeps.SweepCallback()
    callback.started = 0.0

    returned = lost_job(config, WorkerCrashedError())

    assert np.isnan(returned.return_value)  # a completed job to Hydra: the sweep goes on
    reason = client.get_run(job_run.info.run_id).data.tags["aead.end_reason"]
    assert reason.startswith("lost: Ray worker died (WorkerCrashedError: The worker died")
    assert client.get_run(job_run.info.run_id).info.status == "KILLED"
    assert client.get_run(other.info.run_id).info.status == "RUNNING"  # another job's run
    record = json.loads((tmp_path / "sweep" / "1" / sweeps.JOB_RECORD).read_text())
    assert record == {"job": 1, "overrides": ["seed=3"], "status": "KILLED", "reason": reason,
                      "run_id": job_run.info.run_id, "time": record["time"]}  # fmt: skip
    client.set_terminated(other.info.run_id)
    callback.on_multirun_end(config)
    assert [(r["job"], r["status"]) for r in sweeps.failed_jobs()] == [(1, "KILLED")]


@pytest.mark.slow
def test_joblib_sweep_against_mlflow_server_on_postgresql(tmp_path):
    """4 jobs (2 models x 2 thresholds), 2 at a time, tracked by `mlflow server` on PostgreSQL
    with proxied artifacts: 4 FINISHED runs, each model trained once, read back over REST."""
    with servers.postgres() as database, servers.mlflow_server(tmp_path, database) as base:
        _sweep(
            tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "loss=bce,mse",
            "threshold=zscore,percentile", "experiment_name=pg", f"cache.dir={tmp_path / 'cache'}",
            env={"MLFLOW_TRACKING_URI": base},
        )  # fmt: skip
        runs = servers.rest_runs(base, "pg")
        assert sorted(r["info"]["status"] for r in runs) == ["FINISHED"] * 4
        sources = sorted(_tags(r)["aead.model_source"] for r in runs)
        assert sources == ["reused", "reused", "trained", "trained"]
        for run in runs:
            run_id = run["info"]["run_id"]
            metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
            assert 0.0 <= metrics["roc_auc"] <= 1.0 and metrics["n_test"] == 400
            history = servers.http_get(
                base, "/api/2.0/mlflow/metrics/get-history", run_id=run_id, metric_key="val_loss"
            )
            steps = [m["step"] for m in json.loads(history)["metrics"]]
            assert steps == [1]  # one epoch
            scores = servers.http_get(base, "/get-artifact", path="scores.csv", run_uuid=run_id)
            assert len(scores.decode().splitlines()) == 1 + 400
        # the trained runs published their models on the server, for workers on other machines
        trained = [r for r in runs if _tags(r)["aead.model_source"] == "trained"]
        for run in trained:
            key = _tags(run)["aead.cache_entry"]
            listing = servers.http_get(
                base, "/api/2.0/mlflow/artifacts/list", run_id=run["info"]["run_id"],
                path=f"aead_cache/{key[:24]}",
            )  # fmt: skip
            assert b"model.keras" in listing and b"meta.json" in listing


@pytest.mark.slow
def test_ray_sweep_finds_the_model_through_the_tracking_server(tmp_path):
    """A local Ray head, 2 jobs (two thresholds of one model) as Ray tasks, each job with a
    local cache of its own, as on two machines: one trains, the other finds its model on the
    server. Then a 2-job sweep mid-training: one job's Ray worker SIGKILLed (its run ends
    KILLED, lost), then the sweep stopped with SIGTERM: no run is left RUNNING."""
    with servers.ray_head(num_cpus=2) as address, servers.mlflow_server(tmp_path) as base:
        env = {"RAY_ADDRESS": address, "MLFLOW_TRACKING_URI": base, **servers.RAY_ENV}
        done = _sweep(
            tmp_path, "hydra/launcher=ray", "threshold=zscore,percentile", "experiment_name=ray",
            f"cache.dir={tmp_path}/cache-${{hydra:job.num}}", env=env,
        )  # fmt: skip
        assert "Connected to Ray cluster" in done.stdout + done.stderr
        client = MlflowClient(base)
        runs = client.search_runs([client.get_experiment_by_name("ray").experiment_id])
        kill_and_stop_ray_sweep(tmp_path, env, client)
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    by_source = {r.data.tags["aead.model_source"]: r for r in runs}
    assert set(by_source) == {"trained", "reused"}
    reused, trained = by_source["reused"], by_source["trained"]
    assert reused.data.tags["aead.model_found_in"] == "tracking server"
    assert reused.data.tags["aead.trained_by_run"] == trained.info.run_id
    assert reused.data.metrics["roc_auc"] == pytest.approx(trained.data.metrics["roc_auc"])
    assert (tmp_path / "cache-0").is_dir() and (tmp_path / "cache-1").is_dir()


def kill_and_stop_ray_sweep(folder: Path, env: dict, client, name: str = "ray-stopped") -> None:
    """A long 2-job Ray sweep (experiment `name`, sweep folder folder/name): once both jobs
    run and job 0 has logged an epoch, job 0's Ray worker is SIGKILLed; once the launcher has
    ended that run, the sweep gets SIGTERM. Asserts that no run is left RUNNING: the killed
    job's run is KILLED as lost, the other's KILLED by the signal, within 10 s. Also run 20
    times under load by scripts/stress_ray_stop.py."""
    command = [
        sys.executable, "-m", "aead.run", "-m", *QUICK, "trainer.epochs=500",
        "trainer.patience=0",  # no early stop: the job still trains when it is killed
        "hydra/launcher=ray", "seed=0,1", f"experiment_name={name}",
        f"hydra.sweep.dir={folder / name}", f"cache.dir={folder / name}-cache",
    ]  # fmt: skip
    log = folder / f"{name}.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            command, cwd=folder, env={**os.environ, **env}, stdout=output, stderr=output
        )

    def runs():
        experiment = client.get_experiment_by_name(name)
        found = client.search_runs([experiment.experiment_id]) if experiment else []
        return {int(r.data.tags["sweep_job"]): r for r in found if "sweep_job" in r.data.tags}

    def wait_for(condition, what, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := condition():
                return found
            time.sleep(0.5)
        raise AssertionError(f"the sweep never got there: {what}\n{log.read_text()[-3000:]}")

    def both_started():
        jobs = runs()
        return jobs if jobs.keys() == {0, 1} and "val_loss" in jobs[0].data.metrics else None

    try:
        killed = wait_for(both_started, "both jobs running, job 0 with an epoch logged")[0]
        os.kill(int(killed.data.tags["aead.pid"]), signal.SIGKILL)  # job 0's Ray worker
        wait_for(lambda: runs()[0].info.status != "RUNNING", "the killed job's run ended", 60)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        elapsed = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    ended = runs()
    killed, stopped = ended.pop(0), list(ended.values())

    # the job whose worker was SIGKILLed: lost, its run ended by the launcher at once
    assert killed.info.status == "KILLED"
    assert killed.data.tags["aead.end_reason"].startswith("lost: Ray worker died (")
    record = json.loads((folder / name / "0" / "aead_job.json").read_text())
    assert (record["status"], record["run_id"]) == ("KILLED", killed.info.run_id)
    assert code == 143 and elapsed < 10, (code, elapsed)
    assert stopped and {r.info.status for r in stopped} == {"KILLED"}
    # Ray cancels the tasks: a KeyboardInterrupt in each job, named with the job's stage; a
    # job that had logged an epoch was stopped in training, at that epoch or a later one
    for run in stopped:
        reason = run.data.tags["aead.end_reason"]
        assert re.fullmatch(r"SIGINT during [a-z -]+(, epoch \d+)?", reason), reason
        epochs = len(client.get_metric_history(run.info.run_id, "val_loss"))
        if epochs:
            epoch = re.fullmatch(r"SIGINT during training, epoch (\d+)", reason)
            assert epoch and int(epoch.group(1)) >= epochs, reason


@pytest.mark.slow
def test_submitit_local_sweep_finishes(tmp_path):
    _sweep(
        tmp_path, "hydra/launcher=submitit_local", "threshold=zscore,percentile",
        f"tracking.uri=sqlite:///{tmp_path / 'mlruns.db'}", f"cache.dir={tmp_path / 'cache'}",
    )  # fmt: skip
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    runs = client.search_runs([client.get_experiment_by_name("aead").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    assert sorted(r.data.tags["aead.model_source"] for r in runs) == ["reused", "trained"]
    # each job ran in a process of submitit's own, logged in the sweep's .submitit folder
    assert list((tmp_path / "sweep" / ".submitit").rglob("*_log.out"))
