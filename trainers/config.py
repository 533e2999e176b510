"""Validated training and experiment configs, read from YAML or JSON.

Relative paths in a config file are taken from the file's folder (as in pipeline/config.py), so a
config kept next to its data works from any working directory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.config import ConfigError, load_file
from trainers.backbones import BACKBONES as BACKBONE_CLASSES
from trainers.calibration import VARIANTS as CALIBRATIONS
from trainers.models import METHODS

BACKBONES = tuple(BACKBONE_CLASSES)
MODALITIES = ("audio", "text", "video")

Backbone = Literal[BACKBONES]
Method = Literal[METHODS]


def _check_calibration(value: str) -> str:
    if value not in CALIBRATIONS:
        raise ValueError(f"unknown calibration variant {value!r}; choose from {list(CALIBRATIONS)}")
    return value


def _check_modalities(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    unknown = sorted(set(value) - set(MODALITIES))
    if unknown:
        raise ValueError(f"unknown modality {unknown}; choose from {list(MODALITIES)}")
    if not value:
        raise ValueError("choose at least one modality (or leave it out for all in the pack)")
    return sorted(set(value))


class Augment(BaseModel):
    """Corruption augmentation (trainers/augment.py): one modality of `share` of each batch's samples is
    swapped for another sample's (a conflict) or given noise at one of `noise_levels` x the per-dim std."""

    model_config = ConfigDict(extra="forbid")
    share: float = Field(0.5, ge=0.0, le=1.0)
    kinds: list[Literal["swap", "noise"]] = Field(default_factory=lambda: ["swap", "noise"], min_length=1)
    noise_levels: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0], min_length=1)

    @field_validator("noise_levels")
    @classmethod
    def _positive_levels(cls, value: list[float]) -> list[float]:
        if any(v <= 0 for v in value):
            raise ValueError(f"noise levels must be positive, got {value}")
        return value


class TrainOptions(BaseModel):
    """Options shared by every run of an experiment grid."""

    model_config = ConfigDict(extra="forbid")
    hidden: int = Field(64, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-2, ge=0.0)
    num_workers: int = Field(2, ge=0)
    shuffle_buffer: int = Field(1000, ge=1)
    max_len: dict[str, int] = Field(default_factory=dict)   # per modality: keep at most this many steps
    modalities: list[str] | None = None                      # None: every modality in the pack
    amp: Literal["auto", "bf16", "off"] = "auto"             # auto: bf16 autocast on CUDA only
    device: str = "auto"                                     # auto: cuda (this rank's GPU) if available
    ogm_alpha: float = Field(0.5, ge=0.0)
    augment: Augment | None = None                           # corruption augmentation, for any method
    branch_unimodal_weight: float = Field(0.0, ge=0.0)      # loss on each branch's own logits, for any method
    model_options: dict[str, Any] = Field(default_factory=dict)  # extra build_model keywords

    @field_validator("modalities")
    @classmethod
    def _known_modalities(cls, value: list[str] | None) -> list[str] | None:
        return _check_modalities(value)

    @field_validator("max_len")
    @classmethod
    def _positive_caps(cls, value: dict[str, int]) -> dict[str, int]:
        _check_modalities(list(value) or None)
        bad = {m: n for m, n in value.items() if n < 1}
        if bad:
            raise ValueError(f"caps must be at least 1 step, got {bad}")
        return value


class TrainConfig(TrainOptions):
    pack: Path
    out: Path
    backbone: Backbone = "late"
    method: Method = "none"
    calibration: str = "paper"   # variant of the calibration module; used when method == "calibration"
    seed: int = 0

    @field_validator("calibration")
    @classmethod
    def _known_calibration(cls, value: str) -> str:
        return _check_calibration(value)


class ExperimentConfig(BaseModel):
    """A grid: packs x backbones x methods (calibration expanded over its variants) x seeds."""

    model_config = ConfigDict(extra="forbid")
    packs: list[Path] = Field(min_length=1)
    out: Path
    backbones: list[Backbone] = Field(default_factory=lambda: list(BACKBONES))
    methods: list[Method] = Field(default_factory=lambda: list(METHODS))
    calibrations: list[str] = Field(default_factory=lambda: ["paper"], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    train: TrainOptions = Field(default_factory=TrainOptions)

    @model_validator(mode="before")
    @classmethod
    def _one_pack(cls, data: Any) -> Any:
        """`pack: DIR` is accepted as a one-element `packs`."""
        if isinstance(data, dict) and "pack" in data:
            if "packs" in data:
                raise ValueError("give either `pack` or `packs`, not both")
            data = {**data, "packs": [data["pack"]]}
            del data["pack"]
        return data

    @field_validator("calibrations")
    @classmethod
    def _known_calibrations(cls, value: list[str]) -> list[str]:
        return [_check_calibration(v) for v in value]

    @field_validator("backbones", "methods", "seeds")
    @classmethod
    def _not_empty_unique(cls, value: list) -> list:
        if not value:
            raise ValueError("must list at least one entry")
        if len(set(value)) != len(value):
            raise ValueError(f"has duplicates: {value}")
        return value


def _explain(err: ValidationError) -> str:
    """One line per problem, each naming the field by its dotted path."""
    lines = []
    for problem in err.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"  {field}: {message}")
    return "\n".join(lines)


def validate(cls: type[BaseModel], data: dict, source: str = "config") -> BaseModel:
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: invalid {cls.__name__}:\n{_explain(err)}") from err


def _relative_to(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else base / path


def load_train_config(path: Path | str) -> TrainConfig:
    path = Path(path)
    config = validate(TrainConfig, load_file(path), str(path))
    base = path.resolve().parent
    return config.model_copy(update={"pack": _relative_to(base, config.pack), "out": _relative_to(base, config.out)})


def load_experiment_config(path: Path | str) -> ExperimentConfig:
    path = Path(path)
    config = validate(ExperimentConfig, load_file(path), str(path))
    base = path.resolve().parent
    return config.model_copy(update={"packs": [_relative_to(base, p) for p in config.packs],
                                     "out": _relative_to(base, config.out)})
