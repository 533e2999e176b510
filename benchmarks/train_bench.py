"""Training-loop throughput: shards streamed through DataLoader workers vs tensors already in memory,
and the step-time overhead and parameter share of each calibration variant per backbone. Both in one process,
same model, and the batches train() would give it (late fusion: time means pooled by the loader, in memory likewise).

    python benchmarks/train_bench.py [--pack DIR] [--json out.json] [--variants paper reliability reliability:32]

Without --pack, a synthetic pack with realistic shapes is written to a temporary folder: text
[~12, 384], audio [~100, 64], video [~10, 1024], float16, 2000 training samples.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage.layout import pack_file, pack_shard_name  # noqa: E402
from storage.npy import npy_bytes  # noqa: E402
from storage.packinfo import read_pack  # noqa: E402
from storage.shards import json_bytes, write_shard  # noqa: E402
from trainers.batches import choose_modalities, to_device  # noqa: E402
from trainers.config import TrainConfig  # noqa: E402
from trainers.data import InMemorySplit, TrainLoader  # noqa: E402
from trainers.runtime import Runtime, cpu_threads, resolve_device, use_amp  # noqa: E402
from trainers.steps import make_optimizer, train_epoch, train_step  # noqa: E402
from trainers.train import batch_spec, make_model  # noqa: E402

SHAPES = {"text": (12, 384), "audio": (100, 64), "video": (10, 1024)}  # typical steps, width
NUM_CLASSES = 6


def synthetic_sample(rng: np.random.Generator, sample_id: str, split: str) -> tuple[str, dict[str, bytes]]:
    target = int(rng.integers(NUM_CLASSES))
    members = {}
    for m, (steps, dim) in SHAPES.items():
        length = int(rng.integers(max(1, steps * 2 // 3), steps * 4 // 3 + 1))  # +-33% around typical
        members[f"{m}.npy"] = npy_bytes(rng.normal(size=(length, dim)).astype(np.float16))
    members["json"] = json_bytes(
        {
            "sample_id": sample_id,
            "split": split,
            "label": str(target),
            "target": target,
            "present": {m: True for m in SHAPES},
        }
    )
    return sample_id, members


def write_synthetic_pack(root: Path, train: int, shard_size: int = 500) -> Path:
    rng = np.random.default_rng(0)
    splits = {}
    for split, count in {"train": train, "valid": 64, "test": 64}.items():
        shards = []
        for n, start in enumerate(range(0, count, shard_size)):
            name = pack_shard_name(split, n)
            write_shard(
                root / name,
                (
                    synthetic_sample(rng, f"{split}_{i:06d}", split)
                    for i in range(start, min(start + shard_size, count))
                ),
            )
            shards.append(name)
        splits[split] = {"shards": shards, "count": count}
    meta = {
        "pack_id": "synthetic",
        "task": "classification",
        "classes": [str(c) for c in range(NUM_CLASSES)],
        "modalities": {
            m: {"dim": dim, "encoder": "synthetic", "fingerprint": "0" * 16} for m, (_, dim) in SHAPES.items()
        },
        "splits": splits,
    }
    pack_file(root).write_text(json.dumps(meta))
    return root


def run_config(args, **changes) -> TrainConfig:
    return TrainConfig(
        pack=args.pack,
        out=Path(tempfile.gettempdir()),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        hidden=args.hidden,
        device=args.device,
        **changes,
    )


class Sized:
    """A re-iterable with a length, so in-memory epochs look like the stream's EpochLoader."""

    def __init__(self, make, length):
        self.make, self.length = make, length

    def __len__(self):
        return self.length

    def __iter__(self):
        return iter(self.make())


def fresh_model(config: TrainConfig, info, spec, rt: Runtime):
    model = make_model(config, info, spec.modalities).to(rt.device)
    return model, make_optimizer(model, config)


def stream_loader(config: TrainConfig, info, spec, rt: Runtime) -> TrainLoader:
    return TrainLoader(
        info,
        spec,
        batch_size=config.batch_size,
        shuffle_buffer=config.shuffle_buffer,
        seed=0,
        num_workers=config.num_workers,
        pin_memory=rt.device.type == "cuda",
    )


def stream_vs_memory(args, info, memory: InMemorySplit, rt: Runtime, backbone: str) -> dict:
    """Training samples/s from each source; epochs alternate between the sources so that background
    load hits both alike. The stream's workers persist across epochs, as in train() (they start in the
    warm-up epoch)."""
    config = run_config(args, backbone=backbone)
    amp, spec = use_amp(config, rt.device), memory.spec
    steps = len(memory) // config.batch_size
    stream = stream_loader(config, info, spec, rt)
    sources = {
        "memory": lambda epoch: Sized(
            lambda: memory.batches(config.batch_size, shuffle=True, seed=epoch, drop_last=True), steps
        ),
        "stream": stream.epoch,
    }
    models = {name: fresh_model(config, info, spec, rt) for name in sources}
    elapsed, samples = dict.fromkeys(sources, 0.0), dict.fromkeys(sources, 0)
    for epoch in range(args.epochs + 1):  # epoch 0 warms up
        for name, batches_of in sources.items():
            batches, (model, optimizer) = batches_of(epoch), models[name]
            start = time.perf_counter()
            train_epoch(model, batches, optimizer, config, rt, amp, desc=f"{name} {epoch}")
            if epoch:
                elapsed[name] += time.perf_counter() - start
                samples[name] += len(batches) * config.batch_size
    rate = {name: samples[name] / elapsed[name] for name in sources}
    return {
        "num_workers": config.num_workers,
        "batch_size": config.batch_size,
        "epochs": args.epochs,
        "pooled_by_loader": spec.pooled,
        "memory_samples_per_s": round(rate["memory"], 1),
        "stream_samples_per_s": round(rate["stream"], 1),
        "ratio": round(rate["stream"] / rate["memory"], 3),
    }


def loader_only(args, info, spec, rt: Runtime) -> float:
    """Samples/s the stream delivers with no training (after a warm-up epoch): with a core per worker to
    spare, streaming keeps up with any model slower than this."""
    config = run_config(args)
    stream = stream_loader(config, info, spec, rt)
    samples, start = 0, 0.0
    for epoch in range(args.epochs + 1):
        if epoch == 1:
            samples, start = 0, time.perf_counter()
        samples += sum(len(to_device(b, rt.device)["sample_id"]) for b in stream.epoch(epoch))
    return samples / (time.perf_counter() - start)


def compare_sources(args, info, memories, rt: Runtime) -> dict:
    per_backbone = {b: stream_vs_memory(args, info, memories(b), rt, b) for b in args.stream_backbones}
    headline = args.stream_backbones[0]
    spec = memories(headline).spec
    return {
        "backbone": headline,
        "ratio": per_backbone[headline]["ratio"],
        "target": 0.9,
        "loader_only_samples_per_s": round(loader_only(args, info, spec, rt), 1),
        **per_backbone,
    }


def timed_step(model, optimizer, batch, config, rt: Runtime, amp: bool) -> float:
    if rt.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    train_step(model, batch, optimizer, config, rt, amp).item()  # .item() waits for the step to finish
    return time.perf_counter() - start


def variant_config(args, backbone: str, variant: str) -> TrainConfig:
    """ "none", a calibration variant ("paper", "reliability"), or "reliability:N" (evidence heads of width N)."""
    if variant == "none":
        return run_config(args, backbone=backbone)
    name, _, width = variant.partition(":")
    options = {"reliability": {"evidence_hidden": int(width)}} if width else {}
    return run_config(args, backbone=backbone, method="calibration", calibration=name, model_options=options)


def calibration_overhead(args, info, memories, rt: Runtime) -> dict:
    """Median optimiser-step time of each calibration variant against none, per backbone, on the same
    device-resident batches (a step includes the variant's own losses); the models take turns step by step
    so that background load hits all alike. Also each module's parameters as a share of the backbone's."""
    report = {}
    variants = ["none", *args.variants]
    for backbone in args.backbones:
        memory = memories(backbone)
        batches = [
            to_device(b, rt.device) for b in memory.batches(args.batch_size, shuffle=True, seed=0, drop_last=True)
        ]
        configs = {v: variant_config(args, backbone, v) for v in variants}
        models = {v: fresh_model(c, info, memory.spec, rt) for v, c in configs.items()}
        amp = use_amp(configs["none"], rt.device)
        times = {v: [] for v in configs}
        for i in range(args.warmup + args.steps):
            for v, (model, optimizer) in models.items():
                seconds = timed_step(model, optimizer, batches[i % len(batches)], configs[v], rt, amp)
                if i >= args.warmup:
                    times[v].append(seconds)
        plain = statistics.median(times["none"]) * 1000
        backbone_parameters = sum(p.numel() for p in models["none"][0].backbone.parameters())
        report[backbone] = {"none_ms": round(plain, 3), "backbone_parameters": backbone_parameters}
        for v in args.variants:
            ms = statistics.median(times[v]) * 1000
            module = sum(p.numel() for p in models[v][0].calibration.parameters())
            report[backbone][v] = {
                "ms": round(ms, 3),
                "overhead": round(ms / plain - 1, 4),
                "parameters": module,
                "parameter_share": round(module / backbone_parameters, 4),
            }
    report["target"] = {"paper": 0.10, "reliability": 0.25}
    return report


def describe(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pack", type=Path, help="a pack folder; default: a synthetic one in a temp folder")
    parser.add_argument("--samples", type=int, default=2000, help="training samples of the synthetic pack")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=max(1, min(8, (os.cpu_count() or 2) - 1)))
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="measured epochs per source (after one warm-up)")
    parser.add_argument("--steps", type=int, default=40, help="measured steps per model for the overhead")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--stream-backbones",
        nargs="+",
        default=["late"],
        help="backbones for stream vs memory (the first is the headline number)",
    )
    parser.add_argument("--backbones", nargs="+", default=["late", "conv", "mult"])
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["paper", "reliability"],
        help="calibration variants timed against none; reliability:N = evidence heads of width N",
    )
    parser.add_argument("--skip-stream", action="store_true", help="only the calibration overhead")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="precal-bench-") as tmp:
        if args.pack is None:
            print(f"writing a synthetic pack of {args.samples} training samples ...", flush=True)
            args.pack = write_synthetic_pack(Path(tmp) / "pack", args.samples)
        info = read_pack(args.pack)
        modalities = choose_modalities(info, None)
        rt = Runtime(0, 1, resolve_device(args.device), False)
        splits = {}

        def memories(backbone: str) -> InMemorySplit:
            """The training split in memory, as train() would batch it for this backbone."""
            spec = batch_spec(run_config(args, backbone=backbone), info, modalities)
            if spec.pooled not in splits:
                splits[spec.pooled] = InMemorySplit(info, spec, "train")
            return splits[spec.pooled]

        with cpu_threads(rt.device, args.num_workers):  # the thread budget train() uses, for both sources
            results = {
                "device": describe(rt.device),
                "torch_threads": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
                "train_samples": info.count("train"),
                "stream_vs_memory": None if args.skip_stream else compare_sources(args, info, memories, rt),
                "calibration_step_overhead": calibration_overhead(args, info, memories, rt),
            }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
