"""The deployable detector each run logs (the pyfunc model `detector`): its input rules, its
scores equal to the run's own, loaded where aead is not importable, and served over REST by
a real `mlflow models serve` on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from aead.data import build_splits, to_unit
from aead.detectors.deploy import InputError, as_images
from aead.pipeline import RunContext, run
from tests import servers

IMAGES = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28), dtype=np.uint8)


def test_images_are_taken_as_uint8_or_float_with_or_without_a_channel():
    expected = IMAGES[..., None].astype(np.float32) / 255
    for given in (IMAGES, IMAGES[..., None], IMAGES / 255.0, (IMAGES / 255.0).astype(np.float32)):
        np.testing.assert_allclose(as_images(given), expected, rtol=1e-6)
    # a JSON request: nested lists of whole numbers 0-255, or of floats 0-1
    np.testing.assert_allclose(as_images(IMAGES.tolist()), expected, rtol=1e-6)
    as_object = np.asarray(IMAGES.tolist(), dtype=object)
    np.testing.assert_allclose(as_images(as_object), expected, rtol=1e-6)
    assert as_images(IMAGES).dtype == np.float32 and as_images(IMAGES).shape == (3, 28, 28, 1)


@pytest.mark.parametrize(
    "bad, says",
    [
        (np.zeros((3, 32, 32), np.uint8), "N×28×28 or N×28×28×1, got shape (3, 32, 32)"),
        (np.zeros((3, 28, 28, 3), np.uint8), "got shape (3, 28, 28, 3)"),
        (np.zeros((784,), np.uint8), "got shape (784,)"),
        (np.full((2, 28, 28), 300), "integer images must hold values 0–255"),
        (np.full((2, 28, 28), 2.5), "float images must hold values 0–1"),
        (np.full((2, 28, 28), np.nan), "NaN"),
        (np.array([["a"] * 28] * 28)[None], "numbers"),
        (pd.DataFrame({"x": [1]}), "not a DataFrame"),
    ],
)
def test_anything_else_is_refused_with_what_it_takes(bad, says):
    with pytest.raises(InputError) as raised:
        as_images(bad)
    assert says in str(raised.value)


# A script run with aead made unimportable: the editable install's finder removed, the
# repository off sys.path. It loads the detector, scores the images, checks a bad input.
WITHOUT_AEAD = """
import json, sys
import numpy as np
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path[:] = [p for p in sys.path if p not in ("", ".") and "__editable__" not in p]
try:
    import aead
    sys.exit("aead is importable here: the test proves nothing")
except ModuleNotFoundError:
    pass
import mlflow
model = mlflow.pyfunc.load_model(sys.argv[1])
images = np.load(sys.argv[2])
as_uint8 = model.predict(np.round(images * 255).astype(np.uint8))
as_float = model.predict(images[..., None].astype(np.float32))
try:
    model.predict(np.zeros((2, 28, 28, 3), np.uint8))
    refused = ""
except Exception as exc:
    refused = str(exc)
import aead  # now from the model's own copy (code_paths)
print(json.dumps({
    "uint8": as_uint8["score"].tolist(), "float": as_float["score"].tolist(),
    "flags": as_uint8["is_anomaly"].tolist(), "refused": refused, "aead": aead.__file__,
}))
"""


# The run's score: an ensemble of its conv AE's error and code distance, a companion dense
# AE's complexity-corrected error and a companion kNN on pixels: four models, one detector.
ENSEMBLE = [
    "score=ensemble",
    "score.members=[{name:raw},{name:latent_knn,k:5},{name:companion,model:dense,loss:mse,"
    "score:{name:complexity,compressor:zlib,combine:max_z}},{name:companion,model:knn}]",
]


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """One quick run with its models logged (an ensemble with companion models); its test
    images; its per-image scores."""
    from hydra import compose

    from tests.helpers import QUICK, hydra_config

    folder = tmp_path_factory.mktemp("detector")
    store = f"sqlite:///{folder / 'mlruns.db'}"
    overrides = [*QUICK, *ENSEMBLE, f"tracking.uri={store}", f"cache.dir={folder / 'cache'}"]
    with hydra_config():
        cfg = compose("config", overrides=[*overrides, "tracking.log_model=true"])
    result = run(cfg, RunContext(base_dir=str(folder)))
    splits = build_splits(cfg.scenario, cfg.data, seed=int(cfg.seed))
    # as floats in [0, 1]: the tests send them as floats and as whole numbers 0-255
    np.save(folder / "images.npy", to_unit(splits.x_test[..., 0]))
    scores_csv = MlflowClient(store).download_artifacts(result.run_id, "scores.csv", str(folder))
    return folder, store, result.run_id, pd.read_csv(scores_csv)


@pytest.mark.slow
def test_detector_loads_and_scores_where_aead_is_not_installed(logged_run):
    folder, store, run_id, logged = logged_run
    script = [sys.executable, "-c", WITHOUT_AEAD, f"runs:/{run_id}/detector"]
    done = subprocess.run(
        [*script, str(folder / "images.npy")],
        cwd=folder, capture_output=True, text=True, timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": store},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "/detector/code/aead/" in out["aead"]  # aead came with the model
    np.testing.assert_allclose(out["uint8"], logged["score"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["float"], logged["score"], rtol=1e-4, atol=1e-6)
    assert out["flags"] == logged["predicted"].astype(bool).tolist()
    assert "N×28×28 or N×28×28×1" in out["refused"]
    run = MlflowClient(store).get_run(run_id)
    assert run.data.tags.get("aead.detector") is None  # logged, not skipped


@pytest.mark.slow
def test_served_detector_answers_a_rest_request(logged_run):
    folder, store, run_id, logged = logged_run
    images = np.load(folder / "images.npy")[:5]
    port = servers.free_port()
    command = [
        str(servers.BIN / "mlflow"), "models", "serve", "-m", f"runs:/{run_id}/detector",
        "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    with servers.serving(command, port, "/ping", folder / "serve.log", env=env) as base:
        as_ints = np.round(images * 255).astype(int).tolist()
        answer = servers.http_post(base, "/invocations", {"inputs": as_ints})
        # maps on request: one H×W map per image, the same as the pyfunc model returns
        mapped = servers.http_post(
            base, "/invocations", {"inputs": as_ints[:2], "params": {"maps": True}}
        )
    predictions = answer["predictions"]
    assert [sorted(p) for p in predictions] == [["is_anomaly", "score"]] * 5
    scores = [p["score"] for p in predictions]
    np.testing.assert_allclose(scores, logged["score"][:5], rtol=1e-4, atol=1e-6)
    assert [p["is_anomaly"] for p in predictions] == logged["predicted"][:5].astype(bool).tolist()
    maps = np.array([p["map"] for p in mapped["predictions"]])
    assert maps.shape == (2, 28, 28) and np.isfinite(maps).all()
    mlflow.set_tracking_uri(store)
    local = mlflow.pyfunc.load_model(f"runs:/{run_id}/detector")
    expected = np.array(local.predict(np.array(as_ints[:2]), params={"maps": True})["map"].tolist())
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)
