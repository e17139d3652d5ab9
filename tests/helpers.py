"""Constants the tests share (imported by the tests; conftest.py holds only fixtures)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Small and fast: one epoch on a slice of real images.
QUICK = [
    "trainer.epochs=1",
    "data.train_limit=600",
    "data.test_limit=200",
    "data.download=false",
    "trainer.verbose=0",
]

# The configs as the package ships them (conf/ is the package aead.conf).
CONF = REPO / "conf"


def hydra_config():
    """Hydra's compose API on aead's own configs: `with hydra_config(): compose(...)`."""
    from hydra import initialize_config_module

    return initialize_config_module(config_module="aead.conf", version_base="1.3")


def logged_scores(tracking_uri: str, run_id: str):
    """The per-image scores a run logged (its scores.csv), as a DataFrame."""
    import io

    import mlflow
    import pandas as pd

    uri = mlflow.MlflowClient(tracking_uri).get_run(run_id).info.artifact_uri
    return pd.read_csv(io.StringIO(mlflow.artifacts.load_text(f"{uri}/scores.csv")))


def logged_image(tracking_uri: str, run_id: str, path: str):
    """A PNG a run logged, decoded to an (H, W, channels) float array; fails when it is not a
    drawn figure (a blank canvas has one colour)."""
    import tempfile

    import matplotlib.image
    import mlflow
    import numpy as np

    uri = mlflow.MlflowClient(tracking_uri).get_run(run_id).info.artifact_uri
    with tempfile.TemporaryDirectory() as folder:
        local = mlflow.artifacts.download_artifacts(f"{uri}/{path}", dst_path=folder)
        image = matplotlib.image.imread(local)
    assert image.ndim == 3 and min(image.shape[:2]) >= 100, (path, image.shape)
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 10, f"{path} is blank"
    return image
