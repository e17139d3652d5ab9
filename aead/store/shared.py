"""Train once, score many across machines: the tracking server is where workers that share no
disk find each other's trained models, with the local cache (aead.store.cache) as the fast path.

- A worker that trains a model uploads its cache entry as artifacts of its run
  (`aead_cache/<key>/`) and then tags the run `aead.cache_entry=<key>`; the tag is set last,
  so a run that carries it holds a complete entry. Others find it by that tag and download it.
- Two workers that need the same missing model at once must not both train it. The server's
  one atomic operation that clients can use as a lock is creating an experiment (names are
  unique): the worker that creates `aead-training-lock-<key>-<attempt>` trains; the others
  wait until the model appears. The lock is deleted when its holder is done; a holder whose
  run ended without publishing (failed, killed) leaves a stale lock, and the next attempt
  number is tried. The lock is a lease on its holder's heartbeat (aead.heartbeat): a holder
  killed with SIGKILL stops renewing it, and after MISSED heartbeat intervals the waiting
  worker takes over under the next attempt number and trains.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException

from aead.tracking import heartbeat
from aead.tracking.retry import retrying

log = logging.getLogger("aead")

ENTRY_TAG = "aead.cache_entry"
LOCK_OWNER_TAG = "aead.lock_owner_run"
LOCK_PREFIX = "aead-training-lock"
ARTIFACT_DIR = "aead_cache"


def enabled(setting, tracking_uri: str) -> bool:
    """cache.shared: auto = on when runs go to a tracking server (the only store every worker
    of a cluster reaches); true / false force it."""
    if setting in (None, "auto"):
        return tracking_uri.startswith(("http://", "https://"))
    if isinstance(setting, bool):
        return setting
    raise ValueError(f"cache.shared must be auto, true or false, got {setting!r}")


class SharedModels:
    def __init__(self, tracking_uri: str, run_id: str, poll_s: float = 3.0):
        self.client = MlflowClient(tracking_uri)
        self.run_id = run_id
        self.poll_s = poll_s

    def find(self, key: str) -> str | None:
        """The id of a run holding a complete entry for key, in any experiment."""
        experiments = retrying(self.client.search_experiments, view_type=ViewType.ACTIVE_ONLY)
        ids = [e.experiment_id for e in experiments if not e.name.startswith(LOCK_PREFIX)]
        for start in range(0, len(ids), 100):  # the REST API takes 100 experiments a call
            runs = retrying(
                self.client.search_runs,
                ids[start : start + 100],
                filter_string=f"tags.`{ENTRY_TAG}` = '{key}'",
                max_results=1,
            )
            if runs:
                return runs[0].info.run_id
        return None

    def download(self, key: str, run_id: str, into: Path) -> Path:
        """The entry's files, downloaded into the folder `into`."""
        into.mkdir(parents=True, exist_ok=True)
        path = f"{ARTIFACT_DIR}/{key[:24]}"
        return Path(retrying(self.client.download_artifacts, run_id, path, str(into)))

    def upload(self, key: str, folder: Path) -> None:
        retrying(self.client.log_artifacts, self.run_id, str(folder), f"{ARTIFACT_DIR}/{key[:24]}")
        retrying(self.client.set_tag, self.run_id, ENTRY_TAG, key)

    def _alive(self, run_id: str | None) -> bool:
        """Whether the lock's holder still holds it: its run is RUNNING and its heartbeat
        renews the lease (a holder killed hard stops renewing it, and is taken over)."""
        if not run_id:
            return False
        try:
            run = retrying(self.client.get_run, run_id)
        except MlflowException:
            return False
        return run.info.status == "RUNNING" and heartbeat.lost_since(run) is None

    @contextmanager
    def claim(self, key: str, on_wait: Callable[[str], None] | None = None) -> Iterator[str | None]:
        """Yields the id of a run that holds the model (download it), or None: this worker
        holds the key's lock and trains (then uploads) while the block runs."""
        attempt, announced = 0, False
        while True:
            found = self.find(key)
            if found is not None:
                yield found
                return
            name = f"{LOCK_PREFIX}-{key[:24]}-{attempt}"
            try:
                lock_id = retrying(
                    self.client.create_experiment, name, tags={LOCK_OWNER_TAG: self.run_id}
                )
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                holder = retrying(self.client.get_experiment_by_name, name)
                owner = holder.tags.get(LOCK_OWNER_TAG) if holder else None
                released = holder is None or holder.lifecycle_stage == "deleted"
                if released or not self._alive(owner):
                    if self.find(key) is None:  # released without a model, or stale
                        attempt += 1
                    continue
                if not announced and on_wait:
                    on_wait(owner)
                    announced = True
                time.sleep(self.poll_s)
                continue
            try:
                yield None
            finally:
                retrying(self.client.delete_experiment, lock_id)
            return
