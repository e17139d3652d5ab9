"""What aead costs beyond the training it does: the same training (conv AE, BCE, 10 epochs,
5,000 MNIST images: 4,500 to train, 500 to validate, batch 128; then every test image of
MNIST and Fashion-MNIST scored) as a plain Keras script and as an aead run, each a whole
process, in one invocation, alternating (`--rounds`, the fastest of each side counts), into a
store made beforehand (its one-time creation timed on its own). Prints both wall times, their
ratio, each round's ratio (plain and aead back to back: the machine's drift between rounds
left out) and their median, both sides' CPU time (user + system of every thread, the median
of the rounds: it moves less than wall time when other work shares the machine), aead's time
per stage (the run's logged `time_<stage>_s`), and the wall time of a run that reuses the
model from the cache (a threshold variant: the case that dominates big sweeps).

    AEAD_DATA_DIR=../shared/datasets python scripts/benchmark_overhead.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EPOCHS, BATCH, TRAIN_LIMIT = 10, 128, 5000

# The plain script: what a researcher would write by hand for the same job, with the same
# model builder and IDX reader (the point is what aead adds around them, not a different net).
PLAIN = textwrap.dedent(
    f"""
    import numpy as np, keras
    from sklearn.metrics import roc_auc_score
    from aead.data import load_dataset
    from aead.detectors.models import build_model, model_settings
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    train = load_dataset("mnist", "train").images  # uint8, as aead keeps images
    images = train[rng.choice(len(train), {TRAIN_LIMIT}, replace=False)].astype("float32") / 255
    x_train, x_val = images[{TRAIN_LIMIT // 10}:], images[:{TRAIN_LIMIT // 10}]
    model = build_model(model_settings("conv"))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    model.fit(x_train, x_train, validation_data=(x_val, x_val), epochs={EPOCHS},
              batch_size={BATCH}, shuffle=True, verbose=0)
    normal = load_dataset("mnist", "test").images
    anomaly = load_dataset("fashion_mnist", "test").images
    x_test = np.concatenate([normal, anomaly]).astype("float32") / 255
    labels = np.r_[np.zeros(len(normal)), np.ones(len(anomaly))]
    reconstructions = model.predict(x_test, batch_size={BATCH}, verbose=0)
    errors = keras.losses.binary_crossentropy(x_test, reconstructions).numpy().mean(axis=(1, 2))
    print("plain ROC-AUC", round(float(roc_auc_score(labels, errors)), 4))
    """
)


def timed(command: list[str], env: dict, log: Path, cpu: list[float] | None = None) -> float:
    """The process's wall time; its CPU time (user + system, every thread) appended to cpu."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:4])} failed (exit {done.returncode}); see {log}")
    if cpu is not None:
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return wall


def _listed(values: list[float], digits: int = 1) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="store, cache and logs (default: a temporary folder)")
    parser.add_argument("--rounds", type=int, default=2, help="plain and aead runs, alternating")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="aead-overhead-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    store = f"sqlite:///{work / 'mlruns' / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}

    def aead(cache: str) -> list[str]:
        return [sys.executable, "-m", "aead.run", f"trainer.epochs={EPOCHS}",
                f"trainer.batch_size={BATCH}", "trainer.patience=0", "trainer.verbose=0",
                f"data.train_limit={TRAIN_LIMIT}", "experiment_name=overhead",
                f"cache.dir={work / cache}", f"hydra.run.dir={work / 'hydra'}"]  # fmt: skip

    # A project's store is created once, by its first run; every later run finds it. It is
    # made (and timed) here, so that both aead runs below are timed as those later runs.
    create = f"from aead.tracking.runs import prepare_store; prepare_store({store!r})"
    store_wall = timed([sys.executable, "-c", create], env, work / "store.log")
    plain_walls, aead_walls, plain_cpus, aead_cpus = [], [], [], []
    for round_ in range(args.rounds):  # alternating: the machine's speed drifts
        plain = [sys.executable, "-c", PLAIN]
        plain_walls.append(timed(plain, env, work / "plain.log", plain_cpus))
        aead_walls.append(timed(aead(f"cache{round_}"), env, work / "aead.log", aead_cpus))
    reuse_wall = timed([*aead(f"cache{args.rounds - 1}"), "threshold=percentile"], env,
                       work / "reuse.log")  # fmt: skip

    import mlflow

    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=["overhead"], order_by=["attributes.start_time"])
    trained = runs[runs["tags.aead.model_source"] == "trained"]
    reused = runs[runs["tags.aead.model_source"] == "reused"]
    assert len(trained) == args.rounds and len(reused) == 1, runs["tags.aead.model_source"]
    fastest = trained.iloc[min(range(args.rounds), key=aead_walls.__getitem__)]
    reused = reused.iloc[0]
    plain_wall, aead_wall = min(plain_walls), min(aead_walls)
    print(f"machine        : {os.cpu_count()} CPUs; work folder {work}")
    print(
        f"store creation : {store_wall:6.1f} s  (whole process; once per store, by its first run)"
    )
    plain_auc = (work / "plain.log").read_text().strip().splitlines()[-1]
    print(f"plain Keras    : {plain_wall:6.1f} s  (whole process, fastest of "
          f"{_listed(plain_walls)}; {plain_auc})")  # fmt: skip
    aead_auc = f"ROC-AUC {fastest['metrics.roc_auc']:.4f}"
    print(f"aead run       : {aead_wall:6.1f} s  (whole process, fastest of "
          f"{_listed(aead_walls)}; {aead_auc})")  # fmt: skip
    print(f"ratio          : {aead_wall / plain_wall:.2f}x  (aead / plain, fastest of each)")
    # each round's pair ran back to back, so its ratio leaves out the machine's drift
    paired = sorted(a / p for a, p in zip(aead_walls, plain_walls, strict=True))
    print(f"paired ratios  : {_listed(paired, 2)}; median {statistics.median(paired):.2f}x")
    # CPU time moves less than wall time where other machines' work steals this one's cores
    plain_cpu, aead_cpu = statistics.median(plain_cpus), statistics.median(aead_cpus)
    print(f"CPU time       : plain {plain_cpu:.1f} s ({_listed(plain_cpus)}), "
          f"aead {aead_cpu:.1f} s ({_listed(aead_cpus)}); "
          f"ratio of medians {aead_cpu / plain_cpu:.2f}x")  # fmt: skip
    print(f"reusing variant: {reuse_wall:6.1f} s  (threshold=percentile, model from the cache)")
    stages = sorted(c for c in runs if c.startswith("metrics.time_") and c.endswith("_s"))
    print(f"{'aead stage':<24}{'trained run':>14}{'reusing run':>14}")
    for column in stages:
        name = column.removeprefix("metrics.time_").removesuffix("_s").replace("_", " ")
        print(f"{name:<24}{fastest[column]:>12.1f} s{reused[column]:>12.1f} s")
    print(f"{'in-process (duration_s)':<24}{fastest['metrics.duration_s']:>12.1f} s"
          f"{reused['metrics.duration_s']:>12.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
