"""How much sweep traffic a tracking server takes: N client processes each log aead-shaped
runs to the server as fast as they can, for N = 1, 2, 4, ...; prints runs/s, requests/s and
request latency per N. Where runs/s stops growing with N, the server (or its database) is
saturated: that is the most jobs per second a sweep can finish, however many workers it has.

A simulated run makes the calls of a trained one-class benchmark job, in its order:
create, tags, params, 3 dataset inputs, the shared-model lookup and lock, one metrics batch
per epoch, small artifacts (plots, scores.csv, the model's cache entry), final metrics, end.
No training. The HTTP requests the clients send are counted as they go out (every
requests.Session.send), so the requests per run and requests/s printed are counted, not
assumed.

    mlflow server --backend-store-uri postgresql://... --artifacts-destination ... &
    python scripts/benchmark_tracking.py --tracking-uri http://127.0.0.1:5000
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path

EXPERIMENT = "aead-tracking-benchmark"


def count_requests() -> list[int]:
    """Counts every HTTP request this process sends from now on; returns the counter."""
    import requests

    counter = [0]
    send = requests.Session.send

    def counted(self, request, **kwargs):
        counter[0] += 1
        return send(self, request, **kwargs)

    requests.Session.send = counted
    return counter


def one_run(client, experiment_id: str, epochs: int, artifacts: list[Path], latencies: list):
    """The calls of one trained job, in its order."""
    from mlflow.entities import Dataset, DatasetInput, Metric, Param, RunTag

    def timed(call, *args, **kwargs):
        started = time.perf_counter()
        result = call(*args, **kwargs)
        latencies.append(time.perf_counter() - started)
        return result

    timed(client.get_experiment_by_name, EXPERIMENT)
    run = timed(client.create_run, experiment_id, tags={"aead.model": "conv"}).info.run_id
    tags = [RunTag(f"aead.tag{i}", "x") for i in range(12)]
    timed(client.log_batch, run, tags=tags)
    params = [Param(f"group{i // 10}.key{i}", str(i)) for i in range(60)]
    timed(client.log_batch, run, params=params)
    for name in ("train", "validation", "test"):  # mlflow.log_input
        dataset = Dataset(name, os.urandom(8).hex(), "local", '{"uri": "idx"}')
        timed(client.log_inputs, run, [DatasetInput(dataset, [])])
    # the model: looked for on the server, then trained under a lock (aead.store.shared)
    timed(client.search_experiments)
    timed(client.search_runs, [experiment_id], "tags.`aead.cache_entry` = 'none'")
    lock = timed(client.create_experiment, f"{EXPERIMENT}-lock-{os.urandom(8).hex()}")
    now = int(time.time() * 1000)
    for epoch in range(1, epochs + 1):
        metrics = [Metric(k, 0.1, now, epoch) for k in ("train_loss", "val_loss")]
        timed(client.log_batch, run, metrics=metrics)
    for path in artifacts:
        timed(client.log_artifact, run, str(path), "plots")
    timed(client.set_tag, run, "aead.cache_entry", "none")
    timed(client.delete_experiment, lock)
    timed(client.search_experiments)
    timed(client.get_run, run)
    final = [Metric(f"metric{i}", 0.5, now, 0) for i in range(25)]
    timed(client.log_batch, run, metrics=final)
    timed(client.set_terminated, run, "FINISHED")


def client_process(uri, experiment_id, seconds, epochs, artifacts, queue) -> None:
    from mlflow import MlflowClient

    sent = count_requests()
    client, latencies, runs = MlflowClient(uri), [], 0
    started = time.monotonic()
    while time.monotonic() < started + seconds:
        one_run(client, experiment_id, epochs, artifacts, latencies)
        runs += 1
    queue.put((runs / (time.monotonic() - started), sent[0], latencies, runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    parser.add_argument("--clients", default="1,2,4,8,16,32", help="client processes per step")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each step")
    parser.add_argument("--epochs", type=int, default=24, help="metric batches per run")
    parser.add_argument("--artifacts", type=int, default=9, help="files logged per run")
    parser.add_argument("--artifact-kb", type=int, default=40)
    args = parser.parse_args()
    if not args.tracking_uri or not args.tracking_uri.startswith(("http://", "https://")):
        parser.error("give the server's address: --tracking-uri http://HOST:PORT")

    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # inherited by the clients
    from mlflow import MlflowClient

    client = MlflowClient(args.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
    folder = Path(tempfile.mkdtemp())
    artifacts = []
    for i in range(args.artifacts):
        artifacts.append(folder / f"artifact{i}.png")
        artifacts[-1].write_bytes(os.urandom(args.artifact_kb * 1024))

    print(f"server {args.tracking_uri}; a run: {args.epochs} metric batches, {args.artifacts} "
          f"artifacts of {args.artifact_kb} KB; {args.seconds:.0f} s per step; "
          f"{os.cpu_count()} CPU cores here")  # fmt: skip
    header = ("clients", "runs/s", "requests/s", "req/run", "p50 ms", "p95 ms")
    print(f"{header[0]:>7} {header[1]:>7} {header[2]:>10} {header[3]:>7} {header[4]:>7} "
          f"{header[5]:>7}")  # fmt: skip
    for n in (int(c) for c in args.clients.split(",")):
        queue: mp.Queue = mp.Queue()
        work = (args.tracking_uri, experiment_id, args.seconds, args.epochs, artifacts, queue)
        processes = [mp.Process(target=client_process, args=work) for _ in range(n)]
        for process in processes:
            process.start()
        results = [queue.get() for _ in processes]
        for process in processes:
            process.join()
        # the processes run side by side (each timed from its first request, after imports)
        runs_per_s = sum(r[0] for r in results)
        per_run = sum(r[1] for r in results) / sum(r[3] for r in results)  # counted requests
        requests_per_s = runs_per_s * per_run
        latencies = sorted(x for r in results for x in r[2])
        p50 = statistics.median(latencies) * 1000
        p95 = latencies[int(0.95 * (len(latencies) - 1))] * 1000
        print(f"{n:>7} {runs_per_s:>7.2f} {requests_per_s:>10.1f} {per_run:>7.1f} {p50:>7.1f} "
              f"{p95:>7.1f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
