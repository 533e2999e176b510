"""The calibration protocol's preset and data (RESEARCH.md section 4); trainers/protocol.py trains the grid.

The data: AV-digits built three times from one seed.

- "standard": the usual build (30% of each split perturbed): train, valid and test;
- "clean": the same build with `perturb_share 0.0` (the same recordings, images and splits): its train and
  valid splits are the clean-only training regime, its test split the "clean" test set;
- "perturbed": the same build with `perturb_share 1.0`: its test split (one modality perturbed in every
  sample) is the "pert" test set. Only that split is extracted and packed.

Each build has its own folder and feature store (the builds share sample ids but not content, and a store
keeps one row per sample, modality and encoder). Every step is skipped when its output is there: a build
whose manifest exists, an extraction the catalog says is done, a pack with the same id.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipeline.config import ExtractConfig
from pipeline.datasets.avdigits import build_avdigits
from pipeline.extract import run_extraction, selection_for
from pipeline.manifest import read_manifest
from pipeline.stages import StageError, check_failures
from storage.pack import pack
from trainers.config_file import load_file, relative_to, validate
from trainers.protocol import ProtocolTraining, plan_runs, train_all
from trainers.protocol_eval import evaluate_runs
from trainers.protocol_results import write_results

# build name -> (perturb share, None for the configured one; splits to extract and pack)
BUILDS = {
    "standard": (None, ("train", "valid", "test")),
    "clean": (0.0, ("train", "valid", "test")),
    "perturbed": (1.0, ("test",)),
}


class ProtocolData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fsdd: Path
    mnist: Path
    folder: Path  # builds and stores go under <folder>/<build>/
    seed: int = 0
    perturb_share: float = Field(0.3, ge=0.0, le=1.0)
    per_class: int | None = Field(None, ge=1)  # fewer samples per digit (tests); None: every FSDD take
    extract: ExtractConfig = Field(default_factory=ExtractConfig)


class ProtocolConfig(ProtocolTraining):
    """A preset's `protocol:` section: the data to build, then what to train on it."""

    data: ProtocolData


def is_protocol_file(path: Path | str) -> bool:
    data = load_file(Path(path))
    return isinstance(data, dict) and "protocol" in data


def load_protocol_config(path: Path | str) -> ProtocolConfig:
    """Relative paths are taken from the preset's folder."""
    path = Path(path)
    data = load_file(path)
    config = validate(ProtocolConfig, data.get("protocol") if isinstance(data, dict) else None, str(path))
    base = path.resolve().parent
    data_config = config.data.model_copy(
        update={name: relative_to(base, getattr(config.data, name)) for name in ("fsdd", "mnist", "folder")}
    )
    return config.model_copy(update={"data": data_config, "out": relative_to(base, config.out)})


@dataclasses.dataclass
class Build:
    manifest: Path
    perturbations: Path
    pack: Path


def prepare(config: ProtocolData, progress: bool = True) -> dict[str, Build]:
    """Build, extract and pack the three AV-digits variants; {build name: Build}."""
    return {name: prepare_build(config, name, progress) for name in BUILDS}


def prepare_build(config: ProtocolData, name: str, progress: bool = True) -> Build:
    share, splits = BUILDS[name]
    folder = config.folder / name
    manifest_path = folder / "manifest.csv"
    if not manifest_path.is_file():  # the builder writes the manifest last: present means complete
        build_avdigits(
            config.fsdd,
            config.mnist,
            folder,
            per_class=config.per_class,
            seed=config.seed,
            perturb_share=config.perturb_share if share is None else share,
            progress=progress,
        )
    manifest = read_manifest(manifest_path, strict=False)
    manifest = dataclasses.replace(manifest, samples=[s for s in manifest.samples if s.split in splits])
    store = folder / "store"
    report = run_extraction(manifest, store, config.extract, progress=progress)
    try:
        check_failures(report.failed_share(), config.extract.max_failed, store)
    except StageError as err:
        raise StageError(f"{name} build: {err}") from err
    result = pack(store, manifest, selection_for(store, config.extract), progress=progress)
    return Build(manifest_path, folder / "perturbations.csv", result.path)


def run_protocol(config: ProtocolConfig, progress: bool = True) -> dict:
    """The whole protocol: data, training, evaluation, results; each step skips what is done. Returns what
    results.json holds."""
    builds = prepare(config.data, progress=progress)
    runs = plan_runs(config, {name: build.pack for name, build in builds.items()})
    train_all(runs)
    evaluations = evaluate_runs(runs, {name: (build.pack, build.perturbations) for name, build in builds.items()})
    return write_results(config, runs, evaluations)
