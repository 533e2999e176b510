"""Small builders shared by tests."""

import csv
import shutil
from pathlib import Path

from pipeline.datasets.avdigits import bundled_sample_dir


def bundled_subset(folder: Path, count: int, start: int = 0) -> Path:
    """Copy `count` bundled AV-digits clips and their manifest rows into `folder`; return the manifest."""
    source = bundled_sample_dir()
    rows = list(csv.DictReader(open(source / "manifest.csv", newline="")))[start:start + count]
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        target = folder / row["video"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / row["video"], target)
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest
