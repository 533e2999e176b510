"""The whole pipeline as one Prefect flow of stage subflows: extract -> pack -> train -> evaluate.

Every stage decides for itself whether its inputs changed (see pipeline/stages.py for the keys) and
is skipped when they did not; `<out>/stages.json` records each stage's key, status, seconds and
result, and the history of runs. `serve_pipeline` serves the flow as a scheduled deployment.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from flows.extract import extract_flow, task_runner
from pipeline.config import ExtractConfig, PipelineConfig, load_pipeline_config
from pipeline.extract import selection_for
from pipeline.manifest import read_manifest
from pipeline.stages import (StageRecord, experiment_for, now_iso, prepare_run, record_run, record_stage, recorded,
                             write_json)
from storage.lock import store_lock
from storage.pack import pack


class StageError(RuntimeError):
    pass


@flow(name="precal-pack")
def pack_flow(manifest: str, store: str, config: ExtractConfig, wait: float = 0.0) -> dict:
    """Pack every configured modality; an unchanged selection (same pack id) reuses the existing pack."""
    samples = read_manifest(manifest, allow_outside_root=config.allow_outside_root, check_files=False, strict=False)
    with store_lock(Path(store), wait=wait):
        result = pack(Path(store), samples, selection_for(Path(store), config))
    return {"status": "ran" if result.created else "skipped", "key": result.pack_id,
            "result": {"path": str(result.path), "pack_id": result.pack_id, "counts": result.counts,
                       "dropped": len(result.dropped)}}


@flow(name="precal-train")
def train_flow(train: dict, pack: dict, out: str) -> dict:
    """Run the experiment grid on the pack, in `<out>/runs/<key>`; skipped when that grid is finished."""
    from trainers.experiment import run_experiment

    experiment, key = experiment_for(train, Path(pack["path"]), pack["pack_id"], Path(out))
    results = experiment.out / "results.json"
    status = "skipped" if results.is_file() else "ran"
    runs = json.loads(results.read_text()) if status == "skipped" else run_experiment(experiment)
    return {"status": status, "key": key, "result": {"out": str(experiment.out), "runs": len(runs)}}


@flow(name="precal-evaluate")
def evaluate_flow(train: dict, pack: dict, out: str) -> dict:
    """Summarise the grid's test metrics (selected on valid) over seeds into `<out>/metrics.json`."""
    from trainers.experiment import summarize

    experiment, key = experiment_for(train, Path(pack["path"]), pack["pack_id"], Path(out))
    results, path = experiment.out / "results.json", Path(out) / "metrics.json"
    if not results.is_file():
        raise StageError(f"no finished training runs in {experiment.out} for this config; run the train stage")
    if path.is_file() and json.loads(path.read_text()).get("key") == key:
        return {"status": "skipped", "key": key, "result": {"metrics": str(path)}}
    runs = json.loads(results.read_text())
    metrics = {"key": key, "pack": pack, "runs_dir": str(experiment.out), "variants": summarize(runs),
               "runs": runs}
    write_json(path, metrics)
    return {"status": "ran", "key": key, "result": {"metrics": str(path)}}


def run_stage(out: Path, name: str, call) -> StageRecord:
    """Run one stage subflow, time it, and record it in stages.json at once (a later failure keeps it)."""
    started = time.perf_counter()
    outcome = call()
    record = StageRecord(name, outcome["status"], outcome["key"], round(time.perf_counter() - started, 2),
                         outcome["result"], now_iso(), flow_run.id)
    record_stage(out, record)
    return record


def extraction_outcome(config: ExtractConfig, report: dict) -> dict:
    # Judged only when something was extracted: rejected manifest rows are reported on every run, so a
    # run with nothing new would otherwise count them against nothing and always fail.
    if report["chunks"] and report["failed_share"] > config.max_failed:
        raise StageError(f"{report['failed_share']:.1%} of extractions failed (above max_failed "
                         f"{config.max_failed:.1%}); see `precal status --failed`")
    result = {"modalities": [{k: v for k, v in s.items() if k != "errors"} for s in report["modalities"]],
              "totals": report["totals"], "chunks": report["chunks"]}
    return {"status": "skipped" if report["chunks"] == 0 else "ran", "key": report["key"], "result": result}


def run_pipeline(config: PipelineConfig, stages: list[str] | None = None, modalities: list[str] | None = None,
                 runner: str = "default", address: str | None = None, wait: float = 0.0) -> dict:
    """Run the chosen stages in order inside the calling flow; a stage whose inputs are unchanged is skipped."""
    config, chosen, out = prepare_run(config, stages, modalities)
    extraction_runner = task_runner(runner, address)  # bad runner settings fail before any work
    started, records = now_iso(), []
    manifest, store = str(config.manifest), str(config.store)
    if "extract" in chosen:
        flow_ = extract_flow.with_options(task_runner=extraction_runner)
        records.append(run_stage(out, "extract", lambda: extraction_outcome(
            config.extract, flow_(manifest, store, config.extract, wait, progress=runner == "default"))))
    if "pack" in chosen:
        records.append(run_stage(out, "pack", lambda: pack_flow(manifest, store, config.extract, wait)))
    if {"train", "evaluate"} & set(chosen):
        packed = recorded(out, "pack", "train" if "train" in chosen else "evaluate")["result"]
        for name, stage_flow in (("train", train_flow), ("evaluate", evaluate_flow)):
            if name in chosen:
                records.append(run_stage(out, name, lambda f=stage_flow: f(config.train, packed, str(out))))
    entry = record_run(out, flow_run.id, started, records)
    publish(out, records)
    return {"out": str(out), "stages": [asdict(r) for r in records], "run": entry, **metrics_of(out)}


def metrics_of(out: Path) -> dict:
    path = out / "metrics.json"
    if not path.is_file():
        return {}
    metrics = json.loads(path.read_text())
    return {"metrics_path": str(path), "variants": metrics["variants"]}


def publish(out: Path, records: list[StageRecord]) -> None:
    """Artifacts of this flow run: the stages table, the metrics summary, a link to the report."""
    create_table_artifact([{"stage": r.stage, "status": r.status, "key": r.key, "seconds": r.seconds}
                           for r in records], key="precal-stages", description=f"precal pipeline stages ({out})")
    metrics = out / "metrics.json"
    if metrics.is_file():
        from trainers.experiment import results_markdown

        create_markdown_artifact(results_markdown(json.loads(metrics.read_text())["runs"]), key="precal-metrics",
                                 description=f"test metrics from {metrics}")
    report = out / "report.html"
    if report.is_file():
        create_link_artifact(report.resolve().as_uri(), link_text=str(report), key="precal-report",
                             description="precal analysis report")


@flow(name="precal-pipeline")
def pipeline_flow(config: str, stages: list[str] | None = None, modalities: list[str] | None = None,
                  runner: str = "default", address: str | None = None, wait: float = 0.0) -> dict:
    """Run the pipeline config at CONFIG (YAML/JSON): extract, pack, train, evaluate; skip what is unchanged.

    The config is read at every run, so a scheduled deployment picks up edits to it.
    """
    return run_pipeline(load_pipeline_config(Path(config)), stages, modalities, runner, address, wait)


def serve_pipeline(config: Path, *, name: str, cron: str | None = None, interval: float | None = None,
                   parameters: dict | None = None) -> None:
    """Serve the pipeline on CONFIG as a deployment with this schedule; blocks, running each scheduled
    flow run in a subprocess, one at a time (a run that overlaps the next schedule delays it)."""
    params = {"config": str(Path(config).resolve()), **(parameters or {})}
    pipeline_flow.serve(name=name, cron=cron, interval=interval, parameters=params, limit=1)
