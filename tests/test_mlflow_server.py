"""A real `mlflow server` on 127.0.0.1: a one-epoch run logged to it through
MLFLOW_TRACKING_URI, then read back over the server's REST API."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import QUICK, REPO


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(base: str, endpoint: str, **query) -> bytes:
    url = f"{base}{endpoint}?{urllib.parse.urlencode(query)}" if query else f"{base}{endpoint}"
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow_cli), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination", str(tmp_path / "server-artifacts"),
    ]  # fmt: skip
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if _get(base, "/health").strip() == b"OK":
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server did not start:\n{(tmp_path / 'server.log').read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    # stopped for real: its workers no longer answer on the port either
    deadline = time.monotonic() + 20
    while _listening(port) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _listening(port), f"mlflow server still listening on port {port}"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


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

    experiment = json.loads(
        _get(
            mlflow_server, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="server-test"
        )
    )["experiment"]
    request = urllib.request.Request(
        f"{mlflow_server}/api/2.0/mlflow/runs/search",
        data=json.dumps({"experiment_ids": [experiment["experiment_id"]]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        runs = json.loads(response.read())["runs"]
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
