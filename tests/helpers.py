"""Small builders shared by tests."""

import csv
import shutil
from pathlib import Path

import numpy as np

from pipeline.datasets.avdigits import bundled_sample_dir


def bundled_subset(folder: Path, count: int, start: int = 0) -> Path:
    """Copy `count` bundled AV-digits clips and their manifest rows into `folder`; return the manifest."""
    source = bundled_sample_dir()
    rows = list(csv.DictReader(open(source / "manifest.csv", newline="")))[start : start + count]
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


def assert_features_agree(a: np.ndarray, b: np.ndarray, err_msg: str = "") -> None:
    """Features computed in two processes, with two thread counts or on two machines agree within float16's
    resolution, not bit for bit: a different summation order moves the float32 result in its last bits,
    which can flip the float16 rounding by one step (2**-10 relative, ~1e-3 near 1). Two steps of slack,
    and 1e-3 absolute for values near zero (the README's "Reproducibility" states the same bound)."""
    assert a.shape == b.shape and a.dtype == b.dtype, err_msg
    np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), rtol=2**-9, atol=1e-3, err_msg=err_msg)
