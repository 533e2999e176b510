"""Incremental extraction: what a re-run costs compared with the full extraction.

On the full AV-digits set (built from ../shared/data on first use) with the default encoders:
  full   extraction of 90% of the set into an empty store
  noop   the same again, nothing changed                 target <= 0.05 of full, no shard written
  add10  the whole set (about 10% of the full run's size is new)     target <= 0.15
  swap   audio switched from logmel to mfcc              target about audio's share of the full run
Timings are in-process (Prefect start-up is measured separately and reported beside them).

    python benchmarks/incremental_bench.py [--data DIR] [--json PATH]
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

from pipeline.config import EncoderChoice, ExtractConfig  # noqa: E402
from pipeline.datasets.avdigits import build_avdigits  # noqa: E402
from pipeline.extract import run_extraction  # noqa: E402
from pipeline.manifest import read_manifest  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def full_set(folder: Path) -> Path:
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        build_avdigits(fsdd=SHARED / "fsdd" / "recordings", mnist=SHARED / "mnist" / "mnist_5k.csv.gz", out=folder)
    return manifest


def subset(manifest: Path, share: float) -> Path:
    """The first `share` of the rows, as a manifest beside the original (same relative paths)."""
    rows = list(csv.DictReader(open(manifest, newline="")))
    path = manifest.with_name(f"manifest-{int(share * 100)}.csv")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[: round(len(rows) * share)])
    return path


def timed(manifest: Path, store: Path, config: ExtractConfig) -> tuple[float, dict]:
    started = time.perf_counter()
    report = run_extraction(read_manifest(manifest), store, config, progress=False)
    return time.perf_counter() - started, report.to_dict()


def prefect_startup_seconds() -> float:
    """Time to start Prefect's temporary server and run an empty flow (paid once per CLI call)."""
    from flows.prefect_env import apply_offline_defaults

    apply_offline_defaults()
    from prefect import flow

    @flow
    def empty():
        return 0

    started = time.perf_counter()
    empty()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT / "benchmarks" / ".cache" / "avdigits-full",
        help="AV-digits folder (built there from ../shared/data if missing)",
    )
    parser.add_argument("--json", type=Path, help="write the ratios as JSON here")
    args = parser.parse_args()
    manifest = full_set(args.data)
    config = ExtractConfig(num_workers=1)
    swapped = config.model_copy(update={"modalities": {**config.modalities, "audio": EncoderChoice(name="mfcc")}})
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        full, full_report = timed(subset(manifest, 10 / 11), store, config)
        noop, noop_report = timed(subset(manifest, 10 / 11), store, config)
        add10, _ = timed(manifest, store, config)
        swap, _ = timed(manifest, store, swapped)
    audio_share = next(m["seconds"] for m in full_report["modalities"] if m["modality"] == "audio") / full
    result = {
        "full_seconds": round(full, 2),
        "noop_ratio": round(noop / full, 4),
        "noop_shards_written": sum(m["shards_written"] for m in noop_report["modalities"]),
        "add10_ratio": round(add10 / full, 4),
        "swap_ratio": round(swap / full, 4),
        "swapped_modality_share_of_full": round(audio_share, 4),
        "prefect_startup_seconds": round(prefect_startup_seconds(), 2),
    }
    for key, value in result.items():
        print(f"{key:32} {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
