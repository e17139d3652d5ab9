"""The package carries its configs (conf/ as aead.conf, experiments/ as aead.experiments, one
copy each), and users add their own with --config-dir. The wheel itself is built, installed
and run by scripts/check_wheel.sh in CI."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import resources

from tests.helpers import CONF, REPO


def test_every_config_folder_is_a_listed_package():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        "aead.conf." + ".".join(p.relative_to(CONF).parts)
        for p in CONF.rglob("*")
        if p.is_dir() and p.name != "__pycache__"
    }
    assert folders and folders <= set(setuptools["packages"])
    assert setuptools["package-dir"] == {"aead.conf": "conf", "aead.experiments": "experiments"}


def test_experiments_are_one_copy_served_as_the_experiment_group():
    assert not (CONF / "experiment").exists()  # no second path to the same files
    shipped = sorted(p.name for p in resources.files("aead.experiments").iterdir())
    names = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))
    assert [n for n in shipped if n.endswith(".yaml")] == [f"{n}.yaml" for n in names]
    done = subprocess.run(
        [sys.executable, "-m", "aead.run", "experiment=nope"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"choose one of {', '.join(names)}" in done.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "aead.run", "--help"], capture_output=True, text=True, timeout=120
    )
    assert f"experiment: {', '.join(names)}" in helped.stdout  # --help lists them as a group


def test_a_users_config_dir_adds_models_and_experiments(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "experiment").mkdir()
    wide = (CONF / "model" / "dense.yaml").read_text().replace("name: dense", "name: wide")
    (tmp_path / "model" / "wide.yaml").write_text(wide)
    (tmp_path / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: wide\ntrainer:\n  epochs: 2\n"
    )
    command = [sys.executable, "-m", "aead.run", "--config-dir", str(tmp_path), "--cfg", "job"]
    done = subprocess.run(
        [*command, "experiment=mine"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "name: wide" in done.stdout and "epochs: 2" in done.stdout
    shipped = subprocess.run(
        [*command, "experiment=grid"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert shipped.returncode == 0 and "name: conv" in shipped.stdout  # the package's still there


def test_hydra_finds_aeads_plugins():
    """Hydra only accepts plugins it finds by scanning the hydra_plugins namespace package:
    aead's must be on it however aead is installed (editable here, a wheel in CI)."""
    from hydra.core.plugins import Plugins
    from hydra.plugins.config_source import ConfigSource
    from hydra.plugins.launcher import Launcher

    plugins = Plugins.instance()
    launchers = {f"{c.__module__}.{c.__name__}" for c in plugins.discover(Launcher)}
    assert "hydra_plugins.aead_hydra.ray_launcher.RayLauncher" in launchers
    sources = {c.__name__ for c in plugins.discover(ConfigSource)}
    assert "ExperimentsConfigSource" in sources
