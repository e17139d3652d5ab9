"""Autoencoders (conf/model dense, conv, deep_conv): trained to reconstruct normal images with
the `loss` group's loss; an image's error is the `loss.score` loss between it and its
reconstruction, its map the same loss per pixel (aead.scoring.maps)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from aead.detectors.base import Evaluated, KerasDetector, Training, TrainingData, register
from aead.detectors.losses import require_fits, score_images
from aead.detectors.models import Encoder, predict
from aead.detectors.training import train_autoencoder
from aead.scoring.maps import pixel_maps
from aead.store.cache import training_key


@register
class AutoencoderDetector(KerasDetector):
    kind = "autoencoder"
    uses_loss = True
    has_maps = True

    def __init__(self, model_cfg: Mapping, loss: Mapping | None = None):
        super().__init__(model_cfg, loss)
        if not self.loss.get("name"):
            self.loss = {"name": "mse", "score": "mse", **self.loss}
        self.loss.setdefault("score", self.loss["name"])

    @property
    def error_name(self) -> str:
        return self.loss["score"]

    @property
    def training_loss(self) -> str:
        return self.loss["name"]

    def fit(self, data: TrainingData, training: Training) -> None:
        require_fits(self.loss["name"], data.x_train.shape[1:])
        trainer = training.trainer
        key, fields = training_key(
            self.model_cfg, self.loss["name"], trainer, training.seed, (data.x_train, data.x_val)
        )

        def train():
            return train_autoencoder(
                self.model_cfg, self.loss["name"], trainer, data.x_train, data.x_val,
                seed=training.seed, callbacks=training.callbacks,
            )  # fmt: skip

        self._obtain(training, key, fields, train, data.x_train, data.x_val)

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        return predict(self.model_, images, self.batch_size_)

    def errors(self, images: np.ndarray, train_index=None) -> Evaluated:
        reconstructions = self.reconstruct(images)
        return Evaluated(score_images(images, reconstructions, self.error_name), reconstructions)

    def maps(self, images: np.ndarray, reconstructions: np.ndarray | None = None):
        if reconstructions is None:
            reconstructions = self.reconstruct(images)
        return pixel_maps(images, reconstructions, self.error_name)

    def encoder(self) -> Encoder:
        return Encoder(self.model_, self.batch_size_)

    def background(self, perturb, training: Training) -> AutoencoderDetector:
        background = AutoencoderDetector(self.model_cfg, self.loss)
        data = TrainingData(perturb(self._train_images), perturb(self._validation_images))
        background.fit(data, training.without_callbacks())
        return background
