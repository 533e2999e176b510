"""The pipeline's stages as plain functions: which stages run, each stage's work, its cache key and its
decision to skip, and the one rule that fails an extraction with too many failures.

flows/pipeline.py wires these into Prefect; everything here runs and is tested without Prefect.
Cache keys come from content, never from paths alone: extraction from the manifest's per-modality
content hashes and the encoder fingerprints (pipeline/extract_chunks.py), packing from the pack id,
training and evaluation from the training config's hash and the pack id.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pipeline.config import ConfigError, ExtractConfig, PipelineConfig
from pipeline.extract import selection_for
from pipeline.manifest import read_manifest
from pipeline.stage_records import StageOutcome, metrics_path, read_metrics, recorded, write_json
from storage.fingerprint import json_fingerprint
from storage.layout import Store
from storage.lock import store_lock
from storage.pack import pack
from storage.remote import Location, location

STAGES = ("extract", "pack", "train", "evaluate")
TRAIN_HOW = {"num_workers", "device"}  # change how training runs, not what it computes: not in the key


class StageError(RuntimeError):
    """A stage's result must not feed the stages after it (too many failed extractions, nothing trained)."""


# ---- configuration of a pipeline run ----------------------------------------------------------


def choose_stages(names: list[str] | None) -> list[str]:
    """The requested stages in pipeline order (all when none are named)."""
    if not names:
        return list(STAGES)
    unknown = sorted(set(names) - set(STAGES))
    if unknown:
        raise ConfigError(f"unknown stage {unknown}; choose from {', '.join(STAGES)}")
    return [s for s in STAGES if s in names]


def restrict_modalities(config: PipelineConfig, modalities: list[str] | None) -> PipelineConfig:
    """Keep only the named modalities of the config (for every stage: extract, pack, train)."""
    if not modalities:
        return config
    configured = config.extract.modalities
    unknown = sorted(set(modalities) - set(configured))
    if unknown:
        raise ConfigError(f"modality {unknown} is not in the config's extract.modalities ({', '.join(configured)})")
    kept = {m: c for m, c in configured.items() if m in modalities}
    return config.model_copy(update={"extract": config.extract.model_copy(update={"modalities": kept})})


def out_dir(config: PipelineConfig) -> Location:
    return location(config.out) if config.out is not None else Store(config.store).runs_dir


def prepare_run(config: PipelineConfig, stages: list[str] | None, modalities: list[str] | None):
    """(config for the chosen modalities, stages in order, out folder); a bad choice or training config
    raises ConfigError here, before any work."""
    config, chosen = restrict_modalities(config, modalities), choose_stages(stages)
    out = out_dir(config)
    if {"train", "evaluate"} & set(chosen):
        experiment_for(config.train, out, "", out)
    return config, chosen, out


def experiment_for(train: dict, pack_path: Path | str, pack_id: str, out: Location):
    """The experiment grid for a pack, its cache key (train config hash + pack id) and run folder.

    The run folder `<out>/runs/<key>` carries the key, so a changed training config trains afresh
    instead of finding an older config's finished runs.
    """
    from trainers.config import ExperimentConfig
    from trainers.config_file import ConfigError as TrainConfigError
    from trainers.config_file import url_or_path, validate

    given = sorted({"pack", "packs", "out"} & set(train))
    if given:
        raise ConfigError(f"train: leave out {', '.join(given)}; the pipeline sets them (pack stage, out)")
    try:
        experiment = validate(ExperimentConfig, {**train, "packs": [str(pack_path)], "out": str(out)}, "train")
    except TrainConfigError as err:
        raise ConfigError(str(err)) from err
    what = experiment.model_dump(mode="json", exclude={"packs": True, "out": True, "train": TRAIN_HOW})
    key = json_fingerprint({"train": what, "pack_id": pack_id})
    return experiment.model_copy(update={"out": url_or_path(out / "runs" / key)}), key


def export_experiment(config: PipelineConfig, path: Path) -> Path:
    """Write the experiment the train stage would run (the recorded pack, the keyed run folder) as YAML,
    for launching it with torchrun; `precal run --stages train,evaluate` then finds it finished."""
    out = out_dir(config)
    packed = recorded(out, "pack", "train")["result"]
    experiment, _ = experiment_for(config.train, packed["path"], packed["pack_id"], out)
    path.write_text(yaml.safe_dump(experiment.model_dump(mode="json"), sort_keys=False))
    return experiment.out


# ---- the stages ---------------------------------------------------------------------------------


def check_failures(failed_share: float, max_failed: float, store: Path) -> None:
    """The one max-failed rule, for `precal extract`, the pipeline's extract stage and the protocol's builds.

    Judged on every run, also one with nothing new to extract: failed_share counts this run's failed
    extractions and the manifest's rejected rows over everything the run considered, skipped samples
    included, so a manifest with too many rejected rows fails every run, not only the first. (Judging
    only runs that extracted something let the next run of the same bad manifest pass and pack it.)"""
    if failed_share > max_failed:
        raise StageError(
            f"{failed_share:.1%} of extractions failed (above max_failed {max_failed:.1%}); "
            f"see `precal status --store {store} --failed`"
        )


def extract_outcome(report: dict, config: ExtractConfig, store: Path) -> StageOutcome:
    """The extract stage's verdict on an extraction report: skipped when no chunk had work; errors are
    left to `precal status --failed`."""
    check_failures(report["failed_share"], config.max_failed, store)
    result = {
        "modalities": [{k: v for k, v in s.items() if k != "errors"} for s in report["modalities"]],
        "totals": report["totals"],
        "chunks": report["chunks"],
    }
    return StageOutcome("skipped" if report["chunks"] == 0 else "ran", report["key"], result)


def pack_stage(manifest: Path, store: Path, config: ExtractConfig, wait: float = 0.0) -> StageOutcome:
    """Pack every configured modality; an unchanged selection (same pack id) reuses the existing pack."""
    samples = read_manifest(manifest, allow_outside_root=config.allow_outside_root, check_files=False, strict=False)
    with store_lock(store, wait=wait):
        result = pack(store, samples, selection_for(store, config))
    return StageOutcome(
        "ran" if result.created else "skipped",
        result.pack_id,
        {"path": str(result.path), "pack_id": result.pack_id, "counts": result.counts, "dropped": len(result.dropped)},
    )


def train_stage(train: dict, packed: dict, out: Location) -> StageOutcome:
    """Run the experiment grid on the pack, in `<out>/runs/<key>`; skipped when that grid is finished."""
    from trainers.experiment import run_experiment

    experiment, key = experiment_for(train, packed["path"], packed["pack_id"], out)
    results = location(experiment.out) / "results.json"
    status = "skipped" if results.is_file() else "ran"
    runs = json.loads(results.read_text()) if status == "skipped" else run_experiment(experiment)
    return StageOutcome(status, key, {"out": str(experiment.out), "runs": len(runs)})


def evaluate_stage(train: dict, packed: dict, out: Location) -> StageOutcome:
    """Summarise the grid's test metrics (selected on valid) over seeds into `<out>/metrics.json`;
    skipped when metrics.json already holds this grid's key."""
    from trainers.experiment import summarize

    experiment, key = experiment_for(train, packed["path"], packed["pack_id"], out)
    results, path = location(experiment.out) / "results.json", metrics_path(out)
    if not results.is_file():
        raise StageError(f"no finished training runs in {experiment.out} for this config; run the train stage")
    if (read_metrics(out) or {}).get("key") == key:
        return StageOutcome("skipped", key, {"metrics": str(path)})
    runs = json.loads(results.read_text())
    write_json(
        path, {"key": key, "pack": packed, "runs_dir": str(experiment.out), "variants": summarize(runs), "runs": runs}
    )
    return StageOutcome("ran", key, {"metrics": str(path)})
