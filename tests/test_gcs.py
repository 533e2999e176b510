"""Everything in a Google Cloud Storage bucket (gs://, through gcsfs, against the GCS emulator): the same
store, the same guarantees as on S3. GCS here gets the lease without conditional writes (the emulator
does not check them), so the second-extraction test exercises that fallback."""

from __future__ import annotations

import csv
import os
import signal
import time

import pytest

from pipeline.config import ExtractConfig
from pipeline.extract import run_extraction, selection_for
from pipeline.manifest import read_manifest
from storage import remote
from storage.holders import StoreLockedError
from storage.layout import Store
from storage.pack import pack
from storage.packinfo import verify_pack
from storage.remote import URL
from tests.helpers import bundled_subset
from tests.orchestration_helpers import split_subset
from tests.s3server import upload
from tests.test_object_store import assert_complete, assert_honest, start
from trainers.config import TrainConfig
from trainers.train import evaluate, train


def upload_to_gcs(gcs, tmp_path, count) -> tuple[str, URL]:
    local = tmp_path / "data"
    manifest = bundled_subset(local, count) if isinstance(count, int) else split_subset(local, count)
    prefix = URL(gcs.new_prefix())
    upload(manifest.parent, prefix / "data")
    return str(prefix / "data" / "manifest.csv"), prefix


def test_extraction_from_and_into_gcs_and_a_noop_rerun_writes_nothing(gcs, tmp_path):
    manifest, prefix = upload_to_gcs(gcs, tmp_path, 6)
    store = prefix / "store"
    config = ExtractConfig(shard_size=4, batch_size=4, num_workers=1)
    report = run_extraction(read_manifest(manifest), store, config, progress=False)
    assert (report.totals()["ok"], report.totals()["failed"]) == (18, 0)
    assert_honest(store)
    assert_complete(store, [row["sample_id"] for row in csv.DictReader(open(tmp_path / "data" / "manifest.csv"))])
    written = gcs.object_generations()
    again = run_extraction(read_manifest(manifest), store, config, progress=False)
    assert again.totals()["ok"] == 0 and again.totals()["skipped"] == 18
    assert gcs.object_generations() == written  # no object written, replaced or deleted


def test_a_second_extraction_on_gcs_stops_naming_the_holder(gcs, tmp_path):
    manifest, prefix = upload_to_gcs(gcs, tmp_path, 6)
    store = prefix / "store"
    first = start(manifest, store)
    try:
        deadline = time.monotonic() + 120
        while not remote.exists(Store(store).lease):  # polling the bucket for the first run's lease
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read() if first.poll() else ""
            time.sleep(0.05)
        with pytest.raises(StoreLockedError, match=rf"pid {first.pid} on host "):
            run_extraction(read_manifest(manifest), store, ExtractConfig(num_workers=0), progress=False)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()


@pytest.mark.slow
def test_pack_train_and_evaluate_from_gcs(gcs, tmp_path, one_torch_thread):
    manifest, prefix = upload_to_gcs(gcs, tmp_path, {"train": 8, "valid": 2, "test": 2})
    store = prefix / "store"
    config = ExtractConfig(shard_size=5, batch_size=4, num_workers=0)
    samples = read_manifest(manifest)
    run_extraction(samples, store, config, progress=False)
    packed = pack(store, samples, selection_for(store, config), progress=False)
    assert str(packed.path).startswith("gs://") and verify_pack(packed.path) is None
    settings = {"epochs": 2, "batch_size": 4, "num_workers": 0, "shuffle_buffer": 8, "hidden": 8}
    trained = train(TrainConfig(pack=str(packed.path), out=tmp_path / "run", **settings))
    assert evaluate(tmp_path / "run" / "best.pt", str(packed.path), "test") == pytest.approx(trained["test"])
