"""Store upkeep: status counts, shard verification against recorded sha256, garbage collection."""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from storage.catalog import Catalog
from storage.shards import TMP_MARK, sha256_file


def status(store: Path) -> dict:
    """Counts per (modality, encoder, fingerprint) from the newest catalog rows, and the failures."""
    latest = Catalog(store).latest()
    groups: dict[tuple, Counter] = {}
    for row in latest:
        groups.setdefault((row["modality"], row["encoder"], row["fingerprint"]), Counter())[row["status"]] += 1
    features = [{"modality": m, "encoder": e, "fingerprint": f, "ok": c["ok"], "failed": c["failed"]}
                for (m, e, f), c in sorted(groups.items())]
    failed = [{k: row[k] for k in ("sample_id", "modality", "encoder", "fingerprint", "error")}
              for row in latest if row["status"] == "failed"]
    packs = sorted(p.name for p in (store / "packed").glob("*") if (p / "pack.json").is_file()) if (store / "packed").is_dir() else []
    return {"store": str(store), "features": features, "failed": sorted(failed, key=lambda r: (r["modality"], r["sample_id"])),
            "packs": packs}


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
    for shard, rows in (progress(by_shard.items()) if progress else by_shard.items()):
        report.checked += 1
        path = store / shard
        if not path.is_file():
            report.bad[shard] = "missing"
        elif sha256_file(path) != rows[0]["shard_sha256"]:
            report.bad[shard] = "sha256 mismatch (damaged or modified)"
        if shard in report.bad:
            report.samples[shard] = [(r["sample_id"], r["modality"]) for r in rows]
    return report


def gc(store: Path, dry_run: bool = False) -> list[Path]:
    """Remove feature shards and packs nothing references, and temporaries left by crashes."""
    referenced = {row["shard"] for row in Catalog(store).latest() if row["status"] == "ok"}
    doomed = []
    features = store / "features"
    if features.is_dir():
        for path in features.rglob("*.tar*"):
            rel = path.relative_to(store).as_posix()
            if TMP_MARK in path.name or rel not in referenced:
                doomed.append(path)
    for folder in (store / "packed", store / "catalog"):
        if folder.is_dir():
            doomed += [p for p in folder.iterdir() if TMP_MARK in p.name]
    if not dry_run:
        for path in doomed:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        Catalog(store).compact()
    return doomed
