"""Fast unit tests (no training, no MLflow store): the report's variant detection and
missing-run logic, the cache key, the model builders' shapes. `pytest -m "not slow"` runs
these with the other quick tests in seconds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aead.detectors.models import build_model, model_settings
from aead.report.sweep import (
    MEANS,
    _table_cells,
    latest_attempts,
    problems,
    summarize,
    variant_columns,
)
from aead.store.cache import training_key


def _runs(rows: list[dict]) -> pd.DataFrame:
    base = {"status": "FINISHED", "metrics.roc_auc": 0.9, "params.scenario.name": "s1",
            "params.tracking.uri": "sqlite:///x.db"}  # fmt: skip
    frame = pd.DataFrame([{**base, **r} for r in rows])
    frame["run_id"] = [f"run{i}" for i in range(len(frame))]
    frame["start_time"] = pd.to_datetime(range(len(frame)), unit="s")
    return frame


def test_variants_are_the_differing_params_without_seed_and_implied_ones():
    rows = [
        {"params.loss.name": loss, "params.loss.score": loss, "params.seed": str(seed),
         "params.model.name": "dense", "params.run_name": f"r{seed}"}
        for loss in ("bce", "mse") for seed in (0, 1)
    ]  # fmt: skip
    # loss.score follows loss.name: it adds nothing; seed, run_name and tracking never count
    assert variant_columns(_runs(rows)) == ["params.scenario.name", "params.loss.name"]


def test_problems_list_failed_runs_and_missing_seeds():
    rows = [
        {"params.loss.name": "bce", "params.seed": "0"},
        {"params.loss.name": "bce", "params.seed": "1"},
        {"params.loss.name": "mse", "params.seed": "0", "status": "FAILED"},
    ]
    runs = _runs(rows)
    found = problems(runs, variant_columns(runs))
    assert {p["what"] for p in found} == {"run failed", "missing from the sweep"}
    missing = [p["config"] for p in found if p["what"] == "missing from the sweep"]
    assert missing == ["loss.name=mse scenario.name=s1 seed=1"]


def test_a_variant_with_one_run_shows_no_spread():
    rows = [
        {"params.loss.name": "bce", "params.seed": "0", "metrics.roc_auc": 0.91},
        {"params.loss.name": "bce", "params.seed": "1", "metrics.roc_auc": 0.93},
        {"params.loss.name": "mse", "params.seed": "0", "metrics.roc_auc": 0.9988},
    ]
    runs = _runs(rows)
    runs["metrics.average_precision"] = runs["metrics.roc_auc"]
    runs["experiment_id"] = "1"
    for metric in MEANS:
        runs[f"metrics.{metric}"] = 0.5
    variants = variant_columns(runs)
    table = summarize(runs, variants).set_index("loss.name", drop=False)
    assert table.loc["bce", "n_runs"] == 2 and table.loc["mse", "n_runs"] == 1
    assert table.loc["bce", "roc_auc_std"] == pytest.approx(np.std([0.91, 0.93], ddof=1))
    assert np.isnan(table.loc["mse", "roc_auc_std"])  # one run: no spread can be known
    bce, mse = (_table_cells(table.loc[loss], variants) for loss in ("bce", "mse"))
    assert bce[2] == "0.9200 ± 0.0141" and mse[2] == "0.9988"


def test_a_rerun_job_is_represented_by_its_finished_attempt():
    rows = [
        {"tags.aead.config_hash": "h1", "status": "FAILED"},
        {"tags.aead.config_hash": "h1", "status": "FINISHED"},
        {"tags.aead.config_hash": "h1", "status": "KILLED"},  # newer, but not finished
        {"tags.aead.config_hash": "h2", "status": "KILLED"},
    ]
    kept = latest_attempts(_runs(rows))
    assert sorted(kept["run_id"]) == ["run1", "run3"]


MODEL = {"name": "dense", "units": [8, 4]}
TRAINER = {"epochs": 2, "batch_size": 16, "learning_rate": 0.001, "patience": 0, "verbose": 0}


def _key(**change) -> str:
    data = change.pop("data", (np.zeros((4, 28, 28, 1), np.float32), None))
    trainer = {**TRAINER, **change.pop("trainer", {})}
    return training_key(change.get("model", MODEL), change.get("loss", "mse"), trainer,
                        change.get("seed", 0), data)[0]  # fmt: skip


def test_cache_key_changes_with_what_changes_the_weights_only():
    key = _key()
    assert key == _key()
    assert key == _key(trainer={"verbose": 2, "kfold": 5})  # display and K-fold: same weights
    other_images = (np.ones((4, 28, 28, 1), np.float32), None)
    for change in ({"trainer": {"epochs": 3}}, {"loss": "bce"}, {"seed": 1},
                   {"model": {**MODEL, "units": [8, 2]}}, {"data": other_images}):  # fmt: skip
        assert _key(**change) != key, change


@pytest.mark.parametrize(
    "model, output_shape, parameters",
    [
        ({"name": "dense", "units": [200, 100, 50, 25]}, (None, 28, 28, 1), 367_609),
        ({"name": "conv", "filters": [16, 8, 8]}, (None, 28, 28, 1), 4_385),
        ({"name": "conv", "filters": [32, 64, 64, 64]}, (None, 28, 28, 1), None),
        ({"name": "cnn", "filters": [32, 64], "dense_units": 128, "dropout": 0.5},
         (None, 1), None),
    ],
)  # fmt: skip
def test_model_builders_shapes(model, output_shape, parameters):
    built = build_model(model)
    assert built.input_shape == (None, 28, 28, 1)
    assert built.output_shape == output_shape
    if parameters is not None:
        assert built.count_params() == parameters  # the sizes the README and logs quote
    with pytest.raises(ValueError, match="unknown model architecture 'nope'"):
        build_model({"name": "nope"})


def test_scripts_build_models_from_the_same_configs():
    assert model_settings("dense")["units"] == [200, 100, 50, 25]
    assert build_model(model_settings("conv")).count_params() == 4_385
    with pytest.raises(ValueError, match="no model config"):
        model_settings("nope")
