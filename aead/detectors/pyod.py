"""The field's classic detectors, as PyOD has them (Zhao et al., JMLR 2019), on an image's
flattened pixels or on an autoencoder's bottleneck codes (conf/model knn, pca, iforest, ocsvm,
ecod; `features: codes` with `autoencoder: {model, loss}`).

- kNN (Ramaswamy et al., SIGMOD 2000): distance to the k-th / mean of the k nearest normal
  training images.
- PCA (Shyu et al., 2003): the weighted distance in the minor principal components.
- Isolation Forest (Liu et al., ICDM 2008): how few random splits isolate the image.
- OC-SVM (Schölkopf et al., 2001): the signed distance to a kernel boundary around the normal
  images.
- ECOD (Li et al., TKDE 2022): empirical-CDF tail probabilities per feature, summed.

The error is PyOD's `decision_function` (higher = more anomalous); PyOD's own threshold
(`contamination`) is not used: aead fits the run's threshold on the validation scores like
every detector's. The fitted PyOD model is kept in the model store like a trained network.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Mapping

import numpy as np

from aead.data.sources import to_unit
from aead.detectors.base import Detector, Evaluated, Training, TrainingData, register
from aead.errors import ConfigError
from aead.store.cache import TRAINING_CODE, training_key

log = logging.getLogger("aead")

# algorithm -> (module, class) in PyOD
ALGORITHMS = {
    "knn": ("pyod.models.knn", "KNN"),
    "pca": ("pyod.models.pca", "PCA"),
    "iforest": ("pyod.models.iforest", "IForest"),
    "ocsvm": ("pyod.models.ocsvm", "OCSVM"),
    "ecod": ("pyod.models.ecod", "ECOD"),
}
SEEDED = ("random_state",)  # PyOD settings that take the run's seed
FEATURES = ("pixels", "codes")


def pyod_class(algorithm: str):
    try:
        module, name = ALGORITHMS[algorithm]
    except KeyError:
        raise ConfigError(
            f"unknown model.algorithm '{algorithm}'; choose one of {sorted(ALGORITHMS)}"
        ) from None
    return getattr(importlib.import_module(module), name)


@register
class PyodDetector(Detector):
    kind = "pyod"
    SETTINGS = ("algorithm", "features", "autoencoder", "params")
    code_modules = (*TRAINING_CODE, "aead.detectors.pyod")

    def __init__(self, model_cfg: Mapping, loss: Mapping | None = None):
        super().__init__(model_cfg, loss)
        self.algorithm = self.model_cfg.get("algorithm", "knn")
        self.features = self.model_cfg.get("features", "pixels")
        if self.features not in FEATURES:
            raise ConfigError(
                f"model.features={self.features}: not accepted; choose one of {list(FEATURES)}"
            )
        self.params = dict(self.model_cfg.get("params") or {})
        cls = pyod_class(self.algorithm)
        try:  # a bad setting fails here, before any data is read
            cls(**self.params)
        except TypeError as exc:
            raise ConfigError(f"model.params of {self.algorithm}: {exc}") from None
        autoencoder = dict(self.model_cfg.get("autoencoder") or {})
        if self.features == "codes" and not autoencoder.get("model"):
            raise ConfigError(
                "model.features=codes needs model.autoencoder.model (and .loss), e.g. "
                "{model: conv, loss: mse}"
            )
        self.autoencoder_cfg = autoencoder

    @property
    def error_name(self) -> str:
        on = "codes" if self.features == "codes" else "pixels"
        return f"{self.algorithm} ({on})"

    @property
    def training_loss(self) -> str:
        return "none"

    def fit(self, data: TrainingData, training: Training) -> None:
        self.batch_size_ = training.batch_size
        self.autoencoder_ = None
        if self.features == "codes":
            from aead.detectors.autoencoder import AutoencoderDetector
            from aead.detectors.models import model_settings

            loss = self.autoencoder_cfg.get("loss", "mse")
            log.info("the %s autoencoder (%s) for its codes:", self.autoencoder_cfg["model"], loss)
            self.autoencoder_ = AutoencoderDetector(
                model_settings(self.autoencoder_cfg["model"]), {"name": loss, "score": loss}
            )
            self.autoencoder_.fit(data, training.without_callbacks())
        x_train = self._features(data.x_train)
        # pixels need no trainer settings; codes depend on how their autoencoder trained
        trainer = training.trainer if self.features == "codes" else {}
        key, fields = training_key(
            self.model_cfg, None, trainer, training.seed, (data.x_train, data.x_val),
            code=self.code_modules,
        )  # fmt: skip

        def train():
            params = dict(self.params)
            cls = pyod_class(self.algorithm)
            for name in SEEDED:
                if name in cls.__init__.__code__.co_varnames and name not in params:
                    params[name] = training.seed
            started = time.monotonic()
            log.info(
                "fitting PyOD %s %s on %s normal images (%s features)",
                cls.__name__, params, f"{len(x_train):,}", f"{x_train.shape[1]:,}",
            )  # fmt: skip
            model = cls(**params).fit(x_train)
            log.info("fitted in %.1f s", time.monotonic() - started)
            return model, {}

        self.obtained_ = training.store.obtain(key, fields, train)
        self.model_ = self.obtained_.model
        self._set_images(data.x_train, data.x_val)

    def _features(self, images: np.ndarray) -> np.ndarray:
        if self.autoencoder_ is not None:
            codes = self.autoencoder_.encoder()(images)
            return np.asarray(codes, np.float64).reshape(len(images), -1)
        return to_unit(images).reshape(len(images), -1)

    def errors(self, images: np.ndarray, train_index=None) -> Evaluated:
        scores = np.asarray(self.model_.decision_function(self._features(images)), np.float64)
        if train_index is not None:
            # a training image is scored as PyOD scored it when fitting (kNN: its neighbours
            # without itself), not at distance 0 from its own copy
            index = np.asarray(train_index)
            seen = index >= 0
            scores[seen] = np.asarray(self.model_.decision_scores_, np.float64)[index[seen]]
        return Evaluated(scores)

    def encoder(self):
        return self.autoencoder_.encoder() if self.autoencoder_ is not None else None

    def helpers(self) -> dict[str, Detector]:
        return {"aead.autoencoder": self.autoencoder_} if self.autoencoder_ is not None else {}
