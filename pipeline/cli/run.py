"""The pipeline as Prefect flows: `precal run` (one run of a config), `precal schedule` (a served deployment)
and `precal demo` (the whole pipeline on the bundled AV-digits sample)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from pipeline.cli.common import console, fail, print_extraction, print_variants, run_guarded
from storage.remote import location

STAGES_HELP = "Stages to run, comma-separated, from extract,pack,train,evaluate (default: all, in that order)."
RUN_MODALITY_HELP = "Only this one of the config's modalities, in every stage (repeatable; default: all of them)."
RUNNER_HELP = "Where extraction chunks run: default (this process, one chunk at a time) or dask."
ADDRESS_HELP = "Dask scheduler to run chunks on, tcp://HOST:PORT (with --runner dask; default: a local cluster)."
CONFIG_HELP = "Pipeline config (YAML/JSON): manifest, store, out, extract {...}, train {experiment grid}."


def pipeline_options(
    config: Path, stages: str | None, modality: list[str] | None, runner: str, address: str | None
) -> dict:
    """Check the config and choices before any work starts; the flow's parameters."""
    from pipeline.config import ConfigError, load_pipeline_config
    from pipeline.stages import prepare_run

    chosen = [s.strip() for s in stages.split(",") if s.strip()] if stages else None
    if runner not in ("default", "dask"):
        fail(f"--runner {runner!r}: choose default or dask")
    if address and runner != "dask":
        fail("--address is for --runner dask")
    try:
        prepare_run(load_pipeline_config(config), chosen, modality)
    except ConfigError as err:
        fail(str(err))
    return {"stages": chosen, "modalities": modality or None, "runner": runner, "address": address}


def run(
    config: Path = typer.Argument(..., help=CONFIG_HELP),
    stages: str | None = typer.Option(None, help=STAGES_HELP),
    modality: list[str] | None = typer.Option(None, "--modality", "-m", help=RUN_MODALITY_HELP),
    runner: str = typer.Option("default", help=RUNNER_HELP),
    address: str | None = typer.Option(None, help=ADDRESS_HELP),
    wait: float = typer.Option(0.0, help="Seconds to wait for another process holding the store's lock."),
    export_experiment: Path | None = typer.Option(
        None,
        help="Only write the experiment config the train stage "
        "would run (recorded pack, keyed run folder) to this YAML file, "
        "to launch it with torchrun; then exit.",
    ),
):
    """Run the pipeline on CONFIG as one Prefect flow: extract -> pack -> train -> evaluate.

    A stage whose inputs are unchanged is skipped: extraction when every sample's content hash and
    encoder fingerprint is already done, packing when the pack id exists, training and evaluation when
    the training config's hash and the pack id match a finished grid. Prints a table of stages and
    writes OUT/stages.json (keys, ran/skipped, seconds, results) and OUT/metrics.json. Example:

      precal run pipeline.yaml --stages extract,pack -m text --runner dask --address tcp://10.0.0.5:8786

    To train on several machines, write the stage's experiment with --export-experiment, launch it with
    torchrun (`-m trainers.experiment FILE`), then `--stages train,evaluate` (docs/orchestration.md).
    """
    from flows.pipeline import pipeline_flow
    from pipeline.config import ConfigError
    from pipeline.stages import StageError

    options = pipeline_options(config, stages, modality, runner, address)
    if export_experiment is not None:
        write_experiment(config, modality, export_experiment)
        return
    try:
        result = run_guarded(lambda: pipeline_flow(str(config.resolve()), wait=wait, **options))
    except ConfigError as err:  # e.g. --stages train before any pack stage
        fail(str(err))
    except StageError as err:
        fail(str(err), code=1)
    print_stages(result)


def write_experiment(config: Path, modality: list[str] | None, path: Path) -> None:
    from pipeline.config import ConfigError, load_pipeline_config
    from pipeline.stages import export_experiment, restrict_modalities

    try:
        runs = export_experiment(restrict_modalities(load_pipeline_config(config), modality), path)
    except ConfigError as err:
        fail(str(err))
    console.print(f"wrote {path}; its runs go to {runs}", soft_wrap=True, highlight=False)


def print_stages(result: dict) -> None:
    for record in result["stages"]:
        if record["stage"] == "extract":  # failures are listed by `precal status --failed`
            modalities = [{**m, "errors": []} for m in record["result"]["modalities"]]
            print_extraction({**record["result"], "modalities": modalities})
    table = Table(title="pipeline stages")
    for column in ("stage", "status", "key", "seconds"):
        table.add_column(column)
    for record in result["stages"]:
        status = "[green]ran[/green]" if record["status"] == "ran" else "[dim]skipped[/dim]"
        table.add_row(record["stage"], status, record["key"], f"{record['seconds']:.1f}")
    console.print(table)
    if "variants" in result and any(r["stage"] == "evaluate" for r in result["stages"]):
        print_variants(result["variants"], title="test split (mean +- std over seeds)")
    console.print(f"record: {location(result['out']) / 'stages.json'}", soft_wrap=True, highlight=False)


def schedule(
    config: Path = typer.Argument(..., help=CONFIG_HELP),
    cron: str | None = typer.Option(None, help="Cron schedule, e.g. '0 3 * * *' (every night at 03:00)."),
    interval: float | None = typer.Option(None, help="Run every this many seconds instead of --cron."),
    name: str | None = typer.Option(None, help="Deployment name (default: the config file's name)."),
    stages: str | None = typer.Option(None, help=STAGES_HELP),
    modality: list[str] | None = typer.Option(None, "--modality", "-m", help=RUN_MODALITY_HELP),
    runner: str = typer.Option("default", help=RUNNER_HELP),
    address: str | None = typer.Option(None, help=ADDRESS_HELP),
):
    """Serve the pipeline on CONFIG as a scheduled Prefect deployment (runs until stopped with Ctrl-C).

    Needs a Prefect server: `precal server start` (a local one precal finds by itself), or your own
    server or Prefect Cloud named by PREFECT_API_URL. Each scheduled run re-reads CONFIG
    and skips unchanged stages, so a run with nothing new is quick. Runs never overlap. Example:

      precal schedule pipeline.yaml --cron "0 3 * * *" --name nightly
    """
    import httpx
    from prefect.settings import PREFECT_API_URL

    from flows.pipeline import serve_pipeline

    if (cron is None) == (interval is None):
        fail("give exactly one of --cron EXPR or --interval SECONDS")
    if interval is not None and interval <= 0:
        fail("--interval must be a positive number of seconds")
    if not PREFECT_API_URL.value():
        fail(
            "no Prefect server is configured. Start one with `precal server start` (or point "
            "PREFECT_API_URL at your own server), then run this again"
        )
    options = pipeline_options(config, stages, modality, runner, address)
    try:
        serve_pipeline(config, name=name or config.stem, cron=cron, interval=interval, parameters=options)
    except ValueError as err:  # e.g. a cron expression Prefect cannot read
        fail(str(err))
    except httpx.HTTPError as err:
        fail(
            f"cannot reach the Prefect server at {PREFECT_API_URL.value()} ({err}); is `prefect server start` running?"
        )


def demo(
    workdir: Path = typer.Option(
        Path("precal-demo"), help="Folder for the store, packed shards, runs and metrics.json."
    ),
):
    """Run the whole pipeline on the bundled AV-digits sample (offline, a few minutes on CPU).

    Extracts text, audio and video features, packs them, trains a late-fusion model without calibration and
    with the "reliability" calibration (both with corruption augmentation) over 3 seeds, and prints test
    accuracy and macro-F1, then accuracy on clean and on perturbed test samples and how well the
    calibration's scales find the perturbed modality (AUROC), each mean +- std.
    """
    from flows.demo import demo_flow

    result = run_guarded(lambda: demo_flow(str(workdir.resolve())))
    print_variants(result["variants"], title="AV-digits demo: test split (mean +- std over seeds)")
    print_robustness(result["robustness"])
    console.print(f"metrics: {result['metrics_path']}")


def print_robustness(variants: dict) -> None:
    table = Table(
        title="Trained with corruption augmentation, tested on the clean test samples and on the same "
        "recordings with one modality perturbed in each (accuracy; AUROC: the calibration's scales "
        "find the perturbed modality, 0.5 = chance)"
    )
    for column in ("variant", "runs", "clean", "perturbed", "AUROC"):
        table.add_column(column)

    def cell(value):
        return "-" if value is None else f"{value['mean']:.3f} +- {value['std']:.3f}"

    for name, v in variants.items():
        table.add_row(name, str(v["runs"]), cell(v["clean"]), cell(v["pert"]), cell(v["auroc"]))
    console.print(table)
