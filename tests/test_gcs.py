"""Everything in a Google Cloud Storage bucket (gs://, through gcsfs, against the GCS emulator): the same
store, the same guarantees as on S3. GCS here gets the lease without conditional writes (the emulator
does not check them), so the second-extraction test exercises that fallback."""

from __future__ import annotations

import pytest

from pipeline.config import ExtractConfig
from pipeline.extract import run_extraction, selection_for
from pipeline.manifest import read_manifest
from storage.pack import pack
from storage.packinfo import verify_pack
from tests.test_object_store import assert_a_second_extraction_stops, extract_six, upload_subset
from trainers.config import TrainConfig
from trainers.train import evaluate, train


def test_extraction_from_and_into_gcs_and_a_noop_rerun_writes_nothing(gcs, tmp_path):
    manifest, prefix = upload_subset(gcs, tmp_path, 6)
    store = prefix / "store"
    config = extract_six(manifest, store, tmp_path)
    written = gcs.object_generations()
    again = run_extraction(read_manifest(manifest), store, config, progress=False)
    assert again.totals()["ok"] == 0 and again.totals()["skipped"] == 18
    assert gcs.object_generations() == written  # no object written, replaced or deleted


def test_a_second_extraction_on_gcs_stops_naming_the_holder(gcs, tmp_path):
    manifest, prefix = upload_subset(gcs, tmp_path, 6)
    assert_a_second_extraction_stops(manifest, prefix / "store")


@pytest.mark.slow
def test_pack_train_and_evaluate_from_gcs(gcs, tmp_path, one_torch_thread):
    manifest, prefix = upload_subset(gcs, tmp_path, {"train": 8, "valid": 2, "test": 2})
    store = prefix / "store"
    config = ExtractConfig(shard_size=5, batch_size=4, num_workers=0)
    samples = read_manifest(manifest)
    run_extraction(samples, store, config, progress=False)
    packed = pack(store, samples, selection_for(store, config), progress=False)
    assert str(packed.path).startswith("gs://") and verify_pack(packed.path) is None
    settings = {"epochs": 2, "batch_size": 4, "num_workers": 0, "shuffle_buffer": 8, "hidden": 8}
    trained = train(TrainConfig(pack=str(packed.path), out=tmp_path / "run", **settings))
    assert evaluate(tmp_path / "run" / "best.pt", str(packed.path), "test") == pytest.approx(trained["test"])
