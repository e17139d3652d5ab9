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


@pytest.mark.slow
def test_joblib_sweep_against_mlflow_server_on_postgresql(tmp_path):
    """4 jobs (2 models x 2 thresholds) in parallel, tracked by `mlflow server` on PostgreSQL
    with proxied artifacts: 4 FINISHED runs, each model trained once, read back over REST."""
    with servers.postgres() as database, servers.mlflow_server(tmp_path, database) as base:
        _sweep(
            tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "loss=bce,mse",
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
    server. Then a sweep stopped with SIGTERM mid-training: its runs end KILLED, not RUNNING."""
    with servers.ray_head(num_cpus=2) as address, servers.mlflow_server(tmp_path) as base:
        env = {"RAY_ADDRESS": address, "MLFLOW_TRACKING_URI": base, **servers.RAY_ENV}
        done = _sweep(
            tmp_path, "hydra/launcher=ray", "threshold=zscore,percentile", "experiment_name=ray",
            f"cache.dir={tmp_path}/cache-${{hydra:job.num}}", env=env,
        )  # fmt: skip
        assert "Connected to Ray cluster" in done.stdout + done.stderr
        client = MlflowClient(base)
        runs = client.search_runs([client.get_experiment_by_name("ray").experiment_id])
        code, elapsed, stopped = _stop_ray_sweep_mid_training(tmp_path, env, client)
        logged = {
            r.info.run_id: client.get_metric_history(r.info.run_id, "val_loss") for r in stopped
        }
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    by_source = {r.data.tags["aead.model_source"]: r for r in runs}
    assert set(by_source) == {"trained", "reused"}
    reused, trained = by_source["reused"], by_source["trained"]
    assert reused.data.tags["aead.model_found_in"] == "tracking server"
    assert reused.data.tags["aead.trained_by_run"] == trained.info.run_id
    assert reused.data.metrics["roc_auc"] == pytest.approx(trained.data.metrics["roc_auc"])
    assert (tmp_path / "cache-0").is_dir() and (tmp_path / "cache-1").is_dir()

    assert code == 143 and elapsed < 10, (code, elapsed)
    assert stopped and {r.info.status for r in stopped} == {"KILLED"}
    # Ray cancels the tasks: a KeyboardInterrupt in each job, named with the job's stage; the
    # job that had logged an epoch was stopped in training, at that epoch or a later one
    reasons = {r.info.run_id: r.data.tags["aead.end_reason"] for r in stopped}
    assert all(re.fullmatch(r"SIGINT during [a-z -]+(, epoch \d+)?", v) for v in reasons.values())
    for r in stopped:
        epochs = len(logged[r.info.run_id])
        if epochs:
            epoch = re.fullmatch(r"SIGINT during training, epoch (\d+)", reasons[r.info.run_id])
            assert epoch and int(epoch.group(1)) >= epochs, reasons[r.info.run_id]


def _stop_ray_sweep_mid_training(tmp_path, env, client):
    """Starts a long 2-job Ray sweep, sends SIGTERM once an epoch is logged; returns the exit
    code, the seconds it took to exit and the sweep's runs as the server has them then."""
    command = [
        sys.executable, "-m", "aead.run", "-m", *QUICK, "trainer.epochs=500",
        "hydra/launcher=ray", "seed=0,1", "experiment_name=ray-stopped",
        f"hydra.sweep.dir={tmp_path / 'stopped'}", f"cache.dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=tmp_path, env={**os.environ, **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            experiment = client.get_experiment_by_name("ray-stopped")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            if any("val_loss" in r.data.metrics for r in runs):
                break
            time.sleep(0.5)
        else:
            pytest.fail("the stopped sweep never logged an epoch")
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        elapsed = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    return code, elapsed, client.search_runs([experiment.experiment_id])


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
