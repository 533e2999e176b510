"""`precal server`: a real Prefect server started in a temporary Prefect home, reused by `precal extract`
(its run appears in that server's API), stopped; and the messages for a server that died."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flows.server import ServerState, is_server_process, record_path, server_status, stop_server
from tests.orchestration_helpers import split_subset

PRECAL = Path(sys.executable).with_name("precal")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A Prefect home of its own, for this process and the commands it starts; no API URL configured."""
    folder = tmp_path / "prefect"
    monkeypatch.setenv("PREFECT_HOME", str(folder))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return folder


def precal(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(PRECAL), *args], env=dict(os.environ), capture_output=True, text=True, timeout=timeout)


def flow_runs(url: str) -> list[tuple[str, str]]:
    """(flow name, state) of every flow run the server at `url` knows."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=20, sort=FlowRunSort.START_TIME_DESC)
        return [(client.read_flow(run.flow_id).name, run.state_name) for run in runs]


def test_extract_reports_to_the_server_precal_started(home, tmp_path):
    started = precal("server", "start")
    assert started.returncode == 0, started.stdout + started.stderr
    record = json.loads(record_path().read_text())
    assert record["url"].startswith("http://127.0.0.1:") and record["url"].endswith("/api")
    try:
        status = precal("server", "status")
        assert status.returncode == 0 and f"running at {record['url']}" in status.stdout, status.stdout
        again = precal("server", "start")  # finds the running one instead of starting a second
        assert again.returncode == 0 and json.loads(record_path().read_text())["pid"] == record["pid"]

        manifest = split_subset(tmp_path / "data", {"train": 2})
        extracted = precal(
            "extract", "--manifest", str(manifest), "--store", str(tmp_path / "store"), "-m", "audio", "--workers", "0"
        )
        assert extracted.returncode == 0, extracted.stdout + extracted.stderr
        assert ("precal-extract", "Completed") in flow_runs(record["url"])
        assert not (home / "temporary-server.log").exists()  # no temporary server was started
    finally:
        stopped = precal("server", "stop")
    assert stopped.returncode == 0 and f"stopped the server at {record['url']}" in stopped.stdout, stopped.stdout
    assert not is_server_process(record["pid"]) and not record_path().exists()
    after = precal("server", "status")
    assert after.returncode == 1 and "not running" in after.stdout


def test_a_server_that_died_is_named_with_its_pid_and_cleared_by_stop(home):
    # A process whose command line reads like a server, recorded as precal's; it never answers.
    stand_in = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()", "prefect", "server"],
        stdin=subprocess.PIPE,
        start_new_session=True,
    )
    url = "http://127.0.0.1:9/api"  # the discard port: nothing answers there
    home.mkdir()
    record_path().write_text(json.dumps({"url": url, "pid": stand_in.pid, "log": str(home / "precal-server.log")}))
    assert server_status().state == "not answering"
    os.killpg(stand_in.pid, signal.SIGKILL)
    stand_in.wait()
    state = server_status()
    assert state == ServerState("died", url, stand_in.pid, home / "precal-server.log")
    assert f"pid {stand_in.pid}" in state.message() and "no longer running" in state.message()
    shown = precal("server", "status")
    assert shown.returncode == 1 and "no longer running" in shown.stdout
    assert stop_server().state == "died" and not record_path().exists()


def test_a_damaged_record_is_reported_as_died(home):
    home.mkdir()
    record_path().write_text("{torn")
    state = server_status()
    assert state.state == "died" and "cannot be read" in state.message()
    assert stop_server().state == "died" and not record_path().exists()
