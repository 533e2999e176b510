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

Padded steps and missing modalities are passed through unchanged (a missing modality is not even read).
Variants: "paper" is exactly the above; "aux" adds a linear head on each u_m whose loss (added by the model)
makes the summaries, and so the cues, carry label information. "reliability" (RESEARCH.md section 2,
trainers/reliability.py) compares the modalities in a space they share, their class evidence, and
supervises the instance scale with how right each modality's evidence is.

The scale and shift are constant over time, so the module does not write X'_m: it returns them, and a backbone
applies them where it is cheapest (late fusion on the pooled vector, mean(X'_m) = mean(X_m) * scale + shift,
from the mean the summary already took). `Calibrated.features` gives X'_m itself, computed on first use.
"""

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


def masked_mean(x: Tensor, valid: Tensor) -> Tensor:
    """Mean of x [B, T, D] over the valid steps [B, T]; a row with no valid step gives zeros. One batched
    matmul with the 0/1 weights (several times faster than filling a masked copy), so the other steps must
    hold finite numbers (collate pads with zeros)."""
    weights = valid.to(x.dtype).unsqueeze(1)  # [B, 1, T]
    return torch.bmm(weights, x).squeeze(1) / weights.sum(-1).clamp_min(1)


def as_sequence(x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Pooled [B, D] becomes one step [B, 1, D]; a missing mask means every step is real."""
    if x.dim() == 2:
        x = x.unsqueeze(1)
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    return x, mask


def real_steps(
    features: dict[str, Tensor], mask: dict[str, Tensor] | None, present: Tensor | None, modalities: list[str]
) -> dict[str, tuple[Tensor, Tensor]]:
    """{m: (x [B, T, D_m], real [B, T])}: a step is real where its mask is True and its modality present
    (no `present`: every modality is)."""
    if present is None:
        first = features[modalities[0]]
        present = torch.ones(first.shape[0], len(modalities), dtype=torch.bool, device=first.device)
    seqs = {}
    for i, m in enumerate(modalities):
        x, valid = as_sequence(features[m], (mask or {}).get(m))
        seqs[m] = (x, valid & present[:, i, None])
    return seqs


def dimension_scales(module: nn.Module, out: Tensor, instance: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """From the per-modality codes `out` [B, M, 1 + H (+ H)] and the instance scales [B, M]: the dimension
    scale, the whole scale and the shift, each [B, sum D_m]; each feature dim takes its group's code."""
    code = out[..., 1 : 1 + module.width].flatten(1).index_select(1, module.unit)
    dimension = 2 * torch.sigmoid(module.write * code)
    scale = instance.index_select(1, module.owner) * dimension
    shift = None
    if module.shift:
        shift = module.shift_write * out[..., 1 + module.width :].flatten(1).index_select(1, module.unit)
    return dimension, scale, shift


def group_units(sizes: list[int], width: int) -> Tensor:
    """Each feature dim's group (modality i's dims are cut into `width` contiguous groups, i*width + k)."""
    return torch.cat([torch.arange(d) * width // d + i * width for i, d in enumerate(sizes)])


@dataclass
class Calibrated:
    """The module's output. Per-dim tensors are kept side by side ([B, sum D_m], sorted modalities) and split
    per modality on access, so that a backbone pays only for what it reads."""

    sizes: dict[str, int]  # {m: D_m}, in the side-by-side order
    instance: Tensor  # [B, M] g_m; 1 where a modality has no real step (missing)
    dimension: Tensor  # [B, sum D_m] r_m; 1 likewise
    scale_all: Tensor  # [B, sum D_m] g_m * r_m
    shift_all: Tensor | None  # [B, sum D_m]; 0 likewise; None when the module has no shift
    mean_all: Tensor  # [B, sum D_m] each input's mean over its real steps (0 if none)
    aux_logits: dict[str, Tensor] | None  # "aux" variant: {m: [B, num_outputs]} from the summaries
    inputs: dict[str, tuple[Tensor, Tensor, torch.Size]]  # {m: (x [B, T, D_m], real [B, T], shape as given)}
    # "reliability" variant: each modality's evidence [B, M, C] (regression: [B, M, 2], mean and log-variance),
    # the instance scale's logits a [B, M] (g = 2 sigmoid(a)) and which modalities took part [B, M].
    evidence: Tensor | None = None
    instance_logits: Tensor | None = None
    active: Tensor | None = None

    def split(self, x: Tensor) -> dict[str, Tensor]:
        return dict(zip(self.sizes, x.split(list(self.sizes.values()), -1)))

    @cached_property
    def scale(self) -> dict[str, Tensor]:
        return self.split(self.scale_all)

    @cached_property
    def shift(self) -> dict[str, Tensor] | None:
        return None if self.shift_all is None else self.split(self.shift_all)

    @property
    def scales(self) -> dict:
        """{"instance": [B, M], "dimension": {m: [B, D_m]}}; 1 where not applied."""
        return {"instance": self.instance, "dimension": self.split(self.dimension)}

    @property
    def pooled(self) -> dict[str, Tensor]:
        """The mean of X'_m over its real steps, without touching the sequence."""
        pooled = self.mean_all * self.scale_all
        return self.split(pooled if self.shift_all is None else pooled + self.shift_all)

    def apply(self, m: str, x: Tensor, real: Tensor) -> Tensor:
        """X'_m on the real steps of x [B, T, D_m]; a padded step is only scaled (a zero stays zero)."""
        x = x * self.scale[m].unsqueeze(1)
        if self.shift is not None:
            x = x + self.shift[m].unsqueeze(1) * real.unsqueeze(-1).to(x.dtype)
        return x

    @cached_property
    def features(self) -> dict[str, Tensor]:
        """X'_m with the shapes of the input: padded steps and missing modalities exactly as they came."""
        return {
            m: torch.where(real.unsqueeze(-1), self.apply(m, x, real), x).reshape(shape)
            for m, (x, real, shape) in self.inputs.items()
        }


class ContextualCalibration(nn.Module):
    def __init__(
        self,
        dims: dict[str, int],
        width: int = 16,
        cue_hidden: int = 16,
        shift: bool = False,
        variant: str = "paper",
        num_outputs: int | None = None,
    ):
        super().__init__()
        if len(dims) < 2:
            raise ValueError(f"calibration needs at least two modalities, got {sorted(dims)}")
        if variant not in ("paper", "aux"):
            raise ValueError(
                f"ContextualCalibration has the variants 'paper' and 'aux', not {variant!r}"
                " ('reliability' is ReliabilityCalibration)"
            )
        if variant == "aux" and num_outputs is None:
            raise ValueError("the 'aux' calibration variant needs num_outputs for its unimodal heads")
        self.modalities = sorted(dims)
        self.dims = {m: dims[m] for m in self.modalities}
        self.width, self.shift, self.variant = width, shift, variant
        sizes = list(self.dims.values())
        # The module is a few dozen ops on small tensors: their number, not their size, is its cost. So every
        # per-dim tensor holds all modalities side by side ([sum D_m], sorted modalities), and each step is
        # one op for all of them. Each dim's summary unit (modality i's H contiguous groups are units
        # i*H .. i*H + H-1) and its modality:
        self.register_buffer("unit", group_units(sizes, width), persistent=False)
        self.register_buffer("owner", torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes)), persistent=False)
        self.register_buffer("not_self", ~torch.eye(len(sizes), dtype=torch.bool), persistent=False)
        self.read = nn.Parameter(torch.cat([self._read_init(d) for d in sizes]))
        self.norm = nn.GroupNorm(len(sizes), len(sizes) * width)  # one group per modality: its own LayerNorm
        self.write = nn.Parameter(torch.ones(sum(sizes)))
        # One cue MLP for all modalities; a per-modality embedding lets it treat them differently.
        self.cue_in = nn.Linear(4 * width + 1, cue_hidden)
        self.modality_embedding = nn.Parameter(torch.zeros(len(sizes), cue_hidden))
        self.cue_out = nn.Linear(cue_hidden, 1 + width * (2 if shift else 1))
        nn.init.zeros_(self.cue_out.weight)  # g = r = 1 and shift = 0 at the start: the identity
        nn.init.zeros_(self.cue_out.bias)
        if shift:
            self.shift_write = nn.Parameter(torch.ones(sum(sizes)))
        if variant == "aux":
            self.aux_heads = nn.ModuleDict({m: nn.Linear(width, num_outputs) for m in self.modalities})

    def _read_init(self, dim: int) -> Tensor:
        group_size = dim / self.width  # like a Linear layer's fan-in scaling, per group
        return torch.randn(dim) / max(group_size, 1.0) ** 0.5

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Checkpoints written before the side-by-side layout hold one tensor per modality: join them."""
        for name, per_modality in (
            ("read", "read.{}"),
            ("write", "write.{}"),
            ("shift_write", "shift_write.{}"),
            ("norm.weight", "norm.{}.weight"),
            ("norm.bias", "norm.{}.bias"),
        ):
            old = [prefix + per_modality.format(m) for m in self.modalities]
            if all(key in state_dict for key in old):
                state_dict[prefix + name] = torch.cat([state_dict.pop(key) for key in old])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def summarise(self, mean: Tensor) -> Tensor:
        """u [B, M, H] from the time means [B, sum D_m]: block-diagonal projection, per-modality LayerNorm."""
        s = mean * self.read
        grouped = s.new_zeros(s.shape[0], len(self.modalities) * self.width).index_add_(1, self.unit, s)
        return self.norm(grouped).view(s.shape[0], len(self.modalities), self.width)

    def forward(
        self, features: dict[str, Tensor], mask: dict[str, Tensor] | None = None, present: Tensor | None = None
    ) -> Calibrated:
        mods = self.modalities
        seqs = real_steps(features, mask, present, mods)
        mean = torch.cat([masked_mean(x, real) for x, real in seqs.values()], 1)  # [B, sum D_m]
        u = self.summarise(mean)  # [B, M, H]
        # A modality takes part where it has a real step (present, and not all padding).
        active = torch.stack([real.any(1) for _, real in seqs.values()], 1)  # [B, M]

        # Context of m: mean of the other active modalities' summaries (an inactive one gets weight 0).
        others = (active.unsqueeze(1) & self.not_self).to(u.dtype)  # [B, M, M]
        c = (others / others.sum(-1, keepdim=True).clamp_min(1)) @ u
        agreement = F.cosine_similarity(u, c, dim=-1, eps=1e-6).unsqueeze(-1)  # 0 when c is zero
        cues = torch.cat([u, c, u * c, (u - c).abs(), agreement], -1)
        out = self.cue_out(F.gelu(self.cue_in(cues) + self.modality_embedding))  # [B, M, 1 + H (+ H)]
        # Zero codes where a modality is inactive: 2 * sigmoid(0) = 1 and shift 0, exactly.
        out = out.masked_fill(~active.unsqueeze(-1), 0.0)
        instance = 2 * torch.sigmoid(out[..., 0])  # [B, M]

        dimension, scale, shift = dimension_scales(self, out, instance)
        aux = {m: self.aux_heads[m](u[:, i]) for i, m in enumerate(mods)} if self.variant == "aux" else None
        inputs = {m: (x, real, features[m].shape) for m, (x, real) in seqs.items()}
        return Calibrated(self.dims, instance, dimension, scale, shift, mean, aux, inputs)
