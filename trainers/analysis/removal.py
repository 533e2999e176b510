"""Modality removal at test time: each modality (and each pair, when one would be left) is made missing
exactly as the data pipeline marks a missing modality (zeros, no valid step, present False). With a
perturbation table, the removal "ceiling": each perturbed sample with its perturbed modality removed by
hand, what a calibration that found and silenced the bad modality perfectly could reach."""

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
        rows.append(
            {
                "removed": row["removed"],
                "run": row["value"],
                "run_drop": row["drop"],
                "baseline": theirs[i]["value"] if theirs else None,
                "baseline_drop": theirs[i]["drop"] if theirs else None,
            }
        )
    return {"metric": run.metric[0], "rows": rows}


def without_perturbed(batch: dict, modalities: list[str], table: dict) -> dict:
    """Each sample's perturbed modality (table: {sample_id: (modality, kind)}) made missing."""
    features, mask, present = dict(batch["features"]), dict(batch["mask"]), batch["present"].clone()
    for j, m in enumerate(modalities):
        hit = torch.tensor([table.get(sid, ("", ""))[0] == m for sid in batch["sample_id"]])
        if hit.any():
            features[m] = features[m].masked_fill(hit[:, None, None], 0.0)
            mask[m] = mask[m] & ~hit[:, None]
            present[:, j] &= ~hit
    return {**batch, "features": features, "mask": mask, "present": present}


def perturbed_only(batches: list[dict], table: dict, perturbed: bool = True) -> list[dict]:
    """The batches cut down to the samples the table marks as perturbed (or, with perturbed=False, as
    clean); empty batches dropped."""
    kept = []
    for batch in batches:
        rows = [
            i for i, sid in enumerate(batch["sample_id"]) if (table.get(sid, ("", "clean"))[1] != "clean") == perturbed
        ]
        if rows:
            index = torch.tensor(rows)
            kept.append(
                {
                    "features": {m: x[index] for m, x in batch["features"].items()},
                    "mask": {m: x[index] for m, x in batch["mask"].items()},
                    "present": batch["present"][index],
                    "target": batch["target"][index],
                    "sample_id": [batch["sample_id"][i] for i in rows],
                }
            )
    return kept


def ceiling_section(run: Run, baseline: Run | None, batches: list[dict], table: dict) -> dict | None:
    """On the perturbed samples: the metric as is and with the perturbed modality removed by hand, for the
    run and its baseline; None when the split has no perturbed sample."""
    perturbed = perturbed_only(batches, table)
    if not perturbed:
        return None
    name = run.metric[0]
    section = {"metric": name, "samples": sum(len(b["sample_id"]) for b in perturbed)}
    for label, r in (("run", run), ("baseline", baseline)):
        if r is not None:
            section[label] = {
                "as_is": evaluate(r, perturbed)[name],
                "removed": evaluate(r, perturbed, lambda b, m=r.modalities: without_perturbed(b, m, table))[name],
            }
    return section
