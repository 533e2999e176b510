"""`precal schedule` against a real Prefect server: scheduled runs complete, and a run with nothing new skips."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter
from prefect.client.schemas.sorting import FlowRunSort
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.helpers import bundled_subset
from tests.orchestration_helpers import write_config

pytestmark = pytest.mark.slow

FINAL_BAD = {"FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def isolated_env(home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    return {**env, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", **extra}


def start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A child in its own session, so that stopping its process group leaves nothing behind."""
    return subprocess.Popen(args, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the child's process group, SIGKILL what is left after 30 s; wait until the group is gone."""
    group = process.pid  # start_new_session: the child leads its own group
    for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and group_alive(group, process):
            time.sleep(0.2)  # polling the OS for the exit, not synchronising with the code under test
        if not group_alive(group, process):
            break
    assert not group_alive(group, process), f"process group {group} outlived SIGKILL"


def group_alive(group: int, process: subprocess.Popen) -> bool:
    process.poll()  # reap the leader
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(condition, timeout: float, what: str, *logs: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)  # polling a real condition (server health, flow run states) with a deadline
    tails = "\n".join(f"--- {log.name}:\n{log.read_text(errors='replace')[-3000:]}" for log in logs)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


@pytest.fixture
def prefect_server(tmp_path):
    """`prefect server start` on a free loopback port with its own PREFECT_HOME; yields (api url, home, log)."""
    home, port, log = tmp_path / "prefect-home", free_port(), tmp_path / "server.log"
    server = start(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        isolated_env(home),
        log,
    )
    api = f"http://127.0.0.1:{port}/api"
    try:

        def healthy() -> bool:
            assert server.poll() is None, f"the server exited:\n{log.read_text(errors='replace')[-3000:]}"
            try:
                return httpx.get(f"{api}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 120, "the Prefect server's health endpoint", log)
        yield api, home, log
    finally:
        stop(server)


def flow_runs(api: str, deployment: str) -> list:
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
            flow_run_filter=FlowRunFilter(),
            sort=FlowRunSort.START_TIME_ASC,
            limit=50,
        )


def test_scheduled_runs_complete_and_the_second_skips_everything(tmp_path, prefect_server):
    api, home, server_log = prefect_server
    data = tmp_path / "data"
    bundled_subset(data, 4)
    config = write_config(data, {"text": {}})
    serve_log = tmp_path / "serve.log"
    serve = start(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "schedule",
            str(config),
            "--interval",
            "5",
            "--stages",
            "extract,pack",
            "--name",
            "every-5s",
        ],
        isolated_env(home, PREFECT_API_URL=api, PREFECT_RUNNER_POLL_FREQUENCY="2"),
        serve_log,
    )
    try:

        def two_completed():
            assert serve.poll() is None, f"`precal schedule` exited:\n{serve_log.read_text(errors='replace')[-3000:]}"
            runs = flow_runs(api, "every-5s")
            bad = [r for r in runs if r.state_type.value in FINAL_BAD]
            assert not bad, f"flow run {bad[0].name} ended {bad[0].state_type.value}:\n{serve_log.read_text()[-3000:]}"
            done = [r for r in runs if r.state_type.value == "COMPLETED"]
            return done if len(done) >= 2 else None

        first, second = wait_for(two_completed, 150, "two completed scheduled runs", serve_log, server_log)[:2]
    finally:
        stop(serve)
    assert first.parameters["stages"] == ["extract", "pack"]
    history = {h["flow_run_id"]: h["stages"] for h in json.loads((data / "out" / "stages.json").read_text())["history"]}
    assert history[str(first.id)] == {"extract": "ran", "pack": "ran"}
    assert history[str(second.id)] == {"extract": "skipped", "pack": "skipped"}
    artifacts = httpx.post(
        f"{api}/artifacts/filter",
        json={"artifacts": {"key": {"any_": ["precal-stages"]}}, "limit": 50, "offset": 0, "sort": "CREATED_DESC"},
    ).json()
    published = {a["flow_run_id"]: json.loads(a["data"]) for a in artifacts}
    assert {row["status"] for row in published[str(second.id)]} == {"skipped"}
