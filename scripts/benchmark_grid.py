"""Time the full comparison grid (`python -m aead.run -m experiment=grid`) sequentially and
with parallel joblib jobs on this machine, and print the figures: wall time of each, their
ratio, runs, how many trained vs reused a model, the slowest jobs, and the seconds each stage
took summed over each mode's runs.

    python scripts/benchmark_grid.py [--workdir DIR] [--jobs N] [--only sequential|parallel]
                                     [extra Hydra overrides...]

Each mode runs in its own folder under DIR (default: a fresh temporary folder) so that its
MLflow store and model cache start empty, as on a new machine. Set AEAD_DATA_DIR where
datasets cannot be downloaded.
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


def run_grid(workdir: Path, launcher: list[str], overrides: list[str]) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    store = f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    command = [sys.executable, "-m", "aead.run", "-m", "experiment=grid", *launcher,
               f"cache.dir={workdir / 'cache'}",
               f"hydra.sweep.dir={workdir / 'multirun' / time.strftime('grid-%Y%m%d-%H%M%S')}",
               *overrides]  # fmt: skip
    print(f"[benchmark] {' '.join(command[1:])}\n[benchmark] log: {workdir / 'grid.log'}")
    started = time.perf_counter()
    with open(workdir / "grid.log", "w") as log:
        done = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started

    import mlflow

    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=["grid"])
    return {"wall": wall, "code": done.returncode, "runs": runs, "store": store}


def describe(name: str, result: dict) -> None:
    runs = result["runs"]
    sources = runs["tags.aead.model_source"].value_counts().to_dict()
    statuses = {k: int(v) for k, v in runs["status"].value_counts().items()}
    print(f"--- {name}")
    print(f"exit code     : {result['code']}")
    print(f"wall time     : {result['wall']:.0f} s ({result['wall'] / 60:.1f} min)")
    print(f"runs          : {len(runs)} {statuses}")
    print(f"models        : {sources.get('trained', 0)} trained, {sources.get('reused', 0)} reused")
    if "tags.aead.tf_threads" in runs:
        print(f"TF threads/job: {sorted(set(runs['tags.aead.tf_threads'].dropna()))}")
    if "metrics.duration_s" in runs:
        slow = runs.sort_values("metrics.duration_s", ascending=False).head(3)
        for _, run in slow.iterrows():
            print(
                f"  slowest job : {run['metrics.duration_s']:6.1f} s  {run['tags.mlflow.runName']}"
            )
    print(f"report        : python -m aead.report --tracking-uri {result['store']}")


def stage_table(results: dict[str, dict]) -> None:
    """Seconds per stage, summed over each mode's runs (the `time_<stage>_s` metrics every run
    logs, and `duration_s`, the whole job)."""
    columns = {name: result["runs"] for name, result in results.items()}
    stages = sorted(
        {c for runs in columns.values() for c in runs if c.startswith("metrics.time_")},
        key=lambda c: -max(runs[c].sum() for runs in columns.values() if c in runs),
    )
    stages.append("metrics.duration_s")
    names = list(columns)
    print("--- seconds per stage, summed over the runs of each mode")
    print(f"{'stage':<28}" + "".join(f"{n:>22}" for n in names))
    for column in stages:
        label = column.removeprefix("metrics.").removeprefix("time_").removesuffix("_s")
        label = "all (duration_s)" if label == "duration" else label.replace("_", " ")
        cells = []
        for runs in columns.values():
            cells.append(f"{runs[column].sum():>20.0f} s" if column in runs else f"{'–':>22}")
        print(f"{label:<28}" + "".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="where each mode's store and cache go (default: temp)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel joblib jobs (default 2)")
    parser.add_argument("--only", choices=["sequential", "parallel"], help="run one mode only")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="aead-grid-")).resolve()
    modes = {
        "sequential": [],
        "parallel": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}"],
    }
    results = {}
    for name, launcher in modes.items():
        if args.only in (None, name):
            results[name] = run_grid(workdir / name, launcher, args.overrides)

    print(f"machine       : {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"data          : {os.environ.get('AEAD_DATA_DIR', 'default sources')}")
    for name, result in results.items():
        describe(name if name == "sequential" else f"parallel, {args.jobs} jobs", result)
    stage_table(results)
    if len(results) == 2:
        ratio = results["sequential"]["wall"] / results["parallel"]["wall"]
        print(f"--- speed-up   : {ratio:.2f}x with {args.jobs} jobs (sequential / parallel wall)")
    sys.exit(max(result["code"] for result in results.values()))


if __name__ == "__main__":
    main()
