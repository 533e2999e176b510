"""The model part of a training config, typed: what `build_model` needs, and what a checkpoint keeps to
rebuild its model without the pack (trainers/checkpoints.py `load_model`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trainers.backbones import BACKBONES
from trainers.models import CALIBRATIONS, METHODS, FusionModel, build_model
from trainers.reliability import SCALE_LOSSES


class ReliabilityOptions(BaseModel):
    """ReliabilityCalibration's own options (trainers/reliability.py)."""

    model_config = ConfigDict(extra="forbid")
    evidence_hidden: int = Field(64, ge=1)
    scale_hidden: int = Field(32, ge=1)
    scale_loss: Literal[SCALE_LOSSES] = "rank"
    evidence_weight: float = Field(1.0, ge=0.0)
    scale_weight: float = Field(1.0, ge=0.0)


class ModelOptions(BaseModel):
    """The model's finer settings (`model_options` in a training config). A backbone option left None takes
    the backbone's default; one the chosen backbone does not have is refused when the model is built."""

    model_config = ConfigDict(extra="forbid")
    calibration_width: int = Field(16, ge=1)  # H, the calibration's summary width
    shift: bool = False  # the calibration also learns a shift
    aux_weight: float = Field(1.0, ge=0.0)  # weight of the "aux" variant's unimodal loss
    reliability: ReliabilityOptions = Field(default_factory=ReliabilityOptions)
    kernel: int | None = Field(None, ge=1)  # conv: temporal kernel width (odd)
    heads: int | None = Field(None, ge=1)  # mult: attention heads
    layers: int | None = Field(None, ge=1)  # mult: cross-modal and self-attention layers

    def keywords(self) -> dict:
        """build_model's keywords for these options."""
        backbone = {
            k: v for k, v in (("kernel", self.kernel), ("heads", self.heads), ("layers", self.layers)) if v is not None
        }
        return {
            "calibration_width": self.calibration_width,
            "shift": self.shift,
            "aux_weight": self.aux_weight,
            "reliability": self.reliability.model_dump(),
            **backbone,
        }


def check_name(registry, value: str) -> str:
    registry.get(value)  # raises, naming the known ones
    return value


class ModelConfig(BaseModel):
    """Backbone, method and calibration variant with their settings: everything that shapes the model
    besides the pack's feature widths and classes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    backbone: str = "late"
    method: str = "none"
    calibration: str = "paper"  # the calibration variant, used by a calibrated method
    hidden: int = Field(64, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    options: ModelOptions = Field(default_factory=ModelOptions)

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        return check_name(BACKBONES, value)

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        return check_name(METHODS, value)

    @field_validator("calibration")
    @classmethod
    def _known_calibration(cls, value: str) -> str:
        return check_name(CALIBRATIONS, value)

    def build(self, dims: dict[str, int], num_outputs: int) -> FusionModel:
        return build_model(
            self.backbone,
            dims,
            num_outputs,
            method=self.method,
            calibration=self.calibration,
            hidden=self.hidden,
            dropout=self.dropout,
            **self.options.keywords(),
        )
