"""What the command groups share: the console, failing with a message, option help texts, reading the
manifest and the extraction config from command-line options, and the result tables."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()

ENCODER_HELP = "Encoder per modality as MODALITY=NAME (repeatable), e.g. audio=mfcc or text=hf. See `precal encoders`."
OPTION_HELP = "Encoder option as MODALITY.KEY=VALUE (repeatable), e.g. text.model=/models/bert or video.fps=5."
MODALITY_HELP = "Modalities to extract (repeatable; default: text, audio and video)."
OUTSIDE_ROOT_HELP = "Allow manifest paths outside the manifest's folder."


def fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(code)


def run_guarded(fn):
    """fn(); store errors, which name their file and what to do, are printed as such, not as tracebacks."""
    from storage.catalog import CatalogError
    from storage.holders import StoreLockedError
    from storage.shards import StoreFullError

    try:
        return fn()
    except (StoreLockedError, CatalogError, StoreFullError) as err:
        fail(str(err))


def option_value(text: str):
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
        chosen[mod].options[opt] = option_value(value)
    try:
        return ExtractConfig(modalities=chosen, **settings)
    except ValueError as err:
        fail(str(err))


def load_manifest(path: str | Path, allow_outside_root: bool = False):
    """Read leniently: bad rows are reported and left out, the good samples go on."""
    from pipeline.manifest import ManifestError, read_manifest

    try:
        manifest = read_manifest(path, allow_outside_root=allow_outside_root, check_files=False, strict=False)
    except ManifestError as err:
        fail(str(err))
    for problem in manifest.rejected:
        console.print(f"[yellow]rejected[/yellow] {path}: {problem}", soft_wrap=True)
    return manifest


def print_extraction(report: dict) -> None:
    table = Table(title="extraction")
    for column in ("modality", "encoder", "ok", "failed", "skipped", "shards", "seconds"):
        table.add_column(column)
    for s in report["modalities"]:
        table.add_row(
            s["modality"],
            s["encoder"],
            str(s["ok"]),
            str(s["failed"]),
            str(s["skipped"]),
            str(s["shards_written"]),
            f"{s['seconds']:.1f}",
        )
    console.print(table)
    for s in report["modalities"]:
        for line in s["errors"][:10]:
            console.print(f"[yellow]failed[/yellow] {s['modality']}: {line}", soft_wrap=True)
        if len(s["errors"]) > 10:
            console.print(f"... and {len(s['errors']) - 10} more ({s['modality']}); `precal status --failed` lists all")


def print_variants(variants: dict, title: str) -> None:
    table = Table(title=title)
    metrics = sorted({k for v in variants.values() for k in v["test"]})
    for column in ("variant", "runs", *metrics):
        table.add_column(column)
    for name, variant in variants.items():
        cells = [f"{variant['test'][k]['mean']:.4f} +- {variant['test'][k]['std']:.4f}" for k in metrics]
        table.add_row(name, str(variant["runs"]), *cells)
    console.print(table)
