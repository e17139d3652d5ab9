"""One run, end to end: data -> model -> train -> score -> threshold -> metrics -> MLflow.

Knows nothing of Hydra: it takes a resolved config (an OmegaConf DictConfig or a mapping)
and a RunContext that the entry point fills in.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf

from aead import plots
from aead.data import Splits, build_splits
from aead.losses import get_loss, score_images
from aead.metrics import detection_metrics
from aead.models import build_model
from aead.thresholds import Threshold, fit_threshold
from aead.tracking import Tracker, flatten, resolve_tracking_uri, ui_command

N_RECONSTRUCTIONS = 8
MAX_OUTLIERS_SHOWN = 32


@dataclass
class RunContext:
    """What the entry point knows about the invocation."""

    base_dir: str = "."  # where the default ./mlruns store lives
    overrides: list[str] = field(default_factory=list)
    sweep_id: str | None = None
    job_num: int | None = None


@dataclass
class RunResult:
    run_id: str
    tracking_uri: str
    metrics: dict[str, float]


def seed_everything(seed: int) -> None:
    """Same config, same numbers: seeds Python, NumPy and TF, and makes TF ops deterministic."""
    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()


def default_run_name(cfg: DictConfig) -> str:
    return (
        f"{cfg.model.name}-{cfg.loss.name}-{cfg.scenario.name}-{cfg.threshold.name}-seed{cfg.seed}"
    )


def _verbosity(setting) -> int:
    if setting in (None, "auto"):
        return 1 if sys.stdout.isatty() else 2  # a bar on a terminal, one line per epoch in logs
    return int(setting)


def train_autoencoder(cfg: DictConfig, splits: Splits, tracker: Tracker) -> keras.Model:
    model = build_model(cfg.model)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=float(cfg.trainer.learning_rate)),
        loss=get_loss(cfg.loss.name),
    )
    callbacks = [tracker.epoch_logger()]
    if cfg.trainer.patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=int(cfg.trainer.patience), restore_best_weights=True
            )
        )
    print(
        f"[aead] training {model.name} ({model.count_params():,} parameters) with "
        f"{cfg.loss.name} on {len(splits.x_train):,} images, validating on {len(splits.x_val):,}",
        flush=True,
    )
    history = model.fit(
        splits.x_train,
        splits.x_train,
        validation_data=(splits.x_val, splits.x_val),
        epochs=int(cfg.trainer.epochs),
        batch_size=int(cfg.trainer.batch_size),
        shuffle=True,
        callbacks=callbacks,
        verbose=_verbosity(cfg.trainer.get("verbose")),
    )
    curves = {"train_loss": history.history["loss"], "val_loss": history.history["val_loss"]}
    tracker.log_figure(plots.training_curves(curves), "plots/training_curves.png")
    return model


def _reconstruct(model: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    return model.predict(images, batch_size=batch_size, verbose=0)


def _scenario_metrics(cfg: DictConfig, labels, scores, predicted) -> dict[str, float]:
    """Figures the classic setups report beyond the standard metrics."""
    out = {
        "mean_score_normal": float(scores[labels == 0].mean()) if (labels == 0).any() else 0.0,
        "mean_score_anomaly": float(scores[labels == 1].mean()) if (labels == 1).any() else 0.0,
    }
    if cfg.scenario.name == "contaminated":
        out["n_outliers"] = int(predicted.sum())
        out["n_planted"] = int(labels.sum())
        out["planted_flagged"] = int((predicted & (labels == 1)).sum())
    return out


def _log_artifacts(
    tracker: Tracker,
    cfg: DictConfig,
    splits: Splits,
    reconstructions: np.ndarray,
    scores: np.ndarray,
    predicted: np.ndarray,
    threshold: Threshold,
    metrics: dict,
) -> None:
    labels = splits.y_test
    score_name = cfg.loss.score
    title = f"{cfg.model.name} / {cfg.loss.name} / {cfg.scenario.name}"
    tracker.log_figure(
        plots.error_histogram(
            scores[labels == 0], scores[labels == 1], threshold, score_name, title
        ),
        "plots/error_histogram.png",
    )
    tracker.log_figure(
        plots.roc_curve(labels, scores, metrics.get("roc_auc"), title), "plots/roc_curve.png"
    )
    rows = {}
    for label, name in ((0, "normal"), (1, "anomaly")):
        index = np.flatnonzero(labels == label)[:N_RECONSTRUCTIONS]
        if len(index):
            rows[name] = (splits.x_test[index], reconstructions[index])
    tracker.log_figure(plots.reconstructions(rows, N_RECONSTRUCTIONS), "plots/reconstructions.png")

    flagged = np.flatnonzero(predicted)
    worst_first = flagged[np.argsort(-scores[flagged])][:MAX_OUTLIERS_SHOWN]
    captions = [f"{scores[i]:.4f}{' *' if labels[i] else ''}" for i in worst_first]
    tracker.log_figure(
        plots.image_grid(
            splits.x_test[worst_first],
            captions,
            f"{len(flagged)} flagged outliers, highest score first (* = labeled anomaly)",
        ),
        "plots/outliers.png",
    )
    tracker.log_dataframe_csv(
        pd.DataFrame(
            {
                "index": np.arange(len(scores)),
                "label": labels.astype(int),
                "score": scores,
                "predicted": predicted.astype(int),
            }
        ),
        "scores.csv",
    )


def run(cfg: DictConfig, context: RunContext | None = None) -> RunResult:
    """Train, score and log one variant as one MLflow run; returns its metrics."""
    context = context or RunContext()
    started = time.time()
    seed_everything(cfg.seed)
    tracking_uri = resolve_tracking_uri(context.base_dir, cfg.tracking.get("uri"))
    tags = {"aead.model": cfg.model.name, "aead.scenario": cfg.scenario.name}
    if context.sweep_id:
        tags["sweep_id"] = context.sweep_id
        tags["sweep_job"] = str(context.job_num)
    if cfg.model.kind != "autoencoder":
        raise ValueError(f"model '{cfg.model.name}' (kind {cfg.model.kind}) is not supported yet")

    run_name = cfg.get("run_name") or default_run_name(cfg)
    tags["overrides"] = " ".join(context.overrides) or "(none)"
    with Tracker(tracking_uri, cfg.experiment_name, run_name, tags) as tracker:
        # params first: a run that fails (even on missing data) is recorded with its config
        resolved = OmegaConf.to_container(cfg, resolve=True)
        tracker.log_params(flatten(resolved))
        tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        splits = build_splits(cfg.scenario, cfg.data, seed=int(cfg.seed))
        tracker.set_tags({f"data.{k}": v for k, v in splits.description.items()})
        tracker.log_metrics(
            {
                "n_train": len(splits.x_train),
                "n_val": len(splits.x_val),
                "n_test": len(splits.x_test),
            }
        )

        model = train_autoencoder(cfg, splits, tracker)
        batch = int(cfg.trainer.batch_size)
        val_scores = score_images(
            splits.x_val, _reconstruct(model, splits.x_val, batch), cfg.loss.score
        )
        reconstructions = _reconstruct(model, splits.x_test, batch)
        scores = score_images(splits.x_test, reconstructions, cfg.loss.score)

        threshold = fit_threshold(cfg.threshold, val_scores)
        predicted = threshold.flag(scores)
        metrics = detection_metrics(splits.y_test, scores, predicted)
        metrics.update(threshold.as_metrics())
        metrics.update(_scenario_metrics(cfg, splits.y_test, scores, predicted))
        metrics["mean_score_validation"] = float(val_scores.mean())
        tracker.log_metrics(metrics)
        _log_artifacts(tracker, cfg, splits, reconstructions, scores, predicted, threshold, metrics)
        if cfg.tracking.get("log_model", True):
            tracker.log_keras_model(model, splits.x_val[:4])
        metrics["duration_s"] = time.time() - started
        tracker.log_metrics({"duration_s": metrics["duration_s"]})
        result = RunResult(tracker.run_id, tracking_uri, metrics)
        _print_summary(run_name, tracker, metrics)
    return result


def _print_summary(run_name: str, tracker: Tracker, metrics: dict) -> None:
    keys = ["roc_auc", "average_precision", "accuracy", "precision", "recall", "f1", "fpr"]
    keys += [k for k in ("threshold_lower", "threshold_upper") if k in metrics]
    lines = [f"[aead] run {run_name} ({tracker.run_id}) finished"]
    lines += [f"    {k:<18} {metrics[k]:.4f}" for k in keys if k in metrics]
    lines.append(f"    open it: {ui_command(tracker.tracking_uri)}")
    lines.append(f"    then:    {tracker.run_url()}")
    print("\n".join(lines), flush=True)
