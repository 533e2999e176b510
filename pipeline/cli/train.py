"""Training and its results: `precal train`, `evaluate`, `experiment` (a grid or the calibration protocol) and
`analyse` (the analyses and HTML report of trained runs)."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.cli.common import console, fail, print_variants, run_guarded
from storage.remote import location


def train(config: Path = typer.Argument(..., help="Training config (YAML/JSON): pack, out, backbone, method, ...")):
    """Train one model on packed shards; select on valid, report test; resumes after a kill."""
    from trainers.config import load_train_config
    from trainers.train import USER_ERRORS
    from trainers.train import train as run_training

    try:
        metrics = run_training(load_train_config(config))
    except USER_ERRORS as err:
        fail(str(err))
    console.print_json(data={k: metrics[k] for k in ("best_epoch", "valid", "test") if k in metrics})


def evaluate(
    checkpoint: str = typer.Argument(..., help="A checkpoint written by `precal train` (best.pt), a path or a URL."),
    pack_dir: str = typer.Option(..., "--pack", help="Packed shards folder (STORE/packed/<pack-id>), a path or a URL."),
    split: str = typer.Option("test", help="train, valid or test."),
):
    """Evaluate a trained checkpoint on one split of a pack and print its metrics."""
    from trainers.train import USER_ERRORS
    from trainers.train import evaluate as run_evaluation

    if not location(checkpoint).is_file():
        fail(f"{checkpoint}: no such checkpoint")
    try:
        console.print_json(data=run_evaluation(checkpoint, pack_dir, split))
    except USER_ERRORS as err:
        fail(str(err))


def experiment(
    config: Path = typer.Argument(..., help="Experiment config: pack(s), backbones, methods, seeds, train options."),
    analyse_runs: bool = typer.Option(
        True, "--analyse/--no-analyse", help="Analyse every run afterwards (report.html)."
    ),
    manifest: Path | None = typer.Option(None, help="Source manifest, for raw-level corruption in the analysis."),
):
    """Run a grid (backbones x methods x seeds); write results.json and results.md (mean and std over seeds),
    then the analyses and HTML report of every run (see `precal analyse`).

    A preset with a `protocol:` section (pipeline/presets/avdigits-protocol.yaml) runs the calibration
    protocol instead: it builds the AV-digits test sets it needs (perturbed share 0.0 and 1.0), trains the
    grid, and writes results.json and results.md with paired bootstrap intervals."""
    from pipeline.protocol import is_protocol_file
    from trainers.config import load_experiment_config
    from trainers.config_file import ConfigError
    from trainers.experiment import run_experiment, summarize

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
        from pipeline.analysis import analyse as analyse_experiment

        analyse_experiment(experiment_config.out, manifest=manifest, raw=manifest is not None)
        console.print(f"analysis: {location(experiment_config.out) / 'analysis'}")


def run_protocol_preset(config: Path) -> None:
    from pipeline.protocol import load_protocol_config, run_protocol
    from trainers.config_file import ConfigError

    try:
        protocol = load_protocol_config(config)
        results = run_protocol(protocol)
    except ConfigError as err:
        fail(str(err))
    for v in results["verdicts"]:
        console.print(
            f"{v['regime']} / {v['backbone']} / {v['method']}: AUROC on pert {v['auroc_pert']}; against "
            f"{v['baseline']}, pert {v['pert_vs_baseline']}, clean {v['clean_vs_baseline']}",
            soft_wrap=True,
        )
    console.print(f"results: {location(protocol.out) / 'results.md'}")


def analyse(
    run: str = typer.Argument(
        ...,
        help="A training run folder (metrics.json + best.pt) or an experiment folder "
        "holding several runs (each is analysed, plus a table of all); a path or a URL.",
    ),
    manifest: Path | None = typer.Option(
        None,
        help="Manifest the pack was built from: enables raw-level "
        "corruption (test media corrupted, re-extracted into the store).",
    ),
    store: Path | None = typer.Option(
        None, help="Feature store the pack was made in (default: the store holding the pack, STORE/packed/<pack-id>)."
    ),
    perturbations: Path | None = typer.Option(
        None,
        help="Perturbation table (sample_id, modality, kind "
        "clean|conflict|degraded); default: perturbations.csv beside "
        "--manifest when there is one.",
    ),
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
    from pipeline.analysis import analyse as run_analysis

    try:
        chosen = parse_severities(severities)
    except ValueError as err:
        fail(f"--severities {severities!r}: {err}")
    folder = location(run)
    if not folder.is_dir():
        fail(f"{run}: no such folder")
    if manifest is not None and not manifest.is_file():
        fail(f"--manifest {manifest}: no such file")
    try:
        result = run_guarded(
            lambda: run_analysis(
                folder,
                manifest=manifest,
                store=store,
                perturbations=perturbations,
                severities=chosen,
                raw=not no_raw,
                num_workers=workers,
                tsne_points=tsne_points,
            )
        )
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
    for note in result.get("notes", []):
        console.print(f"[yellow]note:[/yellow] {note}", soft_wrap=True)
    console.print(f"report: {folder / 'analysis' / 'report.html'}", soft_wrap=True, highlight=False)


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
