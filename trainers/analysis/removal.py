"""Modality removal at test time: each modality (and each pair, when one would be left) is made missing
exactly as the data pipeline marks a missing modality (zeros, no valid step, present False)."""
from __future__ import annotations

import itertools

import torch

from trainers.analysis.runs import Run, evaluate, worsening


def remove(batch: dict, modalities: list[str], removed: tuple[str, ...]) -> dict:
    """The batch with `removed` modalities missing; the input batch is not changed."""
    features, mask, present = dict(batch["features"]), dict(batch["mask"]), batch["present"].clone()
    for m in removed:
        features[m] = torch.zeros_like(features[m])
        mask[m] = torch.zeros_like(mask[m])
        present[:, modalities.index(m)] = False
    return {**batch, "features": features, "mask": mask, "present": present}


def removal_sets(modalities: list[str]) -> list[tuple[str, ...]]:
    """(), then each single modality, then each pair that leaves at least one modality."""
    sets = [()]
    for size in (1, 2):
        if size < len(modalities):
            sets += list(itertools.combinations(modalities, size))
    return sets


def removal_table(run: Run, batches: list[dict]) -> list[dict]:
    """One row per removal set: the run's test metrics and how much worse its selection metric is than
    with every modality (`drop`, positive = worse)."""
    name, higher = run.metric
    rows = []
    for removed in removal_sets(run.modalities):
        metrics = evaluate(run, batches, lambda b, r=removed: remove(b, run.modalities, r))
        rows.append({"removed": list(removed), "metrics": metrics, "value": metrics[name]})
    full = rows[0]["value"]
    for row in rows:
        row["drop"] = worsening(row["value"], full, higher)
    return rows


def removal_section(run: Run, baseline: Run | None, batches: list[dict]) -> dict:
    """{"metric", "rows": [{"removed", "run", "run_drop", "baseline", "baseline_drop"}]}; the baseline
    (same pack, so the same batches) columns are None without a matching method-none run."""
    ours = removal_table(run, batches)
    theirs = removal_table(baseline, batches) if baseline is not None else None
    rows = []
    for i, row in enumerate(ours):
        rows.append({"removed": row["removed"], "run": row["value"], "run_drop": row["drop"],
                     "baseline": theirs[i]["value"] if theirs else None,
                     "baseline_drop": theirs[i]["drop"] if theirs else None})
    return {"metric": run.metric[0], "rows": rows}
