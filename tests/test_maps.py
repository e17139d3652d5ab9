"""Anomaly maps (per-pixel forms of the losses), the map score, and the pixel-level metrics,
pinned on hand-worked cases."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from aead.detectors.losses import score_images
from aead.scoring.maps import pixel_maps, smooth, ssim_map
from aead.scoring.pixel_metrics import aupro, best_pixel_f1, overlap, pixel_roc_auc
from aead.scoring.scores import Scored, build_score

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("loss", ["mse", "mae", "bce"])
@pytest.mark.parametrize("channels", [1, 3])
def test_a_map_averages_to_its_loss(loss, channels):
    x = RNG.random((4, 9, 13, channels), dtype=np.float32)
    y = np.clip(x + RNG.normal(0, 0.2, x.shape), 0.01, 0.99).astype(np.float32)
    maps = pixel_maps(x, y, loss)
    assert maps.shape == (4, 9, 13)
    np.testing.assert_allclose(maps.mean(axis=(1, 2)), score_images(x, y, loss), rtol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_map_is_tf_image_ssim_at_every_pixel(channels):
    x = RNG.random((2, 24, 30, channels), dtype=np.float32)
    y = np.clip(x + RNG.normal(0, 0.1, x.shape), 0, 1).astype(np.float32)
    full = ssim_map(x, y)
    assert full.shape == x.shape
    interior = full[:, 5:-5, 5:-5, :].mean(axis=(1, 2, 3))  # tf.image.ssim's VALID window
    np.testing.assert_allclose(interior, tf.image.ssim(x, y, max_val=1.0).numpy(), atol=1e-5)
    assert np.allclose(ssim_map(x, x), 1.0, atol=1e-5)  # identical images: SSIM 1 everywhere


def test_smoothing_spreads_a_spike_and_keeps_its_mass():
    spike = np.zeros((1, 21, 21), np.float32)
    spike[0, 10, 10] = 1.0
    assert smooth(spike, 0) is spike
    blurred = smooth(spike, 2.0)
    assert blurred.max() < 0.1 and math.isclose(blurred.sum(), 1.0, rel_tol=1e-4)


# Image A: a 1×4 strip whose first two pixels are one defect; image B: no defect.
MASKS = np.array([[[1, 1, 0, 0]], [[0, 0, 0, 0]]], bool)
MAPS = np.array([[[0.9, 0.5, 0.4, 0.1]], [[0.3, 0.2, 0.6, 0.0]]])


def test_pixel_roc_auc_and_best_f1_by_hand():
    # positives 0.9, 0.5 against six normal pixels: 6 + 5 of 12 pairs ordered right
    assert pixel_roc_auc(MASKS, MAPS) == pytest.approx(11 / 12)
    # at t = 0.5: 2 of 3 flagged pixels are defects, both defect pixels found: F1 0.8
    assert best_pixel_f1(MASKS, MAPS) == pytest.approx(0.8)


def test_aupro_by_hand():
    # PRO 0.5 from FPR 0 to 1/6 (only 0.9 above the first normal pixel 0.6), then 1 up to
    # the limit 0.3: (0.5 / 6 + (0.3 - 1 / 6)) / 0.3
    assert aupro(MASKS, MAPS) == pytest.approx((0.5 / 6 + (0.3 - 1 / 6)) / 0.3)
    assert aupro(MASKS, MASKS.astype(float)) == pytest.approx(1.0)  # the mask itself


def test_aupro_weighs_every_region_alike_whatever_its_size():
    # one 1×6 image: a 1-pixel defect at 0 and a 2-pixel defect at 2-3 (not connected)
    masks = np.array([[[1, 0, 1, 1, 0, 0]]], bool)
    maps = np.array([[[0.2, 0.1, 0.8, 0.05, 0.0, 0.3]]])
    # above the first normal pixel (0.3, FPR 1/3 > 0.3) only half the 2-pixel region is
    # found: PRO = (0 + 1/2) / 2 = 0.25 all the way to the limit (per pixel it would be 1/3)
    assert aupro(masks, maps) == pytest.approx(0.25)


def test_degenerate_masks_give_nan():
    nothing = np.zeros((2, 3, 3), bool)
    everything = np.ones((2, 3, 3), bool)
    maps = RNG.random((2, 3, 3))
    for masks in (nothing, everything):
        assert math.isnan(aupro(masks, maps)) and math.isnan(pixel_roc_auc(masks, maps))
    assert math.isnan(best_pixel_f1(nothing, maps))
    assert best_pixel_f1(everything, maps) == pytest.approx(1.0)  # flag all: every one right


def test_overlap_by_hand():
    masks = np.array([[[1, 1, 0, 0]]], bool)
    predicted = np.array([[[0, 1, 1, 0]]], bool)
    assert overlap(masks, predicted) == {"pixel_iou": 1 / 3, "pixel_dice": 0.5}


def test_map_score_reduces_the_smoothed_map():
    maps = np.zeros((2, 10, 10), np.float32)
    maps[0, 3, 3] = 1.0
    maps[1] = 0.05  # an even, low error
    scored = Scored(np.zeros((2, 10, 10, 1)), np.zeros(2), maps=maps)
    peak = build_score({"name": "map", "reduce": "max", "sigma": 0})
    assert peak.needs_maps and peak(scored).tolist() == [1.0, pytest.approx(0.05)]
    top = build_score({"name": "map", "reduce": "top_mean", "top_percent": 2, "sigma": 0})
    assert top(scored).tolist() == [pytest.approx(0.5), pytest.approx(0.05)]  # mean of 2 pixels
    ensemble = build_score({"name": "ensemble", "members": [{"name": "raw"}, {"name": "map"}]})
    assert ensemble.needs_maps


@pytest.mark.slow
def test_a_run_on_folders_with_masks_logs_pixel_metrics_and_maps(make_config, tmp_path):
    from mlflow.tracking import MlflowClient

    from aead.pipeline import RunContext, run
    from tests.test_image_folders import _inspection_folders

    good, bad, masks = _inspection_folders(tmp_path)
    cfg = make_config(
        "scenario=folders", f"scenario.normal_dir={good}", f"scenario.abnormal_dir={bad}",
        f"scenario.mask_dir={masks}", "score=map", "loss=mse", "trainer.batch_size=4",
        "tracking.log_model=false",
    )  # fmt: skip
    result = run(cfg, RunContext(base_dir=str(tmp_path)))
    metrics = result.metrics
    for name in ("pixel_roc_auc", "pixel_aupro", "pixel_best_f1", "pixel_iou", "pixel_dice"):
        assert 0 <= metrics[name] <= 1, name
    assert "pixel_threshold_upper" in metrics
    client = MlflowClient(result.tracking_uri)
    plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert "plots/anomaly_maps.png" in plots


def test_binned_figures_match_scikit_learn_on_every_pixel():
    from sklearn.metrics import precision_recall_curve, roc_auc_score

    rng = np.random.default_rng(3)
    masks = np.zeros((6, 20, 20), bool)
    masks[1, 3:9, 4:7] = masks[2, 10:18, 10:12] = masks[4, 0:3, 0:20] = True
    maps = rng.random((6, 20, 20)) + 0.8 * masks  # defects score higher, with overlap
    exact_auc = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_roc_auc(masks, maps) == pytest.approx(exact_auc, abs=1e-4)
    precision, recall, _ = precision_recall_curve(masks.ravel(), maps.ravel())
    exact_f1 = np.max(2 * precision * recall / np.maximum(precision + recall, 1e-12))
    assert best_pixel_f1(masks, maps) == pytest.approx(exact_f1, abs=1e-3)


def test_defects_table_counts_a_cell_level_with_a_baseline_as_not_above():
    import importlib.util

    import pandas as pd

    script = Path(__file__).resolve().parent.parent / "scripts" / "defects_table.py"
    spec = importlib.util.spec_from_file_location("defects_table", script)
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    rows = []
    for category in table.CATEGORIES:
        rows.append({"cell": "patch_nn", "category": category, "pixel_roc_auc": 0.99,
                     "pixel_aupro": 0.95})  # fmt: skip
        rows.append({"cell": "ae", "category": category, "pixel_roc_auc": 0.995,
                     "pixel_aupro": 0.96})  # fmt: skip
    runs = pd.DataFrame(rows)
    per_category = runs.groupby(["cell", "category"]).agg(["mean", "std"])
    assert table.above_both_baselines(per_category, "ae")
    per_category.loc[("ae", "grid"), ("pixel_aupro", "mean")] = 0.95 + 3e-7  # level, not above
    assert not table.above_both_baselines(per_category, "ae")
    per_category.loc[("ae", "grid"), ("pixel_aupro", "mean")] = 0.9502
    assert table.above_both_baselines(per_category, "ae")
    assert not table.above_both_baselines(per_category.drop(index=("ae", "woven")), "ae")
