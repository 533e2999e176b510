"""Extraction throughput with the default encoders of all three modalities (text, audio, video).

    python benchmarks/extract_bench.py [--data DIR] [--limit N] [--workers N] [--json PATH]

Three ways over the same clips, each timed over the three modalities one after another:
  (a) naive:    per clip, decode on the main thread and encode that one clip (batch of 1);
  (b) pipeline: extract_features, decoding in DataLoader workers, encoding batches of clips;
  (c) bound:    the encoders alone, batched, on inputs already decoded into memory.
b/c says how much of the decode cost the pipeline hides; b/a what it gains over the naive loop.
Each is run --repeat times, interleaved, and the fastest kept (the machine may be shared). Features are compared
between (a) and (b) so that speed never comes from computing something else.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from extractors import DecodeError, extract_features, get_encoder  # noqa: E402
from extractors.extract import resolve_device  # noqa: E402
from pipeline.manifest import read_manifest  # noqa: E402
from storage.layout import MODALITIES  # noqa: E402


def naive(samples, encoders) -> dict:
    out = {}
    for s in samples:
        for m, enc in encoders.items():
            try:
                out[m, s.sample_id] = enc.encode([enc.load(s)])[0].array
            except DecodeError:
                pass
    return out


def pipeline(samples, encoders, *, batch_size: int, workers: int, device: str, split: dict) -> dict:
    out = {}
    for m, enc in encoders.items():
        start = time.perf_counter()
        for s, result in extract_features(samples, enc, batch_size=batch_size, num_workers=workers, device=device):
            if not isinstance(result, DecodeError):
                out[m, s.sample_id] = result.array
        split[m] = min(split.get(m, float("inf")), time.perf_counter() - start)
    return out


def bound(loaded, encoders, *, batch_size: int, split: dict) -> None:
    for m, enc in encoders.items():
        start = time.perf_counter()
        items = loaded[m]
        for i in range(0, len(items), batch_size):
            enc.encode(items[i : i + batch_size])
        split[m] = min(split.get(m, float("inf")), time.perf_counter() - start)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the DataLoader workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(fn) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds, result) of fn()."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = fn()
    return time.perf_counter() - wall, cpu_seconds() - cpu, result


def peak_rss_mb() -> float:
    """Largest resident set of this process or any finished worker process, in MB (this process's
    peak includes the pre-decoded inputs of (c), held in memory at once)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT / "pipeline" / "sample" / "avdigits",
        help="folder with manifest.csv (default: the bundled AV-digits sample)",
    )
    parser.add_argument("--limit", type=int, default=None, help="use the first N clips")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for (b)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of this process (default: torch's choice, one per core); 1 keeps a "
        "shared machine's OpenMP contention out of the numbers",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the numbers to this JSON file")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    samples = read_manifest(args.data / "manifest.csv").samples[: args.limit]
    encoders = {m: get_encoder(m) for m in MODALITIES}
    device = str(resolve_device(args.device))
    for enc in encoders.values():  # first calls pay one-off set-up costs (allocators, kernels)
        enc.to(device).encode([enc.load(samples[0])])
    n = len(samples)
    print(
        f"{n} clips from {args.data}, encoders: " + ", ".join(f"{m}={e.name}" for m, e in encoders.items()),
        f"| {torch.get_num_threads()} torch threads, device {device}, {args.workers} workers, batch {args.batch_size}",
    )

    loaded = {m: [enc.load(s) for s in samples] for m, enc in encoders.items()}
    split = {"pipeline": {}, "bound": {}}  # fastest seconds per modality
    runs = {
        "naive": lambda: naive(samples, encoders),
        "pipeline": lambda: pipeline(
            samples, encoders, batch_size=args.batch_size, workers=args.workers, device=device, split=split["pipeline"]
        ),
        "bound": lambda: bound(loaded, encoders, batch_size=args.batch_size, split=split["bound"]),
    }
    # Rounds interleave the three, and the fastest round of each counts: a busy spell on a shared
    # machine then slows one round of all three instead of all rounds of one.
    best, cpu, results = {k: float("inf") for k in runs}, {k: float("inf") for k in runs}, {}
    load_before = os.getloadavg()[0]
    for _ in range(args.repeat):
        for k, fn in runs.items():
            seconds, cpu_used, results[k] = timed(fn)
            best[k], cpu[k] = min(best[k], seconds), min(cpu[k], cpu_used)
    load = max(load_before, os.getloadavg()[0])
    rss = peak_rss_mb()
    ref, got = results["naive"], results["pipeline"]
    worst = max(float(np.abs(ref[k] - got[k]).max()) for k in ref)
    assert ref.keys() == got.keys() and worst < 1e-3, f"pipeline features differ from per-clip ones (max {worst})"
    t_naive, t_pipe, t_bound = best["naive"], best["pipeline"], best["bound"]

    rates = {"naive_clips_per_s": n / t_naive, "pipeline_clips_per_s": n / t_pipe, "bound_clips_per_s": n / t_bound}
    for label, rate in rates.items():
        print(f"  {label:22s} {rate:8.1f}")
    for k, seconds in split.items():
        print(f"  {k} ms/clip by modality: " + ", ".join(f"{m} {1e3 * t / n:.2f}" for m, t in seconds.items()))
    print(
        "  CPU ms/clip (all processes): "
        + ", ".join(f"{k} {1e3 * c / n:.2f}" for k, c in cpu.items())
        + f"   | load average {load:.1f} on {os.cpu_count()} cores (other work slows every number)"
    )
    print(
        f"  b/a = {rates['pipeline_clips_per_s'] / rates['naive_clips_per_s']:.2f}   "
        f"b/c = {rates['pipeline_clips_per_s'] / rates['bound_clips_per_s']:.2f}   "
        f"peak RSS {rss:.0f} MB   (max |a - b| feature difference {worst:.1e})"
    )
    if args.json:
        extra = {
            "cpu_ms_per_clip": {k: 1e3 * c / n for k, c in cpu.items()},
            "load_average": load,
            "clips": n,
            "torch_threads": torch.get_num_threads(),
            "workers": args.workers,
            "batch_size": args.batch_size,
            "device": device,
        }
        args.json.write_text(json.dumps({**rates, "peak_rss_mb": rss, **extra}, indent=2))


if __name__ == "__main__":
    main()
