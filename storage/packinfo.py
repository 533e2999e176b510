"""Reading a pack: `pack.json` (task, classes, per-modality width and encoder fingerprint, each split's
shards, count and sha256), parsed here and nowhere else; storage/pack.py writes it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from storage import remote
from storage.atomic import write_bytes_atomic
from storage.layout import Store, pack_file
from storage.remote import Location, location
from storage.shards import sha256_file


@dataclass(frozen=True)
class PackInfo:
    path: Location
    pack_id: str
    task: str  # "classification" | "regression"
    classes: list[str] | None
    dims: dict[str, int]  # modality -> feature width, for the modalities the pack holds
    fingerprints: dict[str, str]  # modality -> encoder fingerprint, for the same modalities
    splits: dict[str, dict]  # split -> {"shards": [...], "count": N, "sha256": {shard: digest}}

    @property
    def num_outputs(self) -> int:
        return len(self.classes) if self.task == "classification" else 1

    def count(self, split: str) -> int:
        return int(self.splits.get(split, {}).get("count", 0))

    def urls(self, split: str) -> list[str]:
        return [str(self.path / name) for name in self.splits.get(split, {}).get("shards", [])]


def _pack_json(path: Path) -> dict:
    meta_path = pack_file(path)
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path} is not a pack: {meta_path.name} is missing (run `precal pack` first)")
    return json.loads(meta_path.read_text(encoding="utf-8"))


def read_pack(path: Location | str) -> PackInfo:
    path = location(path)
    meta = _pack_json(path)
    if meta["task"] not in ("classification", "regression"):
        raise ValueError(f"{pack_file(path)}: unknown task {meta['task']!r}")
    held = {m: v for m, v in meta["modalities"].items() if v.get("dim")}
    return PackInfo(
        path,
        meta["pack_id"],
        meta["task"],
        meta.get("classes"),
        {m: int(v["dim"]) for m, v in held.items()},
        {m: v["fingerprint"] for m, v in held.items()},
        meta["splits"],
    )


def verify_pack(path: Path) -> str | None:
    """Why the pack at `path` cannot be trusted, or None when every shard matches the sha256 that
    pack.json recorded for it."""
    try:
        splits = _pack_json(path)["splits"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"pack.json is missing or unreadable ({type(err).__name__}: {err})"
    try:
        shards = [(name, split["sha256"][name]) for split in splits.values() for name in split["shards"]]
    except (KeyError, TypeError, AttributeError):
        return "pack.json records no sha256 for some shard (an older precal wrote it, or it was edited)"
    for name, digest in shards:
        if not (path / name).is_file():
            return f"{name} is missing"
        if sha256_file(path / name) != digest:
            return f"{name}: sha256 mismatch (damaged or modified)"
    return None


def cached_pack(info: PackInfo, cache_dir: Path) -> PackInfo:
    """The pack copied to `cache_dir/<pack-id>/` when it lies in a bucket (a local pack is returned as
    it is): each shard fetched once and checked against the sha256 pack.json records, so later epochs
    and runs read local files. A shard already cached with the right sha256 is not fetched again."""
    if not remote.is_remote(info.path):
        return info
    local = Path(cache_dir) / info.pack_id
    for split in info.splits.values():
        for name in split["shards"]:
            if (local / name).is_file() and sha256_file(local / name) == split["sha256"][name]:
                continue
            data = remote.read_bytes(info.path / name)
            if hashlib.sha256(data).hexdigest() != split["sha256"][name]:
                raise ValueError(
                    f"{info.path / name}: sha256 mismatch with {pack_file(info.path)} (damaged or "
                    "modified); `precal pack` writes the pack again"
                )
            write_bytes_atomic(local / name, data)
    write_bytes_atomic(pack_file(local), remote.read_bytes(pack_file(info.path)))
    return read_pack(local)


def verify_packs(store: Path) -> dict[str, str | None]:
    """{pack id: why it is damaged, or None} for every pack of the store."""
    return {p.name: verify_pack(p) for p in Store(store).pack_dirs()}
