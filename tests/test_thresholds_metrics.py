import numpy as np
import pytest

from aead.scoring.metrics import detection_metrics
from aead.scoring.thresholds import fit_percentile, fit_threshold, fit_zscore


def test_zscore_known_values():
    t = fit_zscore(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), k=3)
    assert t.mean == 3.0 and t.std == pytest.approx(np.sqrt(2))
    assert t.lower == pytest.approx(3 - 3 * np.sqrt(2)) and t.upper == pytest.approx(
        3 + 3 * np.sqrt(2)
    )
    assert t.flag(np.array([3.0, 7.3, 7.2, -1.3, -1.2])).tolist() == [
        False,
        True,
        False,
        True,
        False,
    ]


def test_zscore_on_a_normal_distribution_flags_0_27_percent():
    scores = np.random.default_rng(0).normal(10, 2, size=400_000)
    t = fit_zscore(scores, k=3)
    assert t.lower == pytest.approx(4, abs=0.05) and t.upper == pytest.approx(16, abs=0.05)
    assert t.flag(scores).mean() == pytest.approx(0.0027, abs=0.0004)


def test_percentile_known_values():
    t = fit_percentile(np.arange(1001, dtype=float), q=99.9)
    assert t.lower is None and t.upper == pytest.approx(999.0)
    assert t.as_metrics() == {"threshold_upper": pytest.approx(999.0)}
    assert t.flag(np.array([999.0, 999.5])).tolist() == [False, True]


def test_fit_threshold_from_config():
    assert fit_threshold({"name": "zscore", "k": 2}, np.array([0.0, 2.0])).upper == pytest.approx(
        3.0
    )
    with pytest.raises(ValueError, match="unknown threshold"):
        fit_threshold({"name": "otsu"}, np.array([1.0]))


@pytest.mark.parametrize("bad", [np.array([]), np.array([1.0, np.nan])])
def test_bad_validation_scores(bad):
    with pytest.raises(ValueError):
        fit_zscore(bad)


def test_bad_parameters():
    with pytest.raises(ValueError, match="k must be positive"):
        fit_zscore(np.ones(3), k=0)
    with pytest.raises(ValueError, match="q must be in"):
        fit_percentile(np.ones(3), q=101)


def test_detection_metrics_hand_computed():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.4, 0.8, 0.85, 0.95])
    predicted = scores > 0.5  # tp 3, fp 1, tn 3, fn 1
    m = detection_metrics(labels, scores, predicted)
    assert m["accuracy"] == 0.75 and m["precision"] == 0.75 and m["recall"] == 0.75
    assert m["f1"] == 0.75 and m["fpr"] == 0.25
    # 16 pairs (anomaly, normal); anomaly scored higher in 13
    assert m["roc_auc"] == pytest.approx(13 / 16)
    # ranked by score: 1 0 1 1 1 0 0 0; precision at each anomaly's rank: 1/1, 2/3, 3/4, 4/5
    assert m["average_precision"] == pytest.approx((1 + 2 / 3 + 3 / 4 + 4 / 5) / 4)
