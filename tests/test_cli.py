"""The command line speaks clearly: configuration errors are one line and exit 2, --help and
the report do not import TensorFlow, TensorFlow's start-up noise is silenced by default."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import QUICK, REPO


def _aead(*args: str, env=None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, "-m", "aead.run", *args], cwd=REPO, env={**environment, **(env or {})},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize(
    "override, line",
    [
        (
            "model=nope",
            "model=nope: no such option; choose one of cnn, conv, deep_conv, deep_svdd, dense, "
            "ecod, feature_nn, feature_nn_texture, golden_template, iforest, knn, ocsvm, patch_nn, "
            "pca, rotation",
        ),
        ("trainer.epoch=3", "trainer.epoch: no such setting; trainer takes batch_size, epochs,"),
        ("loss=bce,", "could not parse the overrides"),
    ],
)
def test_a_bad_override_is_one_line_and_exit_2(override, line):
    done = _aead(override)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        next(x for x in done.stderr.splitlines() if x.startswith("[aead] configuration error"))
    ]
    assert line in done.stderr and "Traceback" not in done.stderr


def test_full_error_still_gives_the_traceback():
    done = _aead("model=nope", env={"HYDRA_FULL_ERROR": "1"})
    assert done.returncode == 1 and "Traceback" in done.stderr


@pytest.mark.parametrize("module", ["aead.run", "aead.report"])
def test_help_starts_without_tensorflow(module):
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", module, "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()}
    assert "aead" in imported  # the import log is read right
    assert not {"tensorflow", "keras"} & imported


@pytest.mark.parametrize(
    "override, says",
    [("scenario.normal_class=12", "mnist has no such class; its classes are 0, 1, 2, 3, 4, "
      "5, 6, 7, 8, 9"),
     ("trainer.epochs=-3", "not accepted; trainer.epochs takes a whole number ≥ 1")],
)  # fmt: skip
def test_an_out_of_range_value_is_one_line_and_exit_2(tmp_path, override, says):
    store = f"tracking.uri=sqlite:///{tmp_path / 'm.db'}"
    done = _aead("scenario=one_class", override, store, f"hydra.run.dir={tmp_path}")
    assert done.returncode == 2
    assert done.stderr.strip() == f"[aead] configuration error: {override}: {says}"
    assert not (tmp_path / "m.db").exists()  # refused before any run was made


def test_an_error_inside_the_run_is_one_line_and_the_run_is_kept(tmp_path):
    """Hydra's job runner prints "Error executing job with overrides" before a failed job's
    error; aead's one line is all a single run prints, and the run is recorded FAILED."""
    from mlflow import MlflowClient

    from aead.tracking.runs import prepare_store

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    prepare_store(uri)  # made here: MLflow logs the creation of a store's tables
    missing = tmp_path / "photos"
    done = _aead("scenario=one_class", f"scenario.dataset={missing}", "scenario.normal_class=good",
                 f"tracking.uri={uri}", f"hydra.run.dir={tmp_path / 'r'}")  # fmt: skip
    line = f"[aead] configuration error: scenario.dataset={missing}: no such folder ({missing})"
    assert (done.returncode, done.stderr.strip()) == (2, line)
    (failed,) = MlflowClient(uri).search_runs(["1"])
    assert failed.info.status == "FAILED"
    assert failed.data.tags["aead.error"].endswith(f"no such folder ({missing})")


@pytest.mark.slow
def test_tensorflow_start_up_noise_is_silenced_unless_asked_for(tmp_path):
    store = f"tracking.uri=sqlite:///{tmp_path / 'm.db'}"
    args = ["model=dense", *QUICK, "tracking.log_model=false", "cache.enabled=false", store,
            f"hydra.run.dir={tmp_path / 'r'}"]  # fmt: skip
    quiet = _aead(*args)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "[aead] run dense-bce" in quiet.stdout
    assert "oneDNN" not in quiet.stderr and "absl::InitializeLog" not in quiet.stderr
    # aead's lines go through logging: the job's own log file holds them, progress included
    job_log = (tmp_path / "r" / "run.log").read_text()
    assert "[aead][INFO] - epoch 1/1: loss" in job_log
    assert "finished; model trained" in job_log and "[aead] epoch 1/1: loss" in quiet.stdout
    loud = _aead(*args, env={"AEAD_TF_LOGS": "1"})
    assert loud.returncode == 0 and "absl::InitializeLog" in loud.stderr


EXIT = """
import atexit, logging, sys, threading, time
from aead.run import exit_process
logging.basicConfig(filename=sys.argv[1], level=logging.INFO)
atexit.register(lambda: print("atexit ran", flush=True))
logging.getLogger("aead").info("the last line")
print("buffered", end="")  # a pipe: held in the buffer until flushed
if sys.argv[2] == "thread":
    threading.Thread(target=lambda: (time.sleep(0.5), print(" thread done", end=""))).start()
exit_process({code})
"""


@pytest.mark.parametrize(
    "code, thread, returncode, says",
    [("3", "none", 3, ""), ("None", "none", 0, ""), ("'no data'", "none", 1, "no data"),
     ("0", "thread", 0, "")],
)  # fmt: skip
def test_the_process_exit_keeps_the_code_the_output_and_the_log(
    tmp_path, code, thread, returncode, says
):
    log = tmp_path / "job.log"
    script = EXIT.format(code=code)
    done = subprocess.run([sys.executable, "-c", script, str(log), thread], cwd=REPO,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == returncode, done.stderr
    assert done.stderr.strip().endswith(says)
    # a live non-daemon thread is waited for, as a usual exit would
    output = "buffered" + (" thread done" if thread == "thread" else "")
    assert done.stdout.startswith(output) and done.stdout.endswith("atexit ran\n"), done.stdout
    assert "the last line" in log.read_text()
