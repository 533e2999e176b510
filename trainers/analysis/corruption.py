"""Synthetic corruption of one modality at severities 1-5.

Feature level (applied to the packed features at evaluation time):
  noise       Gaussian noise, std = level x that dimension's std over the split (levels 0.25 .. 4)
  zero_dims   a fixed random share of the feature dimensions set to 0 (10% .. 90%)
  drop_steps  a random share of each sample's time steps removed from its mask (10% .. 90%; one step is
              always kept, so a pooled modality of one step is unchanged)
Every sweep draws from a generator seeded by (kind, modality, severity), so the run and its baseline see
exactly the same corruption. Raw-level variants (media corrupted, then re-extracted) are built by
pipeline/variants.py; `raw_corruption` evaluates them.
"""

from __future__ import annotations

import zlib

import torch
from torch import Tensor

from storage.packinfo import read_pack
from trainers.analysis.runs import Run, evaluate, load_batches

LEVELS = {
    "noise": (0.25, 0.5, 1.0, 2.0, 4.0),
    "zero_dims": (0.1, 0.3, 0.5, 0.7, 0.9),
    "drop_steps": (0.1, 0.3, 0.5, 0.7, 0.9),
}
KINDS = tuple(LEVELS)
SEVERITIES = (1, 2, 3, 4, 5)


def feature_std(batches: list[dict], modalities: list[str], m: str) -> Tensor:
    """Per-dimension std of modality m over every real step of the split (1 where it is 0)."""
    i = modalities.index(m)
    rows = torch.cat([b["features"][m][b["mask"][m] & b["present"][:, i, None]] for b in batches])
    if len(rows) < 2:
        return torch.ones(batches[0]["features"][m].shape[-1])
    std = rows.float().std(0)
    return torch.where(std > 0, std, torch.ones_like(std))


def generator(kind: str, m: str, severity: int) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(f"{kind}/{m}/{severity}".encode()))


def corrupt(batch: dict, m: str, kind: str, level: float, std: Tensor, rng: torch.Generator) -> dict:
    """The batch with modality m corrupted; the input batch is not changed."""
    x, valid = batch["features"][m], batch["mask"][m]
    if kind == "noise":
        x = x + torch.randn(x.shape, generator=rng) * std * level
    elif kind == "zero_dims":
        dims = x.shape[-1]
        dropped = torch.randperm(dims, generator=rng)[: round(level * dims)]
        x = x.clone()
        x[..., dropped] = 0.0
    elif kind == "drop_steps":
        keep = (torch.rand(valid.shape, generator=rng) >= level) & valid
        first = valid.float().argmax(1)  # always keep one real step of every sample that has one
        keep[torch.arange(len(keep)), first] |= valid[torch.arange(len(keep)), first]
        x, valid = x.masked_fill(~keep.unsqueeze(-1), 0.0), keep
    else:
        raise ValueError(f"unknown corruption {kind!r}; choose from {KINDS}")
    return {**batch, "features": {**batch["features"], m: x}, "mask": {**batch["mask"], m: valid}}


def corrupted_batches(batches: list[dict], m: str, kind: str, severity: int, std: Tensor) -> list[dict]:
    rng = generator(kind, m, severity)
    return [corrupt(b, m, kind, LEVELS[kind][severity - 1], std, rng) for b in batches]


def feature_corruption(runs: dict[str, Run], batches: list[dict], severities=SEVERITIES) -> dict:
    """{"metric", "severities": [0, ...], "levels", "curves": {kind: {m: {label: [metric per severity]}}}}
    for each run in `runs` ({label: run}, all on the same pack); severity 0 is the clean split."""
    first = next(iter(runs.values()))
    name = first.metric[0]
    clean = {label: evaluate(run, batches)[name] for label, run in runs.items()}
    curves = {}
    for kind in KINDS:
        curves[kind] = {}
        for m in first.modalities:
            std = feature_std(batches, first.modalities, m)
            values = {label: [clean[label]] for label in runs}
            for severity in severities:
                corrupted = corrupted_batches(batches, m, kind, severity, std)
                for label, run in runs.items():
                    values[label].append(evaluate(run, corrupted)[name])
            curves[kind][m] = values
    return {
        "metric": name,
        "severities": [0, *severities],
        "levels": {k: [LEVELS[k][s - 1] for s in severities] for k in KINDS},
        "curves": curves,
    }


def raw_corruption(runs: dict[str, Run], batches: list[dict], variants: list[dict]) -> dict:
    """The same curves on raw-level variants: `variants` are pipeline.variants.build_variants entries
    ({"kind", "modality", "severity", "level", "pack"}); severity 0 is the run's own test split."""
    first = next(iter(runs.values()))
    name = first.metric[0]
    clean = {label: evaluate(run, batches)[name] for label, run in runs.items()}
    curves: dict[str, dict] = {}
    for variant in sorted(variants, key=lambda v: (v["kind"], v["severity"])):
        info = read_pack(variant["pack"])
        entry = curves.setdefault(
            variant["kind"],
            {
                "modality": variant["modality"],
                "severities": [0],
                "levels": [],
                "values": {label: [clean[label]] for label in runs},
            },
        )
        entry["severities"].append(variant["severity"])
        entry["levels"].append(variant["level"])
        for label, run in runs.items():
            entry["values"][label].append(evaluate(run, load_batches(run, "test", info))[name])
    return {"metric": name, "curves": curves}
