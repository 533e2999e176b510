"""Writing features into the store: the one place that commits feature shards and their catalog rows.

Order of commits is what makes a crash harmless: a shard is written under a temporary name and renamed
into place complete (in a bucket: one PUT of the whole object), and only then does a catalog part name
it. A crash between the two leaves a shard nothing names (gc removes it) and no row claiming its samples
are done; re-running extracts them again. In a bucket a commit uploads in a background thread while the
next shard's samples are extracted, one commit at a time and in order.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from storage import remote
from storage.catalog import Catalog, CatalogRow, member_of
from storage.layout import Store
from storage.npy import npy_bytes
from storage.shards import check_member_names, json_bytes, write_shard


class UnstorableError(ValueError):
    """A sample's features cannot be stored as they are; it becomes a failed row with this reason."""


@dataclass(frozen=True)
class FeatureSet:
    """Whose features these are: one modality, one encoder fingerprint, one storage dtype."""

    modality: str
    encoder: str
    fingerprint: str
    dtype: str

    def row(self, sample_id: str, content_hash: str, **result) -> CatalogRow:
        """The catalog row of one sample of this set; `result`: status, error, shape, shard fields."""
        return CatalogRow(sample_id, self.modality, self.encoder, self.fingerprint, content_hash, **result)


class FeatureWriter:
    """Buffers samples of one FeatureSet and commits them `shard_size` at a time: shard, then rows.

    `add` stores a sample's array, `reuse` points a sample at features its content already has, `fail`
    records why a sample has none; `close` commits what is left.
    Whatever was buffered when an error stops the caller is dropped, never half-committed."""

    def __init__(self, store: Path, features: FeatureSet, shard_size: int):
        self.layout, self.features, self.shard_size = Store(store), features, shard_size
        self.catalog = Catalog(store)
        self._samples: list[tuple[str, dict[str, bytes]]] = []
        self._rows: list[CatalogRow] = []  # ok rows waiting for their shard (no shard yet), reused and failed rows
        self.ok = self.failed = self.shards_written = 0
        self._upload: threading.Thread | None = None  # the commit in flight, in a bucket
        self._upload_error: BaseException | None = None

    def add(self, sample_id: str, content_hash: str, array: np.ndarray, timestamps=None) -> None:
        """Buffer one sample's features (stored as the set's dtype); UnstorableError, before anything is
        buffered, when its member names do not fit a shard."""
        stored = array.astype(self.features.dtype)
        meta = {
            "sample_id": sample_id,
            "shape": list(stored.shape),
            "dtype": self.features.dtype,
            "timestamps": None if timestamps is None else np.asarray(timestamps).round(4).tolist(),
            "content_hash": content_hash,
            "encoder": self.features.encoder,
            "fingerprint": self.features.fingerprint,
        }
        members = {"npy": npy_bytes(stored), "json": json_bytes(meta)}
        try:
            check_member_names(sample_id, members)
        except ValueError as err:
            raise UnstorableError(f"sample {sample_id}: {err}") from None
        self._samples.append((sample_id, members))
        self._rows.append(
            self.features.row(
                sample_id, content_hash, status="ok", shape=tuple(stored.shape), dtype=self.features.dtype
            )
        )
        if len(self._samples) >= self.shard_size:
            self.commit()

    def reuse(self, sample_id: str, content_hash: str, row: dict) -> None:
        """Record that this sample's features are those of an ok `row` with the same content and fingerprint
        (extracted under another id): a row of its own naming that row's shard and member, nothing written."""
        self._rows.append(
            self.features.row(
                sample_id,
                content_hash,
                status="ok",
                shard=row["shard"],
                member=member_of(row),
                shape=tuple(row["shape"]),
                dtype=row["dtype"],
                shard_sha256=row["shard_sha256"],
                shard_bytes=row["shard_bytes"],
            )
        )

    def fail(self, sample_id: str, content_hash: str, reason: str) -> None:
        """Record that this sample has no features, and why (written with the next commit)."""
        self._rows.append(self.features.row(sample_id, content_hash, status="failed", error=reason))
        self.failed += 1

    def commit(self) -> None:
        """Write the buffered samples' shard, then the catalog part naming them (and the failures). In a
        bucket this returns once the previous commit is done and this one has started uploading; a
        failed upload is raised by the next commit or by close."""
        samples, rows = self._samples, self._rows
        self._samples, self._rows = [], []
        self._finish_upload()
        if not remote.is_remote(self.layout.root):
            self._commit(samples, rows)
            return
        self._upload = threading.Thread(target=self._upload_noting_failure, args=(samples, rows), name="shard-upload")
        self._upload.start()

    def close(self) -> None:
        self.commit()
        self._finish_upload()

    def _commit(self, samples: list, rows: list[CatalogRow]) -> None:
        if samples:
            shard = self.layout.new_shard(self.features.modality, self.features.fingerprint)
            path = self.layout.shard_path(shard)
            digest = write_shard(path, samples)
            placed = {"shard": shard, "shard_sha256": digest, "shard_bytes": path.stat().st_size}
            rows = [replace(row, **placed) if row.status == "ok" and not row.shard else row for row in rows]
            self.ok += len(samples)
            self.shards_written += 1
        self.catalog.append(rows)

    def _upload_noting_failure(self, samples: list, rows: list[CatalogRow]) -> None:
        try:
            self._commit(samples, rows)
        except BaseException as failure:  # raised in the extracting thread by _finish_upload
            self._upload_error = failure

    def _finish_upload(self) -> None:
        if self._upload is not None:
            self._upload.join()
            self._upload = None
        if self._upload_error is not None:
            failure, self._upload_error = self._upload_error, None
            raise failure
