"""The `precal` command line: every stage of the pipeline, each with its own --help."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from flows.prefect_env import apply_offline_defaults

apply_offline_defaults()

app = typer.Typer(
    help="precal: extract multimodal features once, cache them in WebDataset shards, and train "
    "fusion models with contextual calibration on them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
datasets_app = typer.Typer(help="Build or import data sets into precal manifests.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
console = Console()

ENCODER_HELP = "Encoder per modality as MODALITY=NAME (repeatable), e.g. audio=mfcc or text=hf. See `precal encoders`."
OPTION_HELP = "Encoder option as MODALITY.KEY=VALUE (repeatable), e.g. text.model=/models/bert or video.fps=5."
MODALITY_HELP = "Modalities to extract (repeatable; default: text, audio and video)."


def fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(code)


def _value(text: str):
    """Option values from the command line: JSON where it parses (numbers, true, lists), else text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def extract_config(modality: list[str] | None, encoder: list[str] | None, option: list[str] | None, **settings):
    from pipeline.config import EncoderChoice, ExtractConfig, default_modalities

    chosen = {m: EncoderChoice() for m in modality} if modality else default_modalities()
    for item in encoder or []:
        name, sep, value = item.partition("=")
        if not sep or name not in chosen:
            fail(f"--encoder {item!r}: expected MODALITY=NAME with MODALITY in {sorted(chosen)}")
        chosen[name].name = value
    for item in option or []:
        key, sep, value = item.partition("=")
        mod, dot, opt = key.partition(".")
        if not (sep and dot) or mod not in chosen:
            fail(f"--option {item!r}: expected MODALITY.KEY=VALUE with MODALITY in {sorted(chosen)}")
        chosen[mod].options[opt] = _value(value)
    try:
        return ExtractConfig(modalities=chosen, **settings)
    except ValueError as err:
        fail(str(err))


def load_manifest(path: Path, allow_outside_root: bool = False):
    """Read leniently: bad rows are reported and left out, the good samples go on."""
    from pipeline.manifest import ManifestError, read_manifest

    try:
        manifest = read_manifest(path, allow_outside_root=allow_outside_root, check_files=False, strict=False)
    except ManifestError as err:
        fail(str(err))
    for problem in manifest.rejected:
        console.print(f"[yellow]rejected[/yellow] {path}: {problem}", soft_wrap=True)
    return manifest


@app.command()
def extract(
    manifest: Path = typer.Option(..., help="Manifest (CSV, JSONL or Parquet) listing the samples."),
    store: Path = typer.Option(..., help="Feature store folder (created if missing)."),
    modality: Optional[list[str]] = typer.Option(None, "--modality", "-m", help=MODALITY_HELP),
    encoder: Optional[list[str]] = typer.Option(None, "--encoder", "-e", help=ENCODER_HELP),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help=OPTION_HELP),
    dtype: str = typer.Option("float16", help="Storage dtype of features: float16 or float32."),
    batch_size: int = typer.Option(16, help="Clips per encoder batch on the device."),
    workers: int = typer.Option(1, help="Decoding worker processes (0 decodes in the main process)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
    shard_size: int = typer.Option(256, help="Samples per feature shard (one commit each)."),
    max_failed: float = typer.Option(0.05, help="Exit non-zero when more than this share of extractions failed."),
    retry_failed: bool = typer.Option(False, help="Try again samples that failed before with unchanged inputs."),
    allow_outside_root: bool = typer.Option(False, help="Allow manifest paths outside the manifest's folder."),
    wait: float = typer.Option(0.0, help="Seconds to wait for another process holding the store's lock."),
):
    """Extract features of every sample in MANIFEST into STORE, skipping what is already done.

    Runs as a Prefect flow. Bad inputs become `failed` catalog rows with a reason; the run goes on.
    """
    from flows.extract import extract_flow

    config = extract_config(modality, encoder, option, dtype=dtype, batch_size=batch_size, num_workers=workers,
                            device=device, shard_size=shard_size, max_failed=max_failed, retry_failed=retry_failed,
                            allow_outside_root=allow_outside_root)
    load_manifest(manifest, allow_outside_root)
    report = _run_guarded(lambda: extract_flow(str(manifest), str(store), config, wait))
    print_extraction(report)
    if report["failed_share"] > max_failed:
        fail(f"{report['failed_share']:.1%} of extractions failed (above --max-failed {max_failed:.1%}); "
             f"see `precal status --store {store} --failed`", code=1)


def _run_guarded(fn):
    """fn(); store errors, which name their file and what to do, are printed as such, not as tracebacks."""
    from storage.catalog import CatalogError
    from storage.lock import StoreLockedError
    from storage.shards import StoreFullError

    try:
        return fn()
    except (StoreLockedError, CatalogError, StoreFullError) as err:
        fail(str(err))


def print_extraction(report: dict) -> None:
    table = Table(title="extraction")
    for column in ("modality", "encoder", "ok", "failed", "skipped", "shards", "seconds"):
        table.add_column(column)
    for s in report["modalities"]:
        table.add_row(s["modality"], s["encoder"], str(s["ok"]), str(s["failed"]), str(s["skipped"]),
                      str(s["shards_written"]), f"{s['seconds']:.1f}")
    console.print(table)
    for s in report["modalities"]:
        for line in s["errors"][:10]:
            console.print(f"[yellow]failed[/yellow] {s['modality']}: {line}", soft_wrap=True)
        if len(s["errors"]) > 10:
            console.print(f"... and {len(s['errors']) - 10} more ({s['modality']}); `precal status --failed` lists all")


@app.command()
def status(
    store: Path = typer.Option(..., help="Feature store folder."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    failed: bool = typer.Option(False, "--failed", help="List every failed sample with its reason."),
):
    """Show what the store holds: ok/failed counts per modality and encoder, packs, failures."""
    from storage.maintenance import status as store_status

    if not store.is_dir():
        fail(f"{store}: no such store")
    info = _run_guarded(lambda: store_status(store))
    if as_json:
        if not failed:
            info["failed"] = len(info["failed"])
        print(json.dumps(info, indent=2))
        return
    table = Table(title=f"store {store}")
    for column in ("modality", "encoder", "fingerprint", "ok", "failed", "missing"):
        table.add_column(column)
    for row in info["features"]:
        table.add_row(row["modality"], row["encoder"], row["fingerprint"], str(row["ok"]), str(row["failed"]),
                      f"[red]{row['missing']}[/red]" if row["missing"] else "0")
    console.print(table)
    console.print(f"packs: {', '.join(info['packs']) or 'none'}")
    if failed:
        for row in info["failed"]:
            console.print(f"{row['modality']:5} {row['sample_id']}: {row['error']}", soft_wrap=True)


@app.command()
def verify(
    store: Path = typer.Option(..., help="Feature store folder."),
    repair: bool = typer.Option(False, help="Re-extract what a bad or missing shard held (needs --manifest)."),
    manifest: Optional[Path] = typer.Option(None, help="The manifest the store was extracted from (for --repair)."),
    allow_outside_root: bool = typer.Option(False, help="Allow manifest paths outside the manifest's folder."),
    trust_remote_code: bool = typer.Option(False, help="For --repair: allow an encoder recorded with "
                                           "trust_remote_code to run the Python code shipped with its model."),
):
    """Check every shard against the sha256 recorded in the catalog, and every pack's shards against its
    pack.json, and name each bad one."""
    from pipeline.repair import RepairError, plan_repair, repair_store
    from storage.maintenance import verify as verify_store

    from tqdm.auto import tqdm

    report = _run_guarded(lambda: verify_store(store, progress=lambda it: tqdm(list(it), desc="verify", unit="shard")))
    for shard, reason in sorted(report.bad.items()):
        console.print(f"[red]bad[/red] {shard}: {reason} ({len(report.samples[shard])} samples)")
    console.print(f"{report.checked} shards checked, {len(report.bad)} bad")
    bad_packs = _verify_packs(store)
    if repair and report.bad:
        if manifest is None:
            fail("--repair needs --manifest (the samples are extracted again from their sources)")
        try:
            jobs = plan_repair(store, report, trust_remote_code=trust_remote_code)
            for job in jobs:
                console.print(f"repair will load the {job.describe()}", soft_wrap=True)
            samples = load_manifest(manifest, allow_outside_root)
            summaries = _run_guarded(lambda: repair_store(store, samples, report, jobs))
        except RepairError as err:
            fail(str(err))
        console.print(f"repaired: {sum(s.ok for s in summaries)} samples re-extracted")
    elif report.bad:
        raise typer.Exit(1)
    if bad_packs:
        raise typer.Exit(1)


def _verify_packs(store: Path) -> int:
    """Name each pack whose shards do not match its pack.json; return how many."""
    from storage.packinfo import verify_packs

    results = verify_packs(store)
    bad = {pack_id: reason for pack_id, reason in results.items() if reason}
    for pack_id, reason in sorted(bad.items()):
        console.print(f"[red]bad pack[/red] packed/{pack_id}: {reason} (`precal pack` with the same manifest "
                      "and encoders rebuilds it)", soft_wrap=True)
    console.print(f"{len(results)} packs checked, {len(bad)} bad")
    return len(bad)


@app.command()
def gc(
    store: Path = typer.Option(..., help="Feature store folder."),
    dry_run: bool = typer.Option(False, help="Only list what would be removed."),
    set_aside_damaged: bool = typer.Option(False, help="Rename unreadable catalog parts to *.damaged (their "
                                           "samples are extracted again) instead of stopping."),
):
    """Remove shards nothing references, temporaries left by crashes; compact the catalog."""
    from storage.lock import store_lock
    from storage.maintenance import gc as store_gc

    def collect():
        with store_lock(store):
            return store_gc(store, dry_run=dry_run, set_aside_damaged=set_aside_damaged)

    removed = _run_guarded(collect)
    for path in removed:
        console.print(f"{'would remove' if dry_run else 'removed'} {path}")
    console.print(f"{len(removed)} paths {'to remove' if dry_run else 'removed'}")


@app.command()
def pack(
    manifest: Path = typer.Option(..., help="Manifest whose samples to pack (removed samples drop out)."),
    store: Path = typer.Option(..., help="Feature store folder."),
    modality: Optional[list[str]] = typer.Option(None, "--modality", "-m", help=MODALITY_HELP),
    encoder: Optional[list[str]] = typer.Option(None, "--encoder", "-e", help=ENCODER_HELP),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help=OPTION_HELP),
    dtype: str = typer.Option("float16", help="Storage dtype the features were extracted with."),
    allow_outside_root: bool = typer.Option(False, help="Allow manifest paths outside the manifest's folder."),
):
    """Gather each sample's modalities into training shards under STORE/packed/<pack-id>."""
    from pipeline.extract import selection_for
    from storage.pack import pack as pack_store

    config = extract_config(modality, encoder, option, dtype=dtype)
    samples = load_manifest(manifest, allow_outside_root)
    result = _run_guarded(lambda: pack_store(store, samples, selection_for(store, config)))
    if result.rebuilt:
        console.print(f"[yellow]the pack under this id was damaged ({result.rebuilt}): rebuilt it[/yellow]",
                      soft_wrap=True)
    verb = "wrote" if result.created else "already packed"
    console.print(f"{verb} {result.path} ({', '.join(f'{k}: {v}' for k, v in result.counts.items())})")
    if result.dropped:
        console.print(f"[yellow]{len(result.dropped)} samples had no extracted modality and were left out[/yellow]")


@app.command()
def demo(
    workdir: Path = typer.Option(Path("precal-demo"), help="Folder for the store, packed shards, runs and metrics.json."),
):
    """Run the whole pipeline on the bundled AV-digits sample (offline, a few minutes on CPU).

    Extracts text, audio and video features, packs them, trains a late-fusion model without calibration and
    with the "reliability" calibration (both with corruption augmentation) over 3 seeds, and prints test
    accuracy and macro-F1, then accuracy on clean and on perturbed test samples and how well the
    calibration's scales find the perturbed modality (AUROC), each mean +- std.
    """
    from flows.demo import demo_flow

    result = _run_guarded(lambda: demo_flow(str(workdir.resolve())))
    print_variants(result["variants"], title="AV-digits demo: test split (mean +- std over seeds)")
    print_robustness(result["robustness"])
    console.print(f"metrics: {result['metrics_path']}")


def print_robustness(variants: dict) -> None:
    table = Table(title="Trained with corruption augmentation, tested on the clean test samples and on the same "
                        "recordings with one modality perturbed in each (accuracy; AUROC: the calibration's scales "
                        "find the perturbed modality, 0.5 = chance)")
    for column in ("variant", "runs", "clean", "perturbed", "AUROC"):
        table.add_column(column)

    def cell(value):
        return "-" if value is None else f"{value['mean']:.3f} +- {value['std']:.3f}"

    for name, v in variants.items():
        table.add_row(name, str(v["runs"]), cell(v["clean"]), cell(v["pert"]), cell(v["auroc"]))
    console.print(table)


def print_variants(variants: dict, title: str) -> None:
    table = Table(title=title)
    metrics = sorted({k for v in variants.values() for k in v["test"]})
    for column in ("variant", "runs", *metrics):
        table.add_column(column)
    for name, variant in variants.items():
        cells = [f"{variant['test'][k]['mean']:.4f} +- {variant['test'][k]['std']:.4f}" for k in metrics]
        table.add_row(name, str(variant["runs"]), *cells)
    console.print(table)


@app.command()
def train(config: Path = typer.Argument(..., help="Training config (YAML/JSON): pack, out, backbone, method, ...")):
    """Train one model on packed shards; select on valid, report test; resumes after a kill."""
    from trainers.config import load_train_config
    from trainers.train import USER_ERRORS, train as run_training

    try:
        metrics = run_training(load_train_config(config))
    except USER_ERRORS as err:
        fail(str(err))
    console.print_json(data={k: metrics[k] for k in ("best_epoch", "valid", "test") if k in metrics})


@app.command()
def evaluate(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by `precal train` (best.pt)."),
    pack_dir: Path = typer.Option(..., "--pack", help="Packed shards folder (STORE/packed/<pack-id>)."),
    split: str = typer.Option("test", help="train, valid or test."),
):
    """Evaluate a trained checkpoint on one split of a pack and print its metrics."""
    from trainers.train import USER_ERRORS, evaluate as run_evaluation

    if not checkpoint.is_file():
        fail(f"{checkpoint}: no such checkpoint")
    try:
        console.print_json(data=run_evaluation(checkpoint, pack_dir, split))
    except USER_ERRORS as err:
        fail(str(err))


@app.command()
def experiment(
    config: Path = typer.Argument(..., help="Experiment config: pack(s), backbones, methods, seeds, train options."),
    analyse_runs: bool = typer.Option(True, "--analyse/--no-analyse", help="Analyse every run afterwards (report.html)."),
    manifest: Optional[Path] = typer.Option(None, help="Source manifest, for raw-level corruption in the analysis."),
):
    """Run a grid (backbones x methods x seeds); write results.json and results.md (mean and std over seeds),
    then the analyses and HTML report of every run (see `precal analyse`).

    A preset with a `protocol:` section (pipeline/presets/avdigits-protocol.yaml) runs the calibration
    protocol instead: it builds the AV-digits test sets it needs (perturbed share 0.0 and 1.0), trains the
    grid, and writes results.json and results.md with paired bootstrap intervals."""
    from trainers.config import ConfigError, load_experiment_config
    from trainers.experiment import run_experiment, summarize
    from trainers.protocol import is_protocol_file

    if is_protocol_file(config):
        run_protocol_preset(config)
        return
    try:
        experiment_config = load_experiment_config(config)
        runs = run_experiment(experiment_config)
    except ConfigError as err:
        fail(str(err))
    print_variants(summarize(runs), title="test split (mean +- std over seeds)")
    if analyse_runs:
        from trainers.analysis.analyse import analyse as analyse_experiment

        analyse_experiment(experiment_config.out, manifest=manifest, raw=manifest is not None)
        console.print(f"analysis: {experiment_config.out / 'analysis'}")


def run_protocol_preset(config: Path) -> None:
    from pipeline.protocol import run_protocol
    from trainers.config import ConfigError
    from trainers.protocol import load_protocol_config

    try:
        protocol = load_protocol_config(config)
        results = run_protocol(protocol)
    except ConfigError as err:
        fail(str(err))
    for v in results["verdicts"]:
        console.print(f"{v['regime']} / {v['backbone']} / {v['method']}: AUROC on pert {v['auroc_pert']}; against "
                      f"{v['baseline']}, pert {v['pert_vs_baseline']}, clean {v['clean_vs_baseline']}", soft_wrap=True)
    console.print(f"results: {protocol.out / 'results.md'}")


@app.command()
def analyse(
    run: Path = typer.Argument(..., help="A training run folder (metrics.json + best.pt) or an experiment folder "
                               "holding several runs (each is analysed, plus a table of all)."),
    manifest: Optional[Path] = typer.Option(None, help="Manifest the pack was built from: enables raw-level "
                                            "corruption (test media corrupted, re-extracted into the store)."),
    store: Optional[Path] = typer.Option(None, help="Feature store the pack was made in (default: the store "
                                         "holding the pack, STORE/packed/<pack-id>)."),
    perturbations: Optional[Path] = typer.Option(None, help="Perturbation table (sample_id, modality, kind "
                                                 "clean|conflict|degraded); default: perturbations.csv beside "
                                                 "--manifest when there is one."),
    severities: str = typer.Option("1..5", help="Corruption severities, a range (1..5) or a list (1,3,5)."),
    no_raw: bool = typer.Option(False, "--no-raw", help="Feature-level corruption only, even with --manifest."),
    workers: int = typer.Option(1, help="Decoding worker processes when re-extracting raw variants."),
    tsne_points: int = typer.Option(1000, help="At most this many samples in each t-SNE picture."),
):
    """Analyse trained runs: modality removal, corruption, training dynamics, pictures, and whether the
    calibration scales find the perturbed modality.

    Writes RUN/analysis/report.html (self-contained), summary.md, analysis.json and figures/. With a
    perturbation table, a calibration run's metrics.json gets calibration_detection_auroc and
    calibration_detection_lowest_share. Without --manifest, corruption is feature-level only.

    Example (AV-digits, whose builder writes perturbations.csv beside its manifest):

      precal analyse runs/PACK/late-calibration-paper/seed-0 --manifest avdigits/manifest.csv --store store
    """
    from trainers.analysis.analyse import analyse as run_analysis

    try:
        chosen = parse_severities(severities)
    except ValueError as err:
        fail(f"--severities {severities!r}: {err}")
    if not run.is_dir():
        fail(f"{run}: no such folder")
    if manifest is not None and not manifest.is_file():
        fail(f"--manifest {manifest}: no such file")
    try:
        result = _run_guarded(lambda: run_analysis(run, manifest=manifest, store=store, perturbations=perturbations,
                                                   severities=chosen, raw=not no_raw, num_workers=workers,
                                                   tsne_points=tsne_points))
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
    for note in result.get("notes", []):
        console.print(f"[yellow]note:[/yellow] {note}", soft_wrap=True)
    console.print(f"report: {run / 'analysis' / 'report.html'}", soft_wrap=True, highlight=False)


def parse_severities(text: str) -> list[int]:
    """'1..5' or '1,3,5' -> sorted severities, each 1-5."""
    if ".." in text:
        low, high = (int(v) for v in text.split("..", 1))
        values = list(range(low, high + 1))
    else:
        values = [int(v) for v in text.split(",") if v.strip()]
    if not values or any(not 1 <= v <= 5 for v in values):
        raise ValueError("severities are whole numbers from 1 to 5")
    return sorted(set(values))


STAGES_HELP = "Stages to run, comma-separated, from extract,pack,train,evaluate (default: all, in that order)."
RUN_MODALITY_HELP = "Only this one of the config's modalities, in every stage (repeatable; default: all of them)."
RUNNER_HELP = "Where extraction chunks run: default (this process, one chunk at a time) or dask."
ADDRESS_HELP = "Dask scheduler to run chunks on, tcp://HOST:PORT (with --runner dask; default: a local cluster)."
CONFIG_HELP = "Pipeline config (YAML/JSON): manifest, store, out, extract {...}, train {experiment grid}."


def pipeline_options(config: Path, stages: Optional[str], modality: Optional[list[str]], runner: str,
                     address: Optional[str]) -> dict:
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


@app.command()
def run(
    config: Path = typer.Argument(..., help=CONFIG_HELP),
    stages: Optional[str] = typer.Option(None, help=STAGES_HELP),
    modality: Optional[list[str]] = typer.Option(None, "--modality", "-m", help=RUN_MODALITY_HELP),
    runner: str = typer.Option("default", help=RUNNER_HELP),
    address: Optional[str] = typer.Option(None, help=ADDRESS_HELP),
    wait: float = typer.Option(0.0, help="Seconds to wait for another process holding the store's lock."),
    export_experiment: Optional[Path] = typer.Option(None, help="Only write the experiment config the train stage "
                                                     "would run (recorded pack, keyed run folder) to this YAML file, "
                                                     "to launch it with torchrun; then exit."),
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
    from flows.pipeline import StageError, pipeline_flow
    from pipeline.config import ConfigError

    options = pipeline_options(config, stages, modality, runner, address)
    if export_experiment is not None:
        write_experiment(config, modality, export_experiment)
        return
    try:
        result = _run_guarded(lambda: pipeline_flow(str(config.resolve()), wait=wait, **options))
    except ConfigError as err:  # e.g. --stages train before any pack stage
        fail(str(err))
    except StageError as err:
        fail(str(err), code=1)
    print_stages(result)


def write_experiment(config: Path, modality: Optional[list[str]], path: Path) -> None:
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
    console.print(f"record: {Path(result['out']) / 'stages.json'}", soft_wrap=True, highlight=False)


@app.command()
def schedule(
    config: Path = typer.Argument(..., help=CONFIG_HELP),
    cron: Optional[str] = typer.Option(None, help="Cron schedule, e.g. '0 3 * * *' (every night at 03:00)."),
    interval: Optional[float] = typer.Option(None, help="Run every this many seconds instead of --cron."),
    name: Optional[str] = typer.Option(None, help="Deployment name (default: the config file's name)."),
    stages: Optional[str] = typer.Option(None, help=STAGES_HELP),
    modality: Optional[list[str]] = typer.Option(None, "--modality", "-m", help=RUN_MODALITY_HELP),
    runner: str = typer.Option("default", help=RUNNER_HELP),
    address: Optional[str] = typer.Option(None, help=ADDRESS_HELP),
):
    """Serve the pipeline on CONFIG as a scheduled Prefect deployment (runs until stopped with Ctrl-C).

    Needs a Prefect server: start one with `prefect server start`, then point precal at it with
    `prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api`. Each scheduled run re-reads CONFIG
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
        fail("no Prefect server is configured. Start one (`prefect server start`) and run "
             "`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api`, then run this again")
    options = pipeline_options(config, stages, modality, runner, address)
    try:
        serve_pipeline(config, name=name or config.stem, cron=cron, interval=interval, parameters=options)
    except ValueError as err:  # e.g. a cron expression Prefect cannot read
        fail(str(err))
    except httpx.HTTPError as err:
        fail(f"cannot reach the Prefect server at {PREFECT_API_URL.value()} ({err}); "
             "is `prefect server start` running?")


@app.command()
def encoders():
    """List the encoders each modality can use (names for --encoder)."""
    from extractors import list_encoders

    for modality, names in list_encoders().items():
        console.print(f"{modality}: {', '.join(names)}")


@datasets_app.command("avdigits")
def datasets_avdigits(
    fsdd: Path = typer.Option(..., help="FSDD recordings folder ({digit}_{speaker}_{index}.wav)."),
    mnist: Path = typer.Option(..., help="MNIST CSV (gzip ok): 784 pixel values then the label per row."),
    out: Path = typer.Option(..., help="Output folder for clips, manifest.csv and perturbations.csv."),
    per_class: Optional[int] = typer.Option(None, help="Samples per digit (default: every FSDD take)."),
    seed: int = typer.Option(0, help="Seed for pairing, motion and perturbations."),
    perturb_share: float = typer.Option(0.3, help="Share of samples with one modality in conflict or degraded."),
):
    """Build the AV-digits data set: H.264+AAC clips of a moving MNIST digit with FSDD speech, and transcripts."""
    from pipeline.datasets.avdigits import build_avdigits

    try:
        manifest = build_avdigits(fsdd=fsdd, mnist=mnist, out=out, per_class=per_class, seed=seed,
                                  perturb_share=perturb_share)
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
    console.print(f"wrote {manifest}")


@datasets_app.command("import")
def datasets_import(
    name: str = typer.Argument(..., help="cremad, ave, mosi, mosei, kinetics-sounds, ucf101, or mmsa "
                               "(an MMSA feature .pkl)."),
    root: Path = typer.Argument(..., help="The data set's folder as downloaded (for mmsa: the .pkl file)."),
    out: Path = typer.Option(..., help="Manifest to write (.csv, .jsonl or .parquet); inside ROOT keeps media "
                             "paths inside its folder."),
    lists: Optional[Path] = typer.Option(None, help="Folder of split lists: CREMA-D train.csv/test.csv (default: a "
                                         "seeded split); Kinetics-Sounds train.txt/val.txt/test.txt (default ROOT); "
                                         "UCF101 classInd.txt, train/testlistNN.txt (default ROOT/ucfTrainTestlist)."),
    split_number: Optional[int] = typer.Option(None, help="UCF101: official split 1, 2 or 3 (default 1)."),
    speaker_independent: bool = typer.Option(False, "--speaker-independent", help="CREMA-D: draw test and valid by "
                                             "whole actors, so no voice is in two splits."),
    valid_share: Optional[float] = typer.Option(None, help="Share of train moved to valid (seeded; default 0.1)."),
    test_share: Optional[float] = typer.Option(None, help="Share moved to test where no list fixes it (default 0.1)."),
    seed: Optional[int] = typer.Option(None, help="Seed of every drawn split (default 0)."),
    no_text: bool = typer.Option(False, "--no-text", help="CREMA-D: leave out the text (each clip's fixed sentence)."),
    store: Optional[Path] = typer.Option(None, help="mmsa: feature store to import the features into (and pack)."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="mmsa: allow unpickling the .pkl. A pickle can "
                                      "run code: only for files you trust."),
    report: Optional[Path] = typer.Option(None, help="Also write the full report (every unmapped item) as JSON."),
):
    """Map a benchmark's own layout to a manifest, and list what could not be mapped.

    Missing files, unknown labels and bad names are reported (not fatal); the manifest holds every
    sample that could be mapped. Examples:

      precal datasets import cremad CREMA-D --out CREMA-D/manifest.csv --speaker-independent

      precal datasets import ucf101 UCF-101 --out UCF-101/manifest.csv --lists ucfTrainTestlist --split-number 2

      precal datasets import mmsa MOSI/unaligned_50.pkl --out MOSI/features.csv --store store --allow-pickle
    """
    from pipeline.adapters import import_dataset, preset_path, summary_lines
    from pipeline.adapters.mmsa_features import import_and_pack, pickle_warning

    given = {"lists": lists, "split_number": split_number, "valid_share": valid_share, "test_share": test_share,
             "seed": seed, "speaker_independent": speaker_independent or None, "text": False if no_text else None}
    options = {k: v for k, v in given.items() if v is not None}
    if name == "mmsa" and (options or store is None):
        fail("mmsa takes --store (the feature store to import into) and --allow-pickle, and no split options")
    if name == "mmsa" and allow_pickle:
        console.print(f"[yellow]warning:[/yellow] {pickle_warning(root)}", soft_wrap=True)
    try:
        if name == "mmsa":
            result = _run_guarded(lambda: import_and_pack(root, out, store, allow_pickle=allow_pickle))
        else:
            result = import_dataset(name, root, out, **options)
    except (ValueError, PermissionError) as err:  # a layout that is not the data set's, bad options, pickle refused
        fail(str(err))
    for line in summary_lines(result):
        console.print(line, soft_wrap=True, markup=False, highlight=False)
    if report is not None:
        report.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    if result.manifest is None:
        raise typer.Exit(1)
    if preset_path(name).is_file():
        console.print(f"preset config: {preset_path(name)}", soft_wrap=True, highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
