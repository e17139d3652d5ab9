"""Self-supervised transformation prediction (Golan & El-Yaniv, NeurIPS 2018 "GEOM";
Hendrycks et al., NeurIPS 2019 "RotNet" for anomaly detection): a CNN learns which of a set of
geometric transformations was applied to a normal image. It learns what normal images look
like upright, so on an anomaly it is unsure which way is up. An image's error is the summed
negative log-probability of the right transformation over all of them:
    error(x) = −Σ_t log p(t | T_t(x)).

Transformations (conf/model/rotation): the four rotations by 90° (`rotations`), times a
horizontal flip (`flips`), times translations by `shift` pixels in each direction with
reflected borders (`shift` > 0: the 3×3 shifts {−s, 0, s}², GEOM's 72 with flips and
rotations). Rotations need square images.

Network: one 3×3 conv + batch norm + ReLU + 2×2 max-pool per entry of `filters`, global average
pooling, a dense ReLU layer and a softmax over the transformations; trained with the trainer
group's settings on every transformation of every normal training image.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping

import keras
import numpy as np
from keras import layers

from aead.detectors.base import Evaluated, KerasDetector, Training, TrainingData, register
from aead.detectors.models import predict
from aead.detectors.training import compile_model, fit_model, seeded_model
from aead.errors import ConfigError
from aead.store.cache import TRAINING_CODE, training_key

log = logging.getLogger("aead")


def transformations(cfg: Mapping) -> list[tuple[bool, int, int, int]]:
    """(flip, dy, dx, quarter turns) for every transformation, identity first."""
    flips = (False, True) if cfg.get("flips", False) else (False,)
    s = int(cfg.get("shift", 0))
    shifts = list(itertools.product((0, -s, s), repeat=2)) if s > 0 else [(0, 0)]
    turns = range(4) if cfg.get("rotations", True) else range(1)
    out = [(f, dy, dx, k) for f in flips for dy, dx in shifts for k in turns]
    if len(out) < 2:
        raise ConfigError("model=rotation needs at least two transformations (rotations: true)")
    return out


def transform(images: np.ndarray, flip: bool, dy: int, dx: int, turns: int) -> np.ndarray:
    """One transformation of N×H×W×C images."""
    x = images[:, :, ::-1] if flip else images
    if dy or dx:
        pad = max(abs(dy), abs(dx))
        padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
        h, w = x.shape[1:3]
        x = padded[:, pad - dy : pad - dy + h, pad - dx : pad - dx + w]
    if turns:
        x = np.rot90(x, turns, axes=(1, 2))
    return np.ascontiguousarray(x)  # uint8 stays uint8: converted a batch at a time


def transformed_set(images: np.ndarray, ts) -> tuple[np.ndarray, np.ndarray]:
    """Every transformation of every image, with the transformation's index as label."""
    x = np.concatenate([transform(images, *t) for t in ts])
    y = np.repeat(np.arange(len(ts), dtype=np.int32), len(images))
    return x, y


def build_transformation_classifier(cfg: Mapping, shape) -> keras.Model:
    filters = list(cfg.get("filters", [32, 64, 128]))
    if min(shape[:2]) < 2 ** len(filters):
        raise ConfigError(
            f"model=rotation with {len(filters)} blocks needs images of at least "
            f"{2 ** len(filters)} pixels a side, got {shape[0]}×{shape[1]}"
        )
    inputs = keras.Input(shape, name="image")
    x = inputs
    for n in filters:
        x = layers.Conv2D(int(n), 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)  # statistics that follow training
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(int(cfg.get("dense_units", 128)), activation="relu")(x)
    n_transforms = len(transformations(cfg))
    outputs = layers.Dense(n_transforms, activation="softmax", name="transformation")(x)
    return keras.Model(inputs, outputs, name="transformation_classifier")


@register
class TransformationDetector(KerasDetector):
    kind = "transformations"
    SETTINGS = ("rotations", "flips", "shift", "filters", "dense_units")
    code_modules = (*TRAINING_CODE, "aead.detectors.rotation")

    def __init__(self, model_cfg: Mapping, loss: Mapping | None = None):
        super().__init__(model_cfg, loss)
        self.transformations = transformations(self.model_cfg)

    @property
    def error_name(self) -> str:
        return f"−Σ log p(transformation), {len(self.transformations)} transformations"

    @property
    def training_loss(self) -> str:
        return "sparse_categorical_crossentropy"

    def fit(self, data: TrainingData, training: Training) -> None:
        height, width = data.x_train.shape[1:3]
        if self.model_cfg.get("rotations", True) and height != width:
            raise ConfigError(
                f"model=rotation: rotations need square images, got {height}×{width}; set "
                "data.image_size to a square or model.rotations=false"
            )
        key, fields = training_key(
            self.model_cfg, self.training_loss, training.trainer, training.seed,
            (data.x_train, data.x_val), code=self.code_modules,
        )  # fmt: skip

        def train():
            x, y = transformed_set(data.x_train, self.transformations)
            val = transformed_set(data.x_val, self.transformations)
            model = seeded_model(
                self.model_cfg, training.seed, x.shape[1:], build_transformation_classifier
            )
            model = compile_model(model, training.trainer, self.training_loss)
            log.info(
                "training the transformation classifier (%s parameters) on %s images: %d "
                "transformations of %s normal images",
                f"{model.count_params():,}", f"{len(x):,}", len(self.transformations),
                f"{len(data.x_train):,}",
            )  # fmt: skip
            return fit_model(model, x, y, val, training.trainer, training.callbacks)

        self._obtain(training, key, fields, train, data.x_train, data.x_val)

    def errors(self, images: np.ndarray, train_index=None) -> Evaluated:
        total = np.zeros(len(images), np.float64)
        for index, t in enumerate(self.transformations):
            p = predict(self.model_, transform(images, *t), self.batch_size_)[:, index]
            total -= np.log(np.maximum(np.asarray(p, np.float64), 1e-12))
        return Evaluated(total)
