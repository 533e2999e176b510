"""Extraction flow: plan in the flow, one Prefect task per chunk of samples, on threads or a Dask cluster.

Each task loads its modality's encoder once and extracts its chunk with `pipeline.extract.extract_modality`,
which commits its own shards and catalog parts under unique names; the flow process holds the store
lock for the whole run, so tasks on other processes or nodes write safely. Tasks return summaries
(counts, errors, seconds), never arrays. The catalog is the cache (content hash x encoder fingerprint),
so Prefect's own result cache is off.
"""

from __future__ import annotations

import multiprocessing
from contextlib import nullcontext

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from extractors import DecodeError
from extractors.extract import reused_decoding_workers
from flows.prefect_env import choose_prefect_api
from pipeline.config import ExtractConfig
from pipeline.extract import Todo
from pipeline.extract_chunks import extract_chunk, extraction_report, plan_extraction
from pipeline.extract_report import ModalitySummary
from pipeline.manifest import read_manifest
from storage.lock import store_lock
from storage.remote import location
from storage.shards import StoreFullError

GPU_LIMIT = "precal-gpu"  # global concurrency limit for chunks on a GPU: `prefect gcl create precal-gpu --limit N`
RUNNERS = ("default", "dask")
DETERMINISTIC = (DecodeError, ValueError, TypeError, StoreFullError)  # fail the same way on every try

choose_prefect_api()  # before any flow of this package runs: PREFECT_API_URL, precal's server, or a temporary one


def retry_transient(task, task_run, state) -> bool:
    """Retry lost workers, I/O and device hiccups; not bad inputs or settings, which fail every time."""
    return not isinstance(state.data, DETERMINISTIC)


def uses_cuda(device: str) -> bool:
    if device == "auto":
        import torch

        return torch.cuda.is_available()
    return device.startswith("cuda")


def gpu_slot(device: str):
    """Hold a slot of the `precal-gpu` limit on a GPU; on CPU nothing (no server-side limit needed).
    Without a limit of that name Prefect warns once and runs unthrottled (strict=False)."""
    return concurrency_slot(GPU_LIMIT) if uses_cuda(device) else nullcontext()


def concurrency_slot(name: str):
    from prefect.concurrency.sync import concurrency

    return concurrency(name, occupy=1, strict=False)


@task(
    name="extract-chunk",
    task_run_name="extract-{modality}-{index}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_transient,
)
def extract_chunk_task(
    store: str, modality: str, index: int, todo: list[Todo], config: ExtractConfig, fingerprint: str, progress: bool
) -> ModalitySummary:
    # Dask worker processes are daemons, which may not start DataLoader workers: decode in the task.
    workers = 0 if multiprocessing.current_process().daemon else config.num_workers
    with gpu_slot(config.device):
        return extract_chunk(
            todo, location(store), modality, config, fingerprint, num_workers=workers, progress=progress
        )


def task_runner(runner: str = "default", address: str | None = None):
    """Threads in this process, one chunk at a time (`default`), or a Dask cluster (`dask`): the one at
    `address` (tcp://HOST:PORT), else a local cluster with one single-threaded worker process per core."""
    if runner == "default":
        if address:
            raise ValueError("--address needs --runner dask")
        return ThreadPoolTaskRunner(max_workers=1)
    if runner == "dask":
        from prefect_dask import DaskTaskRunner

        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(cluster_kwargs={"processes": True, "threads_per_worker": 1})
    raise ValueError(f"unknown runner {runner!r}; choose from {', '.join(RUNNERS)}")


@flow(name="precal-extract", task_runner=ThreadPoolTaskRunner(max_workers=1))
def extract_flow(
    manifest: str, store: str, config: ExtractConfig | None = None, wait: float = 0.0, progress: bool = True
) -> dict:
    """Extract every configured modality of MANIFEST into STORE in chunks of `shard_size` samples.

    Returns the per-modality summary (ok/failed/skipped, shards, seconds) and the stage's cache key.
    Choose where chunks run with `extract_flow.with_options(task_runner=task_runner("dask", address))`.
    """
    config = config or ExtractConfig()
    # Rows with problems are left out and reported (rejected); only a manifest with no usable row fails.
    samples = read_manifest(manifest, allow_outside_root=config.allow_outside_root, check_files=False, strict=False)
    with store_lock(location(store), wait=wait):
        plan = plan_extraction(samples, location(store), config)
        with reused_decoding_workers():  # chunks on this process's threads share one set of decoding workers
            submitted = [
                (m, extract_chunk_task.submit(store, m.modality, i, chunk, config, m.fingerprint, progress))
                for m, i, chunk in plan.chunks(config.shard_size)
            ]
            wait_for_chunks([f for _, f in submitted])
        parts = [(m, f.result()) for m, f in submitted]
    report = extraction_report(plan, parts, samples.rejected)
    publish_extraction(report)
    return report


def wait_for_chunks(futures: list) -> None:
    """Wait for every chunk, so each commits what it can before any error surfaces; but after a full
    disk, chunks not yet started are cancelled and the run stops: each would decode its samples only to
    fail the same way."""
    for n, future in enumerate(futures):
        future.wait()
        outcome = future.result(raise_on_failure=False)
        if isinstance(outcome, StoreFullError):
            for later in futures[n + 1 :]:
                later.wrapped_future.cancel()
            raise outcome


def publish_extraction(report: dict) -> None:
    rows = [
        {
            "modality": s["modality"],
            "encoder": s["encoder"],
            "fingerprint": s["fingerprint"],
            "ok": s["ok"],
            "failed": s["failed"],
            "skipped": s["skipped"],
            "shards": s["shards_written"],
            "seconds": round(s["seconds"], 2),
        }
        for s in report["modalities"]
    ]
    rejected = "".join(f"\n- rejected {reason}" for reason in report["rejected"][:20])
    summary = f"Extraction: {report['chunks']} chunk tasks; totals {report['totals']}{rejected}"
    create_table_artifact(rows, key="precal-extraction", description=summary)
