"""The training loop: AdamW on a pack's streamed shards, selection on valid, test at the selected epoch.

Run alone (`train(config)`) or under torchrun (`python -m torch.distributed.run --nproc_per_node N
-m trainers.train CONFIG`; gloo on CPU, nccl on GPU). Rank 0 evaluates, checkpoints and writes (into a
folder, or as objects under a bucket URL: storage/atomic.py writes each whole):
  <out>/checkpoints/epoch-NNN.pt   the last two epochs: model, optimizer, history, best so far, config
  <out>/best.pt                    the model of the epoch with the best validation metric
  <out>/metrics.json               {"valid", "test", "best_epoch", "history", "config", ...}
A killed run started again with the same config resumes from its latest checkpoint and ends exactly
where an uninterrupted run would: every epoch reseeds all RNGs from (seed, epoch, rank) and reads a
data stream that depends on (seed, epoch) only (see trainers/data.py), so no RNG state needs saving.
Checkpoints (trainers/checkpoints.py) hold plain state dicts, are loaded with weights_only=True, and
rebuild their model without the pack (`load_model`). The pieces: trainers/runtime.py (processes, devices,
seeding), trainers/steps.py (optimiser steps, an epoch, predictions), trainers/epochs.py (history, best
epoch, end-of-epoch checkpoints).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from storage.packinfo import PackInfo, cached_pack, read_pack
from storage.remote import Location, location
from storage.shards import CorruptShard
from trainers.analysis.dynamics import epoch_statistics
from trainers.augment import feature_std
from trainers.backbones import BACKBONES
from trainers.batches import BatchSpec, CorruptSample, choose_modalities
from trainers.checkpoints import (
    CheckpointError,
    check_compatible,
    latest_checkpoint,
    load_checkpoint,
    model_from_record,
    write_json_atomic,
)
from trainers.config import TrainConfig, load_train_config
from trainers.config_file import ConfigError
from trainers.data import DamagedPack, TrainLoader, check_count, eval_loader
from trainers.epochs import end_of_epoch, resume, selection_metric
from trainers.models import FusionModel
from trainers.runtime import Runtime, barrier, cpu_threads, resolve_device, seed_everything, start_runtime, use_amp
from trainers.steps import NonFiniteLoss, check_loss, make_optimizer, predict, score, train_epoch


def batch_spec(config: TrainConfig, info: PackInfo, modalities: list[str]) -> BatchSpec:
    """A backbone that reads only time means (late fusion) gets them from the loader's workers."""
    pooled = BACKBONES.get(config.backbone).pools_first
    return BatchSpec.for_pack(info, modalities, config.max_len, pooled=pooled)


def make_model(config: TrainConfig, info: PackInfo, modalities: list[str]) -> FusionModel:
    torch.manual_seed(config.seed)  # the same initial weights on every rank and on resumption
    try:
        return config.architecture.build({m: info.dims[m] for m in modalities}, info.num_outputs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"cannot build the model (backbone, method, calibration, model_options): {err}") from err


# Errors that name their file (and sample) and say what to do: commands print them without a traceback.
USER_ERRORS = (ConfigError, NonFiniteLoss, CheckpointError, CorruptShard, CorruptSample, DamagedPack)


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
    if config.shard_cache is not None:
        info = cached_pack(info, config.shard_cache)
    modalities = choose_modalities(info, config.modalities)
    spec = batch_spec(config, info, modalities)
    if not info.count("valid"):
        raise ValueError(f"pack {info.path} has no validation samples: the epoch is selected on them")
    for split in info.splits:  # now, not after hours of training when the test split is read
        check_count(info, split)
    amp, on_gpu = use_amp(config, rt.device), rt.device.type == "cuda"
    model = make_model(config, info, modalities).to(rt.device)
    optimizer = make_optimizer(model, config)
    location(config.out).mkdir(parents=True, exist_ok=True)
    progress = resume(config, info.pack_id, model, optimizer)
    net = DistributedDataParallel(model, device_ids=[rt.device] if on_gpu else None) if rt.distributed else model
    # Both loaders keep their workers from epoch to epoch.
    batches = TrainLoader(
        info,
        spec,
        batch_size=config.batch_size,
        shuffle_buffer=config.shuffle_buffer,
        seed=config.seed,
        rank=rt.rank,
        world_size=rt.world_size,
        num_workers=config.num_workers,
        pin_memory=on_gpu,
    )
    valid_batches = (
        eval_loader(
            info,
            spec,
            "valid",
            batch_size=config.batch_size,
            num_workers=config.num_workers,
            pin_memory=on_gpu,
            persistent=True,
        )
        if rt.is_main
        else None
    )
    noise_std = training_std(info, spec, config, modalities, rt.device)

    for epoch in range(progress.epoch + 1, config.epochs + 1):
        seed_everything(config.seed, epoch, rt.rank)
        entry = {
            "epoch": epoch,
            **train_epoch(
                net,
                batches.epoch(epoch),
                optimizer,
                config,
                rt,
                amp,
                desc=f"epoch {epoch}/{config.epochs}",
                noise_std=noise_std,
            ),
        }
        if rt.is_main:
            valid = score(*predict(model, valid_batches, rt.device, amp), info.task)
            check_loss(valid["loss"], f"epoch {epoch}/{config.epochs}: the validation loss")
            entry["statistics"] = epoch_statistics(model, valid_batches, rt.device)  # for the dynamics report
            end_of_epoch(model, optimizer, config, info, modalities, progress, entry, valid)
            name = selection_metric(info.task)[0]
            tqdm.write(
                f"epoch {epoch}: train loss {entry['train_loss']:.4f}, valid loss {valid['loss']:.4f}, "
                f"valid {name} {valid[name]:.4f}"
            )
        barrier(rt)

    if rt.is_main:
        write_results(model, config, info, spec, modalities, rt, amp)
    barrier(rt)
    return json.loads((location(config.out) / "metrics.json").read_text())


def training_std(
    info: PackInfo, spec: BatchSpec, config: TrainConfig, modalities: list[str], device: torch.device
) -> dict | None:
    """The training split's per-dim std, for noise augmentation (None when there is none). One pass over the
    split in a fixed order, so every rank and a resumed run get the same numbers."""
    if config.augment is None or "noise" not in config.augment.kinds:
        return None
    loader = eval_loader(
        info, spec, "train", batch_size=256, num_workers=config.num_workers, pin_memory=device.type == "cuda"
    )
    return {m: std.to(device) for m, std in feature_std(loader, modalities).items()}


def evaluate_split(
    model, info: PackInfo, spec: BatchSpec, split: str, config: TrainConfig, device: torch.device, amp: bool
) -> dict:
    loader = eval_loader(
        info,
        spec,
        split,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
    )
    result = score(*predict(model, loader, device, amp), info.task)
    check_loss(result["loss"], f"the {split} loss on {info.path}")
    return result


def write_results(
    model, config: TrainConfig, info: PackInfo, spec: BatchSpec, modalities: list[str], rt: Runtime, amp: bool
) -> None:
    """Test at the selected epoch; metrics.json last, so its presence means the run is complete."""
    out = location(config.out)
    latest = load_checkpoint(latest_checkpoint(out))
    best = load_checkpoint(out / "best.pt")
    model.load_state_dict(best["model"])
    test = evaluate_split(model, info, spec, "test", config, rt.device, amp) if info.count("test") else {}
    name, higher = selection_metric(info.task)
    metrics = {
        "valid": latest["best_valid"],
        "test": test,
        "best_epoch": latest["best_epoch"],
        "selection": {"metric": name, "higher_is_better": higher},
        "history": latest["history"],
        "pack_id": info.pack_id,
        "modalities": modalities,
        "world_size": rt.world_size,
        "config": config.model_dump(mode="json"),
    }
    write_json_atomic(metrics, out / "metrics.json")


def evaluate(
    checkpoint: Location | str,
    pack: Path | str,
    split: str = "test",
    *,
    batch_size: int | None = None,
    num_workers: int = 0,
    device: str = "auto",
) -> dict:
    """Metrics of a saved model (best.pt or an epoch checkpoint) on a pack's split. The pack may differ
    from the training pack (e.g. corrupted test features) but must have the same modalities and labels."""
    saved = load_checkpoint(checkpoint)
    config = TrainConfig.model_validate(saved["config"])
    info = read_pack(pack)
    check_compatible(saved, info, checkpoint)
    spec = batch_spec(config, info, saved["modalities"])
    target_device = resolve_device(device)
    model = model_from_record(saved).to(target_device)
    run = config.model_copy(update={"batch_size": batch_size or config.batch_size, "num_workers": num_workers})
    return evaluate_split(model, info, spec, split, run, target_device, use_amp(config, target_device))


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
        print(
            json.dumps(
                {"best_epoch": metrics["best_epoch"], "valid": metrics["valid"], "test": metrics["test"]}, indent=2
            )
        )


if __name__ == "__main__":
    main()
