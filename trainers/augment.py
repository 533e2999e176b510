"""Corruption augmentation: in a share of each training batch, one modality of a sample is corrupted.

Two kinds, drawn per corrupted sample:
- "swap": the modality's features (and mask) come from another sample of the batch with a different label,
  a synthetic conflict (regression: any other sample);
- "noise": Gaussian noise on its real steps, at a level drawn from `noise_levels`, times the training
  split's per-dimension standard deviation (`feature_std`).
The label stays the sample's own, so the model learns to fuse around a modality that lies. Only present
modalities are corrupted. The draws use torch's global generator, which the training loop reseeds every
epoch, so a resumed run corrupts exactly as an uninterrupted one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trainers.config import Augment


@torch.no_grad()
def feature_std(batches, modalities: list[str]) -> dict[str, Tensor]:
    """Per-dimension std of each modality over the real steps of every batch (as the backbone sees them:
    time means for late fusion, steps otherwise)."""
    total: dict[str, list] = {m: [0.0, 0.0, 0.0] for m in modalities}  # count, sum, sum of squares
    for batch in batches:
        for m in modalities:
            x = batch["features"][m].float()
            real = (batch["mask"][m] & batch["present"][:, modalities.index(m), None]).unsqueeze(-1).to(x.dtype)
            count, first, second = total[m]
            total[m] = [count + real.sum(), first + (x * real).sum((0, 1)), second + (x * x * real).sum((0, 1))]
    std = {}
    for m, (count, first, second) in total.items():
        count = max(float(count), 1.0)
        mean = first / count
        std[m] = (second / count - mean**2).clamp_min(0).sqrt()
    return std


def corrupt(batch: dict, options: Augment, std: dict[str, Tensor], modalities: list[str]) -> dict:
    """A copy of the batch with one present modality corrupted in `options.share` of its samples."""
    present, target = batch["present"], batch["target"]
    n = present.shape[0]
    chosen = (torch.rand(n) < options.share).to(present.device) & present.any(1)
    if n < 2 or not chosen.any():
        return batch
    # One present modality per chosen sample, uniformly: random scores, absent ones never win.
    modality = torch.where(present, torch.rand(present.shape).to(present.device), -1.0).argmax(1)
    is_swap = torch.tensor([k == "swap" for k in options.kinds])[torch.randint(len(options.kinds), (n,))]
    swap, noise = chosen & is_swap.to(chosen.device), chosen & ~is_swap.to(chosen.device)
    partner = swap_partners(target)
    features, mask = dict(batch["features"]), dict(batch["mask"])
    for i, m in enumerate(modalities):
        x, valid = features[m], mask[m]
        swapped = swap & (modality == i) & present[partner, i]  # the partner must have it to give
        noisy = noise & (modality == i)
        if swapped.any():
            x, valid = x.clone(), valid.clone()
            x[swapped], valid[swapped] = x[partner[swapped]], valid[partner[swapped]]
        if noisy.any():
            levels = torch.tensor(options.noise_levels)[torch.randint(len(options.noise_levels), (n,))].to(x.device)
            amount = (noisy.to(x.dtype) * levels)[:, None, None] * valid.unsqueeze(-1).to(x.dtype)
            x = x + amount * std[m].to(x.device) * torch.randn(x.shape).to(x.device)
        features[m], mask[m] = x, valid
    return {**batch, "features": features, "mask": mask}


def swap_partners(target: Tensor) -> Tensor:
    """For each sample, another sample of the batch, with a different label where the batch has one."""
    n = target.shape[0]
    scores = torch.rand(n, n).to(target.device)
    if target.is_floating_point():
        allowed = ~torch.eye(n, dtype=torch.bool, device=target.device)
    else:
        allowed = target.unsqueeze(0) != target.unsqueeze(1)
        allowed |= ~allowed.any(1, keepdim=True) & ~torch.eye(n, dtype=torch.bool, device=target.device)
    return torch.where(allowed, scores, -1.0).argmax(1)
