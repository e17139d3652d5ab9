"""Anomaly scores on top of a detector's per-image error (the function named by `loss.score`).

A reconstruction error mostly measures how *simple* an image is: an autoencoder trained on
Fashion-MNIST reconstructs the few ink strokes of an MNIST digit better than the clothes it
was trained on. Two published corrections, each one registered class chosen by `score.name`:

- `raw`: the error as it is (the default).
- `complexity` (Serrà et al., ICLR 2020): the error corrected by the image's length under a
  lossless compressor, in bits per pixel.
- `background` (Ren et al., NeurIPS 2019, likelihood ratio): the error minus, or over, the
  error of a background autoencoder trained on perturbed normal images, which learns the
  background statistics but not the semantics.
- `latent_knn`: the distance of an image's code (the autoencoder's bottleneck) to its k
  nearest codes of normal training images: how far from anything normal the model maps it.
- `ensemble`: the mean of member scores, each standardized on the normal validation images.
- `companion`: a score computed on another autoencoder trained on the same normal images
  (an ensemble member, so that two models' strengths add up).

The contract: `fit(validation, context)` once, on the held-out normal validation images and
what the context offers (normal training images, the detector's encoder, background models;
never test data), then `score(Scored(images, errors))`; higher = more anomalous.
"""

from __future__ import annotations

import io
import lzma
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from aead.data.sources import to_uint8, to_unit
from aead.errors import ConfigError

# Trains (or reuses) a background model on images perturbed by the given function and returns
# a function giving that model's per-image errors.
ImageFunction = Callable[[np.ndarray], np.ndarray]
BackgroundFactory = Callable[[ImageFunction], ImageFunction]


@dataclass
class Companion:
    """Another detector trained on the run's normal images: its per-image errors and its
    encoder (images -> codes; None where it has none). Both pickle with the detector they
    wrap (aead.detectors.ErrorsOf / EncoderOf), so a score holding them deploys."""

    errors: ImageFunction
    encoder: ImageFunction


# Trains (or reuses) the detector conf/model/<model> (an autoencoder with loss <loss>, or any
# other detector: loss None) on the run's normal training images (same trainer settings and
# seed) and returns it as a Companion.
CompanionFactory = Callable[[str, str | None], Companion]


@dataclass
class Scored:
    """Images with the detector's per-image errors."""

    images: np.ndarray
    errors: np.ndarray
    # for each image, its position among the training images the score was fitted on, -1 if
    # it is not one of them (None: none is); a score must not match an image with itself
    train_index: np.ndarray | None = None
    # per-pixel anomaly maps N×H×W (aead.scoring.maps), given to scores that set needs_maps
    maps: np.ndarray | None = None


@dataclass
class ScoredImages:
    """The run's scores: of the normal validation images (the threshold is fitted on them)
    and of the test images, with what the plots and pixel metrics need."""

    validation: np.ndarray
    test: np.ndarray | None = None  # set once the test images are scored
    predicted: np.ndarray | None = None  # set once the threshold is fitted
    reconstructions: np.ndarray | None = None
    val_maps: np.ndarray | None = None
    test_maps: np.ndarray | None = None
    label: str = ""  # how plots name the score


@dataclass
class FitContext:
    """What a score may learn from besides the validation errors; None where not available."""

    train_images: np.ndarray | None = None  # the normal training images
    encoder: ImageFunction | None = None  # images -> the detector's codes (autoencoders)
    backgrounds: BackgroundFactory | None = None
    companions: CompanionFactory | None = None


class Score:
    """One score. Subclasses set `name` and implement __call__; settings come from config."""

    name = ""
    SETTINGS: tuple[str, ...] = ()
    # a fitted score travels with the run's deployable detector (aead.detectors.deploy): pickled
    # without what binds it to the run's model, rebound to the loaded model by bind()
    needs_maps = False  # whether __call__ reads Scored.maps (an autoencoder's anomaly maps)

    def __init__(self, settings: Mapping):
        unknown = set(settings) - {"name", *self.SETTINGS}
        if unknown:
            raise ConfigError(
                f"score={self.name} has no setting {sorted(unknown)}; "
                f"it takes {list(self.SETTINGS)}"
            )
        self.settings = dict(settings)

    def fit(self, validation: Scored, context: FitContext | None = None) -> None:
        """Learn what the score needs from normal validation images (default: nothing)."""

    def __call__(self, scored: Scored) -> np.ndarray:
        raise NotImplementedError

    def bind(self, encoder: ImageFunction | None) -> None:
        """Reconnect a fitted score, loaded elsewhere, to its model's encoder (default: none
        needed)."""

    @property
    def label(self) -> str:
        """How plots name the score."""
        return self.name

    def describe(self, error_name: str) -> str:
        """The axis label of scores built on the error named error_name."""
        return f"{error_name}, {self.label}"

    @property
    def run_name_part(self) -> str:
        return f"-{self.name}"


SCORES: dict[str, type[Score]] = {}


def register(cls: type[Score]) -> type[Score]:
    SCORES[cls.name] = cls
    return cls


def build_score(settings: Mapping) -> Score:
    name = settings.get("name", "raw")
    try:
        return SCORES[name](settings)
    except KeyError:
        raise ConfigError(f"unknown score '{name}'; choose one of {sorted(SCORES)}") from None


@register
class RawScore(Score):
    """The detector's error, unchanged."""

    name = "raw"
    run_name_part = ""  # the default: run names stay as they were

    def describe(self, error_name: str) -> str:
        return error_name

    def __call__(self, scored: Scored) -> np.ndarray:
        return np.asarray(scored.errors, dtype=np.float64)


# ----------------------------------------------------------------------------- complexity


def _png_length(image: np.ndarray) -> int:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    return buffer.tell()


COMPRESSORS: dict[str, Callable[[np.ndarray], int]] = {
    "png": _png_length,
    "zlib": lambda image: len(zlib.compress(image.tobytes(), 9)),
    "lzma": lambda image: len(lzma.compress(image.tobytes())),
}


def complexity_bits(images: np.ndarray, compressor: str = "png") -> np.ndarray:
    """Compressed length of each image, as 8-bit pixels, in bits per pixel value (per pixel
    and channel)."""
    try:
        length = COMPRESSORS[compressor]
    except KeyError:
        raise ConfigError(
            f"unknown score.compressor '{compressor}'; choose one of {sorted(COMPRESSORS)}"
        ) from None
    pixels = to_uint8(images)
    pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels  # PNG: gray H×W or RGB H×W×3
    n_values = int(np.prod(pixels.shape[1:]))
    return np.array([8.0 * length(image) / n_values for image in pixels], dtype=np.float64)


def _combine(errors: np.ndarray, reference: np.ndarray, how: str, weight: float) -> np.ndarray:
    if how == "ratio":
        return errors / np.maximum(reference, 1e-12) ** weight
    if how == "difference":
        return errors - weight * reference
    raise ConfigError(f"unknown score.combine '{how}'; choose 'ratio' or 'difference'")


@register
class ComplexityScore(Score):
    """The error corrected by the image's complexity (compressed bits per pixel):
    'ratio': error / bits^weight; 'difference': error - weight * bits; 'max_z': the larger of
    the standardized log error and the standardized log ratio, both standardized on the normal
    validation images (the ratio fixes simple anomalies, the raw error keeps complex ones)."""

    name = "complexity"
    SETTINGS = ("compressor", "combine", "weight")
    COMBINES = ("ratio", "difference", "max_z")

    def __init__(self, settings: Mapping):
        super().__init__(settings)
        self.combine = self.settings.get("combine", "ratio")
        if self.combine not in self.COMBINES:
            raise ConfigError(
                f"unknown score.combine '{self.combine}'; choose one of {list(self.COMBINES)}"
            )
        self.weight = float(self.settings.get("weight", 1.0))
        self.compressor = self.settings.get("compressor", "png")

    def _logs(self, scored: Scored) -> tuple[np.ndarray, np.ndarray]:
        log_error = np.log(np.maximum(np.asarray(scored.errors, np.float64), 1e-12))
        bits = complexity_bits(scored.images, self.compressor)
        return log_error, log_error - self.weight * np.log(np.maximum(bits, 1e-12))

    def fit(self, validation: Scored, context: FitContext | None = None) -> None:
        if self.combine == "max_z":
            self.standardize = [(v.mean(), v.std() or 1.0) for v in self._logs(validation)]

    def __call__(self, scored: Scored) -> np.ndarray:
        if self.combine == "max_z":
            if not hasattr(self, "standardize"):
                raise RuntimeError("score.combine=max_z: fit() on validation images first")
            z = [
                (v - mean) / std
                for v, (mean, std) in zip(self._logs(scored), self.standardize, strict=True)
            ]
            return np.maximum(*z)
        bits = complexity_bits(scored.images, self.compressor)
        return _combine(np.asarray(scored.errors, np.float64), bits, self.combine, self.weight)

    @property
    def label(self) -> str:
        return f"complexity ({self.combine}, {self.compressor})"


# ----------------------------------------------------------------------------- background


def perturb_pixels(images: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """Ren et al.'s perturbation: each pixel replaced by uniform noise with probability rate."""
    if not 0 < rate < 1:
        raise ConfigError(f"score.perturbation must be in (0, 1), got {rate}")
    rng = np.random.default_rng(seed)
    images = to_unit(images)
    noise = rng.random(images.shape, dtype=np.float32)
    return np.where(rng.random(images.shape) < rate, noise, images).astype(np.float32)


@register
class BackgroundScore(Score):
    """error - background error ('difference') or error / background error ('ratio'), the
    background model being the same autoencoder trained on perturbed normal images."""

    name = "background"
    SETTINGS = ("perturbation", "combine", "weight", "seed")

    def fit(self, validation: Scored, context: FitContext | None = None) -> None:
        backgrounds = context.backgrounds if context else None
        if backgrounds is None:
            raise ConfigError("score=background needs an autoencoder (a reconstruction error)")
        rate = float(self.settings.get("perturbation", 0.2))
        seed = int(self.settings.get("seed", 0))
        self.background_errors = backgrounds(lambda images: perturb_pixels(images, rate, seed))

    def __call__(self, scored: Scored) -> np.ndarray:
        return _combine(
            np.asarray(scored.errors, np.float64),
            np.asarray(self.background_errors(scored.images), np.float64),
            self.settings.get("combine", "difference"),
            float(self.settings.get("weight", 1.0)),
        )

    @property
    def label(self) -> str:
        s = self.settings
        return f"background ({s.get('combine', 'difference')}, μ={s.get('perturbation', 0.2)})"


# ----------------------------------------------------------------------------- latent kNN


@register
class LatentKnnScore(Score):
    """Mean Euclidean distance from an image's code to its k nearest codes of the normal
    training images. The reconstruction error asks 'can the decoder redraw it?', which
    simple anomalies pass; this asks 'does the encoder map it near anything normal?'.
    stages='all': the same distance at every encoder stage (strokes and parts in the early
    stages, the whole shape at the bottleneck), each standardized on the normal validation
    images, then averaged."""

    name = "latent_knn"
    SETTINGS = ("k", "normalize", "stages")
    NORMALIZE = ("none", "l2")
    STAGES = ("bottleneck", "all")

    def __init__(self, settings: Mapping):
        super().__init__(settings)
        self.k = int(self.settings.get("k", 5))
        if self.k < 1:
            raise ConfigError(f"score.k must be a positive number, got {self.k}")
        self.normalize = self.settings.get("normalize", "l2")
        if self.normalize not in self.NORMALIZE:
            raise ConfigError(
                f"unknown score.normalize '{self.normalize}'; choose one of {list(self.NORMALIZE)}"
            )
        self.stages = self.settings.get("stages", "bottleneck")
        if self.stages not in self.STAGES:
            raise ConfigError(
                f"unknown score.stages '{self.stages}'; choose one of {list(self.STAGES)}"
            )

    def fit(self, validation: Scored, context: FitContext | None = None) -> None:
        from sklearn.neighbors import NearestNeighbors

        if context is None or context.encoder is None or context.train_images is None:
            raise ConfigError("score=latent_knn needs an autoencoder (its encoder's codes)")
        if self.stages == "all" and not hasattr(context.encoder, "stages"):
            raise ConfigError("score.stages=all needs an autoencoder's encoder stages")
        self.encoder = context.encoder
        self.neighbours = [
            NearestNeighbors(n_neighbors=min(self.k, len(codes))).fit(codes)
            for codes in self._codes(context.train_images)
        ]
        self.standardize = None
        if len(self.neighbours) > 1:  # stages on different scales weigh alike
            distances = self._distances(validation.images, validation.train_index)
            self.standardize = [(d.mean(), d.std() or 1.0) for d in distances]

    def bind(self, encoder: ImageFunction | None) -> None:
        self.encoder = encoder

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "encoder"}  # bound on load

    def _codes(self, images: np.ndarray) -> list[np.ndarray]:
        """The codes, one array per stage (one stage: the bottleneck)."""
        if self.stages == "all":
            stages = self.encoder.stages(images)
        else:
            stages = [self.encoder(images)]
        out = []
        for codes in stages:
            codes = np.asarray(codes, np.float64).reshape(len(codes), -1)
            if self.normalize == "l2":  # distances between directions: cosine-like
                codes = codes / np.maximum(np.linalg.norm(codes, axis=1, keepdims=True), 1e-12)
            out.append(codes)
        return out

    def _distances(self, images: np.ndarray, train_index=None) -> list[np.ndarray]:
        return [
            self._mean_distance(neighbours, codes, train_index)
            for neighbours, codes in zip(self.neighbours, self._codes(images), strict=True)
        ]

    @staticmethod
    def _mean_distance(neighbours, codes: np.ndarray, train_index) -> np.ndarray:
        """Mean distance to the k nearest training codes; an image that is itself a training
        image (train_index >= 0) is not one of its own neighbours."""
        k = neighbours.n_neighbors
        if train_index is None or not (np.asarray(train_index) >= 0).any():
            return neighbours.kneighbors(codes)[0].mean(axis=1)
        n_fit = neighbours.n_samples_fit_
        distances, index = neighbours.kneighbors(codes, n_neighbors=min(k + 1, n_fit))
        others = index != np.asarray(train_index)[:, None]
        # the first k neighbours that are not the image itself (stable: nearest first)
        keep = np.argsort(~others, axis=1, kind="stable")[:, : min(k, n_fit - 1) or 1]
        return np.take_along_axis(distances, keep, axis=1).mean(axis=1)

    def __call__(self, scored: Scored) -> np.ndarray:
        if not hasattr(self, "neighbours"):
            raise RuntimeError("score=latent_knn: fit() on the training codes first")
        distances = self._distances(scored.images, scored.train_index)
        if self.standardize is None:
            return distances[0]
        z = [(d - mean) / std for d, (mean, std) in zip(distances, self.standardize, strict=True)]
        return np.mean(z, axis=0)

    @property
    def run_name_part(self) -> str:
        return (
            "-latent_knn"
            + ("" if self.normalize == "l2" else f"-{self.normalize}")
            + ("" if self.stages == "bottleneck" else "-stages")
        )

    @property
    def label(self) -> str:
        stages = "" if self.stages == "bottleneck" else ", every stage"
        return f"latent kNN (k={self.k}, {self.normalize}{stages})"

    def describe(self, error_name: str) -> str:
        unit = ", unit-length codes" if self.normalize == "l2" else ""
        if self.stages == "all":
            return f"code distance to the {self.k} nearest normal codes, every stage{unit}"
        return f"code distance to the {self.k} nearest normal codes{unit}"


# ----------------------------------------------------------------------------- ensemble


@register
class EnsembleScore(Score):
    """The mean of its member scores, each standardized (z) on the normal validation images,
    so that scores on different scales weigh alike. Members are score configs themselves,
    e.g. a code-distance score beside a complexity-corrected error: what one misses, the
    other may catch."""

    name = "ensemble"
    SETTINGS = ("members",)

    def __init__(self, settings: Mapping):
        super().__init__(settings)
        members = list(self.settings.get("members") or [])
        if not members or any(m.get("name") == self.name for m in members):
            raise ConfigError("score.members: a list of one or more other scores' settings")
        self.members = [build_score(dict(m)) for m in members]
        self.needs_maps = any(m.needs_maps for m in self.members)

    def bind(self, encoder: ImageFunction | None) -> None:
        for member in self.members:
            member.bind(encoder)

    def fit(self, validation: Scored, context: FitContext | None = None) -> None:
        self.standardize = []
        for member in self.members:
            member.fit(validation, context)
            values = member(validation)
            self.standardize.append((values.mean(), values.std() or 1.0))

    def __call__(self, scored: Scored) -> np.ndarray:
        if not hasattr(self, "standardize"):
            raise RuntimeError("score=ensemble: fit() on validation images first")
        z = [
            (member(scored) - mean) / std
            for member, (mean, std) in zip(self.members, self.standardize, strict=True)
        ]
        return np.mean(z, axis=0)

    @property
    def label(self) -> str:
        return "ensemble (" + " + ".join(m.label for m in self.members) + ")"

    def describe(self, error_name: str) -> str:
        return "mean z of " + ", ".join(m.describe(error_name) for m in self.members)


# ----------------------------------------------------------------------------- companion


@register
class CompanionScore(Score):
    """A score of another detector trained on the run's normal images (`model`, an
    autoencoder trained with `loss`, or any other detector: kNN on pixels, Deep SVDD, ...;
    obtained through the model store like the run's own), e.g. the dense AE's
    complexity-corrected error as an ensemble member beside the run's own conv AE's code
    distance: two models that miss different anomalies. It deploys with its model."""

    name = "companion"
    SETTINGS = ("model", "loss", "score")

    def __init__(self, settings: Mapping):
        super().__init__(settings)
        if not self.settings.get("model"):
            raise ConfigError(
                "score=companion needs score.model (and score.loss for an autoencoder, "
                "e.g. model=dense, loss=mse)"
            )
        inner = dict(self.settings.get("score") or {"name": "raw"})
        if inner.get("name") in (self.name, "background"):
            raise ConfigError(f"score=companion cannot score with {inner.get('name')}")
        self.inner = build_score(inner)

    def fit(self, validation: Scored, context: FitContext | None = None) -> None:
        if context is None or context.companions is None or context.train_images is None:
            raise ConfigError("score=companion needs a run that learns from normal images")
        self.companion = context.companions(self.settings["model"], self.settings.get("loss"))
        inner_context = FitContext(
            train_images=context.train_images, encoder=self.companion.encoder
        )
        self.inner.fit(self._scored(validation), inner_context)

    def bind(self, encoder: ImageFunction | None) -> None:
        self.inner.bind(self.companion.encoder)  # its own model's codes, not the run's

    def _scored(self, scored: Scored) -> Scored:
        """The same images with the companion's errors (trained on the same images)."""
        # the run's maps are not the companion's: its inner score gets none
        errors = self.companion.errors(scored.images, train_index=scored.train_index)
        return Scored(scored.images, errors, scored.train_index)

    def __call__(self, scored: Scored) -> np.ndarray:
        if not hasattr(self, "companion"):
            raise RuntimeError("score=companion: fit() first")
        return self.inner(self._scored(scored))

    @property
    def _what(self) -> str:
        s = self.settings
        return f"the {s['model']} AE" if s.get("loss") else f"{s['model']}"

    @property
    def label(self) -> str:
        loss = f" ({self.settings['loss']})" if self.settings.get("loss") else ""
        return f"{self.inner.label} of {self._what}{loss}"

    def describe(self, error_name: str) -> str:
        inner = self.inner.describe(self.settings.get("loss") or self.settings["model"])
        return f"{inner} of {self._what}"


# ----------------------------------------------------------------------------- map


@register
class MapScore(Score):
    """An image's score from its anomaly map (aead.scoring.maps): the maximum ('max') or the mean of
    the top `top_percent` % of pixels ('top_mean') of the map smoothed by a Gaussian of
    `sigma` pixels. Where a defect is small, its few bad pixels decide, not the image's mean."""

    name = "map"
    SETTINGS = ("reduce", "top_percent", "sigma")
    needs_maps = True

    def __init__(self, settings: Mapping):
        super().__init__(settings)
        self.reduce = self.settings.get("reduce", "max")
        if self.reduce not in ("max", "top_mean"):
            raise ConfigError(f"score.reduce={self.reduce}: not accepted; choose max or top_mean")
        self.top_percent = float(self.settings.get("top_percent", 1.0))
        self.sigma = float(self.settings.get("sigma", 2.0))

    def __call__(self, scored: Scored) -> np.ndarray:
        if scored.maps is None:
            raise ConfigError("score=map needs an autoencoder's anomaly maps")
        from aead.scoring.maps import smooth

        flat = smooth(scored.maps, self.sigma).reshape(len(scored.maps), -1).astype(np.float64)
        if self.reduce == "max":
            return flat.max(axis=1)
        k = max(1, int(np.ceil(self.top_percent / 100 * flat.shape[1])))
        return np.partition(flat, -k, axis=1)[:, -k:].mean(axis=1)

    @property
    def label(self) -> str:
        what = "max" if self.reduce == "max" else f"top {self.top_percent:g}% mean"
        return f"map {what}, σ {self.sigma:g}"

    @property
    def run_name_part(self) -> str:
        return f"-map_{self.reduce}"
