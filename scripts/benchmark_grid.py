"""Time the full comparison grid (`python -m aead.run -m +experiment=grid`) and print its
figures: wall time, runs, how many trained vs reused a model, and the slowest jobs.

    python scripts/benchmark_grid.py [--workdir DIR] [extra Hydra overrides...]

It runs in DIR (default: a fresh temporary folder) so that its MLflow store and model cache
start empty, as on a new machine. Set AEAD_DATA_DIR where datasets cannot be downloaded.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="where mlruns/ and .aead_cache/ go (default: temp)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="aead-grid-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}"}
    (workdir / "mlruns").mkdir(exist_ok=True)
    command = [sys.executable, "-m", "aead.run", "-m", "+experiment=grid",
               f"cache.dir={workdir / 'cache'}",
               f"hydra.sweep.dir={workdir / 'multirun' / time.strftime('grid-%Y%m%d-%H%M%S')}",
               *args.overrides]  # fmt: skip
    print(f"[benchmark] {' '.join(command[1:])}\n[benchmark] log: {workdir / 'grid.log'}")
    started = time.perf_counter()
    with open(workdir / "grid.log", "w") as log:
        done = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started

    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["grid"])
    sources = runs["tags.aead.model_source"].value_counts().to_dict()
    print(f"machine       : {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"data          : {os.environ.get('AEAD_DATA_DIR', 'default sources')}")
    print(f"exit code     : {done.returncode}")
    print(f"wall time     : {wall:.0f} s ({wall / 60:.1f} min)")
    statuses = {k: int(v) for k, v in runs["status"].value_counts().items()}
    print(f"runs          : {len(runs)} {statuses}")
    print(f"models        : {sources.get('trained', 0)} trained, {sources.get('reused', 0)} reused")
    if "metrics.duration_s" in runs:
        slow = runs.sort_values("metrics.duration_s", ascending=False).head(5)
        for _, run in slow.iterrows():
            print(
                f"  slowest job : {run['metrics.duration_s']:6.1f} s  {run['tags.mlflow.runName']}"
            )
    print(f"report        : python -m aead.report --tracking-uri {env['MLFLOW_TRACKING_URI']}")
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
