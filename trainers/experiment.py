"""A grid of training runs: packs x backbones x methods (calibration over its variants) x seeds.

Each run trains into `<out>/<pack>/<backbone>-<method>[-<variant>]/seed-<n>/`; a run whose metrics.json
exists is finished and is read instead of trained, so an interrupted grid resumes where it stopped (and
a run killed halfway resumes from its checkpoint). Writes `<out>/results.json` (one entry per run) and
`<out>/results.md` (test metrics, mean ± std over seeds, per pack, backbone and method).
Under torchrun (`python -m torch.distributed.run --nproc_per_node N -m trainers.experiment CONFIG`)
every run is distributed; rank 0 writes the results.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch.distributed as dist
from tqdm.auto import tqdm

from storage.atomic import write_bytes_atomic
from storage.remote import location
from trainers.checkpoints import write_json_atomic
from trainers.config import ExperimentConfig, TrainConfig, load_experiment_config
from trainers.config_file import ConfigError
from trainers.runtime import start_runtime
from trainers.train import train


def run_name(backbone: str, method: str, calibration: str) -> str:
    return f"{backbone}-{method}-{calibration}" if method == "calibration" else f"{backbone}-{method}"


def grid(config: ExperimentConfig) -> list[TrainConfig]:
    runs, out_dir = [], location(config.out)
    for pack in config.packs:
        for backbone in config.backbones:
            for method in config.methods:
                for calibration in config.calibrations if method == "calibration" else ["paper"]:
                    for seed in config.seeds:
                        out = out_dir / location(pack).name / run_name(backbone, method, calibration) / f"seed-{seed}"
                        runs.append(
                            TrainConfig(
                                **config.train.model_dump(),
                                pack=pack,
                                out=out,
                                backbone=backbone,
                                method=method,
                                calibration=calibration,
                                seed=seed,
                            )
                        )
    return runs


def result_entry(run: TrainConfig, metrics: dict) -> dict:
    return {
        "pack": str(run.pack),
        "pack_id": metrics["pack_id"],
        "backbone": run.backbone,
        "method": run.method,
        "calibration": run.calibration if run.method == "calibration" else None,
        "seed": run.seed,
        "valid": metrics["valid"],
        "test": metrics["test"],
        "best_epoch": metrics["best_epoch"],
        "out": str(run.out),
    }


def run_experiment(config: ExperimentConfig) -> list[dict]:
    """Train every run of the grid not yet finished; returns the results (also written to `config.out`)."""
    rt = start_runtime(config.train.device)  # one process group for the whole grid under torchrun
    try:
        results = []
        runs = grid(config)
        for run in tqdm(runs, desc="experiment", unit="run", disable=not rt.is_main):
            done = location(run.out) / "metrics.json"
            if rt.is_main:
                tqdm.write(f"{'done' if done.is_file() else 'train'}: {run.out}")
            metrics = json.loads(done.read_text()) if done.is_file() else train(run)
            results.append(result_entry(run, metrics))
        if rt.is_main:
            out = location(config.out)
            out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(results, out / "results.json")
            write_bytes_atomic(out / "results.md", results_markdown(results).encode("utf-8"))
        return results
    finally:
        if rt.owns_group:
            dist.destroy_process_group()


def variant_name(result: dict) -> str:
    method = f"{result['method']} ({result['calibration']})" if result["calibration"] else result["method"]
    return f"{result['backbone']} / {method}"


def summarize(results: list[dict]) -> dict[str, dict]:
    """Per backbone and method: run count and mean and sample std over seeds of every valid/test metric."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(variant_name(r), []).append(r)
    return {
        name: {
            "runs": len(runs),
            "seeds": [r["seed"] for r in runs],
            **{split: _spread([r[split] for r in runs]) for split in ("valid", "test")},
        }
        for name, runs in groups.items()
    }


def _spread(metrics: list[dict]) -> dict[str, dict]:
    keys = dict.fromkeys(k for m in metrics for k in m)
    out = {}
    for key in keys:
        values = [m[key] for m in metrics if key in m]
        out[key] = {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    return out


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def summary_cell(runs: list[dict], metric: str) -> str:
    values = [r["test"][metric] for r in runs if metric in r["test"]]
    return mean_std(values) if values else "-"


def results_markdown(results: list[dict]) -> str:
    """One table per pack: a row per backbone and method, test metrics as mean ± sample std over seeds."""
    lines = ["# Results", "", "Test metrics at the epoch selected on validation; mean ± std (sample) over seeds.", ""]
    for pack in dict.fromkeys(r["pack"] for r in results):
        rows = [r for r in results if r["pack"] == pack]
        metrics = list(dict.fromkeys(k for r in rows for k in r["test"]))
        lines += [
            f"## {pack}",
            "",
            "| backbone | method | seeds | " + " | ".join(metrics) + " |",
            "|" + " --- |" * (3 + len(metrics)),
        ]
        groups: dict[tuple, list[dict]] = {}
        for r in rows:
            method = f"{r['method']} ({r['calibration']})" if r["calibration"] else r["method"]
            groups.setdefault((r["backbone"], method), []).append(r)
        for (backbone, method), members in groups.items():
            cells = [summary_cell(members, k) for k in metrics]
            lines.append(f"| {backbone} | {method} | {len(members)} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a grid of training runs (torchrun-compatible).")
    parser.add_argument("config", type=Path, help="ExperimentConfig as YAML or JSON")
    args = parser.parse_args(argv)
    try:
        config = load_experiment_config(args.config)
    except ConfigError as err:
        sys.exit(str(err))
    run_experiment(config)


if __name__ == "__main__":
    main()
