"""Anomaly maps: where in an image the autoencoder's reconstruction fails. Each loss has a
per-pixel form beside its per-image one (losses.py): squared error, absolute error, BCE, and
1 - the SSIM map of tf.image.ssim's window (11×11 Gaussian, σ 1.5, K1 0.01, K2 0.03), each
averaged over the channels; a map may be smoothed by a Gaussian (σ in pixels)."""

from __future__ import annotations

import numpy as np

from aead.data.sources import to_unit
from aead.errors import ConfigError

SSIM_SIZE, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
_EPSILON = 1e-7  # as losses.bce clips


def _gaussian_kernel(channels: int):
    import tensorflow as tf

    x = np.arange(SSIM_SIZE, dtype=np.float64) - (SSIM_SIZE - 1) / 2
    g = np.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    kernel = np.tile(window[:, :, None, None], (1, 1, channels, 1)).astype(np.float32)
    return tf.constant(kernel)


def ssim_map(images: np.ndarray, reconstructions: np.ndarray) -> np.ndarray:
    """SSIM at every pixel and channel (N×H×W×C), images in [0, 1]: tf.image.ssim's local
    statistics, computed over a reflected border so the map has the image's size. Its mean
    over the pixels at least 5 from the border is tf.image.ssim's value."""
    import tensorflow as tf

    x = tf.convert_to_tensor(to_unit(images), tf.float32)
    y = tf.convert_to_tensor(reconstructions, tf.float32)
    kernel = _gaussian_kernel(int(x.shape[-1]))
    half = SSIM_SIZE // 2

    def local_mean(t):
        padded = tf.pad(t, [[0, 0], [half, half], [half, half], [0, 0]], mode="REFLECT")
        return tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], "VALID")

    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x * mu_x
    var_y = local_mean(y * y) - mu_y * mu_y
    cov = local_mean(x * y) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    )
    return ssim.numpy()


def _per_pixel(images: np.ndarray, reconstructions: np.ndarray, loss: str) -> np.ndarray:
    x, y = to_unit(images), reconstructions.astype(np.float32)
    if loss == "mse":
        values = np.square(x - y)
    elif loss == "mae":
        values = np.abs(x - y)
    elif loss == "bce":
        p = np.clip(y, _EPSILON, 1 - _EPSILON)
        values = -(x * np.log(p) + (1 - x) * np.log(1 - p))
    elif loss == "ssim":
        values = 1.0 - ssim_map(x, y)
    else:
        raise ConfigError(f"no anomaly map for loss '{loss}'; maps exist for bce, mae, mse, ssim")
    return values.mean(axis=-1)


def smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Each map blurred by a Gaussian of sigma pixels (0: unchanged)."""
    if not sigma:
        return maps
    from scipy import ndimage

    return ndimage.gaussian_filter(maps, sigma=(0, float(sigma), float(sigma)), mode="reflect")


def pixel_maps(
    images: np.ndarray, reconstructions: np.ndarray, loss: str, sigma: float = 0.0, batch=256
) -> np.ndarray:
    """float32 N×H×W anomaly maps (higher = more anomalous), computed a batch at a time."""
    out = np.empty(images.shape[:3], np.float32)
    for start in range(0, len(images), batch):
        part = slice(start, start + batch)
        out[part] = smooth(_per_pixel(images[part], reconstructions[part], loss), sigma)
    return out
