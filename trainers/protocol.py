"""The calibration protocol (RESEARCH.md section 4) as one command: `precal experiment PRESET` on a preset
with a `protocol:` section (pipeline/presets/avdigits-protocol.yaml); pipeline/protocol.py reads the preset,
builds the data and runs it all. This module holds the training half: the grid and its runs, given the
packs as paths.

1. Data (pipeline/protocol.py): AV-digits built with the configured perturbed share ("standard"), with 0.0
   ("clean") and with 1.0 ("perturbed"), same seed and splits.
2. Runs: regimes (standard: train on the standard build; clean: train on the clean build) x backbones x
   methods x seeds, in `<out>/runs/<regime>/<backbone>-<method>/seed-<n>/`. A method is a base ("none",
   "paper", "aux", "reliability", "gate", "ogm_ge") with options: "+aug" (corruption augmentation) and
   "+branch" (branch unimodal losses), e.g. "reliability+aug+branch". `grid` lists blocks, so that a
   machine without the time for everything can run a stated subset; runs already finished are read back.
3. Per run (trainers/protocol_eval.py): accuracy and macro-F1 on the test sets "test" (standard), "clean"
   and "pert"; on "pert" the accuracy per (modality, kind), the AUROC / within-modality AUROC / lowest share
   of the instance scales by kind, accuracy with each modality removed and the removal ceiling (the
   perturbed modality removed by hand).
4. Per comparison: paired bootstrap intervals over test samples against none+aug and none+aug+branch of the
   same regime, backbone and seed set; written with everything else to `<out>/results.json` and
   `<out>/results.md`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm.auto import tqdm

from storage.remote import Location, location
from trainers.config import Backbone, TrainConfig, TrainOptions
from trainers.config_file import ConfigError, url_or_path
from trainers.model_config import ReliabilityOptions

BASES = {
    "none": ("none", "paper"),
    "paper": ("calibration", "paper"),
    "aux": ("calibration", "aux"),
    "reliability": ("calibration", "reliability"),
    "gate": ("gate", "paper"),
    "ogm_ge": ("ogm_ge", "paper"),
}
OPTIONS = ("aug", "branch")
REGIMES = {"standard": "standard", "clean": "clean"}  # regime -> the build whose train/valid it trains on
DEFAULT_METHODS = [
    "none",
    "none+aug",
    "none+aug+branch",
    "paper",
    "paper+aug",
    "reliability+aug",
    "reliability+aug+branch",
    "gate",
    "ogm_ge",
]
BASELINES = ("none+aug", "none+aug+branch")


def parse_method(name: str) -> tuple[str, str, set[str]]:
    """ "reliability+aug+branch" -> ("calibration", "reliability", {"aug", "branch"})."""
    base, *options = name.split("+")
    if base not in BASES:
        raise ValueError(f"method {name!r}: unknown base {base!r}; choose from {sorted(BASES)}")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown or len(set(options)) != len(options):
        raise ValueError(f"method {name!r}: options are {list(OPTIONS)}, each at most once")
    return (*BASES[base], set(options))


class Block(BaseModel):
    """A part of the grid: every combination of its regimes, backbones, methods and seeds."""

    model_config = ConfigDict(extra="forbid")
    regimes: list[str] = Field(default_factory=lambda: list(REGIMES))
    backbones: list[Backbone] = Field(default_factory=lambda: ["late", "conv", "mult"])
    methods: list[str] = Field(default_factory=lambda: list(DEFAULT_METHODS))
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=1)
    train: dict[str, Any] = Field(default_factory=dict)  # overrides of the shared train options

    @field_validator("regimes")
    @classmethod
    def _known_regimes(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(REGIMES))
        if unknown:
            raise ValueError(f"unknown regime {unknown}; choose from {list(REGIMES)}")
        return value

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:
        for name in value:
            parse_method(name)
        return value


class ProtocolTraining(BaseModel):
    """What the protocol trains and how it compares the runs (pipeline/protocol.py adds the data section)."""

    model_config = ConfigDict(extra="forbid")
    out: Path | str  # a folder, or a URL in a bucket
    train: TrainOptions = Field(default_factory=TrainOptions)
    augment: dict[str, Any] = Field(default_factory=dict)  # the "+aug" options (trainers.config.Augment)
    branch_unimodal_weight: float = Field(1.0, gt=0.0)  # the "+branch" weight
    reliability: ReliabilityOptions | None = None  # the "reliability" variant's options
    grid: list[Block] = Field(default_factory=lambda: [Block()], min_length=1)
    bootstrap: int = Field(2000, ge=100)  # resamples per paired interval

    @field_validator("out", mode="before")
    @classmethod
    def _url_stays_text(cls, value):
        return url_or_path(value)


def run_dir(out: Location, regime: str, backbone: str, method: str, seed: int) -> Location:
    return out / "runs" / regime / f"{backbone}-{method}" / f"seed-{seed}"


def plan_runs(config: ProtocolTraining, packs: dict[str, Path]) -> list[tuple[str, str, TrainConfig]]:
    """(regime, method name, TrainConfig) for every run of the grid, in the grid's order, each once."""
    runs, seen = [], set()
    for block in config.grid:
        options = {**config.train.model_dump(), **block.train}
        for regime in block.regimes:
            for backbone in block.backbones:
                for name in block.methods:
                    method, calibration, extras = parse_method(name)
                    for seed in block.seeds:
                        out = run_dir(location(config.out), regime, backbone, name, seed)
                        if out in seen:
                            continue
                        seen.add(out)
                        model_options = dict(options.get("model_options") or {})
                        if calibration == "reliability" and config.reliability is not None:
                            model_options["reliability"] = config.reliability.model_dump()
                        run = {
                            **options,
                            "pack": packs[REGIMES[regime]],
                            "out": out,
                            "backbone": backbone,
                            "method": method,
                            "calibration": calibration,
                            "seed": seed,
                            "augment": config.augment if "aug" in extras else None,
                            "branch_unimodal_weight": config.branch_unimodal_weight if "branch" in extras else 0.0,
                            "model_options": model_options,
                        }
                        try:
                            runs.append((regime, name, TrainConfig(**run)))
                        except ValueError as err:
                            raise ConfigError(f"protocol run {out}: {err}") from err
    return runs


def train_all(runs: list[tuple[str, str, TrainConfig]]) -> None:
    """Train every run not finished yet (a killed run resumes from its checkpoint)."""
    from trainers.train import train

    for _, _, run in tqdm(runs, desc="protocol", unit="run"):
        if not (location(run.out) / "metrics.json").is_file():
            tqdm.write(f"train: {run.out}")
            train(run)
