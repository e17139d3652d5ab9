"""Time the one-class benchmark from its MLflow runs, and print the figures: per data set and
detector cell, the runs, how many trained their model (the others reused it from the cache),
the seconds per trained model (training stage) and per run (the whole job), and the
benchmark's wall time (first run's start to last run's end) per data set.

    python scripts/benchmark_one_class.py [--tracking-uri URI] [--experiment one_class_benchmark]

Run the benchmark first (it resumes: a finished job is skipped, a trained model reused):
    python -m aead.run -m hydra/launcher=joblib hydra.launcher.n_jobs=2 \
        experiment=one_class_baselines
"""

from __future__ import annotations

import argparse
import os
import platform

import mlflow
import pandas as pd

from aead.report.one_class import DATASET, OVERRIDES, detector_cell, is_benchmark
from aead.tracking.runs import resolve_tracking_uri


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--experiment", default="one_class_benchmark")
    args = parser.parse_args(argv)
    uri = resolve_tracking_uri(".", args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(
        experiment_names=[args.experiment],
        filter_string="attributes.status = 'FINISHED'",
        max_results=100_000,
    )
    if runs.empty or not is_benchmark(runs):
        raise SystemExit(f"no finished one-class benchmark runs in {args.experiment} at {uri}")
    runs["cell"] = [
        detector_cell(overrides) or f"model={model}"
        for overrides, model in zip(runs[OVERRIDES], runs["params.model.name"], strict=True)
    ]
    runs["dataset"] = runs[DATASET]
    runs["trained"] = runs["tags.aead.model_source"] == "trained"
    print(f"[benchmark] {uri}, experiment {args.experiment}; {platform.processor() or ''} "
          f"{os.cpu_count()} cores")  # fmt: skip
    rows = []
    for (dataset, cell), group in runs.groupby(["dataset", "cell"], sort=True):
        trained = group[group["trained"]]
        rows.append(
            {
                "dataset": dataset,
                "cell": cell,
                "runs": len(group),
                "seeds": group["params.seed"].nunique(),
                "trained": len(trained),
                "s/trained model": trained["metrics.time_training_s"].mean(),
                "s/run": group["metrics.duration_s"].mean(),
            }
        )
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    for dataset, group in runs.groupby("dataset"):
        wall = (group["end_time"].max() - group["start_time"].min()).total_seconds()
        busy = group["metrics.duration_s"].sum()
        print(
            f"[benchmark] {dataset}: {len(group)} runs, first start to last end {wall / 60:.1f} "
            f"min, {busy / 60:.1f} min of jobs summed"
        )


if __name__ == "__main__":
    main()
