"""Extraction flow: one task per modality over plain functions in `pipeline.extract`.

The catalog is the cache (content hash x encoder fingerprint), so Prefect's own result cache is off.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipeline.config import ExtractConfig
from pipeline.extract import ExtractionReport, ModalitySummary, extract_one_modality
from pipeline.manifest import read_manifest
from storage.lock import store_lock


@task(name="extract-modality", cache_policy=NO_CACHE)
def extract_modality_task(manifest_path: str, store: str, modality: str, config: ExtractConfig) -> ModalitySummary:
    manifest = read_manifest(manifest_path, allow_outside_root=config.allow_outside_root)
    return extract_one_modality(manifest, Path(store), modality, config)


@flow(name="precal-extract")
def extract_flow(manifest: str, store: str, config: ExtractConfig | None = None, wait: float = 0.0) -> dict:
    """Extract every configured modality of MANIFEST into STORE; return the per-modality summary."""
    config = config or ExtractConfig()
    read_manifest(manifest, allow_outside_root=config.allow_outside_root)  # fail early, listing every problem
    with store_lock(Path(store), wait=wait):
        summaries = [extract_modality_task(manifest, store, m, config) for m in config.modalities]
    return ExtractionReport(summaries).to_dict()
