"""The whole pipeline as one Prefect flow of stage subflows: extract -> pack -> train -> evaluate.

Each stage's work and its decision to skip are plain functions in pipeline/stages.py; the record of a
run (`<out>/stages.json`, `<out>/metrics.json`) is pipeline/stage_records.py. This module only wires
them into flows, publishes artifacts, and serves the flow as a scheduled deployment (`serve_pipeline`).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from flows.extract import extract_flow, task_runner
from pipeline.config import ExtractConfig, PipelineConfig, load_pipeline_config
from pipeline.stage_records import (
    StageOutcome,
    StageRecord,
    metrics_path,
    metrics_summary,
    now_iso,
    read_metrics,
    record_run,
    recorded,
    run_stage,
    stage_table,
)
from pipeline.stages import evaluate_stage, extract_outcome, pack_stage, prepare_run, train_stage
from storage.remote import Location, is_remote, location


@flow(name="precal-pack")
def pack_flow(manifest: str, store: str, config: ExtractConfig, wait: float = 0.0) -> StageOutcome:
    """Pack every configured modality; an unchanged selection (same pack id) reuses the existing pack."""
    return pack_stage(manifest, store, config, wait)


@flow(name="precal-train")
def train_flow(train: dict, pack: dict, out: str) -> StageOutcome:
    """Run the experiment grid on the pack, in `<out>/runs/<key>`; skipped when that grid is finished."""
    return train_stage(train, pack, location(out))


@flow(name="precal-evaluate")
def evaluate_flow(train: dict, pack: dict, out: str) -> StageOutcome:
    """Summarise the grid's test metrics (selected on valid) over seeds into `<out>/metrics.json`."""
    return evaluate_stage(train, pack, location(out))


def run_pipeline(
    config: PipelineConfig,
    stages: list[str] | None = None,
    modalities: list[str] | None = None,
    runner: str = "default",
    address: str | None = None,
    wait: float = 0.0,
) -> dict:
    """Run the chosen stages in order inside the calling flow; a stage whose inputs are unchanged is skipped."""
    config, chosen, out = prepare_run(config, stages, modalities)
    extraction_runner = task_runner(runner, address)  # bad runner settings fail before any work
    started, records = now_iso(), []
    manifest, store = str(config.manifest), str(config.store)

    def stage(name: str, call) -> None:
        records.append(run_stage(out, name, call, flow_run.id))

    if "extract" in chosen:
        extract = extract_flow.with_options(task_runner=extraction_runner)
        stage(
            "extract",
            lambda: extract_outcome(
                extract(manifest, store, config.extract, wait, progress=runner == "default"),
                config.extract,
                config.store,
            ),
        )
    if "pack" in chosen:
        stage("pack", lambda: pack_flow(manifest, store, config.extract, wait))
    if {"train", "evaluate"} & set(chosen):
        packed = recorded(out, "pack", "train" if "train" in chosen else "evaluate")["result"]
        for name, stage_flow in (("train", train_flow), ("evaluate", evaluate_flow)):
            if name in chosen:
                stage(name, lambda f=stage_flow: f(config.train, packed, str(out)))
    entry = record_run(out, flow_run.id, started, records)
    publish(out, records)
    return {"out": str(out), "stages": [asdict(r) for r in records], "run": entry, **metrics_summary(out)}


def publish(out: Location, records: list[StageRecord]) -> None:
    """Artifacts of this flow run: the stages table, the metrics summary, a link to the report."""
    create_table_artifact(stage_table(records), key="precal-stages", description=f"precal pipeline stages ({out})")
    metrics = read_metrics(out)
    if metrics is not None:
        from trainers.experiment import results_markdown

        create_markdown_artifact(
            results_markdown(metrics["runs"]),
            key="precal-metrics",
            description=f"test metrics from {metrics_path(out)}",
        )
    report = out / "report.html"
    if report.is_file():
        link = str(report) if is_remote(report) else report.resolve().as_uri()
        create_link_artifact(link, link_text=str(report), key="precal-report", description="precal analysis report")


@flow(name="precal-pipeline")
def pipeline_flow(
    config: str,
    stages: list[str] | None = None,
    modalities: list[str] | None = None,
    runner: str = "default",
    address: str | None = None,
    wait: float = 0.0,
) -> dict:
    """Run the pipeline config at CONFIG (YAML/JSON): extract, pack, train, evaluate; skip what is unchanged.

    The config is read at every run, so a scheduled deployment picks up edits to it.
    """
    return run_pipeline(load_pipeline_config(Path(config)), stages, modalities, runner, address, wait)


def serve_pipeline(
    config: Path, *, name: str, cron: str | None = None, interval: float | None = None, parameters: dict | None = None
) -> None:
    """Serve the pipeline on CONFIG as a deployment with this schedule; blocks, running each scheduled
    flow run in a subprocess, one at a time (a run that overlaps the next schedule delays it)."""
    params = {"config": str(Path(config).resolve()), **(parameters or {})}
    pipeline_flow.serve(name=name, cron=cron, interval=interval, parameters=params, limit=1)
