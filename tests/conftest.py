"""Shared fixtures. Tests use the real IDX data of ../shared/datasets (or $AEAD_DATA_DIR) in
small slices, and data they make themselves; a missing data folder fails loudly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose

from aead.data import DATA_ENV_VAR
from tests.helpers import QUICK, REPO, hydra_config


def _data_dir() -> Path:
    path = Path(os.environ.get(DATA_ENV_VAR) or REPO.parent / "shared" / "datasets").resolve()
    if not (path / "mnist").is_dir() or not (path / "fashion-mnist").is_dir():
        pytest.fail(
            f"test data not found at {path}: set {DATA_ENV_VAR} to a folder holding mnist/ and "
            "fashion-mnist/ IDX files (CI uses ../shared/datasets)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session", autouse=True)
def data_dir() -> Path:
    path = _data_dir()
    os.environ[DATA_ENV_VAR] = str(path)  # also seen by subprocesses the tests start
    return path


@pytest.fixture
def make_config(tmp_path):
    """Compose the real Hydra config with overrides, tracking into a store under tmp_path."""

    def _make(*overrides: str, quick: bool = True):
        isolated = [
            f"tracking.uri=sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
            f"cache.dir={tmp_path / 'cache'}",
        ]
        with hydra_config():
            return compose("config", overrides=[*(QUICK if quick else []), *isolated, *overrides])

    return _make


# What aead writes where it runs; the suite must write it under tmp_path, never into the repo.
GENERATED = ("mlruns", "outputs", "multirun", ".aead_cache")


def _generated_files() -> set[str]:
    return {
        str(path.relative_to(REPO))
        for name in GENERATED
        if (REPO / name).exists()
        for path in (REPO / name).rglob("*")
        if path.is_file()
    }


@pytest.fixture(scope="session", autouse=True)
def repository_left_clean():
    """Fails the session (at the last test's teardown) when a test wrote run output into the
    repository: a store, cache or Hydra folder that belongs under the test's tmp_path."""
    before = _generated_files()
    yield
    written = sorted(_generated_files() - before)
    assert not written, (
        f"the tests wrote {len(written)} files into the repository, e.g. {written[:3]}: "
        "point tracking.uri, cache.dir, hydra.run.dir (and a store's artifact root) at tmp_path"
    )
