"""Build small packs in the packed-shard format of the spec (pack.json + <split>-NNNNNN.tar), written
with plain tarfile so the trainers' tests do not depend on storage/pack.py."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np

DIMS = {"audio": 8, "text": 6, "video": 5}
LENGTHS = {"audio": (3, 9), "text": (2, 6), "video": (1, 4)}


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def make_sample(
    rng: np.random.Generator, sample_id: str, split: str, target, dims, lengths, missing_rate, dtype, signal: float
) -> dict[str, bytes]:
    """One sample's members; each present modality carries the class (or the score) in its first dim."""
    members, present = {}, {}
    keep = {m: rng.random() >= missing_rate for m in dims}
    if not any(keep.values()):
        keep[sorted(dims)[0]] = True
    for m, dim in dims.items():
        present[m] = keep[m]
        if keep[m]:
            steps = int(rng.integers(lengths[m][0], lengths[m][1] + 1))
            x = rng.normal(size=(steps, dim))
            x[:, 0] += signal * float(target)
            members[f"{m}.npy"] = _npy(x.astype(dtype))
    label = f"c{target}" if isinstance(target, int) else target
    meta = {"sample_id": sample_id, "split": split, "label": label, "target": target, "present": present}
    members["json"] = json.dumps(meta).encode()
    return members


def write_pack(
    root: Path,
    *,
    counts=None,
    dims=None,
    lengths=None,
    task: str = "classification",
    num_classes: int = 3,
    shard_size: int = 16,
    missing_rate: float = 0.2,
    dtype=np.float16,
    signal: float = 1.5,
    seed: int = 0,
) -> Path:
    counts = counts or {"train": 40, "valid": 12, "test": 12}
    dims, lengths = dims or DIMS, lengths or LENGTHS
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, count in counts.items():
        shards = []
        for n, start in enumerate(range(0, count, shard_size)):
            name = f"{split}-{n:06d}.tar"
            with tarfile.open(root / name, "w") as tar:
                for i in range(start, min(start + shard_size, count)):
                    target = int(rng.integers(num_classes)) if task == "classification" else float(rng.uniform(-3, 3))
                    sid = f"{split}_{i:05d}"
                    members = make_sample(rng, sid, split, target, dims, lengths, missing_rate, dtype, signal)
                    for ext, data in members.items():
                        _member(tar, f"{sid}.{ext}", data)
            shards.append(name)
        splits[split] = {"shards": shards, "count": count}
    meta = {
        "pack_id": f"test{seed}",
        "task": task,
        "classes": [f"c{i}" for i in range(num_classes)] if task == "classification" else None,
        "modalities": {m: {"dim": d, "encoder": "synthetic", "fingerprint": "0" * 16} for m, d in dims.items()},
        "splits": splits,
    }
    (root / "pack.json").write_text(json.dumps(meta))
    return root
