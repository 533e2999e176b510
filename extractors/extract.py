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
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .base import Encoder, Features
from .decode import DecodeError

if TYPE_CHECKING:
    from .source import SampleSource


class _Loaded(Dataset):
    """Loader outputs by index; a DecodeError is returned as a value so one bad file fails one sample."""

    def __init__(self, samples: list, loader):
        self.samples, self.loader = samples, loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Any:
        try:
            return self.loader(self.samples[i])
        except DecodeError as e:
            return e


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
    early stops its decoding workers at once.

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
    loader = DataLoader(
        _Loaded(samples, encoder.loader),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=list,  # items keep their own lengths (encoders pad) and errors stay values
        worker_init_fn=_init_worker if workers else None,
        multiprocessing_context=_worker_context() if workers else None,
        prefetch_factor=4 if workers else None,
    )
    threads = max(1, (os.cpu_count() or 1) - workers) if workers and device.type == "cpu" else None
    bar = tqdm(total=len(samples), desc=f"{encoder.modality}/{encoder.name}", unit="clip", disable=not progress)
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

