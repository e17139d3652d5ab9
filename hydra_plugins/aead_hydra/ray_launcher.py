"""Hydra's Ray launcher, made to stop cleanly. The plugin submits every job as a Ray task and
waits; when the launching process is interrupted (Ctrl-C, SIGTERM), it exits and Ray kills
the tasks' workers outright, leaving their MLflow runs RUNNING for ever. This launcher
cancels the tasks first: a running job gets a KeyboardInterrupt and ends its run KILLED (tag
`aead.end_reason`), a queued one never starts. And when a task's worker dies (SIGKILL, the
OOM killer, a lost node), the plugin's sweep stops with Ray's error; here that job alone is
lost: its run is ended KILLED ("lost: Ray worker died ..."), it is listed with the sweep's
failed jobs, and the other jobs go on. Used by conf/hydra/launcher/ray.yaml.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    setup_globals,
)
from omegaconf import DictConfig, open_dict

from aead.tracking import lifecycle

try:  # the cluster extra; its config module is cheap, Ray itself is imported in launch()
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as PluginRayLauncher
except ImportError:  # pragma: no cover - without the extra, hydra/launcher=ray says so
    from hydra.plugins.launcher import Launcher as PluginRayLauncher

log = logging.getLogger(__name__)


class RayLauncher(PluginRayLauncher):
    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """The plugin's own launch (hydra_ray_launcher/_core.py), keeping the tasks' refs."""
        import ray
        from hydra_plugins.hydra_ray_launcher._launcher_util import launch_job_on_ray, start_ray

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Ray Launcher is launching {len(job_overrides)} jobs, sweep dir: {sweep_dir}")
        start_ray(self.ray_cfg.init)
        # ray.init installs its own SIGTERM handler, which kills the process at once
        lifecycle.install_signal_handlers()
        tasks, configs = [], []
        try:
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
                log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
                sweep_config = self.hydra_context.config_loader.load_sweep_config(
                    self.config, list(overrides)
                )
                with open_dict(sweep_config):
                    sweep_config.hydra.job.id = f"job_id_for_{idx}"
                    sweep_config.hydra.job.num = idx
                configs.append(sweep_config)
                tasks.append(
                    launch_job_on_ray(
                        self.hydra_context,
                        self.ray_cfg.remote,
                        sweep_config,
                        self.task_function,
                        Singleton.get_state(),
                    )  # fmt: skip
                )
            returns = []
            for task, sweep_config in zip(tasks, configs, strict=True):
                try:
                    returns.append(ray.get(task))
                except ray.exceptions.RayError as exc:  # its worker died; the others go on
                    returns.append(lost_job(sweep_config, exc))
            return returns
        except KeyboardInterrupt:  # aead's Interrupted (SIGINT, SIGTERM) included
            cancel(ray, tasks)
            raise


def cancel(ray, tasks: list) -> None:
    """Cancel the tasks and give the running ones a moment to end their runs."""
    for task in tasks:
        try:
            ray.cancel(task)  # not force: a KeyboardInterrupt inside the job
        except Exception:  # finished already, or Ray is going away: nothing to cancel
            pass
    try:
        ray.wait(tasks, num_returns=len(tasks), timeout=lifecycle.CHILDREN_GRACE_S - 1)
    except Exception:
        pass


def lost_job(sweep_config: DictConfig, error: Exception) -> JobReturn:
    """A job whose worker died: its RUNNING run ended KILLED and its job record written, as the
    job itself would have (aead.run), so that the sweep's summary lists it and a resumed sweep
    runs it again; returned as a completed job that returned NaN, as a failed aead job does."""
    from aead.sweeps import write_job_record
    from aead.tracking.runs import end_job_runs, one_line, resolve_tracking_uri
    from aead.tracking.secrets import redact

    job = int(sweep_config.hydra.job.num)
    overrides = list(sweep_config.hydra.overrides.task)
    reason = f"lost: Ray worker died ({one_line(error)})"
    sweep_dir = Path(str(sweep_config.hydra.sweep.dir))
    uri = resolve_tracking_uri(Path.cwd(), sweep_config.get("tracking", {}).get("uri"))
    try:
        ended = end_job_runs(uri, sweep_config.experiment_name, sweep_dir.name, job, reason)
    except Exception as exc:  # the store is away: the run's heartbeat tells later
        log.warning(f"job #{job}: could not end its run: {exc}")
        ended = []
    write_job_record(
        sweep_dir / str(sweep_config.hydra.sweep.subdir),
        job=job, overrides=[redact(o) for o in overrides], status="KILLED", reason=reason,
        run_id=ended[0] if ended else None,
    )  # fmt: skip
    print(f"[aead] job {job} KILLED: {reason}", flush=True)
    lost = JobReturn(overrides=overrides, cfg=sweep_config, working_dir=str(sweep_dir))
    lost.status, lost.return_value = JobStatus.COMPLETED, math.nan
    return lost
