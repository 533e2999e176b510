"""Issue 12, the extraction/store half: hostile inputs and bad days become failed rows or clear errors
naming the file; nothing hangs, nothing stays locked, a tampered store never runs its own code."""

import csv
import errno
import fcntl
import json
import logging
import multiprocessing
import os
import select
import struct
import subprocess
import sys
import threading
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from extractors import get_encoder
from extractors.base import Encoder
from pipeline.config import EncoderChoice, ExtractConfig
from pipeline.extract import extract_modality, plan, run_extraction, selection_for
from pipeline.manifest import Sample, read_manifest
from storage.catalog import Catalog, CatalogError, CatalogRow
from storage.fingerprint import FileHashCache, content_hash
from storage.lock import StoreLockedError, store_lock
from storage.maintenance import gc, status, verify
from storage.npy import load_npy, npy_bytes
from storage.pack import pack
from storage.shards import StoreFullError, write_shard
from tests.helpers import bundled_subset

ROOT = Path(__file__).resolve().parents[1]
AUDIO_VIDEO = {"audio": EncoderChoice(), "video": EncoderChoice()}
LONG_ID = "x" * 120


def float_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> None:
    """An IEEE-float WAV (format tag 3), which can hold NaN, Inf and 1e38."""
    data = np.asarray(samples, "<f4").tobytes()
    fmt = struct.pack("<IHHIIHH", 16, 3, 1, rate, rate * 4, 4, 32)
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + fmt + b"data"
                     + struct.pack("<I", len(data)) + data)


def tone(seconds: float = 0.5, rate: int = 16000) -> np.ndarray:
    return np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate).astype(np.float32) * 0.3


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """One extraction (audio + video, decoding workers, one chunk) over good clips and hostile rows."""
    root = tmp_path_factory.mktemp("hostile")
    folder = root / "data"
    good = list(csv.DictReader(open(bundled_subset(folder, 2))))
    nan_wave = tone()
    nan_wave[100:200] = np.nan
    float_wav(folder / "nan.wav", nan_wave)
    float_wav(folder / "loud.wav", np.full(8000, 1e38, np.float32))
    os.mkfifo(folder / "pipe.mp4")
    clip = good[0]["video"]
    rows = [f"{r['sample_id']},train,{r['label']},{r['video']},," for r in good] + [
        "nanwave,train,1,,nan.wav,", "loud,train,1,,loud.wav,", "fifo,train,1,pipe.mp4,,",
        "devzero,train,1,,/dev/zero,",
        f"far,train,1,{clip},,1e300", f"late,train,1,{clip},,50"]
    (folder / "hostile.csv").write_text("sample_id,split,label,video,audio,start\n" + "\n".join(rows) + "\n")
    manifest = read_manifest(folder / "hostile.csv", check_files=False, allow_outside_root=True)
    manifest.samples.append(Sample(LONG_ID, "train", 1, video=folder / clip))  # as a manifest from older precal
    store = root / "store"
    run_extraction(manifest, store, ExtractConfig(modalities=AUDIO_VIDEO, num_workers=1), progress=False)
    rows = {(r["sample_id"], r["modality"]): r for r in Catalog(store).latest()}
    return manifest, store, rows, [r["sample_id"] for r in good]


def assert_failed(rows, sample_id, modality, *reason_parts):
    row = rows[(sample_id, modality)]
    assert row["status"] == "failed", (sample_id, modality, row)
    for part in reason_parts:
        assert part in row["error"], (part, row["error"])


# ---- 1: non-finite features ---------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_nan_and_overflowing_audio_are_failed_rows_not_ok_nan_features(hostile):
    _, _, rows, good = hostile
    assert_failed(rows, "nanwave", "audio", "nan.wav", "NaN or infinite")
    assert_failed(rows, "loud", "audio", "loud.wav", "NaN or infinite feature values")
    assert all(rows[(sid, m)]["status"] == "ok" for sid in good for m in ("audio", "video"))


class HugeEncoder(Encoder):
    """Finite float32 features beyond float16's range (65504)."""

    modality, name = "audio", "huge"

    def __init__(self):
        super().__init__()
        self.loader = HugeLoader()

    def settings(self):
        return {}

    def weights(self):
        return None

    def _encode(self, batch):
        return [(np.full((2, 3), value, np.float32), None) for value in batch]


class HugeLoader:
    in_process = True

    def __call__(self, sample):
        return [1e6] if sample.sample_id == "huge" else [0.5]


def test_features_overflowing_float16_fail_with_a_reason(tmp_path):
    samples = [Sample(sid, "train", 0, audio=tmp_path / f"{sid}.wav") for sid in ("huge", "fine")]
    encoder = HugeEncoder()
    todo, _ = plan(manifest_of(tmp_path, samples), tmp_path / "store", encoder, "float16")
    summary = extract_modality(todo, encoder, tmp_path / "store", dtype="float16", progress=False)
    assert (summary.ok, summary.failed) == (1, 1)
    assert "overflow float16" in summary.errors[0] and "huge.wav" in summary.errors[0]


def manifest_of(folder: Path, samples: list[Sample]):
    from pipeline.manifest import Manifest

    return Manifest(path=folder / "m.csv", root=folder, samples=samples)


def test_manifest_rejects_infinite_and_nan_labels(tmp_path):
    (tmp_path / "m.csv").write_text("sample_id,split,label,text\na,train,inf,x\nb,train,-inf,x\nc,train,nan,x\n"
                                    "d,train,1e400,x\ne,train,1.5,x\n")
    manifest = read_manifest(tmp_path / "m.csv", strict=False)
    assert [s.sample_id for s in manifest.samples] == ["e"]
    assert sum("not a finite number" in p for p in manifest.rejected) == 3
    assert "row 3: label is empty" in manifest.rejected  # CSV readers take "nan" for no value


# ---- 2: the store lock and killed extractions ----------------------------------------------------

HOLD_AND_HANG = """
import os, pathlib, sys
from extractors.base import Encoder
from extractors.extract import extract_features
from pipeline.manifest import Sample
from storage.lock import store_lock


class Hang:
    def __init__(self, report, never):
        self.report, self.never = report, never

    def __call__(self, sample):
        with open(self.report, "w") as out:
            out.write(f"{os.getpid()}\\n")
        open(self.never).read()  # a FIFO no one writes to: blocks forever, like a worker stuck on its queue


class HangEncoder(Encoder):
    modality, name = "audio", "hang"

    def __init__(self, report, never):
        super().__init__()
        self.loader = Hang(report, never)


if __name__ == "__main__":
    store, report, never = sys.argv[1:]
    with store_lock(pathlib.Path(store)):
        sample = Sample("a", "train", 0, audio=pathlib.Path("a.wav"))
        list(extract_features([sample], HangEncoder(report, never), num_workers=1))
"""


def exits_within(pid: int, seconds: float) -> bool:
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([handle], [], [], seconds)[0])
    finally:
        os.close(handle)


@pytest.mark.timeout(120)
def test_sigkill_of_extract_leaves_no_worker_and_no_lock(tmp_path, caplog):
    script, report, never = tmp_path / "hold_and_hang.py", tmp_path / "report", tmp_path / "never"
    script.write_text(HOLD_AND_HANG)
    os.mkfifo(report)
    os.mkfifo(never)
    store = tmp_path / "store"
    main = subprocess.Popen([sys.executable, str(script), str(store), str(report), str(never)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    with open(report) as reports:  # opens once the decoding worker runs (and is about to block)
        worker = int(reports.readline())
    main.kill()  # what the OOM killer does
    main.wait()
    assert exits_within(worker, 30), "the decoding worker outlived its killed parent"
    with caplog.at_level(logging.WARNING), store_lock(store):
        pass
    assert not caplog.records  # free on its own, not by a takeover


def test_forked_children_do_not_hold_the_lock(tmp_path):
    read_end, write_end = os.pipe()
    ready_r, ready_w = os.pipe()
    with store_lock(tmp_path):
        child = os.fork()
        if child == 0:  # outlives the lock's holder
            os.write(ready_w, b"r")  # fork hooks have run: the inherited lock descriptor is closed
            os.read(read_end, 1)
            os._exit(0)
        os.read(ready_r, 1)
    try:
        with store_lock(tmp_path):
            pass
    finally:
        os.write(write_end, b"x")
        os.waitpid(child, 0)


def test_lock_held_for_a_dead_pid_is_taken_over_with_a_warning(tmp_path, caplog):
    gone = subprocess.Popen(["true"])
    gone.wait()
    leftover = os.open(tmp_path / ".lock", os.O_RDWR | os.O_CREAT)  # as a worker of a killed holder keeps it
    try:
        fcntl.flock(leftover, fcntl.LOCK_EX)
        os.write(leftover, f"{gone.pid}\n".encode())
        with caplog.at_level(logging.WARNING), store_lock(tmp_path):
            pass
        assert f"pid {gone.pid}" in caplog.text and "taking the lock over" in caplog.text
    finally:
        os.close(leftover)


def test_lock_of_a_live_holder_is_not_taken_over(tmp_path):
    holder = os.open(tmp_path / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        os.write(holder, f"{os.getpid()}\n".encode())
        with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}.*{tmp_path / '.lock'}"):
            with store_lock(tmp_path):
                pass
    finally:
        os.close(holder)


# ---- 3 and 13: verify --repair ------------------------------------------------------------------

@pytest.fixture
def damaged_store(tmp_path):
    manifest = bundled_subset(tmp_path / "data", 2)
    store = tmp_path / "store"
    run_extraction(read_manifest(manifest), store, ExtractConfig(modalities={"audio": EncoderChoice()}, num_workers=0),
                   progress=False)
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


# ---- 4: long sample ids -------------------------------------------------------------------------

def test_manifest_caps_sample_id_length(tmp_path):
    ok, long = "a" * 80, "b" * 81
    (tmp_path / "m.csv").write_text(f"sample_id,split,label,text\n{ok},train,1,x\n{long},train,1,x\n")
    manifest = read_manifest(tmp_path / "m.csv", strict=False)
    assert [s.sample_id for s in manifest.samples] == [ok]
    assert "81 characters long; at most 80" in manifest.rejected[0]


@pytest.mark.timeout(120)
def test_an_unstorable_sample_id_fails_alone_not_its_chunk(hostile):
    _, _, rows, good = hostile
    assert_failed(rows, LONG_ID, "video", "tar shards allow 100")
    assert all(rows[(sid, "video")]["status"] == "ok" for sid in good)  # same chunk, same shard


# ---- 5: FIFOs and devices -----------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_fifo_and_dev_zero_are_failed_rows_not_hangs(hostile):
    _, _, rows, _ = hostile
    assert_failed(rows, "fifo", "video", "pipe.mp4", "not a regular file")
    assert_failed(rows, "devzero", "audio", "/dev/zero", "not a regular file")


@pytest.mark.timeout(60)
def test_pack_does_not_hang_on_a_fifo(hostile, tmp_path):
    manifest, store, _, good = hostile
    os.mkfifo(tmp_path / "pipe.mp4")
    swapped = [Sample(s.sample_id, s.split, s.label, video=tmp_path / "pipe.mp4") if s.sample_id == good[0] else s
               for s in manifest.samples]
    selection = selection_for(store, ExtractConfig(modalities={"video": EncoderChoice()}))
    result = pack(store, manifest_of(manifest.root, swapped), selection, progress=False)
    assert good[0] in result.dropped and result.counts["train"] == 1


# ---- 6: memory follows the longest clip ---------------------------------------------------------

def test_one_long_clip_does_not_pad_the_whole_batch(monkeypatch):
    import extractors.audio

    padded = []
    real_pad = extractors.audio.pad_batch
    monkeypatch.setattr(extractors.audio, "pad_batch",
                        lambda waves: padded.append(real_pad(waves).size) or real_pad(waves))
    encoder = get_encoder("audio")
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(16000).astype(np.float32) for _ in range(15)]
    waves.insert(7, rng.standard_normal(16000 * 60).astype(np.float32))
    batched = encoder.encode(waves)
    assert max(padded) <= 2 * sum(len(w) + 400 for w in waves)  # today: 16 x the longest
    for wave, features in zip(waves, batched):
        assert np.allclose(encoder.encode([wave])[0].array, features.array, atol=1e-4)


# ---- 7 and 8: segments out of range -------------------------------------------------------------

@pytest.mark.timeout(120)
def test_start_1e300_is_a_failed_row(hostile):
    _, _, rows, good = hostile
    for modality in ("audio", "video"):
        assert_failed(rows, "far", modality, "past the end of the file")


@pytest.mark.timeout(120)
def test_segment_after_the_end_of_a_video_fails_like_audio(hostile):
    _, _, rows, _ = hostile
    assert_failed(rows, "late", "audio", "no audio samples in the requested segment")
    assert_failed(rows, "late", "video", "no video frames in the requested segment", "lasts 0.560 s")


# ---- 9: pack takes the store lock ---------------------------------------------------------------

@contextmanager
def held_elsewhere(store: Path):
    """The store's lock held by another thread, as by another command."""
    held, release = threading.Event(), threading.Event()

    def holder():
        with store_lock(store):
            held.set()
            release.wait()

    other = threading.Thread(target=holder)
    other.start()
    held.wait()
    try:
        yield
    finally:
        release.set()
        other.join()


def test_pack_waits_for_the_store_lock(hostile):
    manifest, store, _, _ = hostile
    selection = selection_for(store, ExtractConfig(modalities={"video": EncoderChoice()}))
    with held_elsewhere(store), pytest.raises(StoreLockedError):
        pack(store, manifest, selection, progress=False)
    with store_lock(store):  # a flow holding the lock can still pack (re-entrant in its thread)
        assert pack(store, manifest, selection, progress=False).counts["train"] == 2


# ---- 14: a full disk ----------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_full_disk_stops_the_run_and_closes_the_workers(tmp_path, monkeypatch):
    import storage.shards

    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.shards, "_add_member", full)
    manifest = read_manifest(bundled_subset(tmp_path / "data", 3))
    config = ExtractConfig(modalities={"audio": EncoderChoice()}, num_workers=1, shard_size=1)
    with pytest.raises(StoreFullError, match="no space left on the store's device while writing .*shard") as caught:
        run_extraction(manifest, tmp_path / "store", config, progress=True)  # as in flows: a bar keeps its iterable
    assert caught.value.__traceback__ is not None  # the traceback (and the frames it holds) is still alive
    assert not multiprocessing.active_children(), "a decoding worker outlived the failed extraction"


class FakeChunk:
    def __init__(self, outcome):
        self.outcome, self.cancelled = outcome, False
        self.wrapped_future = self

    def wait(self):
        pass

    def result(self, raise_on_failure=True):
        return self.outcome

    def cancel(self):
        self.cancelled = True


def test_full_disk_cancels_the_chunks_not_started_and_is_not_retried():
    from flows.extract import retry_transient, wait_for_chunks

    full = StoreFullError(errno.ENOSPC, "no space left")
    chunks = [FakeChunk("ok"), FakeChunk(full), FakeChunk("ok"), FakeChunk("ok")]
    with pytest.raises(StoreFullError):
        wait_for_chunks(chunks)
    assert [c.cancelled for c in chunks] == [False, False, True, True]
    assert not retry_transient(None, None, type("State", (), {"data": full})())


# ---- 16: labels ---------------------------------------------------------------------------------

def test_one_and_one_point_zero_are_one_class(tmp_path):
    (tmp_path / "m.csv").write_text("sample_id,split,label,text\na,train,1,x\nb,train,1.0,x\nc,train,2,x\n")
    labels = [s.label for s in read_manifest(tmp_path / "m.csv").samples]
    assert [str(label) for label in labels] == ["1", "1", "2"]  # pack names classes by str(label)


def test_jsonl_with_number_and_string_labels_is_validated_row_by_row(tmp_path):
    lines = ['{"sample_id": "a", "split": "train", "label": 1, "text": "x"}',
             '{"sample_id": "b", "split": "train", "label": "cat", "text": "x"}',
             '{"sample_id": "c", "split": "train", "label": 1.0, "text": "x"}',
             '{"sample_id": "d", "split": "train", "label": ',
             '{"sample_id": "e", "split": "bogus", "label": 2, "text": "x"}']
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    manifest = read_manifest(tmp_path / "m.jsonl", strict=False)
    assert [(s.sample_id, s.label) for s in manifest.samples] == [("a", 1), ("b", "cat"), ("c", 1)]
    assert manifest.rejected[0].startswith("row 4: not valid JSON") and manifest.rejected[1].startswith("row 5")


# ---- 17: errors that name the file --------------------------------------------------------------

def test_gc_refused_by_the_lock_names_the_lock_file(tmp_path):
    from pipeline.cli import app

    with held_elsewhere(tmp_path):
        outcome = CliRunner().invoke(app, ["gc", "--store", str(tmp_path)])
    assert outcome.exit_code == 2 and outcome.exception.__class__ is SystemExit
    assert str(tmp_path / ".lock") in outcome.output.replace("\n", "")


def test_damaged_catalog_part_is_named_and_gc_sets_it_aside(hostile, tmp_path):
    _, source, _, good = hostile
    store = tmp_path / "store"
    (store / "catalog").mkdir(parents=True)
    Catalog(store).append([CatalogRow.from_dict(r) for r in Catalog(source).latest()])
    damaged = store / "catalog" / "part-99999999999999999999-00000000.parquet"
    damaged.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(CatalogError, match=f"{damaged}: damaged catalog part.*--set-aside-damaged"):
        Catalog(store).latest()
    gc(store, set_aside_damaged=True)
    assert damaged.with_name(damaged.name + ".damaged").is_file()
    assert any(r["sample_id"] == good[0] for r in Catalog(store).latest())


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
