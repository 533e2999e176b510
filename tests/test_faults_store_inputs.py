"""Issue 12, the extraction/store half, hostile inputs: one extraction over good clips and hostile rows (NaN
and overflowing audio, a FIFO, /dev/zero, segments past the end, an over-long id) gives failed rows naming
the file; manifests refuse bad labels and ids; pack neither hangs on a FIFO nor ignores the store lock."""

import csv
import os
import struct
import threading
from contextlib import contextmanager
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
from storage.lock import StoreLockedError, store_lock
from storage.maintenance import gc
from storage.pack import pack
from tests.helpers import bundled_subset

AUDIO_VIDEO = {"audio": EncoderChoice(), "video": EncoderChoice()}
LONG_ID = "x" * 120


def float_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> None:
    """An IEEE-float WAV (format tag 3), which can hold NaN, Inf and 1e38."""
    data = np.asarray(samples, "<f4").tobytes()
    fmt = struct.pack("<IHHIIHH", 16, 3, 1, rate, rate * 4, 4, 32)
    path.write_bytes(
        b"RIFF"
        + struct.pack("<I", 36 + len(data))
        + b"WAVE"
        + b"fmt "
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )


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
        "nanwave,train,1,,nan.wav,",
        "loud,train,1,,loud.wav,",
        "fifo,train,1,pipe.mp4,,",
        "devzero,train,1,,/dev/zero,",
        f"far,train,1,{clip},,1e300",
        f"late,train,1,{clip},,50",
    ]
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
    (tmp_path / "m.csv").write_text(
        "sample_id,split,label,text\na,train,inf,x\nb,train,-inf,x\nc,train,nan,x\nd,train,1e400,x\ne,train,1.5,x\n"
    )
    manifest = read_manifest(tmp_path / "m.csv", strict=False)
    assert [s.sample_id for s in manifest.samples] == ["e"]
    assert sum("not a finite number" in p for p in manifest.rejected) == 3
    assert "row 3: label is empty" in manifest.rejected  # CSV readers take "nan" for no value


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
    swapped = [
        Sample(s.sample_id, s.split, s.label, video=tmp_path / "pipe.mp4") if s.sample_id == good[0] else s
        for s in manifest.samples
    ]
    selection = selection_for(store, ExtractConfig(modalities={"video": EncoderChoice()}))
    result = pack(store, manifest_of(manifest.root, swapped), selection, progress=False)
    assert good[0] in result.dropped and result.counts["train"] == 1


# ---- 6: memory follows the longest clip ---------------------------------------------------------


def test_one_long_clip_does_not_pad_the_whole_batch(monkeypatch):
    import extractors.audio

    padded = []
    real_pad = extractors.audio.pad_batch
    monkeypatch.setattr(
        extractors.audio, "pad_batch", lambda waves: padded.append(real_pad(waves).size) or real_pad(waves)
    )
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


# ---- 16: labels ---------------------------------------------------------------------------------


def test_one_and_one_point_zero_are_one_class(tmp_path):
    (tmp_path / "m.csv").write_text("sample_id,split,label,text\na,train,1,x\nb,train,1.0,x\nc,train,2,x\n")
    labels = [s.label for s in read_manifest(tmp_path / "m.csv").samples]
    assert [str(label) for label in labels] == ["1", "1", "2"]  # pack names classes by str(label)


def test_jsonl_with_number_and_string_labels_is_validated_row_by_row(tmp_path):
    lines = [
        '{"sample_id": "a", "split": "train", "label": 1, "text": "x"}',
        '{"sample_id": "b", "split": "train", "label": "cat", "text": "x"}',
        '{"sample_id": "c", "split": "train", "label": 1.0, "text": "x"}',
        '{"sample_id": "d", "split": "train", "label": ',
        '{"sample_id": "e", "split": "bogus", "label": 2, "text": "x"}',
    ]
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
