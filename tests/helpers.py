"""Small builders shared by tests."""

import contextlib
import csv
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.datasets.avdigits import bundled_sample_dir
from trainers import steps


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


def crash_campaign(manifest, store_named, start, finish, assert_honest, kills: int):
    """Extraction SIGKILLed at seeded random moments until `kills` kills, each store checked after every
    kill, then finished; returns that store. `start(manifest, store)` runs an extraction in a new session
    (a Popen), `finish` runs one to its end. A run that ends before its kill moment is checked and the
    campaign goes on in a fresh store. The store named "reference" holds one uninterrupted run."""
    started = time.monotonic()
    finish(manifest, store_named("reference"))
    full = time.monotonic() - started
    rng = random.Random(1234)
    done, stores = 0, 0
    store = store_named("store-0")
    while done < kills:
        proc = start(manifest, store)
        try:
            proc.wait(timeout=rng.uniform(0.2, full))
            assert proc.returncode == 0, proc.stderr.read()
            assert_honest(store)
            stores += 1  # it finished before the kill: carry on crashing a fresh store
            store = store_named(f"store-{stores}")
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            done += 1
            assert_honest(store)
    finish(manifest, store)
    assert_honest(store)
    return store


class Killed(Exception):
    """Stands for a kill in the middle of training."""


@contextlib.contextmanager
def killed_at_step(step: int):
    """Within the block, training dies (Killed) at its `step`-th optimiser step, counted from 1; the block
    expects it to."""
    real, calls = steps.train_step, []

    def dies(*args, **kwargs):
        calls.append(1)
        if len(calls) == step:
            raise Killed
        return real(*args, **kwargs)

    steps.train_step = dies
    try:
        with pytest.raises(Killed):
            yield
    finally:
        steps.train_step = real
