"""A Prefect server that precal starts once in the background and later commands find.

`start_server` runs `prefect server start` on the loopback interface at a free port, detached, with
its output in PREFECT_HOME/precal-server.log; it waits until the health endpoint answers and then
records the URL and PID in PREFECT_HOME/precal-server.json. Flows report to that server instead of
starting Prefect's temporary one (about ten seconds per command), and its UI keeps every run's
history and artifacts. Plain functions that import no Prefect: the CLI calls them, tests drive them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from storage.atomic import write_json_atomic

SERVER_FILE = "precal-server.json"
SERVER_LOG = "precal-server.log"
HOST = "127.0.0.1"  # loopback only: the server has no authentication


class ServerError(RuntimeError):
    """The server could not be started or stopped; the message says why and where to look."""


@dataclass
class ServerState:
    state: str  # "running", "not answering", "died" or "not running"
    url: str | None = None
    pid: int | None = None
    log: Path | None = None

    def message(self) -> str:
        if self.state == "running":
            return f"running at {self.url} (pid {self.pid}); UI at {self.url.removesuffix('/api')}"
        if self.state == "not answering":
            return (
                f"pid {self.pid} is alive but {self.url} does not answer; `precal server stop` ends it "
                f"(its log: {self.log})"
            )
        if self.state == "died" and self.pid is None:
            return (
                f"{record_path()} cannot be read (damaged): flows fall back to Prefect's temporary server; "
                "`precal server stop` removes it"
            )
        if self.state == "died":
            return (
                f"the server recorded in {record_path()} (pid {self.pid}, {self.url}) is no longer running: "
                f"flows fall back to Prefect's temporary server. `precal server start` starts a new one "
                f"(its log may say why it stopped: {self.log})"
            )
        return (
            "not running: flows use PREFECT_API_URL when set, else a temporary server per command; "
            "`precal server start` starts one"
        )


def prefect_home() -> Path:
    """Prefect's home folder, as Prefect resolves it (PREFECT_HOME, else ~/.prefect), without importing Prefect."""
    return Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()


def record_path() -> Path:
    return prefect_home() / SERVER_FILE


def server_status() -> ServerState:
    """What the record says and whether its process is alive and answering."""
    try:
        record = json.loads(record_path().read_text(encoding="utf-8"))
        url, pid, log = record["url"], int(record["pid"]), Path(record["log"])
    except FileNotFoundError:
        return ServerState("not running")
    except (OSError, ValueError, KeyError, TypeError):  # a torn or edited record names no server we can trust
        return ServerState("died", log=prefect_home() / SERVER_LOG)
    if not is_server_process(pid):
        return ServerState("died", url, pid, log)
    return ServerState("running" if healthy(url) else "not answering", url, pid, log)


def running_server_url() -> str | None:
    """The API URL of the precal-started server when it is alive and answering, else None."""
    state = server_status()
    return state.url if state.state == "running" else None


def start_server(port: int | None = None, timeout: float = 90.0) -> ServerState:
    """Start the server (or find the one already running) and wait until it answers."""
    state = server_status()
    if state.state == "running":
        return state
    if state.state == "not answering":
        raise ServerError(state.message())
    record_path().unlink(missing_ok=True)  # a dead server's record
    port = port or free_port()
    url = f"http://{HOST}:{port}/api"
    log = prefect_home() / SERVER_LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)]
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=server_environment(),
            cwd=prefect_home(),
        )
    try:
        wait_until_healthy(url, process, timeout, log)
    except ServerError:
        stop_process_group(process.pid, timeout=10)
        raise
    write_json_atomic(record_path(), {"url": url, "pid": process.pid, "log": str(log), "started_at": time.time()})
    return ServerState("running", url, process.pid, log)


def stop_server(timeout: float = 30.0) -> ServerState:
    """Stop the recorded server and remove its record; returns what the record said before."""
    state = server_status()
    if state.state in ("running", "not answering"):
        stop_process_group(state.pid, timeout)
    record_path().unlink(missing_ok=True)
    return state


def server_environment() -> dict:
    from flows.prefect_env import OFFLINE_DEFAULTS

    env = {**OFFLINE_DEFAULTS, **os.environ}
    env.pop("PREFECT_API_URL", None)  # the server's own settings; a client URL here would only confuse its banner
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until_healthy(url: str, process: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not healthy(url):
        if process.poll() is not None:
            raise ServerError(f"the Prefect server exited (code {process.returncode}) before answering; see {log}")
        if time.monotonic() > deadline:
            raise ServerError(f"the Prefect server did not answer at {url} within {timeout:.0f} s; see {log}")
        time.sleep(0.2)  # polls the endpoint: the condition itself, not a guess at how long start-up takes


def is_server_process(pid: int) -> bool:
    """pid is alive (not a zombie) and, where /proc tells, runs `prefect server`: a reused pid is not ours."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process: not a server this user started
    proc = Path(f"/proc/{pid}")
    if not proc.is_dir():
        return True
    try:
        if proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            _reap(pid)
            return False
        command = proc.joinpath("cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"prefect" in command and b"server" in command


def _reap(pid: int) -> None:
    """Collect an exited child of this process (a server started and killed in the same process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_process_group(pid: int, timeout: float) -> None:
    """SIGTERM the server's process group (the server and the workers it started), SIGKILL after `timeout`."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while is_server_process(pid):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)  # polls the process table for the exit
        else:
            return
    raise ServerError(f"pid {pid} did not stop after SIGKILL")
