"""Same training configuration, same model: wherever and in whatever order it is trained, and
a cache key that changes when the code that trains it does."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from aead.pipeline import RunContext, run
from aead.store import cache
from aead.store.cache import training_key
from tests.helpers import REPO

MODEL = {"name": "dense", "units": [8, 4]}
TRAINER = {"epochs": 1, "batch_size": 16, "learning_rate": 0.001, "patience": 0}


def _digest_of(package_root) -> str:
    """code_digest() as a fresh interpreter computes it from the aead package under
    package_root; it reads the source files without importing them (nor TensorFlow)."""
    code = (
        "import sys; from aead.store.cache import code_digest; print(code_digest()); "
        "assert 'tensorflow' not in sys.modules, 'code_digest() imported TensorFlow'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=package_root, env={"PYTHONPATH": str(package_root)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_editing_a_builder_changes_the_cache_key_and_a_comment_does_not(tmp_path):
    scratch = tmp_path / "clone"
    shutil.copytree(REPO / "aead", scratch / "aead", ignore=shutil.ignore_patterns("__pycache__"))
    models = scratch / "aead" / "detectors" / "models.py"
    original = models.read_text()
    assert _digest_of(scratch) == cache.code_digest()  # the copy is this code

    models.write_text(original.replace("def build_conv(", "# a comment\n\n\ndef build_conv("))
    assert _digest_of(scratch) == cache.code_digest()  # comments and blank lines: same model

    edited = original.replace("layers.MaxPooling2D(2, pad", "layers.AveragePooling2D(2, pad")
    assert edited != original
    models.write_text(edited)
    assert _digest_of(scratch) != cache.code_digest()  # what the builder does changed


def test_cache_key_holds_the_code_digest_and_the_data_dtype_and_shape(monkeypatch):
    images = np.zeros((4, 28, 28, 1), np.float32)
    key, fields = training_key(MODEL, "mse", TRAINER, 0, (images, None))
    assert fields["code"] == cache.code_digest()
    monkeypatch.setattr(cache, "code_digest", lambda modules=(): "other code")
    assert training_key(MODEL, "mse", TRAINER, 0, (images, None))[0] != key
    monkeypatch.undo()
    # the same bytes as another dtype or shape are other data
    as_bytes = images.view(np.int32)
    assert as_bytes.tobytes() == images.tobytes()
    assert training_key(MODEL, "mse", TRAINER, 0, (as_bytes, None))[0] != key
    flat = images.reshape(4, 784)
    assert training_key(MODEL, "mse", TRAINER, 0, (flat, None))[0] != key
    assert training_key(MODEL, "mse", TRAINER, 0, (images.copy(), None))[0] == key


def _one_class(make_config, tmp_path, name: str, *overrides: str):
    cfg = make_config(
        "experiment=one_class_benchmark", "scenario.dataset=mnist", "scenario.normal_class=1",
        "data.train_limit=300", "data.test_limit=300", f"cache.dir={tmp_path / name}",
        *overrides,
    )  # fmt: skip
    result = run(cfg, RunContext(base_dir=str(tmp_path)))
    tags = MlflowClient(tracking_uri=result.tracking_uri).get_run(result.run_id).data.tags
    return result.metrics["roc_auc"], tags


@pytest.mark.slow
def test_a_model_trained_first_or_after_another_is_the_same_model(make_config, tmp_path):
    # the cell's dense companion trained after its conv AE, in a fresh cache...
    fresh, tags = _one_class(make_config, tmp_path, "fresh", "+detector=conv_knn_dense_complexity")
    assert tags["aead.companion.dense_mse_source"] == "trained"
    # ...or trained first, as another cell's own model, and then reused by the cell
    _one_class(make_config, tmp_path, "shared", "+detector=dense_mse_raw")
    cell = "+detector=conv_knn_dense_complexity"
    reused, tags = _one_class(make_config, tmp_path, "shared", cell)
    assert tags["aead.companion.dense_mse_source"] == "reused"
    assert tags["aead.model_source"] == "trained"
    # ...or with no cache at all: one configuration, one result
    uncached, _ = _one_class(
        make_config, tmp_path, "none", "+detector=conv_knn_dense_complexity", "cache.enabled=false"
    )
    assert fresh == reused == uncached


@pytest.mark.slow
def test_k_fold_models_do_not_change_the_run_s_own_model(make_config, tmp_path):
    def cnn(name, *overrides):
        cfg = make_config(
            "experiment=one_class_zero", "model=cnn", "data.test_limit=300",
            f"cache.dir={tmp_path / name}", *overrides,
        )  # fmt: skip
        result = run(cfg, RunContext(base_dir=str(tmp_path)))
        tags = MlflowClient(tracking_uri=result.tracking_uri).get_run(result.run_id).data.tags
        return result.metrics, tags

    folds, folds_tags = cnn("kfold", "trainer.kfold=2")  # two CNNs trained before the main one
    plain, plain_tags = cnn("plain")
    assert folds["kfold_k"] == 2 and "kfold_k" not in plain
    assert folds_tags["aead.cache_key"] == plain_tags["aead.cache_key"]
    assert folds_tags["aead.model_source"] == plain_tags["aead.model_source"] == "trained"
    for metric in ("roc_auc", "average_precision", "accuracy", "threshold_upper"):
        assert folds[metric] == plain[metric], metric
