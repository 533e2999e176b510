"""Batches (trainers/batches.py) from a pack's WebDataset shards, streamed through DataLoader workers, or
from memory.

Shards are read by storage/shards.py, which treats them as untrusted; only `.npy` (no object
arrays: nothing pickled) and `.json` members are decoded: nothing in a shard can run code.

Training epochs: every rank takes exactly ceil(count / (world * batch)) full batches, so all ranks do
the same number of steps (DDP needs that). Epoch e reads an endless sequence of passes over the train
shards, each pass in a shard order drawn from (seed, e); the streams (one per rank and DataLoader worker)
take consecutive ranges of that sequence, each just as many samples as its batches need, and shuffle
them through a buffer. So an epoch sees every sample once (plus < world * batch repeats from the next
pass to fill the last batches), a stream opens only the shards its range touches, the buffer drains
instead of dropping decoded samples, and the epoch depends on (seed, epoch) alone: a killed run resumes
exactly. It is webdataset's `resampled=True` + `with_epoch(n)` recipe with passes in place of draws with
replacement, which would leave a pack of few shards partly unseen each epoch. The DataLoader workers
persist from epoch to epoch (TrainLoader) and read the epoch number from shared memory when it starts.
"""

from __future__ import annotations

import functools
import itertools
import math
import multiprocessing
import os
import random
from collections.abc import Iterator

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from storage import remote
from storage.packinfo import PackInfo
from storage.shards import count_samples, shards_samples
from trainers.batches import BatchSpec
from trainers.transport import Packed, packed_in_worker, unpack_batch

SHUFFLE_START = 100  # webdataset's default


def _tar_samples(urls: list[str]) -> Iterator[dict]:
    """webdataset-style samples ({"__key__", "__url__", "json": bytes, "<m>.npy": bytes}) of the shards."""
    return shards_samples(urls)


def shard_sizes(urls: tuple[str, ...]) -> tuple[int, ...]:
    """Samples per shard, counted from the tar headers alone, once per version of each file: a pack rebuilt
    in this process (or a shard damaged since) is counted again."""
    return tuple(_samples_in(url, _version(url)) for url in urls)


def _version(url: str) -> tuple:
    """What changes when a shard does: a file's inode, size and mtime; an object's size and ETag."""
    where = remote.location(url)
    if remote.is_remote(where):
        return remote.version(where)
    status = os.stat(url)
    return status.st_ino, status.st_size, status.st_mtime_ns


@functools.lru_cache(maxsize=4096)
def _samples_in(url: str, version: tuple) -> int:
    return count_samples(url)


class TrainStream(IterableDataset):
    """One rank's `batches` full shuffled batches for one epoch (see the module docstring)."""

    def __init__(
        self,
        urls: list[str],
        spec: BatchSpec,
        *,
        batches: int,
        batch_size: int,
        shuffle_buffer: int,
        seed: int,
        epoch: int,
        rank: int = 0,
    ):
        super().__init__()
        self.urls, self.sizes = list(urls), shard_sizes(tuple(urls))
        self.spec, self.batches, self.batch_size, self.shuffle_buffer = spec, batches, batch_size, shuffle_buffer
        self.seed, self.rank = seed, rank
        self._epoch = multiprocessing.RawValue("q", epoch)  # shared memory: persistent workers see changes

    @property
    def epoch(self) -> int:
        return self._epoch.value

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._epoch.value = value

    def shards(self, epoch: int) -> Iterator[tuple[str, int, int]]:
        """(url, index of its first sample, size) along the epoch's endless sequence of passes."""
        start = 0
        for n in itertools.count():
            order = list(range(len(self.urls)))
            random.Random(f"{self.seed}/{epoch}/{n}").shuffle(order)
            for i in order:
                yield self.urls[i], start, self.sizes[i]
                start += self.sizes[i]

    def read_range(self, epoch: int, lo: int, hi: int) -> Iterator[dict]:
        """Raw samples lo..hi-1 of the epoch's sequence; only the shards that overlap the range are opened."""
        for url, start, size in self.shards(epoch):
            if start >= hi:
                return
            if start + size > lo:
                yield from itertools.islice(_tar_samples([url]), max(lo - start, 0), min(hi - start, size))

    def needed(self, worker: int, workers: int) -> int:
        """DataLoader takes batches from its workers in turn: worker w owes batches w, w + workers, ..."""
        return len(range(worker, self.batches, workers)) * self.batch_size

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        epoch = self.epoch  # read once, when the epoch starts
        # Streams (rank-major, then worker) take consecutive ranges: one epoch is one exact partition.
        lo = self.rank * self.batches * self.batch_size + sum(self.needed(w, workers) for w in range(worker))
        needed = self.needed(worker, workers)
        rng = random.Random(f"{self.seed}/{epoch}/{self.rank}/{worker}")
        buffer = max(1, min(self.shuffle_buffer, needed))  # it drains at the end: no decoded sample is dropped
        samples = map(self.spec.decode, self.read_range(epoch, lo, lo + needed))
        # Start yielding once SHUFFLE_START samples are in (the buffer keeps growing to its size): waiting
        # for a full buffer would idle the training loop at the start of every epoch.
        samples = wds.shuffle(buffer, initial=min(buffer, SHUFFLE_START), rng=rng)(samples)
        return packed_in_worker(wds.batched(self.batch_size, collation_fn=self.spec.collate, partial=False)(samples))


class EvalStream(IterableDataset):
    """Every sample of a split once, in shard order (shards dealt to workers in turn)."""

    def __init__(self, urls: list[str], spec: BatchSpec, *, batch_size: int):
        super().__init__()
        self.urls, self.spec, self.batch_size = urls, spec, batch_size

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        index, count = (info.id, info.num_workers) if info else (0, 1)
        samples = map(self.spec.decode, _tar_samples(self.urls[index::count]))
        return packed_in_worker(wds.batched(self.batch_size, collation_fn=self.spec.collate, partial=True)(samples))


class DamagedPack(ValueError):
    pass


def check_count(info: PackInfo, split: str) -> None:
    """A split's shards must hold what pack.json counts: a shard cut at a member boundary (or replaced by a
    shorter one) would otherwise be read as a smaller split, and train and evaluate on it without a word."""
    held = sum(shard_sizes(tuple(info.urls(split))))
    if held != info.count(split):
        raise DamagedPack(
            f"pack {info.path}: pack.json counts {info.count(split)} {split} samples, its shards "
            f"hold {held}; the pack is damaged (`precal pack` rebuilds it)"
        )


def batches_per_epoch(count: int, world_size: int, batch_size: int) -> int:
    return max(1, math.ceil(count / (world_size * batch_size)))


class Batches:
    """A DataLoader's batches, as dicts again (its workers send them packed)."""

    def __init__(self, loader: DataLoader):
        self.loader = loader

    def __iter__(self) -> Iterator[dict]:
        for batch in self.loader:
            yield unpack_batch(batch) if isinstance(batch, Packed) else batch


class EpochLoader(Batches):
    """One epoch of a TrainLoader, with its known length (for progress bars)."""

    def __init__(self, loader: DataLoader, length: int):
        super().__init__(loader)
        self.length = length

    def __len__(self) -> int:
        return self.length


def _loader(dataset: IterableDataset, num_workers: int, pin_memory: bool, persistent: bool = False) -> DataLoader:
    # Its own generator: the seed DataLoader draws for its workers must not consume the global RNG, or a
    # resumed run (which starts its workers in a later epoch) would train on other dropout draws.
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers else None,
        persistent_workers=persistent and num_workers > 0,
        generator=torch.Generator(),
        multiprocessing_context=worker_context() if num_workers else None,
    )


@functools.cache
def worker_context() -> multiprocessing.context.BaseContext:
    """Workers are forked from a clean single-threaded server process, never from the trainer itself.

    A process that has run a Prefect flow (or Dask, or anything else with background threads) holds
    locks in threads that a fork does not copy; a worker forked from it could hang at exit and be
    killed, which torch reports as a failed worker. The server imports the main module (so a script
    that trains needs the usual `if __name__ == "__main__":` guard) and this one once, so each worker
    still starts in milliseconds."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", __name__])
    return context


class TrainLoader:
    """Training batches, epoch after epoch, from one DataLoader whose workers persist: starting them costs
    more than a short epoch's loading. The epochs are exactly those of `train_loader`."""

    def __init__(
        self,
        info: PackInfo,
        spec: BatchSpec,
        *,
        batch_size: int,
        shuffle_buffer: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent: bool = True,
    ):
        count = info.count("train")
        if not count:
            raise ValueError(f"pack {info.path} has no training samples")
        check_count(info, "train")
        self.length = batches_per_epoch(count, world_size, batch_size)
        self.stream = TrainStream(
            info.urls("train"),
            spec,
            batches=self.length,
            batch_size=batch_size,
            shuffle_buffer=shuffle_buffer,
            seed=seed,
            epoch=0,
            rank=rank,
        )
        self.loader = _loader(self.stream, num_workers, pin_memory, persistent)

    def epoch(self, epoch: int) -> EpochLoader:
        """Iterate it before asking for the next epoch (the workers read the number when an epoch starts)."""
        self.stream.epoch = epoch
        return EpochLoader(self.loader, self.length)


def train_loader(
    info: PackInfo,
    spec: BatchSpec,
    *,
    batch_size: int,
    shuffle_buffer: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> EpochLoader:
    """One epoch's batches, with workers of its own."""
    return TrainLoader(
        info,
        spec,
        batch_size=batch_size,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
        rank=rank,
        world_size=world_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent=False,
    ).epoch(epoch)


def eval_loader(
    info: PackInfo,
    spec: BatchSpec,
    split: str,
    *,
    batch_size: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    persistent: bool = False,
) -> Batches:
    """persistent: keep the workers for the next pass (a validation split read every epoch)."""
    if not info.count(split):
        raise ValueError(f"pack {info.path} has no {split!r} samples")
    check_count(info, split)
    return Batches(
        _loader(EvalStream(info.urls(split), spec, batch_size=batch_size), num_workers, pin_memory, persistent)
    )


class InMemorySplit:
    """A whole split decoded once into padded tensors; batches are index slices trimmed to their longest
    sample, so a model sees the same shapes as from the stream. The benchmark's no-I/O baseline."""

    def __init__(self, info: PackInfo, spec: BatchSpec, split: str):
        self.spec = spec
        self.data = spec.collate([spec.decode(raw) for raw in _tar_samples(info.urls(split))])
        self.lengths = {m: valid.sum(1) for m, valid in self.data["mask"].items()}

    def __len__(self) -> int:
        return len(self.data["sample_id"])

    def batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0, drop_last: bool = False
    ) -> Iterator[dict]:
        order = (
            torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
            if shuffle
            else torch.arange(len(self))
        )
        stop = len(self) - len(self) % batch_size if drop_last else len(self)
        for start in range(0, stop, batch_size):
            yield self.take(order[start : start + batch_size])

    def take(self, index: torch.Tensor) -> dict:
        data, features, mask = self.data, {}, {}
        for m, x in data["features"].items():
            steps = max(int(self.lengths[m][index].max()), 1)
            features[m], mask[m] = x[index, :steps], data["mask"][m][index, :steps]
        return {
            "features": features,
            "mask": mask,
            "present": data["present"][index],
            "target": data["target"][index],
            "sample_id": [data["sample_id"][i] for i in index.tolist()],
        }
