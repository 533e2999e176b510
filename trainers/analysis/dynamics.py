"""Training dynamics: per-epoch losses from metrics.json's history, and per-epoch statistics of the model.

`epoch_statistics(model, batches)` is meant to be called by the training loop at the end of every epoch
(its result goes into that epoch's history entry under "statistics"); it measures on the batches given
(the validation split), in eval mode, without touching the model's parameters or their .grad:
  probe          each modality's unimodal logits (the head on its block of the fused vector alone) scored
                 against the target: accuracy, or MAE for float targets, over the samples where it is present
  grad_norm      L2 norm of the gradient of the batch's mean loss w.r.t. the modality's branch, averaged
                 over batches (weighted by batch size)
  instance_scale / dimension_scale   mean and std of g_m and of r_m over present samples (calibration only)
"""

from __future__ import annotations

import torch

from trainers.batches import to_device
from trainers.models import FusionModel, per_sample_loss


def _mean_std(values: list[torch.Tensor]) -> dict[str, float] | None:
    if not values:
        return None
    flat = torch.cat([v.reshape(-1) for v in values]).double()
    return {"mean": float(flat.mean()), "std": float(flat.std()) if flat.numel() > 1 else 0.0}


def epoch_statistics(model: FusionModel, batches, device: torch.device | str | None = None) -> dict:
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    mods = model.modalities
    branches = {m: [p for p in model.modality_parameters(m) if p.requires_grad] for m in mods}
    probe_sum = dict.fromkeys(mods, 0.0)
    probe_count = dict.fromkeys(mods, 0)
    grad_sum, samples = dict.fromkeys(mods, 0.0), 0
    instance, dimension = {m: [] for m in mods}, {m: [] for m in mods}
    regression = False
    try:
        for batch in batches:
            batch = to_device(batch, device)
            target, present, n = batch["target"], batch["present"], len(batch["sample_id"])
            regression = target.is_floating_point()
            with torch.enable_grad():
                output = model(batch)
                loss = per_sample_loss(output.logits.float(), target).mean()
                params = [p for m in mods for p in branches[m]]
                grads = iter(torch.autograd.grad(loss, params, allow_unused=True))
            for m in mods:
                squares = [g.double().pow(2).sum() for g in (next(grads) for _ in branches[m]) if g is not None]
                grad_sum[m] += float(torch.stack(squares).sum().sqrt()) * n if squares else 0.0
            samples += n
            for i, m in enumerate(mods):
                keep = present[:, i]
                logits = output.unimodal_logits[m].detach()[keep]
                if regression:
                    probe_sum[m] += float((logits.squeeze(-1) - target[keep]).abs().sum())
                else:
                    probe_sum[m] += float((logits.argmax(-1) == target[keep]).sum())
                probe_count[m] += int(keep.sum())
                if output.scales is not None:
                    instance[m].append(output.scales["instance"][keep, i].detach().cpu())
                    dimension[m].append(output.scales["dimension"][m][keep].detach().cpu())
    finally:
        model.train(was_training)
    stats = {
        "probe_metric": "mae" if regression else "accuracy",
        "probe": {m: probe_sum[m] / probe_count[m] if probe_count[m] else None for m in mods},
        "grad_norm": {m: grad_sum[m] / max(samples, 1) for m in mods},
    }
    if any(instance.values()):
        stats["instance_scale"] = {m: _mean_std(instance[m]) for m in mods}
        stats["dimension_scale"] = {m: _mean_std(dimension[m]) for m in mods}
    return stats


def dynamics_section(history: list[dict]) -> dict:
    """Per-epoch series from a run's history: losses, the validation metric, and the epoch statistics
    wherever the loop recorded them (None for epochs without)."""
    epochs = [h["epoch"] for h in history]
    series = {
        "epoch": epochs,
        "train_loss": [h.get("train_loss") for h in history],
        "valid_loss": [h.get("valid_loss") for h in history],
        "valid_metric": [h.get("valid_metric") for h in history],
    }
    stats = [h.get("statistics") for h in history]
    recorded = any(s is not None for s in stats)
    if recorded:
        series["statistics"] = stats
    return {"series": series, "statistics_recorded": recorded}
