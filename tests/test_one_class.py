"""The one-class benchmark: the experiment's sweep, the report's per-class table and
one_class.csv (from a hand-made set of runs, then from a real two-class one-epoch sweep)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import mlflow
import pandas as pd
import pytest
from hydra import compose

from aead import one_class
from aead.report import main as report_main
from tests.helpers import QUICK, REPO, hydra_config


def _sweep_axes(*overrides: str) -> dict[str, list[str]]:
    with hydra_config():
        cfg = compose(
            "config", ["experiment=one_class_benchmark", *overrides], return_hydra_config=True
        )
    return cfg, {k: str(v) for k, v in cfg.hydra.sweeper.params.items()}


def test_benchmark_sweeps_both_datasets_every_class_and_three_seeds():
    cfg, axes = _sweep_axes()
    assert axes["scenario.dataset"] == "mnist,fashion_mnist"
    assert axes["scenario.normal_class"] == "range(0,10)"
    assert axes["seed"] == "0,1,2"
    assert (cfg.scenario.name, cfg.scenario.train_anomaly_fraction) == ("one_class", 0.0)
    detectors = {}
    for cell in axes["+detector"].split(","):
        with hydra_config():
            composed = compose("config", ["experiment=one_class_benchmark", f"+detector={cell}"])
        assert composed.model.kind == "autoencoder"  # no labels: autoencoders only
        assert composed.scenario.name == "one_class" and composed.trainer.epochs == 20
        score = composed.score
        detectors[cell] = (composed.model.name, composed.loss.name, score.name,
                           score.get("normalize"))  # fmt: skip
    assert detectors == {
        "conv_mse_raw": ("conv", "mse", "raw", None),
        "conv_mse_latent_knn": ("conv", "mse", "latent_knn", "l2"),
        "conv_mse_latent_knn_unscaled": ("conv", "mse", "latent_knn", "none"),
        "dense_mse_raw": ("dense", "mse", "raw", None),
        "dense_mse_complexity": ("dense", "mse", "complexity", None),
        "conv_knn_dense_complexity": ("conv", "mse", "ensemble", None),
        "conv_stages_knn_dense_complexity": ("conv", "mse", "ensemble", None),
        "conv_he_stages_knn_dense_complexity": ("conv", "mse", "ensemble", None),
    }
    with hydra_config():
        pair = compose(
            "config", ["experiment=one_class_benchmark", "+detector=conv_knn_dense_complexity"]
        ).score.members
    # the two-model cell: the conv AE's codes beside the dense AE's complexity-corrected error,
    # with the same settings as its single-model cells (so it reuses their trained models)
    assert [m.name for m in pair] == ["latent_knn", "companion"]
    assert (pair[1].model, pair[1].loss, pair[1].score.name) == ("dense", "mse", "complexity")
    with hydra_config():
        trio = compose(
            "config",
            ["experiment=one_class_benchmark", "+detector=conv_stages_knn_dense_complexity"],
        ).score.members
    # every encoder stage's codes, as directions and as they are, beside the same companion
    assert [(m.name, m.get("normalize"), m.get("stages")) for m in trio] == [
        ("latent_knn", "l2", "all"), ("latent_knn", "none", "all"), ("companion", None, None)
    ]  # fmt: skip
    assert trio[2] == pair[1]
    with hydra_config():
        he = compose(
            "config",
            ["experiment=one_class_benchmark", "+detector=conv_he_stages_knn_dense_complexity"],
        )
    # the same score on a He-initialized conv AE
    assert he.score.members == trio and he.model.kernel_initializer == "he_normal"


def _fake_runs() -> pd.DataFrame:
    """Runs as MLflow returns them: 2 classes x 2 detectors x seeds 0, 1, one FAILED."""
    rows = []
    for normal_class, score, seed in itertools.product((0, 1), ("raw", "complexity"), (0, 1)):
        auc = 0.90 + 0.05 * normal_class + (0.02 if score == "complexity" else 0) + 0.01 * seed
        rows.append(
            {
                "status": "FINISHED",
                "params.scenario.dataset": "fashion_mnist",
                "params.scenario.normal_class": str(normal_class),
                "params.scenario.name": "one_class",
                "params.model.name": "dense",
                "params.score.name": score,
                "params.seed": str(seed),
                "metrics.roc_auc": auc,
            }
        )
    rows.append({**rows[0], "status": "FAILED", "metrics.roc_auc": float("nan")})
    return pd.DataFrame(rows)


def test_per_class_table_means_and_published_columns():
    runs = _fake_runs()
    variants = ["params.scenario.name", "params.scenario.dataset",
                "params.scenario.normal_class", "params.score.name"]  # fmt: skip
    results = one_class.per_class(runs, variants)
    assert list(results.columns) == one_class.CSV_COLUMNS
    raw0 = results[(results["normal_class"] == 0) & (results["detector"] == "score=raw")].iloc[0]
    assert raw0["n_runs"] == 2  # the FAILED run is not counted
    assert raw0["roc_auc_mean"] == pytest.approx(0.905)
    assert raw0["roc_auc_std"] == pytest.approx(pd.Series([0.90, 0.91]).std())

    methods = one_class.published_methods()
    header, rows = one_class.tables(results, methods)["fashion_mnist"]
    # published figures for Fashion-MNIST only from the methods that report it
    cited = [m["name"] for m in methods if "fashion_mnist" in m["mean"]]
    assert cited == ["GEOM", "ARNet", "ESAD"]
    assert header == ["class", "score=complexity", "score=raw",
                      *(f"{n} (published)" for n in cited)]  # fmt: skip
    assert rows[0][:3] == ["0", "92.50 ± 0.71", "90.50 ± 0.71"]
    assert rows[-1] == ["mean (2 classes)", "95.00", "93.00", "93.5", "93.9", "94.0"]
    # one seed: a single run per cell, so no spread is shown
    seed0 = one_class.per_class(runs[runs["params.seed"] == "0"], variants)
    _, rows = one_class.tables(seed0, methods)["fashion_mnist"]
    assert rows[0][:3] == ["0", "92.00", "90.00"]


def test_published_figures_have_their_sources():
    methods = one_class.published_methods()
    expected = {"Conv AE": {"mnist": 90.0}, "Deep SVDD": {"mnist": 94.8},
                "OCGAN": {"mnist": 97.5}, "GEOM": {"mnist": 98.0, "fashion_mnist": 93.5},
                "ARNet": {"mnist": 98.3, "fashion_mnist": 93.9},
                "ESAD": {"mnist": 98.5, "fashion_mnist": 94.0}}  # fmt: skip
    assert {m["name"]: m["mean"] for m in methods} == expected
    assert all(len(m["citation"]) > 20 for m in methods)


def test_detectors_are_named_by_their_cells_when_each_cell_is_one_detector():
    runs = _fake_runs()
    variants = ["params.score.name"]
    assert set(one_class.detector_labels(runs, variants)) == {"score=raw", "score=complexity"}
    cells = runs["params.score.name"].map({"raw": "dense_mse_raw", "complexity": "dense_cplx"})
    runs["tags.overrides"] = "seed=0 +detector=" + cells + " scenario.normal_class=0"
    assert set(one_class.detector_labels(runs, variants)) == {"dense_mse_raw", "dense_cplx"}
    # one cell name, two settings (`+detector=X score.name=...`): the settings name them
    runs["tags.overrides"] = "+detector=dense_mse_raw"
    assert set(one_class.detector_labels(runs, variants)) == {"score=raw", "score=complexity"}


def test_a_sweep_without_normal_class_variation_is_not_a_benchmark():
    runs = _fake_runs()
    assert one_class.is_benchmark(runs)
    assert not one_class.is_benchmark(runs[runs["params.scenario.normal_class"] == "0"])


@pytest.mark.slow
def test_two_class_slice_runs_and_reports_the_logged_values(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    command = [
        sys.executable, "-m", "aead.run", "-m", "experiment=one_class_benchmark",
        "scenario.dataset=mnist", "scenario.normal_class=0,1", "seed=0",
        "+detector=dense_mse_raw,dense_mse_complexity",
        *QUICK, f"cache.dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=["one_class_benchmark"])
    assert len(runs) == 4 and set(runs["status"]) == {"FINISHED"}  # 2 classes x 2 scores
    report_main(["--tracking-uri", store, "--out", str(tmp_path / "report")])

    table = pd.read_csv(tmp_path / "report" / "one_class.csv")
    assert list(table.columns) == one_class.CSV_COLUMNS
    assert len(table) == 4 and set(table["normal_class"]) == {0, 1}
    assert set(table["detector"]) == {"dense_mse_raw", "dense_mse_complexity"}  # cell names
    for _, row in table.iterrows():
        logged = runs[
            (runs["params.scenario.normal_class"] == str(row["normal_class"]))
            & runs["tags.overrides"].str.contains(f"+detector={row['detector']} ", regex=False)
        ]["metrics.roc_auc"]
        assert row["n_runs"] == 1 and row["roc_auc_mean"] == pytest.approx(logged.iloc[0])
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## One-class benchmark" in markdown and "### mnist" in markdown
    assert "ESAD (published)" in markdown and "| mean (2 classes) |" in markdown
    assert "Deep One-Class Classification" in markdown  # the citations
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<table id='one-class-mnist'>" in page and "ESAD (published)" in page
