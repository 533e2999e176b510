"""Evaluation and results of the calibration protocol (see trainers/protocol.py).

Every finished run is evaluated once on the three test sets and the result kept in `<run>/protocol.json`
(per-sample correctness included, for the paired intervals). Test sets: "test" (standard build, 30%
perturbed), "clean" (no sample perturbed) and "pert" (one modality perturbed in every sample), the same
250 recordings in each.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import numpy as np

from storage.packinfo import read_pack
from trainers.analysis.corruption import corrupted_batches
from trainers.analysis.corruption import feature_std as corruption_std
from trainers.analysis.detection import detection_metrics, read_perturbations
from trainers.analysis.removal import perturbed_only, remove, without_perturbed
from trainers.analysis.runs import collect, load_batches, load_run
from trainers.checkpoints import write_json_atomic
from trainers.metrics import classification_metrics, json_safe
from trainers.protocol import BASELINES

TEST_SETS = {"test": "standard", "clean": "clean", "pert": "perturbed"}  # test set -> the build it comes from
SEVERITIES = (1, 2, 3, 4, 5)
EVAL_VERSION = 2  # bump when protocol.json changes, so old evaluations are redone


# ---- one run -----------------------------------------------------------------------------------------


def accuracy(model, batches: list[dict]) -> float:
    outputs = collect(model, batches)
    return float((outputs.logits.argmax(1) == outputs.targets).float().mean())


def by_kind(correct: np.ndarray, ids: list[str], table: dict) -> dict[str, float]:
    """Accuracy per "modality/kind" (and "clean") of the perturbation table."""
    groups: dict[str, list] = {}
    for ok, sid in zip(correct, ids):
        modality, kind = table.get(sid, ("", "clean"))
        groups.setdefault(f"{modality}/{kind}" if modality else "clean", []).append(ok)
    return {k: float(np.mean(v)) for k, v in sorted(groups.items())}


def evaluate_set(run, batches: list[dict], table: dict) -> dict:
    outputs = collect(run.model, batches)
    correct = (outputs.logits.argmax(1) == outputs.targets).numpy()
    result = {
        **classification_metrics(outputs.logits, outputs.targets),
        "ids": outputs.sample_ids,
        "correct": correct.astype(int).tolist(),
        "by_kind": by_kind(correct, outputs.sample_ids, table),
    }
    if outputs.instance is not None:
        result["detection"] = detection_metrics(
            outputs.instance, outputs.present, run.modalities, outputs.sample_ids, table
        )
        instance, present = outputs.instance.numpy(), outputs.present.numpy()
        perturbed = np.array([[table.get(sid, ("", ""))[0] == m for m in run.modalities] for sid in outputs.sample_ids])
        result["mean_scale"] = {
            "perturbed": float(instance[perturbed & present].mean()) if perturbed.any() else None,
            "clean": float(instance[~perturbed & present].mean()),
        }
    return result


def corruption_curves(run, batches: list[dict]) -> dict:
    """Feature noise on one modality at severities 1-5 (trainers/analysis/corruption.py levels): accuracy,
    and for a calibrated run the AUROC of the instance scales at finding the noisy modality."""
    curves = {"accuracy": {}, "auroc": {}}
    for m in run.modalities:
        std = corruption_std(batches, run.modalities, m)
        accuracies, aurocs = [], []
        for severity in SEVERITIES:
            outputs = collect(run.model, corrupted_batches(batches, m, "noise", severity, std))
            accuracies.append(float((outputs.logits.argmax(1) == outputs.targets).float().mean()))
            if outputs.instance is not None:
                # every sample has m noisy: the pooled AUROC (m against the other modalities) localises it
                table = {sid: (m, "degraded") for sid in outputs.sample_ids}
                found = detection_metrics(outputs.instance, outputs.present, run.modalities, outputs.sample_ids, table)
                aurocs.append(found["auroc"]["all"])
        curves["accuracy"][m] = accuracies
        if aurocs:
            curves["auroc"][m] = aurocs
    return curves


def evaluate_run(path: Path, test_sets: dict[str, tuple[list[dict], dict]]) -> dict:
    """{"sets": {name: metrics}, "removal_pert": {m: acc}, "ceiling_pert": acc, "corruption": curves}."""
    run = load_run(path)
    sets = {name: evaluate_set(run, batches, table) for name, (batches, table) in test_sets.items()}
    pert_batches, pert_table = test_sets["pert"]
    removal = {m: accuracy(run.model, [remove(b, run.modalities, (m,)) for b in pert_batches]) for m in run.modalities}
    ceiling = accuracy(run.model, [without_perturbed(b, run.modalities, pert_table) for b in pert_batches])
    return {
        "version": EVAL_VERSION,
        "sets": sets,
        "removal_pert": removal,
        "ceiling_pert": ceiling,
        "corruption": corruption_curves(run, test_sets["test"][0]),
    }


def evaluate_runs(runs, builds: dict[str, tuple[Path, Path]]) -> list[dict]:
    """Evaluate every run (cached in <run>/protocol.json); builds: {build: (pack, perturbations.csv)}."""
    test_sets, evaluations = None, []
    for regime, method, config in runs:
        cache = config.out / "protocol.json"
        saved = json.loads(cache.read_text()) if cache.is_file() else None
        if saved is None or saved.get("version") != EVAL_VERSION:
            if test_sets is None:  # decoded once: every run reads the same batches
                first = load_run(config.out)
                test_sets = {
                    name: (
                        load_batches(first, "test", read_pack(builds[build][0])),
                        read_perturbations(builds[build][1]),
                    )
                    for name, build in TEST_SETS.items()
                }
            saved = json_safe(evaluate_run(config.out, test_sets))
            write_json_atomic(saved, cache)
        evaluations.append(
            {
                "regime": regime,
                "backbone": config.backbone,
                "method": method,
                "seed": config.seed,
                "out": str(config.out),
                **saved,
            }
        )
    return evaluations


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
    config.out.mkdir(parents=True, exist_ok=True)
    # One line: with every run's per-kind numbers it is a few hundred kB indented; results.md is the view.
    path = config.out / "results.json"
    path.with_name(path.name + ".tmp").write_text(json.dumps(results, separators=(",", ":")))
    os.replace(path.with_name(path.name + ".tmp"), path)
    (config.out / "results.md").write_text(results_markdown(results))
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


def robustness(runs: list[dict], test_table: Path, pert_pack: Path, pert_table: Path) -> dict:
    """For the demo: per variant ({backbone} / {method}), mean and std over seeds of the accuracy on the clean
    samples of the runs' own test split, on a perturbed test set (another pack of the same samples, one
    modality perturbed in each), and of the instance scales' AUROC there. runs: trainers.experiment results."""
    from trainers.experiment import variant_name

    clean_table, pert = read_perturbations(test_table), read_perturbations(pert_table)
    groups: dict[str, list] = {}
    for entry in runs:
        run = load_run(entry["out"])
        clean = perturbed_only(load_batches(run, "test"), clean_table, perturbed=False)
        scored = evaluate_set(run, load_batches(run, "test", read_pack(pert_pack)), pert)
        auroc = scored["detection"]["auroc"]["all"] if "detection" in scored else None
        groups.setdefault(variant_name(entry), []).append((accuracy(run.model, clean), scored["accuracy"], auroc))
    return {
        name: {
            "runs": len(values),
            "clean": spread([v[0] for v in values]),
            "pert": spread([v[1] for v in values]),
            "auroc": spread([v[2] for v in values]),
        }
        for name, values in groups.items()
    }
