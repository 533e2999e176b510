"""Fusion backbones: one branch per modality -> a [B, hidden] vector each -> concat -> MLP head.

Every backbone exposes the same three pieces so that the model can put calibration before it, a gate
between the branches and the head, and read unimodal logits off the head, without touching the backbone:
  encode(features, mask, present, calibrated=None) -> {m: [B, hidden]}   (a missing modality gives zeros)
  head: nn.Module                   [B, M * hidden] -> [B, num_outputs]
  modality_parameters(m)            the parameters of m's branch (for OGM-GE)
A step counts only where its mask is True and its modality is present, so padding and missing modalities
never leak into the result (as long as they hold finite numbers: masking multiplies by zero, several times
faster on CPU than filling a masked copy). Given `calibrated` (the calibration's output), a backbone
encodes X'_m instead of X_m and applies the per-sample scale and shift where that is cheapest: late fusion
on the pooled vector, the others on the real steps just before their first layer. There is no input
normalisation: a LayerNorm on X'_m would undo the calibration's instance scale (normalise the features in
the data pipeline instead).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from storage.registry import Registry
from trainers.calibration import Calibrated, masked_mean, real_steps

BACKBONES: Registry[type["Backbone"]] = Registry("backbone")


def mlp(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))


class Backbone(nn.Module):
    pools_first = False  # True: encode reads only each modality's mean over its real steps

    def __init__(self, dims: dict[str, int], num_outputs: int, hidden: int, dropout: float):
        super().__init__()
        self.modalities = sorted(dims)
        self.dims, self.hidden = dict(dims), hidden
        self.branches = nn.ModuleDict()
        self.head = mlp(len(dims) * hidden, hidden, num_outputs, dropout)

    def encode_sequences(
        self, seqs: dict[str, tuple[Tensor, Tensor]], calibrated: Calibrated | None
    ) -> dict[str, Tensor]:
        """{m: (x [B, T, D_m], real [B, T])} -> {m: [B, hidden]}."""
        raise NotImplementedError

    def encode(
        self,
        features: dict[str, Tensor],
        mask: dict[str, Tensor] | None,
        present: Tensor,
        calibrated: Calibrated | None = None,
    ) -> dict[str, Tensor]:
        if calibrated is None:
            seqs = real_steps(features, mask, present, self.modalities)
        else:  # the calibration has just made the same
            seqs = {m: (x, real) for m, (x, real, _) in calibrated.inputs.items()}
        vectors = self.encode_sequences(seqs, calibrated)
        return {m: vectors[m].masked_fill(~present[:, i, None], 0.0) for i, m in enumerate(self.modalities)}

    def modality_parameters(self, m: str) -> list[nn.Parameter]:
        return list(self.branches[m].parameters())


@BACKBONES.register("late")
class LateFusion(Backbone):
    """Pool each modality over time, then a per-modality MLP."""

    pools_first = True

    def __init__(self, dims, num_outputs, hidden=64, dropout=0.1):
        super().__init__(dims, num_outputs, hidden, dropout)
        for m in self.modalities:
            self.branches[m] = mlp(dims[m], hidden, hidden, dropout)

    def encode_sequences(self, seqs, calibrated):
        if calibrated is None:
            pooled = {m: masked_mean(x, real) for m, (x, real) in seqs.items()}
        else:  # the calibration took these means for its summaries: they come back scaled
            pooled = calibrated.pooled
        return {m: self.branches[m](pooled[m]) for m in seqs}


class TemporalConv(nn.Module):
    """Two same-length 1-D convolutions over time, then a masked mean. Padded steps are zero before each
    convolution (the caller zeroes them in the input), so they look exactly like the convolution's own zero
    padding: padding changes nothing."""

    def __init__(self, dim: int, hidden: int, kernel: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv1d(dim, hidden, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """x [B, T, D] with its padded steps zero."""
        keep = valid.unsqueeze(1).to(x.dtype)  # [B, 1, T]
        h = self.dropout(F.gelu(self.conv1(x.transpose(1, 2)))) * keep
        h = F.gelu(self.conv2(h))
        return masked_mean(h.transpose(1, 2), valid)


@BACKBONES.register("conv")
class ConvFusion(Backbone):
    def __init__(self, dims, num_outputs, hidden=64, dropout=0.1, kernel=3):
        super().__init__(dims, num_outputs, hidden, dropout)
        if kernel % 2 == 0:
            raise ValueError(f"kernel must be odd to keep the sequence length, got {kernel}")
        for m in self.modalities:
            self.branches[m] = TemporalConv(dims[m], hidden, kernel, dropout)

    def encode_sequences(self, seqs, calibrated):
        vectors = {}
        for m, (x, real) in seqs.items():
            x = x * real.unsqueeze(-1).to(x.dtype)
            if calibrated is not None:
                x = calibrated.apply(m, x, real)  # zeroed padding stays zero
            vectors[m] = self.branches[m](x, real)
        return vectors


class AttentionLayer(nn.Module):
    """Pre-LN transformer layer: queries x attend to `source` (x itself for self-attention).

    A zero "null" key that is always valid is prepended to the source, so a query with nothing to attend
    to (no other modality present, or an empty sequence) gets a finite output instead of NaN."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.norm_query, self.norm_source, self.norm_ff = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ff = mlp(width, 2 * width, width, dropout)

    def forward(self, x: Tensor, source: Tensor, source_valid: Tensor) -> Tensor:
        source = self.norm_source(source)
        source = torch.cat([source.new_zeros(source.shape[0], 1, source.shape[2]), source], 1)
        valid = torch.cat([source_valid.new_ones(source_valid.shape[0], 1), source_valid], 1)
        x = x + self.attention(self.norm_query(x), source, source, key_padding_mask=~valid, need_weights=False)[0]
        return x + self.ff(self.norm_ff(x))


def sinusoidal_positions(length: int, width: int, device) -> Tensor:
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, width, 2, device=device) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width, device=device)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: width // 2])
    return table


class MulTBranch(nn.Module):
    def __init__(self, dim: int, width: int, heads: int, layers: int, cross_layers: int, dropout: float):
        super().__init__()
        self.project = nn.Conv1d(dim, width, kernel_size=1)
        self.cross = nn.ModuleList(AttentionLayer(width, heads, dropout) for _ in range(cross_layers))
        self.self_attention = nn.ModuleList(AttentionLayer(width, heads, dropout) for _ in range(layers))

    def embed(self, x: Tensor) -> Tensor:
        h = self.project(x.transpose(1, 2)).transpose(1, 2)
        return h + sinusoidal_positions(h.shape[1], h.shape[2], h.device)


@BACKBONES.register("mult")
class MulTFusion(Backbone):
    """MulT-style (Tsai et al. 2019), kept small. Each modality's projected sequence attends to the
    concatenated sequences of all the other modalities (one cross-modal block per target instead of MulT's
    one per pair, so it works for any M and a missing modality is just masked keys), then to itself;
    masked mean over time. With a single modality there is nothing to cross-attend to: self-attention only."""

    def __init__(self, dims, num_outputs, hidden=64, dropout=0.1, heads=4, layers=1):
        super().__init__(dims, num_outputs, hidden, dropout)
        cross_layers = layers if len(dims) > 1 else 0
        for m in self.modalities:
            self.branches[m] = MulTBranch(dims[m], hidden, heads, layers, cross_layers, dropout)

    def encode_sequences(self, seqs, calibrated):
        # Padded steps are never attended to nor pooled, so scaling them too changes nothing.
        embedded = {
            m: self.branches[m].embed(x if calibrated is None else calibrated.apply(m, x, real))
            for m, (x, real) in seqs.items()
        }
        vectors = {}
        for m, (_, valid) in seqs.items():
            h = embedded[m]
            others = [n for n in self.modalities if n != m]
            if others:
                source = torch.cat([embedded[n] for n in others], 1)
                source_valid = torch.cat([seqs[n][1] for n in others], 1)
                for layer in self.branches[m].cross:
                    h = layer(h, source, source_valid)
            for layer in self.branches[m].self_attention:
                h = layer(h, h, valid)
            vectors[m] = masked_mean(h, valid)
        return vectors
