"""Real servers for the tests, on 127.0.0.1 at free ports, stopped (and checked stopped) at the
end: `mlflow server`, PostgreSQL (Debian's package, run as an unprivileged user), a Ray head."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

BIN = Path(sys.executable).parent  # this venv's console scripts (mlflow, ray)
# Ray otherwise swaps 127.0.0.1 for the machine's interface address.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until_closed(port: int, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while listening(port) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not listening(port), f"{what} still listening on port {port}"


def http_get(base: str, endpoint: str, **query) -> bytes:
    url = f"{base}{endpoint}?{urllib.parse.urlencode(query)}" if query else f"{base}{endpoint}"
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def http_post(base: str, endpoint: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"{base}{endpoint}", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def rest_runs(base: str, experiment_name: str) -> list[dict]:
    """An experiment's runs as the server's REST API returns them."""
    found = http_get(
        base, "/api/2.0/mlflow/experiments/get-by-name", experiment_name=experiment_name
    )
    experiment_id = json.loads(found)["experiment"]["experiment_id"]
    return http_post(base, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id]})[
        "runs"
    ]


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def serving(command: list[str], port: int, health: str, log_path: Path, **popen) -> Iterator[str]:
    """Runs a web server's command; yields http://127.0.0.1:PORT once GET `health` answers,
    then stops it and checks that nothing answers on the port any more (its workers too)."""
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **popen)
        try:
            deadline = time.monotonic() + 120
            while True:
                with contextlib.suppress(OSError):
                    http_get(base, health)
                    break
                if server.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text()[-3000:]
                    raise RuntimeError(f"{command[:3]} did not start:\n{tail}")
                time.sleep(0.5)
            yield base
        finally:
            _stop(server)
    wait_until_closed(port, " ".join(Path(c).name for c in command[:2]))


def mlflow_server(folder: Path, backend_store_uri: str | None = None):
    """`mlflow server` with proxied artifacts in folder; a context manager that yields its
    http://127.0.0.1:PORT."""
    port = free_port()
    backend_store_uri = backend_store_uri or f"sqlite:///{folder / 'server.db'}"
    command = [
        str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "2", "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", str(folder / "server-artifacts"),
    ]  # fmt: skip
    return serving(command, port, "/health", folder / "mlflow-server.log", cwd=folder)


def postgres_bin(name: str) -> str:
    """Debian keeps PostgreSQL's server programs off PATH, under /usr/lib/postgresql/N/bin."""
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise RuntimeError(
            f"PostgreSQL's {name} not found: run scripts/setup.sh as root, or "
            "apt-get install postgresql"
        )
    return found


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1; yields the URI of its database `mlflow`.
    PostgreSQL refuses to run as root, so as root it runs as Debian's `postgres` user."""
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="aead-pg-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(folder, account.pw_uid, account.pw_gid)
        # util-linux's runuser sits in /usr/sbin, which a non-login root shell's PATH may lack
        runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
        as_user = [runuser or "runuser", "-u", "postgres", "--"]
    data, port = folder / "data", free_port()

    def run(*command: str) -> None:
        done = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")

    pg_ctl = postgres_bin("pg_ctl")
    try:
        run(postgres_bin("initdb"), "-D", str(data), "-U", "aead", "--auth=trust", "-E", "UTF8")
        options = f"-h 127.0.0.1 -p {port} -k {folder}"
        run(pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "pg.log"), "-w", "start")
        try:
            createdb = postgres_bin("createdb")
            run(createdb, "-h", "127.0.0.1", "-p", str(port), "-U", "aead", "mlflow")
            yield f"postgresql://aead@127.0.0.1:{port}/mlflow"
        finally:
            run(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop")
        wait_until_closed(port, "PostgreSQL")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _processes_of(folder: Path) -> set[int]:
    """The processes whose command line names folder, and all their descendants (Ray's agents
    and workers do not name it): one Ray head's processes and nothing else on the machine."""
    parents: dict[int, int] = {}
    roots: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            if str(folder).encode() in (entry / "cmdline").read_bytes():
                roots.add(int(entry.name))
    found, grown = set(roots), True
    while grown:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        found |= children
        grown = bool(children)
    return found - {os.getpid()}


def _kill_all(pids: set[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
            time.sleep(0.2)


@contextlib.contextmanager
def ray_head(num_cpus: int = 2) -> Iterator[str]:
    """`ray start --head` bound to 127.0.0.1, every port a free one, its files in a folder of
    its own (short: Ray's socket paths must fit 107 bytes); yields the address for
    RAY_ADDRESS. Stopped by killing that head's processes only (`ray stop` would stop every
    Ray on the machine)."""
    folder = Path(tempfile.mkdtemp(prefix="aead-ray-"))
    port = free_port()
    # Ray starts its workers at nice 15: beside the suite's other tests (or a CPU burner) its
    # jobs would get the CPU only when nothing else wants it; here they compete as equals
    env = {**os.environ, **RAY_ENV, "RAY_worker_niceness": "0"}
    command = [
        str(BIN / "ray"), "start", "--head", f"--num-cpus={num_cpus}", "--num-gpus=0",
        "--node-ip-address=127.0.0.1", f"--port={port}", "--include-dashboard=false",
        f"--dashboard-port={free_port()}", f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}", f"--temp-dir={folder}",
        "--disable-usage-stats",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"ray start failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        yield f"127.0.0.1:{port}"
    finally:
        _kill_all(_processes_of(folder))
        wait_until_closed(port, "Ray head")
        assert not _processes_of(folder), "Ray processes left running"
        shutil.rmtree(folder, ignore_errors=True)
