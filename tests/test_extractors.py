"""Decoding and the default encoders on real files (GRID .mpg, FSDD .wav), bad inputs, batching, pooling."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from extractors import (
    DecodeError,
    Features,
    extract_features,
    get_encoder,
    iter_video_frames,
    list_encoders,
    read_audio,
    read_video,
)
from pipeline.manifest import Sample
from tests.helpers import assert_features_agree

RATE, HOP = 16_000, 160


def sample(sample_id="s", *, video=None, audio=None, text=None, start=None, end=None) -> Sample:
    return Sample(sample_id, "train", "0", video=video, audio=audio, text=text, start=start, end=end)


def words(path: Path) -> str:
    """GRID file names spell the sentence; a readable transcript for the text encoder."""
    return " ".join(path.stem)


@pytest.fixture(scope="module")
def grid(shared_data) -> list[Path]:
    return sorted((shared_data / "grid").glob("*.mpg"))


@pytest.fixture(scope="module")
def fsdd(shared_data) -> list[Path]:
    return sorted((shared_data / "fsdd" / "recordings").glob("*.wav"))[:3]


@pytest.fixture(scope="module")
def encoders():
    return {m: get_encoder(m) for m in ("text", "audio", "video")}


def write_clip(path: Path, *, video=True, audio=True, seconds=1.0, fps=10, rate=22050, layout="stereo") -> Path:
    """A small mp4 (MPEG-4 video, AAC audio) made with PyAV, for inputs the real data lacks."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("mpeg4", rate=fps) if video else None
        aus = out.add_stream("aac", rate=rate, layout=layout) if audio else None
        if vs:
            vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
            for i in range(int(seconds * fps)):
                img = np.full((48, 64, 3), (i * 20) % 255, np.uint8)
                out.mux(vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            out.mux(vs.encode(None))
        if aus:
            t = np.arange(int(seconds * rate)) / rate
            channels = len(av.AudioLayout(layout).channels)
            wave = np.tile((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), (channels, 1))
            frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout=layout)
            frame.sample_rate, frame.pts = rate, 0
            out.mux(aus.encode(frame))
            out.mux(aus.encode(None))
    return path


# --- the real files decode and extract with every default encoder ---------------------------------


def test_defaults_are_registered():
    names = list_encoders()
    assert {"minilm", "hf"} <= set(names["text"])
    assert {"logmel", "mfcc", "fbank", "hf"} <= set(names["audio"])
    assert {"grey", "hf", "resnet18", "resnet50", "torchvision"} <= set(names["video"])
    assert [get_encoder(m).name for m in ("audio", "video")] == ["logmel", "grey"]
    with pytest.raises(ValueError, match="registered"):
        get_encoder("audio", "nope")
    with pytest.raises(ValueError, match="modality"):
        get_encoder("smell")


def test_grid_extracts_with_every_default_encoder(grid, encoders):
    samples = [sample(p.stem, video=p, text=words(p)) for p in grid]
    for modality, enc in encoders.items():
        results = list(extract_features(samples, enc, batch_size=4))
        assert [s.sample_id for s, _ in results] == [p.stem for p in grid]
        for _, f in results:
            assert isinstance(f, Features) and f.array.dtype == np.float32 and np.isfinite(f.array).all()
            if modality == "text":
                assert f.array.shape[1] == 384 and f.timestamps is None
            elif modality == "audio":  # 3 s of MP2 stereo 44.1 kHz -> 16 kHz mono, a frame every 10 ms
                assert f.array.shape == (1 + 47_647 // HOP, 64)
                np.testing.assert_allclose(f.timestamps[:3], [0.0, 0.01, 0.02], atol=1e-6)
            else:  # 3 s at 10 fps, 32x32 grey in [0, 1]
                assert f.array.shape == (30, 1024) and 0 <= f.array.min() and f.array.max() <= 1
                np.testing.assert_allclose(f.timestamps, np.arange(30) / 10, atol=1e-6)


def test_fsdd_wav_8khz_mono(fsdd, encoders):
    for path in fsdd:
        with av.open(str(path)) as c:
            samples_8k = c.streams.audio[0].duration  # time base 1/8000
        wave = read_audio(path, rate=RATE)
        assert wave.dtype == np.float32 and len(wave) == 2 * samples_8k
        ((_, f),) = extract_features([sample(path.stem, audio=path)], encoders["audio"])
        assert f.array.shape == (1 + len(wave) // HOP, 64)


def test_segments_have_the_requested_duration(grid, encoders):
    path = grid[0]
    for start, end in [(0.5, 1.5), (1.2, 2.2), (0.0, 0.3), (2.0, 2.8)]:
        seconds = end - start
        assert len(read_audio(path, rate=RATE, start=start, end=end)) == round(seconds * RATE)
        assert len(read_video(path, fps=10, size=(32, 32), grey=True, start=start, end=end)) == round(seconds * 10)
        seg = sample(video=path, start=start, end=end)
        ((_, audio),) = extract_features([seg], encoders["audio"])
        assert audio.array.shape[0] == 1 + round(seconds * RATE) // HOP


def test_segment_is_the_same_span_of_the_whole_file(grid):
    path = grid[-1]
    whole_v = read_video(path, fps=10, size=(32, 32), grey=True)
    part_v = read_video(path, fps=10, size=(32, 32), grey=True, start=1.2, end=2.2)
    np.testing.assert_array_equal(part_v, whole_v[12:22])
    whole_a = read_audio(path, rate=RATE)
    part_a = read_audio(path, rate=RATE, start=1.2, end=2.2)
    lo = round(1.2 * RATE)
    # Equal on the same sample grid, except the resampler's first few samples (no left context).
    np.testing.assert_allclose(part_a[100:], whole_a[lo + 100 : lo + len(part_a)], atol=5e-3)


def test_audio_from_the_audio_file_before_the_video_track(grid, fsdd):
    enc = get_encoder("audio")
    ((_, f),) = extract_features([sample(video=grid[0], audio=fsdd[0])], enc)
    assert f.array.shape[0] == 1 + len(read_audio(fsdd[0], rate=RATE)) // HOP


def test_odd_layouts_and_rates_become_mono(tmp_path):
    for layout, rate in [("5.1", 48000), ("mono", 8000), ("stereo", 22050)]:
        path = write_clip(tmp_path / f"{layout}.mp4", video=False, layout=layout, rate=rate, seconds=1.0)
        wave = read_audio(path, rate=RATE)
        assert wave.ndim == 1 and abs(len(wave) - RATE) < 0.05 * RATE
        tone = np.abs(np.fft.rfft(wave[2000:14000]))
        assert abs(np.argmax(tone) * RATE / 12000 - 440) < 5  # the 440 Hz tone survives downmix + resampling


def test_frames_come_in_bounded_chunks_and_max_seconds_caps(grid):
    chunks = list(iter_video_frames(grid[0], fps=25, size=64, chunk_frames=16))
    assert [len(c) for c in chunks] == [16, 16, 16, 16, 11] and chunks[0].shape[1:] == (64, 80, 3)
    assert len(read_video(grid[0], fps=10, size=(32, 32), grey=True, max_seconds=1.0)) == 10
    assert len(read_audio(grid[0], rate=RATE, start=0.5, max_seconds=1.0)) == RATE


# --- bad inputs are DecodeErrors that name the file and the reason ------------------------------


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    good = write_clip(folder / "good.mp4")
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = folder / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return {
        "empty": empty,
        "truncated": truncated,
        "garbage": garbage,
        "missing": folder / "missing.mp4",
        "silent": write_clip(folder / "silent.mp4", audio=False),
        "blind": write_clip(folder / "blind.m4a", video=False),
    }


@pytest.mark.parametrize(
    "name, modality, reason",
    [
        ("empty", "video", "empty"),
        ("empty", "audio", "empty"),
        ("truncated", "video", "not a readable media file"),
        ("garbage", "audio", "not a readable media file"),
        ("missing", "video", "not found"),
        ("missing", "audio", "not found"),
        ("silent", "audio", "no audio track"),
        ("blind", "video", "no video track"),
    ],
)
def test_bad_files_are_decode_errors(bad_files, encoders, name, modality, reason):
    path = bad_files[name]
    with pytest.raises(DecodeError, match=reason) as err:
        encoders[modality].load(sample(video=path))
    assert str(path) in str(err.value)


@pytest.mark.parametrize("text", ["", "   \n\t", None])
def test_empty_text_is_a_decode_error(encoders, text):
    with pytest.raises(DecodeError, match="text") as err:
        encoders["text"].load(sample("clip7", text=text))
    assert "clip7" in str(err.value)


def test_too_short_audio_and_empty_segment(grid, encoders):
    with pytest.raises(DecodeError, match="too short"):
        encoders["audio"].load(sample(video=grid[0], start=1.0, end=1.01))
    with pytest.raises(DecodeError, match="no video frames|no audio samples"):
        encoders["video"].load(sample(video=grid[0], start=10.0, end=11.0))
    with pytest.raises(DecodeError, match="invalid segment"):
        encoders["video"].load(sample(video=grid[0], start=2.0, end=1.0))


def test_errors_pass_through_workers_in_order(grid, bad_files, encoders):
    samples = [
        sample("a", video=grid[0]),
        sample("bad1", video=bad_files["silent"]),
        sample("b", video=grid[1]),
        sample("bad2", video=bad_files["missing"]),
        sample("c", video=grid[2]),
    ]
    for modality in ("audio", "video"):
        results = list(extract_features(samples, encoders[modality], batch_size=2, num_workers=2))
        assert [s.sample_id for s, _ in results] == ["a", "bad1", "b", "bad2", "c"]
        kinds = [type(r).__name__ for _, r in results]
        if modality == "audio":
            assert kinds == ["Features", "DecodeError", "Features", "DecodeError", "Features"]
            error = str(results[1][1])
            assert "no audio track" in error and str(bad_files["silent"]) in error
        else:  # the video-only clip is fine for video
            assert kinds == ["Features", "Features", "Features", "DecodeError", "Features"]


# --- batching is exact, pooling ---------------------------------------------------------------


def test_batched_equals_one_by_one_with_variable_lengths(grid, fsdd, encoders):
    samples = [
        sample(f"g{i}", video=p, text=words(p) * (i + 1), start=0.1 * i, end=3.0 - 0.4 * i) for i, p in enumerate(grid)
    ]
    samples += [sample(p.stem, audio=p, text="seven") for p in fsdd]
    for modality, enc in encoders.items():
        usable = [s for s in samples if modality != "video" or s.video is not None]
        batched = [f for _, f in extract_features(usable, enc, batch_size=16)]
        assert len({f.array.shape[0] for f in batched}) > 2  # lengths really differ
        for s, f in zip(usable, batched):
            alone = enc.encode([enc.load(s)])[0]
            np.testing.assert_allclose(f.array, alone.array, atol=1e-4, rtol=1e-4)


def test_pooled_is_the_mean_over_real_steps(grid):
    s = sample(video=grid[0], text="bin blue at f two now")
    for modality in ("text", "audio", "video"):
        seq = get_encoder(modality).encode([get_encoder(modality).load(s)])[0]
        pooled = get_encoder(modality, pooled=True)
        ((_, f),) = extract_features([s], pooled)
        assert f.array.shape == (seq.array.shape[1],) and f.timestamps is None
        np.testing.assert_allclose(f.array, seq.array.mean(0), atol=1e-5)


def test_minilm_pooled_matches_sentence_transformers():
    enc = get_encoder("text", "minilm", pooled=True)
    texts = ["the digit spoken is zero", "seven"]
    ours = np.stack([f.array for f in enc.encode(texts)])
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(enc.source, device="cpu").encode(texts)  # mean pooling, then L2 norm
    np.testing.assert_allclose(ours / np.linalg.norm(ours, axis=1, keepdims=True), reference, atol=1e-5)


def test_text_truncates_at_max_length():
    enc = get_encoder("text", max_length=8)
    (f,) = enc.encode(["one two three four five six seven eight nine ten"])
    assert f.array.shape == (8, 384)


def test_loaders_hold_only_settings(encoders):
    """Loaders run in DataLoader workers: they must carry settings, never a model."""
    for enc in encoders.values():
        assert dataclasses.is_dataclass(enc.loader)
        for value in dataclasses.asdict(enc.loader).values():
            assert value is None or isinstance(value, (str, int, float, bool, tuple, list))


def test_stored_features_agree_across_thread_counts(grid):
    """What the README promises across machines, checked across torch thread counts: the float16 features
    agree within float16 resolution (the summation order may differ, so bits may not)."""
    enc = get_encoder("text", "minilm")
    samples = [sample(p.stem, text=words(p)) for p in grid]
    stored = {}
    for threads in (1, 2):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            stored[threads] = [f.array.astype(np.float16) for _, f in extract_features(samples, enc, batch_size=4)]
        finally:
            torch.set_num_threads(before)
    for one, two in zip(stored[1], stored[2]):
        assert_features_agree(one, two)
