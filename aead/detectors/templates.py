"""Two per-pixel baselines that need no training (conf/model golden_template, patch_nn): what an
autoencoder's anomaly map has to beat.

- Golden template: each pixel's z-score against the normal training images at that pixel,
  |x - mean| / max(std, min_std), averaged over the channels. Strong where the normal images
  are aligned (printed parts, a fixed scene), weak where the texture moves.
- Patch nearest neighbour: each patch of the image (side `patch`, centres every `stride`
  pixels) against a memory bank of normal training patches taken anywhere in the images (at
  most `bank_size`, drawn with the run's seed); a pixel's value is the Euclidean distance of its
  patch to the nearest bank patch, the patch grid resized to the image bilinearly. PatchCore's
  idea (Roth et al., CVPR 2022) on raw pixels instead of pretrained features, which these
  machines cannot download.

An image's error is the maximum of its map, as PatchCore scores an image; `score=map` reduces
the smoothed map instead. The fitted state (the template, or the bank) is kept in the model
store like a trained network.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping

import numpy as np

from aead.data.sources import to_unit
from aead.detectors.base import Detector, Evaluated, Training, TrainingData, register
from aead.errors import ConfigError
from aead.store.cache import training_key

log = logging.getLogger("aead")


class MapDetector(Detector):
    """A detector defined by its per-pixel map: errors are the maps' maxima. The last maps
    computed are kept (by the images' digest) because a run asks for an image set's errors
    and then for its maps."""

    has_maps = True
    code_modules = ("aead.detectors.templates",)

    @property
    def training_loss(self) -> str:
        return "none"

    def _fitted(self, data: TrainingData, training: Training, fit_state, trainer=None) -> None:
        key, fields = training_key(
            self.model_cfg, None, trainer or {}, training.seed, (data.x_train, data.x_val),
            code=self.code_modules,
        )  # fmt: skip
        self.obtained_ = training.store.obtain(key, fields, lambda: (fit_state(), {}))
        self.model_ = self.obtained_.model
        self._set_images(data.x_train, data.x_val)

    def _compute_maps(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def maps(self, images: np.ndarray, reconstructions: np.ndarray | None = None):
        digest = hashlib.sha1(np.ascontiguousarray(images).view(np.uint8)).hexdigest()
        memo = getattr(self, "_memo", None)
        if memo is None or memo[0] != digest:
            memo = self._memo = (digest, self._compute_maps(images).astype(np.float32))
        return memo[1]

    def errors(self, images: np.ndarray, train_index=None) -> Evaluated:
        return Evaluated(self.maps(images).reshape(len(images), -1).max(axis=1).astype(np.float64))

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_memo", None)
        return state


@register
class GoldenTemplateDetector(MapDetector):
    kind = "golden_template"
    SETTINGS = ("min_std",)

    def __init__(self, model_cfg: Mapping, loss: Mapping | None = None):
        super().__init__(model_cfg, loss)
        self.min_std = float(self.model_cfg.get("min_std", 0.02))  # range: aead.settings

    @property
    def error_name(self) -> str:
        return "template z-score"

    def fit(self, data: TrainingData, training: Training) -> None:
        def fit_state():
            images = np.asarray(to_unit(data.x_train), np.float64)
            log.info("golden template of %s normal images", f"{len(images):,}")
            return {"mean": images.mean(axis=0).astype(np.float32),
                    "std": images.std(axis=0).astype(np.float32)}  # fmt: skip

        self._fitted(data, training, fit_state)

    def _compute_maps(self, images: np.ndarray) -> np.ndarray:
        std = np.maximum(self.model_["std"], self.min_std)
        return (np.abs(to_unit(images) - self.model_["mean"]) / std).mean(axis=-1)


@register
class PatchNNDetector(MapDetector):
    kind = "patch_nn"
    SETTINGS = ("patch", "stride", "bank_size")

    def __init__(self, model_cfg: Mapping, loss: Mapping | None = None):
        super().__init__(model_cfg, loss)
        self.patch = int(self.model_cfg.get("patch", 8))
        self.stride = int(self.model_cfg.get("stride", 4))
        self.bank_size = int(self.model_cfg.get("bank_size", 20000))  # ranges: aead.settings

    @property
    def error_name(self) -> str:
        return "patch NN distance"

    def _patches(self, images: np.ndarray) -> np.ndarray:
        """N×gh×gw×(patch·patch·C) patches with centres every `stride` pixels."""
        images = to_unit(images)
        if min(images.shape[1:3]) < self.patch:
            raise ConfigError(
                f"model.patch={self.patch} is larger than the images "
                f"({images.shape[1]}×{images.shape[2]})"
            )
        windows = np.lib.stride_tricks.sliding_window_view(
            images, (self.patch, self.patch), axis=(1, 2)
        )[:, :: self.stride, :: self.stride]  # N×gh×gw×C×p×p
        n, gh, gw = windows.shape[:3]
        return windows.reshape(n, gh, gw, -1)

    def fit(self, data: TrainingData, training: Training) -> None:
        def fit_state():
            from sklearn.neighbors import NearestNeighbors

            patches = self._patches(data.x_train)
            patches = patches.reshape(-1, patches.shape[-1])
            if len(patches) > self.bank_size:
                rng = np.random.default_rng(training.seed)
                patches = patches[np.sort(rng.choice(len(patches), self.bank_size, replace=False))]
            log.info("patch memory bank: %s patches of %d values", f"{len(patches):,}",
                     patches.shape[1])  # fmt: skip
            bank = NearestNeighbors(n_neighbors=1, algorithm="brute")
            return bank.fit(np.ascontiguousarray(patches))

        self._fitted(data, training, fit_state)

    def _compute_maps(self, images: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        patches = self._patches(images)
        n, gh, gw, d = patches.shape
        distances, _ = self.model_.kneighbors(patches.reshape(-1, d))
        grid = distances.reshape(n, gh, gw, 1).astype(np.float32)
        # patch centres sit patch/2 from the border: resize the grid onto the centres' span,
        # then pad the borders with their nearest centre's value
        height, width = images.shape[1:3]
        span_h, span_w = (gh - 1) * self.stride + 1, (gw - 1) * self.stride + 1
        inner = tf.image.resize(grid, (span_h, span_w), method="bilinear").numpy()[..., 0]
        top, left = (self.patch - 1) // 2, (self.patch - 1) // 2
        pad = ((0, 0), (top, height - span_h - top), (left, width - span_w - left))
        return np.pad(inner, pad, mode="edge")
