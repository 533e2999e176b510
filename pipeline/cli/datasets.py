"""`precal datasets`: build the AV-digits data set, or map a benchmark's own layout to a manifest."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline.cli.common import console, fail, run_guarded

datasets_app = typer.Typer(help="Build or import data sets into precal manifests.", no_args_is_help=True)


@datasets_app.command("avdigits")
def avdigits(
    fsdd: Path = typer.Option(..., help="FSDD recordings folder ({digit}_{speaker}_{index}.wav)."),
    mnist: Path = typer.Option(..., help="MNIST CSV (gzip ok): 784 pixel values then the label per row."),
    out: Path = typer.Option(..., help="Output folder for clips, manifest.csv and perturbations.csv."),
    per_class: int | None = typer.Option(None, help="Samples per digit (default: every FSDD take)."),
    seed: int = typer.Option(0, help="Seed for pairing, motion and perturbations."),
    perturb_share: float = typer.Option(0.3, help="Share of samples with one modality in conflict or degraded."),
):
    """Build the AV-digits data set: H.264+AAC clips of a moving MNIST digit with FSDD speech, and transcripts."""
    from pipeline.datasets.avdigits import build_avdigits

    try:
        manifest = build_avdigits(
            fsdd=fsdd, mnist=mnist, out=out, per_class=per_class, seed=seed, perturb_share=perturb_share
        )
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
    console.print(f"wrote {manifest}")


@datasets_app.command("import")
def import_(
    name: str = typer.Argument(
        ..., help="cremad, ave, mosi, mosei, kinetics-sounds, ucf101, or mmsa (an MMSA feature .pkl)."
    ),
    root: Path = typer.Argument(..., help="The data set's folder as downloaded (for mmsa: the .pkl file)."),
    out: Path = typer.Option(
        ..., help="Manifest to write (.csv, .jsonl or .parquet); inside ROOT keeps media paths inside its folder."
    ),
    lists: Path | None = typer.Option(
        None,
        help="Folder of split lists: CREMA-D train.csv/test.csv (default: a "
        "seeded split); Kinetics-Sounds train.txt/val.txt/test.txt (default ROOT); "
        "UCF101 classInd.txt, train/testlistNN.txt (default ROOT/ucfTrainTestlist).",
    ),
    split_number: int | None = typer.Option(None, help="UCF101: official split 1, 2 or 3 (default 1)."),
    speaker_independent: bool = typer.Option(
        False,
        "--speaker-independent",
        help="CREMA-D: draw test and valid by whole actors, so no voice is in two splits.",
    ),
    valid_share: float | None = typer.Option(None, help="Share of train moved to valid (seeded; default 0.1)."),
    test_share: float | None = typer.Option(None, help="Share moved to test where no list fixes it (default 0.1)."),
    seed: int | None = typer.Option(None, help="Seed of every drawn split (default 0)."),
    no_text: bool = typer.Option(False, "--no-text", help="CREMA-D: leave out the text (each clip's fixed sentence)."),
    store: Path | None = typer.Option(None, help="mmsa: feature store to import the features into (and pack)."),
    allow_pickle: bool = typer.Option(
        False,
        "--allow-pickle",
        help="mmsa: allow unpickling the .pkl. A pickle can run code: only for files you trust.",
    ),
    report: Path | None = typer.Option(None, help="Also write the full report (every unmapped item) as JSON."),
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

    given = {
        "lists": lists,
        "split_number": split_number,
        "valid_share": valid_share,
        "test_share": test_share,
        "seed": seed,
        "speaker_independent": speaker_independent or None,
        "text": False if no_text else None,
    }
    options = {k: v for k, v in given.items() if v is not None}
    if name == "mmsa" and (options or store is None):
        fail("mmsa takes --store (the feature store to import into) and --allow-pickle, and no split options")
    if name == "mmsa" and allow_pickle:
        console.print(f"[yellow]warning:[/yellow] {pickle_warning(root)}", soft_wrap=True)
    try:
        if name == "mmsa":
            result = run_guarded(lambda: import_and_pack(root, out, store, allow_pickle=allow_pickle))
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
