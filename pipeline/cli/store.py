"""Store maintenance: `precal status`, `precal verify` (optionally repairing) and `precal gc`."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from pipeline.cli.common import OUTSIDE_ROOT_HELP, console, fail, load_manifest, run_guarded


def status(
    store: str = typer.Option(..., help="Feature store: a folder or a URL (s3://bucket/store)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    failed: bool = typer.Option(False, "--failed", help="List every failed sample with its reason."),
):
    """Show what the store holds: ok/failed counts per modality and encoder, packs, failures."""
    from storage.maintenance import status as store_status
    from storage.remote import location

    store = location(store)
    if not store.is_dir():
        fail(f"{store}: no such store")
    info = run_guarded(lambda: store_status(store))
    if as_json:
        if not failed:
            info["failed"] = len(info["failed"])
        print(json.dumps(info, indent=2))
        return
    table = Table(title=f"store {store}")
    for column in ("modality", "encoder", "fingerprint", "ok", "failed", "missing"):
        table.add_column(column)
    for row in info["features"]:
        table.add_row(
            row["modality"],
            row["encoder"],
            row["fingerprint"],
            str(row["ok"]),
            str(row["failed"]),
            f"[red]{row['missing']}[/red]" if row["missing"] else "0",
        )
    console.print(table)
    console.print(f"packs: {', '.join(info['packs']) or 'none'}")
    if failed:
        for row in info["failed"]:
            console.print(f"{row['modality']:5} {row['sample_id']}: {row['error']}", soft_wrap=True)


def verify(
    store: str = typer.Option(..., help="Feature store: a folder or a URL (s3://bucket/store)."),
    repair: bool = typer.Option(False, help="Re-extract what a bad or missing shard held (needs --manifest)."),
    manifest: str | None = typer.Option(None, help="The manifest the store was extracted from (for --repair)."),
    allow_outside_root: bool = typer.Option(False, help=OUTSIDE_ROOT_HELP),
    trust_remote_code: bool = typer.Option(
        False,
        help="For --repair: allow an encoder recorded with "
        "trust_remote_code to run the Python code shipped with its model.",
    ),
):
    """Check every shard against the sha256 recorded in the catalog, and every pack's shards against its
    pack.json, and name each bad one."""
    from tqdm.auto import tqdm

    from storage.maintenance import verify as verify_store

    report = run_guarded(lambda: verify_store(store, progress=lambda it: tqdm(list(it), desc="verify", unit="shard")))
    for shard, reason in sorted(report.bad.items()):
        console.print(f"[red]bad[/red] {shard}: {reason} ({len(report.samples[shard])} samples)")
    console.print(f"{report.checked} shards checked, {len(report.bad)} bad")
    bad_packs = verify_packs(store)
    if repair and report.bad:
        if manifest is None:
            fail("--repair needs --manifest (the samples are extracted again from their sources)")
        repair_shards(store, report, manifest, allow_outside_root, trust_remote_code)
    elif report.bad:
        raise typer.Exit(1)
    if bad_packs:
        raise typer.Exit(1)


def repair_shards(store: str, report, manifest: str, allow_outside_root: bool, trust_remote_code: bool) -> None:
    """Extract again, from their sources, the samples the bad shards of `report` held."""
    from pipeline.repair import RepairError, plan_repair, repair_store

    try:
        jobs = plan_repair(store, report, trust_remote_code=trust_remote_code)
        for job in jobs:
            console.print(f"repair will load the {job.describe()}", soft_wrap=True)
        samples = load_manifest(manifest, allow_outside_root)
        summaries = run_guarded(lambda: repair_store(store, samples, report, jobs))
    except RepairError as err:
        fail(str(err))
    console.print(f"repaired: {sum(s.ok for s in summaries)} samples re-extracted")


def verify_packs(store: str) -> int:
    """Name each pack whose shards do not match its pack.json; return how many."""
    from storage.packinfo import verify_packs as check_packs

    results = check_packs(store)
    bad = {pack_id: reason for pack_id, reason in results.items() if reason}
    for pack_id, reason in sorted(bad.items()):
        console.print(
            f"[red]bad pack[/red] packed/{pack_id}: {reason} (`precal pack` with the same manifest "
            "and encoders rebuilds it)",
            soft_wrap=True,
        )
    console.print(f"{len(results)} packs checked, {len(bad)} bad")
    return len(bad)


def gc(
    store: str = typer.Option(..., help="Feature store: a folder or a URL (s3://bucket/store)."),
    dry_run: bool = typer.Option(False, help="Only list what would be removed."),
    set_aside_damaged: bool = typer.Option(
        False,
        help="Rename unreadable catalog parts to *.damaged (their samples are extracted again) instead of stopping.",
    ),
):
    """Remove shards nothing references, temporaries left by crashes; compact the catalog."""
    from storage.lock import store_lock
    from storage.maintenance import gc as store_gc

    def collect():
        with store_lock(store):
            return store_gc(store, dry_run=dry_run, set_aside_damaged=set_aside_damaged)

    removed = run_guarded(collect)
    for path in removed:
        console.print(f"{'would remove' if dry_run else 'removed'} {path}")
    console.print(f"{len(removed)} paths {'to remove' if dry_run else 'removed'}")
