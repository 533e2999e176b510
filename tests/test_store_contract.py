"""The store contract in storage/: the Store layout, FeatureWriter's commit order, typed catalog rows,
skips and packs keyed by (content hash, encoder fingerprint), variants under their own ids."""

import json
from pathlib import Path

import numpy as np
import pytest

from extractors import encoder_spec
from pipeline.encoders import store_fingerprint
from pipeline.extract import extract_modality, plan
from pipeline.manifest import read_manifest, write_manifest
from storage import features as features_module
from storage.catalog import Catalog, CatalogRow
from storage.features import FeatureSet, FeatureWriter, UnstorableError
from storage.fingerprint import FileHashCache, content_hash
from storage.layout import MODALITIES, SPLITS, Store, is_temporary, pack_file, temporary
from storage.maintenance import gc
from storage.npy import load_npy
from storage.pack import pack
from storage.shards import read_shard

DTYPE = "float16"


def test_store_paths_are_built_in_one_place(tmp_path):
    store = Store(tmp_path)
    shard = store.new_shard("audio", "f00")
    assert shard.startswith("features/audio/f00/shard-") and shard.endswith(".tar")
    assert store.shard_path(shard) == tmp_path / shard and store.relative(store.shard_path(shard)) == shard
    assert store.encoder_record("audio", "f00") == tmp_path / "features/audio/f00/encoder.json"
    assert store.encoder_record_of_shard(shard) == store.encoder_record("audio", "f00")
    assert store.catalog_dir == tmp_path / "catalog" and store.file_hashes == tmp_path / "cache/file_hashes.json"
    assert store.lock == tmp_path / ".lock" and pack_file(store.pack_dir("p1")) == tmp_path / "packed/p1/pack.json"
    assert MODALITIES == ("text", "audio", "video") and SPLITS == ("train", "valid", "test")


def test_temporaries_are_recognised_and_left_out_of_packs(tmp_path):
    store = Store(tmp_path)
    finished, crashed = store.pack_dir("p1"), temporary(store.pack_dir("p2"))
    finished.mkdir(parents=True)
    crashed.mkdir()
    assert is_temporary(crashed) and not is_temporary(finished) and crashed.parent == finished.parent
    assert store.pack_dirs() == [finished] and store.temporaries() == [crashed]


def test_catalog_rows_round_trip(tmp_path):
    row = CatalogRow(
        "s1",
        "audio",
        "logmel",
        "f00",
        "h1",
        "ok",
        shard="features/audio/f00/x.tar",
        shape=(3, 4),
        dtype=DTYPE,
        shard_sha256="ab",
        shard_bytes=10,
    )
    Catalog(tmp_path).append([row])
    (read,) = Catalog(tmp_path).latest()
    assert read["shape"] == [3, 4] and read["created_at"] is not None
    assert CatalogRow.from_dict(read) == CatalogRow(**{**row.__dict__, "created_at": read["created_at"]})


FEATURES = FeatureSet("audio", "toy", "f00", DTYPE)


def test_feature_writer_commits_shards_then_rows(tmp_path):
    writer = FeatureWriter(tmp_path, FEATURES, shard_size=2)
    for i in range(3):
        writer.add(f"s{i}", f"h{i}", np.full((2, 3), i, np.float32))
    writer.fail("bad", "hb", "bad.wav: no audio stream")
    assert writer.ok == 2 and len(Catalog(tmp_path).latest()) == 2  # the first shard is committed, rows named
    writer.close()
    rows = {r["sample_id"]: r for r in Catalog(tmp_path).latest()}
    assert (writer.ok, writer.failed, writer.shards_written) == (3, 1, 2)
    bad = rows["bad"]
    assert bad["status"] == "failed" and bad["shard"] == "" and "no audio stream" in bad["error"]
    for sid in ("s0", "s1", "s2"):
        row = rows[sid]
        assert row["status"] == "ok" and row["shape"] == [2, 3] and row["dtype"] == DTYPE
        members = dict(read_shard(Store(tmp_path).shard_path(row["shard"])))[sid]
        assert load_npy(members["npy"]).dtype == np.float16
        assert json.loads(members["json"])["content_hash"] == row["content_hash"]


def test_a_name_too_long_for_a_shard_fails_its_sample_before_anything_is_buffered(tmp_path):
    writer = FeatureWriter(tmp_path, FEATURES, shard_size=10)
    with pytest.raises(UnstorableError, match="tar shards allow 100"):
        writer.add("x" * 120, "h", np.zeros(3, np.float32))
    writer.close()
    assert writer.ok == 0 and not Store(tmp_path).feature_shards()


def test_a_crash_between_shard_and_catalog_claims_nothing_and_gc_removes_the_orphan(tmp_path, monkeypatch):
    writer = FeatureWriter(tmp_path, FEATURES, shard_size=10)
    writer.add("s0", "h0", np.zeros((2, 3), np.float32))
    monkeypatch.setattr(Catalog, "append", lambda self, rows: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError, match="killed"):
        writer.close()
    monkeypatch.undo()
    (orphan,) = Store(tmp_path).feature_shards()
    assert not is_temporary(orphan) and Catalog(tmp_path).latest() == []
    assert gc(tmp_path) == [orphan] and not orphan.exists()


def test_a_failed_shard_write_leaves_no_rows_and_no_temporaries(tmp_path, monkeypatch):
    writer = FeatureWriter(tmp_path, FEATURES, shard_size=10)
    writer.add("s0", "h0", np.zeros((2, 3), np.float32))
    monkeypatch.setattr(features_module, "write_shard", lambda path, samples: (_ for _ in ()).throw(OSError("full")))
    with pytest.raises(OSError, match="full"):
        writer.close()
    assert Catalog(tmp_path).latest() == [] and not Store(tmp_path).feature_shards()


# ---- skips and packs by (content hash, encoder fingerprint) --------------------------------------------


@pytest.fixture
def audio_store(tmp_path):
    """Three samples whose 'audio' features are in the store, written as extraction writes them."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        (data / f"a{i}.wav").write_bytes(bytes([i]) * 8)
    rows = [{"sample_id": f"s{i}", "split": "train", "label": str(i % 2), "audio": f"a{i}.wav"} for i in range(3)]
    manifest = read_manifest(write_manifest(rows, data / "m.csv"))
    spec, store = encoder_spec("audio"), tmp_path / "store"
    fingerprint = store_fingerprint(spec, DTYPE)
    files = FileHashCache(Store(store).file_hashes)
    writer = FeatureWriter(store, FeatureSet("audio", spec.encoder_name, fingerprint, DTYPE), shard_size=10)
    for i, sample in enumerate(manifest.samples):
        writer.add(sample.sample_id, content_hash("audio", sample, files), np.full((2, 4), i, np.float32))
    writer.close()
    return {"data": data, "rows": rows, "manifest": manifest, "store": store, "spec": spec, "fingerprint": fingerprint}


class FailingEncoder:
    """Stands for an encoder that must not be used: reusing stored features computes nothing."""

    modality, name = "audio", "logmel"

    def fingerprint(self) -> str:
        return encoder_spec("audio").fingerprint()

    def __getattr__(self, name):
        raise AssertionError(f"the encoder was used ({name})")


def test_unchanged_content_is_skipped_and_changed_content_extracted_again(audio_store):
    s = audio_store
    assert plan(s["manifest"], s["store"], s["spec"], DTYPE) == ([], 3)
    (s["data"] / "a1.wav").write_bytes(b"new bytes")
    todo, skipped = plan(read_manifest(s["manifest"].path), s["store"], s["spec"], DTYPE)
    assert [t.sample.sample_id for t in todo] == ["s1"] and skipped == 2


def test_a_renamed_sample_with_unchanged_content_is_skipped_and_packed_under_its_new_id(audio_store):
    """The features are those of its content: nothing is extracted again, and the pack reads them from the
    shard member of the id they were extracted under."""
    s = audio_store
    renamed = [{**row, "sample_id": "renamed"} if row["sample_id"] == "s2" else row for row in s["rows"]]
    manifest = read_manifest(write_manifest(renamed, s["data"] / "renamed.csv"))
    (todo,), skipped = plan(manifest, s["store"], s["spec"], DTYPE)
    assert skipped == 3 and todo.sample.sample_id == "renamed" and todo.reuse["sample_id"] == "s2"
    summary = extract_modality([todo], FailingEncoder(), s["store"], dtype=DTYPE, progress=False)
    assert (summary.ok, summary.failed) == (0, 0)  # no extraction: a row reusing s2's features
    row = next(r for r in Catalog(s["store"]).latest() if r["sample_id"] == "renamed")
    assert (row["shard"], row["member"]) == (todo.reuse["shard"], "s2")
    assert plan(manifest, s["store"], s["spec"], DTYPE) == ([], 3)
    result = pack(s["store"], manifest, {"audio": s["fingerprint"]}, progress=False)
    packed = dict(read_shard(result.path / "train-000000.tar"))
    assert sorted(packed) == ["renamed", "s0", "s1"]
    assert np.array_equal(load_npy(packed["renamed"]["audio.npy"]), np.full((2, 4), 2, np.float16))
    assert json.loads(packed["renamed"]["json"])["sample_id"] == "renamed"


def test_a_content_stored_under_several_members_is_never_lent_to_another_id(tmp_path):
    """An importer's samples all hash as the one file they come from, each with features of its own: a
    sample of the manifest with that content but no row of its own gets nothing, not a neighbour's."""
    data, store = tmp_path / "data", tmp_path / "store"
    data.mkdir()
    (data / "features.pkl").write_bytes(b"one file for every sample")
    rows = [{"sample_id": sid, "split": "train", "label": "0", "audio": "features.pkl"} for sid in ("a", "b", "c")]
    manifest = read_manifest(write_manifest(rows, data / "m.csv"))
    files = FileHashCache(Store(store).file_hashes)
    writer = FeatureWriter(store, FeatureSet("audio", "import", "f" * 16, DTYPE), shard_size=10)
    for i, sample in enumerate(manifest.samples[:2]):
        writer.add(sample.sample_id, content_hash("audio", sample, files), np.full((2, 4), i, np.float32))
    writer.close()
    result = pack(store, manifest, {"audio": "f" * 16}, progress=False)
    packed = dict(read_shard(result.path / "train-000000.tar"))
    assert sorted(packed) == ["a", "b"] and result.dropped == ["c"]
    assert np.array_equal(load_npy(packed["b"]["audio.npy"]), np.full((2, 4), 1, np.float16))


def test_two_stores_built_from_the_same_inputs_give_the_same_pack(tmp_path):
    """The pack id covers what is packed, not the (always new) shard names: a store rebuilt from scratch,
    here or elsewhere, packs under the same id with the samples in the same order."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(6):
        (data / f"a{i}.wav").write_bytes(bytes([i]) * 8)
    rows = [{"sample_id": f"s{i}", "split": "train", "label": str(i % 2), "audio": f"a{i}.wav"} for i in range(6)]
    manifest = read_manifest(write_manifest(rows, data / "m.csv"))
    packs = []
    for name in ("one", "two"):
        store = tmp_path / name
        files = FileHashCache(Store(store).file_hashes)
        writer = FeatureWriter(store, FeatureSet("audio", "logmel", "f" * 16, DTYPE), shard_size=4)
        for i, sample in enumerate(manifest.samples):
            writer.add(sample.sample_id, content_hash("audio", sample, files), np.full((2, 4), i, np.float32))
        writer.close()
        packs.append(pack(store, manifest, {"audio": "f" * 16}, progress=False))
    assert packs[0].pack_id == packs[1].pack_id
    assert [key for key, _ in read_shard(packs[0].path / "train-000000.tar")] == [
        key for key, _ in read_shard(packs[1].path / "train-000000.tar")
    ]


def test_a_variant_extraction_leaves_the_originals_rows_newest(tmp_path):
    """A corrupted transcript is extracted under its variant id; the sample's own row stays the newest,
    and the variant's pack holds the corrupted features under the sample's own id."""
    from pipeline.config import EncoderChoice, ExtractConfig
    from pipeline.extract import run_extraction
    from pipeline.variants import build_variant, variant_id

    rows = [
        {"sample_id": f"t{i}", "split": "test", "label": str(i % 2), "text": f"one two three four five {i}"}
        for i in range(2)
    ]
    manifest = read_manifest(write_manifest(rows, tmp_path / "m.csv"))
    store = tmp_path / "store"
    config = ExtractConfig(modalities={"text": EncoderChoice()}, num_workers=0)
    run_extraction(manifest, store, config, progress=False)
    before = {r["sample_id"]: r for r in Catalog(store).latest()}
    record = build_variant(
        manifest.samples, store, config, "classification", "text-drop", 5, tmp_path / "v", progress=False
    )
    after = {r["sample_id"]: r for r in Catalog(store).latest()}
    assert {sid: after[sid] for sid in before} == before
    assert sorted(set(after) - set(before)) == [variant_id("t0", "text-drop-5"), variant_id("t1", "text-drop-5")]
    variant_rows = [after[variant_id(sid, "text-drop-5")] for sid in before]
    assert all(r["content_hash"] != before[sid]["content_hash"] for r, sid in zip(variant_rows, before))
    packed = dict(read_shard(Path(record["pack"]) / "test-000000.tar"))
    assert sorted(packed) == ["t0", "t1"]
