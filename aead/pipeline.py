"""One run, end to end: data -> model (trained, or reused from the cache) -> scores ->
threshold -> metrics -> MLflow.

Knows nothing of Hydra: it takes a resolved config (an OmegaConf DictConfig) and a RunContext
that the entry point fills in.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from aead import plots
from aead.data import Splits, build_splits
from aead.detectors import (
    EncoderOf,
    ErrorsOf,
    Training,
    TrainingData,
    build_detector,
    detector_class,
)
from aead.detectors.models import model_settings
from aead.errors import ConfigError
from aead.scoring.maps import smooth
from aead.scoring.metrics import detection_metrics
from aead.scoring.pixel_metrics import pixel_metrics
from aead.scoring.scores import Companion, FitContext, Score, Scored, ScoredImages, build_score
from aead.scoring.thresholds import fit_threshold
from aead.settings import config_hash, validate
from aead.store.model_store import ModelStore, cache_dir
from aead.tf_runtime import configure_threads, device_tags, seed_everything, tf_threads
from aead.tracking import lifecycle
from aead.tracking.artifacts import (
    log_artifacts,
    log_datasets,
    log_fit_report,
    log_models,
    prepare_model_logging,
    print_summary,
)
from aead.tracking.runs import Tracker, finished_job_run, flatten, resolve_tracking_uri
from aead.tracking.secrets import redact

log = logging.getLogger("aead")


@dataclass
class RunContext:
    """What the entry point knows about the invocation."""

    base_dir: str = "."  # where the default ./mlruns store and ./.aead_cache live
    overrides: list[str] = field(default_factory=list)
    sweep_id: str | None = None
    job_num: int | None = None
    job_cores: int = field(default_factory=lambda: os.cpu_count() or 1)  # this job's share


@dataclass
class RunResult:
    run_id: str
    tracking_uri: str
    metrics: dict[str, float]
    model_source: str  # "trained" or "reused"; "skipped" when a resumed sweep had it already


def default_run_name(cfg: DictConfig, score: Score | None = None) -> str:
    # a detector the loss group does not apply to (the CNN learns labels with BCE whatever it
    # says; PyOD's detectors) has a name without it
    uses_loss = detector_class(_container(cfg.model)).uses_loss
    loss = f"-{cfg.loss.name}" if uses_loss else ""
    variant = f"{cfg.model.name}{loss}{score.run_name_part if score else ''}"
    return f"{variant}-{cfg.scenario.name}-{cfg.threshold.name}-seed{cfg.seed}"


def _container(node) -> dict:
    return OmegaConf.to_container(node, resolve=True)


def obtain_detector(cfg: DictConfig, splits: Splits, tracker: Tracker, store: ModelStore):
    """The configured detector (conf/model, by its kind), fitted: its model trained, or
    reused from the store when an earlier run trained exactly the same training
    configuration; tags the run with which it was and who trained it."""
    lifecycle.set_stage("training")
    if _logs_models(cfg):  # while the model trains
        tracker.in_background(prepare_model_logging)
    detector = build_detector(_container(cfg.model), _container(cfg.loss))
    if cfg.trainer.get("kfold") and not detector.supports_kfold:
        raise ConfigError("trainer.kfold applies to the supervised model=cnn only")
    data = TrainingData(splits.x_train, splits.x_val, splits.labeled, cfg.scenario.name)
    detector.fit(data, _training(cfg, store, [tracker.epoch_logger()]))
    lifecycle.set_stage("logging")
    got = detector.obtained_
    log_fit_report(tracker, detector.report_)
    if got.source == "reused":
        tracker.log_history(got.history)  # the curves belong to this run's model too
    tags = {
        "aead.model_source": got.source,
        "aead.trained_by_run": got.trained_by,
        "aead.cache_key": got.key[:24],
        "aead.training_loss": detector.training_loss,
    }
    if got.found_in:
        tags["aead.model_found_in"] = got.found_in
    for prefix, helper in detector.helpers().items():
        tags.update(_source_tags(prefix, helper))
    if got.source == "trained" and store.enabled:
        tags["aead.cache_note"] = got.note
    tracker.set_tags(tags)
    if got.history:
        tracker.log_figure(plots.training_curves(got.history), "plots/training_curves.png")
    return detector


def _training(cfg: DictConfig, store: ModelStore, callbacks=()) -> Training:
    return Training(
        _container(cfg.trainer), int(cfg.seed), store, float(cfg.data.val_fraction),
        list(callbacks),
    )  # fmt: skip


def score_context(cfg: DictConfig, detector, tracker: Tracker, store: ModelStore) -> FitContext:
    """What a score may learn from besides the validation errors: the detector's normal
    training images and codes, and other detectors trained on the same images
    (score=companion) or on perturbed ones (score=background), all through the store."""
    training = _training(cfg, store)
    data = TrainingData(detector.normal_train_images_, detector.validation_images_)

    def backgrounds(perturb):
        log.info("background model for score=background:")
        background = detector.background(perturb, training)
        tracker.set_tags(_source_tags("aead.background", background))
        return ErrorsOf(background)

    def companions(model_name: str, loss_name: str | None) -> Companion:
        log.info("companion model for score=companion: %s, %s", model_name, loss_name)
        loss = {"name": loss_name, "score": loss_name} if loss_name else None
        companion = build_detector(model_settings(model_name), loss)
        companion.fit(data, training)
        tag = f"aead.companion.{model_name}" + (f"_{loss_name}" if loss_name else "")
        tracker.set_tags(_source_tags(tag, companion))
        return Companion(ErrorsOf(companion), EncoderOf(companion))

    has_train = detector.normal_train_images_ is not None
    return FitContext(
        train_images=detector.normal_train_images_,
        encoder=detector.encoder(),
        backgrounds=backgrounds if has_train else None,
        companions=companions if has_train else None,
    )


def _source_tags(tag: str, detector) -> dict[str, str]:
    return {f"{tag}_source": detector.obtained_.source,
            f"{tag}_trained_by_run": detector.obtained_.trained_by}  # fmt: skip


def fit_score(cfg, detector, score: Score, splits: Splits, tracker, store) -> ScoredImages:
    """Fits the score on the normal validation images and scores them (the test images come
    after, in score_test)."""
    lifecycle.set_stage("scoring")
    val_out = detector.errors(detector.validation_images_)
    # per-pixel maps of every image: for a score that reads them and for masks
    val_maps = None
    if _needs_maps(detector, score, splits):
        val_maps = detector.maps(detector.validation_images_, val_out.reconstructions)
    validation = Scored(detector.validation_images_, val_out.errors, maps=val_maps)
    score.fit(validation, score_context(cfg, detector, tracker, store))
    lifecycle.set_stage("scoring")
    label = score.describe(detector.error_name)
    return ScoredImages(score(validation), val_maps=val_maps, label=label)


def _needs_maps(detector, score: Score, splits: Splits) -> bool:
    return detector.has_maps and (score.needs_maps or splits.test_masks is not None)


def score_test(detector, score: Score, splits: Splits, scored: ScoredImages) -> None:
    """Scores the test images with the fitted score (into `scored`)."""
    lifecycle.set_stage("scoring")
    test_out = detector.errors(splits.x_test, splits.test_train_index)
    if _needs_maps(detector, score, splits):
        scored.test_maps = detector.maps(splits.x_test, test_out.reconstructions)
    test = Scored(splits.x_test, test_out.errors, splits.test_train_index, scored.test_maps)
    scored.test, scored.reconstructions = score(test), test_out.reconstructions


def _logs_models(cfg: DictConfig) -> bool:
    return bool(cfg.tracking.get("log_model", True))


def log_models_beside_scoring(tracker, cfg, detector, score, threshold, splits) -> None:
    """The fitted models, handed to the run's logging thread, which writes them while the
    test images are scored (tracking.log_model: false logs none)."""
    if _logs_models(cfg):
        lifecycle.set_stage("logging")
        log_models(tracker, detector, score, threshold, splits.x_test[:4], _map_sigma(cfg))


def evaluate(cfg, splits: Splits, detector, scored: ScoredImages, threshold) -> dict:
    """Image-level metrics (and pixel-level ones where the data has masks)."""
    scored.predicted = threshold.flag(scored.test)
    metrics = detection_metrics(splits.y_test, scored.test, scored.predicted)
    metrics.update(threshold.as_metrics())
    metrics.update(_scenario_metrics(cfg, splits.y_test, scored.test, scored.predicted))
    metrics["mean_score_validation"] = float(scored.validation.mean())
    metrics.update(detector.report_.metrics)
    if scored.test_maps is not None and splits.test_masks is not None:
        metrics.update(_pixel_metrics(cfg, splits.test_masks, scored.val_maps, scored.test_maps))
    return metrics


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


def _map_sigma(cfg: DictConfig) -> float:
    """maps.sigma: the smoothing of the maps a run draws, evaluates and deploys."""
    return float((cfg.get("maps") or {}).get("sigma", 1.0))


def _pixel_metrics(cfg: DictConfig, masks, val_maps, test_maps) -> dict[str, float]:
    """Pixel-level figures of the smoothed maps against the masks; the pixel threshold is
    the run's threshold fitted on the validation (normal) images' pixels, as image
    thresholds are fitted on their scores."""
    sigma = _map_sigma(cfg)
    val_pixels = smooth(val_maps, sigma).ravel()
    pixel_threshold = fit_threshold(cfg.threshold, val_pixels)
    out = pixel_metrics(masks, smooth(test_maps, sigma), pixel_threshold)
    out.update({f"pixel_{k}": v for k, v in pixel_threshold.as_metrics().items()})
    return out


def run(cfg: DictConfig, context: RunContext | None = None) -> RunResult:
    """Train (or reuse), score and log one variant as one MLflow run; returns its metrics.
    In a resumed sweep, a job that already has a FINISHED run is skipped (that run returned)."""
    validate(cfg)  # every numeric setting, before any work
    context = context or RunContext()
    started = time.time()
    start_up(cfg, context)
    tracking_uri = resolve_tracking_uri(context.base_dir, cfg.tracking.get("uri"))
    # built first: a bad score setting fails before anything is trained
    score = build_score(_container(cfg.get("score") or {"name": "raw"}))
    run_name = cfg.get("run_name") or default_run_name(cfg, score)
    job_hash = config_hash(cfg)
    done = _finished_before(cfg, context, tracking_uri, job_hash, run_name)
    if done is not None:
        return done
    tags = _run_tags(cfg, context, job_hash)
    heartbeat_s = cfg.tracking.get("heartbeat_s") or 30.0
    with Tracker(tracking_uri, cfg.experiment_name, run_name, tags, heartbeat_s) as tracker:
        _log_config(tracker, cfg)
        splits = load_data(cfg, context, tracker)
        store = ModelStore.for_run(cfg.get("cache"), context.base_dir, tracking_uri, tracker.run_id)
        detector = obtain_detector(cfg, splits, tracker, store)
        scored = fit_score(cfg, detector, score, splits, tracker, store)
        threshold = fit_threshold(cfg.threshold, scored.validation)
        log_models_beside_scoring(tracker, cfg, detector, score, threshold, splits)
        score_test(detector, score, splits, scored)
        metrics = evaluate(cfg, splits, detector, scored, threshold)
        log_results(tracker, cfg, splits, detector, scored, threshold, metrics, started)
        result = RunResult(tracker.run_id, tracking_uri, metrics, detector.obtained_.source)
        print_summary(run_name, tracker, metrics, detector.obtained_.source)
    lifecycle.set_stage("finished")
    return result


def start_up(cfg: DictConfig, context: RunContext) -> None:
    """The stage clock, TensorFlow's thread pools (this job's share of the cores), seeds."""
    lifecycle.set_stage("start-up")
    lifecycle.reset_stage_times()
    configure_threads(tf_threads(cfg.get("compute", {}).get("threads"), context.job_cores))
    seed_everything(cfg.seed)


def _finished_before(cfg, context: RunContext, tracking_uri: str, job_hash: str, run_name: str):
    """In a resumed sweep: the FINISHED run of this job, as a RunResult (else None)."""
    if not context.sweep_id:
        return None
    done = finished_job_run(tracking_uri, cfg.experiment_name, context.sweep_id, job_hash)
    if done is None:
        return None
    log.info(
        "job %s (%s) already FINISHED in sweep %s as run %s: skipped",
        context.job_num, run_name, context.sweep_id, done["run_id"],
    )  # fmt: skip
    return RunResult(done["run_id"], tracking_uri, done["metrics"], "skipped")


def _run_tags(cfg: DictConfig, context: RunContext, job_hash: str) -> dict[str, str]:
    import tensorflow as tf

    tags = {
        "aead.model": cfg.model.name,
        "aead.scenario": cfg.scenario.name,
        "aead.config_hash": job_hash,
        "aead.tf_threads": str(tf.config.threading.get_intra_op_parallelism_threads()),
        **device_tags(),
    }
    if context.sweep_id:
        tags["sweep_id"] = context.sweep_id
        tags["sweep_job"] = str(context.job_num)
    tags["overrides"] = redact(" ".join(context.overrides)) or "(none)"
    return tags


def _log_config(tracker: Tracker, cfg: DictConfig) -> None:
    lifecycle.set_stage("logging")
    # params first: a run that fails (even on missing data) is recorded with its config
    tracker.log_params(flatten(_container(cfg)))
    tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")


def load_data(cfg: DictConfig, context: RunContext, tracker: Tracker) -> Splits:
    """The scenario's training, validation and test images, described on the run."""
    lifecycle.set_stage("data")
    # decoded image folders (data.decode_cache): data.cache_dir, else <cache.dir>/images
    images = cfg.data.get("cache_dir") or cache_dir(cfg.get("cache"), context.base_dir) / "images"
    images_cache = Path(images)
    splits = build_splits(cfg.scenario, cfg.data, seed=int(cfg.seed), cache_dir=images_cache)
    lifecycle.set_stage("logging")
    tracker.set_tags({f"data.{k}": v for k, v in splits.description.items()})
    tracker.set_tags({"data.image_shape": "×".join(map(str, splits.x_test.shape[1:]))})
    log_datasets(tracker, cfg, splits)
    tracker.log_metrics(
        {
            "n_train": len(splits.x_train),
            "n_val": len(splits.x_val),
            "n_test": len(splits.x_test),
            "data_skipped_files": len(splits.skipped_files),
        }
    )
    if splits.skipped_files:  # data.on_corrupt=skip: which files, and why
        tracker.log_text("\n".join(splits.skipped_files) + "\n", "data/skipped_files.txt")
    return splits


def log_results(tracker, cfg, splits, detector, scored, threshold, metrics, started):
    """Metrics, plots, scores.csv, and where the time went per stage (once the logging thread
    has written the models)."""
    lifecycle.set_stage("logging")
    tracker.log_metrics(metrics)
    log_artifacts(tracker, cfg, splits, detector, scored, threshold, metrics, _map_sigma(cfg))
    tracker.wait_for_background()
    metrics["duration_s"] = time.time() - started
    # where the time went, per stage (training includes the epochs' logging)
    times = {
        f"time_{name.replace(' ', '_').replace('-', '_')}_s": seconds
        for name, seconds in lifecycle.stage_times().items()
    }
    tracker.log_metrics({"duration_s": metrics["duration_s"], **times})
