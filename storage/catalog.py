"""The catalog: Parquet parts under `<store>/catalog/`, one row per (sample, modality, fingerprint).

Each extraction chunk appends one part file (written atomically), so a crash never leaves a
half-written catalog. Readers take the newest row per key: re-extraction supersedes old rows.
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from storage import remote
from storage.atomic import fsync_dir
from storage.layout import DAMAGED_MARK, Store, is_temporary, temporary
from storage.remote import Location
from storage.shards import full_disk_stops

SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("modality", pa.string()),
        ("encoder", pa.string()),
        ("fingerprint", pa.string()),
        ("content_hash", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("shard", pa.string()),
        ("member", pa.string()),
        ("shape", pa.list_(pa.int64())),
        ("dtype", pa.string()),
        ("shard_sha256", pa.string()),
        ("shard_bytes", pa.int64()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
KEY = ("sample_id", "modality", "fingerprint")


@dataclass(frozen=True)
class CatalogRow:
    """One catalog row: a sample's features for one modality and encoder fingerprint, `ok` in a shard
    (named relative to the store) or `failed` with a reason a person understands."""

    sample_id: str
    modality: str
    encoder: str
    fingerprint: str
    content_hash: str
    status: str  # "ok" | "failed"
    error: str = ""
    shard: str = ""
    member: str = ""  # the shard member's key when it is not sample_id (a content another sample had first)
    shape: tuple[int, ...] = ()
    dtype: str = ""
    shard_sha256: str = ""
    shard_bytes: int = 0
    created_at: datetime | None = None  # set when appended; kept when a row is written again (compaction)

    @classmethod
    def from_dict(cls, row: dict) -> CatalogRow:
        known = {f.name: row[f.name] for f in fields(cls) if f.name in row}
        return cls(**{**known, "shape": tuple(known.get("shape") or ()), "member": known.get("member") or ""})

    def to_dict(self, stamp: datetime) -> dict:
        row = asdict(self)
        row["shape"], row["created_at"] = list(self.shape), self.created_at or stamp
        return row


def member_of(row: dict) -> str:
    """The key of the shard member that holds an ok row's features (parts written before precal kept
    `member` read it as empty: the sample's own id)."""
    return row.get("member") or row["sample_id"]


class CatalogError(RuntimeError):
    """A catalog part that cannot be read; the message names it and how to set it aside."""


def _read_part(source: Path | bytes) -> pa.Table:
    return pq.read_table(source if isinstance(source, Path) else io.BytesIO(source), schema=SCHEMA)


def now() -> datetime:
    return datetime.now(UTC)


class Catalog:
    def __init__(self, store: Path):
        self.layout = Store(store)
        self.dir = self.layout.catalog_dir

    def parts(self) -> list[Location]:
        if not remote.is_remote(self.dir) and not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.glob("*.parquet") if not is_temporary(p))

    def append(self, rows: list[CatalogRow]) -> Path | None:
        """Write rows as a new part, stamped now (a row that has its time keeps it)."""
        if not rows:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        stamp = now()
        table = pa.Table.from_pylist([row.to_dict(stamp) for row in rows], schema=SCHEMA)
        final = self.layout.new_catalog_part()
        if remote.is_remote(final):  # one PUT under a unique name: the part appears whole or not at all
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            remote.put(final, buffer.getvalue())
            return final
        tmp = temporary(final)
        try:
            with full_disk_stops(final):
                pq.write_table(table, tmp)
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, final)
        fsync_dir(self.dir)
        return final

    def read(self) -> pa.Table:
        parts = self.parts()
        if not parts:
            return SCHEMA.empty_table()
        try:
            if remote.is_remote(self.dir):
                return pa.concat_tables(_read_part(data) for data in remote.read_many(parts))
            return ds.dataset([str(p) for p in parts], schema=SCHEMA, format="parquet").to_table()
        except (pa.ArrowException, OSError) as err:
            damaged = self.damaged_parts()
            if not damaged:
                raise CatalogError(f"{self.dir}: the catalog cannot be read ({err})") from err
            part, reason = damaged[0]
            raise CatalogError(
                f"{part}: damaged catalog part ({reason}); `precal gc --store {self.layout.root} --set-aside-damaged` "
                "moves it aside, and the samples it recorded are extracted again on the next run"
            ) from err

    def damaged_parts(self) -> list[tuple[Path, str]]:
        """(part, reason) for each part that cannot be read on its own (only looked for after a failed read)."""
        damaged = []
        for part in self.parts():
            try:
                _read_part(part if isinstance(part, Path) else remote.read_bytes(part))
            except (pa.ArrowException, OSError) as err:
                damaged.append((part, str(err)))
        return damaged

    def set_aside_damaged(self) -> list[Path]:
        """Rename unreadable parts to `<part>.damaged` (kept for inspection, no longer read); return the new names."""
        moved = []
        for part, _ in self.damaged_parts():
            target = part.with_name(part.name + DAMAGED_MARK)
            if remote.is_remote(part):  # no rename on an object store: copy, then delete the original
                remote.put(target, remote.read_bytes(part))
                remote.remove(part)
            else:
                os.replace(part, target)
            moved.append(target)
        if moved and not remote.is_remote(self.dir):
            fsync_dir(self.dir)
        return moved

    def latest(self) -> list[dict]:
        """The newest row per (sample, modality, fingerprint)."""
        newest: dict[tuple, dict] = {}
        for row in self.read().to_pylist():
            key = tuple(row[k] for k in KEY)
            if key not in newest or row["created_at"] >= newest[key]["created_at"]:
                newest[key] = row
        return list(newest.values())

    def compact(self) -> int:
        """Replace all parts by one holding only the newest rows; return rows dropped."""
        parts = self.parts()
        if len(parts) < 2:
            return 0
        rows = self.latest()
        dropped = self.read().num_rows - len(rows)
        written = self.append([CatalogRow.from_dict(row) for row in rows])
        for part in parts:
            if part != written:
                part.unlink()
        return dropped
