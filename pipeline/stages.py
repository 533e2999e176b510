"""The pipeline's stages as plain functions: what each would do, its cache key, and the record of a run.

flows/pipeline.py wires these into Prefect; everything here runs and is tested without Prefect.
Cache keys come from content, never from paths alone: extraction from the manifest's per-modality
content hashes and the encoder fingerprints, packing from the pack id, training and evaluation from
the training config's hash and the pack id.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml

from pipeline.config import ConfigError, ExtractConfig, PipelineConfig
from pipeline.extract import (
    ExtractionReport,
    ModalitySummary,
    Todo,
    choose_spec,
    extract_modality,
    plan,
    record_encoder,
    store_fingerprint,
)
from pipeline.manifest import Manifest
from pipeline.spec_cache import spec_for
from storage.atomic import write_json_atomic
from storage.catalog import Catalog
from storage.fingerprint import FileHashCache, content_hash, json_fingerprint
from storage.lock import store_lock

STAGES = ("extract", "pack", "train", "evaluate")
HISTORY = 50  # pipeline runs kept in stages.json
TRAIN_HOW = {"num_workers", "device"}  # change how training runs, not what it computes: not in the key


# ---- extraction, in chunks ----------------------------------------------------------------------

@dataclass
class ModalityPlan:
    modality: str
    encoder: str
    fingerprint: str
    todo: list[Todo]
    skipped: int


@dataclass
class ExtractionPlan:
    modalities: list[ModalityPlan]
    key: str  # hash of every modality's encoder fingerprint and per-sample content hashes

    def chunks(self, size: int) -> list[tuple[ModalityPlan, int, list[Todo]]]:
        """(modality plan, chunk index, samples) for each block of at most `size` samples to extract."""
        return [(m, i, m.todo[start:start + size])
                for m in self.modalities for i, start in enumerate(range(0, len(m.todo), size))]

    def nothing_to_do(self) -> bool:
        return not any(m.todo for m in self.modalities)


def plan_extraction(manifest: Manifest, store: Path, config: ExtractConfig) -> ExtractionPlan:
    """What each configured modality still needs, from the encoders' specs (no model is loaded; a spec
    whose sources are unchanged comes from the store's cache, so no encoder is built); call while
    holding the store lock (records encoders)."""
    files = FileHashCache(store / "cache" / "file_hashes.json")
    latest = Catalog(store).latest()
    plans, inputs = [], {}
    for modality, choice in config.modalities.items():
        spec = spec_for(store, modality, choice.name, choice.options)
        fingerprint = store_fingerprint(spec, config.dtype)
        record_encoder(store, spec, fingerprint, config.dtype)
        todo, skipped = plan(manifest, store, spec, config.dtype, retry_failed=config.retry_failed,
                             latest=latest, files=files)
        plans.append(ModalityPlan(modality, spec.encoder_name, fingerprint, todo, skipped))
        inputs[modality] = {"fingerprint": fingerprint,
                            "samples": {s.sample_id: content_hash(modality, s, files)
                                        for s in manifest.samples if s.has(modality)}}
    files.save()
    return ExtractionPlan(plans, json_fingerprint(inputs))


def nothing_to_extract(manifest: Manifest, store: Path, config: ExtractConfig, wait: float = 0.0) -> dict | None:
    """The extraction report when every configured modality is already done, else None: the answer to
    "is anything new?" plans under the store lock, builds no encoder and starts no flow."""
    with store_lock(store, wait=wait):
        plan = plan_extraction(manifest, store, config)
    return extraction_report(plan, [], manifest.rejected) if plan.nothing_to_do() else None


def extraction_report(plan: ExtractionPlan, parts: list[tuple[ModalityPlan, ModalitySummary]],
                      rejected: list[str]) -> dict:
    """The run's report from its plan and each chunk's summary (with its modality's plan)."""
    summaries = [merge_summaries(m, [p for owner, p in parts if owner is m]) for m in plan.modalities]
    return {**ExtractionReport(summaries, rejected).to_dict(), "key": plan.key, "chunks": len(parts)}


def extract_chunk(todo: list[Todo], store: Path, modality: str, config: ExtractConfig, expected_fingerprint: str,
                  *, num_workers: int | None = None, progress: bool = True) -> ModalitySummary:
    """Extract one chunk, its encoder's model loaded once for it; it commits its own shards and catalog parts."""
    choice = config.modalities[modality]
    spec = choose_spec(modality, choice.name, choice.options)
    fingerprint = store_fingerprint(spec, config.dtype)
    if fingerprint != expected_fingerprint:  # e.g. a worker node with other weights or another precal version
        raise ValueError(f"this process computes fingerprint {fingerprint} for {modality}:{spec.encoder_name}, "
                         f"the plan expected {expected_fingerprint}: the worker's encoder weights or software differ")
    workers = config.num_workers if num_workers is None else num_workers
    return extract_modality(todo, spec.build(), store, dtype=config.dtype, shard_size=config.shard_size,
                            batch_size=config.batch_size, num_workers=workers, device=config.device,
                            progress=progress)


def merge_summaries(modality: ModalityPlan, parts: list[ModalitySummary]) -> ModalitySummary:
    """One modality's summary from its chunks' summaries (seconds: the chunks' time added up)."""
    total = ModalitySummary(modality.modality, modality.encoder, modality.fingerprint, skipped=modality.skipped)
    for part in parts:
        total.ok += part.ok
        total.failed += part.failed
        total.shards_written += part.shards_written
        total.seconds += part.seconds
        total.errors.extend(part.errors)
    return total


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


def out_dir(config: PipelineConfig) -> Path:
    return Path(config.out) if config.out is not None else Path(config.store) / "runs"


def prepare_run(config: PipelineConfig, stages: list[str] | None, modalities: list[str] | None):
    """(config for the chosen modalities, stages in order, out folder); a bad choice or training config
    raises ConfigError here, before any work."""
    config, chosen = restrict_modalities(config, modalities), choose_stages(stages)
    out = out_dir(config)
    if {"train", "evaluate"} & set(chosen):
        experiment_for(config.train, out, "", out)
    return config, chosen, out


def experiment_for(train: dict, pack_path: Path, pack_id: str, out: Path):
    """The experiment grid for a pack, its cache key (train config hash + pack id) and run folder.

    The run folder `<out>/runs/<key>` carries the key, so a changed training config trains afresh
    instead of finding an older config's finished runs.
    """
    from trainers.config import ConfigError as TrainConfigError
    from trainers.config import ExperimentConfig, validate

    given = sorted({"pack", "packs", "out"} & set(train))
    if given:
        raise ConfigError(f"train: leave out {', '.join(given)}; the pipeline sets them (pack stage, out)")
    try:
        experiment = validate(ExperimentConfig, {**train, "packs": [str(pack_path)], "out": str(out)}, "train")
    except TrainConfigError as err:
        raise ConfigError(str(err)) from err
    what = experiment.model_dump(mode="json", exclude={"packs": True, "out": True, "train": TRAIN_HOW})
    key = json_fingerprint({"train": what, "pack_id": pack_id})
    return experiment.model_copy(update={"out": out / "runs" / key}), key


def export_experiment(config: PipelineConfig, path: Path) -> Path:
    """Write the experiment the train stage would run (the recorded pack, the keyed run folder) as YAML,
    for launching it with torchrun; `precal run --stages train,evaluate` then finds it finished."""
    out = out_dir(config)
    packed = recorded(out, "pack", "train")["result"]
    experiment, _ = experiment_for(config.train, Path(packed["path"]), packed["pack_id"], out)
    path.write_text(yaml.safe_dump(experiment.model_dump(mode="json"), sort_keys=False))
    return experiment.out


# ---- the record: <out>/stages.json -------------------------------------------------------------

@dataclass
class StageRecord:
    stage: str
    status: str  # "ran" or "skipped"
    key: str
    seconds: float
    result: dict = field(default_factory=dict)
    finished_at: str = ""
    flow_run_id: str | None = None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def stages_path(out: Path) -> Path:
    return Path(out) / "stages.json"


def read_stages(out: Path) -> dict:
    """{"stages": {name: latest record}, "history": [one entry per pipeline run]}."""
    path = stages_path(out)
    if not path.is_file():
        return {"stages": {}, "history": []}
    return json.loads(path.read_text())


def write_json(path: Path, data: dict) -> None:
    """Written whole or not at all (a temporary file renamed into place)."""
    write_json_atomic(path, data, indent=2, default=str)


def _write(out: Path, data: dict) -> None:
    write_json(stages_path(out), data)


def record_stage(out: Path, record: StageRecord) -> None:
    data = read_stages(out)
    data["stages"][record.stage] = asdict(record)
    _write(out, data)


def record_run(out: Path, flow_run_id: str | None, started_at: str, records: list[StageRecord]) -> dict:
    """Append this pipeline run (which stages ran, which were skipped) to the history."""
    data = read_stages(out)
    entry = {"flow_run_id": flow_run_id, "started_at": started_at, "finished_at": now_iso(),
             "stages": {r.stage: r.status for r in records}}
    data["history"] = (data["history"] + [entry])[-HISTORY:]
    _write(out, data)
    return entry


def recorded(out: Path, stage: str, needed_by: str) -> dict:
    """The latest record of a stage this run does not repeat; a clear error when there is none."""
    record = read_stages(out)["stages"].get(stage)
    if record is None:
        raise ConfigError(f"stage {needed_by} needs the {stage} stage's result and {stages_path(out)} has none; "
                          f"run it first (--stages {stage},{needed_by})")
    return record
