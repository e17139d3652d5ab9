"""Sweeps you can trust: real processes, real signals, real SQLite stores.

Interruption (SIGTERM / SIGINT end the run as KILLED), failure isolation (a diverging job
fails alone), resume (finished jobs are skipped, failed ones re-run), parallel joblib jobs
(one trains, the other waits and reuses), and the store and cache under concurrent writers.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from tests.helpers import QUICK, REPO


def _aead(tmp_path: Path, *overrides: str, multirun: bool = True, env=None, **popen):
    """Start `python -m aead.run` on a fresh SQLite store and cache under tmp_path."""
    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    command = [sys.executable, "-m", "aead.run", *(["-m"] if multirun else []), *overrides,
               f"cache.dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
               f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    environment = {**os.environ, "MLFLOW_TRACKING_URI": store, **(env or {})}
    return store, command, environment


def _run(tmp_path: Path, *overrides: str, **kwargs) -> tuple[subprocess.CompletedProcess, str]:
    env = kwargs.pop("env", None)
    store, command, environment = _aead(tmp_path, *overrides, env=env, **kwargs)
    done = subprocess.run(
        command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=600
    )
    return done, store


def _runs(store: str):
    mlflow.set_tracking_uri(store)
    return mlflow.search_runs(search_all_experiments=True, order_by=["attributes.start_time ASC"])


# ----------------------------------------------------------------------------- interruption


def _interrupt_during_training(tmp_path, signum, multirun, overrides):
    """Start a long training, send `signum` once epoch 2 has been logged, return
    (exit code, seconds from signal to exit, output, store)."""
    store, command, env = _aead(
        tmp_path,
        "trainer.epochs=200",
        "trainer.patience=0",  # no early stop before the signal
        "data.train_limit=1000",
        "data.test_limit=200",
        "data.download=false",
        "trainer.verbose=2",  # one line per epoch, on a pipe too
        "tracking.log_model=false",
        *overrides,
        multirun=multirun,
    )
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = []
    try:
        for line in process.stdout:
            output.append(line)
            if line.startswith("Epoch 3/"):  # epochs 1 and 2 are done and logged
                break
        else:
            pytest.fail("training never reached epoch 3:\n" + "".join(output[-40:]))
        sent = time.monotonic()
        process.send_signal(signum)
        rest, _ = process.communicate(timeout=60)
        elapsed = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, elapsed, "".join(output) + rest, store


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum, multirun",
    [(signal.SIGTERM, True), (signal.SIGINT, False)],
    ids=["SIGTERM-multirun", "SIGINT-single-run"],
)
def test_signal_mid_training_leaves_a_killed_run_with_its_epochs(tmp_path, signum, multirun):
    # a two-job sweep: the signal during job 0 must also stop job 1 from starting
    sweep = ["seed=0,1"] if multirun else []
    code, elapsed, output, store = _interrupt_during_training(tmp_path, signum, multirun, sweep)

    assert code == 128 + signum, output[-3000:]
    # it ends between two batches, not after the 200 epochs (minutes): about 3 s alone, 3-6 s
    # beside a CPU burner, 11.9 s once in the whole suite on 2 cores (2026-12-03)
    assert elapsed < 30, f"took {elapsed:.1f} s to exit after {signum.name}"
    runs = _runs(store)
    assert len(runs) == 1, "the sweep went on after the signal"
    run = runs.iloc[0]
    assert run["status"] == "KILLED"
    assert run["tags.aead.end_reason"].startswith(f"{signum.name} during training, epoch ")
    assert run["params.model.name"] == "conv" and run["params.trainer.epochs"] == "200"
    history = MlflowClient(store).get_metric_history(run["run_id"], "val_loss")
    assert [m.step for m in history][:2] == [1, 2]
    assert f"[aead] stopped: {signum.name} during training, epoch" in output


# ----------------------------------------------------------------------------- failures


@pytest.mark.slow
def test_diverging_job_fails_alone_and_the_sweep_goes_on(tmp_path):
    done, store = _run(
        tmp_path, "trainer.learning_rate=1e6,0.001", "model=dense", "tracking.log_model=false",
        *QUICK,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    runs = _runs(store).set_index("params.trainer.learning_rate")
    diverged, healthy = runs.loc["1000000.0"], runs.loc["0.001"]
    assert diverged["status"] == "FAILED"
    reason = "training diverged at epoch 1 (loss = nan); lower trainer.learning_rate"
    assert diverged["tags.aead.error"] == reason
    # it stopped in that epoch: no epoch metrics and no scores were logged
    assert MlflowClient(store).get_metric_history(diverged["run_id"], "train_loss") == []
    assert healthy["status"] == "FINISHED"
    mlflow.set_tracking_uri(store)
    scores = pd.read_csv(
        io.StringIO(mlflow.artifacts.load_text(f"{healthy['artifact_uri']}/scores.csv"))
    )
    assert len(scores) == 400  # 200 MNIST + 200 Fashion-MNIST test images (data.test_limit)
    assert healthy["metrics.roc_auc"] == pytest.approx(
        roc_auc_score(scores["label"], scores["score"])
    )
    summary = done.stdout[done.stdout.index("1 failed job(s):") :]
    assert "#0 trainer.learning_rate=1000000.0 model=dense" in summary and reason in summary
    assert "re-run them: python -m aead.run -m" in summary


# ----------------------------------------------------------------------------- resume


@pytest.mark.slow
def test_resumed_sweep_skips_finished_jobs_and_reruns_failed_ones(tmp_path, data_dir):
    # First attempt: the data folder lacks Fashion-MNIST, so the job that needs it fails.
    partial = tmp_path / "partial-data"
    partial.mkdir()
    (partial / "mnist").symlink_to(data_dir / "mnist")
    sweep = ["scenario=noise,mnist_vs_fashion", "model=dense", "tracking.log_model=false", *QUICK]
    first, store = _run(tmp_path, *sweep, env={"AEAD_DATA_DIR": str(partial)})
    assert first.returncode == 1
    before = _runs(store)
    assert sorted(before["status"]) == ["FAILED", "FINISHED"]
    failed = before[before["status"] == "FAILED"].iloc[0]
    assert "dataset 'fashion_mnist'" in failed["tags.aead.error"]
    finished_id = before[before["status"] == "FINISHED"]["run_id"].item()

    # Same command, same sweep folder, data complete: the finished job is skipped.
    second, _ = _run(tmp_path, *sweep, env={"AEAD_DATA_DIR": str(data_dir)})
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"already FINISHED in sweep sweep as run {finished_id}: skipped" in second.stdout
    after = _runs(store)
    assert len(after) == 3 and set(after["tags.sweep_id"]) == {"sweep"}
    rerun = after[(after["params.scenario.name"] == "mnist_vs_fashion")]
    assert sorted(rerun["status"]) == ["FAILED", "FINISHED"]
    assert rerun["tags.aead.config_hash"].nunique() == 1  # the same job, attempted twice

    # The report sees one complete sweep: one run per job, nothing failed or missing.
    report = subprocess.run(
        [sys.executable, "-m", "aead.report", "--tracking-uri", store, "--out", tmp_path / "rep"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    assert "1 earlier attempt(s) of re-run jobs left out" in report.stderr
    markdown = (tmp_path / "rep" / "report.md").read_text()
    assert "Failed or missing" not in markdown and "run failed" not in markdown


# ----------------------------------------------------------------------------- parallel jobs


@pytest.mark.slow
def test_joblib_sweep_on_a_fresh_store_trains_once(tmp_path):
    done, store = _run(
        tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        "threshold=zscore,percentile", "tracking.log_model=false", *QUICK,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = _runs(store)
    assert list(runs["status"]) == ["FINISHED", "FINISHED"]
    assert sorted(runs["tags.aead.model_source"]) == ["reused", "trained"]
    trainer = runs[runs["tags.aead.model_source"] == "trained"]["run_id"].item()
    assert set(runs["tags.aead.trained_by_run"]) == {trainer}
    # two jobs share the cores: each TensorFlow gets half of them
    assert set(runs["tags.aead.tf_threads"]) == {str(max(1, (os.cpu_count() or 1) // 2))}


ROUNDS = 3  # the same key again: an entry is there, and stays sound


def _store_entry(root: str, key: str, publishing, rounds, queue) -> None:
    """In a fresh process: build a small model and store it under `key`, ROUNDS times; in each
    round both writers have their complete entry staged before either publishes (the barrier
    `publishing`), so that the two collide, and wait for the test to read the entry (`rounds`)
    before the next."""
    from aead.detectors.models import build_model
    from aead.store.cache import ModelCache

    publish = ModelCache.publish

    def publish_together(self, key, staging):
        publishing.wait(timeout=120)
        return publish(self, key, staging)

    ModelCache.publish = publish_together
    model = build_model({"name": "dense", "units": [8], "kind": "autoencoder"})
    run_id = f"run-{os.getpid()}"
    for _ in range(ROUNDS):
        try:
            ModelCache(root).store(key, {"k": key}, model, {"val_loss": [1.0]}, run_id)
            queue.put(("ok", run_id))
        except Exception as exc:  # reported to the test, which fails with it
            queue.put((f"{type(exc).__name__}: {exc}", run_id))
        rounds.wait(timeout=180)


@pytest.mark.slow
def test_two_processes_storing_one_cache_key_both_succeed(tmp_path):
    import multiprocessing

    from aead.store.cache import ModelCache

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    key = "ab" * 32
    publishing, rounds = context.Barrier(2), context.Barrier(3)  # rounds: this test too
    workers = [
        context.Process(target=_store_entry, args=(str(tmp_path), key, publishing, rounds, queue))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    kept = None
    try:
        for round_ in range(ROUNDS):
            results = [queue.get(timeout=180) for _ in workers]
            assert [outcome for outcome, _ in results] == ["ok", "ok"], f"round {round_}"
            cached, reason = ModelCache(tmp_path).load(key)
            assert cached is not None, reason
            # one writer's entry is published whole, the other's discarded
            writers = {run_id for _, run_id in results}
            assert cached.trained_by_run in (writers if kept is None else {kept})
            kept = cached.trained_by_run
            rounds.wait(timeout=60)
    finally:
        for worker in workers:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.kill()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith((".staging", ".trash"))]
    assert leftovers == []
