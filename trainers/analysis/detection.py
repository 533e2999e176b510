"""Does calibration find the unreliable modality? The instance scale g_m against a perturbation table.

The table (`perturbations.csv`, written by the AV-digits builder beside its manifest) has a row per
sample: sample_id, modality (empty when clean), kind (clean | conflict | degraded), detail.

AUROC: over the (sample, modality) pairs of the present modalities, g_m as the score that the modality
is NOT perturbed; for kind k the pairs are those of the clean samples and of the samples perturbed with
k ("all": every sample). 0.5 is chance, 1 means every perturbed modality is scaled below every clean one.
Within-modality AUROC: the same, one modality at a time (see detection_metrics).
Lowest share: among the perturbed samples (of kind k) with at least two modalities present, the share
whose perturbed modality has the lowest scale; a tie for lowest between n modalities counts 1/n, so a
module that leaves every scale at 1 scores exactly chance (1 / number of modalities).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

KINDS = ("conflict", "degraded")


def read_perturbations(path: Path | str) -> dict[str, tuple[str, str]]:
    """{sample_id: (modality, kind)}; clean samples have ("", "clean")."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"sample_id", "modality", "kind"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: a perturbation table needs the columns {sorted(missing)}")
        table = {}
        for row in reader:
            kind = (row["kind"] or "clean").strip()
            if kind not in ("clean", *KINDS):
                raise ValueError(f"{path}: sample {row['sample_id']}: unknown kind {kind!r}")
            table[row["sample_id"]] = ((row["modality"] or "").strip() if kind != "clean" else "", kind)
    return table


def _auroc(scores: list[float], clean: list[bool]) -> float | None:
    if len(set(clean)) < 2:
        return None  # undefined without both perturbed and clean pairs
    return float(roc_auc_score(np.asarray(clean, int), np.asarray(scores, float)))


def lowest_credit(scales: np.ndarray, present: np.ndarray, target: int) -> float:
    """1/n when the target is among the n present modalities tied for the lowest scale, else 0."""
    values = np.where(present, scales, np.inf)
    lowest = np.flatnonzero(np.isclose(values, values.min(), rtol=0, atol=1e-6) & present)
    return 1.0 / len(lowest) if target in lowest else 0.0


def detection_metrics(
    instance, present, modalities: list[str], sample_ids: list[str], perturbations: dict[str, tuple[str, str]]
) -> dict:
    """{"auroc": {kind: x, "all": x}, "lowest_share": {...}, "auroc_within_modality": {m: {...}},
    "auroc_within_modality_mean": {...}, "perturbed_samples": {...}, "chance_lowest": 1/M, "unmatched": n}.

    The pooled AUROC also rewards scales that differ by modality (a modality the model always scales up
    is never "lowest"); the within-modality AUROC compares each modality's g only with itself, and is
    the cleaner answer to "is g_m lower when m is the perturbed one?"."""
    instance, present = np.asarray(instance, float), np.asarray(present, bool)
    auroc, lowest, counts = {}, {}, {}
    within: dict[str, dict] = {m: {} for m in modalities}
    for kind in (*KINDS, "all"):
        pairs, credits = [], []  # (modality index, scale, is clean)
        for i, sid in enumerate(sample_ids):
            if sid not in perturbations:
                continue
            modality, k = perturbations[sid]
            if k != "clean" and kind not in (k, "all"):
                continue
            target = modalities.index(modality) if modality in modalities else None
            pairs += [(j, instance[i, j], j != target) for j in np.flatnonzero(present[i])]
            if target is not None and present[i, target] and present[i].sum() >= 2:
                credits.append(lowest_credit(instance[i], present[i], target))
        auroc[kind] = _auroc([p[1] for p in pairs], [p[2] for p in pairs])
        for j, m in enumerate(modalities):
            within[m][kind] = _auroc([p[1] for p in pairs if p[0] == j], [p[2] for p in pairs if p[0] == j])
        lowest[kind] = float(np.mean(credits)) if credits else None
        counts[kind] = len(credits)
    defined = {kind: [within[m][kind] for m in modalities if within[m][kind] is not None] for kind in auroc}
    return {
        "auroc": auroc,
        "lowest_share": lowest,
        "auroc_within_modality": within,
        "auroc_within_modality_mean": {k: float(np.mean(v)) if v else None for k, v in defined.items()},
        "perturbed_samples": counts,
        "chance_lowest": 1.0 / len(modalities),
        "unmatched": sum(sid not in perturbations for sid in sample_ids),
    }


def scale_by_status(
    instance, present, modalities: list[str], sample_ids: list[str], perturbations: dict[str, tuple[str, str]]
) -> list[dict]:
    """Mean instance scale per modality when it is clean, in conflict, or degraded (for the report)."""
    instance, present = np.asarray(instance, float), np.asarray(present, bool)
    rows = []
    for j, m in enumerate(modalities):
        row = {"modality": m}
        for status in ("clean", *KINDS):
            values = [
                instance[i, j]
                for i, sid in enumerate(sample_ids)
                if present[i, j]
                and sid in perturbations
                and (perturbations[sid][1] if perturbations[sid][0] == m else "clean") == status
            ]
            row[status] = float(np.mean(values)) if values else None
            row[f"{status}_count"] = len(values)
        rows.append(row)
    return rows
