"""The store's layout: every path of a store is built here and nowhere else.

    <store>/features/<modality>/<fingerprint>/shard-<time>-<random>.tar   feature shards
    <store>/features/<modality>/<fingerprint>/encoder.json               how those features were made
    <store>/catalog/part-*.parquet                                        the catalog
    <store>/cache/file_hashes.json                                        sha256 of source files
    <store>/cache/encoder_specs.json                                      encoder specs read before
    <store>/packed/<pack-id>/{pack.json, <split>-NNNNNN.tar}              training shards
    <store>/.lock                                                         the one-writer lock (local)
    <store>/.lease.json                                                   the one-writer lease (object stores)

Catalog rows name shards by their path relative to the store (`Store.shard_path` resolves one), so a
store can be moved. Temporary names carry TMP_MARK, so gc recognises what a crash left behind; a damaged
catalog part set aside ends in DAMAGED_MARK. Callers never join store paths themselves: a store on
object storage then needs another root here, not edits across the code base.
"""

from __future__ import annotations

import os
import time
import uuid

from storage.remote import Location, location

MODALITIES = ("text", "audio", "video")
SPLITS = ("train", "valid", "test")

TMP_MARK = ".tmp-"  # in every temporary name, so that gc can recognise a crash's leftovers
DAMAGED_MARK = ".damaged"  # suffix of a catalog part set aside: no longer *.parquet, so no longer read
ENCODER_FILE = "encoder.json"
PACK_FILE = "pack.json"
LEASE_FILE = ".lease.json"


def temporary(path: Location, tag: str = "") -> Location:
    """A unique temporary name beside `path` (same folder, so a rename onto `path` is atomic)."""
    return path.with_name(f"{path.name}{TMP_MARK}{tag}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def is_temporary(path: Location) -> bool:
    return TMP_MARK in path.name


def pack_file(pack_dir: Location | str) -> Location:
    """The pack.json of a pack folder (packs are also opened by their folder alone, outside a store)."""
    return location(pack_dir) / PACK_FILE


def pack_shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


class Store:
    """The paths of the store rooted at `root`."""

    def __init__(self, root: Location | str):
        self.root = location(root)

    @classmethod
    def holding_pack(cls, pack_dir: Location | str) -> Store:
        """The store a pack folder (`<store>/packed/<pack-id>`) was made in."""
        return cls(location(pack_dir).parent.parent)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    @property
    def features_dir(self) -> Location:
        return self.root / "features"

    @property
    def catalog_dir(self) -> Location:
        return self.root / "catalog"

    @property
    def packed_dir(self) -> Location:
        return self.root / "packed"

    @property
    def runs_dir(self) -> Location:
        """Where pipeline runs write their outputs unless the config names another folder."""
        return self.root / "runs"

    @property
    def file_hashes(self) -> Location:
        return self.root / "cache" / "file_hashes.json"

    @property
    def encoder_specs(self) -> Location:
        return self.root / "cache" / "encoder_specs.json"

    @property
    def lock(self) -> Location:
        return self.root / ".lock"

    @property
    def lease(self) -> Location:
        return self.root / LEASE_FILE

    def new_catalog_part(self) -> Location:
        """A fresh catalog part; names sort by time, so a listing of parts is also their order of writing."""
        return self.catalog_dir / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"

    def feature_dir(self, modality: str, fingerprint: str) -> Location:
        return self.features_dir / modality / fingerprint

    def encoder_record(self, modality: str, fingerprint: str) -> Location:
        return self.feature_dir(modality, fingerprint) / ENCODER_FILE

    def encoder_record_of_shard(self, shard: str) -> Location:
        """The encoder.json beside a feature shard named relative to the store."""
        return self.shard_path(shard).parent / ENCODER_FILE

    def new_shard(self, modality: str, fingerprint: str) -> str:
        """A fresh feature shard's name relative to the store (the form catalog rows keep)."""
        name = f"shard-{time.time_ns()}-{uuid.uuid4().hex[:6]}.tar"
        return self.relative(self.feature_dir(modality, fingerprint) / name)

    def shard_path(self, shard: str) -> Location:
        """A shard named relative to the store (a catalog row's `shard`) as a path."""
        return self.root / shard

    def relative(self, path: Location) -> str:
        return location(path).relative_to(self.root).as_posix()

    def feature_shards(self) -> list[Location]:
        """Every file under features/ that is a shard or a shard's temporary."""
        return sorted(self.features_dir.rglob("*.tar*")) if self.features_dir.is_dir() else []

    def pack_dir(self, pack_id: str) -> Location:
        return self.packed_dir / pack_id

    def pack_dirs(self) -> list[Location]:
        """Every finished pack folder (temporaries of a crashed pack left out)."""
        if not self.packed_dir.is_dir():
            return []
        return sorted(p for p in self.packed_dir.iterdir() if p.is_dir() and not is_temporary(p))

    def temporaries(self) -> list[Location]:
        """What crashed writes left in packed/ and catalog/ (feature shards' temporaries: feature_shards)."""
        return [
            p
            for folder in (self.packed_dir, self.catalog_dir)
            if folder.is_dir()
            for p in folder.iterdir()
            if is_temporary(p)
        ]
