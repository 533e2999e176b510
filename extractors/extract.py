"""Batched extraction: decode in DataLoader workers, encode batches of clips on the device."""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import multiprocessing.forkserver
import os
import select
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from .base import Encoder, Features
from .decode import DecodeError

if TYPE_CHECKING:
    from .source import SampleSource


class _Loading(Dataset):
    """The loader's output for a sample; a DecodeError is returned as a value so one bad file fails one
    sample. Indexed by the samples themselves: the sampler sends each call's samples to the workers, so
    one set of workers serves every call."""

    def __init__(self, loader):
        self.loader = loader

    def __getitem__(self, sample) -> Any:
        try:
            return self.loader(sample)
        except DecodeError as e:
            return e


class _Current(Sampler):
    """The samples of the call now iterating the DataLoader."""

    def __init__(self):
        self.samples: list = []

    def __iter__(self):
        return iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextlib.contextmanager
def _threads(n: int | None):
    """torch threads set to n (None: unchanged) for the block, then restored."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _init_worker(_: int) -> None:
    """Workers use the cores one clip each (DataLoader already sets torch to one thread; PyAV is set
    per stream and OpenCV at import in decode.py)."""
    _die_with_parent()


@functools.cache
def _worker_context() -> multiprocessing.context.BaseContext:
    """Decoding workers start from a clean forkserver process, never forked from the caller: a process
    that has run a Prefect flow (or Dask) has threads whose held locks a fork would copy, so a forked
    worker could hang at exit, and it would inherit every open descriptor (the store's lock among them).
    The server imports the main module and this one once, so workers still start in milliseconds."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", __name__])
    return context


def start_decoding_server() -> None:
    """Start the decoding workers' forkserver now: it imports torch and the extractors (seconds of CPU)
    in the background, while the caller goes on (importing Prefect, starting its flow), instead of
    when the first batch waits for it."""
    _worker_context()
    multiprocessing.forkserver.ensure_running()


def _die_with_parent() -> None:
    """A worker whose parent is killed (the OOM killer's SIGKILL) would otherwise block forever on its
    queue, holding ~1 GB; it exits as soon as the process that started it is gone instead. Watched by
    pid (a pidfd), not by parenthood: a forkserver is the workers' parent, and it outlives the killed
    process while the workers keep its liveness pipe open."""
    parent = multiprocessing.parent_process()
    if parent is None or not hasattr(os, "pidfd_open"):  # pidfds are Linux's (5.3+)
        return
    try:
        watched = os.pidfd_open(parent.pid)
    except ProcessLookupError:  # gone before the worker started
        os._exit(1)
    threading.Thread(target=_exit_when_gone, args=(watched,), name="parent-watchdog", daemon=True).start()


def _exit_when_gone(watched: int) -> None:
    select.select([watched], [], [])  # a pidfd turns readable when its process exits
    os._exit(1)


def extract_features(
    samples: Iterable[SampleSource],
    encoder: Encoder,
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    device: str | torch.device = "auto",
    amp: bool = True,
    progress: bool = False,
) -> Iterator[tuple[SampleSource, Features | DecodeError]]:
    """Yield (sample, Features or DecodeError) for every sample, in input order; closing the generator
    early stops its decoding workers at once. Inside `reused_decoding_workers()`, workers that served
    every sample stay for the next call with the same loader.

    Workers run `encoder.loader` (decode + light preprocessing, no model); the main process encodes
    each batch of good items at once under inference mode, with bf16/fp16 autocast on CUDA (`amp`).
    Loaders with nothing to decode (text) run in this process: workers would only add start-up and
    pickling. While workers decode on the CPU, the encoder gets the cores they leave (at least one):
    OpenMP threads that compete with busy workers for cores spin at their barriers (10x slower
    encoding measured on a full 2-core machine), while fewer threads cost at most their share.
    """
    samples = list(samples)
    device = resolve_device(device)
    encoder.to(device, amp=amp)
    workers = 0 if getattr(encoder.loader, "in_process", False) else num_workers
    loader = _decoding_loader(encoder.loader, workers, batch_size)
    loader.sampler.samples = samples
    threads = max(1, (os.cpu_count() or 1) - workers) if workers and device.type == "cpu" else None
    bar = tqdm(total=len(samples), desc=f"{encoder.modality}/{encoder.name}", unit="clip", disable=not progress)
    finished = False
    try:
        with bar:
            done = 0
            for items in loader:
                good = [i for i, item in enumerate(items) if not isinstance(item, DecodeError)]
                with _threads(threads):  # only around encode: between batches the caller's setting holds
                    encoded = dict(zip(good, encoder.encode([items[i] for i in good]))) if good else {}
                for i, item in enumerate(items):
                    yield samples[done + i], encoded.get(i, item)
                done += len(items)
                bar.update(len(items))
        finished = True
    finally:
        if workers:
            _keep(loader) if finished else _stop(loader)


# Decoding workers kept between calls inside `reused_decoding_workers()` (at most one set, for the last
# loader), so that a run's chunks pay the workers' start (a fork, then each worker's first decode:
# 0.2-0.3 s on a loaded 2-core machine) once, not once per chunk.
_idle: list[DataLoader] = []
_idle_lock = threading.Lock()
_reusing = threading.Event()


@contextlib.contextmanager
def reused_decoding_workers():
    """Within the block, decoding workers that served a whole call stay for the next call with the
    same loader; at its end they stop, so none outlives the block."""
    _reusing.set()
    try:
        yield
    finally:
        _reusing.clear()
        with _idle_lock:
            idle = _idle[:]
            _idle.clear()
        for loader in idle:
            _stop(loader)


def _decoding_loader(loader, workers: int, batch_size: int) -> DataLoader:
    """A DataLoader running `loader`: the idle workers when they run this very loader, else new ones
    (idle workers of another loader are stopped first: one set at a time)."""
    with _idle_lock:
        idle = _idle.pop() if _idle else None
    if idle is not None:
        if idle.dataset.loader is loader and idle.num_workers == workers and idle.batch_size == batch_size:
            return idle
        _stop(idle)
    return DataLoader(
        _Loading(loader),
        batch_size=batch_size,
        sampler=_Current(),
        num_workers=workers,
        collate_fn=list,  # items keep their own lengths (encoders pad) and errors stay values
        worker_init_fn=_init_worker if workers else None,
        multiprocessing_context=_worker_context() if workers else None,
        prefetch_factor=4 if workers else None,
        persistent_workers=bool(workers),
    )


def _keep(loader: DataLoader) -> None:
    """Keep the workers of a call that read every batch for the next call (inside reused_decoding_workers(),
    unless some are kept already)."""
    with _idle_lock:
        if _reusing.is_set() and not _idle:
            _idle.append(loader)
            return
    _stop(loader)


def _stop(loader: DataLoader) -> None:
    """Stop the loader's workers now. Persistent workers have no public stop: the iterator's own
    shutdown is what torch runs at exit."""
    if loader._iterator is not None:
        loader._iterator._shutdown_workers()
        loader._iterator = None
