"""The one-class benchmark: the experiment's sweep, the report's per-class table and
one_class.csv (from a hand-made set of runs, then from a real two-class one-epoch sweep)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import mlflow
import pandas as pd
import pytest
from hydra import compose
from omegaconf import OmegaConf

from aead.detectors.models import model_settings
from aead.report import one_class
from aead.report.cli import main as report_main
from tests.helpers import QUICK, REPO, hydra_config


def _sweep_jobs() -> list[dict[str, str]]:
    """The jobs `python -m aead.run -m experiment=one_class_benchmark` launches, as Hydra's
    basic sweeper expands its sweep parameters."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with hydra_config():
        cfg = compose("config", ["experiment=one_class_benchmark"], return_hydra_config=True)
    parsed = OverridesParser.create().parse_overrides(
        [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    )
    axes = {o.get_key_element(): [str(v) for v in o.sweep_iterator()] for o in parsed}
    return [dict(zip(axes, job, strict=True)) for job in itertools.product(*axes.values())]


def _trained_models(cell: str) -> set[tuple[str, str]]:
    """The autoencoders a cell's run trains (or reuses): (model settings, training loss)."""
    with hydra_config():
        cfg = compose("config", ["experiment=one_class_benchmark", f"+detector={cell}"])
    assert cfg.model.kind == "autoencoder" and cfg.scenario.train_anomaly_fraction == 0.0
    own = OmegaConf.to_container(cfg.model, resolve=True)
    models = {(json.dumps(own, sort_keys=True), cfg.loss.name)}
    for member in cfg.score.get("members") or [cfg.score]:
        if member.name == "companion":
            models.add((json.dumps(model_settings(member.model), sort_keys=True), member.loss))
    return models


def test_benchmark_is_every_class_of_both_datasets_with_three_models_per_class_and_seed():
    jobs = _sweep_jobs()
    cells = sorted({job["+detector"] for job in jobs})
    assert len(cells) == 8 and len(jobs) == 2 * 10 * len(cells) * 3
    assert {(j["scenario.dataset"], j["scenario.normal_class"], j["seed"]) for j in jobs} == set(
        itertools.product(("mnist", "fashion_mnist"), map(str, range(10)), ("0", "1", "2"))
    )
    # the 8 detectors train 3 autoencoders per class and seed (the conv AE, the same
    # He-initialized, the dense AE); every other cell reuses them from the cache
    models = {cell: _trained_models(cell) for cell in cells}
    assert len(set().union(*models.values())) == 3
    assert models["conv_knn_dense_complexity"] == models["conv_mse_raw"] | models["dense_mse_raw"]
    he = models["conv_he_stages_knn_dense_complexity"] - models["dense_mse_raw"]
    assert len(he) == 1 and '"kernel_initializer": "he_normal"' in next(iter(he))[0]


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
                "metrics.duration_s": 25.0 if score == "complexity" else 15.0,
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


def test_mean_row_is_mean_and_std_over_seeds_with_each_seed():
    runs = _fake_runs()
    variants = ["params.scenario.normal_class", "params.score.name"]
    seeds = one_class.per_seed(runs, variants)
    assert list(seeds.columns) == one_class.SEED_COLUMNS
    raw = seeds[seeds["detector"] == "score=raw"].sort_values("seed")
    # seed 0: mean of 0.90 and 0.95; seed 1: of 0.91 and 0.96 (the FAILED run not counted)
    assert raw["roc_auc_mean"].tolist() == pytest.approx([0.925, 0.935])
    assert raw["n_classes"].tolist() == [2, 2]
    methods = one_class.published_methods()
    results = one_class.per_class(runs, variants)
    _, rows = one_class.tables(results, methods, seeds)["fashion_mnist"]
    # std of (94.50, 95.50) and of (92.50, 93.50): 0.7071
    assert rows[-2][:3] == [
        "mean (2 classes)",
        "95.00 ± 0.71 (seed 0: 94.50, 1: 95.50)",
        "93.00 ± 0.71 (seed 0: 92.50, 1: 93.50)",
    ]
    assert rows[-1][:3] == ["seconds per run", "25", "15"]
    # seed 1 misses class 1 for score=raw: it is left out of the mean, and said so
    gap = runs[~((runs["params.seed"] == "1") & (runs["params.scenario.normal_class"] == "1")
                 & (runs["params.score.name"] == "raw"))]  # fmt: skip
    _, rows = one_class.tables(
        one_class.per_class(gap, variants), methods, one_class.per_seed(gap, variants)
    )["fashion_mnist"]
    assert rows[-2][2] == "92.50 (seed 0: 92.50); 1 seed with classes missing left out"
    assert rows[-2][1] == "95.00 ± 0.71 (seed 0: 94.50, 1: 95.50)"


def test_published_figures_have_their_sources():
    methods = one_class.published_methods()
    # the figures of the benchmark issue (#10) and, for CIFAR-10, of issue #17
    expected = {"Conv AE": {"mnist": 90.0}, "Deep SVDD": {"mnist": 94.8, "cifar10": 64.8},
                "OCGAN": {"mnist": 97.5},
                "GEOM": {"mnist": 98.0, "fashion_mnist": 93.5, "cifar10": 86.0},
                "ARNet": {"mnist": 98.3, "fashion_mnist": 93.9},
                "ESAD": {"mnist": 98.5, "fashion_mnist": 94.0},
                "KDE": {"cifar10": 64.9}, "AnoGAN": {"cifar10": 61.8}, "GOAD": {"cifar10": 85.1},
                "Rotation prediction": {"cifar10": 88.4},
                "Rotation + translation": {"cifar10": 89.8}, "SSD": {"cifar10": 90.0},
                "CSI": {"cifar10": 94.3}}  # fmt: skip
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
    seeds = pd.read_csv(tmp_path / "report" / "one_class_seeds.csv")
    assert list(seeds.columns) == one_class.SEED_COLUMNS and set(seeds["seed"]) == {0}
    markdown = (tmp_path / "report" / "report.md").read_text()
    for _, row in seeds.iterrows():  # each seed's mean over the two classes, as logged
        logged = runs[runs["tags.overrides"].str.contains(f"+detector={row['detector']} ",
                                                          regex=False)]  # fmt: skip
        assert row["n_classes"] == 2
        assert row["roc_auc_mean"] == pytest.approx(logged["metrics.roc_auc"].mean())
        assert row["duration_s_mean"] == pytest.approx(logged["metrics.duration_s"].mean())
        assert f"(seed 0: {100 * row['roc_auc_mean']:.2f})" in markdown
    assert "## One-class benchmark" in markdown and "### mnist" in markdown
    assert "ESAD (published)" in markdown and "| mean (2 classes) |" in markdown
    assert "Deep One-Class Classification" in markdown  # the citations
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<table id='one-class-mnist'>" in page and "ESAD (published)" in page
