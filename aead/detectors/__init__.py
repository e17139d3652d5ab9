"""Detectors: one contract (aead.detectors.base), one registered class per `model.kind`:

- `autoencoder` (autoencoder.py): dense / conv AEs, error = the loss.score loss, maps;
- `classifier` (classifier.py): the supervised CNN with class weights, K-fold;
- `pyod` (pyod.py): kNN, PCA, Isolation Forest, OC-SVM, ECOD on pixels or AE codes;
- `deep_svdd` (deep_svdd.py): Deep SVDD, one-class objective;
- `transformations` (rotation.py): rotation / transformation prediction;
- `golden_template`, `patch_nn` (templates.py): per-pixel baselines that need no training;
- `feature_nn` (feature_nn.py): the patch nearest neighbour on an autoencoder's features.
"""

from collections.abc import Mapping

from aead.detectors import (  # noqa: F401
    autoencoder,
    classifier,
    deep_svdd,
    feature_nn,
    pyod,
    rotation,
    templates,
)
from aead.detectors.base import (
    DETECTORS,
    Detector,
    EncoderOf,
    ErrorsOf,
    Evaluated,
    FitReport,
    Training,
    TrainingData,
    register,
)
from aead.errors import ConfigError


def detector_class(model_cfg: Mapping) -> type[Detector]:
    """The registered detector class of a model config (its `kind`)."""
    kind = model_cfg.get("kind", "autoencoder")
    try:
        return DETECTORS[kind]
    except KeyError:
        raise ConfigError(
            f"unknown model.kind '{kind}' (model={model_cfg.get('name')}); "
            f"choose one of {sorted(DETECTORS)}"
        ) from None


def build_detector(model_cfg: Mapping, loss: Mapping | None = None) -> Detector:
    """The detector conf/model/<name> describes (by its `kind`), with the run's loss group."""
    return detector_class(model_cfg)(model_cfg, loss)


__all__ = [
    "DETECTORS",
    "Detector",
    "EncoderOf",
    "ErrorsOf",
    "Evaluated",
    "FitReport",
    "Training",
    "TrainingData",
    "build_detector",
    "detector_class",
    "register",
]
