"""Extraction as plain functions: plan what is missing, extract it, hand the features to storage's
FeatureWriter (which commits a shard, then the catalog rows naming it: a crash leaves nothing that
claims to be done). Re-running skips every (content hash, fingerprint) already `ok` whose shard is
still there, and finishes the rest.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from extractors import EncoderSpec
from pipeline.config import ExtractConfig
from pipeline.encoders import DTYPES, choose_spec, is_recorded, record_encoder, store_fingerprint
from pipeline.extract_report import ExtractionReport, ModalitySummary
from pipeline.hash_ahead import planned_blocks
from pipeline.manifest import Manifest, Sample
from pipeline.media_spool import keep as media_spool_keep
from pipeline.media_spool import media_spool
from pipeline.spec_cache import spec_for
from storage import remote
from storage.catalog import Catalog
from storage.features import FeatureSet, FeatureWriter, UnstorableError
from storage.fingerprint import FileHashCache, content_hash, source_file
from storage.layout import Store
from storage.lock import store_lock
from storage.remote import Location, location

if TYPE_CHECKING:
    from extractors import Encoder


@dataclass
class Todo:
    sample: Sample
    content_hash: str
    reuse: dict | None = None  # an ok row of another sample with this content: no extraction, a row of its own
    source_digest: str | None = None  # sha256 of a source in a bucket: names its spooled copy


def plan(
    manifest: Manifest,
    store: Path,
    encoder: Encoder | EncoderSpec,
    dtype: str,
    *,
    retry_failed: bool = False,
    latest: list[dict] | None = None,
    files: FileHashCache | None = None,
) -> tuple[list[Todo], int]:
    """Samples of this modality that still need a catalog row, and how many need no extraction.

    Keyed by (content hash, fingerprint): a sample whose own row has its content, `ok` with the shard
    intact (or `failed`, unless failures are retried), is done. A sample whose content another sample
    already has `ok` (a renamed clip, an unchanged modality of a corrupted variant, a repeated transcript)
    is not extracted again: its Todo carries that row to reuse, and it counts as skipped."""
    fingerprint = store_fingerprint(encoder, dtype)
    files = files or FileHashCache(Store(store).file_hashes)
    rows = latest if latest is not None else Catalog(store).latest()
    mine = [r for r in rows if r["modality"] == encoder.modality and r["fingerprint"] == fingerprint]
    intact = _intact(store, mine)
    own = {r["sample_id"]: r for r in mine}
    reusable = {r["content_hash"]: r for r in mine if intact(r)}
    files.prefetch(source_file(encoder.modality, s) for s in manifest.samples if s.has(encoder.modality))
    todo, skipped = [], 0
    for sample in manifest.samples:
        if not sample.has(encoder.modality):
            continue
        digest = content_hash(encoder.modality, sample, files)
        row = own.get(sample.sample_id)
        if row and row["content_hash"] == digest and (intact(row) or (row["status"] == "failed" and not retry_failed)):
            skipped += 1
            continue
        todo.append(Todo(sample, digest, reusable.get(digest), _bucket_digest(encoder.modality, sample, files)))
        skipped += digest in reusable
    return todo, skipped


def _bucket_digest(modality: str, sample: Sample, files: FileHashCache) -> str | None:
    source = source_file(modality, sample)
    return files.known(source) if source is not None and remote.is_remote(source) else None


def _intact(store: Location, rows: list[dict]):
    """A test of whether an ok row's shard is still there with its recorded size."""
    sizes = _shard_sizes(Store(store), rows)
    return lambda row: row["status"] == "ok" and sizes[row["shard"]] == row["shard_bytes"]


def _shard_sizes(layout: Store, rows: list[dict]) -> dict[str, int | None]:
    """Size of each shard the ok rows name, None when it is gone: a stat per shard on disk, one listing
    of the rows' folders in a bucket (not a request per shard)."""
    shards = {row["shard"] for row in rows if row["status"] == "ok"}
    if not remote.is_remote(layout.root):
        return {s: (p.stat().st_size if (p := layout.shard_path(s)).is_file() else None) for s in shards}
    listed: dict = {}
    for folder in {layout.shard_path(s).parent for s in shards}:
        listed.update(remote.files_under(folder))
    return {s: listed.get(layout.shard_path(s)) for s in shards}


def extract_modality(
    todo: list[Todo],
    encoder: Encoder,
    store: Path,
    *,
    dtype: str = "float16",
    shard_size: int = 256,
    batch_size: int = 16,
    num_workers: int = 0,
    device: str = "auto",
    progress: bool | tqdm = True,
) -> ModalitySummary:
    """Extract `todo` with one encoder, committing a shard (then its catalog rows) every `shard_size` samples;
    samples whose content is already stored get rows reusing it (the model loads only if some remain).
    `progress`: a bar of its own, or a tqdm bar to count into (one bar across several calls)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    fingerprint = store_fingerprint(encoder, dtype)
    summary = ModalitySummary(encoder.modality, encoder.name, fingerprint)
    if not todo:
        return summary
    started = time.perf_counter()
    writer = FeatureWriter(store, FeatureSet(encoder.modality, encoder.name, fingerprint, dtype), shard_size)
    for reused in (t for t in todo if t.reuse):
        writer.reuse(reused.sample.sample_id, reused.content_hash, reused.reuse)
    fresh = [t for t in todo if not t.reuse]
    if fresh:
        _extract_into(
            writer,
            fresh,
            encoder,
            summary,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            progress=progress,
        )
    writer.close()
    summary.ok, summary.failed, summary.shards_written = writer.ok, writer.failed, writer.shards_written
    summary.seconds = time.perf_counter() - started
    return summary


def _extract_into(
    writer: FeatureWriter, todo: list[Todo], encoder: Encoder, summary: ModalitySummary, **settings
) -> None:
    """Features of `todo` into the writer; a sample that cannot be decoded or stored becomes a failure."""
    from extractors import DecodeError, extract_features  # torch: only where features are computed

    progress = settings.pop("progress")
    hashes = {t.sample.sample_id: t.content_hash for t in todo}
    dtype = writer.features.dtype
    modality = encoder.modality
    wanted = [(i, t.source_digest, source_file(modality, t.sample)) for i, t in enumerate(todo) if t.source_digest]
    spool = media_spool() if wanted else None
    samples = [spool.spooled(t.sample, modality, t.source_digest) for t in todo] if spool else [t.sample for t in todo]
    results = extract_features(samples, encoder, **settings)
    bar = progress if isinstance(progress, tqdm) else _bar(modality, encoder.name, len(todo), progress)
    # closing: on any error (a full disk, say) the decoding workers stop now, not when the traceback is freed
    prefetch = spool.ahead(wanted) if spool else contextlib.nullcontext()
    with contextlib.closing(results), prefetch, bar if bar is not progress else contextlib.nullcontext():
        for sample, result in results:
            bar.update(1)
            if spool:
                prefetch.use()
            digest = hashes[sample.sample_id]
            try:  # checked before the sample is buffered, so that a bad one fails itself and not its shard
                if isinstance(result, DecodeError):
                    raise result
                _check_finite(result.array, dtype, _source(sample, encoder.modality))
                writer.add(sample.sample_id, digest, result.array, result.timestamps)
            except (DecodeError, UnstorableError) as problem:  # this sample fails, not its chunk
                writer.fail(sample.sample_id, digest, str(problem))
                summary.errors.append(f"{sample.sample_id}: {problem}")


def _bar(modality: str, encoder: str, total: int, shown: bool) -> tqdm:
    return tqdm(total=total, desc=f"extract {modality}:{encoder}", disable=not shown, unit="clip")


FLOAT16_OVERFLOW = 65520.0  # the smallest magnitude float16 rounds to infinity


def _check_finite(computed: np.ndarray, dtype: str, source: str) -> None:
    """NaN or infinite features (from NaN/Inf input, or values beyond float16) would train to NaN.
    Checked on the float32 features through their extremes (NaN propagates to both), many times
    faster than testing every float16 value."""
    largest = max(float(computed.max()), -float(computed.min())) if computed.size else 0.0
    if not math.isfinite(largest):
        bad = int(np.size(computed) - np.isfinite(computed).sum())
        raise UnstorableError(
            f"{source}: the encoder produced {bad} NaN or infinite feature values "
            "(the input holds NaN/Inf or extreme values)"
        )
    if dtype == "float16" and largest >= FLOAT16_OVERFLOW:
        raise UnstorableError(
            f"{source}: features overflow float16 (largest magnitude {largest:.3g}, beyond "
            f"{float(np.finfo(np.float16).max):.6g}); extract with --dtype float32"
        )


def _source(sample: Sample, modality: str) -> str:
    """Where a modality of the sample comes from, for messages."""
    if modality == "text":
        return f"<text of sample {sample.sample_id}>"
    return str(sample.video if modality == "video" or sample.audio is None else sample.audio)


def extract_one_modality(
    manifest: Manifest,
    store: Path,
    modality: str,
    config: ExtractConfig,
    progress: bool = True,
    files: FileHashCache | None = None,
    latest: list[dict] | None = None,
) -> ModalitySummary:
    """Plan and extract one modality with the encoder the config chooses (its model loads only when
    something is left to extract); `latest`: the catalog's rows, when the caller has read them. Clips in
    a bucket not hashed yet are planned block by block, the next block hashed while this one extracts."""
    choice = config.modalities[modality]
    spec = choose_spec(modality, choice.name, choice.options)
    fingerprint = store_fingerprint(spec, config.dtype)
    files = files or FileHashCache(Store(store).file_hashes)
    latest = latest if latest is not None else Catalog(store).latest()
    record_encoder(store, spec, fingerprint, config.dtype)

    def plan_block(block: Manifest) -> tuple[list[Todo], int]:
        return plan(block, store, spec, config.dtype, retry_failed=config.retry_failed, latest=latest, files=files)

    total, sharing_workers = ModalitySummary(modality, spec.encoder_name, fingerprint), False
    bar = _bar(modality, spec.encoder_name, sum(s.has(modality) for s in manifest.samples), progress)
    with contextlib.ExitStack() as workers, bar:
        for todo, skipped in planned_blocks(manifest, modality, files, config.shard_size, plan_block):
            bar.update(skipped)  # done before, or reusing stored features: no extraction
            if any(not t.reuse for t in todo) and not sharing_workers:
                from extractors.extract import reused_decoding_workers  # torch: only where features are computed

                workers.enter_context(reused_decoding_workers())  # blocks share one set of decoding workers
                sharing_workers = True
            part = extract_configured(todo, spec, store, config, progress=bar)
            total.add(part)
            total.skipped += skipped
    return total


def extract_configured(
    todo: list[Todo],
    spec: EncoderSpec,
    store: Location,
    config: ExtractConfig,
    *,
    num_workers: int | None = None,
    progress: bool | tqdm = True,
) -> ModalitySummary:
    """extract_modality with the config's settings and this process's encoder for the spec (its model
    loads once per process); `num_workers` overrides the config's."""
    return extract_modality(
        todo,
        spec.shared(),
        store,
        dtype=config.dtype,
        shard_size=config.shard_size,
        batch_size=config.batch_size,
        num_workers=config.num_workers if num_workers is None else num_workers,
        device=config.device,
        progress=progress,
    )


def run_extraction(
    manifest: Manifest, store: Location | str, config: ExtractConfig, *, wait: float = 0.0, progress: bool = True
) -> ExtractionReport:
    """Extract every configured modality of the manifest into the store, holding the store's lock.

    In a bucket, a run with nothing new only reads: it takes no lease and writes no object."""
    store = location(store)
    # each source file hashed once per run, not per modality; a clip fetched to hash it is kept for its decoders
    files = FileHashCache(Store(store).file_hashes, keep=media_spool_keep)
    if remote.is_remote(store) and (done := _all_done(manifest, store, config, files)) is not None:
        return ExtractionReport(done, manifest.rejected)
    with store_lock(store, wait=wait):
        # Read once: a modality plans from its own rows, which this run's other modalities leave alone.
        latest = Catalog(store).latest()
        summaries = [
            extract_one_modality(manifest, store, m, config, progress, files, latest) for m in config.modalities
        ]
        files.save()
    return ExtractionReport(summaries, manifest.rejected)


def _all_done(
    manifest: Manifest, store: Location, config: ExtractConfig, files: FileHashCache
) -> list[ModalitySummary] | None:
    """Each modality's summary (all skipped) when nothing is left to extract or record, else None."""
    summaries, latest = [], Catalog(store).latest()
    for modality, choice in config.modalities.items():
        spec = choose_spec(modality, choice.name, choice.options)
        fingerprint = store_fingerprint(spec, config.dtype)
        todo, skipped = plan(
            manifest, store, spec, config.dtype, retry_failed=config.retry_failed, latest=latest, files=files
        )
        if todo or not is_recorded(store, spec, fingerprint, config.dtype):
            return None
        summaries.append(ModalitySummary(modality, spec.encoder_name, fingerprint, skipped=skipped))
    return summaries


def selection_for(store: Path, config: ExtractConfig) -> dict[str, str]:
    """{modality: fingerprint} of the encoders the config chooses (what pack should gather); loads no model,
    and builds no encoder whose spec the store has cached."""
    return {
        m: store_fingerprint(spec_for(store, m, c.name, c.options), config.dtype) for m, c in config.modalities.items()
    }
