"""What a run logs besides its params and metrics: the plots (error histogram, ROC curve,
reconstructions, anomaly maps, flagged outliers), scores.csv, the datasets (MLflow lineage),
the models (mlflow.keras and the deployable pyfunc `detector`) and the closing summary."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from aead import plots
from aead.data.sources import to_uint8
from aead.scoring.maps import smooth
from aead.tracking.runs import Tracker, ui_command

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from aead.data import Splits
    from aead.detectors import FitReport
    from aead.scoring.scores import ScoredImages
    from aead.scoring.thresholds import Threshold

N_RECONSTRUCTIONS = 8
MAX_OUTLIERS_SHOWN = 32

log = logging.getLogger("aead")


def log_fit_report(tracker: Tracker, report: FitReport) -> None:
    for name, values in report.steps.items():
        for step, value in enumerate(values, 1):
            tracker.log_metrics({name: value}, step=step)
    for artifact, frame in report.tables.items():
        tracker.log_dataframe_csv(frame, artifact)


def log_artifacts(
    tracker: Tracker,
    cfg: DictConfig,
    splits: Splits,
    detector,
    scored: ScoredImages,
    threshold: Threshold,
    metrics: dict,
    map_sigma: float,
) -> None:
    labels, scores, predicted = splits.y_test, scored.test, scored.predicted
    reconstructions = scored.reconstructions
    loss = f" / {cfg.loss.name}" if detector.uses_loss else ""
    title = f"{cfg.model.name}{loss} / {cfg.scenario.name}"
    tracker.log_figure(
        plots.error_histogram(
            scores[labels == 0], scores[labels == 1], threshold, scored.label, title
        ),
        "plots/error_histogram.png",
    )
    tracker.log_figure(
        plots.roc_curve(labels, scores, metrics.get("roc_auc"), title), "plots/roc_curve.png"
    )
    if reconstructions is not None:
        rows = {}
        for label, name in ((0, "normal"), (1, "anomaly")):
            index = np.flatnonzero(labels == label)[:N_RECONSTRUCTIONS]
            if len(index):
                rows[name] = (splits.x_test[index], reconstructions[index])
        tracker.log_figure(
            plots.reconstructions(rows, N_RECONSTRUCTIONS), "plots/reconstructions.png"
        )

    log_maps(tracker, splits, detector, reconstructions, scores, map_sigma)
    flagged = np.flatnonzero(predicted)
    worst_first = flagged[np.argsort(-scores[flagged], kind="stable")][:MAX_OUTLIERS_SHOWN]
    captions = [f"{scores[i]:.4f}{' *' if labels[i] else ''}" for i in worst_first]
    tracker.log_figure(
        plots.image_grid(
            splits.x_test[worst_first],
            captions,
            f"{len(flagged)} flagged outliers, highest score first (* = labeled anomaly)",
        ),
        "plots/outliers.png",
    )
    table = {
        "index": np.arange(len(scores)),
        "label": labels.astype(int),
        "score": scores,
        "predicted": predicted.astype(int),
    }
    if splits.test_files:  # images read from files: which file each row is
        table["file"] = splits.test_files
    tracker.log_dataframe_csv(pd.DataFrame(table), "scores.csv")


def log_maps(tracker, splits: Splits, detector, reconstructions, scores, sigma: float, n=8):
    """plots/anomaly_maps.png: the most anomalous test images and two normal ones, each
    with its smoothed map (and its mask's outline where the data has masks)."""
    if not detector.has_maps:
        return
    normal = np.flatnonzero(splits.y_test == 0)[:2]
    worst = np.argsort(-scores, kind="stable")
    worst = worst[~np.isin(worst, normal)][: n - len(normal)]
    shown = np.array([*worst, *normal], dtype=int)
    # and the same test images for every variant of a sweep (chosen from the test set alone),
    # for the sweep report to put the variants' maps side by side; one maps call for both
    sample = map_sample_indices(splits)
    both = np.concatenate([shown, sample])
    given = reconstructions[both] if reconstructions is not None else None
    all_maps = smooth(detector.maps(splits.x_test[both], given), sigma)
    maps, sample_maps = all_maps[: len(shown)], all_maps[len(shown) :]
    masks = splits.test_masks[shown] if splits.test_masks is not None else None
    captions = [f"{scores[i]:.4f}{' *' if splits.y_test[i] else ''}" for i in shown]
    tracker.log_figure(
        plots.anomaly_maps(splits.x_test[shown], maps, captions, masks), "plots/anomaly_maps.png"
    )
    arrays = {
        "index": sample,
        "labels": splits.y_test[sample].astype(np.uint8),
        "images": to_uint8(splits.x_test[sample]),
        "maps": sample_maps.astype(np.float16),
        "scores": scores[sample],
    }
    if splits.test_masks is not None:
        arrays["masks"] = splits.test_masks[sample].astype(np.uint8)
    tracker.log_arrays(arrays, MAP_SAMPLE)


MAP_SAMPLE = "maps/sample.npz"


def map_sample_indices(splits: Splits, anomalies: int = 5, normals: int = 2) -> np.ndarray:
    """Test images for the sweep report's maps figure, from the test set alone: the first
    anomalies (with a defect in their mask, where masks exist) and the first normal ones."""
    abnormal = splits.y_test == 1
    if splits.test_masks is not None:
        abnormal &= splits.test_masks.reshape(len(splits.test_masks), -1).any(axis=1)
    chosen = [*np.flatnonzero(abnormal)[:anomalies], *np.flatnonzero(splits.y_test == 0)[:normals]]
    return np.array(chosen, dtype=int)


def log_models(tracker: Tracker, detector, score, threshold, images, map_sigma: float) -> None:
    """The Keras model (mlflow.keras, where the detector has one) and the deployable pyfunc
    model `detector` (aead.detectors.deploy), with an input example as users send it: uint8 images
    N×H×W (one channel) or N×H×W×C. Both are written by the run's logging thread, beside what
    the run computes next (the test images' scores); the detector's state is taken now."""
    if detector.keras_model() is not None:
        tracker.log_keras_model(detector.keras_model(), images)
    from aead.detectors.deploy import detector_state, log_detector  # MLflow's pyfunc stack

    example = to_uint8(images)
    example = example[..., 0] if example.shape[-1] == 1 else example
    state = detector_state(detector, score, threshold, map_sigma)
    tracker.log_model_soon(log_detector, state, example, detector.image_shape_, detector.kind)


def prepare_model_logging() -> None:
    """What logging the models needs first, for the logging thread to do while the model
    trains: MLflow's model modules imported."""
    import mlflow.keras  # noqa: F401

    import aead.detectors.deploy  # noqa: F401  (mlflow.pyfunc)


def log_datasets(tracker: Tracker, cfg: DictConfig, splits: Splits) -> None:
    """The run's training, validation and test data in MLflow's dataset panel (lineage),
    written by the logging thread (hashing the images takes a while)."""
    source = splits.description.get("source", "unknown")
    normal = splits.description.get("normal", cfg.scenario.name)
    for context, images, labels, what in (
        ("training", splits.x_train, None, f"{normal}, training split"),
        ("validation", splits.x_val, None, f"{normal}, validation split"),
        ("test", splits.x_test, splits.y_test, f"{cfg.scenario.name} test set (label 1 = anomaly)"),
    ):
        tracker.in_background(tracker.log_dataset, images, labels, what, source, context)


def print_summary(run_name: str, tracker: Tracker, metrics: dict, source: str) -> None:
    keys = ["roc_auc", "average_precision", "accuracy", "precision", "recall", "f1", "fpr"]
    keys += [k for k in ("threshold_lower", "threshold_upper") if k in metrics]
    keys += [k for k in ("n_outliers", "planted_flagged", "kfold_roc_auc_mean") if k in metrics]
    keys += [k for k in ("kfold_accuracy_mean",) if k in metrics]
    lines = [f"run {run_name} ({tracker.run_id}) finished; model {source}"]
    lines += [f"    {k:<20} {metrics[k]:.4f}" for k in keys if k in metrics]
    lines.append(f"    open it: {ui_command(tracker.tracking_uri)}")
    lines.append(f"    then:    {tracker.run_url()}")
    log.info("\n".join(lines))
