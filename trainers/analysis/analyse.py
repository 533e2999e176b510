"""`analyse_run(run_dir)`: every analysis of one finished training run, written under `<run>/analysis/`:
  analysis.json   all numbers;  report.html  the self-contained report;  summary.md  the same as markdown
  figures/*.png   the figures;  variants/    raw-level corrupted media (with --manifest), cached
and, for a calibration run with a perturbation table, `calibration_detection_*` added to its metrics.json.
`analyse(path)` takes a run or an experiment folder (every run in it, plus `<exp>/analysis/` with a table
of all runs and mean +- std per variant).
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from trainers.analysis.corruption import KINDS as FEATURE_KINDS
from trainers.analysis.corruption import SEVERITIES, feature_corruption, raw_corruption
from trainers.analysis.detection import detection_metrics, read_perturbations, scale_by_status
from trainers.analysis.dynamics import dynamics_section, epoch_statistics
from trainers.analysis.removal import ceiling_section, removal_section
from trainers.analysis.report import Document, publish_artifact
from trainers.analysis.runs import Outputs, Run, collect, find_baseline, find_runs, is_run, load_batches, load_run
from trainers.analysis import visual
from trainers.train import write_json_atomic


def method_label(run: Run) -> str:
    c = run.config
    return f"calibration ({c.calibration})" if c.method == "calibration" else c.method


def analyse(path: Path | str, **options) -> dict:
    """A run folder (metrics.json + best.pt) or an experiment folder holding several runs."""
    path = Path(path)
    if is_run(path):
        return analyse_run(path, **options)
    runs = find_runs(path)
    if not runs:
        raise FileNotFoundError(f"{path} is neither a finished training run (metrics.json and best.pt) nor an "
                                "experiment folder holding some (<pack>/<backbone>-<method>/seed-<n>/)")
    results = []
    for run_dir in tqdm(runs, desc="analyse runs", unit="run"):
        pack_id = json.loads((run_dir / "metrics.json").read_text())["pack_id"]
        # Raw variants depend on the pack, not on the run: one set per pack for the whole experiment.
        results.append(analyse_run(run_dir, variants_dir=path / "analysis" / "variants" / pack_id, publish=False,
                                   **options))
    return experiment_summary(path, results, options.get("publish", True))


def analyse_run(run_dir: Path | str, *, manifest: Path | str | None = None, store: Path | str | None = None,
                perturbations: Path | str | None = None, severities=SEVERITIES, raw: bool = True,
                variants_dir: Path | None = None, batch_size: int = 64, tsne_points: int = 1000,
                num_workers: int = 1, publish: bool = True, progress: bool = True) -> dict:
    """Every analysis of one run; returns what it writes to analysis.json."""
    run = load_run(run_dir)
    out = run.path / "analysis"
    (out / "figures").mkdir(parents=True, exist_ok=True)
    baseline_dir = find_baseline(run)
    baseline = load_run(baseline_dir) if baseline_dir else None
    runs = {method_label(run): run, **({method_label(baseline): baseline} if baseline else {})}
    split = "test" if run.info.count("test") else "valid"
    batches = load_batches(run, split, batch_size=batch_size)
    notes: list[str] = []
    if baseline is None and run.config.method != "none":
        notes.append("No method-none run of the same pack, backbone and seed was found beside this run: "
                     "no comparison without calibration.")
    if perturbations is None and manifest is not None and (Path(manifest).parent / "perturbations.csv").is_file():
        perturbations = Path(manifest).parent / "perturbations.csv"
    table = read_perturbations(perturbations) if perturbations else None

    def stage(name):
        if progress:
            tqdm.write(f"analyse {run.name}: {name}")

    stage("modality removal")
    removal = removal_section(run, baseline, batches)
    stage("feature-level corruption")
    feature = feature_corruption(runs, batches, severities)
    raw_section = None
    if not raw:
        notes.append("Raw-level corruption was not run (--no-raw): feature-level only.")
    elif manifest is None:
        notes.append("Raw-level corruption needs the manifest the pack was built from (--manifest, and --store "
                     "when the pack is not inside its store): feature-level only.")
    else:
        stage("raw-level corruption (variants re-extracted)")
        raw_section, reason = raw_level(run, runs, batches, Path(manifest), store, severities,
                                        variants_dir or out / "variants", num_workers, progress)
        if reason:
            notes.append(reason)
    stage("training dynamics")
    dynamics = {label: dynamics_section(r.metrics.get("history", [])) for label, r in runs.items()}
    selected_stats = {}
    if not all(d["statistics_recorded"] for d in dynamics.values()):
        notes.append("The training loop did not record per-epoch statistics (probe accuracy, gradient norms, scale "
                     "statistics): they are shown for the selected epoch only. Call "
                     "trainers.analysis.dynamics.epoch_statistics at the end of each epoch to record them.")
        selected_stats = {label: epoch_statistics(r.model, load_batches(r, "valid", batch_size=batch_size), "cpu")
                          for label, r in runs.items() if r.info.count("valid")}
    if table is not None:
        removal["ceiling"] = ceiling_section(run, baseline, batches, table)
    stage("detection and pictures")
    outputs = collect(run.model, batches)
    detection = None
    if run.calibrated and table is not None:
        detection = detection_metrics(outputs.instance, outputs.present, run.modalities, outputs.sample_ids, table)
        detection["by_status"] = scale_by_status(outputs.instance, outputs.present, run.modalities,
                                                 outputs.sample_ids, table)
        record_detection(run, detection)
    elif not run.calibrated:
        notes.append("This run has no calibration module: there are no scales to test against perturbations.")
    else:
        notes.append("No perturbation table (--perturbations, or perturbations.csv beside --manifest): the "
                     "detection analysis was skipped.")

    result = {"run": str(run.path), "name": run.name, "method": method_label(run), "split": split,
              "baseline": str(baseline.path) if baseline else None, "test": run.metrics.get("test"),
              "removal": removal, "feature_corruption": feature, "raw_corruption": raw_section,
              "dynamics": dynamics, "selected_epoch_statistics": selected_stats, "detection": detection,
              "perturbations": str(perturbations) if perturbations else None, "notes": notes}
    doc = build_document(run, result, outputs, table, tsne_points, out / "figures")
    (out / "report.html").write_text(doc.html(), encoding="utf-8")
    summary = doc.markdown()
    (out / "summary.md").write_text(summary, encoding="utf-8")
    write_json_atomic(result, out / "analysis.json")
    if publish:
        publish_artifact(summary)
    return result


def raw_level(run: Run, runs: dict[str, Run], batches, manifest: Path, store, severities, folder: Path,
              num_workers: int, progress: bool) -> tuple[dict | None, str | None]:
    """Build (or reuse) the raw variants and evaluate them; a reason instead when that cannot be done."""
    from pipeline.variants import build_variants  # media work lives in pipeline/; only needed here

    store = Path(store) if store else run.info.path.parent.parent
    if not (store / "catalog").is_dir():
        return None, (f"Raw-level corruption skipped: {store} is not a feature store; pass --store "
                      "(the store the pack was made in).")
    sample_ids = [sid for b in batches for sid in b["sample_id"]]
    try:
        variants = build_variants(manifest, store, run.info, sample_ids, folder, severities=severities,
                                  num_workers=num_workers, progress=progress)
    except (FileNotFoundError, ValueError) as err:
        return None, f"Raw-level corruption skipped: {err}"
    section = raw_corruption(runs, batches, variants)
    section["variants"] = [{k: v[k] for k in ("kind", "severity", "level", "pack", "cached")} |
                           {"extraction": {s["modality"]: {k: s[k] for k in ("ok", "failed", "skipped")}
                                           for s in v["extraction"]["modalities"]}} for v in variants]
    return section, None


def record_detection(run: Run, detection: dict) -> None:
    """Add the detection numbers to the run's metrics.json (read fresh: the loop owns the file)."""
    path = run.path / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["calibration_detection_auroc"] = detection["auroc"]
    metrics["calibration_detection_lowest_share"] = detection["lowest_share"]
    write_json_atomic(metrics, path)


# ---- the document ---------------------------------------------------------------------------------------

def perturbation_status(sample_ids: list[str], table: dict | None) -> list[str] | None:
    if table is None:
        return None
    return [table.get(sid, ("", "unknown"))[1] for sid in sample_ids]


def build_document(run: Run, result: dict, outputs: Outputs, table: dict | None, tsne_points: int,
                   figures: Path) -> Document:
    doc = Document(f"precal analysis: {run.name}")

    def figure(section: str, title: str, data: bytes, name: str) -> None:
        (figures / f"{name}.png").write_bytes(data)
        doc.figure(section, title, data, name)

    run_section(doc, run, result)
    removal = result["removal"]
    doc.text("removal", f"Test {removal['metric']} with modalities removed at test time (zeros, no valid step, "
                        "present=False: exactly how the data marks a missing modality). drop = how much worse than "
                        "with every modality (positive = worse).")
    doc.table("removal", ["removed", f"this run ({result['method']})", "drop", "no calibration", "drop"],
              [["none" if not r["removed"] else ", ".join(r["removed"]), r["run"], r["run_drop"], r["baseline"],
                r["baseline_drop"]] for r in removal["rows"]])
    ceiling_part(doc, removal.get("ceiling"), result["method"])
    labels = list(result["dynamics"])  # this run's label, then its baseline's
    figure("removal", "Test metric with modalities removed",
           visual.removal_figure(removal, labels[0], labels[1] if len(labels) > 1 else None), "removal")
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
    rows = [[label, ceiling[key]["as_is"], ceiling[key]["removed"], ceiling[key]["removed"] - ceiling[key]["as_is"]]
            for key, label in (("run", f"this run ({method})"), ("baseline", "no calibration")) if key in ceiling]
    doc.table("removal", ["model", f"{ceiling['metric']} as is", "perturbed modality removed by hand", "headroom"], rows,
              caption=f"Removal ceiling on the {ceiling['samples']} perturbed samples of the split: how far silencing "
                      "the unreliable modality perfectly would go")


def run_section(doc: Document, run: Run, result: dict) -> None:
    doc.text("run", f"Run folder: {run.path}. Pack: {run.info.path} ({run.info.task}, modalities "
                    f"{', '.join(run.modalities)}). Analysed on the {result['split']} split.")
    if result["baseline"]:
        doc.text("run", f"Compared with the method-none run {result['baseline']} (same pack, backbone, seed).")
    metrics = run.metrics
    rows = [[split, *[metrics.get(split, {}).get(k) for k in sorted(metrics.get("test", {}))]]
            for split in ("valid", "test") if metrics.get(split)]
    if rows:
        doc.table("run", ["split", *sorted(metrics.get("test", {}))], rows,
                  caption=f"Metrics at the selected epoch ({metrics.get('best_epoch')})")
    doc.table("run", ["setting", "value"], [[k, json.dumps(v, default=str)] for k, v in run.config.model_dump(
        mode="json").items()], caption="Training config")


def corruption_section(doc: Document, result: dict, figure) -> None:
    feature = result["feature_corruption"]
    metric, sevs = feature["metric"], feature["severities"]
    doc.text("corruption", "Feature level: one modality's packed features corrupted at evaluation time. noise: "
                           "Gaussian, std = level x the dimension's std; zero_dims: a share of dimensions zeroed; "
                           "drop_steps: a share of time steps masked out (one kept). Levels per severity: "
                           + "; ".join(f"{k} {v}" for k, v in feature["levels"].items()) + ".")
    panels = [(f"{kind}: {m}", sevs, values, "severity", f"test {metric}") for kind, per_m in feature["curves"].items()
              for m, values in per_m.items()]
    figure("corruption", "Feature-level corruption: test metric vs severity", visual.curves_figure(
        panels, "Feature-level corruption (severity 0 = clean)", cols=len(feature["curves"][FEATURE_KINDS[0]])),
        "feature_corruption")
    labels = list(next(iter(next(iter(feature["curves"].values())).values())))
    doc.table("corruption", ["corruption", "modality", *[f"{label}: clean" for label in labels],
                             *[f"{label}: severity {sevs[-1]}" for label in labels]],
              [[kind, m, *[v[label][0] for label in labels], *[v[label][-1] for label in labels]]
               for kind, per_m in feature["curves"].items() for m, v in per_m.items()],
              caption=f"Feature-level corruption: test {metric}, clean and at the highest severity")
    raw = result["raw_corruption"]
    if raw is None:
        doc.note("corruption", "Raw-level corruption was not run; see the notes.")
        return
    doc.text("corruption", "Raw level: the test clips' media corrupted (video-noise: pixel noise std; video-blur: "
                           "Gaussian sigma; audio-noise: SNR in dB; text-drop: share of words dropped), re-extracted "
                           "incrementally into the same store (only the corrupted modality), packed and evaluated.")
    raw_panels = [(f"{kind} ({c['modality']})", c["severities"], c["values"], "severity", f"test {raw['metric']}")
                  for kind, c in raw["curves"].items()]
    figure("corruption", "Raw-level corruption: test metric vs severity",
           visual.curves_figure(raw_panels, "Raw-level corruption (severity 0 = clean)", cols=min(4, len(raw_panels))),
           "raw_corruption")
    rows = []
    for kind, c in raw["curves"].items():
        for k, (sev, level) in enumerate(zip(c["severities"][1:], c["levels"]), start=1):
            rows.append([kind, c["modality"], sev, level, *[v[k] for v in c["values"].values()]])
    first = next(iter(raw["curves"].values()))
    doc.table("corruption", ["variant", "modality", "severity", "level", *first["values"]], rows,
              caption=f"Raw-level corruption: test {raw['metric']}")
    doc.table("corruption", ["variant", "severity", "pack", "re-extracted", "skipped (cached)", "reused"],
              [[v["kind"], v["severity"], Path(v["pack"]).name,
                ", ".join(f"{m} {e['ok']}" for m, e in v["extraction"].items() if e["ok"]) or "none",
                ", ".join(f"{m} {e['skipped']}" for m, e in v["extraction"].items() if e["skipped"]),
                "yes" if v["cached"] else "no"] for v in raw["variants"]],
              caption="Variants: what each extraction did (from its first build)")


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
    panels = [("loss", epochs, loss_lines, "epoch", "loss"),
              (f"validation {metric}", epochs, metric_lines, "epoch", metric)]
    panels += statistics_panels(dynamics)
    figure("dynamics", "Training dynamics per epoch",
           visual.curves_figure(panels, "Training dynamics", cols=min(3, len(panels))), "dynamics")
    if result["selected_epoch_statistics"]:
        rows = []
        for label, stats in result["selected_epoch_statistics"].items():
            for m, probe in stats["probe"].items():
                inst = (stats.get("instance_scale") or {}).get(m) or {}
                dim = (stats.get("dimension_scale") or {}).get(m) or {}
                rows.append([label, m, probe, stats["grad_norm"][m], inst.get("mean"), inst.get("std"),
                             dim.get("mean"), dim.get("std")])
        doc.table("dynamics", ["run", "modality", "unimodal probe", "grad norm", "g mean", "g std", "r mean", "r std"],
                  rows, caption="Statistics at the selected epoch, on the validation split")


def statistics_panels(dynamics: dict) -> list[tuple]:
    panels = []
    for key, title in (("probe", "unimodal probe on valid"), ("grad_norm", "gradient norm per branch"),
                       ("instance_scale", "instance scale g_m (mean)"),
                       ("dimension_scale", "dimension scale r_m (mean)")):
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
    doc.text("detection", "AUROC: the instance scale g_m as a score that modality m is NOT perturbed, over the "
                          "(sample, modality) pairs of the clean samples and of the samples perturbed with that kind. "
                          "Lowest share: share of perturbed samples whose perturbed modality gets the lowest g "
                          f"(ties split; chance {detection['chance_lowest']:.3f}). The pooled AUROC also rewards a "
                          "modality that is always scaled higher; the within-modality AUROC compares each g_m only "
                          "with itself. "
                          f"Source: {result['perturbations']}.")
    within = detection["auroc_within_modality"]
    doc.table("detection", ["perturbation", "AUROC", "lowest share", "perturbed samples",
                            "AUROC within modality (mean)", *[f"within {m}" for m in within]],
              [[k, detection["auroc"][k], detection["lowest_share"][k], detection["perturbed_samples"][k],
                detection["auroc_within_modality_mean"][k], *[v[k] for v in within.values()]]
               for k in ("conflict", "degraded", "all")])
    doc.table("detection", ["modality", "g when clean", "n", "g in conflict", "n", "g degraded", "n"],
              [[r["modality"], r["clean"], r["clean_count"], r["conflict"], r["conflict_count"], r["degraded"],
                r["degraded_count"]] for r in detection["by_status"]], caption="Mean instance scale by status")
    if detection["unmatched"]:
        doc.note("detection", f"{detection['unmatched']} samples are not in the perturbation table and were left out.")


def pictures(doc: Document, run: Run, outputs: Outputs, table: dict | None, tsne_points: int, figure,
             split: str) -> None:
    tsne_pictures(doc, run, outputs, table, tsne_points, figure, split)
    if run.calibrated:
        scale_pictures(run, outputs, table, figure)


def tsne_pictures(doc: Document, run: Run, outputs: Outputs, table: dict | None, tsne_points: int, figure,
                  split: str) -> None:
    n = len(outputs.sample_ids)
    chosen = np.sort(np.random.default_rng(0).choice(n, size=min(n, tsne_points), replace=False))
    if len(chosen) < 5:
        doc.note("visualisation", f"Too few samples ({len(chosen)}) for t-SNE.")
        return
    ids = [outputs.sample_ids[i] for i in chosen]
    labels = [label_name(run, t) for t in outputs.targets[chosen].tolist()]
    status = perturbation_status(ids, table)
    present = outputs.present.numpy()
    doc.text("visualisation", f"t-SNE of {len(chosen)} {split} samples (time-pooled features; "
                              "PCA to 50 dims first when wider). Colours: the label, and the sample's perturbation.")
    for j, m in enumerate(run.modalities):
        keep = present[chosen, j]
        if keep.sum() < 5:
            continue
        rows = chosen[keep]
        views = [("before calibration" if run.calibrated else "input features", outputs.pooled[m][rows].numpy())]
        if run.calibrated:
            views.append(("after calibration", outputs.calibrated[m][rows].numpy()))
        sub_status = None if status is None else [s for s, k in zip(modality_status(ids, table, m), keep) if k]
        figure("visualisation", f"t-SNE of {m} features", visual.tsne_figure(
            views, [lb for lb, k in zip(labels, keep) if k], sub_status, f"{m}: pooled features"), f"tsne_{m}")
    figure("visualisation", "t-SNE of the fused representation (the head's input)",
           visual.tsne_figure([("fused", outputs.fused[chosen].numpy())], labels, status, "fused representation"),
           "tsne_fused")


def label_name(run: Run, target) -> str:
    if run.classes:
        return str(run.classes[int(target)])
    return "negative" if target < 0 else "non-negative"  # regression: the sign, as acc2_has0 counts it


def scale_pictures(run: Run, outputs: Outputs, table: dict | None, figure) -> None:
    present = outputs.present.numpy()
    sids = outputs.sample_ids
    perturbed = [run.modalities.index(table[s][0]) if table and s in table and table[s][0] in run.modalities
                 else None for s in sids]
    groups = ([f"{table[s][1]}: {table[s][0]}" if s in table and table[s][1] != "clean" else
               ("clean" if s in table else "unknown") for s in sids] if table else
              [f"label {label_name(run, t)}" for t in outputs.targets.tolist()])
    figure("visualisation", "Instance scales per sample and modality",
           visual.instance_heatmap(outputs.instance.numpy(), present, run.modalities, groups, perturbed),
           "instance_scales")
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
    figure("visualisation", "Mean dimension scales per modality (rows: all samples, and by this modality's status)",
           visual.dimension_heatmap(rows_by_modality), "dimension_scales")


def modality_status(sample_ids: list[str], table: dict | None, m: str) -> list[str]:
    """Per sample, from modality m's point of view: "clean", "<m> conflict", "<m> degraded", "other
    modality perturbed" ("unknown" when the sample is not in the table)."""
    status = []
    for sid in sample_ids:
        modality, kind = table.get(sid, ("", "unknown"))
        status.append(kind if kind in ("clean", "unknown") else f"{m} {kind}" if modality == m
                      else "other modality perturbed")
    return status


# ---- experiment summary ---------------------------------------------------------------------------------

def headline(result: dict) -> dict:
    """The few numbers per run that the experiment table shows."""
    removal = result["removal"]
    singles = [r for r in removal["rows"] if len(r["removed"]) == 1]
    feature = result["feature_corruption"]["curves"]
    own = [next(iter(values.values())) for per_m in feature.values() for values in per_m.values()]  # this run's
    detection = result["detection"] or {}
    return {"metric": removal["metric"], "test": removal["rows"][0]["run"],
            "worst_single_removal_drop": max((r["run_drop"] for r in singles), default=None),
            "mean_at_max_feature_severity": float(np.mean([curve[-1] for curve in own])),
            "detection_auroc_all": (detection.get("auroc") or {}).get("all"),
            "detection_lowest_share_all": (detection.get("lowest_share") or {}).get("all"),
            "detection_auroc_within_modality_all": (detection.get("auroc_within_modality_mean") or {}).get("all")}


def experiment_summary(folder: Path, results: list[dict], publish: bool) -> dict:
    out = folder / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"run": r["run"], "name": r["name"], **headline(r)} for r in results]
    keys = ["test", "worst_single_removal_drop", "mean_at_max_feature_severity", "detection_auroc_all",
            "detection_lowest_share_all", "detection_auroc_within_modality_all"]
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["name"].rsplit(" seed ", 1)[0], []).append(row)

    def spread(values):
        values = [v for v in values if v is not None]
        if not values:
            return None
        return f"{statistics.mean(values):.4f}" + (f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else "")

    doc = Document(f"precal analysis: experiment {folder.name}")
    doc.text("run", f"{len(rows)} runs analysed; each has its own report in <run>/analysis/report.html.")
    doc.table("run", ["variant", "runs", *keys], [[name, len(members), *[spread([m[k] for m in members]) for k in keys]]
                                                  for name, members in groups.items()],
              caption="Mean ± std over seeds")
    doc.table("run", ["run", *keys], [[Path(r["run"]).relative_to(folder).as_posix(), *[r[k] for k in keys]]
                                      for r in rows], caption="Every run")
    (out / "report.html").write_text(doc.html(), encoding="utf-8")
    summary = doc.markdown()
    (out / "summary.md").write_text(summary, encoding="utf-8")
    result = {"experiment": str(folder), "runs": rows}
    write_json_atomic(result, out / "analysis.json")
    if publish:
        publish_artifact(summary)
    return result

