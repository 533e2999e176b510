"""Issue 12, the extraction/store half, damaged stores: verify --repair never runs the store's own code,
status and gc cope with lost shards and symlinks, and the readers refuse absurd pictures, negative .npy
shapes and files that are not regular."""

import json
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.config import EncoderChoice, ExtractConfig
from pipeline.extract import run_extraction
from pipeline.manifest import Sample, read_manifest
from storage.catalog import Catalog
from storage.fingerprint import FileHashCache, content_hash
from storage.maintenance import gc, status, verify
from storage.npy import load_npy, npy_bytes
from storage.shards import write_shard
from tests.helpers import bundled_subset

# ---- 3 and 13: verify --repair ------------------------------------------------------------------


@pytest.fixture
def damaged_store(tmp_path):
    manifest = bundled_subset(tmp_path / "data", 2)
    store = tmp_path / "store"
    run_extraction(
        read_manifest(manifest),
        store,
        ExtractConfig(modalities={"audio": EncoderChoice()}, num_workers=0),
        progress=False,
    )
    shard = store / next(r["shard"] for r in Catalog(store).latest())
    shard.write_bytes(shard.read_bytes()[:-700])
    return manifest, store, shard, next(shard.parent.glob("encoder.json"))


def repair(manifest, store, *extra):
    from pipeline.cli import app

    return CliRunner().invoke(app, ["verify", "--store", str(store), "--repair", "--manifest", str(manifest), *extra])


def test_repair_never_enables_remote_code_recorded_in_the_store(damaged_store, monkeypatch):
    manifest, store, shard, record = damaged_store
    info = json.loads(record.read_text())
    info.update(name="hf", options={"model": str(store / "evil"), "trust_remote_code": True})
    record.write_text(json.dumps(info))
    built = []
    monkeypatch.setattr("extractors.encoder_spec", lambda *a, **kw: built.append(kw) or pytest.fail("built"))
    outcome = repair(manifest, store)
    assert outcome.exit_code == 2 and not built
    assert "trust_remote_code" in outcome.output and "--trust-remote-code" in outcome.output
    assert str(record) in outcome.output.replace("\n", "")
    assert shard.is_file()  # nothing deleted


def test_repair_says_what_it_loads_then_repairs(damaged_store):
    manifest, store, shard, record = damaged_store
    outcome = repair(manifest, store)
    assert outcome.exit_code == 0, outcome.output
    assert "repair will load the audio encoder logmel" in outcome.output
    assert "repaired: 2 samples re-extracted" in outcome.output
    assert not verify(store).bad


def test_repair_with_a_damaged_encoder_record_deletes_nothing(damaged_store):
    manifest, store, shard, record = damaged_store
    record.write_text(record.read_text()[:25])  # truncated
    damaged = shard.read_bytes()
    outcome = repair(manifest, store)
    assert outcome.exit_code == 2 and "damaged encoder record" in outcome.output
    assert str(record) in outcome.output.replace("\n", "")
    assert shard.read_bytes() == damaged


# ---- 18: status, gc, pictures, arrays -----------------------------------------------------------


def test_status_counts_samples_whose_shards_are_gone_as_missing(damaged_store):
    _, store, shard, _ = damaged_store
    shard.unlink()
    [audio] = status(store)["features"]
    assert (audio["ok"], audio["missing"]) == (0, 2)


def test_gc_removes_a_symlink_named_tar_without_following_it(damaged_store, tmp_path):
    _, store, shard, _ = damaged_store
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.tar").write_text("mine")
    (shard.parent / "link.tar").symlink_to(outside, target_is_directory=True)
    removed = gc(store)
    assert shard.parent / "link.tar" in removed and not (shard.parent / "link.tar").exists()
    assert (outside / "keep.tar").read_text() == "mine"


def test_oversize_picture_is_reported_with_its_real_size(tmp_path):
    import av

    from extractors.decode import DecodeError, read_video

    path = tmp_path / "big.mkv"
    with av.open(str(path), "w") as out:  # a real 9000x4000 header, then widened to 20000x20000
        stream = out.add_stream("rawvideo", rate=25)
        stream.width, stream.height, stream.pix_fmt = 9000, 4000, "yuv420p"
        packet = av.Packet(bytes(64))
        packet.stream, packet.pts, packet.dts, packet.time_base = stream, 0, 0, Fraction(1, 25)
        out.mux(packet)
    data = path.read_bytes()
    data = data.replace(b"\xb0\x82\x23\x28", b"\xb0\x82\x4e\x20").replace(b"\xba\x82\x0f\xa0", b"\xba\x82\x4e\x20")
    path.write_bytes(data)
    with pytest.raises(DecodeError, match="absurd picture size 20000x20000"):
        read_video(path, fps=5, size=(32, 32), grey=True)


def test_negative_npy_shape_is_rejected(tmp_path):
    good = npy_bytes(np.zeros((2, 4), np.float16))
    bad = good.replace(b"(2, 4)", b"(-2, -4)")
    with pytest.raises(ValueError, match="shape .* non-negative"):
        load_npy(bad)
    with pytest.raises(ValueError, match="sample s1: member s1.npy: .npy shape"):
        write_shard(tmp_path / "shard.tar", [("s0", {"npy": good}), ("s1", {"npy": bad})])
    assert not list(tmp_path.iterdir())


@pytest.mark.timeout(30)
def test_content_hash_refuses_what_is_not_a_regular_file(tmp_path):
    os.mkfifo(tmp_path / "pipe.wav")
    files = FileHashCache(tmp_path / "hashes.json")
    for path in (tmp_path / "pipe.wav", Path("/dev/zero")):
        digest = content_hash("audio", Sample("a", "train", 0, audio=path), files)
        assert digest == content_hash("audio", Sample("a", "train", 0, audio=path), files)
