"""Extraction through Prefect chunk tasks, in-process and on a local Dask cluster, against the plain path.

On the bundled AV-digits sample (300 clips; text, audio, video, default encoders), each into an empty store:
  plain        pipeline.extract.run_extraction, no Prefect (the baseline)
  default      extract_flow, chunk tasks one at a time in this process
  dask-cold    extract_flow on a fresh LocalCluster (workers import and load encoders on their first chunk)
  dask-warm    the same cluster again, into another empty store
  noop         extract_flow again on the default store: the plan finds nothing to do
Prefect's temporary server is started, and the encoders loaded once, before the timings.

    python benchmarks/orchestration_bench.py [--clips N] [--chunk N] [--workers N] [--json PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.prefect_env import apply_offline_defaults  # noqa: E402

apply_offline_defaults()

from distributed import LocalCluster  # noqa: E402
from prefect import flow  # noqa: E402

from flows.extract import extract_flow, task_runner  # noqa: E402
from pipeline.config import ExtractConfig  # noqa: E402
from pipeline.datasets.avdigits import bundled_sample_dir  # noqa: E402
from pipeline.extract import run_extraction  # noqa: E402
from pipeline.manifest import read_manifest  # noqa: E402


def first_clips(count: int, folder: Path) -> Path:
    """The first `count` bundled rows, as a manifest with absolute clip paths."""
    source = bundled_sample_dir()
    rows = list(csv.DictReader(open(source / "manifest.csv", newline="")))[:count]
    for row in rows:
        row["video"] = str(source / row["video"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def timed(fn) -> tuple[float, dict]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--chunk", type=int, default=64, help="samples per chunk task (shard_size)")
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="precal-orch-bench-"))
    manifest = first_clips(args.clips, work)
    config = ExtractConfig(shard_size=args.chunk, num_workers=1)

    outside = config.model_copy(update={"allow_outside_root": True})
    flow(lambda: None, name="warm-up")()  # start Prefect's temporary server outside the timings
    warm = read_manifest(first_clips(4, work / "warm"), allow_outside_root=True)
    run_extraction(warm, work / "warm" / "store", outside, progress=False)  # load encoders, hash weights once
    rows = {}
    rows["plain"], _ = timed(
        lambda: run_extraction(
            read_manifest(manifest, allow_outside_root=True), work / "plain", outside, progress=False
        )
    )
    rows["default"], report = timed(lambda: extract_flow(str(manifest), str(work / "default"), outside, progress=False))
    with LocalCluster(n_workers=args.workers, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        on_dask = extract_flow.with_options(task_runner=task_runner("dask", cluster.scheduler_address))
        rows["dask-cold"], _ = timed(lambda: on_dask(str(manifest), str(work / "dask1"), outside, progress=False))
        rows["dask-warm"], _ = timed(lambda: on_dask(str(manifest), str(work / "dask2"), outside, progress=False))
    rows["noop"], noop = timed(lambda: extract_flow(str(manifest), str(work / "default"), outside, progress=False))
    assert noop["chunks"] == 0 and noop["totals"]["ok"] == 0
    result = {
        "clips": args.clips,
        "chunk": args.chunk,
        "chunk_tasks": report["chunks"],
        "dask_workers": args.workers,
        "seconds": {k: round(v, 2) for k, v in rows.items()},
        "clips_per_second": {k: round(args.clips / v, 1) for k, v in rows.items() if k != "noop"},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
