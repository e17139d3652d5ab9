"""Thresholds: fitted on the anomaly scores of held-out *normal validation* data, never on
test data, then applied to test scores. A side that does not exist is None."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aead.errors import ConfigError


@dataclass(frozen=True)
class Threshold:
    name: str
    lower: float | None
    upper: float | None
    # the fitted normal distribution (Z-score only), for the histogram's curve
    mean: float | None = None
    std: float | None = None

    def flag(self, scores: np.ndarray) -> np.ndarray:
        """True where a score falls outside [lower, upper]: predicted anomaly."""
        scores = np.asarray(scores, dtype=np.float64)
        flagged = np.zeros(scores.shape, dtype=bool)
        if self.lower is not None:
            flagged |= scores < self.lower
        if self.upper is not None:
            flagged |= scores > self.upper
        return flagged

    def as_metrics(self) -> dict[str, float]:
        out = {}
        if self.lower is not None:
            out["threshold_lower"] = self.lower
        if self.upper is not None:
            out["threshold_upper"] = self.upper
        return out


def _check(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("cannot fit a threshold on zero validation scores")
    if not np.all(np.isfinite(scores)):
        raise ValueError("validation scores contain NaN or infinity")
    return scores


def fit_zscore(val_scores: np.ndarray, k: float = 3.0) -> Threshold:
    """Two-sided: mean +- k standard deviations of the validation scores."""
    if k <= 0:
        raise ConfigError(f"threshold.k must be positive, got {k}")
    scores = _check(val_scores)
    mean, std = float(scores.mean()), float(scores.std())
    return Threshold("zscore", mean - k * std, mean + k * std, mean=mean, std=std)


def fit_percentile(val_scores: np.ndarray, q: float = 99.9) -> Threshold:
    """One-sided: the q-th percentile of the validation scores is the upper bound."""
    if not 0 < q <= 100:
        raise ConfigError(f"threshold.q must be in (0, 100], got {q}")
    scores = _check(val_scores)
    return Threshold("percentile", None, float(np.percentile(scores, q)))


def fit_threshold(cfg, val_scores: np.ndarray) -> Threshold:
    """Fit the threshold named in the config ({name: zscore, k} or {name: percentile, q})."""
    if cfg["name"] == "zscore":
        return fit_zscore(val_scores, float(cfg.get("k", 3.0)))
    if cfg["name"] == "percentile":
        return fit_percentile(val_scores, float(cfg.get("q", 99.9)))
    raise ConfigError(f"unknown threshold '{cfg['name']}'; choose zscore or percentile")
