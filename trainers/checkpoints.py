"""Checkpoints: written atomically, read with weights_only=True, kept two epochs deep, and enough on their own
to rebuild their model (`load_model`, like transformers' `from_pretrained`): each holds the weights, the
model config (backbone, method, calibration variant and settings), the feature width per modality, the
classes and the task, beside the training config and the pack id it was trained on.
"""

from __future__ import annotations

import io
import pickle
import re
import sys

import torch
from tqdm.auto import tqdm

from storage import remote
from storage.atomic import write_bytes_atomic
from storage.atomic import write_json_atomic as write_json
from storage.packinfo import PackInfo
from storage.remote import Location
from trainers.config import TrainConfig
from trainers.config_file import ConfigError
from trainers.metrics import json_safe
from trainers.model_config import ModelConfig
from trainers.models import FusionModel

# Fields that may change between a killed run and its resumption without changing what is trained.
RESUMABLE_CHANGES = {"epochs", "num_workers", "device", "amp", "out", "pack"}


def save_atomic(obj, path: Location) -> None:
    """torch.save, whole or not at all (storage/atomic.py): neither a kill nor a power cut leaves a
    half-written file under `path` (in a bucket: one PUT of the whole object)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getvalue())


class CheckpointError(ValueError):
    pass


def load_checkpoint(path: Location | str) -> dict:
    """A checkpoint file, or an object in a bucket (fetched whole, in one GET)."""
    try:
        with remote.open_read(remote.location(path)) as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from err


def write_json_atomic(obj, path: Location) -> None:
    """NaN and infinities become null: JSON has no spelling for them, and strict readers refuse Python's."""
    write_json(path, json_safe(obj), indent=2)


CHECKPOINT_NAME = re.compile(r"epoch-(\d+)\.pt")


KEPT_CHECKPOINTS = 2  # the latest and the one before it, to fall back to when the latest is damaged


def checkpoint_path(out: Location, epoch: int) -> Location:
    return out / "checkpoints" / f"epoch-{epoch:03d}.pt"  # at least 3 digits; epoch 1000 has 4


def checkpoints(out: Location) -> list[Location]:
    """The epoch checkpoints, newest first, by epoch number (not by name: epoch-1000 sorts before epoch-999)."""
    found = [
        (int(match[1]), p)
        for p in (out / "checkpoints").glob("epoch-*.pt")
        if (match := CHECKPOINT_NAME.fullmatch(p.name))
    ]
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(out: Location) -> Location | None:
    found = checkpoints(out)
    return found[0] if found else None


def load_latest_checkpoint(out: Location) -> dict | None:
    """The newest checkpoint that loads. A damaged one is named and the previous epoch's used instead;
    training then repeats the lost epoch, exactly (see the module docstring)."""
    for path in checkpoints(out):
        try:
            return load_checkpoint(path)
        except CheckpointError as err:
            tqdm.write(f"warning: {err}; falling back to the checkpoint of the epoch before", file=sys.stderr)
    return None


def check_resumable(saved: dict, config: TrainConfig, pack_id: str) -> None:
    if saved["pack_id"] != pack_id:
        raise ConfigError(
            f"{config.out} holds a run on pack {saved['pack_id']}, not {pack_id}; use another out directory"
        )
    now = config.model_dump(mode="json")
    before = TrainConfig.model_validate(saved["config"]).model_dump(mode="json")  # with today's defaults filled in
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and before.get(k) != now[k])
    if changed:
        details = ", ".join(f"{k}: {before.get(k)!r} -> {now[k]!r}" for k in changed)
        raise ConfigError(
            f"{config.out} holds checkpoints of a different run ({details}); "
            "use another out directory or the same settings"
        )


def model_record(model: FusionModel, config: TrainConfig, info: PackInfo, modalities: list[str]) -> dict:
    """What rebuilds the model without the pack (load_model): weights, model config, the pack's shape; and
    the training config and pack id, for resuming and for evaluation on the pack."""
    return {
        "model": model.state_dict(),
        "model_config": config.architecture.model_dump(mode="json"),
        "dims": {m: info.dims[m] for m in modalities},
        "num_outputs": info.num_outputs,
        "task": info.task,
        "classes": info.classes,
        "modalities": modalities,
        "config": config.model_dump(mode="json"),
        "pack_id": info.pack_id,
    }


def model_from_record(saved: dict) -> FusionModel:
    """The model a checkpoint describes, with its weights, in eval mode on the CPU."""
    if "model_config" in saved:
        config, num_outputs = ModelConfig.model_validate(saved["model_config"]), saved["num_outputs"]
    else:  # written before checkpoints held their model config: the training config holds the same
        config = TrainConfig.model_validate(saved["config"]).architecture
        num_outputs = len(saved["classes"]) if saved["task"] == "classification" else 1
    model = config.build(saved["dims"], num_outputs)
    model.load_state_dict(saved["model"])
    return model.eval()


def load_model(path: Location | str) -> FusionModel:
    """The model saved in a checkpoint (best.pt or an epoch checkpoint, a file or a URL), from the
    checkpoint alone."""
    return model_from_record(load_checkpoint(path))


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
