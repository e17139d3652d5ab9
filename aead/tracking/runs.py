"""MLflow tracking: the only module that imports mlflow.

The tracking URI is resolved once per run, independent of Hydra's output folders, so every
job of a sweep lands in the same store: `MLFLOW_TRACKING_URI` when set, else a local SQLite
store under `<project>/mlruns/` with artifacts beside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import socket
import sqlite3
import time
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from aead.tracking import heartbeat, lifecycle
from aead.tracking.retry import RETRY_SECONDS, retrying
from aead.tracking.secrets import redact

if TYPE_CHECKING:  # TensorFlow is imported only by what trains: the report starts fast
    import keras

TRACKING_ENV_VAR = "MLFLOW_TRACKING_URI"
STORE_DIR = "mlruns"


def local_store_uri(base_dir: str | os.PathLike) -> str:
    return f"sqlite:///{Path(base_dir).resolve() / STORE_DIR / 'mlflow.db'}"


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def _sqlite_artifacts(uri: str) -> Path | None:
    """Where a local SQLite store keeps its artifacts: beside the database, in artifacts/."""
    path = _sqlite_path(uri)
    return path.parent / "artifacts" if path else None


def resolve_tracking_uri(base_dir: str | os.PathLike, configured: str | None = None) -> str:
    """Config value, else MLFLOW_TRACKING_URI, else the local store under base_dir/mlruns."""
    uri = configured or os.environ.get(TRACKING_ENV_VAR) or local_store_uri(base_dir)
    if (path := _sqlite_path(uri)) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    return uri


# ----------------------------------------------------------------------------- store safety
# Several processes (a joblib sweep) share one SQLite file: the schema is created once, under a
# file lock, and writes that meet a locked database are retried.

_ready_stores: set[str] = set()


@contextlib.contextmanager
def _store_lock(uri: str):
    """An exclusive lock beside a SQLite store (no-op for servers and other databases)."""
    path = _sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _use_write_ahead_log(uri: str) -> None:
    """SQLite's WAL journal: readers no longer block the writer and a commit appends to the
    log instead of rewriting pages, so parallel jobs wait less on each other. The mode is
    stored in the database file; it needs a local disk (not a network file system)."""
    path = _sqlite_path(uri)
    if path is None:
        return
    with contextlib.closing(sqlite3.connect(path, timeout=RETRY_SECONDS)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def prepare_store(uri: str, experiment_name: str | None = None) -> str | None:
    """Open the store once per process, creating its schema (and the experiment) under the
    lock, so that processes starting together do not race on `CREATE TABLE` / migrations.
    Returns the experiment id when a name is given."""
    mlflow.set_tracking_uri(uri)
    with _store_lock(uri):
        if uri not in _ready_stores:
            retrying(MlflowClient(uri).search_experiments, max_results=1)
            _use_write_ahead_log(uri)
            _ready_stores.add(uri)
        if experiment_name is None:
            return None
        return retrying(_experiment_id, experiment_name, uri)


def ui_command(uri: str) -> str:
    """How to open the MLflow UI on this store (a server URI is already a UI)."""
    if uri.startswith(("http://", "https://")):
        return f"open {redact(uri)}"
    root = _sqlite_artifacts(uri)
    artifacts = f" --default-artifact-root {root}" if root else ""
    return f"mlflow ui --backend-store-uri {uri}{artifacts} --host 127.0.0.1 --port 5000"


def flatten(config: Mapping, prefix: str = "") -> dict[str, str]:
    """{'model': {'name': 'conv'}} -> {'model.name': 'conv'}, for MLflow's compare view."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = "null" if value is None else redact(str(value))
    return flat


def _experiment_id(name: str, tracking_uri: str) -> str:
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    # keep a local store's artifacts under mlruns/ too, whatever the current directory is
    root = _sqlite_artifacts(tracking_uri)
    artifact_location = root.as_uri() if root else None
    return mlflow.create_experiment(name, artifact_location=artifact_location)


def one_line(exc: BaseException) -> str:
    """An exception as one line: 'ValueError: first line of the message'."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    if isinstance(exc, lifecycle.TrainingDiverged):
        text = lines[0]  # already says what happened and what to do
    return redact(text)[:500]


class Tracker:
    """One MLflow run. Leaving the `with` block ends it: FINISHED; KILLED on a signal (tag
    `aead.end_reason`); FAILED on any other exception (tag `aead.error`, one line), also one
    raised by work done in its logging thread (`in_background`)."""

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        run_name: str | None,
        tags=None,
        heartbeat_s: float = heartbeat.DEFAULT_INTERVAL_S,
    ):
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.heartbeat_s = float(heartbeat_s)
        self._run = None
        self._background: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def __enter__(self) -> Tracker:
        # MLflow prints its own run link, unmasked; aead prints a masked one at the end
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        experiment_id = prepare_store(self.tracking_uri, self.experiment_name)
        tags = {**self.tags, "aead.host": socket.gethostname(), "aead.pid": str(os.getpid())}
        self._run = retrying(
            mlflow.start_run, experiment_id=experiment_id, run_name=self.run_name, tags=tags
        )
        # alive while it works; a run whose process died without ending it is ended here by
        # the next run of its experiment (or by aead-end-lost-runs)
        self._heartbeat = heartbeat.Heartbeat(self.tracking_uri, self.run_id, self.heartbeat_s)
        self._heartbeat.start()
        heartbeat.end_lost_runs(self.tracking_uri, [experiment_id])
        # if unwinding after a signal stalls, the watchdog still ends this run as KILLED
        self._unregister = lifecycle.on_force_exit(self._force_killed)
        self._active = lifecycle.run_active()
        self._active.__enter__()
        return self

    def _force_killed(self, reason: str) -> None:
        client = MlflowClient(self.tracking_uri)
        retrying(client.set_tag, self.run_id, "aead.end_reason", reason)
        retrying(client.set_terminated, self.run_id, "KILLED")

    def __exit__(self, exc_type, exc, tb):
        failed_in_background = None
        stopped = isinstance(exc, KeyboardInterrupt)  # a signal (aead.tracking.lifecycle)
        if exc_type is None:
            try:  # what the logging thread still does belongs to the run: waited for
                self.wait_for_background()
            except Exception as error:  # noqa: BLE001 - it ends the run FAILED, then raised
                failed_in_background = exc = error
        self._stop_background(drop_queued=stopped)
        self._unregister()
        self._heartbeat.stop()
        if exc is None:
            status, tags = "FINISHED", {}
        elif isinstance(exc, lifecycle.Interrupted):
            status, tags = "KILLED", {"aead.end_reason": exc.reason}
        elif isinstance(exc, KeyboardInterrupt):
            status, tags = "KILLED", {"aead.end_reason": f"SIGINT during {lifecycle.stage()}"}
        else:
            status = "FAILED"
            tags = {
                "aead.error": one_line(exc),
                "aead.end_reason": f"error during {lifecycle.stage()}",
            }
        try:
            if tags:
                retrying(mlflow.set_tags, tags)
        finally:
            try:
                retrying(mlflow.end_run, status=status)
            finally:
                self._active.__exit__(None, None, None)
        if failed_in_background is not None:
            raise failed_in_background
        return False

    def in_background(self, work: Callable, *args, **kwargs) -> None:
        """Runs work(*args, **kwargs) in the run's logging thread, in the order submitted,
        while the run goes on (the models are logged while the test images are scored). Its
        MLflow calls log to this run; an error in it is raised by wait_for_background() (or
        on leaving the `with` block), so the run ends FAILED with it. The thread is one
        core's work beside the main thread's: TensorFlow's kernels leave Python's lock free."""
        if self._background is None:
            self._background = ThreadPoolExecutor(
                1, thread_name_prefix="aead-logging", initializer=self._attach_thread
            )
        self._pending.append(self._background.submit(work, *args, **kwargs))

    def _attach_thread(self) -> None:
        # MLflow's active run is per thread: the logging thread resumes this run as its own
        retrying(mlflow.start_run, run_id=self.run_id)

    def wait_for_background(self) -> None:
        """Blocks until the logging thread has done everything submitted; raises its first
        error."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def _stop_background(self, drop_queued: bool) -> None:
        """Leaving the run: the logging thread finishes its work (after a signal only the
        call under way: the rest is dropped, to stop soon); an error of that work, when the
        run fails anyway, is the run's own error's shadow and not raised."""
        if self._background is not None:
            self._background.shutdown(wait=True, cancel_futures=drop_queued)
            self._background = None
        self._pending = []

    @property
    def run_id(self) -> str:
        return self._run.info.run_id

    @property
    def experiment_id(self) -> str:
        return self._run.info.experiment_id

    def run_url(self) -> str:
        return run_url(self.tracking_uri, self.experiment_id, self.run_id)

    def log_params(self, params: Mapping[str, str]) -> None:
        retrying(mlflow.log_params, {k: redact(str(v)) for k, v in params.items()})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        retrying(mlflow.set_tags, {k: redact(str(v)) for k, v in tags.items()})

    def log_dataset(self, images, labels, name: str, source: str, context: str) -> str:
        """Records data the run used (mlflow.log_input): name, source, number of images and
        aead's SHA-256 of the arrays (MLflow keeps 32 hex digits as the digest; the input tag
        `sha256` holds all 64). Only metadata is stored, never the images."""
        import hashlib

        import numpy as np

        digest = hashlib.sha256()
        for array in (images, labels):
            if array is not None:
                array = np.ascontiguousarray(array)
                digest.update(f"{array.dtype}{array.shape}".encode())
                digest.update(array.tobytes())
        sha256 = digest.hexdigest()
        with warnings.catch_warnings():  # MLflow registers two equal sources for local paths
            warnings.filterwarnings("ignore", message="The specified dataset source")
            dataset = mlflow.data.from_numpy(
                images, source=redact(source), targets=labels, name=name, digest=sha256[:32]
            )
        tags = {"sha256": sha256, "n_images": str(len(images))}
        retrying(mlflow.log_input, dataset, context=context, tags=tags, insert_race=True)
        return sha256

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        retrying(mlflow.log_metrics, {k: float(v) for k, v in metrics.items()}, step=step)

    def log_figure(self, figure: plt.Figure, artifact_file: str) -> None:
        retrying(mlflow.log_figure, figure, artifact_file)
        plt.close(figure)

    def log_history(self, history: Mapping[str, list[float]]) -> None:
        """Per-epoch curves in one batch, step = epoch (1-based), as EpochLogger logs them."""
        timestamp = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), timestamp, epoch)
            for key, values in history.items()
            for epoch, value in enumerate(values, start=1)
        ]
        retrying(MlflowClient().log_batch, self.run_id, metrics=metrics)

    def log_text(self, text: str, artifact_file: str) -> None:
        retrying(mlflow.log_text, redact(text), artifact_file)

    def log_arrays(self, arrays: Mapping[str, np.ndarray], artifact_file: str) -> None:
        """Arrays as one compressed .npz artifact (numpy.load reads it back)."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="aead-arrays-") as folder:
            path = Path(folder) / Path(artifact_file).name
            np.savez_compressed(path, **arrays)
            retrying(mlflow.log_artifact, str(path), str(Path(artifact_file).parent or ""))

    def log_dataframe_csv(self, frame: pd.DataFrame, artifact_file: str) -> None:
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)
        retrying(mlflow.log_text, buffer.getvalue(), artifact_file)

    def log_keras_model(self, model: keras.Model, sample_input, name: str = "model") -> None:
        import keras
        import tensorflow as tf

        # Explicit requirements: MLflow's inference would reload the model in a subprocess.
        requirements = [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"]
        # the output's spec from the model itself (a prediction costs a Keras predict call)
        output = np.zeros((len(sample_input), *model.output_shape[1:]), model.outputs[0].dtype)
        signature = infer_signature(sample_input, output)
        # written by the logging thread: the model is trained and no longer changes
        self.log_model_soon(
            mlflow.keras.log_model,
            model, name=name, pip_requirements=requirements, signature=signature,
        )  # fmt: skip

    def log_model_soon(self, log_model: Callable, *args, **kwargs) -> None:
        """log_model(*args, **kwargs) (an MLflow flavour's) by the logging thread, without
        MLflow's checks that cannot fail for aead's models (see known_good_model_logging)."""
        self.in_background(_log_known_good_model, log_model, *args, **kwargs)

    def epoch_logger(self) -> keras.callbacks.Callback:
        from aead.tracking.callbacks import EpochLogger

        return EpochLogger(self.log_metrics_soon)

    def log_metrics_soon(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """log_metrics by the logging thread: training does not wait for the store."""
        self.in_background(self.log_metrics, dict(metrics), step)


@contextlib.contextmanager
def known_good_model_logging():
    """While aead logs a model, two of MLflow's checks that cannot fail for it are skipped;
    each cost CPU-seconds per run on the cores training and scoring use (measured with
    py-spy), and the artifacts written are the same:
    - the pip requirements against this Python environment: aead pins every requirement to
      the version running here, so no mismatch can be found, and the check scans every
      installed package's files (2.2 CPU-seconds per process). A serving process still checks
      when it loads the model in another environment.
    - the input example served by the model reloaded from disk: aead's detector and its example
      are the same for every run (images in, score and is_anomaly out), served over REST and
      loaded where aead is not installed in tests/test_detector.py; reloading it unpickles
      the whole detector again (0.9 CPU-seconds per run). The example is still logged.
    An MLflow without these helpers is left as it is (it then just checks)."""
    from mlflow.models import utils as model_utils
    from mlflow.utils import requirements_utils

    with (
        _replaced(requirements_utils, "_check_requirement_satisfied", _pinned_here),
        _replaced(model_utils, "_validate_serving_input", _served_in_tests),
    ):
        yield


@contextlib.contextmanager
def _replaced(module, name: str, stand_in: Callable):
    original = getattr(module, name, None)
    if original is None:
        yield
        return
    setattr(module, name, stand_in)
    try:
        yield
    finally:
        setattr(module, name, original)


def _pinned_here(requirement: str) -> None:
    return None  # no mismatch: aead pinned it to this environment


def _served_in_tests(model_uri, serving_input) -> None:
    return None  # the detector's example is served in tests/test_detector.py


def _log_known_good_model(log_model: Callable, *args, **kwargs):
    with known_good_model_logging():
        return retrying(log_model, *args, **kwargs)


# ----------------------------------------------------------------------------- reading runs


def search_runs(
    tracking_uri: str,
    experiment_names: list[str] | None,
    filter_string: str = "",
    max_results: int | None = None,
):
    """Runs (any status, newest first) of the named experiments, or of every experiment, as a
    DataFrame with MLflow's own columns (params.*, metrics.*, tags.*, status, run_id, ...)."""
    prepare_store(tracking_uri)
    kwargs = {"filter_string": filter_string, "order_by": ["attributes.start_time DESC"]}
    if max_results:
        kwargs["max_results"] = max_results
    if experiment_names:
        missing = [n for n in experiment_names if mlflow.get_experiment_by_name(n) is None]
        if missing:
            raise ValueError(f"no MLflow experiment named {missing} at {tracking_uri}")
        return mlflow.search_runs(experiment_names=experiment_names, **kwargs)
    return mlflow.search_runs(search_all_experiments=True, **kwargs)


def download_artifact(tracking_uri: str, run_id: str, path: str, dst_dir: str | os.PathLike):
    """Copy one artifact of a run to dst_dir; None when the run has no such artifact."""
    mlflow.set_tracking_uri(tracking_uri)
    try:
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=path, dst_path=str(dst_dir)
            )
        )
    except (mlflow.exceptions.MlflowException, OSError):
        return None


def ui_base_url(tracking_uri: str) -> str:
    """The web address runs are linked to: the server itself, else a local `mlflow ui`."""
    if tracking_uri.startswith(("http://", "https://")):
        return redact(tracking_uri).rstrip("/")
    return "http://127.0.0.1:5000"


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    return f"{ui_base_url(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}"


# ----------------------------------------------------------------------------- resuming sweeps


def _process_gone(host: str | None, pid: str | None) -> bool:
    """True only when the run's process ran on this machine and no longer exists."""
    if host != socket.gethostname() or not (pid or "").isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _runs_of(tracking_uri: str, experiment_name: str, filter_string: str) -> list:
    """The runs of the named experiment that match the filter (none if it does not exist)."""
    client = MlflowClient(tracking_uri)
    experiment = retrying(client.get_experiment_by_name, experiment_name)
    if experiment is None:
        return []
    return retrying(client.search_runs, [experiment.experiment_id], filter_string)


def sweep_job_records(
    tracking_uri: str, experiment_name: str, sweep_id: str, since: float
) -> list[dict]:
    """How each job of this sweep started since `since` (epoch seconds) ended, as the tracking
    store has it, in the form of aead.sweeps' job records: on a cluster, jobs that ran on other
    machines leave their record files there, but their runs here."""
    runs = _runs_of(
        tracking_uri, experiment_name,
        f"tags.sweep_id = '{sweep_id}' and attributes.start_time >= {int(since * 1000)}",
    )  # fmt: skip
    records = []
    for run in runs:
        tags = run.data.tags
        if "sweep_job" not in tags or run.info.status == "RUNNING":
            continue
        records.append(
            {
                "job": int(tags["sweep_job"]),
                "overrides": tags.get("overrides", "").split(),
                "status": run.info.status,
                "reason": tags.get("aead.error") or tags.get("aead.end_reason", ""),
                "run_id": run.info.run_id,
            }
        )
    return records


def end_job_runs(
    tracking_uri: str, experiment_name: str, sweep_id: str, job_num: int, reason: str
) -> list[str]:
    """Ends KILLED (with `aead.end_reason` = reason) the RUNNING runs of one job of a sweep:
    for a launcher that knows the job's process is gone (a Ray worker that died), sooner than
    the run's heartbeat would tell. Returns their run ids."""
    client = MlflowClient(tracking_uri)
    runs = _runs_of(
        tracking_uri, experiment_name,
        f"tags.sweep_id = '{sweep_id}' and tags.sweep_job = '{job_num}' "
        "and attributes.status = 'RUNNING'",
    )  # fmt: skip
    for run in runs:
        retrying(client.set_tag, run.info.run_id, "aead.end_reason", reason)
        retrying(client.set_terminated, run.info.run_id, "KILLED")
    return [run.info.run_id for run in runs]


def finished_job_run(
    tracking_uri: str, experiment_name: str, sweep_id: str, config_hash: str
) -> dict | None:
    """The FINISHED run of this sweep with this resolved config, if any (newest first), as
    {'run_id', 'run_name', 'metrics'}. Runs of the same job left RUNNING by a process that no
    longer exists on this machine are closed as KILLED on the way, so no run stays RUNNING."""
    prepare_store(tracking_uri)
    experiment = retrying(mlflow.get_experiment_by_name, experiment_name)
    if experiment is None:
        return None
    client = MlflowClient(tracking_uri)
    runs = retrying(
        client.search_runs,
        [experiment.experiment_id],
        f"tags.sweep_id = '{sweep_id}' and tags.`aead.config_hash` = '{config_hash}'",
        order_by=["attributes.start_time DESC"],
    )
    for run in runs:
        tags = run.data.tags
        host, pid = tags.get("aead.host"), tags.get("aead.pid")
        if run.info.status == "RUNNING" and _process_gone(host, pid):
            reason = f"process {pid} on {host} ended without closing the run"
            retrying(client.set_tag, run.info.run_id, "aead.end_reason", reason)
            retrying(client.set_terminated, run.info.run_id, "KILLED")
    for run in runs:
        if run.info.status == "FINISHED":
            return {
                "run_id": run.info.run_id,
                "run_name": run.info.run_name,
                "metrics": dict(run.data.metrics),
                "experiment_id": run.info.experiment_id,
            }
    return None
