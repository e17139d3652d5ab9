"""Deep SVDD (Ruff et al., ICML 2018), the one-class objective: a network φ without bias
terms maps normal images close to a centre c, fixed before training as the mean of φ over the
normal training images (coordinates nearer 0 than `eps` pushed to ±eps, as in the paper's
code), minimizing mean ||φ(x) − c||² plus weight decay. An image's error is ||φ(x) − c||²
(here the mean over the representation's coordinates: the same ranking).

Architecture (conf/model/deep_svdd): the paper's LeNet-style encoder, one 5×5 conv (no bias)
+ batch norm without affine parameters + leaky ReLU + 2×2 max-pool per entry of `filters`,
then a bias-free dense layer of `rep_dim` units. No bias and no affine BN: a network with them
can map everything onto c (the trivial solution the paper rules out). The paper pretrains φ as
an autoencoder's encoder; aead trains from the initial weights (say so where you compare).

Trained with the trainer group's settings; the centre is a frozen layer of the saved model, so
the model store and the deployed detector keep it.
"""

from __future__ import annotations

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


def build_deep_svdd_network(cfg: Mapping, shape) -> keras.Model:
    """φ: bias-free conv blocks and a bias-free dense representation."""
    filters = list(cfg.get("filters", [8, 4]))
    if min(shape[:2]) < 2 ** len(filters):
        raise ConfigError(
            f"model=deep_svdd with {len(filters)} blocks needs images of at least "
            f"{2 ** len(filters)} pixels a side, got {shape[0]}×{shape[1]}"
        )
    decay = float(cfg.get("weight_decay", 1e-6))
    regularizer = keras.regularizers.L2(decay) if decay > 0 else None
    kernel = int(cfg.get("kernel_size", 5))
    inputs = keras.Input(shape, name="image")
    x = inputs
    for n in filters:
        x = layers.Conv2D(
            int(n), kernel, padding="same", use_bias=False, kernel_regularizer=regularizer
        )(x)
        # momentum 0.9 = PyTorch's 0.1, the paper's: the moving statistics follow training
        x = layers.BatchNormalization(center=False, scale=False, epsilon=1e-4, momentum=0.9)(x)
        x = layers.LeakyReLU(0.1)(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    features = layers.Dense(
        int(cfg.get("rep_dim", 32)), use_bias=False, kernel_regularizer=regularizer,
        name="representation",
    )(x)  # fmt: skip
    return keras.Model(inputs, features, name="deep_svdd_network")


def center_of(network: keras.Model, images: np.ndarray, batch: int, eps: float) -> np.ndarray:
    """c: the mean representation of the normal training images, |c_j| ≥ eps."""
    c = np.asarray(predict(network, images, batch), np.float64).mean(axis=0)
    c[(np.abs(c) < eps) & (c < 0)] = -eps
    c[(np.abs(c) < eps) & (c >= 0)] = eps
    return c.astype(np.float32)


def with_center(network: keras.Model, c: np.ndarray) -> keras.Model:
    """φ(x) − c, the centre a frozen identity layer with bias −c (standard layers only: the
    model saves and loads anywhere)."""
    shift = layers.Dense(len(c), trainable=False, name="minus_center")
    outputs = shift(network.outputs[0])
    shift.set_weights([np.eye(len(c), dtype=np.float32), -c])
    return keras.Model(network.inputs, outputs, name="deep_svdd")


def train_deep_svdd(cfg: Mapping, trainer: Mapping, x_train, x_val, *, seed: int, callbacks=()):
    network = seeded_model(cfg, seed, x_train.shape[1:], build_deep_svdd_network)
    c = center_of(network, x_train, int(trainer["batch_size"]), float(cfg.get("eps", 0.1)))
    model = compile_model(with_center(network, c), trainer, "mean_squared_error")
    log.info(
        "training Deep SVDD (%s parameters, representation %d) on %s normal images",
        f"{model.count_params():,}", len(c), f"{len(x_train):,}",
    )  # fmt: skip
    zeros = np.zeros((len(x_train), len(c)), np.float32)
    val_zeros = np.zeros((len(x_val), len(c)), np.float32)
    return fit_model(model, x_train, zeros, (x_val, val_zeros), trainer, callbacks)


@register
class DeepSvddDetector(KerasDetector):
    kind = "deep_svdd"
    SETTINGS = ("filters", "rep_dim", "kernel_size", "weight_decay", "eps")
    code_modules = (*TRAINING_CODE, "aead.detectors.deep_svdd")

    @property
    def error_name(self) -> str:
        return "squared distance to the centre"

    @property
    def training_loss(self) -> str:
        return "deep_svdd"

    def fit(self, data: TrainingData, training: Training) -> None:
        key, fields = training_key(
            self.model_cfg, "deep_svdd", training.trainer, training.seed,
            (data.x_train, data.x_val), code=self.code_modules,
        )  # fmt: skip

        def train():
            return train_deep_svdd(
                self.model_cfg, training.trainer, data.x_train, data.x_val,
                seed=training.seed, callbacks=training.callbacks,
            )  # fmt: skip

        self._obtain(training, key, fields, train, data.x_train, data.x_val)

    def errors(self, images: np.ndarray, train_index=None) -> Evaluated:
        offsets = np.asarray(predict(self.model_, images, self.batch_size_), np.float64)
        return Evaluated((offsets**2).mean(axis=1))
