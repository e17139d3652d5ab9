"""How a job ends: SIGINT / SIGTERM become an exception that unwinds the run cleanly, and the
current stage (data, training epoch N, scoring, logging) is tracked so that the end says where.

No TensorFlow or MLflow here: the tracker registers what must happen to its run on a forced
exit, and this module only knows callables.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# After a signal the exception normally unwinds in well under a second; if the main thread is
# stuck in a long native call, a watchdog ends the run itself and exits before this many seconds.
FORCE_EXIT_AFTER_S = 7.0
# A process that launched worker processes (joblib) passes the signal on and gives them this
# long to end their own runs before it stops them.
CHILDREN_GRACE_S = 6.0
# The same signal twice within this many seconds is one event delivered twice (to the whole
# process group by the terminal or `timeout`, and again by the parent), not a user insisting.
DUPLICATE_WITHIN_S = 2.0

_stage = {"name": "start-up", "epoch": None, "since": time.monotonic()}
_stage_seconds: dict[str, float] = {}
_on_force_exit: list[Callable[[str], None]] = []
_received: dict[str, object] = {}
_critical = {"depth": 0, "pending": None}
# The process that parsed the command line; launchers may run jobs in other processes.
LAUNCHER_PID_VAR = "AEAD_LAUNCHER_PID"


def mark_launcher() -> None:
    os.environ[LAUNCHER_PID_VAR] = str(os.getpid())  # inherited by worker processes


def in_worker_process() -> bool:
    return os.environ.get(LAUNCHER_PID_VAR, str(os.getpid())) != str(os.getpid())


def _active_dir(launcher_pid: str) -> Path:
    return Path(tempfile.gettempdir()) / "aead-active-runs" / launcher_pid


@contextmanager
def run_active() -> Iterator[None]:
    """Marks that this worker process has a run open, so that the launching process, when
    stopped, waits for the run to be closed rather than for the worker to exit."""
    launcher = os.environ.get(LAUNCHER_PID_VAR)
    if not in_worker_process() or launcher is None:
        yield
        return
    marker = _active_dir(launcher) / str(os.getpid())
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    try:
        yield
    finally:
        marker.unlink(missing_ok=True)


class Interrupted(KeyboardInterrupt):
    """A job stopped by a signal. A KeyboardInterrupt, so code that is not ours (Hydra, joblib)
    treats it as Ctrl-C: it propagates instead of being recorded as one failed job."""

    def __init__(self, signum: int, reason: str):
        super().__init__(reason)
        self.signum = signum
        self.reason = reason

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the message says in which epoch and what to do."""


def interrupted() -> bool:
    """True once this process has received SIGINT or SIGTERM."""
    return bool(_received)


def as_interrupted(exc: KeyboardInterrupt) -> Interrupted:
    """The Interrupted that a library re-raised as a plain KeyboardInterrupt (Ray does), from
    the signal this process received; SIGINT (Ctrl-C) when none was recorded."""
    if isinstance(exc, Interrupted):
        return exc
    if _received:
        return Interrupted(int(_received["signum"]), str(_received["reason"]))
    return Interrupted(signal.SIGINT, end_reason(signal.SIGINT))


def set_stage(name: str, epoch: int | None = None) -> None:
    now = time.monotonic()
    previous = str(_stage["name"])
    _stage_seconds[previous] = _stage_seconds.get(previous, 0.0) + now - float(_stage["since"])
    _stage["name"], _stage["epoch"], _stage["since"] = name, epoch, now


def reset_stage_times() -> None:
    _stage_seconds.clear()
    _stage["since"] = time.monotonic()


def stage_times() -> dict[str, float]:
    """Seconds spent in each stage since reset_stage_times() (the current one included)."""
    times = dict(_stage_seconds)
    current = str(_stage["name"])
    times[current] = times.get(current, 0.0) + time.monotonic() - float(_stage["since"])
    return times


def stage() -> str:
    """'training, epoch 7', 'scoring', ..."""
    if _stage["epoch"] is not None:
        return f"{_stage['name']}, epoch {_stage['epoch']}"
    return str(_stage["name"])


@contextmanager
def critical() -> Iterator[None]:
    """A section a signal must not cut in half: a write to the tracking store (interrupted
    there, SQLite can keep a lock that the run's own clean-up then waits on) or TensorFlow
    work (an exception raised between two of its native calls corrupts its runtime: seen as
    "Failed to find function" errors and glibc aborts). A signal that arrives inside is
    raised when the outermost section ends, or earlier at a `raise_pending()` safe point.
    Only the main thread's sections count: Python delivers signals there alone, and a
    background thread's call (the heartbeat) must not hold one back or raise it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _critical["depth"] += 1
    try:
        yield
    finally:
        _critical["depth"] -= 1
        pending = _critical["pending"]
        if _critical["depth"] == 0 and pending is not None:
            _critical["pending"] = None
            raise pending


def raise_pending() -> None:
    """A safe point inside a long critical section (Keras calls it after every batch): the
    signal received meanwhile, if any, is raised here."""
    pending = _critical["pending"]
    if pending is not None:
        _critical["pending"] = None
        raise pending


def end_reason(signum: int) -> str:
    return f"{signal.Signals(signum).name} during {stage()}"


def on_force_exit(action: Callable[[str], None]) -> Callable[[], None]:
    """Register what the watchdog does (with the end reason) if unwinding takes too long;
    returns the function that unregisters it."""
    _on_force_exit.append(action)
    return lambda: _on_force_exit.remove(action) if action in _on_force_exit else None


def _watchdog(signum: int, reason: str) -> None:
    for action in list(_on_force_exit):
        try:
            action(reason)
        except Exception:  # best effort: the process is going away either way
            pass
    # the unwinding that would have said so stalled (a job stuck in native code, a pool
    # that does not stop): said here, or the process would end without a word
    print(
        f"[aead] stopped: {reason}; forced after {FORCE_EXIT_AFTER_S:.0f} s (a job did not "
        "stop in time; a run it left RUNNING is ended KILLED by the next sweep or "
        "aead-end-lost-runs)",
        file=sys.stderr,
        flush=True,
    )
    os._exit(128 + signum)


def _children() -> list[int]:
    """Direct child processes that run jobs (Linux /proc; elsewhere none are known).
    multiprocessing's resource trackers ignore SIGTERM by design and are left alone."""
    pids = []
    for path in Path("/proc/self/task").glob("*/children"):
        try:
            pids += [int(p) for p in path.read_text().split()]
        except OSError:
            continue
    workers = []
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in command:
            workers.append(pid)
    return workers


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it has exited
    except ChildProcessError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _forward_to_children(signum: int) -> None:
    children = _children()
    for pid in children:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    # wait until no worker has a run open (they stay alive, idle, in a process pool)
    active = _active_dir(str(os.getpid()))
    deadline = time.monotonic() + CHILDREN_GRACE_S
    while children and time.monotonic() < deadline:
        children = [pid for pid in children if _alive(pid)]
        busy = {int(p.name) for p in active.glob("*")} if active.is_dir() else set()
        if not busy & set(children):
            break
        time.sleep(0.1)


def _handle(signum, frame) -> None:
    reason = end_reason(signum)
    if _received:
        since = time.monotonic() - float(_received["at"])
        if _received["signum"] == signum and since < DUPLICATE_WITHIN_S:
            return
        # a second signal: the user insists; the watchdog's clean-up runs now
        _watchdog(signum, reason)
    _received.update(signum=signum, reason=reason, at=time.monotonic())
    timer = threading.Timer(FORCE_EXIT_AFTER_S, _watchdog, args=(signum, reason))
    timer.daemon = True
    timer.start()
    _forward_to_children(signum)
    if _critical["depth"]:
        _critical["pending"] = Interrupted(signum, reason)
        return
    raise Interrupted(signum, reason)


def install_signal_handlers() -> None:
    """SIGINT and SIGTERM raise Interrupted in the main thread (no-op elsewhere: Python only
    delivers signals there)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _handle)
