"""The Ray stop under load: the test suite's kill-and-stop Ray sweep
(tests/test_cluster.py, `kill_and_stop_ray_sweep`: job 0's worker SIGKILLed mid-training,
then SIGTERM to the sweep) repeated N times against one local Ray head and one `mlflow
server`, with one CPU-burning process per core beside it. Prints one line per round and how
many rounds left no run RUNNING; exits 1 if any round failed.

    AEAD_DATA_DIR=../shared/datasets PYTHONPATH=. python scripts/stress_ray_stop.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient

from tests import servers
from tests.test_cluster import kill_and_stop_ray_sweep


def burn() -> None:
    while True:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    failures = 0
    burners = [multiprocessing.Process(target=burn, daemon=True) for _ in range(args.burners)]
    for burner in burners:
        burner.start()
    print(f"{args.burners} CPU-burning process(es) beside the sweeps", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="aead-stress-") as folder:
            tmp = Path(folder)
            with servers.ray_head(num_cpus=2) as address, servers.mlflow_server(tmp) as base:
                env = {"RAY_ADDRESS": address, "MLFLOW_TRACKING_URI": base, **servers.RAY_ENV}
                client = MlflowClient(base)
                for round_ in range(1, args.rounds + 1):
                    started = time.monotonic()
                    try:
                        kill_and_stop_ray_sweep(tmp, env, client, name=f"stop-{round_}")
                        outcome = "ok: killed job lost, the other KILLED by SIGTERM"
                    except AssertionError as exc:
                        failures += 1
                        outcome = f"FAILED: {exc}"
                    took = time.monotonic() - started
                    print(f"round {round_:2d}/{args.rounds}: {outcome} ({took:.0f} s)", flush=True)
    finally:
        for burner in burners:
            burner.terminate()
    print(f"{args.rounds - failures}/{args.rounds} rounds left no run RUNNING", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
