"""Offline-friendly Prefect defaults, applied before Prefect is imported.

With no API URL Prefect starts a temporary local server; these keep it (and Dask) quiet and patient
on slow machines. Users who point PREFECT_API_URL at their own server keep their settings.
"""

import os

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
