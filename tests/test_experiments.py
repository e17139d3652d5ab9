"""Named experiments, the supervised CNN baseline, train-once-score-many and K-fold."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from hydra import compose
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from aead.detectors.training import class_weights
from aead.pipeline import RunContext, run
from tests.helpers import CONF, REPO, hydra_config, logged_image, logged_scores

NAMED = ["conv_bce_mnist", "conv_ssim_fashion", "contaminated_mse", "one_class_zero",
         "dense_mae_noise"]  # fmt: skip


def test_every_experiment_file_is_listed_in_the_readme():
    names = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))
    benchmarks = ["grid", "hard_direction", "one_class_baselines", "one_class_benchmark",
                  "one_class_cifar10", "synthetic_defects",
                  "synthetic_defects_benchmark"]  # fmt: skip
    assert names == sorted([*NAMED, *benchmarks])
    readme = (REPO / "README.md").read_text()
    for name in names:
        assert f"experiment={name}" in readme


def test_experiments_set_the_original_hyperparameters(make_config):
    cfg = make_config("experiment=conv_bce_mnist", quick=False)
    assert (cfg.model.name, cfg.loss.name, cfg.scenario.name) == ("conv", "bce", "mnist_vs_fashion")
    assert (cfg.trainer.batch_size, cfg.trainer.epochs, cfg.threshold.k) == (60, 50, 3.0)
    cfg = make_config("experiment=dense_mae_noise", quick=False)
    assert list(cfg.model.units) == [200, 100, 50, 25]
    assert (cfg.loss.name, cfg.loss.score, cfg.trainer.epochs, cfg.trainer.batch_size) == (
        "mse", "mae", 40, 256)  # fmt: skip
    cfg = make_config("experiment=contaminated_mse", quick=False)
    assert (cfg.threshold.name, cfg.threshold.q, cfg.scenario.fraction) == (
        "percentile",
        99.9,
        0.01,
    )
    # other overrides still apply on top
    assert make_config("experiment=conv_bce_mnist", "trainer.epochs=1").trainer.epochs == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ["experiment=conv_bce_mnist"],
        ["experiment=conv_ssim_fashion"],
        ["experiment=contaminated_mse"],
        ["experiment=one_class_zero"],
        ["experiment=one_class_zero", "model=deep_conv"],
        ["experiment=one_class_zero", "model=cnn"],
        ["experiment=dense_mae_noise"],
        ["experiment=grid", "+detector=cnn", "scenario=fashion_vs_mnist"],
        ["experiment=hard_direction", "score=complexity", "scenario=fashion_vs_mnist"],
    ],
    ids=lambda o: " ".join(o),
)
def test_named_experiment_runs_for_one_epoch(make_config, tmp_path, overrides):
    cfg = make_config(*overrides, "tracking.log_model=false")
    result = run(cfg, RunContext(base_dir=str(tmp_path)))
    client = MlflowClient(result.tracking_uri)
    logged = client.get_run(result.run_id)
    assert logged.info.status == "FINISHED"
    assert "roc_auc" in logged.data.metrics
    metrics = logged.data.metrics
    scores = logged_scores(result.tracking_uri, result.run_id)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(scores["label"], scores["score"]))
    logged_image(result.tracking_uri, result.run_id, "plots/error_histogram.png")
    if cfg.scenario.name == "contaminated":
        assert metrics["n_outliers"] == scores["predicted"].sum()
        assert metrics["planted_flagged"] == (scores["predicted"] & scores["label"]).sum()
        logged_image(result.tracking_uri, result.run_id, "plots/outliers.png")
    if cfg.model.kind == "autoencoder":
        logged_image(result.tracking_uri, result.run_id, "plots/reconstructions.png")
    else:
        assert logged.data.tags["aead.training_loss"] == "binary_crossentropy"


def test_grid_sweeps_every_combination(make_config):
    with hydra_config():
        cfg = compose("config", ["experiment=grid"], return_hydra_config=True)
    axes = {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}
    assert len(list(itertools.product(*axes.values()))) == 7 * 2 * 2 * 3
    cells = {Path(CONF, "detector", f"{c}.yaml").read_text() for c in axes["+detector"]}
    assert len(cells) == 7


def test_class_weights_on_a_known_imbalance():
    labels = np.array([0] * 90 + [1] * 10)
    weights = class_weights(labels)
    assert weights == pytest.approx({0: 100 / 180, 1: 100 / 20})
    assert 90 * weights[0] == pytest.approx(10 * weights[1])  # both classes weigh N / 2
    with pytest.raises(ValueError, match="both classes"):
        class_weights(np.zeros(5))


def test_cnn_refuses_a_scenario_without_labeled_anomalies(make_config, tmp_path):
    cfg = make_config("model=cnn", "scenario=fashion_vs_mnist", "tracking.log_model=false")
    with pytest.raises(ValueError, match="scenario.labeled_anomalies=N"):
        run(cfg, RunContext(base_dir=str(tmp_path)))


@pytest.mark.slow
def test_threshold_sweep_trains_once_and_training_change_retrains(make_config, tmp_path):
    base = ["model=dense", "tracking.log_model=false"]
    context = RunContext(base_dir=str(tmp_path))
    first = run(make_config(*base, "threshold=zscore"), context)
    second = run(make_config(*base, "threshold=percentile"), context)
    third = run(make_config(*base, "loss.score=mae"), context)
    fourth = run(make_config(*base, "trainer.learning_rate=0.01"), context)
    client = MlflowClient(first.tracking_uri)
    tags = [client.get_run(r.run_id).data.tags for r in (first, second, third, fourth)]
    assert [t["aead.model_source"] for t in tags] == ["trained", "reused", "reused", "trained"]
    assert tags[1]["aead.trained_by_run"] == tags[2]["aead.trained_by_run"] == first.run_id
    assert tags[3]["aead.trained_by_run"] == fourth.run_id
    # the reused model is the trained one: same scores, so the same ROC-AUC
    assert second.metrics["roc_auc"] == first.metrics["roc_auc"]
    assert fourth.metrics["roc_auc"] != first.metrics["roc_auc"]


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["corrupt", "stale"])
def test_damaged_cache_entry_is_retrained(make_config, tmp_path, damage):
    cfg = make_config("model=dense", "tracking.log_model=false")
    context = RunContext(base_dir=str(tmp_path))
    first = run(cfg, context)
    (entry,) = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    if damage == "corrupt":
        model_file = entry / "model.keras"
        model_file.write_bytes(model_file.read_bytes()[:1000])
    else:
        meta = json.loads((entry / "meta.json").read_text())
        meta["key"] = "0" * 64
        (entry / "meta.json").write_text(json.dumps(meta))
    second = run(cfg, context)
    tags = MlflowClient(second.tracking_uri).get_run(second.run_id).data.tags
    assert tags["aead.model_source"] == "trained"
    assert tags["aead.cache_note"].startswith(f"{damage} entry")
    assert second.metrics["roc_auc"] == first.metrics["roc_auc"]  # retrained, deterministically
    assert run(cfg, context).model_source == "reused"  # and the entry is sound again


@pytest.mark.slow
def test_kfold_logs_k_fold_results(make_config, tmp_path):
    cfg = make_config("experiment=one_class_zero", "model=cnn", "trainer.kfold=3",
                      "tracking.log_model=false")  # fmt: skip
    result = run(cfg, RunContext(base_dir=str(tmp_path)))
    client = MlflowClient(result.tracking_uri)
    history = client.get_metric_history(result.run_id, "fold_roc_auc")
    assert sorted(m.step for m in history) == [1, 2, 3]
    aucs = [m.value for m in history]
    assert result.metrics["kfold_k"] == 3
    assert result.metrics["kfold_roc_auc_mean"] == pytest.approx(np.mean(aucs))
    assert result.metrics["kfold_roc_auc_std"] == pytest.approx(np.std(aucs, ddof=1))
    accuracies = {
        m.step: m.value for m in client.get_metric_history(result.run_id, "fold_accuracy")
    }
    assert sorted(accuracies) == [1, 2, 3]
    uri = client.get_run(result.run_id).info.artifact_uri
    folds = pd.read_csv(io.StringIO(mlflow.artifacts.load_text(f"{uri}/kfold.csv")))
    assert folds["fold"].tolist() == [1, 2, 3]
    assert folds["roc_auc"].tolist() == pytest.approx(
        [m.value for m in sorted(history, key=lambda m: m.step)]
    )
    assert folds["accuracy"].tolist() == pytest.approx([accuracies[f] for f in (1, 2, 3)])
    # stratified folds of the whole labeled training set
    logged = client.get_run(result.run_id).data.metrics
    assert folds["n"].sum() == logged["n_train"] + logged["n_val"]


@pytest.mark.slow
def test_deep_conv_learns_digit_zero(make_config, tmp_path):
    """A quality floor: the deep conv AE must leave the constant-output plateau (it did not
    with Keras' default initialisation) and rank other digits above 0s."""
    cfg = make_config("experiment=one_class_zero", "model=deep_conv", "trainer.epochs=3",
                      "data.train_limit=2000", "data.test_limit=1000", "tracking.log_model=false",
                      quick=False)  # fmt: skip
    metrics = run(cfg, RunContext(base_dir=str(tmp_path))).metrics
    assert metrics["roc_auc"] > 0.8
