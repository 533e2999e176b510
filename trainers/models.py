"""Fusion models: optional calibration -> backbone branches -> optional gate -> backbone head.

Methods: "none" (the backbone alone), "calibration" (ContextualCalibration, or ReliabilityCalibration for the
"reliability" variant, on the inputs), "gate" (a learned sigmoid gate on the fused vector), "ogm_ge" (the
backbone alone; the training loop calls ogm_ge_modulate between backward and step). Backbones
(trainers/backbones.py), methods and calibration variants are registries (storage/registry.py): a new one is
registered under its own name, and a taken name is refused.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from storage.registry import Registry
from trainers.backbones import BACKBONES, Backbone
from trainers.calibration import Calibrated, ContextualCalibration
from trainers.reliability import ReliabilityCalibration


@dataclass(frozen=True)
class Method:
    """What a method adds to the backbone."""

    calibrated: bool = False  # a calibration module on the inputs
    gated: bool = False  # a learned sigmoid gate on the fused vector
    modulates_gradients: bool = False  # the training loop calls ogm_ge_modulate between backward and step


METHODS: Registry[Method] = Registry("method")
METHODS.register("none")(Method())
METHODS.register("calibration")(Method(calibrated=True))
METHODS.register("gate")(Method(gated=True))
METHODS.register("ogm_ge")(Method(modulates_gradients=True))

# (dims, num_outputs, *, width, shift, dropout, reliability options) -> the calibration module
CalibrationBuilder = Callable[..., nn.Module]
CALIBRATIONS: Registry[CalibrationBuilder] = Registry("calibration variant")


@CALIBRATIONS.register("paper")
def _paper(
    dims: dict[str, int], num_outputs: int, *, width: int, shift: bool, dropout: float, reliability: dict | None
) -> ContextualCalibration:
    return ContextualCalibration(dims, width=width, shift=shift, variant="paper", num_outputs=num_outputs)


@CALIBRATIONS.register("aux")
def _aux(
    dims: dict[str, int], num_outputs: int, *, width: int, shift: bool, dropout: float, reliability: dict | None
) -> ContextualCalibration:
    return ContextualCalibration(dims, width=width, shift=shift, variant="aux", num_outputs=num_outputs)


@CALIBRATIONS.register("reliability")
def _reliability(
    dims: dict[str, int], num_outputs: int, *, width: int, shift: bool, dropout: float, reliability: dict | None
) -> ReliabilityCalibration:
    return ReliabilityCalibration(dims, num_outputs, width=width, shift=shift, dropout=dropout, **(reliability or {}))


@dataclass
class ModelOutput:
    logits: Tensor  # [B, num_outputs]
    unimodal_logits: dict[str, Tensor]  # {m: [B, num_outputs]}: the head on m's block alone
    scales: dict | None = None  # calibration: {"instance": [B, M], "dimension": {m: [B, D_m]}}
    aux_loss: Tensor | None = None  # "aux"/"reliability" calibration, given a target: add it to the loss
    evidence: Tensor | None = None  # "reliability": each modality's evidence [B, M, C or 2]


def per_sample_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy for class targets, L1 (the CMU-MOSI convention) for float targets; shape [B]."""
    if target.is_floating_point():
        return (logits.squeeze(-1) - target).abs()
    return F.cross_entropy(logits, target, reduction="none")


class FusionModel(nn.Module):
    def __init__(
        self,
        backbone: Backbone,
        method: str = "none",
        calibration: ContextualCalibration | ReliabilityCalibration | None = None,
        aux_weight: float = 1.0,
    ):
        super().__init__()
        if (calibration is not None) != METHODS.get(method).calibrated:
            raise ValueError(f"a calibration module goes with a calibrated method, not with {method!r}")
        self.backbone, self.method, self.calibration, self.aux_weight = backbone, method, calibration, aux_weight
        self.modalities = backbone.modalities
        fused_width = len(self.modalities) * backbone.hidden
        self.gate = nn.Linear(fused_width, fused_width) if METHODS.get(method).gated else None
        # Row i keeps modality i's block of the fused vector: the head on it gives i's unimodal logits.
        blocks = torch.eye(len(self.modalities)).repeat_interleave(backbone.hidden, dim=1)
        self.register_buffer("block_mask", blocks.bool(), persistent=False)

    def modality_parameters(self, m: str) -> list[nn.Parameter]:
        return self.backbone.modality_parameters(m)

    def forward(self, batch: dict) -> ModelOutput:
        features, mask = batch["features"], batch.get("mask")
        present = batch.get("present")
        if present is None:
            first = features[self.modalities[0]]
            present = torch.ones(first.shape[0], len(self.modalities), dtype=torch.bool, device=first.device)
        calibrated = self.calibration(features, mask, present) if self.calibration is not None else None
        vectors = self.backbone.encode(features, mask, present, calibrated)
        fused = torch.cat([vectors[m] for m in self.modalities], -1)
        if self.gate is not None:
            fused = fused * torch.sigmoid(self.gate(fused))
        logits = self.backbone.head(fused)
        # The head is non-linear, so a modality's contribution is the head with the other blocks zeroed.
        unimodal = self.backbone.head(fused.unsqueeze(1).masked_fill(~self.block_mask, 0.0))  # [B, M, C]
        return ModelOutput(
            logits,
            {m: unimodal[:, i] for i, m in enumerate(self.modalities)},
            calibrated.scales if calibrated else None,
            self.aux_loss(calibrated, batch.get("target"), present),
            calibrated.evidence if calibrated else None,
        )

    def aux_loss(self, calibrated: Calibrated | None, target: Tensor | None, present: Tensor) -> Tensor | None:
        """The calibration's own loss: "reliability" computes it (evidence and scale supervision); "aux" is the
        mean unimodal loss of the summaries' heads over the present (sample, modality) pairs."""
        if calibrated is None or target is None:
            return None
        if calibrated.evidence is not None:
            return self.calibration.loss(calibrated, target)
        if calibrated.aux_logits is None:
            return None
        losses = torch.stack([per_sample_loss(calibrated.aux_logits[m], target) for m in self.modalities], 1)
        weight = present.to(losses.dtype)
        return self.aux_weight * (losses * weight).sum() / weight.sum().clamp_min(1)


def build_model(
    backbone: str,
    dims: dict[str, int],
    num_outputs: int,
    *,
    method: str = "none",
    calibration: str = "paper",
    hidden: int = 64,
    dropout: float = 0.1,
    calibration_width: int = 16,
    shift: bool = False,
    aux_weight: float = 1.0,
    reliability: dict | None = None,
    **backbone_options,
) -> FusionModel:
    """backbone_options go to the backbone: kernel (conv), heads and layers (mult). `reliability` holds
    ReliabilityCalibration's own options (evidence_hidden, scale_hidden, scale_loss, evidence_weight,
    scale_weight)."""
    chosen = METHODS.get(method)
    net = BACKBONES.get(backbone)(dims, num_outputs, hidden=hidden, dropout=dropout, **backbone_options)
    # Built after the backbone, so the backbone's initial weights do not depend on the method.
    module = None
    if chosen.calibrated:
        module = CALIBRATIONS.get(calibration)(
            dims, num_outputs, width=calibration_width, shift=shift, dropout=dropout, reliability=reliability
        )
    return FusionModel(net, method, module, aux_weight)


@torch.no_grad()
def ogm_ge_modulate(
    model: FusionModel,
    output: ModelOutput,
    target: Tensor,
    alpha: float = 0.5,
    *,
    present: Tensor | None = None,
    noise: bool = True,
) -> dict[str, float]:
    """OGM-GE (Peng et al., CVPR 2022): slow down the modality that is ahead, then add gradient noise.

    Call after loss.backward() and before optimizer.step(). A modality's score is the mean softmax
    probability of the true class under its unimodal logits (for float targets exp(-|error|), our
    extension); its ratio is its score over the mean of the others' (the paper's ratio when M = 2). Its
    branch's gradients are multiplied by 1 - tanh(alpha * relu(ratio - 1)) and, as in the authors' code,
    every branch then gets Gaussian noise with its gradient's std. Returns the coefficients, for logging.
    """
    mods = model.modalities
    if len(mods) < 2:
        raise ValueError("OGM-GE compares modalities: it needs at least two")
    if present is None:
        present = torch.ones(target.shape[0], len(mods), dtype=torch.bool, device=target.device)
    scores = []
    for i, m in enumerate(mods):
        logits = output.unimodal_logits[m].detach()
        if target.is_floating_point():
            right = torch.exp(-(logits.squeeze(-1) - target).abs())
        else:
            right = logits.softmax(-1).gather(1, target.unsqueeze(1)).squeeze(1)
        keep = present[:, i].to(right.dtype)  # a missing modality's samples say nothing about it
        scores.append((right * keep).sum() / keep.sum().clamp_min(1))
    scores = torch.stack(scores)
    others = (scores.sum() - scores) / (len(mods) - 1)
    coefficients = 1 - torch.tanh(alpha * F.relu(scores / others.clamp_min(1e-8) - 1))
    for m, k in zip(mods, coefficients):
        for p in model.modality_parameters(m):
            if p.grad is None:
                continue
            std = p.grad.std() if p.grad.numel() > 1 else 0.0
            p.grad.mul_(k)
            if noise:
                p.grad.add_(torch.randn_like(p.grad) * (std + 1e-8))
    return dict(zip(mods, coefficients.tolist()))
