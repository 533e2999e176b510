"""The record of pipeline runs, as plain files written whole or not at all:

    <out>/stages.json    each stage's latest record, and the history of runs (which stages ran or were skipped)
    <out>/metrics.json   the evaluate stage's test metrics over seeds, with its cache key

flows/pipeline.py records each stage as it finishes; everything here runs and is tested without Prefect.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from pipeline.config import ConfigError
from storage.atomic import write_json_atomic
from storage.remote import Location, location

HISTORY = 50  # pipeline runs kept in stages.json
STAGES_FILE = "stages.json"
METRICS_FILE = "metrics.json"


@dataclass
class StageOutcome:
    """What a stage reports: whether it ran or was skipped, its cache key, and a JSON-able result."""

    status: str  # "ran" or "skipped"
    key: str
    result: dict = field(default_factory=dict)


@dataclass
class StageRecord:
    stage: str
    status: str  # "ran" or "skipped"
    key: str
    seconds: float
    result: dict = field(default_factory=dict)
    finished_at: str = ""
    flow_run_id: str | None = None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json(path: Location, data: dict) -> None:
    """Written whole or not at all (a temporary file renamed into place)."""
    write_json_atomic(path, data, indent=2, default=str)


# ---- <out>/stages.json ------------------------------------------------------------------------


def stages_path(out: Location) -> Location:
    return location(out) / STAGES_FILE


def read_stages(out: Location) -> dict:
    """{"stages": {name: latest record}, "history": [one entry per pipeline run]}."""
    path = stages_path(out)
    if not path.is_file():
        return {"stages": {}, "history": []}
    return json.loads(path.read_text())


def record_stage(out: Location, record: StageRecord) -> None:
    data = read_stages(out)
    data["stages"][record.stage] = asdict(record)
    write_json(stages_path(out), data)


def run_stage(
    out: Location, name: str, call: Callable[[], StageOutcome], flow_run_id: str | None = None
) -> StageRecord:
    """Run one stage, time it, and record it in stages.json at once (a later stage's failure keeps it)."""
    started = time.perf_counter()
    outcome = call()
    record = StageRecord(
        name,
        outcome.status,
        outcome.key,
        round(time.perf_counter() - started, 2),
        outcome.result,
        now_iso(),
        flow_run_id,
    )
    record_stage(out, record)
    return record


def record_run(out: Location, flow_run_id: str | None, started_at: str, records: list[StageRecord]) -> dict:
    """Append this pipeline run (which stages ran, which were skipped) to the history."""
    data = read_stages(out)
    entry = {
        "flow_run_id": flow_run_id,
        "started_at": started_at,
        "finished_at": now_iso(),
        "stages": {r.stage: r.status for r in records},
    }
    data["history"] = (data["history"] + [entry])[-HISTORY:]
    write_json(stages_path(out), data)
    return entry


def recorded(out: Location, stage: str, needed_by: str) -> dict:
    """The latest record of a stage this run does not repeat; a clear error when there is none."""
    record = read_stages(out)["stages"].get(stage)
    if record is None:
        raise ConfigError(
            f"stage {needed_by} needs the {stage} stage's result and {stages_path(out)} has none; "
            f"run it first (--stages {stage},{needed_by})"
        )
    return record


def stage_table(records: list[StageRecord]) -> list[dict]:
    """One row per stage of a run: what the run's summary table shows."""
    return [{"stage": r.stage, "status": r.status, "key": r.key, "seconds": r.seconds} for r in records]


# ---- <out>/metrics.json -----------------------------------------------------------------------


def metrics_path(out: Location) -> Location:
    return location(out) / METRICS_FILE


def read_metrics(out: Location) -> dict | None:
    """The evaluate stage's metrics.json, or None before the first evaluation."""
    path = metrics_path(out)
    return json.loads(path.read_text()) if path.is_file() else None


def metrics_summary(out: Location) -> dict:
    """{"metrics_path", "variants"} for a run's result; empty before the first evaluation."""
    metrics = read_metrics(out)
    if metrics is None:
        return {}
    return {"metrics_path": str(metrics_path(out)), "variants": metrics["variants"]}
