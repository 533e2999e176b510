"""The report of one analysed run (trainers/analysis/analyse.py): its sections, tables and figures."""

from __future__ import annotations

import json
from pathlib import Path

from storage.remote import Location
from trainers.analysis import visual
from trainers.analysis.corruption import KINDS as FEATURE_KINDS
from trainers.analysis.pictures import pictures
from trainers.analysis.report import Document
from trainers.analysis.runs import Outputs, Run


def build_document(
    run: Run, result: dict, outputs: Outputs, table: dict | None, tsne_points: int, figures: Location
) -> Document:
    doc = Document(f"precal analysis: {run.name}")

    def figure(section: str, title: str, data: bytes, name: str) -> None:
        (figures / f"{name}.png").write_bytes(data)
        doc.figure(section, title, data, name)

    run_section(doc, run, result)
    removal = result["removal"]
    doc.text(
        "removal",
        f"Test {removal['metric']} with modalities removed at test time (zeros, no valid step, "
        "present=False: exactly how the data marks a missing modality). drop = how much worse than "
        "with every modality (positive = worse).",
    )
    doc.table(
        "removal",
        ["removed", f"this run ({result['method']})", "drop", "no calibration", "drop"],
        [
            [
                "none" if not r["removed"] else ", ".join(r["removed"]),
                r["run"],
                r["run_drop"],
                r["baseline"],
                r["baseline_drop"],
            ]
            for r in removal["rows"]
        ],
    )
    ceiling_part(doc, removal.get("ceiling"), result["method"])
    labels = list(result["dynamics"])  # this run's label, then its baseline's
    figure(
        "removal",
        "Test metric with modalities removed",
        visual.removal_figure(removal, labels[0], labels[1] if len(labels) > 1 else None),
        "removal",
    )
    corruption_section(doc, result, figure)
    dynamics_part(doc, result, figure)
    detection_part(doc, result)
    pictures(doc, run, outputs, table, tsne_points, figure, result["split"])
    for text in result["notes"]:
        doc.note("notes", text)
    return doc


def ceiling_part(doc: Document, ceiling: dict | None, method: str) -> None:
    if ceiling is None:
        return
    rows = [
        [label, ceiling[key]["as_is"], ceiling[key]["removed"], ceiling[key]["removed"] - ceiling[key]["as_is"]]
        for key, label in (("run", f"this run ({method})"), ("baseline", "no calibration"))
        if key in ceiling
    ]
    doc.table(
        "removal",
        ["model", f"{ceiling['metric']} as is", "perturbed modality removed by hand", "headroom"],
        rows,
        caption=f"Removal ceiling on the {ceiling['samples']} perturbed samples of the split: how far silencing "
        "the unreliable modality perfectly would go",
    )


def run_section(doc: Document, run: Run, result: dict) -> None:
    doc.text(
        "run",
        f"Run folder: {run.path}. Pack: {run.info.path} ({run.info.task}, modalities "
        f"{', '.join(run.modalities)}). Analysed on the {result['split']} split.",
    )
    if result["baseline"]:
        doc.text("run", f"Compared with the method-none run {result['baseline']} (same pack, backbone, seed).")
    metrics = run.metrics
    rows = [
        [split, *[metrics.get(split, {}).get(k) for k in sorted(metrics.get("test", {}))]]
        for split in ("valid", "test")
        if metrics.get(split)
    ]
    if rows:
        doc.table(
            "run",
            ["split", *sorted(metrics.get("test", {}))],
            rows,
            caption=f"Metrics at the selected epoch ({metrics.get('best_epoch')})",
        )
    doc.table(
        "run",
        ["setting", "value"],
        [[k, json.dumps(v, default=str)] for k, v in run.config.model_dump(mode="json").items()],
        caption="Training config",
    )


def corruption_section(doc: Document, result: dict, figure) -> None:
    feature = result["feature_corruption"]
    metric, sevs = feature["metric"], feature["severities"]
    doc.text(
        "corruption",
        "Feature level: one modality's packed features corrupted at evaluation time. noise: "
        "Gaussian, std = level x the dimension's std; zero_dims: a share of dimensions zeroed; "
        "drop_steps: a share of time steps masked out (one kept). Levels per severity: "
        + "; ".join(f"{k} {v}" for k, v in feature["levels"].items())
        + ".",
    )
    panels = [
        (f"{kind}: {m}", sevs, values, "severity", f"test {metric}")
        for kind, per_m in feature["curves"].items()
        for m, values in per_m.items()
    ]
    figure(
        "corruption",
        "Feature-level corruption: test metric vs severity",
        visual.curves_figure(
            panels, "Feature-level corruption (severity 0 = clean)", cols=len(feature["curves"][FEATURE_KINDS[0]])
        ),
        "feature_corruption",
    )
    labels = list(next(iter(next(iter(feature["curves"].values())).values())))
    doc.table(
        "corruption",
        [
            "corruption",
            "modality",
            *[f"{label}: clean" for label in labels],
            *[f"{label}: severity {sevs[-1]}" for label in labels],
        ],
        [
            [kind, m, *[v[label][0] for label in labels], *[v[label][-1] for label in labels]]
            for kind, per_m in feature["curves"].items()
            for m, v in per_m.items()
        ],
        caption=f"Feature-level corruption: test {metric}, clean and at the highest severity",
    )
    raw = result["raw_corruption"]
    if raw is None:
        doc.note("corruption", "Raw-level corruption was not run; see the notes.")
        return
    doc.text(
        "corruption",
        "Raw level: the test clips' media corrupted (video-noise: pixel noise std; video-blur: "
        "Gaussian sigma; audio-noise: SNR in dB; text-drop: share of words dropped), re-extracted "
        "incrementally into the same store (only the corrupted modality), packed and evaluated.",
    )
    raw_panels = [
        (f"{kind} ({c['modality']})", c["severities"], c["values"], "severity", f"test {raw['metric']}")
        for kind, c in raw["curves"].items()
    ]
    figure(
        "corruption",
        "Raw-level corruption: test metric vs severity",
        visual.curves_figure(raw_panels, "Raw-level corruption (severity 0 = clean)", cols=min(4, len(raw_panels))),
        "raw_corruption",
    )
    rows = []
    for kind, c in raw["curves"].items():
        for k, (sev, level) in enumerate(zip(c["severities"][1:], c["levels"]), start=1):
            rows.append([kind, c["modality"], sev, level, *[v[k] for v in c["values"].values()]])
    first = next(iter(raw["curves"].values()))
    doc.table(
        "corruption",
        ["variant", "modality", "severity", "level", *first["values"]],
        rows,
        caption=f"Raw-level corruption: test {raw['metric']}",
    )
    doc.table(
        "corruption",
        ["variant", "severity", "pack", "re-extracted", "skipped (cached)", "reused"],
        [
            [
                v["kind"],
                v["severity"],
                Path(v["pack"]).name,
                ", ".join(f"{m} {e['ok']}" for m, e in v["extraction"].items() if e["ok"]) or "none",
                ", ".join(f"{m} {e['skipped']}" for m, e in v["extraction"].items() if e["skipped"]),
                "yes" if v["cached"] else "no",
            ]
            for v in raw["variants"]
        ],
        caption="Variants: what each extraction did (from its first build)",
    )


def dynamics_part(doc: Document, result: dict, figure) -> None:
    dynamics = result["dynamics"]
    loss_lines, metric_lines = {}, {}
    epochs = []
    for label, d in dynamics.items():
        s = d["series"]
        epochs = s["epoch"] if len(s["epoch"]) > len(epochs) else epochs
        loss_lines[f"{label}: train"] = s["train_loss"]
        loss_lines[f"{label}: valid"] = s["valid_loss"]
        metric_lines[label] = s["valid_metric"]
    if not epochs:
        doc.note("dynamics", "metrics.json has no history.")
        return
    metric = result["removal"]["metric"]
    panels = [
        ("loss", epochs, loss_lines, "epoch", "loss"),
        (f"validation {metric}", epochs, metric_lines, "epoch", metric),
    ]
    panels += statistics_panels(dynamics)
    figure(
        "dynamics",
        "Training dynamics per epoch",
        visual.curves_figure(panels, "Training dynamics", cols=min(3, len(panels))),
        "dynamics",
    )
    if result["selected_epoch_statistics"]:
        rows = []
        for label, stats in result["selected_epoch_statistics"].items():
            for m, probe in stats["probe"].items():
                inst = (stats.get("instance_scale") or {}).get(m) or {}
                dim = (stats.get("dimension_scale") or {}).get(m) or {}
                rows.append(
                    [
                        label,
                        m,
                        probe,
                        stats["grad_norm"][m],
                        inst.get("mean"),
                        inst.get("std"),
                        dim.get("mean"),
                        dim.get("std"),
                    ]
                )
        doc.table(
            "dynamics",
            ["run", "modality", "unimodal probe", "grad norm", "g mean", "g std", "r mean", "r std"],
            rows,
            caption="Statistics at the selected epoch, on the validation split",
        )


def statistics_panels(dynamics: dict) -> list[tuple]:
    panels = []
    for key, title in (
        ("probe", "unimodal probe on valid"),
        ("grad_norm", "gradient norm per branch"),
        ("instance_scale", "instance scale g_m (mean)"),
        ("dimension_scale", "dimension scale r_m (mean)"),
    ):
        lines, epochs = {}, []
        for label, d in dynamics.items():
            stats = d["series"].get("statistics")
            if not stats:
                continue
            epochs = d["series"]["epoch"]
            modalities = sorted({m for s in stats if s and s.get(key) for m in s[key]})
            for m in modalities:
                values = [(s or {}).get(key, {}) or {} for s in stats]
                ys = [v.get(m) for v in values]
                lines[f"{m} ({label})"] = [y["mean"] if isinstance(y, dict) else y for y in ys]
        if lines:
            panels.append((title, epochs, lines, "epoch", title.split(" (")[0].replace(" on valid", "")))
    return panels


def detection_part(doc: Document, result: dict) -> None:
    detection = result["detection"]
    if detection is None:
        doc.note("detection", "Not measured for this run (see the notes).")
        return
    doc.text(
        "detection",
        "AUROC: the instance scale g_m as a score that modality m is NOT perturbed, over the "
        "(sample, modality) pairs of the clean samples and of the samples perturbed with that kind. "
        "Lowest share: share of perturbed samples whose perturbed modality gets the lowest g "
        f"(ties split; chance {detection['chance_lowest']:.3f}). The pooled AUROC also rewards a "
        "modality that is always scaled higher; the within-modality AUROC compares each g_m only "
        "with itself. "
        f"Source: {result['perturbations']}.",
    )
    within = detection["auroc_within_modality"]
    doc.table(
        "detection",
        [
            "perturbation",
            "AUROC",
            "lowest share",
            "perturbed samples",
            "AUROC within modality (mean)",
            *[f"within {m}" for m in within],
        ],
        [
            [
                k,
                detection["auroc"][k],
                detection["lowest_share"][k],
                detection["perturbed_samples"][k],
                detection["auroc_within_modality_mean"][k],
                *[v[k] for v in within.values()],
            ]
            for k in ("conflict", "degraded", "all")
        ],
    )
    doc.table(
        "detection",
        ["modality", "g when clean", "n", "g in conflict", "n", "g degraded", "n"],
        [
            [
                r["modality"],
                r["clean"],
                r["clean_count"],
                r["conflict"],
                r["conflict_count"],
                r["degraded"],
                r["degraded_count"],
            ]
            for r in detection["by_status"]
        ],
        caption="Mean instance scale by status",
    )
    if detection["unmatched"]:
        doc.note("detection", f"{detection['unmatched']} samples are not in the perturbation table and were left out.")
