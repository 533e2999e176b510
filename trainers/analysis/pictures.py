"""The report's pictures: t-SNE of the features before and after calibration and of the fused vector, and
heatmaps of the instance and dimension scales."""

from __future__ import annotations

import numpy as np

from trainers.analysis import visual
from trainers.analysis.report import Document
from trainers.analysis.runs import Outputs, Run


def perturbation_status(sample_ids: list[str], table: dict | None) -> list[str] | None:
    if table is None:
        return None
    return [table.get(sid, ("", "unknown"))[1] for sid in sample_ids]


def pictures(
    doc: Document, run: Run, outputs: Outputs, table: dict | None, tsne_points: int, figure, split: str
) -> None:
    tsne_pictures(doc, run, outputs, table, tsne_points, figure, split)
    if run.calibrated:
        scale_pictures(run, outputs, table, figure)


def tsne_pictures(
    doc: Document, run: Run, outputs: Outputs, table: dict | None, tsne_points: int, figure, split: str
) -> None:
    n = len(outputs.sample_ids)
    chosen = np.sort(np.random.default_rng(0).choice(n, size=min(n, tsne_points), replace=False))
    if len(chosen) < 5:
        doc.note("visualisation", f"Too few samples ({len(chosen)}) for t-SNE.")
        return
    ids = [outputs.sample_ids[i] for i in chosen]
    labels = [label_name(run, t) for t in outputs.targets[chosen].tolist()]
    status = perturbation_status(ids, table)
    present = outputs.present.numpy()
    doc.text(
        "visualisation",
        f"t-SNE of {len(chosen)} {split} samples (time-pooled features; "
        "PCA to 50 dims first when wider). Colours: the label, and the sample's perturbation.",
    )
    for j, m in enumerate(run.modalities):
        keep = present[chosen, j]
        if keep.sum() < 5:
            continue
        rows = chosen[keep]
        views = [("before calibration" if run.calibrated else "input features", outputs.pooled[m][rows].numpy())]
        if run.calibrated:
            views.append(("after calibration", outputs.calibrated[m][rows].numpy()))
        sub_status = None if status is None else [s for s, k in zip(modality_status(ids, table, m), keep) if k]
        figure(
            "visualisation",
            f"t-SNE of {m} features",
            visual.tsne_figure(views, [lb for lb, k in zip(labels, keep) if k], sub_status, f"{m}: pooled features"),
            f"tsne_{m}",
        )
    figure(
        "visualisation",
        "t-SNE of the fused representation (the head's input)",
        visual.tsne_figure([("fused", outputs.fused[chosen].numpy())], labels, status, "fused representation"),
        "tsne_fused",
    )


def label_name(run: Run, target) -> str:
    if run.classes:
        return str(run.classes[int(target)])
    return "negative" if target < 0 else "non-negative"  # regression: the sign, as acc2_has0 counts it


def scale_pictures(run: Run, outputs: Outputs, table: dict | None, figure) -> None:
    present = outputs.present.numpy()
    sids = outputs.sample_ids
    perturbed = [
        run.modalities.index(table[s][0]) if table and s in table and table[s][0] in run.modalities else None
        for s in sids
    ]
    groups = (
        [
            f"{table[s][1]}: {table[s][0]}"
            if s in table and table[s][1] != "clean"
            else ("clean" if s in table else "unknown")
            for s in sids
        ]
        if table
        else [f"label {label_name(run, t)}" for t in outputs.targets.tolist()]
    )
    figure(
        "visualisation",
        "Instance scales per sample and modality",
        visual.instance_heatmap(outputs.instance.numpy(), present, run.modalities, groups, perturbed),
        "instance_scales",
    )
    rows_by_modality = {}
    for j, m in enumerate(run.modalities):
        if not present[:, j].any():
            continue
        dims = outputs.dimension[m].numpy()
        statuses = modality_status(sids, table, m) if table else None
        rows = [("all samples", dims[present[:, j]].mean(0))]
        for name in (f"{m} conflict", f"{m} degraded", "other modality perturbed", "clean"):
            chosen_rows = [i for i in range(len(sids)) if statuses and statuses[i] == name and present[i, j]]
            if chosen_rows:
                rows.append((name if name != "clean" else "all clean", dims[chosen_rows].mean(0)))
        rows_by_modality[m] = rows
    figure(
        "visualisation",
        "Mean dimension scales per modality (rows: all samples, and by this modality's status)",
        visual.dimension_heatmap(rows_by_modality),
        "dimension_scales",
    )


def modality_status(sample_ids: list[str], table: dict | None, m: str) -> list[str]:
    """Per sample, from modality m's point of view: "clean", "<m> conflict", "<m> degraded", "other
    modality perturbed" ("unknown" when the sample is not in the table)."""
    status = []
    for sid in sample_ids:
        modality, kind = table.get(sid, ("", "unknown"))
        status.append(
            kind if kind in ("clean", "unknown") else f"{m} {kind}" if modality == m else "other modality perturbed"
        )
    return status
