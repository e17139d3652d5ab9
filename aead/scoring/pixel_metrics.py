"""Pixel-level evaluation of anomaly maps against ground-truth masks: pixel ROC-AUC, AUPRO up
to a false-positive rate of 0.3 (normalized by that limit: MVTec AD's protocol, as anomalib
computes it), the best pixel F1, and the IoU / Dice of masks predicted at a pixel threshold.
Masks are bool N×H×W, maps float N×H×W (higher = more anomalous). An undefined figure (no
defect pixel, or no normal pixel, anywhere) is NaN."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from sklearn import metrics as skm

FPR_LIMIT = 0.3
BINS = 1 << 16  # map values are binned: memory stays that of the maps, whatever their number
CHUNK = 64  # images per step


@dataclass
class Histograms:
    """Per map-value bin: defect-free pixels, defect pixels, and defect pixels weighted
    1 / (their region's size), so that each connected defect region sums to 1."""

    values: np.ndarray  # each bin's lower edge (a threshold)
    normal: np.ndarray
    defect: np.ndarray
    regions: np.ndarray
    n_regions: int

    def weighted(self, positives: np.ndarray):
        """(labels, scores, weights) for scikit-learn: one row per non-empty bin and side."""
        keep_n, keep_p = self.normal > 0, positives > 0
        labels = np.r_[np.zeros(keep_n.sum()), np.ones(keep_p.sum())]
        scores = np.r_[self.values[keep_n], self.values[keep_p]]
        return labels, scores, np.r_[self.normal[keep_n], positives[keep_p]]


def histograms(masks: np.ndarray, maps: np.ndarray, bins: int = BINS) -> Histograms:
    """One pass over the maps, CHUNK images at a time; regions are the connected defects of
    each image's mask (scipy.ndimage.label, 4-connected). Map values in one bin count as
    ties (bins are 1/65,536 of the maps' range wide)."""
    maps, masks = np.asarray(maps), np.asarray(masks, bool)
    low, high = float(maps.min()), float(maps.max())
    scale = (bins - 1) / (high - low) if high > low else 0.0
    normal, defect, regions = np.zeros(bins), np.zeros(bins), np.zeros(bins)
    n_regions = 0
    for start in range(0, len(maps), CHUNK):
        part = slice(start, start + CHUNK)
        index = ((maps[part] - low) * scale).astype(np.int32)
        flags = masks[part]
        normal += np.bincount(index[~flags], minlength=bins)
        defect += np.bincount(index[flags], minlength=bins)
        for image_index, mask in zip(index, flags, strict=True):
            found, n = ndimage.label(mask)
            if n:
                sizes = np.bincount(found.ravel())
                inside = found > 0
                weights = 1.0 / sizes[found[inside]]
                regions += np.bincount(image_index[inside], weights=weights, minlength=bins)
                n_regions += n
    values = low + np.arange(bins) / scale if scale else np.full(bins, low)
    return Histograms(values, normal, defect, regions, n_regions)


def _both_kinds(h: Histograms) -> bool:
    return h.normal.sum() > 0 and h.defect.sum() > 0


def pixel_roc_auc(masks: np.ndarray, maps: np.ndarray, h: Histograms | None = None) -> float:
    h = h or histograms(masks, maps)
    if not _both_kinds(h):
        return math.nan
    labels, scores, weights = h.weighted(h.defect)
    return float(skm.roc_auc_score(labels, scores, sample_weight=weights))


def best_pixel_f1(masks: np.ndarray, maps: np.ndarray, h: Histograms | None = None) -> float:
    h = h or histograms(masks, maps)
    if not h.defect.sum():
        return math.nan
    labels, scores, weights = h.weighted(h.defect)
    precision, recall, _ = skm.precision_recall_curve(labels, scores, sample_weight=weights)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(f1.max())


def aupro(
    masks: np.ndarray, maps: np.ndarray, fpr_limit: float = FPR_LIMIT, h: Histograms | None = None
) -> float:
    """Area under the per-region-overlap curve up to fpr_limit, divided by fpr_limit.

    At a threshold t a region's overlap is the share of its pixels with map ≥ t, PRO(t) the
    mean over all regions of all images, FPR(t) the share of defect-free pixels with map ≥ t:
    scikit-learn's ROC curve of defect-free pixels against region pixels weighted 1/size."""
    h = h or histograms(masks, maps)
    if not _both_kinds(h):
        return math.nan
    labels, scores, weights = h.weighted(h.regions / h.n_regions)
    fpr, pro, _ = skm.roc_curve(labels, scores, sample_weight=weights, drop_intermediate=False)
    cut = int(np.searchsorted(fpr, fpr_limit, side="right"))
    x, y = fpr[:cut], pro[:cut]
    if cut < len(fpr):  # the curve crosses the limit between two thresholds: interpolate
        x0, x1, y0, y1 = fpr[cut - 1], fpr[cut], pro[cut - 1], pro[cut]
        x, y = np.r_[x, fpr_limit], np.r_[y, y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)]
    return float(skm.auc(x, y) / fpr_limit)


def overlap(masks: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """IoU and Dice of the predicted defect pixels against the masks, over all images."""
    masks, predicted = np.asarray(masks, bool), np.asarray(predicted, bool)
    return _overlap(
        int((masks & predicted).sum()), int((masks | predicted).sum()),
        int(masks.sum() + predicted.sum()),
    )  # fmt: skip


def overlap_at(masks: np.ndarray, maps: np.ndarray, threshold) -> dict[str, float]:
    """overlap() of the masks a fitted thresholds.Threshold predicts, CHUNK images at a time."""
    both = either = total = 0
    for start in range(0, len(maps), CHUNK):
        part = slice(start, start + CHUNK)
        truth = np.asarray(masks[part], bool)
        flagged = threshold.flag(np.asarray(maps[part]).ravel()).reshape(truth.shape)
        both += int((truth & flagged).sum())
        either += int((truth | flagged).sum())
        total += int(truth.sum() + flagged.sum())
    return _overlap(both, either, total)


def _overlap(both: int, either: int, total: int) -> dict[str, float]:
    return {
        "pixel_iou": both / either if either else math.nan,
        "pixel_dice": 2 * both / total if total else math.nan,
    }


def pixel_metrics(masks: np.ndarray, maps: np.ndarray, threshold) -> dict[str, float]:
    """Every pixel-level figure; threshold: a fitted thresholds.Threshold for the pixels."""
    h = histograms(masks, maps)
    return {
        "pixel_roc_auc": pixel_roc_auc(masks, maps, h),
        "pixel_aupro": aupro(masks, maps, h=h),
        "pixel_best_f1": best_pixel_f1(masks, maps, h),
        **overlap_at(masks, maps, threshold),
    }
