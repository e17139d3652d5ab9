"""MLflow tracking: the only module that imports mlflow.

The tracking URI is resolved once per run, independent of Hydra's output folders, so every
job of a sweep lands in the same store: `MLFLOW_TRACKING_URI` when set, else a local SQLite
store under `<project>/mlruns/` with artifacts beside it.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Mapping
from pathlib import Path

import keras
import matplotlib.pyplot as plt
import mlflow
import pandas as pd
from mlflow.entities import Metric
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

TRACKING_ENV_VAR = "MLFLOW_TRACKING_URI"
STORE_DIR = "mlruns"


def local_store_uri(base_dir: str | os.PathLike) -> str:
    return f"sqlite:///{Path(base_dir).resolve() / STORE_DIR / 'mlflow.db'}"


def resolve_tracking_uri(base_dir: str | os.PathLike, configured: str | None = None) -> str:
    """Config value, else MLFLOW_TRACKING_URI, else the local store under base_dir/mlruns."""
    uri = configured or os.environ.get(TRACKING_ENV_VAR) or local_store_uri(base_dir)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return uri


def ui_command(uri: str) -> str:
    """How to open the MLflow UI on this store (a server URI is already a UI)."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    artifacts = ""
    if uri.startswith("sqlite:///"):
        artifacts = (
            f" --default-artifact-root {Path(uri.removeprefix('sqlite:///')).parent / 'artifacts'}"
        )
    return f"mlflow ui --backend-store-uri {uri}{artifacts} --host 127.0.0.1 --port 5000"


def flatten(config: Mapping, prefix: str = "") -> dict[str, str]:
    """{'model': {'name': 'conv'}} -> {'model.name': 'conv'}, for MLflow's compare view."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = "null" if value is None else str(value)
    return flat


def _experiment_id(name: str, tracking_uri: str) -> str:
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if tracking_uri.startswith("sqlite:///"):
        # keep artifacts under mlruns/ too, whatever the current directory is
        store = Path(tracking_uri.removeprefix("sqlite:///")).parent
        artifact_location = (store / "artifacts").as_uri()
    return mlflow.create_experiment(name, artifact_location=artifact_location)


class EpochLogger(keras.callbacks.Callback):
    """Logs train_loss / val_loss (and other Keras logs) each epoch, step = epoch (1-based)."""

    RENAME = {"loss": "train_loss"}

    def on_epoch_end(self, epoch, logs=None):
        logs = {self.RENAME.get(k, k): float(v) for k, v in (logs or {}).items()}
        mlflow.log_metrics(logs, step=epoch + 1)


class Tracker:
    """One MLflow run. A failure inside the `with` block ends the run as FAILED."""

    def __init__(self, tracking_uri: str, experiment_name: str, run_name: str | None, tags=None):
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.tags = dict(tags or {})
        self._run = None

    def __enter__(self) -> Tracker:
        mlflow.set_tracking_uri(self.tracking_uri)
        experiment_id = _experiment_id(self.experiment_name, self.tracking_uri)
        self._run = mlflow.start_run(
            experiment_id=experiment_id, run_name=self.run_name, tags=self.tags
        )
        return self

    def __exit__(self, exc_type, exc, tb):
        mlflow.end_run(status="FAILED" if exc_type else "FINISHED")
        return False

    @property
    def run_id(self) -> str:
        return self._run.info.run_id

    @property
    def experiment_id(self) -> str:
        return self._run.info.experiment_id

    def run_url(self) -> str:
        base = (
            self.tracking_uri if self.tracking_uri.startswith("http") else "http://127.0.0.1:5000"
        )
        return f"{base.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"

    def log_params(self, params: Mapping[str, str]) -> None:
        mlflow.log_params(dict(params))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        mlflow.set_tags(dict(tags))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_figure(self, figure: plt.Figure, artifact_file: str) -> None:
        mlflow.log_figure(figure, artifact_file)
        plt.close(figure)

    def log_history(self, history: Mapping[str, list[float]]) -> None:
        """Per-epoch curves in one batch, step = epoch (1-based), as EpochLogger logs them."""
        timestamp = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), timestamp, epoch)
            for key, values in history.items()
            for epoch, value in enumerate(values, start=1)
        ]
        MlflowClient().log_batch(self.run_id, metrics=metrics)

    def log_text(self, text: str, artifact_file: str) -> None:
        mlflow.log_text(text, artifact_file)

    def log_dataframe_csv(self, frame: pd.DataFrame, artifact_file: str) -> None:
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)
        mlflow.log_text(buffer.getvalue(), artifact_file)

    def log_keras_model(self, model: keras.Model, sample_input, name: str = "model") -> None:
        import tensorflow as tf

        # Explicit requirements: MLflow's inference would reload the model in a subprocess.
        requirements = [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"]
        signature = infer_signature(sample_input, model.predict(sample_input, verbose=0))
        mlflow.keras.log_model(model, name=name, pip_requirements=requirements, signature=signature)

    def epoch_logger(self) -> keras.callbacks.Callback:
        return EpochLogger()


# ----------------------------------------------------------------------------- reading runs


def search_runs(
    tracking_uri: str,
    experiment_names: list[str] | None,
    filter_string: str = "",
    max_results: int | None = None,
):
    """Runs (any status, newest first) of the named experiments, or of every experiment, as a
    DataFrame with MLflow's own columns (params.*, metrics.*, tags.*, status, run_id, ...)."""
    mlflow.set_tracking_uri(tracking_uri)
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
        return tracking_uri.rstrip("/")
    return "http://127.0.0.1:5000"


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    return f"{ui_base_url(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}"
