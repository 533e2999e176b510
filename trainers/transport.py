"""How a DataLoader worker hands a batch to the training process: all its tensors in one buffer."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch.utils.data import get_worker_info

INLINE_BYTES = 1 << 20  # below this a packed batch goes as bytes through the pipe


class Packed(NamedTuple):
    """A batch as a DataLoader worker sends it: its tensors in one flat buffer. Each tensor a worker sends
    goes through shared memory, its file descriptor handed over a new authenticated socket connection
    (multiprocessing's resource sharer): half a millisecond of the training process's time per tensor.
    So a batch goes as one buffer, and a small one (pooled features) as plain bytes through the pipe,
    which costs the receiver less than that one hand-over."""

    buffer: torch.Tensor | bytes  # uint8 tensor (shared memory) or bytes (up to INLINE_BYTES)
    layout: list[tuple]  # (where in the batch, dtype, shape, byte offset) per tensor
    rest: dict  # the rest of the batch (sample ids)


def pack_batch(batch: dict) -> Packed:
    tensors = [((key,), value) for key, value in batch.items() if isinstance(value, torch.Tensor)]
    tensors += [((key, m), x) for key, group in batch.items() if isinstance(group, dict) for m, x in group.items()]
    layout, size = [], 0
    for where, x in tensors:
        size += -size % 8  # aligned, so that a typed view of the bytes is allowed
        layout.append((where, x.dtype, tuple(x.shape), size))
        size += x.numel() * x.element_size()
    buffer = torch.empty(size, dtype=torch.uint8)
    for (_, x), (_, dtype, _, start) in zip(tensors, layout):
        buffer[start : start + x.numel() * x.element_size()].view(dtype).copy_(x.reshape(-1))
    rest = {k: v for k, v in batch.items() if not isinstance(v, (torch.Tensor, dict))}
    return Packed(buffer.numpy().tobytes() if size <= INLINE_BYTES else buffer, layout, rest)


def unpack_batch(packed: Packed) -> dict:
    buffer = packed.buffer
    if isinstance(buffer, bytes):  # a writable copy: batches may be changed in place
        buffer = torch.frombuffer(bytearray(buffer), dtype=torch.uint8)
    batch = dict(packed.rest)
    for where, dtype, shape, start in packed.layout:
        x = buffer[start : start + math.prod(shape) * dtype.itemsize].view(dtype).view(shape)
        if len(where) == 1:
            batch[where[0]] = x
        else:
            batch.setdefault(where[0], {})[where[1]] = x
    return batch


def packed_in_worker(batches: Iterator[dict]) -> Iterator:
    """Batches as this process should hand them on: packed when it is a DataLoader worker."""
    return map(pack_batch, batches) if get_worker_info() is not None else batches
