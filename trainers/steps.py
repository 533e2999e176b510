"""Optimiser steps, a training epoch, and predictions with their scores."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from trainers.augment import corrupt
from trainers.batches import to_device
from trainers.config import TrainConfig
from trainers.metrics import classification_metrics, regression_metrics
from trainers.models import METHODS, ogm_ge_modulate, per_sample_loss
from trainers.runtime import Runtime, autocast


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, with the fused kernel where torch has one (CPU, CUDA): one op per step instead of a dozen per
    parameter, which on small models is a good part of the step."""
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=fused or None)


def average_gradients(model: torch.nn.Module, world_size: int) -> None:
    """Average the gradients over ranks in one all-reduce (where DDP's own reduction was skipped).
    A parameter without a gradient on every rank keeps none, so the optimiser skips it as it would alone."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype, device=grads[0].device)
    flat = torch.cat([g.reshape(-1) for g in grads] + [has_grad])
    dist.all_reduce(flat)
    chunks = flat.split([g.numel() for g in grads] + [len(params)])
    for p, chunk, anywhere in zip(params, chunks, chunks[-1].tolist()):
        if anywhere:
            p.grad = (chunk / world_size).view_as(p)


def train_step(
    model: torch.nn.Module,
    batch: dict,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    rt: Runtime,
    amp: bool,
    noise_std: dict | None = None,
) -> torch.Tensor:
    """One optimiser step; returns the (detached) mean loss of the batch. With `config.augment`, the batch is
    corrupted first (noise_std: the training split's per-dim std, see trainers/augment.py)."""
    raw = model.module if isinstance(model, DistributedDataParallel) else model
    if config.augment is not None:
        batch = corrupt(batch, config.augment, noise_std, raw.modalities)
    # OGM-GE rescales each branch's gradient from this rank's own outputs: under DDP the gradients are
    # modulated locally first and averaged after, so every rank still takes the same step. DDP decides
    # at forward time whether backward reduces, so no_sync covers the forward too.
    modulates = METHODS.get(config.method).modulates_gradients
    modulate_locally = modulates and rt.distributed
    with model.no_sync() if modulate_locally else contextlib.nullcontext():
        with autocast(rt.device, amp):
            output = model(batch)
        loss = per_sample_loss(output.logits.float(), batch["target"]).mean()
        if output.aux_loss is not None:
            loss = loss + output.aux_loss.float()
        if config.branch_unimodal_weight:
            loss = loss + config.branch_unimodal_weight * branch_loss(output, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
    if modulates:
        ogm_ge_modulate(raw, output, batch["target"], config.ogm_alpha, present=batch["present"])
        if modulate_locally:
            average_gradients(raw, rt.world_size)
    optimizer.step()
    return loss.detach()


def branch_loss(output, batch: dict) -> torch.Tensor:
    """Mean loss of each branch's own logits (the head on its block alone) over the present (sample,
    modality) pairs: `branch_unimodal_weight` asks every branch to be useful on its own."""
    losses = torch.stack(
        [per_sample_loss(logits.float(), batch["target"]) for logits in output.unimodal_logits.values()], 1
    )
    weight = batch["present"].to(losses.dtype)
    return (losses * weight).sum() / weight.sum().clamp_min(1)


class NonFiniteLoss(RuntimeError):
    pass


def check_loss(loss: torch.Tensor | float, where: str, sample_ids: list[str] | None = None) -> None:
    """Stop at a NaN or infinite loss: every later step would learn from it, and the run would still end
    'fine', at chance accuracy."""
    value = float(loss)
    if math.isfinite(value):
        return
    batch = (
        f" on the batch of samples {', '.join(sample_ids[:16])}{' ...' if len(sample_ids) > 16 else ''}"
        if sample_ids
        else ""
    )
    raise NonFiniteLoss(
        f"{where} is {value}{batch}; training stopped. NaN or infinite features or targets "
        "make a loss non-finite (`precal verify` checks the store and packs), as can too high a "
        "learning rate"
    )


def train_epoch(
    model,
    batches,
    optimizer,
    config: TrainConfig,
    rt: Runtime,
    amp: bool,
    desc: str = "train",
    noise_std: dict | None = None,
) -> dict:
    """Returns {"train_loss": mean over all ranks' samples, "train_batches": [per rank]}."""
    model.train()
    loss_sum = torch.zeros((), device=rt.device)
    samples = steps = 0
    for batch in tqdm(batches, desc=desc, unit="batch", leave=False, disable=not rt.is_main):
        batch = to_device(batch, rt.device)
        n = len(batch["sample_id"])
        loss = train_step(model, batch, optimizer, config, rt, amp, noise_std)
        check_loss(loss, f"{desc}: the training loss", batch["sample_id"])
        loss_sum += loss * n
        samples, steps = samples + n, steps + 1
    totals = torch.stack([loss_sum.double(), torch.tensor(float(samples), dtype=torch.float64, device=rt.device)])
    per_rank = torch.tensor([steps], device=rt.device)
    if rt.distributed:
        dist.all_reduce(totals)
        gathered = [torch.zeros_like(per_rank) for _ in range(rt.world_size)]
        dist.all_gather(gathered, per_rank)
        per_rank = torch.cat(gathered)
    return {"train_loss": float(totals[0] / totals[1].clamp_min(1)), "train_batches": per_rank.tolist()}


@torch.no_grad()
def predict(model: torch.nn.Module, batches, device: torch.device, amp: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs [N, num_outputs] float32, targets [N]) on the CPU, in the loader's order."""
    model.eval()
    outputs, targets = [], []
    for batch in batches:
        batch = to_device(batch, device)
        with autocast(device, amp):
            logits = model(batch).logits
        outputs.append(logits.float().cpu())
        targets.append(batch["target"].cpu())
    return torch.cat(outputs), torch.cat(targets)


def score(outputs: torch.Tensor, targets: torch.Tensor, task: str) -> dict[str, float]:
    loss = float(per_sample_loss(outputs, targets).mean())
    if task == "classification":
        return {**classification_metrics(outputs, targets), "loss": loss}
    return {**regression_metrics(outputs.squeeze(-1), targets), "loss": loss}
