"""Runs that say they are alive: a run's heartbeat is a tag (`aead.heartbeat`, Unix seconds)
that a thread renews every `tracking.heartbeat_s` while the run works. A process killed hard
(SIGKILL, the OOM killer, a pre-empted node) stops renewing it, so a RUNNING run whose
heartbeat is older than MISSED intervals is lost: `end_lost_runs` ends it KILLED, with
`aead.end_reason` "lost: no heartbeat since <time>". The next job of a sweep, the sweep's end
and `aead-end-lost-runs` (python -m aead.tracking.heartbeat) call it; a training lock on a tracking
server is a lease on its holder's heartbeat (aead.store.shared).

Runs made before heartbeats existed carry no heartbeat tag and are never judged lost.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.entities import Run

from aead.tracking.retry import retrying

HEARTBEAT_TAG = "aead.heartbeat"
INTERVAL_TAG = "aead.heartbeat_s"
MISSED = 3  # intervals without a heartbeat after which a run is lost
DEFAULT_INTERVAL_S = 30.0

log = logging.getLogger("aead")


class Heartbeat:
    """Renews the run's heartbeat tag every interval_s seconds, on a daemon thread, until
    stop(); a failed renewal is retried at the next beat."""

    def __init__(self, tracking_uri: str, run_id: str, interval_s: float):
        if not interval_s > 0:
            raise ValueError(f"tracking.heartbeat_s must be > 0, got {interval_s}")
        self.client = MlflowClient(tracking_uri)
        self.run_id, self.interval_s = run_id, float(interval_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="aead-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        retrying(self.client.set_tag, self.run_id, INTERVAL_TAG, f"{self.interval_s:g}")
        self.beat()
        self._thread.start()
        return self

    def beat(self) -> None:
        retrying(self.client.set_tag, self.run_id, HEARTBEAT_TAG, f"{time.time():.3f}")

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except Exception as exc:  # the server is away: the next beat tries again
                log.debug("heartbeat not renewed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 5)


def last_beat(run: Run) -> float | None:
    """The run's last heartbeat (Unix seconds), or None for a run without heartbeats."""
    value = run.data.tags.get(HEARTBEAT_TAG)
    return float(value) if value else None


def lost_since(run: Run, now: float | None = None) -> float | None:
    """When a RUNNING run's heartbeat stopped, if it stopped more than MISSED intervals ago;
    else None (alive, finished, or a run without heartbeats)."""
    beat = last_beat(run)
    if run.info.status != "RUNNING" or beat is None:
        return None
    interval = float(run.data.tags.get(INTERVAL_TAG) or DEFAULT_INTERVAL_S)
    now = time.time() if now is None else now
    return beat if now - beat > MISSED * interval else None


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def end_lost_runs(
    tracking_uri: str, experiment_ids: list[str] | None = None, now: float | None = None
) -> list[str]:
    """Ends every lost run (KILLED, `aead.end_reason` says since when) in the experiments
    (default: all); returns their run ids."""
    client = MlflowClient(tracking_uri)
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in retrying(client.search_experiments)]
    ended = []
    for start in range(0, len(experiment_ids), 100):  # the REST API takes 100 a call
        running = retrying(
            client.search_runs,
            experiment_ids[start : start + 100],
            filter_string="attributes.status = 'RUNNING'",
            max_results=1000,
        )
        for run in running:
            since = lost_since(run, now)
            if since is None:
                continue
            reason = f"lost: no heartbeat since {_when(since)}"
            retrying(client.set_tag, run.info.run_id, "aead.end_reason", reason)
            retrying(client.set_terminated, run.info.run_id, "KILLED")
            log.info("run %s (%s) ended KILLED: %s", run.info.run_id, run.info.run_name, reason)
            ended.append(run.info.run_id)
    return ended


def main(argv: list[str] | None = None) -> None:
    """aead-end-lost-runs: end the runs that a dead process left RUNNING, in any store."""
    import os

    from aead.tracking.secrets import redact

    parser = argparse.ArgumentParser(
        prog="aead-end-lost-runs",
        description="End KILLED the RUNNING runs whose heartbeat stopped "
        f"(more than {MISSED} heartbeat intervals ago).",
    )
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlruns/mlflow.db",
        help="the store (default: $MLFLOW_TRACKING_URI, else ./mlruns)",
    )
    parser.add_argument("--experiment", action="append", help="only this experiment (repeatable)")
    args = parser.parse_args(argv)
    ids = None
    if args.experiment:
        client = MlflowClient(args.tracking_uri)
        found = {name: client.get_experiment_by_name(name) for name in args.experiment}
        missing = [name for name, e in found.items() if e is None]
        if missing:
            parser.error(f"no experiment {', '.join(missing)} in {redact(args.tracking_uri)}")
        ids = [e.experiment_id for e in found.values()]
    ended = end_lost_runs(args.tracking_uri, ids)
    print(f"[aead] {len(ended)} lost run(s) ended KILLED in {redact(args.tracking_uri)}")


if __name__ == "__main__":
    main()
