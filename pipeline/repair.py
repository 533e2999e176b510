"""Repair: re-extract what damaged or missing shards held, with the encoder recorded beside them."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.extract import ModalitySummary, build_encoder, extract_modality, plan
from pipeline.manifest import Manifest
from storage.catalog import Catalog
from storage.lock import store_lock
from storage.maintenance import VerifyReport


def repair_store(store: Path, manifest: Manifest, report: VerifyReport) -> list[ModalitySummary]:
    with store_lock(store):
        for shard in report.bad:
            (store / shard).unlink(missing_ok=True)  # damaged bytes must not be read again
        groups = {Path(shard).parent for shard in report.bad}  # features/<modality>/<fingerprint>
        return [_reextract(store, manifest, store / folder) for folder in sorted(groups)]


def _reextract(store: Path, manifest: Manifest, folder: Path) -> ModalitySummary:
    info_path = folder / "encoder.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"{info_path}: no record of the encoder that made these features; run `precal extract` again")
    info = json.loads(info_path.read_text())
    encoder = build_encoder(info["modality"], info["name"], info["options"])
    dtype = _dtype_of(store, folder)
    todo, _ = plan(manifest, store, encoder, dtype)
    return extract_modality(todo, encoder, store, dtype=dtype)


def _dtype_of(store: Path, folder: Path) -> str:
    fingerprint = folder.name
    for row in Catalog(store).latest():
        if row["fingerprint"] == fingerprint and row["dtype"]:
            return row["dtype"]
    return "float16"
