"""An autoencoder's own features as an anomaly map (conf/model feature_nn): the patch nearest
neighbour of templates.py, on the feature maps of the autoencoder's encoder instead of raw
pixels. PatchCore (Roth et al., CVPR 2022) does this with an ImageNet network, which these
machines cannot download; here the features are those of an autoencoder trained on the
run's normal images (`autoencoder: {model, loss}`, the same model the AE cells train, reused
from the cache).

The features are the output of the encoder's conv layer number `stage` (0: the first), each
location averaged with its `neighbourhood`×`neighbourhood` neighbours (PatchCore's local
aggregation). A list of stages (e.g. [0, 1]) concatenates their features, as PatchCore joins
two of its network's levels: each stage's grid brought to the coarsest listed stage's grid (a
finer stage's features averaged over each of its cells), so that the bank's locations stay as
many as for that stage alone. A memory bank keeps at most `bank_size` normal locations (drawn
with the run's seed); a pixel's value is the Euclidean distance of its location's feature to
the nearest bank feature, the feature grid resized to the image bilinearly. Where a
reconstruction map asks "can the decoder redraw this pixel?", which the blurry
reconstructions of textures fail everywhere, this asks "has the encoder seen this local
pattern in a normal image?".

What it misses is a region with too little texture (a flat patch where a piece of a noisy
texture is missing): the features of a flat area lie close to those of the normal texture's own
smooth spots. With `texture_weight` > 0 the map adds a texture deficit: each pixel's local
contrast (the standard deviation of the pixel values in a `texture_window` square, the
channels' variances summed) below the `texture_quantile` of the normal training pixels', in
units of their standard deviation, times `texture_weight`; the distance is then a z-score
against the held-out normal images' distances so that the terms share a scale.

With `residual_weight` > 0 the map also adds the autoencoder's own low-frequency error: the
residual (image minus reconstruction) blurred by a Gaussian of `residual_sigma` pixels, its
length over the channels, as a z-score against the held-out normal images' values, where
positive, times `residual_weight`. The blur leaves out the fine texture a conv AE cannot redraw
and keeps what it should (the local colour and brightness), which a stain changes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from aead.data.sources import to_unit
from aead.detectors.base import Detector, Training, TrainingData, register
from aead.detectors.templates import MapDetector
from aead.errors import ConfigError
from aead.store.cache import TRAINING_CODE

log = logging.getLogger("aead")


def local_contrast(images: np.ndarray, window: int) -> np.ndarray:
    """N×H×W: the standard deviation of the pixel values (in [0, 1]) in the window×window square
    around each pixel (reflected at the border), the channels' variances summed."""
    from scipy import ndimage

    out = np.empty(np.shape(images)[:3], np.float32)
    size = (1, window, window, 1)
    for start in range(0, len(out), 64):  # a few float copies of 64 images at a time
        x = to_unit(images[start : start + 64])
        mean = ndimage.uniform_filter(x, size)
        variance = ndimage.uniform_filter(x * x, size) - mean * mean
        out[start : start + 64] = np.sqrt(np.maximum(variance, 0).sum(axis=-1))
    return out


def encoder_convs(autoencoder):
    """The encoder's conv layers, first to last (up to the bottleneck)."""
    import keras

    from aead.detectors.models import encoder_of

    bottleneck = encoder_of(autoencoder).outputs[0]
    convs = []
    for layer in autoencoder.layers:
        if isinstance(layer, keras.layers.Conv2D):
            convs.append(layer)
        if layer.output is bottleneck:
            break
    return convs


@register
class FeatureNNDetector(MapDetector):
    kind = "feature_nn"
    SETTINGS = ("autoencoder", "stage", "neighbourhood", "bank_size",
                "texture_weight", "texture_window", "texture_quantile",
                "residual_weight", "residual_sigma")  # fmt: skip
    texture_weight = residual_weight = 0.0  # detectors pickled before the settings existed
    code_modules = (*TRAINING_CODE, "aead.detectors.templates", "aead.detectors.feature_nn")

    def __init__(self, model_cfg: Mapping, loss: Mapping | None = None):
        super().__init__(model_cfg, loss)
        autoencoder = dict(self.model_cfg.get("autoencoder") or {})
        if not autoencoder.get("model"):
            raise ConfigError(
                "model=feature_nn needs model.autoencoder.model (and .loss), e.g. "
                "{model: deep_conv, loss: mse}"
            )
        self.autoencoder_cfg = autoencoder
        stage = self.model_cfg.get("stage", 1)  # ranges: aead.settings
        self.stage = [int(s) for s in stage] if isinstance(stage, Sequence) else int(stage)
        self.neighbourhood = int(self.model_cfg.get("neighbourhood", 3))
        self.bank_size = int(self.model_cfg.get("bank_size", 20000))
        self.texture_weight = float(self.model_cfg.get("texture_weight", 0.0))
        self.texture_window = int(self.model_cfg.get("texture_window", 3))
        self.texture_quantile = float(self.model_cfg.get("texture_quantile", 0.05))
        self.residual_weight = float(self.model_cfg.get("residual_weight", 0.0))
        self.residual_sigma = float(self.model_cfg.get("residual_sigma", 2.0))

    @property
    def stages(self) -> list[int]:
        """The encoder stages whose features are used, first to last."""
        return list(self.stage) if isinstance(self.stage, list | tuple) else [self.stage]

    @property
    def _scaled(self) -> bool:
        """Whether the map adds terms to the distance (then a z-score, to share their scale)."""
        return bool(self.texture_weight or self.residual_weight)

    @property
    def error_name(self) -> str:
        if not self._scaled:
            return "feature NN distance"
        terms = [("texture deficit", self.texture_weight), ("AE residual", self.residual_weight)]
        return " + ".join(["feature NN z"] + [name for name, weight in terms if weight])

    def fit(self, data: TrainingData, training: Training) -> None:
        from aead.detectors.autoencoder import AutoencoderDetector
        from aead.detectors.models import model_settings

        if self._scaled and not len(data.x_val):
            setting = "texture_weight" if self.texture_weight else "residual_weight"
            raise ConfigError(
                f"model.{setting} needs held-out normal images to scale the distances: "
                "set data.val_fraction above 0"
            )
        loss = self.autoencoder_cfg.get("loss", "mse")
        log.info("the %s autoencoder (%s) for its features:", self.autoencoder_cfg["model"], loss)
        self.autoencoder_ = AutoencoderDetector(
            model_settings(self.autoencoder_cfg["model"]), {"name": loss, "score": loss}
        )
        self.autoencoder_.fit(data, training.without_callbacks())
        self.batch_size_ = training.batch_size
        convs = encoder_convs(self.autoencoder_.model_)
        if self.stages[-1] >= len(convs):
            raise ConfigError(
                f"model.stage={self.stage}: the {self.autoencoder_cfg['model']} autoencoder's "
                f"encoder has {len(convs)} conv layers (stages 0 to {len(convs) - 1})"
            )

        def fit_state():
            from sklearn.neighbors import NearestNeighbors

            features = self._features(data.x_train)
            features = features.reshape(-1, features.shape[-1])
            if len(features) > self.bank_size:
                rng = np.random.default_rng(training.seed)
                keep = np.sort(rng.choice(len(features), self.bank_size, replace=False))
                features = features[keep]
            log.info("feature memory bank: %s locations of %d features", f"{len(features):,}",
                     features.shape[1])  # fmt: skip
            return NearestNeighbors(n_neighbors=1, algorithm="brute").fit(features)

        # the bank depends on how its autoencoder trained: the trainer settings are in its key
        self._fitted(data, training, fit_state, trainer=training.trainer)
        if self._scaled:
            self.texture_ = self._term_statistics(data)

    def _term_statistics(self, data: TrainingData) -> dict[str, float]:
        """The scales of the map's terms, from normal images only: the distances and the
        residuals of the held-out normal images, and the local contrast of the training images."""
        distances = self._distances(data.x_val)
        scales = {
            "distance_mean": float(distances.mean()),
            "distance_std": float(max(distances.std(), 1e-12)),
        }
        if self.texture_weight:
            contrast = local_contrast(data.x_train, self.texture_window)
            scales["contrast_floor"] = float(np.quantile(contrast, self.texture_quantile))
            scales["contrast_std"] = float(max(contrast.std(), 1e-12))
        if self.residual_weight:
            residuals = self._residuals(data.x_val)
            scales["residual_mean"] = float(residuals.mean())
            scales["residual_std"] = float(max(residuals.std(), 1e-12))
        return scales

    def _residuals(self, images: np.ndarray) -> np.ndarray:
        """N×H×W: the length over the channels of the autoencoder's residual, blurred."""
        from scipy import ndimage

        out = np.empty(np.shape(images)[:3], np.float32)
        sigma = (0, self.residual_sigma, self.residual_sigma, 0)
        for start in range(0, len(out), 64):
            x = to_unit(images[start : start + 64])
            residual = x - self.autoencoder_.reconstruct(x).reshape(x.shape)
            blurred = ndimage.gaussian_filter(residual, sigma, mode="reflect")
            out[start : start + 64] = np.sqrt((blurred * blurred).sum(axis=-1))
        return out

    def _features(self, images: np.ndarray) -> np.ndarray:
        """N×h×w×C: the stages' features, each averaged over its neighbourhood, on the last
        (coarsest) stage's grid, concatenated in the stages' order."""
        import keras

        from aead.detectors.models import predict

        if getattr(self, "_extractor", None) is None:
            model = self.autoencoder_.model_
            convs = encoder_convs(model)
            outputs = [convs[stage].output for stage in self.stages]
            self._extractor = keras.Model(
                model.inputs, outputs if len(outputs) > 1 else outputs[0], name="features"
            )
        # a few batches at a time (whole batches: the same batches as one predict call), so
        # that a fine stage's full-size features are never held for every image at once
        chunk = self.batch_size_ * max(1, 64 // self.batch_size_)
        parts = [
            self._joined(predict(self._extractor, images[start : start + chunk], self.batch_size_))
            for start in range(0, len(images), chunk)
        ]
        return np.ascontiguousarray(np.concatenate(parts), np.float32)

    def _joined(self, features) -> np.ndarray:
        import tensorflow as tf

        features = list(features) if isinstance(features, list | tuple) else [features]
        grid = tuple(features[-1].shape[1:3])
        joined = []
        for stage_features in features:
            if self.neighbourhood > 1:
                stage_features = tf.nn.avg_pool2d(stage_features, self.neighbourhood, 1, "SAME")
            if tuple(stage_features.shape[1:3]) != grid:  # a finer stage: averaged per cell
                stage_features = tf.image.resize(stage_features, grid, method="area")
            joined.append(np.asarray(stage_features, np.float32))
        return np.concatenate(joined, axis=-1) if len(joined) > 1 else joined[0]

    def _compute_maps(self, images: np.ndarray) -> np.ndarray:
        distances = self._distances(images)
        if not self._scaled:
            return distances
        t = self.texture_
        maps = (distances - t["distance_mean"]) / t["distance_std"]
        if self.texture_weight:
            deficit = t["contrast_floor"] - local_contrast(images, self.texture_window)
            maps += self.texture_weight * np.maximum(deficit, 0) / t["contrast_std"]
        if self.residual_weight:
            excess = (self._residuals(images) - t["residual_mean"]) / t["residual_std"]
            maps += self.residual_weight * np.maximum(excess, 0)
        return maps

    def _distances(self, images: np.ndarray) -> np.ndarray:
        """N×H×W: each location's feature distance to the nearest bank feature, resized."""
        import tensorflow as tf

        features = self._features(images)
        n, h, w, c = features.shape
        distances, _ = self.model_.kneighbors(features.reshape(-1, c))
        grid = distances.reshape(n, h, w, 1).astype(np.float32)
        return tf.image.resize(grid, images.shape[1:3], method="bilinear").numpy()[..., 0]

    def encoder(self):
        return self.autoencoder_.encoder()

    def helpers(self) -> dict[str, Detector]:
        return {"aead.autoencoder": self.autoencoder_}

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_extractor"] = None  # rebuilt from the autoencoder on first use
        return state
