"""Entry point: `python -m aead.run [overrides]` (`-m` sweeps). With aead.sweeps, the only
modules that know Hydra.

How a job ends: FINISHED; in a multirun, a job that raises is recorded as FAILED (its MLflow
run too) and the sweep goes on, then the command lists the failed jobs and exits 1; SIGINT /
SIGTERM end the current run as KILLED, stop the sweep and exit 130 / 143.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from aead import errors, sweeps
from aead.tracking import lifecycle
from aead.tracking.secrets import mask_log_records, redact, redact_file

if TYPE_CHECKING:  # the pipeline imports TensorFlow: only a job that runs needs it
    from aead.pipeline import RunContext

# conf/ ships in the package as aead.conf (see pyproject.toml), so an installed wheel runs
# from any folder; users add their own configs with --config-dir or hydra.searchpath.
CONFIG_MODULE = "aead.conf"


# Environment a job needs wherever it runs; the Ray launcher config hands it to its workers.
WORKER_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "AEAD_DATA_DIR",
    "AEAD_TF_LOGS",
)


def worker_env() -> dict[str, str]:
    return {name: os.environ[name] for name in WORKER_ENV if name in os.environ}


OmegaConf.register_new_resolver("aead_worker_env", worker_env, replace=True)
# The launching process's folder, cached like ${now:} so that jobs running elsewhere (a Ray
# worker's own working directory) see the same value: conf/config.yaml's sweep folder.
OmegaConf.register_new_resolver("aead_cwd", os.getcwd, use_cache=True, replace=True)
# conf/hydra/launcher/{ray,submitit_slurm}.yaml extend the plugins' configs of those names on
# purpose (they are validated against them); Hydra warns about the match.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/\w+' is validated against")


def job_cores(launcher: DictConfig) -> int:
    """The cores one job of this sweep may use: this machine's, shared by joblib's parallel
    jobs, or what a Ray task or a Slurm job reserves."""
    cpus, target = os.cpu_count() or 1, str(launcher.get("_target_", ""))
    if "joblib" in target and launcher.get("n_jobs") is not None:
        n_jobs = int(launcher.n_jobs)
        n_jobs = n_jobs if n_jobs > 0 else cpus + 1 + n_jobs  # joblib: -1 = every CPU
        return max(1, cpus // max(1, n_jobs))
    if target.endswith("RayLauncher"):
        reserved = (launcher.get("ray") or {}).get("remote", {}).get("num_cpus")
    elif "submitit" in target:
        reserved = launcher.get("cpus_per_task")
    else:
        reserved = None
    return max(1, int(reserved)) if reserved else cpus


def context_from_hydra() -> RunContext:
    from aead.pipeline import RunContext

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    return RunContext(
        base_dir=hydra.utils.get_original_cwd(),
        overrides=list(hydra_cfg.overrides.task),
        # One multirun shares one sweep folder, so its name identifies the sweep.
        sweep_id=Path(hydra_cfg.sweep.dir).name if multirun else None,
        job_num=hydra_cfg.job.num if multirun else None,
        job_cores=job_cores(hydra_cfg.launcher) if multirun else os.cpu_count() or 1,
    )


def _mask_hydra_files() -> None:
    """Hydra writes the overrides (a tracking URI with a password included) to its own files."""
    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        redact_file(output_dir / str(hydra_cfg.output_subdir or ".hydra") / name)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        redact_file(Path(hydra_cfg.sweep.dir) / "multirun.yaml")


class JobError(BaseException):
    """A single run's error on its way to cli(), which words it in one line: as a
    BaseException it passes Hydra's job runner, which would print its own "Error executing
    job with overrides" line first."""

    def __init__(self, error: Exception):
        super().__init__(error)
        self.error = error


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="config")
def main(cfg: DictConfig) -> float:
    from aead import settings, tf_runtime

    if HydraConfig.get().mode != RunMode.MULTIRUN:
        try:  # every numeric setting, before TensorFlow loads (a sweep's jobs: in run())
            settings.validate(cfg)
        except errors.ConfigError as exc:
            raise JobError(exc) from exc

    tf_runtime.import_quietly()
    from aead.pipeline import run

    # again here: joblib runs jobs in worker processes that never ran cli()
    lifecycle.install_signal_handlers()
    mask_log_records()
    _mask_hydra_files()
    context = context_from_hydra()
    if context.sweep_id is None:
        try:
            result = run(cfg, context)
        except Exception as exc:
            raise JobError(exc) from exc
        return result.metrics.get("roc_auc", math.nan)

    output_dir = HydraConfig.get().runtime.output_dir
    record = {"job": context.job_num, "overrides": [redact(o) for o in context.overrides]}
    if lifecycle.interrupted():  # a worker told to stop must not start a queued job
        sweeps.write_job_record(output_dir, **record, status="KILLED", reason="not started")
        return math.nan
    try:
        result = run(cfg, context)
    except lifecycle.Interrupted as exc:
        sweeps.write_job_record(output_dir, **record, status="KILLED", reason=exc.reason)
        if lifecycle.in_worker_process():
            # Exiting would make the pool kill its other workers mid-clean-up; the launching
            # process got the signal too and stops the sweep.
            return math.nan
        raise
    except Exception as exc:  # one failed job must not stop the sweep; it is listed at the end
        from aead.tracking.runs import one_line

        reason = one_line(exc)
        print(f"[aead] job {context.job_num} FAILED: {reason}", file=sys.stderr, flush=True)
        sweeps.write_job_record(output_dir, **record, status="FAILED", reason=reason)
        return math.nan
    status = "SKIPPED" if result.model_source == "skipped" else "FINISHED"
    sweeps.write_job_record(output_dir, **record, status=status, run_id=result.run_id)
    # returned for sweepers that optimise a metric (e.g. Optuna)
    return result.metrics.get("roc_auc", math.nan)


def cli() -> None:
    """`python -m aead.run`: exit 0 when every job finished, 1 when a job failed, 2 on a
    configuration error (one line naming the setting), 128 + the signal number when
    interrupted."""
    lifecycle.install_signal_handlers()
    lifecycle.mark_launcher()
    mask_log_records()
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # errors reach this function, which words them
    try:
        try:
            main()
        except JobError as wrapped:
            raise wrapped.error from None
    except KeyboardInterrupt as exc:  # aead's Interrupted, or one a library re-raised plainly
        stopped = lifecycle.as_interrupted(exc)
        print(f"[aead] stopped: {stopped.reason}", file=sys.stderr, flush=True)
        sys.exit(stopped.exit_code)
    except Exception as exc:
        if full_error:
            raise
        line = errors.config_error_line(exc)
        if line is not None:
            print(f"[aead] configuration error: {redact(line)}", file=sys.stderr, flush=True)
            sys.exit(errors.EXIT_CONFIG)
        from aead.tracking.runs import one_line

        print(f"[aead] error: {one_line(exc)}", file=sys.stderr, flush=True)
        print("(HYDRA_FULL_ERROR=1 shows the traceback)", file=sys.stderr, flush=True)
        sys.exit(1)
    if sweeps.failed_jobs():
        sys.exit(1)


def entry() -> None:
    """The process's entry point (`aead-run`, `python -m aead.run`): cli(), then the exit."""
    try:
        cli()
        code = 0
    except SystemExit as exc:
        code = exc.code
    exit_process(code)


def exit_process(code) -> None:
    """Ends the process with sys.exit's code: every atexit handler run and the streams
    flushed, then without the interpreter's teardown, which frees TensorFlow's and MLflow's
    objects one by one and writes nothing (2.3 s of a 26 s run, measured). A process with
    another live non-daemon thread exits the usual way, as that thread may still write."""
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if any(not t.daemon for t in others):
        sys.exit(code)
    atexit._run_exitfuncs()  # logging's flush, MLflow's and Ray's shutdowns, ...
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
