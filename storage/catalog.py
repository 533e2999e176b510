"""The catalog: Parquet parts under `<store>/catalog/`, one row per (sample, modality, fingerprint).

Each extraction chunk appends one part file (written atomically), so a crash never leaves a
half-written catalog. Readers take the newest row per key: re-extraction supersedes old rows.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from storage.shards import TMP_MARK, fsync_dir, full_disk_stops

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
        ("shape", pa.list_(pa.int64())),
        ("dtype", pa.string()),
        ("shard_sha256", pa.string()),
        ("shard_bytes", pa.int64()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
KEY = ("sample_id", "modality", "fingerprint")
DAMAGED_MARK = ".damaged"  # suffix of a part set aside: no longer *.parquet, so no longer read


class CatalogError(RuntimeError):
    """A catalog part that cannot be read; the message names it and how to set it aside."""


def now() -> datetime:
    return datetime.now(timezone.utc)


class Catalog:
    def __init__(self, store: Path):
        self.dir = Path(store) / "catalog"

    def parts(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.glob("*.parquet") if TMP_MARK not in p.name)

    def append(self, rows: list[dict]) -> Path | None:
        """Write rows as a new part; missing columns become empty values."""
        if not rows:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        stamp = now()
        full = [{**_defaults(stamp), **row} for row in rows]
        table = pa.Table.from_pylist(full, schema=SCHEMA)
        # Name sorts by time, so a listing of parts is also their order of writing.
        final = self.dir / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = final.with_name(final.name + f"{TMP_MARK}{os.getpid()}")
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
            return ds.dataset([str(p) for p in parts], schema=SCHEMA, format="parquet").to_table()
        except (pa.ArrowException, OSError) as err:
            damaged = self.damaged_parts()
            if not damaged:
                raise CatalogError(f"{self.dir}: the catalog cannot be read ({err})") from err
            part, reason = damaged[0]
            raise CatalogError(
                f"{part}: damaged catalog part ({reason}); `precal gc --store {self.dir.parent} --set-aside-damaged` "
                "moves it aside, and the samples it recorded are extracted again on the next run") from err

    def damaged_parts(self) -> list[tuple[Path, str]]:
        """(part, reason) for each part that cannot be read on its own (only looked for after a failed read)."""
        damaged = []
        for part in self.parts():
            try:
                pq.read_table(part, schema=SCHEMA)
            except (pa.ArrowException, OSError) as err:
                damaged.append((part, str(err)))
        return damaged

    def set_aside_damaged(self) -> list[Path]:
        """Rename unreadable parts to `<part>.damaged` (kept for inspection, no longer read); return the new names."""
        moved = []
        for part, _ in self.damaged_parts():
            target = part.with_name(part.name + DAMAGED_MARK)
            os.replace(part, target)
            moved.append(target)
        if moved:
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
        written = self.append(rows)
        for part in parts:
            if part != written:
                part.unlink()
        return dropped


def _defaults(stamp: datetime) -> dict:
    return {"error": "", "shard": "", "shape": [], "dtype": "", "shard_sha256": "", "shard_bytes": 0, "created_at": stamp}
