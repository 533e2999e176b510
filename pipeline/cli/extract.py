"""`precal extract`, `precal pack` and `precal encoders`: from a manifest to cached features and training shards."""

from __future__ import annotations

import typer

from pipeline.cli.common import (
    ENCODER_HELP,
    MODALITY_HELP,
    OPTION_HELP,
    OUTSIDE_ROOT_HELP,
    console,
    extract_config,
    fail,
    load_manifest,
    print_extraction,
    run_guarded,
)


def extract(
    manifest: str = typer.Option(..., help="Manifest (CSV, JSONL or Parquet) listing the samples; a path or a URL."),
    store: str = typer.Option(..., help="Feature store: a folder (created if missing) or a URL (s3://bucket/store)."),
    modality: list[str] | None = typer.Option(None, "--modality", "-m", help=MODALITY_HELP),
    encoder: list[str] | None = typer.Option(None, "--encoder", "-e", help=ENCODER_HELP),
    option: list[str] | None = typer.Option(None, "--option", "-o", help=OPTION_HELP),
    dtype: str = typer.Option("float16", help="Storage dtype of features: float16 or float32."),
    batch_size: int = typer.Option(16, help="Clips per encoder batch on the device."),
    workers: int = typer.Option(1, help="Decoding worker processes (0 decodes in the main process)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
    shard_size: int = typer.Option(256, help="Samples per feature shard (one commit each)."),
    max_failed: float = typer.Option(0.05, help="Exit non-zero when more than this share of extractions failed."),
    retry_failed: bool = typer.Option(False, help="Try again samples that failed before with unchanged inputs."),
    allow_outside_root: bool = typer.Option(False, help=OUTSIDE_ROOT_HELP),
    wait: float = typer.Option(0.0, help="Seconds to wait for another process holding the store's lock."),
):
    """Extract features of every sample in MANIFEST into STORE, skipping what is already done.

    Runs as a Prefect flow when there is something to extract; with nothing new it only prints the
    summary (no flow, no model). Bad inputs become `failed` catalog rows with a reason; the run goes on.
    """
    from pipeline.extract_chunks import nothing_to_extract, start_decoding_server
    from pipeline.stages import StageError, check_failures

    config = extract_config(
        modality,
        encoder,
        option,
        dtype=dtype,
        batch_size=batch_size,
        num_workers=workers,
        device=device,
        shard_size=shard_size,
        max_failed=max_failed,
        retry_failed=retry_failed,
        allow_outside_root=allow_outside_root,
    )
    samples = load_manifest(manifest, allow_outside_root)
    report = run_guarded(lambda: nothing_to_extract(samples, store, config, wait))
    if report is None:
        start_decoding_server(config)
        from flows.extract import extract_flow  # imports Prefect: only when there is work

        report = run_guarded(lambda: extract_flow(str(manifest), str(store), config, wait))
    print_extraction(report)
    try:
        check_failures(report["failed_share"], max_failed, store)
    except StageError as err:
        fail(str(err), code=1)


def pack(
    manifest: str = typer.Option(..., help="Manifest whose samples to pack (removed samples drop out)."),
    store: str = typer.Option(..., help="Feature store: a folder or a URL (s3://bucket/store)."),
    modality: list[str] | None = typer.Option(None, "--modality", "-m", help=MODALITY_HELP),
    encoder: list[str] | None = typer.Option(None, "--encoder", "-e", help=ENCODER_HELP),
    option: list[str] | None = typer.Option(None, "--option", "-o", help=OPTION_HELP),
    dtype: str = typer.Option("float16", help="Storage dtype the features were extracted with."),
    allow_outside_root: bool = typer.Option(False, help=OUTSIDE_ROOT_HELP),
):
    """Gather each sample's modalities into training shards under STORE/packed/<pack-id>."""
    from pipeline.extract import selection_for
    from storage.pack import pack as pack_store

    config = extract_config(modality, encoder, option, dtype=dtype)
    samples = load_manifest(manifest, allow_outside_root)
    result = run_guarded(lambda: pack_store(store, samples, selection_for(store, config)))
    if result.rebuilt:
        console.print(
            f"[yellow]the pack under this id was damaged ({result.rebuilt}): rebuilt it[/yellow]", soft_wrap=True
        )
    verb = "wrote" if result.created else "already packed"
    console.print(f"{verb} {result.path} ({', '.join(f'{k}: {v}' for k, v in result.counts.items())})")
    if result.dropped:
        console.print(f"[yellow]{len(result.dropped)} samples had no extracted modality and were left out[/yellow]")


def encoders():
    """List the encoders each modality can use (names for --encoder)."""
    from extractors import list_encoders

    for modality, names in list_encoders().items():
        console.print(f"{modality}: {', '.join(names)}")
