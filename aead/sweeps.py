"""Sweep bookkeeping on Hydra's side: each job leaves a small record of how it ended in its
output folder, and a Hydra callback (configured in conf/config.yaml) prepares the tracking
store before any job starts and, at the end, prints one line per failed job.

Kept apart from run.py so that the callback, which Hydra instantiates in the launching
process, stays small; both are the only modules that know Hydra.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from aead.tracking.secrets import redact

JOB_RECORD = "aead_job.json"
_failed: list[dict] = []  # failed jobs of the multirun that just ended in this process


def write_job_record(output_dir: str | Path, **record) -> None:
    """How one job ended: status (FINISHED, SKIPPED, FAILED), overrides, reason, run id."""
    path = Path(output_dir) / JOB_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**record, "time": time.time()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(redact(json.dumps(record, indent=2)))
    tmp.replace(path)


def read_job_records(sweep_dir: str | Path, since: float = 0.0) -> list[dict]:
    records = []
    for path in sorted(Path(sweep_dir).glob(f"*/{JOB_RECORD}")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("time", 0) >= since:
            records.append(record)
    return sorted(records, key=lambda r: r.get("job", 0))


def failed_jobs() -> list[dict]:
    return list(_failed)


def resume_command(sweep_dir: str) -> str:
    """The command line that ran this multirun, with its sweep folder pinned."""
    args = [a for a in sys.argv[1:] if not a.startswith("hydra.sweep.dir=")]
    return shlex.join(["python", "-m", "aead.run", *args, f"hydra.sweep.dir={sweep_dir}"])


class SweepCallback(Callback):
    """Prepares the tracking store once before the jobs (parallel jobs must not race to create
    its schema), and summarises failed jobs after the last one."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from hydra.utils import get_original_cwd  # noqa: F401  (Hydra is initialised here)

        from aead.tracking.runs import prepare_store, resolve_tracking_uri

        self.started = time.time()
        _failed.clear()
        uri = resolve_tracking_uri(Path.cwd(), config.get("tracking", {}).get("uri"))
        prepare_store(uri, config.get("experiment_name"))
        sweep_dir = str(config.hydra.sweep.dir)
        print(
            f"[aead] sweep {Path(sweep_dir).name} -> {redact(uri)}\n"
            f"[aead] to resume it after an interruption: {redact(resume_command(sweep_dir))}",
            flush=True,
        )

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from mlflow import MlflowClient

        from aead.tracking.heartbeat import end_lost_runs
        from aead.tracking.runs import resolve_tracking_uri

        # runs whose process died hard (SIGKILL) and whose heartbeat has stopped: end them
        uri = resolve_tracking_uri(Path.cwd(), config.get("tracking", {}).get("uri"))
        experiment = MlflowClient(uri).get_experiment_by_name(config.get("experiment_name"))
        if experiment is not None:
            end_lost_runs(uri, [experiment.experiment_id])
        sweep_dir = str(config.hydra.sweep.dir)
        started = getattr(self, "started", 0.0)
        by_job = {r["job"]: r for r in self._tracked_records(config, sweep_dir, started)}
        by_job.update({r["job"]: r for r in read_job_records(sweep_dir, since=started)})
        records = [by_job[job] for job in sorted(by_job)]
        counts: dict[str, int] = {}
        for record in records:
            counts[record["status"]] = counts.get(record["status"], 0) + 1
        failed = [r for r in records if r["status"] not in ("FINISHED", "SKIPPED")]
        _failed.extend(failed)
        summary = ", ".join(f"{n} {status.lower()}" for status, n in sorted(counts.items()))
        print(f"[aead] sweep {Path(sweep_dir).name}: {summary or 'no job records'}", flush=True)
        if failed:
            print(f"[aead] {len(failed)} failed job(s):", flush=True)
            for record in failed:
                overrides = " ".join(record.get("overrides") or []) or "(no overrides)"
                print(f"[aead]   #{record.get('job')} {overrides}: {record['reason']}", flush=True)
            print(f"[aead] re-run them: {redact(resume_command(sweep_dir))}", flush=True)

    @staticmethod
    def _tracked_records(config: DictConfig, sweep_dir: str, since: float) -> list[dict]:
        """Job records from the tracking store, for jobs that ran on other machines."""
        from aead.tracking.runs import resolve_tracking_uri, sweep_job_records

        try:
            uri = resolve_tracking_uri(Path.cwd(), config.get("tracking", {}).get("uri"))
            sweep_id = Path(sweep_dir).name
            return sweep_job_records(uri, config.get("experiment_name"), sweep_id, since)
        except Exception as exc:  # the summary must not hide the sweep's own outcome
            print(f"[aead] could not read the sweep's runs back: {exc}", flush=True)
            return []
