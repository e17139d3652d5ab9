"""The detector contract every detector implements (PyOD's BaseDetector, adapted to images
and to aead's train-once store):

- `fit(data, training)`: learn from the normal training images (and labeled ones where the
  detector is supervised), obtaining any trained model through `training.store`, so that a
  model trained once is reused by every run that needs it;
- `errors(images)`: one value per image, higher = more anomalous (the detector's own score,
  which `aead.scoring.scores` may correct or combine), and reconstructions where it has them;
- `maps(images)`: per-pixel anomaly maps, where the detector has them (else None);
- its whole fitted state pickles (Keras models included), which is how the deployable
  pyfunc detector carries it.

Fitted state ends in an underscore (sklearn's convention). A detector is chosen by
`model.kind`, looked up in DETECTORS; settings are checked in `__init__`, before any work.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from aead.errors import ConfigError


@dataclass
class TrainingData:
    """What a detector may learn from: never a test image."""

    x_train: np.ndarray  # normal training images, N×H×W×C uint8 (or floats in [0, 1])
    x_val: np.ndarray  # held-out normal validation images
    labeled: object = None  # aead.data.LabeledSet of training images, for supervised detectors
    scenario: str = ""  # the scenario's name, for error messages


@dataclass
class Training:
    """How to train: the trainer settings, the seed each model is seeded with right before it
    is built, where trained models are kept, and the callbacks of the run's own model (its
    epochs logged to the run)."""

    trainer: dict
    seed: int
    store: object  # aead.store.model_store.ModelStore
    val_fraction: float = 0.1
    callbacks: list = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return int(self.trainer["batch_size"])

    def without_callbacks(self) -> Training:
        """The same training for a helper model (its epochs are not the run's curves)."""
        return Training(self.trainer, self.seed, self.store, self.val_fraction)


@dataclass
class Evaluated:
    """A detector's output on images: per-image errors (higher = more anomalous) and the
    reconstructions of an autoencoder (None for other detectors)."""

    errors: np.ndarray
    reconstructions: np.ndarray | None = None


@dataclass
class FitReport:
    """Figures a detector computes while fitting (e.g. K-fold results), logged with the run."""

    metrics: dict = field(default_factory=dict)
    steps: dict = field(default_factory=dict)  # name -> values per step (1-based)
    tables: dict = field(default_factory=dict)  # artifact file -> pandas DataFrame


class Detector:
    """One detector. Subclasses set `kind` (the registry name) and implement fit / errors."""

    kind = ""
    # model config keys besides name / kind / architecture (None: the builder's own, unchecked)
    SETTINGS: tuple[str, ...] | None = None
    uses_loss = False  # whether the `loss` group applies (it names the run)
    supports_kfold = False
    has_maps = False
    # the modules whose code shapes the trained model, part of its cache key
    code_modules: tuple[str, ...] = ()

    def __init__(self, model_cfg: Mapping, loss: Mapping | None = None):
        self.model_cfg = dict(model_cfg)
        self.loss = dict(loss or {})
        unknown = set(self.model_cfg) - {"name", "kind", "architecture", *(self.SETTINGS or ())}
        if self.SETTINGS is not None and unknown:
            raise ConfigError(
                f"model={self.model_cfg.get('name')} ({self.kind}) has no setting "
                f"{sorted(unknown)}; it takes {sorted(self.SETTINGS)}"
            )
        self.obtained_ = None  # aead.store.model_store.Obtained: the model and where it came from
        self.report_ = FitReport()

    @property
    def name(self) -> str:
        return self.model_cfg.get("name", self.kind)

    # ------------------------------------------------------------------ the contract

    def fit(self, data: TrainingData, training: Training) -> None:
        raise NotImplementedError

    def errors(self, images: np.ndarray, train_index=None) -> Evaluated:
        raise NotImplementedError

    def maps(self, images: np.ndarray, reconstructions: np.ndarray | None = None):
        """Per-pixel anomaly maps N×H×W, or None where the detector has none."""
        return None

    def encoder(self):
        """images -> codes (aead.detectors.models.Encoder) for code scores (latent_knn), or None."""
        return None

    def background(self, perturb, training: Training) -> Detector:
        """The same detector trained on perturbed normal images (score=background)."""
        raise ConfigError(f"score=background needs an autoencoder, not model={self.name}")

    # ------------------------------------------------------------------ after fit

    @property
    def error_name(self) -> str:
        """What errors() measures, for axis labels and the run's tags."""
        return self.kind

    @property
    def training_loss(self) -> str:
        return self.kind

    @property
    def validation_images_(self) -> np.ndarray:
        """The held-out normal images the run's threshold is fitted on."""
        return self._validation_images

    @property
    def normal_train_images_(self) -> np.ndarray | None:
        """The normal images the detector learned from, for scores that need them (None: it
        learned labels, not the normal images alone)."""
        return self._train_images

    def helpers(self) -> dict[str, Detector]:
        """Other detectors this one was built on (tag prefix -> detector), e.g. the
        autoencoder whose codes a PyOD detector reads; the run tags where each came from."""
        return {}

    def keras_model(self):
        """The trained Keras model, logged with mlflow.keras (None: not a Keras detector)."""
        return None

    def __getstate__(self) -> dict:
        # what a run held only to fit is not part of the deployable state
        state = dict(self.__dict__)
        state["_train_images"] = None
        state["_validation_images"] = None
        return state

    def _set_images(self, train: np.ndarray | None, validation: np.ndarray) -> None:
        self._train_images, self._validation_images = train, validation
        # the shape of the images it takes (H, W, C): what the deployed detector checks
        self.image_shape_ = tuple(int(n) for n in validation.shape[1:])


def uncompiled(model):
    """A copy of a Keras model without its optimizer and loss: what a deployed detector needs,
    and it loads without aead's custom losses."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


class KerasDetector(Detector):
    """A detector whose fitted state is one trained Keras model (`model_`), obtained through
    the model store."""

    def _obtain(self, training: Training, key: str, fields: dict, train, train_images,
                validation_images) -> None:  # fmt: skip
        """The model stored under key, else train() -> (model, history); the images the
        detector learned from (None: labels, not normal images) and its threshold's images."""
        self.obtained_ = training.store.obtain(key, fields, train)
        self.model_ = self.obtained_.model
        self.batch_size_ = training.batch_size
        self._set_images(train_images, validation_images)

    def keras_model(self):
        return self.model_

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["model_"] = uncompiled(self.model_)
        return state


class ErrorsOf:
    """images -> a fitted detector's errors; picklable (a closure is not), so that a score
    holding another detector (companion, background) deploys with it."""

    def __init__(self, detector: Detector):
        self.detector = detector

    def __call__(self, images: np.ndarray, train_index=None) -> np.ndarray:
        return self.detector.errors(images, train_index).errors


class EncoderOf:
    """images -> a fitted detector's codes (and .stages), built on first use; picklable."""

    def __init__(self, detector: Detector):
        self.detector, self._encoder = detector, None

    def _get(self):
        if self._encoder is None:
            self._encoder = self.detector.encoder()
        return self._encoder

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self._get()(images)

    def stages(self, images: np.ndarray) -> list[np.ndarray]:
        return self._get().stages(images)

    def __getstate__(self) -> dict:
        return {"detector": self.detector, "_encoder": None}


DETECTORS: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    DETECTORS[cls.kind] = cls
    return cls
