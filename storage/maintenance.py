"""Store upkeep: status counts, shard verification against recorded sha256, garbage collection."""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from storage import remote
from storage.catalog import Catalog
from storage.layout import Store, is_temporary, pack_file
from storage.shards import sha256_file


def status(store: Path) -> dict:
    """Counts per (modality, encoder, fingerprint) from the newest catalog rows, and the failures.

    An `ok` row whose shard is gone counts as `missing`, not ok: its features cannot be read
    (`precal verify --repair` extracts them again)."""
    latest, layout = Catalog(store).latest(), Store(store)
    present: dict[str, bool] = {}  # shard -> exists, one stat per shard
    groups: dict[tuple, Counter] = {}
    for row in latest:
        state = row["status"]
        if state == "ok" and not present.setdefault(row["shard"], layout.shard_path(row["shard"]).is_file()):
            state = "missing"
        groups.setdefault((row["modality"], row["encoder"], row["fingerprint"]), Counter())[state] += 1
    features = [
        {"modality": m, "encoder": e, "fingerprint": f, "ok": c["ok"], "failed": c["failed"], "missing": c["missing"]}
        for (m, e, f), c in sorted(groups.items())
    ]
    failed = [
        {k: row[k] for k in ("sample_id", "modality", "encoder", "fingerprint", "error")}
        for row in latest
        if row["status"] == "failed"
    ]
    packs = [p.name for p in layout.pack_dirs() if pack_file(p).is_file()]
    return {
        "store": str(store),
        "features": features,
        "failed": sorted(failed, key=lambda r: (r["modality"], r["sample_id"])),
        "packs": packs,
    }


@dataclass
class VerifyReport:
    checked: int = 0
    bad: dict[str, str] = field(default_factory=dict)  # shard (relative) -> reason
    samples: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # shard -> [(sample_id, modality)]


def verify(store: Path, progress=None) -> VerifyReport:
    """Check every shard the catalog relies on: present, and bytes matching the recorded sha256."""
    report = VerifyReport()
    by_shard: dict[str, list[dict]] = {}
    for row in Catalog(store).latest():
        if row["status"] == "ok":
            by_shard.setdefault(row["shard"], []).append(row)
    for shard, rows in progress(by_shard.items()) if progress else by_shard.items():
        report.checked += 1
        path = Store(store).shard_path(shard)
        if not path.is_file():
            report.bad[shard] = "missing"
        elif sha256_file(path) != rows[0]["shard_sha256"]:
            report.bad[shard] = "sha256 mismatch (damaged or modified)"
        if shard in report.bad:
            report.samples[shard] = [(r["sample_id"], r["modality"]) for r in rows]
    return report


def gc(store: Path, dry_run: bool = False, set_aside_damaged: bool = False) -> list[Path]:
    """Remove feature shards and packs nothing references, and temporaries left by crashes.

    With `set_aside_damaged`, unreadable catalog parts are first renamed `*.damaged` (their samples
    are then extracted again) instead of stopping gc with an error naming them."""
    catalog = Catalog(store)
    if set_aside_damaged and not dry_run:
        catalog.set_aside_damaged()
    referenced = {row["shard"] for row in catalog.latest() if row["status"] == "ok"}
    layout = Store(store)
    doomed = [path for path in layout.feature_shards() if is_temporary(path) or layout.relative(path) not in referenced]
    doomed += layout.temporaries()
    if not dry_run:
        for path in doomed:
            _remove(path)
        catalog.compact()
    return doomed


def _remove(path: Path) -> None:
    """Delete a file, a link (never what it points to) or a folder left by a crashed pack."""
    if remote.is_remote(path):
        remote.remove(path)  # an object: no links, and no folders
    elif path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
