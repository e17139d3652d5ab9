"""The run's logging thread (Tracker.in_background): its work lands in the run, in order, off
the main thread; its error ends the run FAILED and is raised; a run that fails keeps its own
error and its queued logging, a stopped one drops what is queued; models are logged without
MLflow's checks that cannot fail for aead's models. A real SQLite store."""

from __future__ import annotations

import signal
import threading

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from aead.tracking import lifecycle
from aead.tracking.runs import Tracker


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _runs(uri: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("jobs")
    return client.search_runs([experiment.experiment_id])


def test_background_work_logs_to_the_run_in_order_off_the_main_thread(uri):
    seen = []

    def note(i: int) -> None:
        seen.append((i, threading.current_thread() is threading.main_thread()))
        mlflow.log_text(str(i), f"notes/{i}.txt")  # MLflow's fluent API, in the thread

    with Tracker(uri, "jobs", "working") as tracker:
        for i in range(3):
            tracker.in_background(note, i)
    assert seen == [(0, False), (1, False), (2, False)]
    [run] = _runs(uri)  # the thread resumed this run: it started none of its own
    assert run.info.run_id == tracker.run_id and run.info.status == "FINISHED"
    client = MlflowClient(uri)
    notes = [a.path for a in client.list_artifacts(tracker.run_id, "notes")]
    assert notes == ["notes/0.txt", "notes/1.txt", "notes/2.txt"]


def test_an_error_in_the_logging_thread_fails_the_run_and_is_raised(uri):
    def broken() -> None:
        raise OSError("no space left on device")

    with pytest.raises(OSError, match="no space left"):
        with Tracker(uri, "jobs", "working") as tracker:
            tracker.in_background(broken)
    [run] = _runs(uri)
    assert run.info.status == "FAILED"
    assert run.data.tags["aead.error"] == "OSError: no space left on device"


def _run_with_queued_logging(uri: str, error: BaseException) -> list[str]:
    """A run that raises `error` while the logging thread has one call under way and one
    queued; returns what the thread did."""
    started, release, done = threading.Event(), threading.Event(), []

    def slow() -> None:
        started.set()
        release.wait(10)
        done.append("slow")

    with pytest.raises(type(error)):
        with Tracker(uri, "jobs", "working") as tracker:
            tracker.in_background(slow)
            tracker.in_background(done.append, "queued")
            assert started.wait(30)
            threading.Timer(0.5, release.set).start()  # slow is still running at the exit
            raise error
    return done


def test_a_failing_run_keeps_its_error_and_its_queued_logging(uri):
    assert _run_with_queued_logging(uri, RuntimeError("scoring broke")) == ["slow", "queued"]
    [run] = _runs(uri)
    assert run.info.status == "FAILED"
    assert run.data.tags["aead.error"] == "RuntimeError: scoring broke"


def test_a_stopped_run_finishes_the_call_under_way_and_drops_the_queued_one(uri):
    stop = lifecycle.Interrupted(signal.SIGTERM, "SIGTERM during scoring")
    assert _run_with_queued_logging(uri, stop) == ["slow"]
    [run] = _runs(uri)
    assert run.info.status == "KILLED"
    assert run.data.tags["aead.end_reason"] == "SIGTERM during scoring"


def test_models_are_logged_without_mlflows_requirements_check_and_it_comes_back(uri):
    # aead pins each requirement to the version running here; MLflow's check of them costs a
    # scan of every installed package. Skipped while aead logs a model, back afterwards.
    from mlflow.utils import requirements_utils

    outdated = "numpy==0.0.1"  # a requirement this environment does not meet
    assert requirements_utils._check_requirement_satisfied(outdated) is not None
    seen = []

    def log_model(requirement: str) -> None:
        seen.append(requirements_utils._check_requirement_satisfied(requirement))
        mlflow.log_text(requirement, "model/requirements.txt")

    with Tracker(uri, "jobs", "working") as tracker:
        tracker.log_model_soon(log_model, outdated)
    assert seen == [None]
    assert requirements_utils._check_requirement_satisfied(outdated) is not None
    client = MlflowClient(uri)
    assert [a.path for a in client.list_artifacts(tracker.run_id, "model")] == [
        "model/requirements.txt"
    ]


class _Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def test_a_model_keeps_its_input_example_without_mlflow_reloading_it_to_serve_it(uri, monkeypatch):
    # MLflow reloads a model with an input example and serves the example (for aead's
    # detector: unpickling it whole again, 0.9 CPU-s a run); aead's example is served in
    # tests/test_detector.py instead. Outside aead's logging, MLflow reloads it as before.
    from mlflow.models import utils as model_utils

    reloads = []
    monkeypatch.setattr(model_utils, "_validate_serving_input", lambda **k: reloads.append(k))
    example = np.arange(6.0).reshape(2, 3)
    settings = {"python_model": _Echo(), "input_example": example, "pip_requirements": ["numpy"]}
    with Tracker(uri, "jobs", "working") as tracker:
        tracker.log_model_soon(mlflow.pyfunc.log_model, name="echo", **settings)
    assert reloads == []
    model = mlflow.models.Model.load(f"runs:/{tracker.run_id}/echo")
    np.testing.assert_array_equal(model.load_input_example(), example)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("jobs")  # its artifacts beside the store, as aead made it
    with mlflow.start_run():
        mlflow.pyfunc.log_model(name="echo", **settings)
    assert len(reloads) == 1
