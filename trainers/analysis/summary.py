"""The analysis of an experiment folder: a few numbers per run, and mean +- std per variant over seeds."""

from __future__ import annotations

import statistics

import numpy as np

from storage.remote import Location, location
from trainers.analysis.report import Document, publish_artifact
from trainers.checkpoints import write_json_atomic


def headline(result: dict) -> dict:
    """The few numbers per run that the experiment table shows."""
    removal = result["removal"]
    singles = [r for r in removal["rows"] if len(r["removed"]) == 1]
    feature = result["feature_corruption"]["curves"]
    own = [next(iter(values.values())) for per_m in feature.values() for values in per_m.values()]  # this run's
    detection = result["detection"] or {}
    return {
        "metric": removal["metric"],
        "test": removal["rows"][0]["run"],
        "worst_single_removal_drop": max((r["run_drop"] for r in singles), default=None),
        "mean_at_max_feature_severity": float(np.mean([curve[-1] for curve in own])),
        "detection_auroc_all": (detection.get("auroc") or {}).get("all"),
        "detection_lowest_share_all": (detection.get("lowest_share") or {}).get("all"),
        "detection_auroc_within_modality_all": (detection.get("auroc_within_modality_mean") or {}).get("all"),
    }


def experiment_summary(folder: Location, results: list[dict], publish: bool) -> dict:
    out = folder / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"run": r["run"], "name": r["name"], **headline(r)} for r in results]
    keys = [
        "test",
        "worst_single_removal_drop",
        "mean_at_max_feature_severity",
        "detection_auroc_all",
        "detection_lowest_share_all",
        "detection_auroc_within_modality_all",
    ]
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
    doc.table(
        "run",
        ["variant", "runs", *keys],
        [[name, len(members), *[spread([m[k] for m in members]) for k in keys]] for name, members in groups.items()],
        caption="Mean ± std over seeds",
    )
    doc.table(
        "run",
        ["run", *keys],
        [[location(r["run"]).relative_to(folder).as_posix(), *[r[k] for k in keys]] for r in rows],
        caption="Every run",
    )
    (out / "report.html").write_text(doc.html(), encoding="utf-8")
    summary = doc.markdown()
    (out / "summary.md").write_text(summary, encoding="utf-8")
    result = {"experiment": str(folder), "runs": rows}
    write_json_atomic(result, out / "analysis.json")
    if publish:
        publish_artifact(summary)
    return result
