"""Batches: how a pack's raw samples are decoded (refusing anything pickled) and collated.

A batch is {"features": {m: [B, T_m, D_m]}, "mask": {m: [B, T_m] bool, True = real step},
"present": [B, M] bool (sorted modalities), "target": [B] long or float32, "sample_id": [str]}.
Features stay in the pack's dtype (float16 usually) until `to_device` widens them to float32 on the
device: half the bytes through worker IPC, pinned memory and host-to-device copies. For a backbone that
only reads each modality's mean over its real steps (late fusion), `BatchSpec.pooled` has the workers
average each sample's steps (in float32) instead: a batch is then [B, 1, D_m] per modality, a fraction
of the padded sequences to pass between processes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch

from storage.npy import load_npy
from storage.packinfo import PackInfo


def choose_modalities(info: PackInfo, wanted: list[str] | None) -> list[str]:
    """The sorted modalities to train on: `wanted`, or every modality the pack has features for."""
    chosen = sorted(wanted) if wanted else sorted(info.dims)
    missing = [m for m in chosen if m not in info.dims]
    if missing:
        raise ValueError(f"pack {info.path} has no features for {missing}; it has {sorted(info.dims)}")
    if not chosen:
        raise ValueError(f"pack {info.path} has no modality with features")
    return chosen


class CorruptSample(ValueError):
    """A sample whose members do not decode; the message names its shard and key. (One message argument, so
    that DataLoader can raise it again in the training process.)"""


@dataclass(frozen=True)
class BatchSpec:
    """How raw shard samples become batches; plain data so DataLoader workers can receive it."""

    modalities: list[str]
    dims: dict[str, int]
    task: str
    max_len: dict[str, int] = field(default_factory=dict)
    pooled: bool = False  # each sample's features averaged over its steps: [B, 1, D_m] float32 batches

    @classmethod
    def for_pack(
        cls, info: PackInfo, modalities: list[str], max_len: dict[str, int] | None = None, pooled: bool = False
    ) -> BatchSpec:
        return cls(modalities, {m: info.dims[m] for m in modalities}, info.task, dict(max_len or {}), pooled)

    def decode(self, raw: dict) -> dict:
        """A shard sample's arrays and target; a damaged member raises CorruptSample, naming shard and sample."""
        try:
            return self._decode(raw)
        except (ValueError, KeyError, TypeError) as err:
            reason = f"no {err} field" if isinstance(err, KeyError) else str(err)
            raise CorruptSample(f"{raw.get('__url__')}: sample {raw.get('__key__')!r}: {reason}") from None

    def _decode(self, raw: dict) -> dict:
        meta = json.loads(raw["json"])
        target = meta["target"]
        wanted = int if self.task == "classification" else (int, float)
        if not isinstance(target, wanted) or isinstance(target, bool):
            raise ValueError(f"json target {target!r} is not a {self.task} target")
        features = {}
        for m in self.modalities:
            data = raw.get(f"{m}.npy")
            if data is None:
                continue
            array = load_npy(data)
            if array.ndim == 1:  # pooled [D]: one step
                array = array[None]
            if array.ndim != 2 or array.shape[1] != self.dims[m]:
                raise ValueError(f"{m}.npy has shape {array.shape}, the pack says [T, {self.dims[m]}]")
            array = array[: self.max_len.get(m)]
            if len(array):
                features[m] = array
        return {"sample_id": meta["sample_id"], "target": target, "features": features}

    def collate(self, samples: list[dict]) -> dict:
        """Pad each modality to the batch's longest (or pool it); a missing modality is zeros with present False."""
        features, mask = {}, {}
        for m in self.modalities:
            arrays = [s["features"].get(m) for s in samples]
            features[m], mask[m] = (self.pool if self.pooled else self.pad)(arrays, self.dims[m])
        present = torch.tensor([[m in s["features"] for m in self.modalities] for s in samples], dtype=torch.bool)
        dtype = torch.long if self.task == "classification" else torch.float32
        target = torch.tensor([s["target"] for s in samples], dtype=dtype)
        return {
            "features": features,
            "mask": mask,
            "present": present,
            "target": target,
            "sample_id": [s["sample_id"] for s in samples],
        }

    @staticmethod
    def pad(arrays: list[np.ndarray | None], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T, D] in the stored dtype, zero-padded to the longest, and its mask [B, T]."""
        steps = max((len(a) for a in arrays if a is not None), default=1)
        stored = np.result_type(*[a.dtype for a in arrays if a is not None], np.float16)
        x = np.zeros((len(arrays), steps, dim), stored)
        valid = np.zeros((len(arrays), steps), bool)
        for i, array in enumerate(arrays):
            if array is not None:
                x[i, : len(array)] = array
                valid[i, : len(array)] = True
        return torch.from_numpy(x), torch.from_numpy(valid)

    @staticmethod
    def pool(arrays: list[np.ndarray | None], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, 1, D] float32 means over each sample's steps, and its mask [B, 1]. All the batch's steps are
        widened and summed at once: per-sample means cost several times more in numpy's float16 loops."""
        lengths = torch.tensor([0 if a is None else len(a) for a in arrays])
        rows = [a for a in arrays if a is not None]
        steps = torch.from_numpy(np.concatenate(rows)).float() if rows else torch.zeros(0, dim)
        owner = torch.repeat_interleave(torch.arange(len(arrays)), lengths)
        sums = torch.zeros(len(arrays), dim).index_add_(0, owner, steps)
        return (sums / lengths.clamp_min(1).unsqueeze(1)).unsqueeze(1), (lengths > 0).unsqueeze(1)


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch on `device`, features as float32 (the model's dtype)."""

    def move(t):
        return t.to(device, non_blocking=True)

    return {
        "features": {m: move(x).float() for m, x in batch["features"].items()},
        "mask": {m: move(x) for m, x in batch["mask"].items()},
        "present": move(batch["present"]),
        "target": move(batch["target"]),
        "sample_id": batch["sample_id"],
    }
