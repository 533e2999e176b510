"""SIGKILL an extraction at random moments, re-run, and check the store is whole and honest."""

import csv
import subprocess
import sys
from collections import Counter

import pytest

from storage.catalog import Catalog, member_of
from storage.maintenance import gc, verify
from storage.npy import load_npy
from storage.shards import read_shard
from tests.helpers import bundled_subset, crash_campaign

pytestmark = pytest.mark.slow

RUN = """
import sys
from pathlib import Path
from pipeline.config import ExtractConfig
from pipeline.extract import run_extraction
from pipeline.manifest import read_manifest
config = ExtractConfig(shard_size=3, batch_size=4, num_workers=1)
run_extraction(read_manifest(sys.argv[1]), Path(sys.argv[2]), config, progress=False, wait=60)
print("finished", flush=True)
"""


def start(manifest, store):
    # A new session, so the kill takes the decoding workers too, as a crash of the machine would.
    return subprocess.Popen(
        [sys.executable, "-c", RUN, str(manifest), str(store)],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(manifest, store):
    proc = start(manifest, store)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0 and "finished" in out, err


def assert_honest(store):
    """Everything the catalog calls ok is in an intact shard with the recorded shape."""
    assert verify(store).bad == {}
    for row in Catalog(store).latest():
        if row["status"] == "ok":
            arrays = {k: m for k, m in read_shard(store / row["shard"])}
            assert list(load_npy(arrays[member_of(row)]["npy"]).shape) == row["shape"]


def assert_complete(store, ids):
    latest = Catalog(store).latest()
    assert Counter((r["modality"], r["status"]) for r in latest) == {
        (m, "ok"): len(ids) for m in ("text", "audio", "video")
    }
    gc(store)  # drop orphans a crash left between shard rename and catalog commit
    on_disk = Counter()
    for shard in (store / "features").rglob("*.tar"):
        for key, members in read_shard(shard):
            load_npy(members["npy"])  # reads back whole
            on_disk[(shard.parts[-3], key)] += 1
    # Each stored sample exactly once, and nothing but what the rows name (a sample whose content another
    # had first, e.g. a repeated transcript, names that one's member instead of being extracted again).
    assert set(on_disk.values()) == {1} and set(on_disk) == {(r["modality"], member_of(r)) for r in latest}


def test_sigkill_at_random_moments_then_rerun(tmp_path):
    manifest = bundled_subset(tmp_path / "data", 24)
    ids = [row["sample_id"] for row in csv.DictReader(open(manifest))]
    store = crash_campaign(manifest, lambda name: tmp_path / name, start, finish, assert_honest, kills=10)
    assert_complete(store, ids)
    reference = {(r["sample_id"], r["modality"]): r["shape"] for r in Catalog(tmp_path / "reference").latest()}
    assert {(r["sample_id"], r["modality"]): r["shape"] for r in Catalog(store).latest()} == reference
