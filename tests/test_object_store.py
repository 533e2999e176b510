"""Everything in a bucket: media, manifest, feature store and packs on a real S3 server (SeaweedFS).

Extraction reads the clips from the bucket and commits shards then catalog parts as objects; a no-op
re-run writes no object; SIGKILL at random moments leaves a store that a re-run completes with every
sample once; a second extraction against the same bucket store stops naming the holder of the lease;
packing and training stream from the bucket.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from pipeline.config import ExtractConfig
from pipeline.extract import run_extraction, selection_for
from pipeline.manifest import read_manifest
from storage import remote
from storage.catalog import Catalog
from storage.holders import StoreLockedError
from storage.layout import Store
from storage.maintenance import gc, verify
from storage.npy import load_npy
from storage.pack import pack
from storage.packinfo import cached_pack, read_pack, verify_pack
from storage.remote import URL, location
from storage.shards import read_shard
from tests.helpers import bundled_subset, crash_campaign
from tests.orchestration_helpers import split_subset
from tests.s3server import upload
from trainers.config import TrainConfig
from trainers.train import evaluate, train

MODALITIES = ("text", "audio", "video")

RUN = """
import sys
from pipeline.config import ExtractConfig
from pipeline.extract import run_extraction, selection_for
from pipeline.manifest import read_manifest
from storage.remote import location
config = ExtractConfig(shard_size=3, batch_size=4, num_workers=1)
run_extraction(read_manifest(sys.argv[1]), location(sys.argv[2]), config, progress=False, wait=float(sys.argv[3]))
print("finished", flush=True)
"""


def upload_subset(server, tmp_path, count: int | dict[str, int]) -> tuple[str, URL]:
    """`count` bundled clips (or so many per split) and their manifest in a fresh prefix of the server's
    bucket (S3 or GCS): (manifest URL, prefix)."""
    local = tmp_path / "data"
    manifest = bundled_subset(local, count) if isinstance(count, int) else split_subset(local, count)
    folder = manifest.parent
    prefix = URL(server.new_prefix())
    upload(folder, prefix / "data")
    return str(prefix / "data" / "manifest.csv"), prefix


def start(manifest: str, store: URL, wait: float = 60) -> subprocess.Popen:
    # A new session, so the kill takes the decoding workers too, as a crash of the machine would.
    return subprocess.Popen(
        [sys.executable, "-c", RUN, manifest, str(store), str(wait)],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(manifest: str, store: URL) -> None:
    proc = start(manifest, store)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0 and "finished" in out, err


def assert_honest(store: URL) -> None:
    """Everything the catalog calls ok is in an intact shard with the recorded shape."""
    assert verify(store).bad == {}
    shards: dict[str, dict] = {}
    for row in Catalog(store).latest():
        if row["status"] == "ok":
            if row["shard"] not in shards:
                shards[row["shard"]] = dict(read_shard(store / row["shard"]))
            assert list(load_npy(shards[row["shard"]][row["sample_id"]]["npy"]).shape) == row["shape"]


def assert_complete(store: URL, ids: list[str]) -> None:
    latest = Catalog(store).latest()
    assert Counter((r["modality"], r["status"]) for r in latest) == {(m, "ok"): len(ids) for m in MODALITIES}
    gc(store)  # drop orphans a crash left between a shard's PUT and its catalog part's
    on_store = Counter()
    for shard in remote.files_under(store / "features", ".tar"):
        for key, members in read_shard(shard):
            load_npy(members["npy"])  # reads back whole
            on_store[(shard.parent.parent.name, key)] += 1
    assert set(on_store.values()) == {1} and len(on_store) == len(MODALITIES) * len(ids)  # each sample once


def extract_six(manifest: str, store: URL, tmp_path) -> ExtractConfig:
    """A first extraction of the six clips upload_subset put in the bucket: each sample ok and stored once,
    the store honest. Returns its config, for re-runs."""
    config = ExtractConfig(shard_size=4, batch_size=4, num_workers=1)
    report = run_extraction(read_manifest(manifest), store, config, progress=False)
    assert (report.totals()["ok"], report.totals()["failed"]) == (18, 0)
    assert_honest(store)
    assert_complete(store, [row["sample_id"] for row in csv.DictReader(open(tmp_path / "data" / "manifest.csv"))])
    return config


def test_extraction_reads_media_from_the_bucket_and_a_noop_rerun_writes_nothing(s3, tmp_path):
    manifest, prefix = upload_subset(s3, tmp_path, 6)
    store = prefix / "store"
    config = extract_six(manifest, store, tmp_path)
    objects, before = s3.object_keys(), s3.requests()
    again = run_extraction(read_manifest(manifest), store, config, progress=False)
    assert again.totals()["ok"] == 0 and again.totals()["skipped"] == 18
    written = s3.requests() - before
    assert s3.object_keys() == objects and written["PUT"] == 0 and written["DELETE"] == 0, written


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun(s3, tmp_path):
    manifest, prefix = upload_subset(s3, tmp_path, 12)
    ids = [row["sample_id"] for row in csv.DictReader(open(tmp_path / "data" / "manifest.csv"))]
    store = crash_campaign(manifest, lambda name: prefix / name, start, finish, assert_honest, kills=5)
    assert_complete(store, ids)
    reference = {(r["sample_id"], r["modality"]): r["shape"] for r in Catalog(prefix / "reference").latest()}
    assert {(r["sample_id"], r["modality"]): r["shape"] for r in Catalog(store).latest()} == reference


def test_a_second_extraction_stops_naming_the_holder(s3, tmp_path):
    manifest, prefix = upload_subset(s3, tmp_path, 6)
    assert_a_second_extraction_stops(manifest, prefix / "store")


def assert_a_second_extraction_stops(manifest: str, store: URL) -> None:
    """While a first extraction (another process) holds the store's lease, a second one stops at once
    with a message naming the holder."""
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
def test_pack_train_and_evaluate_stream_from_the_bucket(s3, tmp_path, one_torch_thread):
    manifest, prefix = upload_subset(s3, tmp_path, {"train": 8, "valid": 2, "test": 2})
    store = prefix / "store"
    config = ExtractConfig(shard_size=5, batch_size=4, num_workers=0)
    samples = read_manifest(manifest)
    run_extraction(samples, store, config, progress=False)
    packed = pack(store, samples, selection_for(store, config), progress=False)
    assert remote.is_remote(packed.path) and verify_pack(packed.path) is None
    again = pack(store, samples, selection_for(store, config), progress=False)
    assert not again.created and again.pack_id == packed.pack_id
    settings = {"epochs": 2, "batch_size": 4, "num_workers": 0, "shuffle_buffer": 8, "hidden": 8}
    streamed = train(TrainConfig(pack=str(packed.path), out=tmp_path / "streamed", **settings))
    cached = train(
        TrainConfig(pack=str(packed.path), out=tmp_path / "cached", shard_cache=tmp_path / "cache", **settings)
    )
    assert (tmp_path / "cache" / packed.pack_id / "pack.json").is_file()
    assert streamed["test"] == cached["test"] and streamed["best_epoch"] == cached["best_epoch"]
    scored = evaluate(tmp_path / "streamed" / "best.pt", str(packed.path), "test")
    assert scored == pytest.approx(streamed["test"])
    shard = packed.path / read_pack(packed.path).splits["train"]["shards"][0]
    remote.put(shard, remote.read_bytes(shard)[:-1024])  # cut short in the bucket
    with pytest.raises(ValueError, match="sha256 mismatch"):
        cached_pack(read_pack(packed.path), tmp_path / "fresh-cache")


@pytest.mark.slow
def test_dask_workers_given_only_the_urls(s3, tmp_path):
    """Chunks run in Dask worker processes that get the manifest's and store's URLs, never a path: media
    are read from the bucket and shards and catalog parts written there."""
    from distributed import LocalCluster

    from flows.extract import extract_flow, task_runner

    manifest, prefix = upload_subset(s3, tmp_path, 6)
    store = prefix / "store"
    config = ExtractConfig(shard_size=2, num_workers=0)
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        on_dask = extract_flow.with_options(task_runner=task_runner("dask", cluster.scheduler_address))
        report = on_dask(manifest, str(store), config, progress=False)
    assert report["chunks"] == 9 and (report["totals"]["ok"], report["totals"]["failed"]) == (18, 0)
    assert_honest(store)
    assert_complete(store, [row["sample_id"] for row in csv.DictReader(open(tmp_path / "data" / "manifest.csv"))])
    again = run_extraction(read_manifest(manifest), store, config, progress=False)
    assert again.totals()["skipped"] == 18


def test_status_verify_repair_and_gc_take_a_bucket_store(s3, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    manifest, prefix = upload_subset(s3, tmp_path, 4)
    store = prefix / "store"
    run_extraction(
        read_manifest(manifest),
        store,
        ExtractConfig(shard_size=2, num_workers=0, modalities={"text": {}, "audio": {}}),
        progress=False,
    )
    cli = CliRunner()
    shown = cli.invoke(app, ["status", "--store", str(store), "--json"])
    assert shown.exit_code == 0 and {f["modality"]: f["ok"] for f in json.loads(shown.stdout)["features"]} == {
        "text": 4,
        "audio": 4,
    }
    damaged = sorted(remote.files_under(store / "features" / "audio", ".tar"))[0]
    remote.put(damaged, b"not a tar any more")
    checked = cli.invoke(app, ["verify", "--store", str(store)])
    said = " ".join(checked.stdout.split())  # the console wraps long lines
    assert checked.exit_code == 1 and f"bad {damaged.relative_to(store)}: sha256 mismatch" in said
    repaired = cli.invoke(app, ["verify", "--store", str(store), "--repair", "--manifest", manifest])
    assert repaired.exit_code == 0 and "repaired: 2 samples re-extracted" in repaired.stdout, repaired.stdout
    assert cli.invoke(app, ["verify", "--store", str(store)]).exit_code == 0
    collected = cli.invoke(app, ["gc", "--store", str(store)])
    assert collected.exit_code == 0 and not remote.exists(Store(store).lease)
    assert_honest(store)


def test_local_paths_and_file_urls_are_the_same_store(tmp_path):
    assert location(f"file://{tmp_path}/store") == tmp_path / "store"


def test_a_commit_uploads_while_the_next_shard_fills_and_its_failure_is_raised(s3, monkeypatch):
    """In a bucket the shard PUT runs beside extraction: adding the next shard's samples does not wait for
    it; commits stay in order (shard, then its rows); a failed upload is raised by the next call."""
    import numpy as np

    import storage.features as features_module
    from storage.features import FeatureSet, FeatureWriter

    store = URL(s3.new_prefix()) / "store"
    features = FeatureSet("audio", "toy", "f00", "float16")
    uploading, next_filled, real = threading.Event(), threading.Event(), features_module.write_shard

    def first_waits(path, samples):
        if not uploading.is_set():
            uploading.set()
            assert next_filled.wait(60), "the next shard's samples were not added while this one uploaded"
        return real(path, samples)

    monkeypatch.setattr(features_module, "write_shard", first_waits)
    writer = FeatureWriter(store, features, shard_size=2)
    for i in range(2):
        writer.add(f"s{i}", f"h{i}", np.full(3, i, np.float32))
    assert uploading.wait(60)
    writer.add("s2", "h2", np.full(3, 2, np.float32))  # while the first shard is still uploading
    next_filled.set()
    writer.add("s3", "h3", np.full(3, 3, np.float32))
    writer.close()
    rows = Catalog(store).latest()
    assert sorted(r["sample_id"] for r in rows) == ["s0", "s1", "s2", "s3"] and len({r["shard"] for r in rows}) == 2
    assert_honest(store)

    monkeypatch.setattr(features_module, "write_shard", lambda path, samples: (_ for _ in ()).throw(OSError("full")))
    failing = FeatureWriter(store, features, shard_size=1)
    failing.add("s9", "h9", np.zeros(3, np.float32))
    with pytest.raises(OSError, match="full"):
        failing.close()
    assert "s9" not in {r["sample_id"] for r in Catalog(store).latest()}
