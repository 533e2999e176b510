import json
import os
import subprocess
import sys

import numpy as np
import pytest
import webdataset as wds

from pipeline.manifest import read_manifest, write_manifest
from storage.catalog import Catalog, CatalogRow
from storage.fingerprint import FileHashCache, content_hash
from storage.holders import StoreLockedError
from storage.lock import store_lock
from storage.maintenance import gc, status, verify
from storage.npy import load_npy, npy_bytes
from storage.pack import pack
from storage.shards import json_bytes, read_shard, write_shard


def test_shard_round_trip_and_plain_webdataset(tmp_path):
    arrays = {f"s{i}": np.random.rand(i + 1, 4).astype(np.float16) for i in range(3)}
    path = tmp_path / "f" / "shard.tar"
    digest = write_shard(path, ((k, {"npy": npy_bytes(a), "json": json_bytes({"k": k})}) for k, a in arrays.items()))
    assert len(digest) == 64 and not [p for p in path.parent.iterdir() if p != path]  # no temporaries left
    for key, members in read_shard(path):
        assert np.array_equal(load_npy(members["npy"]), arrays[key])
    seen = {s["__key__"]: s for s in wds.WebDataset(str(path), shardshuffle=False).decode()}
    assert set(seen) == set(arrays) and np.array_equal(seen["s2"]["npy"], arrays["s2"])
    assert seen["s1"]["json"] == {"k": "s1"}


def test_failed_write_leaves_nothing(tmp_path):
    def boom():
        yield "a", {"npy": npy_bytes(np.zeros(2))}
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_shard(tmp_path / "x.tar", boom())
    assert list(tmp_path.iterdir()) == []


def test_pickled_arrays_are_refused():
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        load_npy(buf.getvalue())


def test_catalog_newest_row_wins(tmp_path):
    catalog = Catalog(tmp_path)
    base = {"sample_id": "a", "modality": "text", "encoder": "e", "fingerprint": "f", "content_hash": "h"}
    catalog.append([CatalogRow(**base, status="failed", error="bad")])
    catalog.append(
        [
            CatalogRow(**base, status="ok", shard="x.tar", shape=(3, 4)),
            CatalogRow(**{**base, "sample_id": "b"}, status="ok"),
        ]
    )
    latest = {r["sample_id"]: r for r in catalog.latest()}
    assert latest["a"]["status"] == "ok" and latest["a"]["shape"] == [3, 4] and len(latest) == 2
    assert catalog.compact() == 1
    assert len(catalog.parts()) == 1
    assert {r["sample_id"]: r["status"] for r in catalog.latest()} == {"a": "ok", "b": "ok"}
    import pyarrow.dataset as ds  # readable as one dataset without project code

    assert ds.dataset(str(tmp_path / "catalog"), format="parquet").count_rows() == 2


def test_file_hash_cache_uses_size_and_mtime(tmp_path):
    f = tmp_path / "v.bin"
    f.write_bytes(b"abc")
    cache = FileHashCache(tmp_path / "c.json")
    first = cache.sha256(f)
    cache.save()
    reloaded = FileHashCache(tmp_path / "c.json")
    assert reloaded.sha256(f) == first and not reloaded.changed  # not re-read
    f.write_bytes(b"abcd")
    assert reloaded.sha256(f) != first and reloaded.changed


def add_features(store, manifest, modality, fingerprint, dims, skip=()):
    files = FileHashCache(store / "cache" / "file_hashes.json")
    members, rows = [], []
    for i, s in enumerate(manifest.samples):
        if s.sample_id in skip:
            continue
        array = np.full((i % 3 + 1, dims), i, dtype=np.float16)
        members.append((s.sample_id, {"npy": npy_bytes(array), "json": json_bytes({})}))
        rows.append(
            {
                "sample_id": s.sample_id,
                "modality": modality,
                "encoder": "toy",
                "fingerprint": fingerprint,
                "content_hash": content_hash(modality, s, files),
                "status": "ok",
                "shape": list(array.shape),
                "dtype": "float16",
            }
        )
    rel = f"features/{modality}/{fingerprint}/shard-0.tar"
    digest = write_shard(store / rel, members)
    size = (store / rel).stat().st_size
    Catalog(store).append([CatalogRow(**r, shard=rel, shard_sha256=digest, shard_bytes=size) for r in rows])


@pytest.fixture
def toy(tmp_path):
    (tmp_path / "data").mkdir()
    for i in range(9):
        (tmp_path / "data" / f"a{i}.wav").write_bytes(bytes([i]))
    rows = [
        {
            "sample_id": f"s{i}",
            "split": ["train", "valid", "test"][i % 3],
            "label": str(i % 2),
            "text": f"t{i}",
            "audio": f"a{i}.wav",
        }
        for i in range(9)
    ]
    manifest = read_manifest(write_manifest(rows, tmp_path / "data" / "m.csv"))
    store = tmp_path / "store"
    add_features(store, manifest, "text", "ft", 4)
    add_features(store, manifest, "audio", "fa", 2, skip={"s4"})
    return manifest, store


def test_pack_gathers_modalities_and_is_reused(toy):
    manifest, store = toy
    result = pack(store, manifest, {"text": "ft"}, progress=False)
    meta = json.loads((result.path / "pack.json").read_text())
    assert result.created and meta["classes"] == ["0", "1"] and meta["modalities"]["text"]["dim"] == 4
    assert {s: v["count"] for s, v in meta["splits"].items()} == {"train": 3, "valid": 3, "test": 3}
    samples = list(wds.WebDataset(str(result.path / "test-000000.tar"), shardshuffle=False).decode())
    assert [s["__key__"] for s in samples] == ["s2", "s5", "s8"]
    assert samples[0]["json"]["target"] == 0 and samples[0]["text.npy"].shape == (3, 4)
    mtime = os.path.getmtime(result.path / "pack.json")
    again = pack(store, manifest, {"text": "ft"}, progress=False)
    assert not again.created and again.pack_id == result.pack_id
    assert os.path.getmtime(result.path / "pack.json") == mtime


def test_pack_drops_removed_samples_and_changes_id(toy, tmp_path):
    manifest, store = toy
    first = pack(store, manifest, {"text": "ft"}, progress=False)
    manifest.samples = manifest.samples[:5]
    second = pack(store, manifest, {"text": "ft"}, progress=False)
    assert second.pack_id != first.pack_id and sum(second.counts.values()) == 5


def test_verify_names_damaged_and_missing_shards_and_gc(toy):
    manifest, store = toy
    assert verify(store).bad == {}
    text_shard = store / "features/text/ft/shard-0.tar"
    data = bytearray(text_shard.read_bytes())
    data[700] ^= 0xFF
    text_shard.write_bytes(bytes(data))
    (store / "features/audio/fa/shard-0.tar").unlink()
    report = verify(store)
    assert report.bad == {
        "features/text/ft/shard-0.tar": "sha256 mismatch (damaged or modified)",
        "features/audio/fa/shard-0.tar": "missing",
    }
    assert len(report.samples["features/audio/fa/shard-0.tar"]) == 8
    orphan = store / "features/text/ft/orphan.tar"
    orphan.write_bytes(b"x")
    tmp = store / "features/text/ft/shard-1.tar.tmp-123-abc"
    tmp.write_bytes(b"x")
    assert set(gc(store, dry_run=True)) == {orphan, tmp} and orphan.exists()
    gc(store)
    assert not orphan.exists() and not tmp.exists() and text_shard.exists()


def test_status_counts(toy):
    manifest, store = toy
    Catalog(store).append([CatalogRow("s4", "audio", "toy", "fa", "x", "failed", error="s4.wav: no audio stream")])
    info = status(store)
    assert {(f["modality"], f["ok"], f["failed"]) for f in info["features"]} == {("audio", 8, 1), ("text", 9, 0)}
    assert info["failed"] == [
        {
            "sample_id": "s4",
            "modality": "audio",
            "encoder": "toy",
            "fingerprint": "fa",
            "error": "s4.wav: no audio stream",
        }
    ]


def test_second_writer_is_refused_with_a_clear_message(tmp_path):
    code = (
        "import sys, pathlib; from storage.lock import store_lock\n"
        "with store_lock(pathlib.Path(sys.argv[1])):\n    print('held', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreLockedError, match=f"pid {holder.pid}"):
            with store_lock(tmp_path):
                pass
    finally:
        holder.communicate("")  # release
    with store_lock(tmp_path):  # free again once the holder exits
        pass


def test_pack_marks_missing_modalities_and_ignores_stale_features(toy):
    manifest, store = toy
    (manifest.root / "a7.wav").write_bytes(b"changed since extraction")
    result = pack(store, manifest, {"text": "ft", "audio": "fa"}, progress=False)
    samples = {
        s["__key__"]: s
        for split in ("train", "valid", "test")
        for s in wds.WebDataset(str(result.path / f"{split}-000000.tar"), shardshuffle=False).decode()
    }
    assert samples["s4"]["json"]["present"] == {"audio": False, "text": True} and "audio.npy" not in samples["s4"]
    assert samples["s7"]["json"]["present"]["audio"] is False  # its audio changed: the old features are stale
    assert samples["s1"]["audio.npy"].shape == (2, 2) and samples["s1"]["json"]["present"]["audio"] is True
