"""Stage decisions as plain functions, without Prefect: the max-failed rule, skip decisions, stages.json
and metrics.json."""

import json
import subprocess
import sys

import pytest

from pipeline.config import ConfigError, ExtractConfig
from pipeline.stage_records import (
    HISTORY,
    StageOutcome,
    StageRecord,
    metrics_summary,
    read_stages,
    record_run,
    recorded,
    run_stage,
)
from pipeline.stages import StageError, check_failures, evaluate_stage, experiment_for, extract_outcome, train_stage

TRAIN = {"backbones": ["late"], "methods": ["none"], "seeds": [0, 1], "train": {"epochs": 1}}
PACKED = {"path": "store/packed/p1", "pack_id": "p1"}


def extraction_report(chunks: int, failed_share: float) -> dict:
    modality = {
        "modality": "text",
        "encoder": "minilm",
        "ok": 3,
        "failed": 1,
        "skipped": 0,
        "shards_written": 1,
        "seconds": 0.5,
        "errors": ["s1: empty text"],
    }
    return {
        "modalities": [modality],
        "totals": {"ok": 3, "failed": 1},
        "chunks": chunks,
        "key": "k1",
        "failed_share": failed_share,
    }


def test_stage_modules_start_no_prefect():
    code = (
        "import sys, pipeline.stages, pipeline.stage_records, pipeline.extract_chunks; "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('prefect', 'flows')], 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_max_failed_is_a_strict_upper_bound_and_names_the_store(tmp_path):
    check_failures(0.05, 0.05, tmp_path)  # at the limit: still acceptable
    check_failures(0.0, 0.0, tmp_path)
    with pytest.raises(StageError) as caught:
        check_failures(0.06, 0.05, tmp_path)
    assert "6.0% of extractions failed (above max_failed 5.0%)" in str(caught.value)
    assert f"precal status --store {tmp_path} --failed" in str(caught.value)


@pytest.mark.parametrize("chunks", [0, 2])
def test_too_many_failures_fail_the_extract_stage_whether_or_not_anything_was_new(tmp_path, chunks):
    """A run with nothing new is judged on the same manifest: it must not pass where the run before failed."""
    with pytest.raises(StageError):
        extract_outcome(extraction_report(chunks, 0.25), ExtractConfig(max_failed=0.2), tmp_path)


def test_extract_outcome_is_skipped_without_chunks_and_leaves_errors_out(tmp_path):
    config = ExtractConfig(max_failed=0.3)
    skipped = extract_outcome(extraction_report(0, 0.25), config, tmp_path)
    ran = extract_outcome(extraction_report(2, 0.25), config, tmp_path)
    assert (skipped.status, ran.status) == ("skipped", "ran")
    assert ran.key == "k1" and ran.result["chunks"] == 2 and ran.result["totals"] == {"ok": 3, "failed": 1}
    assert "errors" not in ran.result["modalities"][0] and ran.result["modalities"][0]["ok"] == 3


def test_a_stage_is_recorded_as_soon_as_it_finishes(tmp_path):
    record = run_stage(tmp_path, "pack", lambda: StageOutcome("ran", "p1", {"path": "x"}), "run-1")
    assert (record.stage, record.status, record.key, record.flow_run_id) == ("pack", "ran", "p1", "run-1")
    assert record.seconds >= 0 and record.finished_at
    assert read_stages(tmp_path)["stages"]["pack"]["result"] == {"path": "x"}

    def broken() -> StageOutcome:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_stage(tmp_path, "train", broken)
    assert set(read_stages(tmp_path)["stages"]) == {"pack"}  # the failed stage is not recorded, the earlier one kept


def test_history_keeps_the_latest_runs(tmp_path):
    records = [StageRecord("extract", "skipped", "k", 0.1)]
    for n in range(HISTORY + 3):
        entry = record_run(tmp_path, f"run-{n}", "start", records)
    history = read_stages(tmp_path)["history"]
    assert len(history) == HISTORY and history[-1] == entry and history[0]["flow_run_id"] == "run-3"
    assert entry["stages"] == {"extract": "skipped"}


def test_a_missing_earlier_stage_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"stage train needs the pack stage's result.*--stages pack,train"):
        recorded(tmp_path, "pack", "train")


def test_train_is_skipped_when_its_grid_is_finished(tmp_path):
    experiment, key = experiment_for(TRAIN, tmp_path / PACKED["path"], PACKED["pack_id"], tmp_path)
    experiment.out.mkdir(parents=True)
    (experiment.out / "results.json").write_text(json.dumps([{"seed": 0}, {"seed": 1}]))
    outcome = train_stage(TRAIN, {**PACKED, "path": str(tmp_path / PACKED["path"])}, tmp_path)
    assert (outcome.status, outcome.key, outcome.result["runs"]) == ("skipped", key, 2)


def test_evaluate_writes_metrics_once_per_key(tmp_path):
    packed = {**PACKED, "path": str(tmp_path / PACKED["path"])}
    with pytest.raises(StageError, match="no finished training runs"):
        evaluate_stage(TRAIN, packed, tmp_path)
    assert metrics_summary(tmp_path) == {}
    experiment, key = experiment_for(TRAIN, tmp_path / PACKED["path"], PACKED["pack_id"], tmp_path)
    experiment.out.mkdir(parents=True)
    runs = [
        {
            "backbone": "late",
            "method": "none",
            "calibration": None,
            "seed": s,
            "valid": {"accuracy": 0.5 + s / 10},
            "test": {"accuracy": 0.4 + s / 10},
        }
        for s in (0, 1)
    ]
    (experiment.out / "results.json").write_text(json.dumps(runs))
    first, again = evaluate_stage(TRAIN, packed, tmp_path), evaluate_stage(TRAIN, packed, tmp_path)
    assert (first.status, again.status, first.key) == ("ran", "skipped", key)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["key"] == key and metrics["runs"] == runs and metrics["pack"] == packed
    summary = metrics_summary(tmp_path)
    assert summary["variants"]["late / none"]["test"]["accuracy"]["mean"] == pytest.approx(0.45)
