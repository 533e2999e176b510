"""The "reliability" calibration variant (RESEARCH.md section 2): ContextualCalibration's plug-in shape and
output, and the identity when attached, but the modalities are compared in a space they share (their class
evidence) and the instance scale is supervised by how right each modality's evidence is.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from trainers.calibration import Calibrated, dimension_scales, group_units, masked_mean, real_steps

SCALE_LOSSES = ("rank", "tcp")


def reliability_cues(evidence: Tensor, active: Tensor) -> Tensor:
    """[B, M, 6] cues of each modality's reliability, from its evidence [B, M, C] (class logits) or
    [B, M, 2] (regression: mean and log-variance) and which modalities are active [B, M].

    Own cues: confidence, uncertainty and magnitude of the evidence (max p, normalised entropy,
    logsumexp(z) / 10; regression: 1 / (1 + var), log var / 10, mean / 10). Cues against the others, all
    symmetric in the other modalities, so that the cues do not depend on their order:
      support       mean agreement of m with each other active modality;
      others-agree  mean agreement within the pairs of the other active modalities;
      conflict      others-agree * (1 - support): the others agree with each other, not with m.
    Agreement is p_m . p_n, or for regression the overlap exp(-(mu_m - mu_n)^2 / (2 (var_m + var_n))),
    both in [0, 1]. Absent partners give 0 support and 0 others-agree."""
    if evidence.shape[-1] == 2:  # regression
        mean, log_var = evidence.unbind(-1)
        var = log_var.exp()
        gap = (mean.unsqueeze(2) - mean.unsqueeze(1)) ** 2
        agree = torch.exp(-gap / (2 * (var.unsqueeze(2) + var.unsqueeze(1))))
        own = [1 / (1 + var), log_var / 10, mean / 10]
    else:
        p = evidence.softmax(-1)
        agree = p @ p.transpose(1, 2)  # [B, M, M]
        entropy = -(p * p.clamp_min(1e-12).log()).sum(-1) / math.log(p.shape[-1])
        own = [p.amax(-1), entropy, evidence.logsumexp(-1) / 10]
    act = active.to(agree.dtype)
    m = active.shape[1]
    eye = torch.eye(m, dtype=torch.bool, device=active.device)
    partner = act.unsqueeze(1) * (~eye).to(act.dtype)  # [B, M, M]: n is an active other of m
    support = (partner * agree).sum(-1) / partner.sum(-1).clamp_min(1)
    # pairs[m, n, k]: n and k are two different modalities, neither of them m
    pairs = ~(eye.unsqueeze(0) | eye.unsqueeze(1) | eye.unsqueeze(2))  # [M, M, M]
    weight = pairs.to(act.dtype) * act[:, None, :, None] * act[:, None, None, :]  # [B, M, M, M]
    others_agree = (weight * agree.unsqueeze(1)).sum((-1, -2)) / weight.sum((-1, -2)).clamp_min(1)
    conflict = others_agree * (1 - support)
    return torch.stack([*own, support, others_agree, conflict], -1)


class ReliabilityCalibration(nn.Module):
    """The "reliability" variant (RESEARCH.md section 2): the same plug-in shape and output as
    ContextualCalibration, and the identity when attached, but

    - each modality gets an evidence head on its time mean (LayerNorm -> Linear -> GELU -> Dropout ->
      Linear to the class logits; regression: a mean and a log-variance), trained on the label;
    - the cues compare modalities in the space they share, their detached class probabilities
      (reliability_cues), where the paper's cues compared unaligned summary units;
    - one scale network for all modalities reads the cues and a one-hot of the modality and gives the
      instance scale g = 2 sigmoid(a) and the dimension-wise codes (as in "paper"); its last layer starts
      at zero;
    - loss(): the evidence heads' loss, plus a supervision of the instance scale by how much each
      modality's evidence trusts the true label (t = p(true class), regression exp(-|mu - y|)):
      "rank" (within a modality, a sample and its neighbour in the batch: the one with the larger t must
      get the larger g, by a margin |t_i - t_j|) or "tcp" (BCE of sigmoid(a) against t).
    Without the supervision the scale drifts into a global gain (RESEARCH.md section 1).
    """

    variant = "reliability"

    def __init__(
        self,
        dims: dict[str, int],
        num_outputs: int,
        *,
        width: int = 16,
        evidence_hidden: int = 64,
        scale_hidden: int = 32,
        dropout: float = 0.1,
        shift: bool = False,
        scale_loss: str = "rank",
        evidence_weight: float = 1.0,
        scale_weight: float = 1.0,
    ):
        super().__init__()
        if len(dims) < 2:
            raise ValueError(f"calibration needs at least two modalities, got {sorted(dims)}")
        if scale_loss not in SCALE_LOSSES:
            raise ValueError(f"unknown scale loss {scale_loss!r}; choose from {SCALE_LOSSES}")
        self.modalities = sorted(dims)
        self.dims = {m: dims[m] for m in self.modalities}
        self.width, self.shift, self.scale_loss = width, shift, scale_loss
        self.evidence_weight, self.scale_weight = evidence_weight, scale_weight
        self.regression = num_outputs == 1  # a float target: the evidence is a mean and a log-variance
        evidence_out = 2 if self.regression else num_outputs
        self.evidence_heads = nn.ModuleDict(
            {
                m: nn.Sequential(
                    nn.LayerNorm(d),
                    nn.Linear(d, evidence_hidden),
                    nn.GELU(),
                    nn.Dropout(dropout),
                    nn.Linear(evidence_hidden, evidence_out),
                )
                for m, d in self.dims.items()
            }
        )
        sizes = list(self.dims.values())
        self.register_buffer("unit", group_units(sizes, width), persistent=False)
        self.register_buffer("owner", torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes)), persistent=False)
        self.register_buffer("modality_code", torch.eye(len(sizes)), persistent=False)
        self.write = nn.Parameter(torch.ones(sum(sizes)))
        self.scale_in = nn.Linear(6 + len(sizes), scale_hidden)
        self.scale_out = nn.Linear(scale_hidden, 1 + width * (2 if shift else 1))
        nn.init.zeros_(self.scale_out.weight)  # g = r = 1 and shift = 0 at the start: the identity
        nn.init.zeros_(self.scale_out.bias)
        if shift:
            self.shift_write = nn.Parameter(torch.ones(sum(sizes)))

    def forward(
        self, features: dict[str, Tensor], mask: dict[str, Tensor] | None = None, present: Tensor | None = None
    ) -> Calibrated:
        mods = self.modalities
        seqs = real_steps(features, mask, present, mods)
        means = [masked_mean(x, real) for x, real in seqs.values()]
        active = torch.stack([real.any(1) for _, real in seqs.values()], 1)  # [B, M]
        evidence = torch.stack([self.evidence_heads[m](mean) for m, mean in zip(mods, means)], 1)
        cues = reliability_cues(evidence.detach(), active)
        which = self.modality_code.expand(cues.shape[0], -1, -1)
        out = self.scale_out(F.gelu(self.scale_in(torch.cat([cues, which], -1))))  # [B, M, 1 + H (+ H)]
        out = out.masked_fill(~active.unsqueeze(-1), 0.0)  # an inactive modality: g = r = 1, shift 0
        logits = out[..., 0]
        instance = 2 * torch.sigmoid(logits)
        dimension, scale, shift = dimension_scales(self, out, instance)
        inputs = {m: (x, real, features[m].shape) for m, (x, real) in seqs.items()}
        return Calibrated(
            self.dims,
            instance,
            dimension,
            scale,
            shift,
            torch.cat(means, 1),
            None,
            inputs,
            evidence=evidence,
            instance_logits=logits,
            active=active,
        )

    def loss(self, calibrated: Calibrated, target: Tensor) -> Tensor:
        """Evidence loss (cross-entropy, or Gaussian NLL) over the active (sample, modality) pairs, plus the
        scale supervision, each with its weight."""
        evidence, active = calibrated.evidence.float(), calibrated.active
        if self.regression:
            mean, log_var = evidence.unbind(-1)
            log_var = log_var.clamp(-10, 10)  # a head sure of a wrong answer would give an infinite loss
            error = mean - target.unsqueeze(1)
            per_pair = 0.5 * (log_var + error**2 * torch.exp(-log_var))
            trust = torch.exp(-error.abs()).detach()
        else:
            index = target.view(-1, 1, 1).expand(-1, evidence.shape[1], 1)
            per_pair = -evidence.log_softmax(-1).gather(-1, index).squeeze(-1)  # [B, M]
            trust = torch.exp(-per_pair).detach()  # the true class's probability
        weight = active.to(per_pair.dtype)
        evidence_loss = (per_pair * weight).sum() / weight.sum().clamp_min(1)
        if self.scale_loss == "rank":
            supervision = rank_loss(calibrated.instance.float(), trust, active)
        else:
            bce = F.binary_cross_entropy_with_logits(calibrated.instance_logits.float(), trust, reduction="none")
            supervision = (bce * weight).sum() / weight.sum().clamp_min(1)
        return self.evidence_weight * evidence_loss + self.scale_weight * supervision


def rank_loss(scale: Tensor, trust: Tensor, active: Tensor) -> Tensor:
    """Within each modality, each sample against its neighbour in the batch: the more trusted one must get
    the larger scale, by a margin of their difference in trust (a hinge; equal trust costs nothing).
    scale, trust [B, M]; pairs where either side is inactive do not count."""
    gap = trust - trust.roll(-1, 0)
    hinge = F.relu(-torch.sign(gap) * (scale - scale.roll(-1, 0)) + gap.abs())
    both = (active & active.roll(-1, 0)).to(hinge.dtype)
    return (hinge * both).sum() / both.sum().clamp_min(1)
