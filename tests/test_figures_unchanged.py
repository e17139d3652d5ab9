"""Figures for the same config and seed stay the same across refactors: these values were
logged by the code before the detector contract (commit da36f18, 2026-12-02) on one-epoch
slices of the real data, and the code after it gives the same, bit for bit on the same machine
(compared with /tmp-style scripts on both trees for six configurations; these four are
pinned). ROC-AUC on 200 test images moves in steps of 1e-4, so 1e-6 means the same ranking."""

from __future__ import annotations

import pytest

from aead.pipeline import RunContext, run

CASES = {
    "conv_bce": (
        [],
        {"roc_auc": 0.928, "average_precision": 0.9482016033894819,
         "threshold_upper": 0.6596710067595977, "threshold_lower": 0.6111270962550304},
    ),
    "ensemble_with_a_companion": (
        ["experiment=one_class_benchmark", "+detector=conv_knn_dense_complexity",
         "scenario.normal_class=1", "trainer.epochs=1", "trainer.patience=0"],
        {"roc_auc": 0.9883687118348357, "average_precision": 0.998745961846134,
         "threshold_upper": 2.2609477057832645},
    ),
    "cnn_kfold": (
        ["model=cnn", "scenario=one_class", "scenario.train_anomaly_fraction=0.1",
         "trainer.kfold=2"],
        {"roc_auc": 0.9617486338797814, "kfold_roc_auc_mean": 0.9531060606060606,
         "threshold_upper": 0.6818042635138769},
    ),
    "dense_latent_knn_contaminated": (
        ["model=dense", "loss=mse", "scenario=contaminated", "threshold=percentile",
         "score=latent_knn"],
        {"roc_auc": 0.9386111111111111, "threshold_upper": 0.2051443156401115,
         "n_outliers": 5},
    ),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_figures_equal_those_of_the_code_before_the_detector_contract(case, make_config, tmp_path):
    overrides, expected = CASES[case]
    result = run(make_config(*overrides, "tracking.log_model=false"), RunContext(str(tmp_path)))
    for name, value in expected.items():
        assert result.metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    assert result.metrics["roc_auc"] == pytest.approx(expected["roc_auc"], abs=1e-6)
