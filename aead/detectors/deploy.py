"""The deployable detector: what a run logs as the MLflow pyfunc model `detector`. It takes
images and returns, per image, the run's anomaly `score` and `is_anomaly` against the run's
fitted threshold, and it loads where aead is not installed: aead's own modules travel with
the model (MLflow `code_paths`). Its state is the run's fitted detector (aead.detectors: Keras
models uncompiled, no custom loss to find), score (ensembles, companions and background
models included) and threshold, pickled together.

Input: N×H×W×C images of the shape the run trained on (N×H×W when it has one channel);
integers are 0–255 (uint8 images, or whole numbers in a JSON request), floats are 0–1.
Anything else is refused with one line saying what was expected. The shape is in the logged
model's metadata (`image_shape`).
"""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

import aead

MNIST_SHAPE = (28, 28, 1)


class InputError(ValueError):
    """Images the detector cannot score; the message says what it takes."""


def _shape_text(shape) -> str:
    height, width, channels = shape
    one = f"N×{height}×{width} or " if channels == 1 else ""
    return f"{one}N×{height}×{width}×{channels}"


def as_images(data, shape=MNIST_SHAPE) -> np.ndarray:
    """The input as float32 N×H×W×C in [0, 1], for images of `shape` (H, W, C)."""
    shape = tuple(int(n) for n in shape)
    expected = _shape_text(shape)
    if isinstance(data, pd.DataFrame):
        raise InputError(f"give the images as an array ({expected}), not a DataFrame")
    if isinstance(data, dict) and len(data) == 1:
        data = next(iter(data.values()))  # a named tensor input
    try:
        array = np.asarray(data)
        if array.dtype == object:  # nested lists from a JSON request
            array = np.asarray(array.tolist())
    except (TypeError, ValueError) as exc:
        raise InputError(f"images must be a numeric array {expected} ({exc})") from None
    given = array.shape
    if array.ndim == 3 and shape[2] == 1:
        array = array[..., None]
    if array.ndim != 4 or array.shape[1:] != shape:
        raise InputError(f"images must be {expected}, got shape {given}")
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise InputError(f"images must hold numbers, got {array.dtype}")
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise InputError("integer images must hold values 0–255")
        return array.astype(np.float32) / 255.0
    if not np.isfinite(array).all():
        raise InputError("images must not hold NaN or infinite values")
    if array.size and (array.min() < 0 or array.max() > 1):
        raise InputError("float images must hold values 0–1 (send 0–255 as uint8 or whole numbers)")
    return array.astype(np.float32)


class DetectorModel(mlflow.pyfunc.PythonModel):
    """The run's detector -> errors (and maps) -> the run's score -> its threshold."""

    def load_context(self, context) -> None:
        with open(context.artifacts["detector"], "rb") as handle:
            state = pickle.load(handle)
        self.detector, self.score = state["detector"], state["score"]
        self.threshold, self.map_sigma = state["threshold"], state["map_sigma"]
        self.score.bind(self.detector.encoder())

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        from aead.scoring.scores import Scored

        images = as_images(model_input, self.detector.image_shape_)
        out = self.detector.errors(images)
        want_maps = bool((params or {}).get("maps"))
        maps = None
        if self.detector.has_maps and (want_maps or self.score.needs_maps):
            maps = self.detector.maps(images, out.reconstructions)
        scores = self.score(Scored(images, out.errors, maps=maps))
        frame = pd.DataFrame({"score": scores, "is_anomaly": self.threshold.flag(scores)})
        if want_maps:  # the anomaly maps the run drew: smoothed by its maps.sigma
            if maps is None:
                raise InputError(f"maps: this detector ({self.detector.name}) has no anomaly maps")
            from aead.scoring.maps import smooth

            frame["map"] = [m.tolist() for m in smooth(maps, self.map_sigma)]
        return frame


def detector_state(detector, score, threshold, map_sigma=0.0) -> bytes:
    """The deployable detector's state, pickled: the fitted detector, score and threshold as
    they are now."""
    state = {"detector": detector, "score": score, "threshold": threshold,
             "map_sigma": float(map_sigma)}  # fmt: skip
    return pickle.dumps(state)


def log_detector(state: bytes, example, image_shape, kind: str):
    """Logs a detector_state() as the pyfunc model `detector` of the active run, with the
    input example `example` (uint8 images as users send them)."""
    from importlib.metadata import version

    import keras
    import sklearn
    import tensorflow as tf
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    with tempfile.TemporaryDirectory() as folder:
        state_path = Path(folder, "detector.pkl")
        state_path.write_bytes(state)
        # MLflow enforces one dtype and rank for a tensor input; the detector takes two of
        # each (checked by as_images), so the input is declared as any array.
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(object), (-1,))]),
            outputs=Schema([ColSpec("double", "score"), ColSpec("boolean", "is_anomaly")]),
            # params={"maps": true}: also each image's anomaly map (a column "map", H×W lists)
            params=ParamSchema([ParamSpec("maps", "boolean", False)]),
        )
        mlflow.pyfunc.log_model(
            name="detector",
            python_model=DetectorModel(),
            artifacts={"detector": str(state_path)},
            code_paths=[str(Path(aead.__file__).parent)],
            signature=signature,
            input_example=np.asarray(example),
            metadata={"image_shape": list(image_shape), "kind": kind},
            pip_requirements=[
                f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}",
                f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}",
                f"pandas=={pd.__version__}", f"scikit-learn=={sklearn.__version__}",
                f"pyod=={version('pyod')}", "pillow",
            ],
        )  # fmt: skip
