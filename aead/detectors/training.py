"""Training: autoencoders on images, the supervised CNN on labeled images (class weights,
early stopping, optional K-fold cross-validation). Keras only; logging goes through callbacks."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Mapping

import keras
import numpy as np
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, train_test_split

from aead.data import LabeledSet
from aead.detectors.losses import get_loss, require_fits
from aead.detectors.models import OnUnitImages, build_model, predict
from aead.errors import ConfigError
from aead.tracking import lifecycle

log = logging.getLogger("aead")


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """w_c = N / (2 * N_c): each class weighs as much in total as the other."""
    labels = np.asarray(labels).astype(int)
    counts = np.bincount(labels, minlength=2)
    if (counts == 0).any():
        raise ValueError(f"class weights need both classes; counts are {counts.tolist()}")
    return {c: float(len(labels) / (2 * counts[c])) for c in (0, 1)}


def _verbosity(setting) -> int:
    if setting in (None, "auto"):
        # a bar on a terminal; elsewhere EpochProgress's logged line per epoch is the progress
        return 1 if sys.stdout.isatty() else 0
    return int(setting)


class EpochProgress(keras.callbacks.Callback):
    """One logged line per epoch ("epoch 3/20: loss 0.0141, val_loss 0.0140 (1.2 s)"), so that
    Hydra's job log files hold the progress too."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        values = ", ".join(f"{k} {float(v):.4g}" for k, v in (logs or {}).items())
        seconds = time.monotonic() - getattr(self, "started", time.monotonic())
        log.info("epoch %d/%d: %s (%.1f s)", epoch + 1, self.epochs, values, seconds)


class TrainingMonitor(keras.callbacks.Callback):
    """Records the epoch being trained (for the end reason of an interrupted run) and stops
    training at the end of the epoch whose loss turned NaN or infinite, saying what to
    change."""

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1
        lifecycle.set_stage("training", self.epoch)

    def _check(self, logs, keys):
        for key in keys:
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(float(value)):
                self.model.stop_training = True
                name = "loss" if key == "loss" else key
                raise lifecycle.TrainingDiverged(
                    f"training diverged at epoch {self.epoch} ({name} = {float(value)}); "
                    "lower trainer.learning_rate"
                )

    def on_train_batch_end(self, batch, logs=None):
        # a signal received during the batch ends training here; the loss is checked at the
        # epoch's end: reading it after every batch would wait for each batch to finish
        # (no overlap of TensorFlow's work with the next batch's dispatch)
        lifecycle.raise_pending()

    def on_test_batch_end(self, batch, logs=None):
        lifecycle.raise_pending()

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, ("loss", "val_loss"))


def _callbacks(trainer: Mapping, extra: list) -> list:
    # the monitor first: a diverged epoch must not reach the epoch logger or early stopping
    callbacks = [TrainingMonitor(), *extra, EpochProgress(int(trainer["epochs"]))]
    if trainer.get("patience"):
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=int(trainer["patience"]), restore_best_weights=True
            )
        )
    return callbacks


def seeded_model(model_cfg: Mapping, seed: int, shape=None, builder=build_model) -> keras.Model:
    """Builds the model (`builder(model_cfg, shape)`) right after seeding Python, NumPy and
    TensorFlow with `seed`, so that its initial weights and its batch order depend only on
    what it is (its training configuration, seed included), never on what this process built
    or trained before it: a model cached by one run is the model another run would have
    trained itself."""
    keras.utils.set_random_seed(int(seed))
    return builder(model_cfg, shape)


def compile_model(model: keras.Model, trainer: Mapping, loss) -> keras.Model:
    optimizer = keras.optimizers.Adam(learning_rate=float(trainer["learning_rate"]))
    model.compile(optimizer=optimizer, loss=loss)
    return model


def fit_model(
    model: keras.Model,
    x,
    y,
    validation,
    trainer: Mapping,
    callbacks,
    reconstructs=False,
    **options,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """model trained on x (uint8 images are converted to float a batch at a time; with
    `reconstructs`, an autoencoder, y and the validation targets are x itself)."""
    fitted = model
    if getattr(x, "dtype", None) == np.uint8:
        fitted = OnUnitImages(model, reconstructs)
        fitted.compile(optimizer=model.optimizer, loss=model.loss)
        if reconstructs:  # the target is the converted batch: no second array to slice
            y, validation = None, (validation[0],)
    # a signal must not cut TensorFlow's work in half: it ends training between two batches
    with lifecycle.critical():
        history = fitted.fit(
            x,
            y,
            validation_data=validation,
            epochs=int(trainer["epochs"]),
            batch_size=int(trainer["batch_size"]),
            shuffle=True,
            callbacks=_callbacks(trainer, callbacks),
            verbose=_verbosity(trainer.get("verbose")),
            **options,
        )
    return model, {"train_loss": history.history["loss"], "val_loss": history.history["val_loss"]}


def train_autoencoder(
    model_cfg: Mapping, loss_name: str, trainer: Mapping, x_train, x_val, *, seed: int, callbacks=()
) -> tuple[keras.Model, dict[str, list[float]]]:
    require_fits(loss_name, x_train.shape[1:])
    model = seeded_model(model_cfg, seed, x_train.shape[1:])
    model = compile_model(model, trainer, get_loss(loss_name))
    log.info(
        "training %s (%s parameters) with %s on %s images, validating on %s",
        model.name, f"{model.count_params():,}", loss_name, f"{len(x_train):,}", f"{len(x_val):,}",
    )  # fmt: skip
    return fit_model(model, x_train, x_train, (x_val, x_val), trainer, callbacks, reconstructs=True)


def require_labels(labeled: LabeledSet | None, scenario_name: str) -> LabeledSet:
    """A supervised model needs labeled anomalies in *training*; never take them from test."""
    if labeled is None or len(np.unique(labeled.labels)) < 2:
        raise ConfigError(
            f"model=cnn is supervised and scenario '{scenario_name}' has no labeled anomalies "
            "in its training data. Give it some explicitly: scenario.labeled_anomalies=N "
            "(mnist_vs_fashion, fashion_vs_mnist: N anomaly-dataset training images) or "
            "scenario.train_anomaly_fraction=p (one_class). Test images are never used."
        )
    return labeled


def classifier_split(labeled: LabeledSet, val_fraction: float, seed: int):
    """Stratified train / validation split of a labeled set: (x_tr, y_tr, x_val, y_val)."""
    x_tr, x_val, y_tr, y_val = train_test_split(
        labeled.images,
        labeled.labels,
        test_size=val_fraction,
        stratify=labeled.labels,
        random_state=seed,
    )
    return x_tr, y_tr, x_val, y_val


def train_classifier(
    model_cfg: Mapping, trainer: Mapping, x_tr, y_tr, x_val, y_val, *, seed: int, callbacks=()
) -> tuple[keras.Model, dict[str, list[float]]]:
    weights = class_weights(y_tr)
    model = seeded_model(model_cfg, seed, x_tr.shape[1:])
    model = compile_model(model, trainer, "binary_crossentropy")
    log.info(
        "training %s (%s parameters) on %s labeled images (%d anomalies), class weights %s",
        model.name, f"{model.count_params():,}", f"{len(x_tr):,}", int(y_tr.sum()),
        {c: round(w, 3) for c, w in weights.items()},
    )  # fmt: skip
    return fit_model(
        model, x_tr, y_tr.astype("float32"), (x_val, y_val.astype("float32")), trainer, callbacks,
        class_weight=weights,
    )  # fmt: skip


def predict_probability(model: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    return predict(model, images, batch_size).reshape(-1).astype(np.float64)


def cross_validate_classifier(
    model_cfg: Mapping, trainer: Mapping, labeled: LabeledSet, k: int, val_fraction: float, seed
) -> list[dict[str, float]]:
    """Stratified K-fold: a fresh CNN per fold (early stopping on an inner validation split of
    the fold's training part), scored on the held-out fold: ROC-AUC and accuracy at p = 0.5.
    Fold f's split and model are seeded with seed + f, the run's own model with seed."""
    if k < 2:
        raise ConfigError(f"trainer.kfold must be at least 2, got {k}")
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    results = []
    for fold, (train_idx, test_idx) in enumerate(folds.split(labeled.images, labeled.labels), 1):
        log.info("fold %d/%d", fold, k)
        part = LabeledSet(labeled.images[train_idx], labeled.labels[train_idx])
        model, _ = train_classifier(
            model_cfg, trainer, *classifier_split(part, val_fraction, seed + fold), seed=seed + fold
        )
        p = predict_probability(model, labeled.images[test_idx], int(trainer["batch_size"]))
        y = labeled.labels[test_idx]
        results.append(
            {
                "fold": fold,
                "roc_auc": float(roc_auc_score(y, p)),
                "accuracy": float(accuracy_score(y, p > 0.5)),
                "n": len(y),
            }
        )
    return results
