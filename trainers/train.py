"""The training loop: AdamW on a pack's streamed shards, selection on valid, test at the selected epoch.

Run alone (`train(config)`) or under torchrun (`python -m torch.distributed.run --nproc_per_node N
-m trainers.train CONFIG`; gloo on CPU, nccl on GPU). Rank 0 evaluates, checkpoints and writes:
  <out>/checkpoints/epoch-NNN.pt   the last two epochs: model, optimizer, history, best so far, config
  <out>/best.pt                    the weights of the epoch with the best validation metric
  <out>/metrics.json               {"valid", "test", "best_epoch", "history", "config", ...}
A killed run started again with the same config resumes from its latest checkpoint and ends exactly
where an uninterrupted run would: every epoch reseeds all RNGs from (seed, epoch, rank) and reads a
data stream that depends on (seed, epoch) only (see trainers/data.py), so no RNG state needs saving.
Checkpoints hold plain state dicts and are loaded with weights_only=True.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import pickle
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from storage.packinfo import PackInfo, read_pack
from storage.shards import CorruptShard
from trainers.config import ConfigError, TrainConfig, load_train_config
from trainers.backbones import get_backbone
from trainers.analysis.dynamics import epoch_statistics
from trainers.augment import corrupt, feature_std
from trainers.data import (BatchSpec, CorruptSample, DamagedPack, TrainLoader, check_count, choose_modalities, eval_loader,
                           to_device)
from trainers.metrics import classification_metrics, json_safe, regression_metrics
from trainers.models import FusionModel, build_model, ogm_ge_modulate, per_sample_loss

# Fields that may change between a killed run and its resumption without changing what is trained.
RESUMABLE_CHANGES = {"epochs", "num_workers", "device", "amp", "out", "pack"}


# ---- processes and devices ----------------------------------------------------------------------

@dataclass
class Runtime:
    rank: int
    world_size: int
    device: torch.device
    owns_group: bool        # this call started the process group, so it ends it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    if choice == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(choice)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def start_runtime(device_choice: str) -> Runtime:
    """Join the torchrun process group when there is one (WORLD_SIZE > 1)."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = resolve_device(device_choice, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns_group = False
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owns_group = True
    if dist.is_initialized():
        return Runtime(dist.get_rank(), dist.get_world_size(), device, owns_group)
    return Runtime(0, 1, device, owns_group)


def barrier(rt: Runtime) -> None:
    if rt.distributed:
        dist.barrier()


@contextlib.contextmanager
def cpu_threads(device: torch.device, num_workers: int):
    """On CPU, leave one core per DataLoader worker. Intra-op threads that lose their core to a worker
    stall every op (8x slower steps measured on 2 cores with 2 workers). OMP_NUM_THREADS, when set
    (torchrun sets it), wins."""
    if device.type != "cpu" or num_workers == 0 or "OMP_NUM_THREADS" in os.environ:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, (os.cpu_count() or 1) - num_workers)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def seed_everything(*parts) -> None:
    seed = int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def use_amp(config: TrainConfig, device: torch.device) -> bool:
    return config.amp == "bf16" or (config.amp == "auto" and device.type == "cuda")


def autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


# ---- model, steps, evaluation ----------------------------------------------------------------------

def batch_spec(config: TrainConfig, info: PackInfo, modalities: list[str]) -> BatchSpec:
    """A backbone that reads only time means (late fusion) gets them from the loader's workers."""
    pooled = get_backbone(config.backbone).pools_first
    return BatchSpec.for_pack(info, modalities, config.max_len, pooled=pooled)


def make_model(config: TrainConfig, info: PackInfo, modalities: list[str]) -> FusionModel:
    torch.manual_seed(config.seed)  # the same initial weights on every rank and on resumption
    try:
        return build_model(config.backbone, {m: info.dims[m] for m in modalities}, info.num_outputs,
                           method=config.method, calibration=config.calibration, hidden=config.hidden,
                           dropout=config.dropout, **config.model_options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"cannot build the model (backbone, method, calibration, model_options): {err}") from err


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


def train_step(model: torch.nn.Module, batch: dict, optimizer: torch.optim.Optimizer, config: TrainConfig,
               rt: Runtime, amp: bool, noise_std: dict | None = None) -> torch.Tensor:
    """One optimiser step; returns the (detached) mean loss of the batch. With `config.augment`, the batch is
    corrupted first (noise_std: the training split's per-dim std, see trainers/augment.py)."""
    raw = model.module if isinstance(model, DistributedDataParallel) else model
    if config.augment is not None:
        batch = corrupt(batch, config.augment, noise_std, raw.modalities)
    # OGM-GE rescales each branch's gradient from this rank's own outputs: under DDP the gradients are
    # modulated locally first and averaged after, so every rank still takes the same step. DDP decides
    # at forward time whether backward reduces, so no_sync covers the forward too.
    modulate_locally = config.method == "ogm_ge" and rt.distributed
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
    if config.method == "ogm_ge":
        ogm_ge_modulate(raw, output, batch["target"], config.ogm_alpha, present=batch["present"])
        if modulate_locally:
            average_gradients(raw, rt.world_size)
    optimizer.step()
    return loss.detach()


def branch_loss(output, batch: dict) -> torch.Tensor:
    """Mean loss of each branch's own logits (the head on its block alone) over the present (sample,
    modality) pairs: `branch_unimodal_weight` asks every branch to be useful on its own."""
    losses = torch.stack([per_sample_loss(logits.float(), batch["target"]) for logits in output.unimodal_logits.values()], 1)
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
    batch = f" on the batch of samples {', '.join(sample_ids[:16])}{' ...' if len(sample_ids) > 16 else ''}" \
        if sample_ids else ""
    raise NonFiniteLoss(f"{where} is {value}{batch}; training stopped. NaN or infinite features or targets "
                        "make a loss non-finite (`precal verify` checks the store and packs), as can too high a "
                        "learning rate")


def train_epoch(model, batches, optimizer, config: TrainConfig, rt: Runtime, amp: bool,
                desc: str = "train", noise_std: dict | None = None) -> dict:
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


def selection_metric(task: str) -> tuple[str, bool]:
    """(metric, higher is better): validation accuracy, or MAE for regression."""
    return ("accuracy", True) if task == "classification" else ("mae", False)


def is_better(value: float, best: float | None, higher: bool, loss: float | None = None,
              best_loss: float | None = None) -> bool:
    """Better on the selection metric, or equal on it with a lower valid loss. Valid accuracy on a small
    split saturates, and a strict ">" then keeps an early epoch over later ones that fit better."""
    if best is None:
        return True
    if value == best:
        return loss is not None and best_loss is not None and loss < best_loss
    return value > best if higher else value < best


# ---- checkpoints ------------------------------------------------------------------------------------

def save_atomic(obj, path: Path) -> None:
    """Write to a temporary name, fsync, then rename: neither a kill nor a power cut (which can persist the
    rename before the bytes) leaves a half-written file under `path`."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class CheckpointError(ValueError):
    pass


def load_checkpoint(path: Path | str) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from err


def write_json_atomic(obj, path: Path) -> None:
    """NaN and infinities become null: JSON has no spelling for them, and strict readers refuse Python's."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_safe(obj), indent=2, allow_nan=False))
    os.replace(tmp, path)


CHECKPOINT_NAME = re.compile(r"epoch-(\d+)\.pt")
KEPT_CHECKPOINTS = 2  # the latest and the one before it, to fall back to when the latest is damaged


def checkpoint_path(out: Path, epoch: int) -> Path:
    return out / "checkpoints" / f"epoch-{epoch:03d}.pt"  # at least 3 digits; epoch 1000 has 4


def checkpoints(out: Path) -> list[Path]:
    """The epoch checkpoints, newest first, by epoch number (not by name: epoch-1000 sorts before epoch-999)."""
    found = [(int(match[1]), p) for p in (out / "checkpoints").glob("epoch-*.pt")
             if (match := CHECKPOINT_NAME.fullmatch(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(out: Path) -> Path | None:
    found = checkpoints(out)
    return found[0] if found else None


def load_latest_checkpoint(out: Path) -> dict | None:
    """The newest checkpoint that loads. A damaged one is named and the previous epoch's used instead;
    training then repeats the lost epoch, exactly (see the module docstring)."""
    for path in checkpoints(out):
        try:
            return load_checkpoint(path)
        except CheckpointError as err:
            tqdm.write(f"warning: {err}; falling back to the checkpoint of the epoch before", file=sys.stderr)
    return None


# Errors that name their file (and sample) and say what to do: commands print them without a traceback.
USER_ERRORS = (ConfigError, NonFiniteLoss, CheckpointError, CorruptShard, CorruptSample, DamagedPack)


def check_resumable(saved: dict, config: TrainConfig, pack_id: str) -> None:
    if saved["pack_id"] != pack_id:
        raise ConfigError(f"{config.out} holds a run on pack {saved['pack_id']}, not {pack_id}; "
                          "use another out directory")
    now = config.model_dump(mode="json")
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved["config"].get(k) != now[k])
    if changed:
        details = ", ".join(f"{k}: {saved['config'].get(k)!r} -> {now[k]!r}" for k in changed)
        raise ConfigError(f"{config.out} holds checkpoints of a different run ({details}); "
                          "use another out directory or the same settings")


@dataclass
class Progress:
    epoch: int = 0                      # last finished epoch
    best_epoch: int | None = None
    best_metric: float | None = None
    best_valid: dict | None = None
    history: list = field(default_factory=list)   # one entry per finished epoch

    def state(self) -> dict:
        return {"epoch": self.epoch, "best_epoch": self.best_epoch, "best_metric": self.best_metric,
                "best_valid": self.best_valid, "history": self.history}


def resume(config: TrainConfig, pack_id: str, model, optimizer) -> Progress:
    saved = load_latest_checkpoint(config.out)
    if saved is None:
        return Progress()
    check_resumable(saved, config, pack_id)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    return Progress(saved["epoch"], saved["best_epoch"], saved["best_metric"], saved["best_valid"], saved["history"])


def model_record(model: FusionModel, config: TrainConfig, info: PackInfo, modalities: list[str]) -> dict:
    """What evaluate() needs to rebuild the model: weights, config, and the pack's shape."""
    return {"model": model.state_dict(), "config": config.model_dump(mode="json"), "pack_id": info.pack_id,
            "task": info.task, "classes": info.classes, "modalities": modalities,
            "dims": {m: info.dims[m] for m in modalities}}


def end_of_epoch(model: FusionModel, optimizer, config: TrainConfig, info: PackInfo, modalities: list[str],
                 progress: Progress, entry: dict, valid: dict) -> None:
    """Rank 0: record the epoch, keep the best weights, checkpoint, drop all but the last two checkpoints."""
    name, higher = selection_metric(info.task)
    progress.history.append({**entry, "valid_loss": valid["loss"], "valid_metric": valid[name]})
    record = model_record(model, config, info, modalities)
    if is_better(valid[name], progress.best_metric, higher, valid["loss"], (progress.best_valid or {}).get("loss")):
        progress.best_epoch, progress.best_metric, progress.best_valid = entry["epoch"], valid[name], valid
        # best.pt before the checkpoint that names it, so no checkpoint points at missing weights
        save_atomic({**record, "epoch": entry["epoch"], "valid": valid}, config.out / "best.pt")
    progress.epoch = entry["epoch"]
    path = checkpoint_path(config.out, progress.epoch)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic({**record, **progress.state(), "optimizer": optimizer.state_dict()}, path)
    for old in checkpoints(config.out)[KEPT_CHECKPOINTS:]:
        old.unlink()


# ---- the run ----------------------------------------------------------------------------------------

def train(config: TrainConfig) -> dict:
    """Train (or resume) one run; returns what it writes to <out>/metrics.json (on every rank)."""
    rt = start_runtime(config.device)
    try:
        with cpu_threads(rt.device, config.num_workers):
            return _train(config, rt)
    finally:
        if rt.owns_group:
            dist.destroy_process_group()


def _train(config: TrainConfig, rt: Runtime) -> dict:
    info = read_pack(config.pack)
    modalities = choose_modalities(info, config.modalities)
    spec = batch_spec(config, info, modalities)
    if not info.count("valid"):
        raise ValueError(f"pack {info.path} has no validation samples: the epoch is selected on them")
    for split in info.splits:  # now, not after hours of training when the test split is read
        check_count(info, split)
    amp, on_gpu = use_amp(config, rt.device), rt.device.type == "cuda"
    model = make_model(config, info, modalities).to(rt.device)
    optimizer = make_optimizer(model, config)
    config.out.mkdir(parents=True, exist_ok=True)
    progress = resume(config, info.pack_id, model, optimizer)
    net = DistributedDataParallel(model, device_ids=[rt.device] if on_gpu else None) if rt.distributed else model
    # Both loaders keep their workers from epoch to epoch.
    batches = TrainLoader(info, spec, batch_size=config.batch_size, shuffle_buffer=config.shuffle_buffer,
                          seed=config.seed, rank=rt.rank, world_size=rt.world_size, num_workers=config.num_workers,
                          pin_memory=on_gpu)
    valid_batches = eval_loader(info, spec, "valid", batch_size=config.batch_size, num_workers=config.num_workers,
                                pin_memory=on_gpu, persistent=True) if rt.is_main else None
    noise_std = training_std(info, spec, config, modalities, rt.device)

    for epoch in range(progress.epoch + 1, config.epochs + 1):
        seed_everything(config.seed, epoch, rt.rank)
        entry = {"epoch": epoch, **train_epoch(net, batches.epoch(epoch), optimizer, config, rt, amp,
                                               desc=f"epoch {epoch}/{config.epochs}", noise_std=noise_std)}
        if rt.is_main:
            valid = score(*predict(model, valid_batches, rt.device, amp), info.task)
            check_loss(valid["loss"], f"epoch {epoch}/{config.epochs}: the validation loss")
            entry["statistics"] = epoch_statistics(model, valid_batches, rt.device)  # for the dynamics report
            end_of_epoch(model, optimizer, config, info, modalities, progress, entry, valid)
            name = selection_metric(info.task)[0]
            tqdm.write(f"epoch {epoch}: train loss {entry['train_loss']:.4f}, valid loss {valid['loss']:.4f}, "
                       f"valid {name} {valid[name]:.4f}")
        barrier(rt)

    if rt.is_main:
        write_results(model, config, info, spec, modalities, rt, amp)
    barrier(rt)
    return json.loads((config.out / "metrics.json").read_text())


def training_std(info: PackInfo, spec: BatchSpec, config: TrainConfig, modalities: list[str],
                 device: torch.device) -> dict | None:
    """The training split's per-dim std, for noise augmentation (None when there is none). One pass over the
    split in a fixed order, so every rank and a resumed run get the same numbers."""
    if config.augment is None or "noise" not in config.augment.kinds:
        return None
    loader = eval_loader(info, spec, "train", batch_size=256, num_workers=config.num_workers,
                         pin_memory=device.type == "cuda")
    return {m: std.to(device) for m, std in feature_std(loader, modalities).items()}


def evaluate_split(model, info: PackInfo, spec: BatchSpec, split: str, config: TrainConfig,
                   device: torch.device, amp: bool) -> dict:
    loader = eval_loader(info, spec, split, batch_size=config.batch_size, num_workers=config.num_workers,
                         pin_memory=device.type == "cuda")
    result = score(*predict(model, loader, device, amp), info.task)
    check_loss(result["loss"], f"the {split} loss on {info.path}")
    return result


def write_results(model, config: TrainConfig, info: PackInfo, spec: BatchSpec, modalities: list[str],
                  rt: Runtime, amp: bool) -> None:
    """Test at the selected epoch; metrics.json last, so its presence means the run is complete."""
    latest = load_checkpoint(latest_checkpoint(config.out))
    best = load_checkpoint(config.out / "best.pt")
    model.load_state_dict(best["model"])
    test = evaluate_split(model, info, spec, "test", config, rt.device, amp) if info.count("test") else {}
    name, higher = selection_metric(info.task)
    metrics = {"valid": latest["best_valid"], "test": test, "best_epoch": latest["best_epoch"],
               "selection": {"metric": name, "higher_is_better": higher}, "history": latest["history"],
               "pack_id": info.pack_id, "modalities": modalities, "world_size": rt.world_size,
               "config": config.model_dump(mode="json")}
    write_json_atomic(metrics, config.out / "metrics.json")


def evaluate(checkpoint: Path | str, pack: Path | str, split: str = "test", *, batch_size: int | None = None,
             num_workers: int = 0, device: str = "auto") -> dict:
    """Metrics of a saved model (best.pt or an epoch checkpoint) on a pack's split. The pack may differ
    from the training pack (e.g. corrupted test features) but must have the same modalities and labels."""
    saved = load_checkpoint(checkpoint)
    config = TrainConfig.model_validate(saved["config"])
    info = read_pack(pack)
    check_compatible(saved, info, checkpoint)
    spec = batch_spec(config, info, saved["modalities"])
    target_device = resolve_device(device)
    model = make_model(config, info, saved["modalities"])
    model.load_state_dict(saved["model"])
    model.to(target_device)
    run = config.model_copy(update={"batch_size": batch_size or config.batch_size, "num_workers": num_workers})
    return evaluate_split(model, info, spec, split, run, target_device, use_amp(config, target_device))


def check_compatible(saved: dict, info: PackInfo, checkpoint) -> None:
    problems = []
    if saved["task"] != info.task:
        problems.append(f"task {saved['task']} vs {info.task}")
    if saved["classes"] != info.classes:
        problems.append(f"classes {saved['classes']} vs {info.classes}")
    for m, dim in saved["dims"].items():
        if info.dims.get(m) != dim:
            problems.append(f"{m} width {dim} vs {info.dims.get(m)}")
    if problems:
        raise ValueError(f"{checkpoint} does not fit pack {info.path}: " + "; ".join(problems))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train one fusion model on a pack (torchrun-compatible).")
    parser.add_argument("config", type=Path, help="TrainConfig as YAML or JSON")
    args = parser.parse_args(argv)
    try:
        config = load_train_config(args.config)
    except ConfigError as err:
        sys.exit(str(err))
    metrics = train(config)
    if int(os.environ.get("RANK", 0)) == 0:
        print(json.dumps({"best_epoch": metrics["best_epoch"], "valid": metrics["valid"], "test": metrics["test"]},
                         indent=2))


if __name__ == "__main__":
    main()
