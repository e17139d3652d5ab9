"""One run, end to end: data -> model (trained, or reused from the cache) -> scores ->
threshold -> metrics -> MLflow.

Knows nothing of Hydra: it takes a resolved config (an OmegaConf DictConfig) and a RunContext
that the entry point fills in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf

from aead import lifecycle, plots, shared_models
from aead.cache import ModelCache, training_key
from aead.data import Splits, build_splits
from aead.errors import ConfigError
from aead.losses import model_errors
from aead.maps import pixel_maps, smooth
from aead.metrics import detection_metrics
from aead.models import Encoder, model_settings
from aead.pixel_metrics import pixel_metrics
from aead.scores import Companion, FitContext, Score, Scored, build_score
from aead.secrets import redact
from aead.settings import ADDED_DEFAULTS, ADDED_GROUPS, validate
from aead.thresholds import Threshold, fit_threshold
from aead.tracking import (
    Tracker,
    finished_job_run,
    flatten,
    resolve_tracking_uri,
    retrying,
    ui_command,
)
from aead.training import (
    classifier_split,
    cross_validate_classifier,
    require_labels,
    train_autoencoder,
    train_classifier,
)

N_RECONSTRUCTIONS = 8
MAX_OUTLIERS_SHOWN = 32

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


@dataclass
class Detector:
    """A trained model and how to score images with it."""

    model: keras.Model
    kind: str  # "autoencoder" or "classifier"
    error_name: str  # the per-image error (loss.score), or "probability" for a classifier
    threshold_images: np.ndarray  # held-out normal validation images the threshold is fit on
    source: str  # "trained" here, or "reused" from the cache

    score_label: str = ""  # how plots name the run's score

    def errors(self, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(per-image errors, or probabilities for a classifier; reconstructions or None)."""
        return model_errors(self.model, self.kind, self.error_name, images, batch_size)

    def maps(self, images: np.ndarray, reconstructions: np.ndarray | None, sigma: float = 0.0):
        """Per-pixel anomaly maps N×H×W of the error (aead.maps); None for a classifier."""
        if reconstructions is None:
            return None
        return pixel_maps(images, reconstructions, self.error_name, sigma)

    def encoder(self, batch_size: int) -> Encoder | None:
        """images -> the autoencoder's bottleneck codes (and its stages); None for a
        classifier."""
        return None if self.kind == "classifier" else Encoder(self.model, batch_size)


# Settings that change where or how a run is recorded or computed, not its result: they are
# left out of the config hash that identifies a sweep's job when the sweep is resumed.
NOT_RESULT = ("tracking", "cache", "compute", "run_name")
NOT_RESULT_TRAINER = ("verbose",)
NOT_RESULT_DATA = ("decode_cache", "cache_dir", "max_memory_gb")


def config_hash(cfg: DictConfig) -> str:
    """SHA-256 of the resolved config (seed included), minus NOT_RESULT settings."""
    config = {k: v for k, v in _container(cfg).items() if k not in NOT_RESULT}
    trainer = config.get("trainer") or {}
    config["trainer"] = {k: v for k, v in trainer.items() if k not in NOT_RESULT_TRAINER}
    if "data" in config:
        config["data"] = {k: v for k, v in config["data"].items() if k not in NOT_RESULT_DATA}
    for group, defaults in ADDED_DEFAULTS.items():
        if isinstance(config.get(group), dict):
            kept = {k: v for k, v in config[group].items() if defaults.get(k, object()) != v}
            if kept or group not in ADDED_GROUPS:
                config[group] = kept
            else:
                del config[group]
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def tf_threads(setting, job_cores: int) -> int:
    """compute.threads: a number, or 'auto' = the cores this job may use (see aead.run)."""
    if setting in (None, "auto"):
        return max(1, int(job_cores))
    threads = int(setting)
    if threads < 1:
        raise ConfigError(f"compute.threads must be 'auto' or a positive number, got {setting}")
    return threads


def configure_threads(threads: int) -> None:
    """Size TensorFlow's thread pools, so that parallel jobs do not oversubscribe the cores.
    Only possible before TF's runtime starts; a process that runs a second job keeps them."""
    for setter in (
        tf.config.threading.set_intra_op_parallelism_threads,
        tf.config.threading.set_inter_op_parallelism_threads,
    ):
        try:
            setter(threads)
        except RuntimeError:
            pass  # already initialized by an earlier job in this process


def device_tags() -> dict[str, str]:
    """Where this run computes: the GPU TensorFlow sees (else the CPU) and TensorFlow's build."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        device = f"GPU ({details.get('device_name', gpus[0].name)})"
        device += f" + {len(gpus) - 1} more" if len(gpus) > 1 else ""
    else:
        device = f"CPU ({os.cpu_count()} cores)"
    build = tf.sysconfig.get_build_info()
    if build.get("is_cuda_build"):
        kind = f"CUDA {build.get('cuda_version', '?')}, cuDNN {build.get('cudnn_version', '?')}"
    else:
        kind = "no CUDA"
    return {"aead.device": device, "aead.tensorflow": f"{tf.__version__} ({kind})"}


def seed_everything(seed: int) -> None:
    """Same config, same numbers: seeds Python, NumPy and TF, and makes TF ops deterministic.
    Each model is seeded again right before it is built (training.seeded_model)."""
    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()


def default_run_name(cfg: DictConfig, score: Score | None = None) -> str:
    # a classifier learns labels with BCE whatever the loss group says, so its name omits it
    loss = "" if cfg.model.kind == "classifier" else f"-{cfg.loss.name}"
    variant = f"{cfg.model.name}{loss}{score.run_name_part if score else ''}"
    return f"{variant}-{cfg.scenario.name}-{cfg.threshold.name}-seed{cfg.seed}"


def _container(node) -> dict:
    return OmegaConf.to_container(node, resolve=True)


def obtain_detector(
    cfg: DictConfig, splits: Splits, tracker: Tracker, cache: ModelCache | None, shared=None
) -> Detector:
    """Train the configured model, or reuse the one an earlier run trained on exactly the same
    training configuration; tags the run with which it was and who trained it. Jobs running
    side by side that need the same model wait for the one training it, then reuse it."""
    trainer = _container(cfg.trainer)
    classifier = cfg.model.kind == "classifier"
    if classifier:
        labeled = require_labels(splits.labeled, cfg.scenario.name)
        split = classifier_split(labeled, float(cfg.data.val_fraction), int(cfg.seed))
        data_arrays = split
        loss_name = "binary_crossentropy"  # the CNN learns labels; the loss group does not apply
        threshold_images = split[2][split[3] == 0]  # normal validation images
    else:
        split = None
        data_arrays = (splits.x_train, splits.x_val)
        loss_name = cfg.loss.name
        threshold_images = splits.x_val
    key, fields = training_key(_container(cfg.model), loss_name, trainer, cfg.seed, data_arrays)

    def train():
        callbacks = [tracker.epoch_logger()]
        seed = int(cfg.seed)
        if classifier:
            return train_classifier(
                _container(cfg.model), trainer, *split, seed=seed, callbacks=callbacks
            )
        return train_autoencoder(
            _container(cfg.model), loss_name, trainer, splits.x_train, splits.x_val,
            seed=seed, callbacks=callbacks,
        )  # fmt: skip

    got = train_or_reuse(cache, key, fields, train, tracker, shared)
    if got.source == "reused":
        tracker.log_history(got.history)  # the curves belong to this run's model too
    lifecycle.set_stage("logging")
    tags = {
        "aead.model_source": got.source,
        "aead.trained_by_run": got.trained_by,
        "aead.cache_key": key[:24],
        "aead.training_loss": loss_name,
    }
    if got.found_in:
        tags["aead.model_found_in"] = got.found_in
    if got.source == "trained" and cache:
        tags["aead.cache_note"] = got.note
    tracker.set_tags(tags)
    tracker.log_figure(plots.training_curves(got.history), "plots/training_curves.png")
    error_name = "probability" if classifier else cfg.loss.score
    return Detector(got.model, cfg.model.kind, error_name, threshold_images, got.source)


@dataclass
class Obtained:
    """A model and how it was obtained: source 'trained' or 'reused', from where."""

    model: object
    history: dict
    source: str
    trained_by: str
    note: str  # why it was trained (no entry, a corrupt one) or where it was found
    found_in: str  # "local cache", "tracking server" or "" (trained here)


def train_or_reuse(
    cache: ModelCache | None, key: str, fields: dict, train, tracker: Tracker, shared=None
) -> Obtained:
    """The model cached under key, else train() -> (model, history), stored under key.
    Jobs running side by side that need the same key: one trains, the others wait, reuse.
    With `shared` (aead.shared_models, a tracking server), the same holds across machines:
    a model missing here is looked for on the server, and one trained here is uploaded."""

    def announce_wait(owner: str = "") -> None:
        who = f"run {owner}" if owner else "another job"
        log.info("waiting for %s, which is training this model (%s)", who, key[:12])

    lock = cache.training_lock(key, on_wait=announce_wait) if cache else contextlib.nullcontext()
    with lock:
        cached, reason = cache.load(key) if cache else (None, "cache disabled")
        if cached is not None:
            log.info("reusing the model trained by run %s", cached.trained_by_run)
            model, history, trained_by = cached.model, cached.history, cached.trained_by_run
            return Obtained(model, history, "reused", trained_by, reason, "local cache")
        if cache and reason != "not cached yet":
            log.info("%s: retraining", reason)
        if cache is None or shared is None:
            model, history = train()
            if cache:
                cache.store(key, fields, model, history, tracker.run_id)
            return Obtained(model, history, "trained", tracker.run_id, reason, "")
        with shared.claim(key, on_wait=announce_wait) as holder:
            if holder is not None:
                cached, why = _fetch_shared(cache, shared, key, holder)
                if cached is not None:
                    log.info("reusing the model trained by run %s (from the tracking server)",
                             cached.trained_by_run)  # fmt: skip
                    model, history, trained_by = cached.model, cached.history, cached.trained_by_run
                    return Obtained(model, history, "reused", trained_by, why, "tracking server")
                log.info("%s: retraining", why)
                reason = why
            model, history = train()
            shared.upload(key, cache.store(key, fields, model, history, tracker.run_id))
        return Obtained(model, history, "trained", tracker.run_id, reason, "")


def _fetch_shared(cache: ModelCache, shared, key: str, run_id: str):
    """Downloads run_id's entry for key into the local cache; (entry, note) as cache.load."""
    staging = cache.staging()
    try:
        folder = shared.download(key, run_id, staging)
        cache.publish(key, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    cached, reason = cache.load(key)
    return cached, (f"found on the tracking server in run {run_id}" if cached else reason)


def _auxiliary_model(
    cfg, model_cfg: dict, loss_name: str, data, tracker, cache, shared, tag: str, error_name=None
) -> Detector:
    """Trains (or reuses, through the cache) an autoencoder other than the run's own, with the
    run's trainer settings and seed; tags the run `<tag>_source` / `<tag>_trained_by_run`.
    Its errors are `error_name` (default: the training loss)."""
    trainer = _container(cfg.trainer)
    key, fields = training_key(model_cfg, loss_name, trainer, cfg.seed, data)

    def train():
        return train_autoencoder(model_cfg, loss_name, trainer, *data, seed=int(cfg.seed))

    got = train_or_reuse(cache, key, fields, train, tracker, shared)
    tracker.set_tags({f"{tag}_source": got.source, f"{tag}_trained_by_run": got.trained_by})
    return Detector(got.model, "autoencoder", error_name or loss_name, data[1], got.source)


def background_factory(cfg: DictConfig, splits: Splits, tracker: Tracker, cache, shared=None):
    """For score=background: trains (or reuses) the run's autoencoder on perturbed normal
    images and returns its per-image error function. None for a classifier."""
    if cfg.model.kind == "classifier":
        return None

    def factory(perturb):
        log.info("background model for score=background:")
        data = (perturb(splits.x_train), perturb(splits.x_val))
        background = _auxiliary_model(
            cfg, _container(cfg.model), cfg.loss.name, data, tracker, cache, shared,
            "aead.background", error_name=cfg.loss.score,
        )  # fmt: skip
        return lambda images: background.errors(images, int(cfg.trainer.batch_size))[0]

    return factory


def companion_factory(cfg: DictConfig, splits: Splits, tracker: Tracker, cache, shared=None):
    """For score=companion: trains (or reuses) another autoencoder, conf/model/<name> with the
    given loss, on the run's normal images; None for a classifier. Tags
    aead.companion.<model>_<loss>_source / _trained_by_run."""
    if cfg.model.kind == "classifier":
        return None

    def factory(model_name: str, loss_name: str) -> Companion:
        model_cfg = model_settings(model_name)
        if model_cfg.get("kind") != "autoencoder":
            raise ConfigError(f"score.model must be an autoencoder, got {model_name}")
        log.info("companion model for score=companion: %s, %s", model_name, loss_name)
        data = (splits.x_train, splits.x_val)
        tag = f"aead.companion.{model_name}_{loss_name}"
        companion = _auxiliary_model(cfg, model_cfg, loss_name, data, tracker, cache, shared, tag)
        batch = int(cfg.trainer.batch_size)
        return Companion(
            lambda images: companion.errors(images, batch)[0], companion.encoder(batch)
        )

    return factory


def _kfold(cfg: DictConfig, splits: Splits, tracker: Tracker) -> dict[str, float]:
    k = int(cfg.trainer.kfold)
    labeled = require_labels(splits.labeled, cfg.scenario.name)
    folds = cross_validate_classifier(
        _container(cfg.model),
        _container(cfg.trainer),
        labeled,
        k,
        float(cfg.data.val_fraction),
        int(cfg.seed),
    )
    for fold in folds:
        tracker.log_metrics(
            {"fold_roc_auc": fold["roc_auc"], "fold_accuracy": fold["accuracy"]}, step=fold["fold"]
        )
    tracker.log_dataframe_csv(pd.DataFrame(folds), "kfold.csv")
    summary = {}
    for metric in ("roc_auc", "accuracy"):
        values = np.array([f[metric] for f in folds])
        summary[f"kfold_{metric}_mean"] = float(values.mean())
        summary[f"kfold_{metric}_std"] = float(values.std(ddof=1))
    summary["kfold_k"] = k
    return summary


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
    detector: Detector,
    reconstructions: np.ndarray | None,
    scores: np.ndarray,
    predicted: np.ndarray,
    threshold: Threshold,
    metrics: dict,
) -> None:
    labels = splits.y_test
    title = f"{cfg.model.name} / {cfg.loss.name} / {cfg.scenario.name}"
    tracker.log_figure(
        plots.error_histogram(
            scores[labels == 0], scores[labels == 1], threshold, detector.score_label, title
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

    _log_maps(tracker, cfg, splits, detector, reconstructions, scores)
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


def _log_maps(tracker, cfg, splits: Splits, detector, reconstructions, scores, n: int = 8):
    """plots/anomaly_maps.png: the most anomalous test images and two normal ones, each
    with its smoothed map (and its mask's outline where the data has masks)."""
    if reconstructions is None:
        return
    normal = np.flatnonzero(splits.y_test == 0)[:2]
    worst = np.argsort(-scores, kind="stable")
    worst = worst[~np.isin(worst, normal)][: n - len(normal)]
    shown = np.array([*worst, *normal], dtype=int)
    maps = detector.maps(splits.x_test[shown], reconstructions[shown], _map_sigma(cfg))
    masks = splits.test_masks[shown] if splits.test_masks is not None else None
    captions = [f"{scores[i]:.4f}{' *' if splits.y_test[i] else ''}" for i in shown]
    tracker.log_figure(
        plots.anomaly_maps(splits.x_test[shown], maps, captions, masks), "plots/anomaly_maps.png"
    )


def _log_detector(
    tracker: Tracker, detector: Detector, score, threshold, batch, images, map_sigma: float
) -> None:
    """The deployable pyfunc model `detector` (aead.detector), with an input example as users
    send it: uint8 images N×H×W (one channel) or N×H×W×C."""
    if not score.deployable:
        tracker.set_tags({"aead.detector": f"not logged: score={score.name} is not deployable"})
        return
    from aead.detector import log_detector  # MLflow's pyfunc stack: only when logging one

    example = np.round(images * 255).astype(np.uint8)
    example = example[..., 0] if example.shape[-1] == 1 else example
    retrying(
        log_detector, detector.model, detector.kind, detector.error_name, score, threshold,
        batch, example, map_sigma,
    )  # fmt: skip


def _log_datasets(tracker: Tracker, cfg: DictConfig, splits: Splits) -> None:
    """The run's training, validation and test data in MLflow's dataset panel (lineage)."""
    source = splits.description.get("source", "unknown")
    normal = splits.description.get("normal", cfg.scenario.name)
    for context, images, labels, what in (
        ("training", splits.x_train, None, f"{normal}, training split"),
        ("validation", splits.x_val, None, f"{normal}, validation split"),
        ("test", splits.x_test, splits.y_test, f"{cfg.scenario.name} test set (label 1 = anomaly)"),
    ):
        tracker.log_dataset(images, labels, what, source, context)


def _cache_dir(cfg: DictConfig, context: RunContext) -> Path:
    return Path((cfg.get("cache") or {}).get("dir") or Path(context.base_dir) / ".aead_cache")


def _cache(cfg: DictConfig, context: RunContext) -> ModelCache | None:
    if not (cfg.get("cache") or {}).get("enabled", True):
        return None
    return ModelCache(_cache_dir(cfg, context))


def _images_cache(cfg: DictConfig, context: RunContext) -> Path:
    """Where decoded image folders are kept (data.decode_cache): data.cache_dir, else
    <cache.dir>/images."""
    return Path(cfg.data.get("cache_dir") or _cache_dir(cfg, context) / "images")


def _shared_models(cfg: DictConfig, tracker: Tracker):
    """The tracking server as a model store shared by every worker (cache.shared)."""
    settings = cfg.get("cache") or {}
    try:
        on = shared_models.enabled(settings.get("shared", "auto"), tracker.tracking_uri)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not on or not settings.get("enabled", True):
        return None
    return shared_models.SharedModels(tracker.tracking_uri, tracker.run_id)


def run(cfg: DictConfig, context: RunContext | None = None) -> RunResult:
    """Train (or reuse), score and log one variant as one MLflow run; returns its metrics.
    In a resumed sweep, a job that already has a FINISHED run is skipped (that run returned)."""
    validate(cfg)  # every numeric setting, before any work
    context = context or RunContext()
    started = time.time()
    lifecycle.set_stage("start-up")
    lifecycle.reset_stage_times()
    configure_threads(tf_threads(cfg.get("compute", {}).get("threads"), context.job_cores))
    seed_everything(cfg.seed)
    tracking_uri = resolve_tracking_uri(context.base_dir, cfg.tracking.get("uri"))
    # built first: a bad score setting fails before anything is trained
    score = build_score(_container(cfg.get("score") or {"name": "raw"}))
    run_name = cfg.get("run_name") or default_run_name(cfg, score)
    job_hash = config_hash(cfg)
    if context.sweep_id:
        done = finished_job_run(tracking_uri, cfg.experiment_name, context.sweep_id, job_hash)
        if done is not None:
            log.info(
                "job %s (%s) already FINISHED in sweep %s as run %s: skipped",
                context.job_num, run_name, context.sweep_id, done["run_id"],
            )  # fmt: skip
            return RunResult(done["run_id"], tracking_uri, done["metrics"], "skipped")
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
    heartbeat_s = cfg.tracking.get("heartbeat_s") or 30.0
    with Tracker(tracking_uri, cfg.experiment_name, run_name, tags, heartbeat_s) as tracker:
        lifecycle.set_stage("logging")
        # params first: a run that fails (even on missing data) is recorded with its config
        tracker.log_params(flatten(_container(cfg)))
        tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        lifecycle.set_stage("data")
        splits = build_splits(
            cfg.scenario, cfg.data, seed=int(cfg.seed), cache_dir=_images_cache(cfg, context)
        )
        lifecycle.set_stage("logging")
        tracker.set_tags({f"data.{k}": v for k, v in splits.description.items()})
        tracker.set_tags({"data.image_shape": "×".join(map(str, splits.x_test.shape[1:]))})
        _log_datasets(tracker, cfg, splits)
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
        extra = {}
        if cfg.trainer.get("kfold"):
            if cfg.model.kind != "classifier":
                raise ConfigError("trainer.kfold applies to the supervised model=cnn only")
            lifecycle.set_stage("k-fold training")
            extra = _kfold(cfg, splits, tracker)

        lifecycle.set_stage("training")
        cache = _cache(cfg, context)
        shared = _shared_models(cfg, tracker)
        detector = obtain_detector(cfg, splits, tracker, cache, shared)
        lifecycle.set_stage("scoring")
        batch = int(cfg.trainer.batch_size)
        val_errors, val_reconstructions = detector.errors(detector.threshold_images, batch)
        errors, reconstructions = detector.errors(splits.x_test, batch)
        # per-pixel maps of every image: for a score that reads them and for masks
        val_maps = test_maps = None
        if score.needs_maps or splits.test_masks is not None:
            val_maps = detector.maps(detector.threshold_images, val_reconstructions)
            test_maps = detector.maps(splits.x_test, reconstructions)
        validation = Scored(detector.threshold_images, val_errors, maps=val_maps)
        score.fit(
            validation,
            FitContext(
                train_images=splits.x_train if cfg.model.kind != "classifier" else None,
                encoder=detector.encoder(batch),
                backgrounds=background_factory(cfg, splits, tracker, cache, shared),
                companions=companion_factory(cfg, splits, tracker, cache, shared),
            ),
        )
        lifecycle.set_stage("scoring")
        val_scores = score(validation)
        scores = score(Scored(splits.x_test, errors, splits.test_train_index, test_maps))
        detector.score_label = score.describe(detector.error_name)

        threshold = fit_threshold(cfg.threshold, val_scores)
        predicted = threshold.flag(scores)
        metrics = detection_metrics(splits.y_test, scores, predicted)
        metrics.update(threshold.as_metrics())
        metrics.update(_scenario_metrics(cfg, splits.y_test, scores, predicted))
        metrics["mean_score_validation"] = float(val_scores.mean())
        metrics.update(extra)
        if test_maps is not None and splits.test_masks is not None:
            metrics.update(_pixel_metrics(cfg, splits.test_masks, val_maps, test_maps))
        lifecycle.set_stage("logging")
        tracker.log_metrics(metrics)
        _log_artifacts(
            tracker, cfg, splits, detector, reconstructions, scores, predicted, threshold, metrics
        )
        if cfg.tracking.get("log_model", True):
            tracker.log_keras_model(detector.model, splits.x_test[:4])
            _log_detector(
                tracker, detector, score, threshold, batch, splits.x_test[:4], _map_sigma(cfg)
            )
        metrics["duration_s"] = time.time() - started
        # where the time went, per stage (training includes the epochs' logging)
        times = {
            f"time_{name.replace(' ', '_').replace('-', '_')}_s": seconds
            for name, seconds in lifecycle.stage_times().items()
        }
        tracker.log_metrics({"duration_s": metrics["duration_s"], **times})
        result = RunResult(tracker.run_id, tracking_uri, metrics, detector.source)
        _print_summary(run_name, tracker, metrics, detector.source)
    lifecycle.set_stage("finished")
    return result


def _print_summary(run_name: str, tracker: Tracker, metrics: dict, source: str) -> None:
    keys = ["roc_auc", "average_precision", "accuracy", "precision", "recall", "f1", "fpr"]
    keys += [k for k in ("threshold_lower", "threshold_upper") if k in metrics]
    keys += [k for k in ("n_outliers", "planted_flagged", "kfold_roc_auc_mean") if k in metrics]
    keys += [k for k in ("kfold_accuracy_mean",) if k in metrics]
    lines = [f"run {run_name} ({tracker.run_id}) finished; model {source}"]
    lines += [f"    {k:<20} {metrics[k]:.4f}" for k in keys if k in metrics]
    lines.append(f"    open it: {ui_command(tracker.tracking_uri)}")
    lines.append(f"    then:    {tracker.run_url()}")
    log.info("\n".join(lines))
