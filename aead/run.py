"""Entry point: `python -m aead.run [overrides]` (`-m` sweeps). The only module knowing Hydra."""

from __future__ import annotations

import math
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from aead.pipeline import RunContext, run

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def context_from_hydra() -> RunContext:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    return RunContext(
        base_dir=hydra.utils.get_original_cwd(),
        overrides=list(hydra_cfg.overrides.task),
        # One multirun shares one sweep folder, so its name identifies the sweep.
        sweep_id=Path(hydra_cfg.sweep.dir).name if multirun else None,
        job_num=hydra_cfg.job.num if multirun else None,
    )


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    result = run(cfg, context_from_hydra())
    # returned for sweepers that optimise a metric (e.g. Optuna)
    return result.metrics.get("roc_auc", math.nan)


if __name__ == "__main__":
    main()
