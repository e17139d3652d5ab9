"""Hydra's Ray launcher, made to stop cleanly. The plugin submits every job as a Ray task and
waits; when the launching process is interrupted (Ctrl-C, SIGTERM), it exits and Ray kills
the tasks' workers outright, leaving their MLflow runs RUNNING for ever. This launcher
cancels the tasks first: a running job gets a KeyboardInterrupt and ends its run KILLED (tag
`aead.end_reason`), a queued one never starts. Used by conf/hydra/launcher/ray.yaml.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from omegaconf import open_dict

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
        tasks = []
        try:
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
                log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
                sweep_config = self.hydra_context.config_loader.load_sweep_config(
                    self.config, list(overrides)
                )
                with open_dict(sweep_config):
                    sweep_config.hydra.job.id = f"job_id_for_{idx}"
                    sweep_config.hydra.job.num = idx
                tasks.append(
                    launch_job_on_ray(
                        self.hydra_context,
                        self.ray_cfg.remote,
                        sweep_config,
                        self.task_function,
                        Singleton.get_state(),
                    )  # fmt: skip
                )
            return [ray.get(task) for task in tasks]
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
