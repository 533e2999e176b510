"""Validated configuration for extraction and the whole pipeline (YAML or JSON files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from storage.layout import MODALITIES
from trainers.config_file import ConfigError, load_file, url_or_path  # one error type and reader for every config


class EncoderChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None  # None: the modality's offline default
    options: dict[str, Any] = Field(default_factory=dict)


def default_modalities() -> dict[str, EncoderChoice]:
    return {m: EncoderChoice() for m in MODALITIES}


class ExtractConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    modalities: dict[str, EncoderChoice] = Field(default_factory=default_modalities)
    dtype: Literal["float16", "float32"] = "float16"
    batch_size: int = Field(16, ge=1)
    num_workers: int = Field(1, ge=0)
    device: str = "auto"
    shard_size: int = Field(256, ge=1)
    max_failed: float = Field(0.05, ge=0.0, le=1.0)
    retry_failed: bool = False
    allow_outside_root: bool = False

    @field_validator("modalities")
    @classmethod
    def _known(cls, value: dict) -> dict:
        unknown = set(value) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modality {sorted(unknown)}; choose from {list(MODALITIES)}")
        if not value:
            raise ValueError("choose at least one modality")
        return value


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    manifest: Path | str  # a path, or a URL (s3://bucket/data/manifest.csv)
    store: Path | str  # a folder, or a URL (s3://bucket/store)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    train: dict[str, Any] = Field(default_factory=dict)  # validated by trainers.config
    out: Path | str | None = None  # run outputs (a folder or a URL); default <store>/runs

    @field_validator("manifest", "store", "out", mode="before")
    @classmethod
    def _urls_stay_text(cls, value):
        return url_or_path(value) if value is not None else None


def load_pipeline_config(path: Path) -> PipelineConfig:
    """Read a pipeline config; relative paths are taken from the config file's folder."""
    data = load_file(path)
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{path}: invalid config:\n{err}") from err
    base = Path(path).resolve().parent
    updates = {
        k: base / getattr(config, k) for k in ("manifest", "store", "out") if isinstance(getattr(config, k), Path)
    }
    return config.model_copy(update=updates)
