"""The docs cannot drift from the code: every aead command on the getting-started page runs
(shrunk to a smoke size) and does what the page says; the README stays a short front page
whose links land on pages that exist."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import mlflow
import pytest

from tests.helpers import QUICK, REPO

PAGE = REPO / "docs" / "getting-started.md"
SMOKE = [*QUICK, "tracking.log_model=false"]  # appended: the last value of a key wins


def _commands(page) -> list[list[str]]:
    """Each command line of the page's bash blocks, as argv."""
    blocks = re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S)
    return [shlex.split(line, comments=True) for b in blocks for line in b.splitlines() if line]


def _effective(argv: list[str]) -> tuple:
    """A command as Hydra reads it: its flags, and each key's last value."""
    flags = tuple(a for a in argv if "=" not in a)
    values = dict(a.split("=", 1) for a in argv if "=" in a)
    return flags, tuple(sorted(values.items()))


def test_readme_is_a_short_front_page_whose_links_exist():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    commands = ("bash scripts/setup.sh", "pytest", "python -m aead.run", "python -m aead.report")
    for command in (*commands, "mlflow ui"):
        assert command in readme, command
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert links and all((REPO / link).is_file() for link in links), links


@pytest.mark.slow
def test_every_command_on_the_getting_started_page_runs(tmp_path):
    commands = _commands(PAGE)
    aead = [c for c in commands if c[:2] == ["python", "-m"] and c[2].startswith("aead.")]
    assert [" ".join(c[:2]) for c in commands[:2]] == ["bash scripts/setup.sh", "pytest"]
    assert len(aead) >= 5  # the main job, its quick variant, the sweeps, the report, ...
    # as a new user runs them: no store chosen (earlier tests' mlflow.set_tracking_uri sets
    # MLFLOW_TRACKING_URI in this process), so the runs go to ./mlruns
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    ran = set()
    for command in aead:
        argv = [sys.executable, *command[1:]]
        if command[2] == "aead.run":
            argv += SMOKE
        if _effective(argv) in ran:
            continue  # the full and quick variants shrink to the same command
        ran.add(_effective(argv))
        done = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
        if command[2] == "aead.report":  # its last line: the report's path
            assert done.stdout.strip().splitlines()[-1].endswith("report.html")
        else:  # each run ends with its metrics and how to open it in the UI
            assert "roc_auc" in done.stdout and "open it: mlflow ui" in done.stdout

    # the page's `mlflow ui` command opens the store those runs went to
    ui = next(c for c in commands if c[:2] == ["mlflow", "ui"])
    store = ui[ui.index("--backend-store-uri") + 1].removeprefix("sqlite:///")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / store}")
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) >= 4 and set(runs["status"]) == {"FINISHED"}
    assert {"aead", "contaminated_mse"} <= set(
        mlflow.get_experiment(e).name for e in runs["experiment_id"].unique()
    )
    sweeps = runs.dropna(subset=["tags.sweep_id"])  # one multirun: one run per job
    assert sorted(sweeps["params.loss.name"]) == ["bce", "ssim"]
    assert sweeps["tags.sweep_id"].nunique() == 1 and runs["metrics.roc_auc"].notna().all()
