"""Pure logic behind safe sweeps, no training: credential masking, the config hash that
identifies a job on resume, and how TensorFlow's threads are shared between parallel jobs."""

from __future__ import annotations

import logging
import os

import pytest
from omegaconf import OmegaConf

from aead.run import job_cores
from aead.settings import config_hash
from aead.tf_runtime import tf_threads
from aead.tracking.runs import flatten, one_line, ui_base_url, ui_command
from aead.tracking.secrets import RedactFilter, mask_log_records, redact


@pytest.mark.parametrize(
    "text, expected",
    [
        ("postgresql://user:secret@host/db", "postgresql://user:***@host/db"),
        ("https://user:secret@host:5000/x", "https://user:***@host:5000/x"),
        ("uri=postgresql://u:p@ss@h:5432/db next", "uri=postgresql://u:***@h:5432/db next"),
        ("redis://:secret@host", "redis://:***@host"),
        (r"uri=http\://me\:secret@h\:5000 x", r"uri=http\://me\:***@h\:5000 x"),  # Hydra's log
        ("sqlite:////tmp/mlruns/mlflow.db", "sqlite:////tmp/mlruns/mlflow.db"),
        ("http://127.0.0.1:5000/#/experiments/1", "http://127.0.0.1:5000/#/experiments/1"),
        ("http://user@host/x", "http://user@host/x"),  # no password, nothing to hide
    ],
)
def test_redact_masks_only_the_password(text, expected):
    assert redact(text) == expected


def test_credentials_are_masked_in_params_links_and_log_records():
    uri = "https://me:secret@mlflow.example.org"
    assert flatten({"tracking": {"uri": uri}}) == {
        "tracking.uri": "https://me:***@mlflow.example.org"
    }
    assert "secret" not in ui_command(uri) and "secret" not in ui_base_url(uri)
    assert "secret" not in one_line(RuntimeError(f"cannot reach {uri}\nmore"))
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "#0 : tracking.uri=%s", (uri,), None)
    assert RedactFilter().filter(record)
    assert record.getMessage() == "#0 : tracking.uri=https://me:***@mlflow.example.org"


def _cfg(**changes):
    base = {
        "seed": 0,
        "model": {"name": "conv"},
        "trainer": {"epochs": 3, "verbose": "auto"},
        "tracking": {"uri": None},
        "cache": {"dir": None},
        "compute": {"threads": "auto"},
        "run_name": None,
    }
    for dotted, value in changes.items():
        node = base
        *parents, leaf = dotted.split("__")
        for name in parents:
            node = node[name]
        node[leaf] = value
    return OmegaConf.create(base)


def test_config_hash_identifies_the_job_not_where_it_is_recorded():
    same = config_hash(_cfg())
    for where in (
        {"tracking__uri": "http://elsewhere:5000"},
        {"cache__dir": "/tmp/other"},
        {"compute__threads": 1},
        {"run_name": "mine"},
        {"trainer__verbose": 0},
    ):
        assert config_hash(_cfg(**where)) == same, where
    for what in ({"seed": 1}, {"trainer__epochs": 4}, {"model__name": "dense"}):
        assert config_hash(_cfg(**what)) != same, what


# config_hash of shipped configs as the code before image folders and anomaly maps gave them
# (commit 17889c5, its own conf/): the settings added since leave the jobs of existing
# sweeps their hashes, so those sweeps still resume.
HASHES_BEFORE = {
    (): "5baf1f45b0b549283d3780edae473e31b667d93b5f8c86718de6c70cf7a4c191",
    ("scenario=one_class", "scenario.normal_class=3", "model=dense", "loss=mse"): (
        "1f1399d6f8db4902f2a81ebe0eb9ac7a237cfd6ad9d0cd45afff6dbebd128879"
    ),
    ("experiment=one_class_benchmark", "+detector=conv_he_stages_knn_dense_complexity",
     "seed=3"): "3bcc194cb977770061d8b9c372c04ce2bfd0a40d51735eed8a547c274f2a48ab",
}  # fmt: skip


@pytest.mark.parametrize("overrides", sorted(HASHES_BEFORE))
def test_settings_added_later_keep_existing_config_hashes(overrides):
    from hydra import compose

    from tests.helpers import hydra_config

    with hydra_config():
        cfg = compose("config", overrides=list(overrides))
    assert config_hash(cfg) == HASHES_BEFORE[overrides]
    with hydra_config():  # the new settings count once they leave their defaults
        changed = compose("config", overrides=[*overrides, "data.channels=3", "maps.sigma=2"])
    assert config_hash(changed) != HASHES_BEFORE[overrides]


def test_threads_follow_the_cores_a_job_may_use():
    assert tf_threads("auto", 4) == 4
    assert tf_threads(None, 1) == 1
    assert tf_threads(3, 8) == 3
    with pytest.raises(ValueError, match="compute.threads"):
        tf_threads(0, 1)


def test_job_cores_read_from_the_launcher_config():
    cpus = os.cpu_count() or 1
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert job_cores(OmegaConf.create({"_target_": joblib, "n_jobs": 2})) == max(1, cpus // 2)
    assert job_cores(OmegaConf.create({"_target_": joblib, "n_jobs": -1})) == 1
    assert job_cores(OmegaConf.create({"_target_": joblib, "n_jobs": 10 * cpus})) == 1
    ray = "hydra_plugins.aead_hydra.ray_launcher.RayLauncher"
    assert job_cores(OmegaConf.create({"_target_": ray, "ray": {"remote": {"num_cpus": 3}}})) == 3
    assert job_cores(OmegaConf.create({"_target_": ray, "ray": {"remote": {}}})) == cpus
    slurm = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert job_cores(OmegaConf.create({"_target_": slurm, "cpus_per_task": 5})) == 5
    basic = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert job_cores(OmegaConf.create({"_target_": basic})) == cpus


def test_every_log_record_is_masked_once_installed():
    original = logging.getLogRecordFactory()
    try:
        mask_log_records()
        mask_log_records()  # idempotent: one layer
        record = logging.getLogger("hydra").makeRecord(
            "hydra", logging.INFO, __file__, 1, "\t#0 : %s", ("tracking.uri=http://u:pw@h",), None
        )
        assert record.getMessage() == "\t#0 : tracking.uri=http://u:***@h"
    finally:
        logging.setLogRecordFactory(original)


SIGNAL_IN_CRITICAL_SECTION = """
import os, signal
from aead.tracking import lifecycle
lifecycle.install_signal_handlers()
with lifecycle.critical():
    os.kill(os.getpid(), signal.SIGTERM)
    print("still running inside", flush=True)  # TensorFlow's work is not cut in half
    try:
        lifecycle.raise_pending()  # a safe point: Keras calls it after every batch
    except lifecycle.Interrupted as exc:
        print("raised at the safe point:", exc.reason, flush=True)
        raise SystemExit(exc.exit_code)
"""


def test_a_signal_inside_a_critical_section_waits_for_a_safe_point():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", SIGNAL_IN_CRITICAL_SECTION], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.stdout.splitlines() == [
        "still running inside",
        "raised at the safe point: SIGTERM during start-up",
    ], done.stderr
    assert done.returncode == 143


SIGNAL_NEVER_REACHING_A_SAFE_POINT = """
import os, signal, time
from aead.tracking import lifecycle
lifecycle.FORCE_EXIT_AFTER_S = 1.0
lifecycle.install_signal_handlers()
lifecycle.on_force_exit(lambda reason: print("ended the run:", reason, flush=True))
with lifecycle.critical():
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(300):  # stuck (native code that never returns to a safe point)
        time.sleep(0.1)
print("never printed", flush=True)
"""


def test_a_stalled_stop_is_forced_by_the_watchdog_which_says_so():
    """A job that never reaches a safe point after a signal: the watchdog runs the registered
    clean-up (the run ended KILLED), says why the process stops, and exits 128 + signal."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", SIGNAL_NEVER_REACHING_A_SAFE_POINT], capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert done.stdout.splitlines() == ["ended the run: SIGTERM during start-up"], done.stderr
    assert done.returncode == 143
    assert "[aead] stopped: SIGTERM during start-up; forced after 1 s" in done.stderr
