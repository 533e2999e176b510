"""Results of the calibration protocol across runs: means and spreads over seeds, paired bootstrap
intervals against the baselines, the verdicts, and `results.json` / `results.md` (see trainers/protocol.py;
each run's own evaluation is in trainers/protocol_eval.py)."""

from __future__ import annotations

import statistics

import numpy as np

from storage.atomic import write_bytes_atomic, write_json_atomic
from storage.remote import location
from trainers.metrics import json_safe
from trainers.protocol import BASELINES

TEST_SETS = {"test": "standard", "clean": "clean", "pert": "perturbed"}  # test set -> the build it comes from


# ---- across runs -------------------------------------------------------------------------------------


def paired_bootstrap(ours: list[list[int]], theirs: list[list[int]], resamples: int, seed: int = 0) -> dict:
    """Difference in accuracy (points) of two methods over the same test samples, each a list of per-seed
    0/1 vectors for the same seeds: per sample, the mean over seeds of ours - theirs; the interval
    resamples the test samples (95%, percentile)."""
    diff = (np.asarray(ours, float) - np.asarray(theirs, float)).mean(0) * 100
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"diff": float(diff.mean()), "low": float(low), "high": float(high)}


def spread(values: list[float | None]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def summarize(evaluations: list[dict]) -> list[dict]:
    """Per (regime, backbone, method): mean and std over seeds of the headline numbers."""
    groups: dict[tuple, list[dict]] = {}
    for e in evaluations:
        groups.setdefault((e["regime"], e["backbone"], e["method"]), []).append(e)
    rows = []
    for (regime, backbone, method), members in groups.items():
        row = {"regime": regime, "backbone": backbone, "method": method, "seeds": [e["seed"] for e in members]}
        for name in TEST_SETS:
            row[name] = spread([e["sets"][name]["accuracy"] for e in members])
            row[f"{name}_macro_f1"] = spread([e["sets"][name]["macro_f1"] for e in members])
        detections = [e["sets"]["pert"].get("detection") for e in members]
        if all(detections):
            for kind in ("all", "conflict", "degraded"):
                row[f"auroc_{kind}"] = spread([d["auroc"][kind] for d in detections])
                row[f"within_{kind}"] = spread([d["auroc_within_modality_mean"][kind] for d in detections])
                row[f"lowest_{kind}"] = spread([d["lowest_share"][kind] for d in detections])
            row["scale_perturbed"] = spread([e["sets"]["pert"]["mean_scale"]["perturbed"] for e in members])
            row["scale_clean"] = spread([e["sets"]["pert"]["mean_scale"]["clean"] for e in members])
        row["ceiling_pert"] = spread([e["ceiling_pert"] for e in members])
        for m in members[0]["removal_pert"]:
            row[f"pert_without_{m}"] = spread([e["removal_pert"][m] for e in members])
        row["corruption"] = corruption_means([e["corruption"] for e in members])
        kinds = members[0]["sets"]["pert"]["by_kind"]
        row["pert_by_kind"] = {k: spread([e["sets"]["pert"]["by_kind"].get(k) for e in members]) for k in kinds}
        rows.append(row)
    return rows


def corruption_means(curves: list[dict]) -> dict:
    """Mean over seeds and modalities, per severity, of the noise curves' accuracy and localisation AUROC."""
    out = {}
    for key in ("accuracy", "auroc"):
        values = [c[key][m] for c in curves for m in c[key] if c[key][m] and None not in c[key][m]]
        out[key] = np.mean(values, 0).tolist() if values else None
    return out


def rounded(value, digits: int = 4):
    """Nested floats rounded: results.json stays small and readable."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def comparisons(evaluations: list[dict], resamples: int) -> list[dict]:
    """Every method against each baseline of trainers.protocol.BASELINES, same regime and backbone, over
    the seeds both have, on each test set."""
    index = {(e["regime"], e["backbone"], e["method"], e["seed"]): e for e in evaluations}
    rows = []
    for regime, backbone, method, _ in sorted({k[:3] + (None,) for k in index}):
        for baseline in BASELINES:
            if method == baseline:
                continue
            seeds = sorted(
                s
                for (r, b, m, s) in index
                if (r, b, m) == (regime, backbone, method) and (regime, backbone, baseline, s) in index
            )
            if not seeds:
                continue
            row = {"regime": regime, "backbone": backbone, "method": method, "baseline": baseline, "seeds": seeds}
            for name in TEST_SETS:
                ours = [index[(regime, backbone, method, s)]["sets"][name] for s in seeds]
                theirs = [index[(regime, backbone, baseline, s)]["sets"][name] for s in seeds]
                if any(o["ids"] != t["ids"] for o, t in zip(ours, theirs)):
                    raise ValueError(f"{regime}/{backbone}: {method} and {baseline} saw different {name} samples")
                row[name] = paired_bootstrap([o["correct"] for o in ours], [t["correct"] for t in theirs], resamples)
            rows.append(row)
    return rows


def same_training_baseline(method: str) -> str | None:
    """The baseline trained with the same options: "reliability+aug+branch" -> "none+aug+branch"."""
    base, *options = method.split("+")
    baseline = "+".join(["none", *options])
    return baseline if base != "none" and baseline in BASELINES else None


def verdicts(
    summary: list[dict], compared: list[dict], methods=("reliability+aug", "reliability+aug+branch")
) -> list[dict]:
    """RESEARCH.md section 4's pass criteria, per method, regime and backbone: AUROC >= 0.8 on pert; the pert
    interval against the same-training baseline (none with the same +aug/+branch) excludes 0; no loss on
    clean (its clean interval reaches 0 or above). Also the interval against the stronger of the two
    baselines on pert, whatever its training."""
    means = {(r["regime"], r["backbone"], r["method"]): r for r in summary}
    rows = []
    for r in summary:
        if r["method"] not in methods:
            continue
        key = (r["regime"], r["backbone"])
        against = {
            c["baseline"]: c for c in compared if (c["regime"], c["backbone"], c["method"]) == (*key, r["method"])
        }
        same = against.get(same_training_baseline(r["method"]))
        if same is None:
            continue
        pert = {b: means[(*key, b)]["pert"]["mean"] for b in against}
        strongest = max(pert, key=pert.get)
        auroc = (r.get("auroc_all") or {}).get("mean")
        rows.append(
            {
                "regime": key[0],
                "backbone": key[1],
                "method": r["method"],
                "baseline": same["baseline"],
                "seeds": same["seeds"],
                "auroc_pert": auroc,
                "auroc_ok": auroc is not None and auroc >= 0.8,
                "pert_vs_baseline": same["pert"],
                "pert_ok": same["pert"]["low"] > 0,
                "clean_vs_baseline": same["clean"],
                "clean_ok": same["clean"]["high"] >= 0,
                "strongest_baseline": strongest,
                "pert_vs_strongest": against[strongest]["pert"],
            }
        )
    return rows


def write_results(config, runs, evaluations: list[dict]) -> dict:
    """<out>/results.json (config, per-run metrics without per-sample vectors, summary, comparisons,
    verdicts) and <out>/results.md."""
    summary = summarize(evaluations)
    compared = comparisons(evaluations, config.bootstrap)
    passed = verdicts(summary, compared)
    per_run = [
        {
            **{k: v for k, v in e.items() if k != "sets"},
            "sets": {
                name: {k: v for k, v in s.items() if k not in ("ids", "correct")} for name, s in e["sets"].items()
            },
        }
        for e in evaluations
    ]
    results = rounded(
        json_safe(
            {
                "config": config.model_dump(mode="json"),
                "summary": summary,
                "comparisons": compared,
                "verdicts": passed,
                "runs": per_run,
            }
        )
    )
    out = location(config.out)
    out.mkdir(parents=True, exist_ok=True)
    # One line: with every run's per-kind numbers it is a few hundred kB indented; results.md is the view.
    write_json_atomic(out / "results.json", results, separators=(",", ":"))
    write_bytes_atomic(out / "results.md", results_markdown(results).encode("utf-8"))
    return results


def cell(value: dict | None, scale: float = 100.0, digits: int = 1) -> str:
    if value is None:
        return "-"
    if value["n"] == 1:
        return f"{value['mean'] * scale:.{digits}f}"
    return f"{value['mean'] * scale:.{digits}f} ± {value['std'] * scale:.{digits}f}"


def interval(value: dict | None) -> str:
    return "-" if value is None else f"{value['diff']:+.1f} ({value['low']:+.1f}..{value['high']:+.1f})"


def results_markdown(results: dict) -> str:
    lines = [
        "# Calibration protocol results",
        "",
        "Accuracy (%) on the three test sets (the same 250 AV-digits test recordings: `test` 30% perturbed, "
        "`clean` none, `pert` one modality perturbed in every sample), mean ± sample std over seeds. AUROC: the "
        "instance scales ranking the perturbed modality below the others on `pert` (0.5 = chance). Lowest: share "
        "of `pert` samples whose perturbed modality gets the lowest scale (chance 1/3). Ceiling: accuracy on "
        "`pert` with the perturbed modality removed by hand.",
        "",
    ]
    for regime in dict.fromkeys(r["regime"] for r in results["summary"]):
        lines += [
            f"## Training regime: {regime}",
            "",
            "| backbone | method | seeds | test | clean | pert | AUROC pert | AUROC conflict | AUROC degraded "
            "| lowest | scale pert / clean | ceiling |",
            "|" + " --- |" * 12,
        ]
        for r in results["summary"]:
            if r["regime"] != regime:
                continue
            scales = (
                "-"
                if r.get("scale_perturbed") is None
                else f"{r['scale_perturbed']['mean']:.2f} / {r['scale_clean']['mean']:.2f}"
            )
            lines.append(
                f"| {r['backbone']} | {r['method']} | {len(r['seeds'])} | {cell(r['test'])} "
                f"| {cell(r['clean'])} | {cell(r['pert'])} | {cell(r.get('auroc_all'), 1, 3)} "
                f"| {cell(r.get('auroc_conflict'), 1, 3)} "
                f"| {cell(r.get('auroc_degraded'), 1, 3)} | {cell(r.get('lowest_all'), 1, 2)} | {scales} "
                f"| {cell(r['ceiling_pert'])} |"
            )
        lines.append("")
    lines += [
        "## Corruption curves",
        "",
        "Feature noise on one modality (0.25, 0.5, 1, 2, 4 x its per-dimension std; severities 1-5), "
        "accuracy (%) on `test` and, for calibrated runs, the AUROC of the instance scales at finding the noisy "
        "modality; mean over the three modalities and the seeds.",
        "",
        "| regime | backbone | method | accuracy at severity 1..5 | AUROC at severity 1..5 |",
        "|" + " --- |" * 5,
    ]
    for r in results["summary"]:
        curves = r["corruption"]
        acc = " / ".join(f"{v * 100:.1f}" for v in curves["accuracy"]) if curves["accuracy"] else "-"
        auroc = " / ".join(f"{v:.2f}" for v in curves["auroc"]) if curves["auroc"] else "-"
        lines.append(f"| {r['regime']} | {r['backbone']} | {r['method']} | {acc} | {auroc} |")
    lines += [
        "",
        "## Paired bootstrap against the baselines",
        "",
        "Difference in accuracy (points), method minus baseline, same regime, backbone and seeds; per test "
        "sample the mean over seeds, 95% interval from resampling the 250 test samples.",
        "",
        "| regime | backbone | method | baseline | seeds | test | clean | pert |",
        "|" + " --- |" * 8,
    ]
    for c in results["comparisons"]:
        lines.append(
            f"| {c['regime']} | {c['backbone']} | {c['method']} | {c['baseline']} | {len(c['seeds'])} "
            f"| {interval(c['test'])} | {interval(c['clean'])} | {interval(c['pert'])} |"
        )
    lines += [
        "",
        "## Pass criteria (RESEARCH.md section 4)",
        "",
        "Against the baseline trained the same way (none with the same +aug/+branch); the last column is "
        "the stronger of none+aug and none+aug+branch on pert, whatever its training.",
        "",
        "| regime | backbone | method | seeds | AUROC pert >= 0.8 | pert interval excludes 0 | no loss on clean "
        "| pert vs strongest baseline |",
        "|" + " --- |" * 8,
    ]
    mark = {True: "yes", False: "**no**"}
    for v in results["verdicts"]:
        auroc = "-" if v["auroc_pert"] is None else f"{v['auroc_pert']:.3f}"
        lines.append(
            f"| {v['regime']} | {v['backbone']} | {v['method']} | {len(v['seeds'])} | {mark[v['auroc_ok']]} "
            f"({auroc}) | {mark[v['pert_ok']]} ({v['baseline']}: {interval(v['pert_vs_baseline'])}) "
            f"| {mark[v['clean_ok']]} ({interval(v['clean_vs_baseline'])}) "
            f"| {v['strongest_baseline']}: {interval(v['pert_vs_strongest'])} |"
        )
    lines.append("")
    return "\n".join(lines)
