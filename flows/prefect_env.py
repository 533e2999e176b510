"""Offline-friendly Prefect defaults, applied before Prefect is imported, and the choice of Prefect API.

Flows report to PREFECT_API_URL when it is configured (a team's server, Prefect Cloud), else to the
server `precal server start` left running, else to a temporary local server that Prefect starts for
the one command. The defaults keep that temporary server (and Dask) quiet and patient on slow
machines; users who point PREFECT_API_URL at their own server keep their settings.
"""

import os
import subprocess
from pathlib import Path

from flows.server import running_server_url

OFFLINE_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "DASK_LOGGING__DISTRIBUTED": "warning",  # a local Dask cluster logs every worker start and stop at INFO
}


def apply_offline_defaults() -> None:
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)


SERVER_LOG = "temporary-server.log"


class _OutputToFile:
    """Stands in for the `subprocess` module inside Prefect's server module, so that the temporary server's
    output goes to a file; every other name is the real module's."""

    def __init__(self, log: Path):
        self.log = log

    def __getattr__(self, name: str):
        return getattr(subprocess, name)

    def Popen(self, *args, **kwargs) -> subprocess.Popen:  # noqa: N802 (the name it replaces)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            return subprocess.Popen(*args, **{**kwargs, "stdout": out, "stderr": subprocess.STDOUT})


def log_temporary_server() -> Path | None:
    """Send the output of Prefect's temporary server (started when no PREFECT_API_URL is set) to
    PREFECT_HOME/temporary-server.log instead of the terminal; returns that path, or None with a real server.

    The server is a subprocess that inherits our terminal, and when it is stopped at exit its database
    tasks are cancelled mid-query, which now and then prints an `asyncio.CancelledError` traceback after
    a run that succeeded. Nothing the temporary server says is for the user: failures reach the client."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME

    if PREFECT_API_URL.value():
        return None
    from prefect.server.api import server

    log = Path(PREFECT_HOME.value()) / SERVER_LOG
    if not isinstance(server.subprocess, _OutputToFile):
        server.subprocess = _OutputToFile(log)
    return server.subprocess.log


def choose_prefect_api() -> str | None:
    """Point this process's flows at a Prefect API before the first one runs (Prefect already imported).

    PREFECT_API_URL from any of Prefect's own sources (environment, profile, .env) wins; else the
    precal-started server when it is alive and answering, set in the environment so that processes
    started from here (Dask workers, scheduled runs) report there too; else the temporary server,
    its output sent to a log. Returns the URL, or None for the temporary server."""
    from prefect.context import refresh_global_settings_context
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return PREFECT_API_URL.value()
    url = running_server_url()
    if url is None:
        log_temporary_server()
        return None
    os.environ["PREFECT_API_URL"] = url
    refresh_global_settings_context()  # Prefect read its settings at import, before the URL was set
    return url
