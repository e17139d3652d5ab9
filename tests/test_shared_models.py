"""The tracking server as a model store shared by workers with no common disk
(aead.store.shared), on a real MLflow store: the same client calls go to a server's REST API
in production (tests/test_cluster.py runs them against `mlflow server`)."""

from __future__ import annotations

import threading

import pytest
from mlflow import MlflowClient

from aead.store import shared as shared_models
from aead.store.shared import SharedModels

KEY = "ab" * 32


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    # artifacts in the test's folder (a SQLite store's default root is ./mlruns)
    experiment = client.create_experiment("jobs", (tmp_path / "artifacts").as_uri())
    yield uri, client, experiment
    for run in client.search_runs([experiment], "attributes.status = 'RUNNING'"):
        client.set_terminated(run.info.run_id, "FINISHED")  # the workers' runs end with the test


def _worker(store, poll_s=0.1) -> SharedModels:
    uri, client, experiment = store
    return SharedModels(uri, client.create_run(experiment).info.run_id, poll_s=poll_s)


def _entry(folder, text="weights"):
    folder.mkdir(parents=True)
    (folder / "model.keras").write_text(text)
    (folder / "meta.json").write_text("{}")
    return folder


def test_enabled_only_for_a_server_unless_forced():
    assert shared_models.enabled("auto", "http://tracking:5000")
    assert shared_models.enabled(None, "https://user:pw@tracking")
    assert not shared_models.enabled("auto", "sqlite:///mlruns/mlflow.db")
    assert shared_models.enabled(True, "sqlite:///x.db")
    assert not shared_models.enabled(False, "http://tracking:5000")
    with pytest.raises(ValueError, match="cache.shared"):
        shared_models.enabled("sometimes", "http://tracking:5000")


def test_one_worker_trains_the_other_waits_then_finds_its_upload(store, tmp_path):
    first, second = _worker(store), _worker(store)
    waited_for, got, waiting = [], {}, threading.Event()

    def on_wait(owner):
        waited_for.append(owner)
        waiting.set()

    with first.claim(KEY) as holder:
        assert holder is None  # nothing published yet: first trains

        def claim_second():
            with second.claim(KEY, on_wait=on_wait) as found:
                got["found"] = found

        thread = threading.Thread(target=claim_second)
        thread.start()
        assert waiting.wait(timeout=30), "the second worker never saw the lock"
        assert waited_for == [first.run_id]  # it waits, and names the trainer
        assert thread.is_alive() and "found" not in got  # and holds no claim yet
        first.upload(KEY, _entry(tmp_path / "trained"))
    thread.join(timeout=30)
    assert got["found"] == first.run_id
    folder = second.download(KEY, got["found"], tmp_path / "downloaded")
    assert (folder / "model.keras").read_text() == "weights"
    # the lock is gone (deleted) once its holder is done
    _, client, _ = store
    lock = client.get_experiment_by_name(f"{shared_models.LOCK_PREFIX}-{KEY[:24]}-0")
    assert lock.lifecycle_stage == "deleted"


def test_a_lock_left_by_a_failed_trainer_is_taken_over(store):
    _, client, _ = store
    failed, next_worker = _worker(store), _worker(store)
    with pytest.raises(RuntimeError):
        with failed.claim(KEY) as holder:
            assert holder is None
            raise RuntimeError("training diverged")
    client.set_terminated(failed.run_id, "FAILED")
    with next_worker.claim(KEY) as holder:
        assert holder is None  # nobody published: this one trains, under the next attempt
        assert client.get_experiment_by_name(f"{shared_models.LOCK_PREFIX}-{KEY[:24]}-1")


def test_a_lock_whose_holder_died_is_taken_over(store):
    """A holder killed before it could delete its lock: its run is no longer RUNNING."""
    _, client, _ = store
    dead, next_worker = _worker(store), _worker(store)
    client.create_experiment(
        f"{shared_models.LOCK_PREFIX}-{KEY[:24]}-0",
        tags={shared_models.LOCK_OWNER_TAG: dead.run_id},
    )
    client.set_terminated(dead.run_id, "KILLED")
    waited = []
    with next_worker.claim(KEY, on_wait=waited.append) as holder:
        assert holder is None and waited == []


def test_only_a_complete_upload_is_found(store, tmp_path):
    """The tag that makes an entry findable is set after its files are uploaded."""
    worker = _worker(store)
    assert worker.find(KEY) is None
    worker.upload(KEY, _entry(tmp_path / "entry"))
    assert worker.find(KEY) == worker.run_id
    assert worker.find("cd" * 32) is None
