"""Contextual calibration: before fusion, rescale each modality's features by how they relate to the others.

Our reading of "Before Fusion, Ask What to Keep" (see ARCHITECTURE.md), for modalities m = 1..M:
  s_m = masked mean of X_m over time;  u_m = LayerNorm(W_m s_m) in a shared width H
  c_m = mean of u_n over the other *present* modalities (zero when there is none)
  cues = [u_m, c_m, u_m * c_m (support), |u_m - c_m| (conflict), cos(u_m, c_m) (agreement)]
  a small MLP on the cues -> g_m (one per sample), r_m (D_m numbers), both 2*sigmoid(.), optional shift
  X'_m = X_m * g_m * r_m (+ shift), broadcast over time.
The layers that produce g, r and the shift start at zero, so the module is exactly the identity when attached.

W_m is block-diagonal: the D_m dims are cut into H contiguous groups (log-mel bands, pixel rows, slices of
a text embedding), each group read by learned per-dim weights into one of the H summary units. r_m is
written back the same way (per-dim weight times its group's code). That costs two numbers per feature
dim instead of 2*H, which keeps the module under 5% of even the late-fusion MLP, whose first layer alone
costs `hidden` numbers per dim.

Padded steps and missing modalities are passed through unchanged. Variants: "paper" is exactly the above;
"aux" adds a linear head on each u_m whose loss (added by the model) makes the summaries, and so the
cues, carry label information.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

VARIANTS = ("paper", "aux")


def masked_mean(x: Tensor, valid: Tensor) -> Tensor:
    """Mean of x [B, T, D] over the valid steps [B, T]; a row with no valid step gives zeros."""
    total = x.masked_fill(~valid.unsqueeze(-1), 0.0).sum(1)
    return total / valid.sum(1, keepdim=True).clamp_min(1).to(x.dtype)


def as_sequence(x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Pooled [B, D] becomes one step [B, 1, D]; a missing mask means every step is real."""
    if x.dim() == 2:
        x = x.unsqueeze(1)
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    return x, mask


@dataclass
class Calibrated:
    features: dict[str, Tensor]             # same shapes as the input
    scales: dict                            # {"instance": [B, M], "dimension": {m: [B, D_m]}}; 1 where not applied
    aux_logits: dict[str, Tensor] | None    # "aux" variant: {m: [B, num_outputs]} from the summaries


class ContextualCalibration(nn.Module):
    def __init__(self, dims: dict[str, int], width: int = 16, cue_hidden: int = 16, shift: bool = False,
                 variant: str = "paper", num_outputs: int | None = None):
        super().__init__()
        if len(dims) < 2:
            raise ValueError(f"calibration needs at least two modalities, got {sorted(dims)}")
        if variant not in VARIANTS:
            raise ValueError(f"unknown calibration variant {variant!r}; choose from {VARIANTS}")
        if variant == "aux" and num_outputs is None:
            raise ValueError("the 'aux' calibration variant needs num_outputs for its unimodal heads")
        self.modalities = sorted(dims)
        self.dims, self.width, self.shift, self.variant = dict(dims), width, shift, variant
        for m in self.modalities:  # which summary unit each feature dim belongs to (contiguous groups)
            self.register_buffer(f"group_{m}", torch.arange(dims[m]) * width // dims[m], persistent=False)
        self.read = nn.ParameterDict({m: nn.Parameter(self._read_init(m)) for m in self.modalities})
        self.norm = nn.ModuleDict({m: nn.LayerNorm(width) for m in self.modalities})
        self.write = nn.ParameterDict({m: nn.Parameter(torch.ones(dims[m])) for m in self.modalities})
        # One cue MLP for all modalities; a per-modality embedding lets it treat them differently.
        self.cue_in = nn.Linear(4 * width + 1, cue_hidden)
        self.modality_embedding = nn.Parameter(torch.zeros(len(self.modalities), cue_hidden))
        self.cue_out = nn.Linear(cue_hidden, 1 + width * (2 if shift else 1))
        nn.init.zeros_(self.cue_out.weight)  # g = r = 1 and shift = 0 at the start: the identity
        nn.init.zeros_(self.cue_out.bias)
        if shift:
            self.shift_write = nn.ParameterDict({m: nn.Parameter(torch.ones(dims[m])) for m in self.modalities})
        if variant == "aux":
            self.aux_heads = nn.ModuleDict({m: nn.Linear(width, num_outputs) for m in self.modalities})

    def _read_init(self, m: str) -> Tensor:
        group_size = self.dims[m] / self.width  # like a Linear layer's fan-in scaling, per group
        return torch.randn(self.dims[m]) / max(group_size, 1.0) ** 0.5

    def _group(self, m: str) -> Tensor:
        return getattr(self, f"group_{m}")

    def summarise(self, m: str, x: Tensor, valid: Tensor) -> Tensor:
        """u_m [B, H]: masked time mean, block-diagonal projection, LayerNorm."""
        s = masked_mean(x, valid) * self.read[m]
        grouped = s.new_zeros(s.shape[0], self.width).index_add_(1, self._group(m), s)
        return self.norm[m](grouped)

    def forward(self, features: dict[str, Tensor], mask: dict[str, Tensor] | None = None,
                present: Tensor | None = None) -> Calibrated:
        mods = self.modalities
        batch = features[mods[0]].shape[0]
        device = features[mods[0]].device
        if present is None:
            present = torch.ones(batch, len(mods), dtype=torch.bool, device=device)
        seqs = {m: as_sequence(features[m], (mask or {}).get(m)) for m in mods}
        u = torch.stack([self.summarise(m, x, valid) for m, (x, valid) in seqs.items()], 1)  # [B, M, H]

        # Context of m: mean of the other present modalities' summaries (a missing one gets weight 0).
        others = present.unsqueeze(1) & ~torch.eye(len(mods), dtype=torch.bool, device=device)  # [B, M, M]
        weights = others.to(u.dtype) / others.sum(-1, keepdim=True).clamp_min(1).to(u.dtype)
        c = weights @ u
        agreement = F.cosine_similarity(u, c, dim=-1, eps=1e-6).unsqueeze(-1)  # 0 when c is zero
        cues = torch.cat([u, c, u * c, (u - c).abs(), agreement], -1)
        out = self.cue_out(F.gelu(self.cue_in(cues) + self.modality_embedding))  # [B, M, 1 + H (+ H)]
        instance = torch.where(present, 2 * torch.sigmoid(out[..., 0]), 1.0)

        calibrated, dimension = {}, {}
        for i, m in enumerate(mods):
            group = self._group(m)
            r = 2 * torch.sigmoid(self.write[m] * out[:, i, 1:1 + self.width][:, group])  # [B, D_m]
            r = torch.where(present[:, i, None], r, 1.0)
            scale = (instance[:, i, None] * r).unsqueeze(1)  # [B, 1, D_m]: same for every step
            x, valid = seqs[m]
            new = x * scale
            if self.shift:
                new = new + (self.shift_write[m] * out[:, i, 1 + self.width:][:, group]).unsqueeze(1)
            new = torch.where((valid & present[:, i, None]).unsqueeze(-1), new, x)
            calibrated[m] = new.reshape(features[m].shape)
            dimension[m] = r
        aux = {m: self.aux_heads[m](u[:, i]) for i, m in enumerate(mods)} if self.variant == "aux" else None
        return Calibrated(calibrated, {"instance": instance, "dimension": dimension}, aux)
