"""Evaluation of the calibration protocol's runs (see trainers/protocol.py; the results across runs are
in trainers/protocol_results.py).

Every finished run is evaluated once on the three test sets and the result kept in `<run>/protocol.json`
(per-sample correctness included, for the paired intervals). Test sets: "test" (standard build, 30%
perturbed), "clean" (no sample perturbed) and "pert" (one modality perturbed in every sample), the same
250 recordings in each.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from storage.packinfo import read_pack
from storage.remote import Location, location
from trainers.analysis.corruption import corrupted_batches
from trainers.analysis.corruption import feature_std as corruption_std
from trainers.analysis.detection import detection_metrics, read_perturbations
from trainers.analysis.removal import perturbed_only, remove, without_perturbed
from trainers.analysis.runs import collect, load_batches, load_run
from trainers.checkpoints import write_json_atomic
from trainers.metrics import classification_metrics, json_safe
from trainers.protocol_results import TEST_SETS, spread

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


def evaluate_run(path: Location, test_sets: dict[str, tuple[list[dict], dict]]) -> dict:
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
        cache = location(config.out) / "protocol.json"
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
