"""Media from a bucket spooled to local disk: a clip is fetched once per run (not once to hash it and once
per decoder), decoders read the local copy or fetch the URL themselves, messages name the URL, the spool
stays within its limit and serves no stale bytes, and killed processes' spools are cleaned up."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from extractors.decode import DecodeError, read_audio
from extractors.fetch import Spooled
from pipeline.config import ExtractConfig
from pipeline.extract import run_extraction
from pipeline.manifest import read_manifest
from pipeline.media_spool import PREFIX, MediaSpool, _remove_abandoned
from storage import remote
from storage.catalog import Catalog
from storage.remote import URL
from tests.helpers import bundled_sample_dir, bundled_subset
from tests.s3server import upload


def a_clip() -> Path:
    return next(iter(sorted((bundled_sample_dir() / "clips").rglob("*.mp4"))))


def extraction_gets(s3, tmp_path, count: int) -> tuple[int, list[dict]]:
    """GET requests of a first extraction of `count` bundled clips with manifest, media and store in the
    bucket, and the catalog rows it wrote."""
    folder = tmp_path / f"data-{count}"
    bundled_subset(folder, count)
    prefix = URL(s3.new_prefix())
    upload(folder, prefix / "data")
    config = ExtractConfig(shard_size=64, batch_size=4, num_workers=1)  # one shard per modality: store reads alike
    before = s3.requests()
    report = run_extraction(read_manifest(str(prefix / "data" / "manifest.csv")), prefix / "store", config)
    assert report.totals()["failed"] == 0
    return (s3.requests() - before)["GET"], Catalog(prefix / "store").latest()


def test_a_clip_in_a_bucket_is_fetched_once_per_run(s3, tmp_path):
    """Audio and video of a clip are both decoded, and it is hashed, from a single GET: six more clips
    cost six more GETs (it was eighteen: one to hash, one per decoder)."""
    few, few_rows = extraction_gets(s3, tmp_path, 6)
    more, more_rows = extraction_gets(s3, tmp_path, 12)
    assert len(more_rows) == 36 and {r["status"] for r in more_rows} == {"ok"}
    assert more - few == 6, (few, more)
    local = tmp_path / "local"
    run_extraction(read_manifest(bundled_subset(local, 12)), local / "store", ExtractConfig(shard_size=4))
    shapes = {(r["sample_id"], r["modality"]): r["shape"] for r in Catalog(local / "store").latest()}
    assert {(r["sample_id"], r["modality"]): r["shape"] for r in more_rows} == shapes


def test_clips_hashed_a_block_ahead_are_still_fetched_once(s3, tmp_path, monkeypatch):
    """Planning in blocks (the next block's clips hashed while this one extracts): every clip fetched once,
    by the hashing thread, and decoded from the spool; every sample extracted once."""
    import extractors.fetch
    from pipeline import hash_ahead
    from tests.test_object_store import assert_complete, upload_subset

    monkeypatch.setattr(hash_ahead, "BLOCK", 4)
    fetched, decoded_from_bucket = [], []
    real_read, real_fetch = remote.read_available, extractors.fetch.fetch
    monkeypatch.setattr(remote, "read_available", lambda urls: fetched.extend(urls) or real_read(urls))
    monkeypatch.setattr(
        "extractors.decode.fetch",
        lambda url, error: real_fetch(url, error) if Path(url.local).is_file() else decoded_from_bucket.append(url),
    )
    manifest, prefix = upload_subset(s3, tmp_path, 12)
    config = ExtractConfig(shard_size=4, batch_size=4, num_workers=0)  # decoders in this process, to watch them
    report = run_extraction(read_manifest(manifest), prefix / "store", config, progress=False)
    assert (report.totals()["ok"], report.totals()["failed"]) == (36, 0)
    assert [s.shards_written for s in report.modalities] == [3, 3, 3]
    clips = [url for url in fetched if url.suffix == ".mp4"]
    assert len(clips) == len(set(clips)) == 12 and decoded_from_bucket == []
    assert_complete(prefix / "store", [f"{s.sample_id}" for s in read_manifest(manifest).samples])


def test_empty_and_corrupt_clips_in_a_bucket_fail_naming_their_urls(s3, tmp_path):
    """Bad clips take the spool's path too: each fails its own sample with its URL and the reason; the
    others are extracted."""
    from tests.test_object_store import upload_subset

    manifest, prefix = upload_subset(s3, tmp_path, 4)
    samples = read_manifest(manifest).samples
    empty, corrupt = samples[0].video, samples[1].video
    remote.put(empty, b"")
    remote.put(corrupt, b"not a video at all" * 100)
    config = ExtractConfig(shard_size=4, batch_size=4, num_workers=1, modalities={"audio": {}, "video": {}})
    report = run_extraction(read_manifest(manifest), prefix / "store", config, progress=False)
    assert (report.totals()["ok"], report.totals()["failed"]) == (4, 4)
    failed = [(r["sample_id"], r["modality"], r["error"]) for r in Catalog(prefix / "store").latest() if r["error"]]
    bad = {samples[0].sample_id: f"{empty}: file is empty", samples[1].sample_id: f"{corrupt}: not a readable"}
    assert {(sample, modality) for sample, modality, _ in failed} == {(i, m) for i in bad for m in ("audio", "video")}
    assert all(bad[sample] in error for sample, _, error in failed), failed


def test_decoders_read_the_local_copy_and_name_the_url(tmp_path):
    """No server here: the URL points nowhere, so decoding works only from the local copy; without a
    copy, the decoder fetches the URL and its error names the URL, not the spool's file."""
    url = "s3://no-such-bucket-precal/clips/a.mp4"
    wave = read_audio(Spooled(url, a_clip()), rate=16000)
    assert len(wave) > 16000 * 0.2
    with pytest.raises(DecodeError) as missing:
        read_audio(Spooled(url, tmp_path / "never-fetched"), rate=16000)
    assert missing.value.path == url and str(tmp_path) not in str(missing.value)


def test_a_spooled_url_keeps_its_copy_on_the_way_to_a_worker(tmp_path):
    spooled = Spooled("s3://bucket/a.mp4", tmp_path / "abc")
    again = pickle.loads(pickle.dumps(spooled))  # our own object, as DataLoader sends it to a worker
    assert (again, again.local, type(again)) == ("s3://bucket/a.mp4", str(tmp_path / "abc"), Spooled)


def test_the_spool_stays_within_its_limit_dropping_the_least_recently_used(tmp_path):
    spool = MediaSpool(tmp_path, limit=250)
    blobs = {name: name.encode() * 100 for name in "abcd"}  # 100 bytes each
    for name in "abc":
        spool.keep(name, blobs[name])
    spool.keep("a", blobs["a"])  # used again: now the most recent
    spool.keep("d", blobs["d"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "d"]
    assert spool.used == 200 and (tmp_path / "d").read_bytes() == blobs["d"]
    spool.keep("huge", b"x" * 251)  # larger than the whole spool: left to its decoder
    spool.keep("empty", b"")  # an empty object: its decoder reports it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "d"]


def test_a_copy_that_cannot_be_written_is_left_to_its_decoder(tmp_path):
    """The spool is a shortcut: a full disk or a removed folder must not fail the run."""
    spool = MediaSpool(tmp_path / "removed", limit=1000)
    spool.keep("a", b"clip")
    assert spool.used == 0 and not spool.sizes


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")  # no traceback from the thread
def test_a_failing_read_ahead_stops_quietly_and_leaves_the_clips_to_the_decoders(tmp_path):
    spool = MediaSpool(tmp_path, limit=1000)
    with spool.ahead([(0, "0" * 64, URL("nosuchprotocol://bucket/a.mp4"))]) as prefetch:
        prefetch.thread.join(timeout=60)
        assert not prefetch.thread.is_alive()
    assert not spool.sizes


def test_the_spool_keeps_only_the_bytes_planning_hashed(s3, tmp_path):
    """An object changed since planning (its sha256 differs) or gone is not kept: its decoder fetches
    it and reports what it finds."""
    prefix = URL(s3.new_prefix())
    remote.put(prefix / "same.bin", b"planned bytes")
    remote.put(prefix / "changed.bin", b"new bytes")
    digest = hashlib.sha256(b"planned bytes").hexdigest()
    spool = MediaSpool(tmp_path / "spool", limit=10_000)
    spool.folder.mkdir()
    spool.fetch([(digest, prefix / "same.bin"), ("0" * 64, prefix / "changed.bin"), ("1" * 64, prefix / "gone.bin")])
    assert [p.name for p in spool.folder.iterdir()] == [digest]


def test_spools_of_killed_processes_are_removed(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"{PREFIX}{int(gone.stdout)}-x1"
    alive = tmp_path / f"{PREFIX}{os.getpid()}-x2"
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "copy").write_bytes(b"clip")
    _remove_abandoned(tmp_path)
    assert not dead.exists() and (alive / "copy").exists()
