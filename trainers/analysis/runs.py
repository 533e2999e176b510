"""A finished training run loaded for analysis, its baseline, and forward passes that keep what the
analyses need (logits, scales, pooled features before and after calibration, the fused vector)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from storage.packinfo import PackInfo, read_pack
from storage.remote import Location, location
from trainers.batches import BatchSpec
from trainers.calibration import masked_mean
from trainers.checkpoints import check_compatible, load_checkpoint, model_from_record
from trainers.config import TrainConfig
from trainers.data import eval_loader
from trainers.epochs import selection_metric
from trainers.models import FusionModel
from trainers.steps import score

Transform = Callable[[dict], dict]


@dataclass
class Run:
    path: Location
    metrics: dict
    config: TrainConfig
    model: FusionModel
    info: PackInfo
    modalities: list[str]
    classes: list[str] | None

    @property
    def name(self) -> str:
        c = self.config
        method = f"{c.method}-{c.calibration}" if c.method == "calibration" else c.method
        return f"{c.backbone}-{method} seed {c.seed}"

    @property
    def calibrated(self) -> bool:
        return self.model.calibration is not None

    @property
    def metric(self) -> tuple[str, bool]:
        """(selection metric, higher is better): accuracy for classification, MAE for regression."""
        return selection_metric(self.info.task)

    def spec(self, info: PackInfo | None = None) -> BatchSpec:
        return BatchSpec.for_pack(info or self.info, self.modalities, self.config.max_len)


def is_run(path: Location) -> bool:
    return (path / "metrics.json").is_file() and (path / "best.pt").is_file()


def find_runs(folder: Location | str) -> list[Location]:
    """The finished runs of an experiment's output folder, which trainers.experiment lays out as
    <out>/<pack>/<backbone>-<method>/seed-<n>/ (only that depth is searched: a folder that is not an
    experiment is not walked through)."""
    return sorted(p.parent for p in location(folder).glob("*/*/seed-*/metrics.json") if is_run(p.parent))


def load_run(path: Location | str) -> Run:
    """The run's selected weights (best.pt) on the pack it was trained on, in eval mode on the CPU."""
    path = location(path)
    if not is_run(path):
        raise FileNotFoundError(f"{path} is not a finished training run (it needs metrics.json and best.pt)")
    saved = load_checkpoint(path / "best.pt")
    config = TrainConfig.model_validate(saved["config"])
    info = read_pack(config.pack)
    check_compatible(saved, info, path / "best.pt")
    metrics = json.loads((path / "metrics.json").read_text())
    return Run(path, metrics, config, model_from_record(saved), info, list(saved["modalities"]), saved["classes"])


def find_baseline(run: Run) -> Location | None:
    """The method-"none" run of the same pack, backbone, seed and modalities in the same experiment
    (experiment layout: <out>/<pack>/<backbone>-<method>/seed-<n>/)."""
    if run.config.method == "none":
        return None
    for candidate in sorted(run.path.parent.parent.glob("*/*/metrics.json")):
        config = json.loads(candidate.read_text()).get("config", {})
        same = all(config.get(k) == getattr(run.config, k) for k in ("backbone", "seed", "modalities", "max_len"))
        if (
            same
            and config.get("method") == "none"
            and location(config.get("pack", "")) == location(run.config.pack)
            and is_run(candidate.parent)
        ):
            return candidate.parent
    return None


def load_batches(run: Run, split: str = "test", info: PackInfo | None = None, batch_size: int = 64) -> list[dict]:
    """A split decoded once into CPU batches (analyses sweep it many times). `info` may be another pack
    with the same modalities (a corrupted variant); its class indices are mapped onto the run's."""
    info = info or run.info
    batches = list(eval_loader(info, run.spec(info), split, batch_size=batch_size))
    if run.classes is not None and info.classes != run.classes:
        unknown = sorted(set(info.classes) - set(run.classes))
        if unknown:
            raise ValueError(f"pack {info.path} has classes the run never saw: {unknown}")
        to_run = torch.tensor([run.classes.index(c) for c in info.classes])
        batches = [{**b, "target": to_run[b["target"]]} for b in batches]
    for b in batches:  # the model's dtype; to_device would do this on every pass
        b["features"] = {m: x.float() for m, x in b["features"].items()}
    return batches


@torch.no_grad()
def predict(model: FusionModel, batches: list[dict], transform: Transform | None = None) -> tuple[Tensor, Tensor]:
    """(logits [N, C], targets [N]) with `transform` applied to every batch first."""
    model.eval()
    logits, targets = [], []
    for batch in batches:
        batch = transform(batch) if transform else batch
        logits.append(model(batch).logits)
        targets.append(batch["target"])
    return torch.cat(logits), torch.cat(targets)


def evaluate(run: Run, batches: list[dict], transform: Transform | None = None) -> dict[str, float]:
    return score(*predict(run.model, batches, transform), run.info.task)


def worsening(value: float, reference: float, higher_is_better: bool) -> float:
    """How much worse `value` is than `reference` in the metric's own direction (positive = worse)."""
    return reference - value if higher_is_better else value - reference


@dataclass
class Outputs:
    """Per-sample outputs of one pass over a split (CPU tensors, rows in the batches' order)."""

    sample_ids: list[str]
    targets: Tensor  # [N]
    logits: Tensor  # [N, C]
    present: Tensor  # [N, M] bool
    pooled: dict[str, Tensor]  # {m: [N, D_m]} masked time mean of the input features
    calibrated: dict[str, Tensor] | None  # {m: [N, D_m]} the same after calibration
    fused: Tensor  # [N, F] what the head sees
    instance: Tensor | None  # [N, M] instance scales
    dimension: dict[str, Tensor] | None  # {m: [N, D_m]} dimension scales


@torch.no_grad()
def collect(model: FusionModel, batches: list[dict]) -> Outputs:
    """One pass, reading the calibrated features and the fused vector off forward hooks, so the model's
    own forward runs unchanged."""
    model.eval()
    seen: dict[str, object] = {}

    def keep_fused(_, args):  # the head also runs on [B, M, F] for the unimodal logits: skip those
        if args[0].dim() == 2:
            seen["fused"] = args[0]

    def keep_calibrated(_, __, out):
        seen["cal"] = out

    hooks = [model.backbone.head.register_forward_pre_hook(keep_fused)]
    if model.calibration is not None:
        hooks.append(model.calibration.register_forward_hook(keep_calibrated))
    parts: dict[str, list] = {k: [] for k in ("ids", "targets", "logits", "present", "fused", "instance")}
    pooled = {m: [] for m in model.modalities}
    calibrated = {m: [] for m in model.modalities}
    dimension = {m: [] for m in model.modalities}
    try:
        for batch in batches:
            seen.clear()
            out = model(batch)
            parts["ids"] += batch["sample_id"]
            for key, value in (
                ("targets", batch["target"]),
                ("logits", out.logits),
                ("present", batch["present"]),
                ("fused", seen["fused"]),
            ):
                parts[key].append(value)
            for m in model.modalities:
                pooled[m].append(masked_mean(batch["features"][m], batch["mask"][m]))
            if out.scales is not None:
                parts["instance"].append(out.scales["instance"])
                for m in model.modalities:
                    calibrated[m].append(masked_mean(seen["cal"].features[m], batch["mask"][m]))
                    dimension[m].append(out.scales["dimension"][m])
    finally:
        for hook in hooks:
            hook.remove()
    cat = torch.cat
    has_scales = bool(parts["instance"])
    return Outputs(
        parts["ids"],
        cat(parts["targets"]),
        cat(parts["logits"]),
        cat(parts["present"]),
        {m: cat(v) for m, v in pooled.items()},
        {m: cat(v) for m, v in calibrated.items()} if has_scales else None,
        cat(parts["fused"]),
        cat(parts["instance"]) if has_scales else None,
        {m: cat(v) for m, v in dimension.items()} if has_scales else None,
    )
