"""Pack: gather every chosen modality of each sample into training shards, one tar set per split.

`<store>/packed/<pack-id>/<split>-NNNNNN.tar` with `<id>.<modality>.npy` and `<id>.json`, plus
`pack.json`, which records each shard's sha256. The pack id hashes the chosen samples, their content and
the encoder fingerprints: the same inputs give the same id, and an existing pack whose shards still match
their sha256 is reused without rewriting anything; a damaged one is rebuilt.

On an object store, where nothing can be renamed, the shards are written under their final names and
pack.json last: a pack without its pack.json is damaged (verify_pack says so) and is written again.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from storage import remote
from storage.atomic import fsync_dir, write_json_atomic
from storage.catalog import Catalog, member_of
from storage.fingerprint import FileHashCache, content_hash, json_fingerprint
from storage.layout import SPLITS, Store, pack_file, pack_shard_name, temporary
from storage.lock import store_lock
from storage.packinfo import verify_pack
from storage.remote import location
from storage.shards import MemberReader, json_bytes, write_shard

PACK_VERSION = 2  # 2: the id covers contents, not the shard names that hold them


@dataclass
class PackResult:
    path: Path
    pack_id: str
    created: bool
    counts: dict[str, int]
    dropped: list[str]
    rebuilt: str | None = None  # why the pack found under this id was damaged and written again


def pack(
    store: Path,
    manifest,
    selection: dict[str, str],
    *,
    task: str | None = None,
    shard_size: int = 1000,
    progress: bool = True,
    wait: float = 0.0,
) -> PackResult:
    """Pack the manifest's samples with the features named by `selection` ({modality: fingerprint}).

    Holds the store's lock (waiting up to `wait` seconds for it): an extraction must not change the
    features being gathered, nor gc remove the pack being written."""
    store = location(store)
    with store_lock(store, wait=wait):
        return _pack(store, manifest, selection, task, shard_size, progress)


def _pack(
    store: Path, manifest, selection: dict[str, str], task: str | None, shard_size: int, progress: bool
) -> PackResult:
    entries, dropped = _choose(store, manifest, selection)
    task = task or manifest.task()
    classes = _classes([e["label"] for e in entries]) if task == "classification" else None
    pack_id = json_fingerprint(
        {"version": PACK_VERSION, "task": task, "selection": selection, "samples": _as_contents(entries)}
    )
    final = Store(store).pack_dir(pack_id)
    counts = {s: sum(e["split"] == s for e in entries) for s in SPLITS}
    found = final.exists()
    damage = verify_pack(final) if found else None
    if found and damage is None:
        return PackResult(final, pack_id, False, counts, dropped)
    tmp = final if remote.is_remote(final) else temporary(final)
    try:
        splits = _write_splits(tmp, store, entries, sorted(selection), classes, shard_size, pack_id, progress)
        dims = {m: _dim(entries, m) for m in sorted(selection)}
        meta = {
            "pack_id": pack_id,
            "task": task,
            "classes": classes,
            "splits": splits,
            "modalities": {m: {"fingerprint": selection[m], "dim": dims[m]} for m in sorted(selection)},
        }
        write_json_atomic(pack_file(tmp), meta, indent=2)
        if tmp != final:
            _move_into_place(tmp, final)
    except BaseException:
        if tmp != final:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PackResult(final, pack_id, True, counts, dropped, damage)


def _move_into_place(tmp: Path, final: Path) -> None:
    """Rename the finished pack to its final name; a damaged pack there is first renamed aside (a crash
    between the two renames leaves no pack, which the next run writes) and then deleted."""
    aside = temporary(final, "damaged-")
    if final.exists():
        os.replace(final, aside)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    shutil.rmtree(aside, ignore_errors=True)


def _choose(store: Path, manifest, selection: dict[str, str]) -> tuple[list[dict], list[str]]:
    """Per sample and modality, the catalog row with the manifest's content (its hash) and the selected
    fingerprint: the sample's own row when it has one (if that one failed, the sample has no features for
    this modality), else the ok row of another id with that content, when the content has one stored
    member (the features are then the same)."""
    chosen = sorted(
        (r for r in Catalog(store).latest() if selection.get(r["modality"]) == r["fingerprint"]),
        key=lambda r: r["created_at"],
    )
    own = {(r["sample_id"], r["modality"], r["content_hash"]): r for r in chosen}
    by_content = _unambiguous_contents([r for r in chosen if r["status"] == "ok"])
    files = FileHashCache(Store(store).file_hashes)
    entries, dropped = [], []
    for sample in manifest.samples:
        found = {}
        for modality in sorted(selection):
            digest = content_hash(modality, sample, files) if sample.has(modality) else None
            row = own.get((sample.sample_id, modality, digest)) or by_content.get((modality, digest))
            if row and row["status"] == "ok":
                found[modality] = {
                    "shard": row["shard"],
                    "content_hash": digest,
                    "shape": row["shape"],
                    "member": member_of(row),
                }
        if not found:
            dropped.append(sample.sample_id)  # nothing usable was extracted for it
            continue
        entries.append({"sample_id": sample.sample_id, "split": sample.split, "label": sample.label, "features": found})
    files.save()
    return entries, dropped


def _unambiguous_contents(ok_rows: list[dict]) -> dict[tuple[str, str], dict]:
    """(modality, content hash) -> a row holding its features, for contents stored under one member only.

    Extraction stores a content once and points other ids at it. Several members for one content mean the
    hash does not identify the features (an importer's samples all hash as the one file they come from):
    such a content is never lent to a sample without a row of its own."""
    members, rows = {}, {}
    for row in ok_rows:
        key = (row["modality"], row["content_hash"])
        members.setdefault(key, set()).add((row["shard"], member_of(row)))
        rows[key] = row
    return {key: row for key, row in rows.items() if len(members[key]) == 1}


def _as_contents(entries: list[dict]) -> list[dict]:
    """The entries as the pack id covers them: what is packed (ids, splits, labels, each modality's content
    hash and shape under the selected fingerprints), not where the store keeps it. Shard names are new on
    every extraction, so two stores built from the same inputs, here or on another machine, give the same
    pack id, the same sample order and the same training runs."""
    return [
        {
            **e,
            "features": {
                m: {k: v for k, v in f.items() if k not in ("shard", "member")} for m, f in e["features"].items()
            },
        }
        for e in entries
    ]


def _classes(labels: list) -> list[str]:
    unique = {str(label) for label in labels}
    try:
        return sorted(unique, key=float)
    except ValueError:
        return sorted(unique)


def _dim(entries: list[dict], modality: str) -> int | None:
    for entry in entries:
        if modality in entry["features"]:
            return int(entry["features"][modality]["shape"][-1])
    return None


def _write_splits(tmp: Path, store: Path, entries, modalities, classes, shard_size, pack_id, progress) -> dict:
    tmp.mkdir(parents=True)
    reader = MemberReader(store)
    splits = {}
    bar = tqdm(total=len(entries), desc="pack", unit="sample", disable=not progress)
    for split in SPLITS:
        chosen = [e for e in entries if e["split"] == split]
        if split == "train":  # spread classes across shards so a shuffle buffer sees them all
            random.Random(pack_id).shuffle(chosen)
        digests = {}
        for n, start in enumerate(range(0, len(chosen), shard_size)):
            name = pack_shard_name(split, n)
            block = chosen[start : start + shard_size]
            digests[name] = write_shard(tmp / name, (_sample_members(e, modalities, classes, reader) for e in block))
            bar.update(len(block))
        splits[split] = {"shards": list(digests), "count": len(chosen), "sha256": digests}
    bar.close()
    reader.close()
    return splits


def _sample_members(entry: dict, modalities, classes, reader: MemberReader) -> tuple[str, dict[str, bytes]]:
    sid = entry["sample_id"]
    members = {f"{m}.npy": reader.read(f["shard"], f"{f['member']}.npy") for m, f in entry["features"].items()}
    target = classes.index(str(entry["label"])) if classes is not None else float(entry["label"])
    meta = {
        "sample_id": sid,
        "split": entry["split"],
        "label": entry["label"],
        "target": target,
        "present": {m: m in entry["features"] for m in modalities},
    }
    members["json"] = json_bytes(meta)
    return sid, members
