"""`analyse_run(run_dir)`: every analysis of one finished training run, written under `<run>/analysis/`:
  analysis.json   all numbers;  report.html  the self-contained report;  summary.md  the same as markdown
  figures/*.png   the figures;  variants/    raw-level corrupted packs (given a VariantBuilder), cached
and, for a calibration run with a perturbation table, `calibration_detection_*` added to its metrics.json.
`analyse(path)` takes a run or an experiment folder (every run in it, plus `<exp>/analysis/` with a table
of all runs and mean +- std per variant).

Raw-level corruption needs the media, which trainers never reads: the caller passes a VariantBuilder
(pipeline/analysis.py builds one from the manifest and the feature store).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from storage.packinfo import PackInfo
from storage.remote import Location, is_remote, location
from trainers.analysis.corruption import SEVERITIES, feature_corruption, raw_corruption
from trainers.analysis.detection import detection_metrics, read_perturbations, scale_by_status
from trainers.analysis.document import build_document
from trainers.analysis.dynamics import dynamics_section, epoch_statistics
from trainers.analysis.removal import ceiling_section, removal_section
from trainers.analysis.report import publish_artifact
from trainers.analysis.runs import Run, collect, find_baseline, find_runs, is_run, load_batches, load_run
from trainers.analysis.summary import experiment_summary
from trainers.checkpoints import write_json_atomic

VariantBuilder = Callable[[PackInfo, list[str], Path], list[dict]]
"""(the run's pack, its test sample ids, a cache folder) -> one record per raw-level variant: {"kind",
"modality", "severity", "level", "pack", "extraction", "cached"}. Raises FileNotFoundError or ValueError,
with the reason, when the variants cannot be built."""


def method_label(run: Run) -> str:
    c = run.config
    return f"calibration ({c.calibration})" if c.method == "calibration" else c.method


def analyse(path: Location | str, **options) -> dict:
    """A run folder (metrics.json + best.pt) or an experiment folder holding several runs (a folder or a URL)."""
    path = location(path)
    if is_run(path):
        return analyse_run(path, **options)
    runs = find_runs(path)
    if not runs:
        raise FileNotFoundError(
            f"{path} is neither a finished training run (metrics.json and best.pt) nor an "
            "experiment folder holding some (<pack>/<backbone>-<method>/seed-<n>/)"
        )
    results = []
    for run_dir in tqdm(runs, desc="analyse runs", unit="run"):
        pack_id = json.loads((run_dir / "metrics.json").read_text())["pack_id"]
        # Raw variants depend on the pack, not on the run: one set per pack for the whole experiment.
        results.append(
            analyse_run(run_dir, variants_dir=path / "analysis" / "variants" / pack_id, publish=False, **options)
        )
    return experiment_summary(path, results, options.get("publish", True))


def analyse_run(
    run_dir: Location | str,
    *,
    variants: VariantBuilder | None = None,
    perturbations: Path | str | None = None,
    severities=SEVERITIES,
    raw: bool = True,
    variants_dir: Location | None = None,
    batch_size: int = 64,
    tsne_points: int = 1000,
    publish: bool = True,
    progress: bool = True,
) -> dict:
    """Every analysis of one run; returns what it writes to analysis.json. Raw-level corruption runs when
    `raw` and a `variants` builder are given."""
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
        notes.append(
            "No method-none run of the same pack, backbone and seed was found beside this run: "
            "no comparison without calibration."
        )
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
    elif variants is None:
        notes.append(
            "Raw-level corruption needs the manifest the pack was built from (--manifest, and --store "
            "when the pack is not inside its store): feature-level only."
        )
    elif is_remote(variants_dir or out):
        notes.append(
            f"Raw-level corruption was not run: its variants (corrupted media, re-extracted) are written to a "
            f"local folder, and this run is in a bucket ({run.path}); copy the run to a local folder for them."
        )
    else:
        stage("raw-level corruption (variants re-extracted)")
        raw_section, reason = raw_level(runs, batches, variants, run.info, variants_dir or out / "variants")
        if reason:
            notes.append(reason)
    stage("training dynamics")
    dynamics = {label: dynamics_section(r.metrics.get("history", [])) for label, r in runs.items()}
    selected_stats = {}
    if not all(d["statistics_recorded"] for d in dynamics.values()):
        notes.append(
            "The training loop did not record per-epoch statistics (probe accuracy, gradient norms, scale "
            "statistics): they are shown for the selected epoch only. Call "
            "trainers.analysis.dynamics.epoch_statistics at the end of each epoch to record them."
        )
        selected_stats = {
            label: epoch_statistics(r.model, load_batches(r, "valid", batch_size=batch_size), "cpu")
            for label, r in runs.items()
            if r.info.count("valid")
        }
    if table is not None:
        removal["ceiling"] = ceiling_section(run, baseline, batches, table)
    stage("detection and pictures")
    outputs = collect(run.model, batches)
    detection = None
    if run.calibrated and table is not None:
        detection = detection_metrics(outputs.instance, outputs.present, run.modalities, outputs.sample_ids, table)
        detection["by_status"] = scale_by_status(
            outputs.instance, outputs.present, run.modalities, outputs.sample_ids, table
        )
        record_detection(run, detection)
    elif not run.calibrated:
        notes.append("This run has no calibration module: there are no scales to test against perturbations.")
    else:
        notes.append(
            "No perturbation table (--perturbations, or perturbations.csv beside --manifest): the "
            "detection analysis was skipped."
        )

    result = {
        "run": str(run.path),
        "name": run.name,
        "method": method_label(run),
        "split": split,
        "baseline": str(baseline.path) if baseline else None,
        "test": run.metrics.get("test"),
        "removal": removal,
        "feature_corruption": feature,
        "raw_corruption": raw_section,
        "dynamics": dynamics,
        "selected_epoch_statistics": selected_stats,
        "detection": detection,
        "perturbations": str(perturbations) if perturbations else None,
        "notes": notes,
    }
    doc = build_document(run, result, outputs, table, tsne_points, out / "figures")
    (out / "report.html").write_text(doc.html(), encoding="utf-8")
    summary = doc.markdown()
    (out / "summary.md").write_text(summary, encoding="utf-8")
    write_json_atomic(result, out / "analysis.json")
    if publish:
        publish_artifact(summary)
    return result


def raw_level(
    runs: dict[str, Run], batches, build: VariantBuilder, info: PackInfo, folder: Path
) -> tuple[dict | None, str | None]:
    """Build (or reuse) the raw variants and evaluate them; a reason instead when that cannot be done."""
    sample_ids = [sid for b in batches for sid in b["sample_id"]]
    try:
        variants = build(info, sample_ids, folder)
    except (FileNotFoundError, ValueError) as err:
        return None, f"Raw-level corruption skipped: {err}"
    section = raw_corruption(runs, batches, variants)
    section["variants"] = [
        {k: v[k] for k in ("kind", "severity", "level", "pack", "cached")}
        | {
            "extraction": {
                s["modality"]: {k: s[k] for k in ("ok", "failed", "skipped")} for s in v["extraction"]["modalities"]
            }
        }
        for v in variants
    ]
    return section, None


def record_detection(run: Run, detection: dict) -> None:
    """Add the detection numbers to the run's metrics.json (read fresh: the loop owns the file)."""
    path = run.path / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["calibration_detection_auroc"] = detection["auroc"]
    metrics["calibration_detection_lowest_share"] = detection["lowest_share"]
    write_json_atomic(metrics, path)
