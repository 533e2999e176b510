"""Extraction with media and store in an S3 bucket (SeaweedFS on loopback) against local disk, in one run.

    python benchmarks/object_store_bench.py [--data DIR] [--limit N] [--repeat N] [--workers N] [--json PATH]

Builds the full AV-digits set (2,500 clips) from ../shared/data if missing, copies its clips and manifest
into a bucket of a SeaweedFS server started here (loopback, free ports, temporary data), then extracts
the same samples (text, audio, video; default encoders) twice over: manifest, media and store on local
disk, and manifest, media and store in the bucket. Runs alternate and the fastest of each is kept (the
machine is shared). Reports both times, the ratio local / bucket (1.0: the bucket costs nothing; the
target is >= 0.8), the S3 requests per sample by type, counted by the server, and the CPU time the
server itself used in the fastest bucket run (here it shares the machine's cores with the extraction).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.incremental_bench import full_set  # noqa: E402
from pipeline.config import ExtractConfig  # noqa: E402
from pipeline.extract import run_extraction  # noqa: E402
from pipeline.manifest import read_manifest  # noqa: E402
from storage.remote import URL, location  # noqa: E402
from tests.s3server import S3Server, upload  # noqa: E402


def first_rows(manifest: Path, limit: int | None, out: Path) -> Path:
    """The first `limit` rows and their clips, copied to `out` (the whole set when limit is None)."""
    rows = list(csv.DictReader(open(manifest, newline="")))[:limit]
    for row in rows:
        (out / row["video"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(manifest.parent / row["video"], out / row["video"])
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out / "manifest.csv"


def timed_extraction(manifest: str, store, config: ExtractConfig) -> tuple[float, dict]:
    started = time.perf_counter()
    report = run_extraction(read_manifest(manifest), location(store), config, progress=False)
    return time.perf_counter() - started, report.totals()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT / "benchmarks" / ".cache" / "avdigits-full",
        help="AV-digits folder (built there from ../shared/data if missing)",
    )
    parser.add_argument("--limit", type=int, help="only the first N clips (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each kind; the fastest is kept")
    parser.add_argument("--workers", type=int, default=1, help="decoding worker processes")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    config = ExtractConfig(num_workers=args.workers)
    with tempfile.TemporaryDirectory(prefix="precal-osbench-") as tmp:
        tmp = Path(tmp)
        local_manifest = first_rows(full_set(args.data), args.limit, tmp / "data")
        samples = len(read_manifest(local_manifest).samples)
        server = S3Server(tmp / "seaweedfs").start()
        try:
            os.environ.update(server.env)  # s3fs reads the endpoint and keys from the environment
            bucket = URL(server.url("bench"))
            upload(tmp / "data", bucket / "data")
            local, in_bucket, server_cpu, requests = [], [], [], None
            for n in range(args.repeat):
                seconds, totals = timed_extraction(str(local_manifest), tmp / f"store-{n}", config)
                local.append(seconds)
                before, cpu_before = server.requests(), server.cpu_seconds()
                seconds, bucket_totals = timed_extraction(
                    str(bucket / "data" / "manifest.csv"), bucket / f"store-{n}", config
                )
                in_bucket.append(seconds)
                requests = server.requests() - before
                server_cpu.append(server.cpu_seconds() - cpu_before)
                assert bucket_totals == totals, (bucket_totals, totals)
        finally:
            server.stop()
    result = {
        "samples": samples,
        "extractions": totals["ok"] + totals["failed"],
        "local_seconds": round(min(local), 2),
        "bucket_seconds": round(min(in_bucket), 2),
        "ratio_local_over_bucket": round(min(local) / min(in_bucket), 3),
        "server_cpu_seconds": round(server_cpu[in_bucket.index(min(in_bucket))], 2),  # in the fastest bucket run
        "requests_per_sample": {kind: round(count / samples, 2) for kind, count in sorted(requests.items())},
        "requests_per_sample_total": round(sum(requests.values()) / samples, 2),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
