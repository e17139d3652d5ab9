"""Real one-epoch runs on small slices of real MNIST / Fashion-MNIST, read back from MLflow."""

from __future__ import annotations

import io

import mlflow
import pandas as pd
import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from aead.pipeline import RunContext, run
from tests.helpers import logged_scores

EXPECTED_METRICS = {
    "roc_auc",
    "average_precision",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "fpr",
    "train_loss",
    "val_loss",
}
EXPECTED_ARTIFACTS = {
    "plots/error_histogram.png",
    "plots/roc_curve.png",
    "plots/reconstructions.png",
    "scores.csv",
    "config.yaml",
}


def _artifact_paths(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


@pytest.mark.slow
@pytest.mark.parametrize("model", ["dense", "conv", "deep_conv"])
def test_one_epoch_run_logs_everything(make_config, tmp_path, model):
    cfg = make_config(f"model={model}")
    result = run(cfg, RunContext(base_dir=str(tmp_path)))
    client = MlflowClient(tracking_uri=result.tracking_uri)
    logged = client.get_run(result.run_id)

    assert logged.info.status == "FINISHED"
    params = logged.data.params
    assert params["model.name"] == model and params["loss.name"] == "bce"
    assert params["scenario.name"] == "mnist_vs_fashion" and params["threshold.name"] == "zscore"
    assert params["trainer.epochs"] == "1" and params["loss.score"] == "bce"

    metrics = logged.data.metrics
    assert EXPECTED_METRICS <= set(metrics)
    assert metrics["threshold_lower"] < metrics["threshold_upper"]
    assert 0.0 <= metrics["roc_auc"] <= 1.0
    # metrics come from this run's own scores: recompute from the logged scores.csv
    scores = pd.read_csv(
        io.StringIO(mlflow.artifacts.load_text(f"{logged.info.artifact_uri}/scores.csv"))
    )
    assert list(scores.columns) == ["index", "label", "score", "predicted"]
    assert len(scores) == 400 and scores["label"].sum() == 200
    from sklearn.metrics import roc_auc_score

    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(scores["label"], scores["score"]))
    outside = (scores["score"] < metrics["threshold_lower"]) | (
        scores["score"] > metrics["threshold_upper"]
    )
    assert (outside.astype(int) == scores["predicted"]).all()
    assert metrics["accuracy"] == pytest.approx((scores["predicted"] == scores["label"]).mean())

    history = client.get_metric_history(result.run_id, "val_loss")
    assert [m.step for m in history] == [1]

    # where it computed: the device and TensorFlow's build
    tags = logged.data.tags
    assert tags["aead.device"].startswith(("CPU (", "GPU ("))
    assert tags["aead.tensorflow"].startswith(tf.__version__)
    cuda_build = bool(tf.sysconfig.get_build_info()["is_cuda_build"])
    assert ("(CUDA" in tags["aead.tensorflow"]) == cuda_build

    # data lineage: the training, validation and test data, with aead's SHA-256 of the arrays
    inputs = {
        {t.key: t.value for t in d.tags}["mlflow.data.context"]: d
        for d in logged.inputs.dataset_inputs
    }
    assert set(inputs) == {"training", "validation", "test"}
    sizes = {c: int({t.key: t.value for t in d.tags}["n_images"]) for c, d in inputs.items()}
    assert sizes == {"training": 540, "validation": 60, "test": 400}
    test_set = inputs["test"]
    sha = {t.key: t.value for t in test_set.tags}["sha256"]
    assert len(sha) == 64 and test_set.dataset.digest == sha[:32]
    assert "mnist" in test_set.dataset.source  # where the images were read

    assert EXPECTED_ARTIFACTS <= _artifact_paths(client, result.run_id)
    reloaded = mlflow.keras.load_model(f"runs:/{result.run_id}/model")
    assert reloaded.output_shape == (None, 28, 28, 1)


@pytest.mark.slow
def test_same_config_twice_gives_same_metrics(make_config, tmp_path):
    cfg = make_config(
        "model=dense",
        "loss=mse",
        "loss.score=mae",
        "threshold=percentile",
        "tracking.log_model=false",
        "cache.enabled=false",  # train twice: reusing the model would prove nothing
    )
    runs = [run(cfg, RunContext(base_dir=str(tmp_path))) for _ in range(2)]
    assert [r.model_source for r in runs] == ["trained", "trained"]
    first, second = (r.metrics for r in runs)
    for key in ("roc_auc", "average_precision", "threshold_upper", "f1", "mean_score_normal"):
        assert first[key] == second[key], key
    client = MlflowClient(runs[0].tracking_uri)
    curves = [[m.value for m in client.get_metric_history(r.run_id, "val_loss")] for r in runs]
    assert len(curves[0]) == 1 and curves[0] == curves[1]  # one epoch, same validation loss
    assert "threshold_lower" not in first  # the percentile threshold is one-sided


@pytest.mark.slow
def test_failed_run_is_marked_failed(make_config, tmp_path, monkeypatch):
    from aead import pipeline

    def fail(*args, **kwargs):
        raise ValueError("no threshold today")

    monkeypatch.setattr(pipeline, "fit_threshold", fail)  # fails after training and scoring
    cfg = make_config("model=dense", "tracking.log_model=false")
    with pytest.raises(ValueError, match="no threshold today"):
        run(cfg, RunContext(base_dir=str(tmp_path)))
    mlflow.set_tracking_uri(cfg.tracking.uri)
    runs = mlflow.search_runs(search_all_experiments=True)
    assert runs["status"].tolist() == ["FAILED"]
    assert runs["params.model.name"].tolist() == ["dense"]  # recorded with its config


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["one_class", "contaminated", "noise", "fashion_vs_mnist"])
def test_every_scenario_runs(make_config, tmp_path, scenario):
    cfg = make_config(f"scenario={scenario}", "model=dense", "tracking.log_model=false")
    result = run(cfg, RunContext(base_dir=str(tmp_path)))
    metrics = result.metrics
    scores = logged_scores(result.tracking_uri, result.run_id)
    assert metrics["n_anomalies"] == scores["label"].sum() > 0
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(scores["label"], scores["score"]))
    if scenario == "contaminated":
        # data.train_limit=600 ones, plus round(0.01 * 600 / 0.99) = 6 planted threes, and the
        # whole set is what is evaluated
        assert metrics["n_planted"] == 6 and len(scores) == 606
        flagged = scores["score"] > metrics["threshold_upper"]
        if "threshold_lower" in metrics:  # zscore is two-sided
            flagged |= scores["score"] < metrics["threshold_lower"]
        assert (scores["predicted"] == flagged).all()
        assert metrics["n_outliers"] == flagged.sum()
        assert metrics["planted_flagged"] == (flagged & (scores["label"] == 1)).sum()
        tags = MlflowClient(result.tracking_uri).get_run(result.run_id).data.tags
        assert tags["data.test_is_training"].startswith("the whole set is evaluated: its 545 ")
