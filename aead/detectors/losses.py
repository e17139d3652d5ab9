"""Reconstruction losses. One definition per loss serves twice: as the Keras training loss
(a per-image value that Keras averages over the batch) and, per image, as the anomaly score.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from aead.data.sources import to_unit
from aead.errors import ConfigError

_EPSILON = 1e-7
_IMAGE_AXES = (1, 2, 3)

# Registered so that a saved model (e.g. from MLflow) loads again with its loss.
_serializable = keras.saving.register_keras_serializable(package="aead")


@_serializable
def bce(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Pixel-mean binary cross-entropy per image."""
    y_pred = tf.clip_by_value(y_pred, _EPSILON, 1.0 - _EPSILON)
    per_pixel = -(y_true * tf.math.log(y_pred) + (1.0 - y_true) * tf.math.log(1.0 - y_pred))
    return tf.reduce_mean(per_pixel, axis=_IMAGE_AXES)


@_serializable
def mse(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Pixel-mean squared error per image."""
    return tf.reduce_mean(tf.square(y_true - y_pred), axis=_IMAGE_AXES)


@_serializable
def mae(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Pixel-mean absolute error per image."""
    return tf.reduce_mean(tf.abs(y_true - y_pred), axis=_IMAGE_AXES)


@_serializable
def ssim(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """1 - SSIM per image (images in [0, 1]); 0 for a perfect reconstruction."""
    return 1.0 - tf.image.ssim(y_true, y_pred, max_val=1.0)


SSIM_WINDOW = 11  # tf.image.ssim's default filter size


def require_fits(name: str, shape) -> None:
    """Refuses, in one line, images a loss cannot be computed on."""
    if name == "ssim" and min(shape[:2]) < SSIM_WINDOW:
        raise ConfigError(
            f"loss=ssim needs images of at least {SSIM_WINDOW}×{SSIM_WINDOW} pixels (its "
            f"window), got {shape[0]}×{shape[1]}; set data.image_size or choose another loss"
        )


LOSSES: dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = {
    "bce": bce,
    "mse": mse,
    "mae": mae,
    "ssim": ssim,
}


def get_loss(name: str) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    try:
        return LOSSES[name]
    except KeyError:
        raise ConfigError(f"unknown loss '{name}'; choose one of {sorted(LOSSES)}") from None


def score_images(
    images: np.ndarray, reconstructions: np.ndarray, name: str, batch_size: int = 1024
) -> np.ndarray:
    """Per-image anomaly scores (higher = more anomalous) with the named loss."""
    fn = get_loss(name)
    scores = [
        fn(
            tf.convert_to_tensor(to_unit(images[i : i + batch_size]), tf.float32),
            tf.convert_to_tensor(reconstructions[i : i + batch_size], tf.float32),
        ).numpy()
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(scores).astype(np.float64) if scores else np.zeros(0)
