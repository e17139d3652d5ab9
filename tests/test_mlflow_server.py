"""A real `mlflow server` on 127.0.0.1: a one-epoch run logged to it through
MLFLOW_TRACKING_URI, then read back over the server's REST API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import servers
from tests.helpers import QUICK, REPO

_get = servers.http_get


@pytest.fixture
def mlflow_server(tmp_path):
    with servers.mlflow_server(tmp_path) as base:
        yield base


SECRET = "s3cret-pw"


def _files_holding(folder: Path, text: str) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and text in p.read_text("latin-1")]


@pytest.mark.slow
def test_run_logged_to_a_server_reads_back_over_rest(mlflow_server, tmp_path):
    """Also: a tracking URI with credentials, given as a Hydra override, is masked everywhere
    aead or Hydra writes it (printed lines, Hydra's files and logs, params, tags, config.yaml,
    the sweep report)."""
    with_credentials = mlflow_server.replace("http://", f"http://aead-user:{SECRET}@")
    command = [sys.executable, "-m", "aead.run", "-m", *QUICK, "tracking.log_model=false",
               "experiment_name=server-test", f"tracking.uri={with_credentials}",
               f"hydra.sweep.dir={tmp_path / 'out'}",
               f"cache.dir={tmp_path / 'cache'}"]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (REPO / "mlruns" / "artifacts" / "server-test").exists()
    assert SECRET not in done.stdout + done.stderr
    assert "aead-user:***@127.0.0.1" in done.stdout  # masked, not dropped
    assert _files_holding(tmp_path / "out", SECRET) == []

    runs = servers.rest_runs(mlflow_server, "server-test")
    assert len(runs) == 1
    run = runs[0]
    assert run["info"]["status"] == "FINISHED"
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert 0.0 <= metrics["roc_auc"] <= 1.0 and "threshold_upper" in metrics
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["model.name"] == "conv" and params["trainer.epochs"] == "1"
    assert params["tracking.uri"] == with_credentials.replace(SECRET, "***")
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert SECRET not in json.dumps(params) + json.dumps(tags)
    run_id = run["info"]["run_id"]
    config = _get(mlflow_server, "/get-artifact", path="config.yaml", run_uuid=run_id)
    assert b"aead-user:***@" in config and SECRET.encode() not in config

    scores = _get(mlflow_server, "/get-artifact", path="scores.csv", run_uuid=run["info"]["run_id"])
    lines = scores.decode().splitlines()
    assert lines[0] == "index,label,score,predicted" and len(lines) == 1 + 400
    png = _get(mlflow_server, "/get-artifact", path="plots/roc_curve.png",
               run_uuid=run["info"]["run_id"])  # fmt: skip
    assert png[:8] == b"\x89PNG\r\n\x1a\n"

    report = subprocess.run(
        [sys.executable, "-m", "aead.report", "--tracking-uri", with_credentials,
         "--out", str(tmp_path / "report")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    assert SECRET not in report.stdout + report.stderr
    assert _files_holding(tmp_path / "report", SECRET) == []
