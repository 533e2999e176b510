"""What a run keeps from epoch to epoch: its history, the best epoch so far on the validation split, and the
checkpoints written at the end of each epoch."""

from __future__ import annotations

from dataclasses import dataclass, field

from storage.packinfo import PackInfo
from storage.remote import location
from trainers.checkpoints import (
    KEPT_CHECKPOINTS,
    check_resumable,
    checkpoint_path,
    checkpoints,
    load_latest_checkpoint,
    model_record,
    save_atomic,
)
from trainers.config import TrainConfig
from trainers.models import FusionModel


def selection_metric(task: str) -> tuple[str, bool]:
    """(metric, higher is better): validation accuracy, or MAE for regression."""
    return ("accuracy", True) if task == "classification" else ("mae", False)


def is_better(
    value: float, best: float | None, higher: bool, loss: float | None = None, best_loss: float | None = None
) -> bool:
    """Better on the selection metric, or equal on it with a lower valid loss. Valid accuracy on a small
    split saturates, and a strict ">" then keeps an early epoch over later ones that fit better."""
    if best is None:
        return True
    if value == best:
        return loss is not None and best_loss is not None and loss < best_loss
    return value > best if higher else value < best


@dataclass
class Progress:
    epoch: int = 0  # last finished epoch
    best_epoch: int | None = None
    best_metric: float | None = None
    best_valid: dict | None = None
    history: list = field(default_factory=list)  # one entry per finished epoch

    def state(self) -> dict:
        return {
            "epoch": self.epoch,
            "best_epoch": self.best_epoch,
            "best_metric": self.best_metric,
            "best_valid": self.best_valid,
            "history": self.history,
        }


def resume(config: TrainConfig, pack_id: str, model, optimizer) -> Progress:
    saved = load_latest_checkpoint(location(config.out))
    if saved is None:
        return Progress()
    check_resumable(saved, config, pack_id)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    return Progress(saved["epoch"], saved["best_epoch"], saved["best_metric"], saved["best_valid"], saved["history"])


def end_of_epoch(
    model: FusionModel,
    optimizer,
    config: TrainConfig,
    info: PackInfo,
    modalities: list[str],
    progress: Progress,
    entry: dict,
    valid: dict,
) -> None:
    """Rank 0: record the epoch, keep the best weights, checkpoint, drop all but the last two checkpoints."""
    name, higher = selection_metric(info.task)
    out = location(config.out)
    progress.history.append({**entry, "valid_loss": valid["loss"], "valid_metric": valid[name]})
    record = model_record(model, config, info, modalities)
    if is_better(valid[name], progress.best_metric, higher, valid["loss"], (progress.best_valid or {}).get("loss")):
        progress.best_epoch, progress.best_metric, progress.best_valid = entry["epoch"], valid[name], valid
        # best.pt before the checkpoint that names it, so no checkpoint points at missing weights
        save_atomic({**record, "epoch": entry["epoch"], "valid": valid}, out / "best.pt")
    progress.epoch = entry["epoch"]
    path = checkpoint_path(out, progress.epoch)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic({**record, **progress.state(), "optimizer": optimizer.state_dict()}, path)
    for old in checkpoints(out)[KEPT_CHECKPOINTS:]:
        old.unlink()
