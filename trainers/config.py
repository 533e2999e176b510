"""Validated training and experiment configs, read from YAML or JSON.

Relative paths in a config file are taken from the file's folder, so a config kept next to its data
works from any working directory. The model part is typed (trainers/model_config.py): `backbone`, `method`,
`calibration`, `hidden`, `dropout` and `model_options` make up `TrainConfig.architecture`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from storage.layout import MODALITIES
from trainers.backbones import BACKBONES
from trainers.config_file import load_file, relative_to, url_or_path, validate
from trainers.model_config import ModelConfig, ModelOptions, check_name
from trainers.models import CALIBRATIONS, METHODS

Backbone = Literal[tuple(BACKBONES.names())]
Method = Literal[tuple(METHODS.names())]
DEFAULT_BACKBONES = ("late", "conv", "mult")
DEFAULT_METHODS = ("none", "calibration", "gate", "ogm_ge")


def _check_calibration(value: str) -> str:
    return check_name(CALIBRATIONS, value)


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
    max_len: dict[str, int] = Field(default_factory=dict)  # per modality: keep at most this many steps
    modalities: list[str] | None = None  # None: every modality in the pack
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto: bf16 autocast on CUDA only
    device: str = "auto"  # auto: cuda (this rank's GPU) if available
    ogm_alpha: float = Field(0.5, ge=0.0)
    augment: Augment | None = None  # corruption augmentation, for any method
    branch_unimodal_weight: float = Field(0.0, ge=0.0)  # loss on each branch's own logits, for any method
    model_options: ModelOptions = Field(default_factory=ModelOptions)

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
    pack: Path | str  # a pack folder, or its URL in a bucket (s3://bucket/store/packed/<id>)
    out: Path | str  # the run's folder, or a URL in a bucket (s3://bucket/runs/a)
    backbone: Backbone = "late"
    method: Method = "none"
    calibration: str = "paper"  # variant of the calibration module; used when method == "calibration"
    seed: int = 0
    shard_cache: Path | None = None  # a pack in a bucket is copied here once (checked) and read locally

    @field_validator("pack", "out", mode="before")
    @classmethod
    def _urls_stay_text(cls, value):
        return url_or_path(value)

    @field_validator("calibration")
    @classmethod
    def _known_calibration(cls, value: str) -> str:
        return _check_calibration(value)

    @property
    def architecture(self) -> ModelConfig:
        """The model part of this config."""
        return ModelConfig(
            backbone=self.backbone,
            method=self.method,
            calibration=self.calibration,
            hidden=self.hidden,
            dropout=self.dropout,
            options=self.model_options,
        )


class ExperimentConfig(BaseModel):
    """A grid: packs x backbones x methods (calibration expanded over its variants) x seeds."""

    model_config = ConfigDict(extra="forbid")
    packs: list[Path | str] = Field(min_length=1)  # folders, or URLs of packs in a bucket
    out: Path | str  # a folder, or a URL in a bucket
    backbones: list[Backbone] = Field(default_factory=lambda: list(DEFAULT_BACKBONES))
    methods: list[Method] = Field(default_factory=lambda: list(DEFAULT_METHODS))
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

    @field_validator("packs", mode="before")
    @classmethod
    def _urls_stay_text(cls, value):
        return [url_or_path(v) for v in value] if isinstance(value, list) else value

    @field_validator("out", mode="before")
    @classmethod
    def _url_stays_text(cls, value):
        return url_or_path(value)

    @field_validator("backbones", "methods", "seeds")
    @classmethod
    def _not_empty_unique(cls, value: list) -> list:
        if not value:
            raise ValueError("must list at least one entry")
        if len(set(value)) != len(value):
            raise ValueError(f"has duplicates: {value}")
        return value


def load_train_config(path: Path | str) -> TrainConfig:
    path = Path(path)
    config = validate(TrainConfig, load_file(path), str(path))
    base = path.resolve().parent
    return config.model_copy(
        update={
            "pack": relative_to(base, config.pack),
            "out": relative_to(base, config.out),
            "shard_cache": config.shard_cache and relative_to(base, config.shard_cache),
        }
    )


def load_experiment_config(path: Path | str) -> ExperimentConfig:
    path = Path(path)
    config = validate(ExperimentConfig, load_file(path), str(path))
    base = path.resolve().parent
    return config.model_copy(
        update={"packs": [relative_to(base, p) for p in config.packs], "out": relative_to(base, config.out)}
    )
