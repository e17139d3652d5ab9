"""Pixel-level evaluation of anomaly maps against ground-truth masks: pixel ROC-AUC, AUPRO up
to a false-positive rate of 0.3 (normalized by that limit: MVTec AD's protocol, as anomalib
computes it), the best pixel F1, and the IoU / Dice of masks predicted at a pixel threshold.
Masks are bool N×H×W, maps float N×H×W (higher = more anomalous). An undefined figure (no
defect pixel, or no normal pixel, anywhere) is NaN."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from sklearn import metrics as skm

FPR_LIMIT = 0.3


def _both_kinds(masks: np.ndarray) -> bool:
    return bool(masks.any()) and not bool(masks.all())


def pixel_roc_auc(masks: np.ndarray, maps: np.ndarray) -> float:
    masks = np.asarray(masks, bool)
    if not _both_kinds(masks):
        return math.nan
    return float(skm.roc_auc_score(masks.ravel(), np.asarray(maps).ravel()))


def best_pixel_f1(masks: np.ndarray, maps: np.ndarray) -> float:
    masks = np.asarray(masks, bool)
    if not masks.any():
        return math.nan
    precision, recall, _ = skm.precision_recall_curve(masks.ravel(), np.asarray(maps).ravel())
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(f1.max())


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = FPR_LIMIT) -> float:
    """Area under the per-region-overlap curve up to fpr_limit, divided by fpr_limit.

    A region is a connected defect of one image's mask (scipy.ndimage.label, 4-connected);
    at a threshold t its overlap is the share of its pixels with map ≥ t, PRO(t) the mean
    over all regions, and FPR(t) the share of defect-free pixels with map ≥ t."""
    masks = np.asarray(masks, bool)
    if not _both_kinds(masks):
        return math.nan
    labels = np.zeros(masks.shape, np.int32)
    n_regions = 0
    for i, mask in enumerate(masks):
        found, n = ndimage.label(mask)
        labels[i] = np.where(found > 0, found + n_regions, 0)
        n_regions += n
    flat = labels.ravel()
    sizes = np.bincount(flat, minlength=n_regions + 1)
    weight = np.zeros(n_regions + 1)
    weight[1:] = 1.0 / (sizes[1:] * n_regions)  # each region counts equally, whatever its size
    order = np.argsort(-np.asarray(maps).ravel(), kind="stable")
    ordered = flat[order]
    fpr = np.cumsum(ordered == 0) / sizes[0]
    pro = np.cumsum(weight[ordered])
    scores = np.asarray(maps).ravel()[order]
    last = np.r_[np.flatnonzero(np.diff(scores) != 0), len(scores) - 1]  # end of each tie
    fpr, pro = np.r_[0.0, fpr[last]], np.r_[0.0, pro[last]]
    cut = int(np.searchsorted(fpr, fpr_limit, side="right"))
    x, y = fpr[:cut], pro[:cut]
    if cut < len(fpr):  # the curve crosses the limit between two thresholds: interpolate
        x0, x1, y0, y1 = fpr[cut - 1], fpr[cut], pro[cut - 1], pro[cut]
        x, y = np.r_[x, fpr_limit], np.r_[y, y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)]
    return float(np.trapezoid(y, x) / fpr_limit)


def overlap(masks: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """IoU and Dice of the predicted defect pixels against the masks, over all images."""
    masks, predicted = np.asarray(masks, bool), np.asarray(predicted, bool)
    both = int((masks & predicted).sum())
    either = int((masks | predicted).sum())
    total = int(masks.sum() + predicted.sum())
    return {
        "pixel_iou": both / either if either else math.nan,
        "pixel_dice": 2 * both / total if total else math.nan,
    }


def pixel_metrics(masks: np.ndarray, maps: np.ndarray, threshold) -> dict[str, float]:
    """Every pixel-level figure; threshold: a fitted thresholds.Threshold for the pixels."""
    predicted = threshold.flag(np.asarray(maps).ravel()).reshape(np.shape(maps))
    return {
        "pixel_roc_auc": pixel_roc_auc(masks, maps),
        "pixel_aupro": aupro(masks, maps),
        "pixel_best_f1": best_pixel_f1(masks, maps),
        **overlap(masks, predicted),
    }
