"""Extraction in chunks: the plan of what each modality still needs, one chunk's extraction, and the
merged summary. flows/extract.py runs each chunk as a Prefect task; everything here runs without Prefect.

The plan's key comes from content, never from paths alone: every modality's encoder fingerprint and
per-sample content hashes.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import ExtractConfig
from pipeline.encoders import choose_spec, record_encoder, store_fingerprint
from pipeline.extract import Todo, extract_configured, plan
from pipeline.extract_report import ExtractionReport, ModalitySummary
from pipeline.manifest import Manifest
from pipeline.media_spool import keep as media_spool_keep
from pipeline.spec_cache import spec_for
from storage import remote
from storage.catalog import Catalog
from storage.fingerprint import FileHashCache, content_hash, json_fingerprint
from storage.layout import Store
from storage.lock import store_lock
from storage.remote import location


@dataclass
class ModalityPlan:
    modality: str
    encoder: str
    fingerprint: str
    todo: list[Todo]
    skipped: int


@dataclass
class ExtractionPlan:
    modalities: list[ModalityPlan]
    key: str  # hash of every modality's encoder fingerprint and per-sample content hashes

    def chunks(self, size: int) -> list[tuple[ModalityPlan, int, list[Todo]]]:
        """(modality plan, chunk index, samples) for each block of at most `size` samples to extract."""
        return [
            (m, i, m.todo[start : start + size])
            for m in self.modalities
            for i, start in enumerate(range(0, len(m.todo), size))
        ]

    def nothing_to_do(self) -> bool:
        return not any(m.todo for m in self.modalities)


def plan_extraction(manifest: Manifest, store: Path, config: ExtractConfig) -> ExtractionPlan:
    """What each configured modality still needs, from the encoders' specs (no model is loaded; a spec
    whose sources are unchanged comes from the store's cache, so no encoder is built); call while
    holding the store lock (records encoders)."""
    files = FileHashCache(Store(store).file_hashes, keep=media_spool_keep)  # fetched clips serve the decoders
    latest = Catalog(store).latest()
    plans, inputs = [], {}
    for modality, choice in config.modalities.items():
        spec = spec_for(store, modality, choice.name, choice.options)
        fingerprint = store_fingerprint(spec, config.dtype)
        record_encoder(store, spec, fingerprint, config.dtype)
        todo, skipped = plan(
            manifest, store, spec, config.dtype, retry_failed=config.retry_failed, latest=latest, files=files
        )
        plans.append(ModalityPlan(modality, spec.encoder_name, fingerprint, todo, skipped))
        inputs[modality] = {
            "fingerprint": fingerprint,
            "samples": {s.sample_id: content_hash(modality, s, files) for s in manifest.samples if s.has(modality)},
        }
    files.save()
    return ExtractionPlan(plans, json_fingerprint(inputs))


def nothing_to_extract(manifest: Manifest, store: Path, config: ExtractConfig, wait: float = 0.0) -> dict | None:
    """The extraction report when every configured modality is already done, else None: the answer to
    "is anything new?" plans under the store lock, builds no encoder and starts no flow."""
    store = location(store)
    # In a bucket the answer takes no lease, so that a run with nothing new writes no object: what
    # planning may write there (encoder records, hashes, specs) are whole objects, the same from any run.
    with nullcontext() if remote.is_remote(store) else store_lock(store, wait=wait):
        plan = plan_extraction(manifest, store, config)
    return extraction_report(plan, [], manifest.rejected) if plan.nothing_to_do() else None


def start_decoding_server(config: ExtractConfig) -> None:
    """When chunks will decode in worker processes here, start their server now, so that it loads in
    parallel with Prefect's import and the flow's start (text decodes in the encoding process)."""
    if config.num_workers and set(config.modalities) - {"text"}:
        from extractors.extract import start_decoding_server as start  # torch: only when there is work

        start()


def extraction_report(
    plan: ExtractionPlan, parts: list[tuple[ModalityPlan, ModalitySummary]], rejected: list[str]
) -> dict:
    """The run's report from its plan and each chunk's summary (with its modality's plan)."""
    summaries = [merge_summaries(m, [p for owner, p in parts if owner is m]) for m in plan.modalities]
    return {**ExtractionReport(summaries, rejected).to_dict(), "key": plan.key, "chunks": len(parts)}


def extract_chunk(
    todo: list[Todo],
    store: Path,
    modality: str,
    config: ExtractConfig,
    expected_fingerprint: str,
    *,
    num_workers: int | None = None,
    progress: bool = True,
) -> ModalitySummary:
    """Extract one chunk with the process's encoder for the spec (its model loads once per worker process);
    it commits its own shards and catalog parts."""
    choice = config.modalities[modality]
    spec = choose_spec(modality, choice.name, choice.options)
    fingerprint = store_fingerprint(spec, config.dtype)
    if fingerprint != expected_fingerprint:  # e.g. a worker node with other weights or another precal version
        raise ValueError(
            f"this process computes fingerprint {fingerprint} for {modality}:{spec.encoder_name}, "
            f"the plan expected {expected_fingerprint}: the worker's encoder weights or software differ"
        )
    return extract_configured(todo, spec, store, config, num_workers=num_workers, progress=progress)


def merge_summaries(modality: ModalityPlan, parts: list[ModalitySummary]) -> ModalitySummary:
    """One modality's summary from its chunks' summaries (seconds: the chunks' time added up)."""
    total = ModalitySummary(modality.modality, modality.encoder, modality.fingerprint, skipped=modality.skipped)
    for part in parts:
        total.add(part)
    return total
