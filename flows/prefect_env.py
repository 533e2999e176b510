"""Offline-friendly Prefect defaults, applied before Prefect is imported.

With no API URL Prefect starts a temporary local server; these keep it (and Dask) quiet and patient
on slow machines. Users who point PREFECT_API_URL at their own server keep their settings.
"""

import os
import subprocess
from pathlib import Path

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
