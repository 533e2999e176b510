"""Tiny data sets in the real benchmark layouts, with generated media.

Every clip is 8 frames of 32x32 at 16 fps with 0.5 s of a sine tone, encoded with PyAV in the codecs
the real sets use (H.264/AAC mp4, FLV1/MP3 flv, MPEG-4/MP3 avi); WAVs are written with `wave`. The
shade and the pitch follow the label, so a model can learn something in one epoch. A clip of a given
kind is encoded once per session and its bytes reused.
"""

from __future__ import annotations

import csv
import functools
import io
import pickle
import tempfile
import wave
from pathlib import Path

import av
import numpy as np

from pipeline.manifest import read_manifest

FRAMES, FPS, SIZE, RATE = 8, 16, 32, 16_000
SECONDS = FRAMES / FPS
# video codec, audio codec, audio rate (FLV takes MP3 at 11.025/22.05/44.1 kHz only)
CODECS = {
    ".mp4": ("libx264", "aac", RATE),
    ".flv": ("flv", "libmp3lame", 22_050),
    ".avi": ("mpeg4", "libmp3lame", 22_050),
}


def samples_of(manifest: Path) -> dict:
    return read_manifest(manifest, allow_outside_root=True).by_id()


def issues(report, kind: str, where: str = "skipped") -> list[str]:
    """The items of one kind of Issue an import report lists (sorted)."""
    return sorted(i.item for i in getattr(report, where) if i.kind == kind)


def signal(label: str | float) -> tuple[int, float]:
    """(grey shade, tone in Hz) for a label: distinct per class, smooth in a regression score."""
    if isinstance(label, float):
        score = min(max(label, -3.0), 3.0)
        return int(128 + 40 * score), 440.0 + 60 * score
    code = sum(map(ord, str(label))) % 7
    return 40 + 30 * code, 300.0 + 100 * code


def tone(hz: float, rate: int = RATE, seconds: float = SECONDS) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@functools.cache
def clip_bytes(suffix: str, shade: int, hz: float, with_audio: bool = True) -> bytes:
    video_codec, audio_codec, rate = CODECS[suffix]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"clip{suffix}"
        with av.open(str(path), "w") as container:
            video = container.add_stream(video_codec, rate=FPS)
            video.width, video.height, video.pix_fmt = SIZE, SIZE, "yuv420p"
            sound = container.add_stream(audio_codec, rate=rate, layout="mono") if with_audio else None
            for i in range(FRAMES):
                pixels = np.full((SIZE, SIZE), shade, np.uint8)
                pixels[:, (4 * i) % SIZE : (4 * i) % SIZE + 4] = 255 - shade  # a moving bar: frames differ
                frame = av.VideoFrame.from_ndarray(pixels, format="gray")
                frame.pts = i
                container.mux(video.encode(frame))
            container.mux(video.encode())
            if sound is not None:
                chunk = av.AudioFrame.from_ndarray(tone(hz, rate)[None, :], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = rate, 0
                container.mux(sound.encode(chunk))
                container.mux(sound.encode())
        return path.read_bytes()


@functools.cache
def wav_bytes(hz: float) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(RATE)
        f.writeframes((tone(hz) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def write_clip(path: Path, label: str | float = "a", *, with_audio: bool = True) -> Path:
    """A tiny video (container by suffix: .mp4, .flv, .avi) whose picture and sound follow `label`."""
    shade, hz = signal(label)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(clip_bytes(path.suffix, shade, hz, with_audio))
    return path


def write_wav(path: Path, label: str | float = "a") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wav_bytes(signal(label)[1]))
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


# ---- CREMA-D: AudioWAV/*.wav + VideoFlash/*.flv ---------------------------------------------------

CREMAD_ACTORS = ("1001", "1002", "1003", "1004")
CREMAD_SENTENCES = ("DFA", "IEO")
CREMAD_EMOTIONS = ("ANG", "HAP", "NEU")


def build_cremad(root: Path) -> list[str]:
    """4 actors x 2 sentences x 3 emotions, each with its wav and flv; returns the clip names."""
    names = [f"{a}_{s}_{e}_XX" for a in CREMAD_ACTORS for s in CREMAD_SENTENCES for e in CREMAD_EMOTIONS]
    for name in names:
        write_cremad_clip(root, name)
    return names


def write_cremad_clip(root: Path, name: str, *, wav: bool = True, flv: bool = True) -> None:
    emotion = name.split("_")[2] if name.count("_") == 3 else "NEU"
    if wav:
        write_wav(root / "AudioWAV" / f"{name}.wav", emotion)
    if flv:
        write_clip(root / "VideoFlash" / f"{name}.flv", emotion)


# ---- AVE: Annotations.txt, {train,val,test}Set.txt, AVE/<id>.mp4 ----------------------------------

AVE_HEADER = "Category&VideoID&Quality&StartTime&EndTime"


def ave_row(category: str, video_id: str, start: int = 0, end: int = 1) -> str:
    return f"{category}&{video_id}&good&{start}&{end}"


def build_ave(root: Path, splits: dict[str, list[str]], extra_annotations: tuple[str, ...] = ()) -> None:
    """Annotations.txt with every split row (plus `extra_annotations`); a video for each row's id."""
    files = {"train": "trainSet.txt", "valid": "valSet.txt", "test": "testSet.txt"}
    rows = [row for split in files for row in splits.get(split, [])]
    write_lines(root / "Annotations.txt", [AVE_HEADER, *rows, *extra_annotations])
    for split, name in files.items():
        write_lines(root / name, splits.get(split, []))
    for row in rows:
        category, video_id = row.split("&")[:2]
        write_clip(root / "AVE" / f"{video_id}.mp4", category)


# ---- CMU-MOSI / MOSEI, MMSA raw layout: label.csv + Raw/<video_id>/<clip_id>.mp4 ------------------

MOSI_HEADER = ("video_id", "clip_id", "text", "label", "label_T", "label_A", "label_V", "annotation", "mode")
# (video id, clip id, transcript, sentiment, split); the last clip has no transcript
MOSI_ROWS = [
    ("03bSnISJMiM", "1", "anyhow it was really good", 2.4, "train"),
    ("03bSnISJMiM", "2", "i didn't like it, at all", -1.8, "train"),
    ("0h-zjBukYpk", "1", "the plot was fine", 0.6, "train"),
    ("0h-zjBukYpk", "2", "quite boring", -0.4, "train"),
    ("1DmNV9C1hbY", "1", "loved the actors", 1.2, "valid"),
    ("1DmNV9C1hbY", "2", "too long", -2.2, "valid"),
    ("2iD-tVS8NPw", "1", "great fun", 2.8, "test"),
    ("2iD-tVS8NPw", "2", "", -0.6, "test"),
]


def build_mosi(root: Path, rows: list[tuple], *, skip_media: tuple[str, ...] = ()) -> None:
    """label.csv with `rows` (video_id, clip_id, text, label, mode), and a clip for each row except
    those whose `video_id/clip_id` is in `skip_media`."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "label.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(MOSI_HEADER)
        for video_id, clip_id, text, label, mode in rows:
            writer.writerow([video_id, clip_id, text, label, "", "", "", "", mode])
    for video_id, clip_id, _, label, _ in rows:
        if f"{video_id}/{clip_id}" not in skip_media:
            write_clip(root / "Raw" / video_id / f"{clip_id}.mp4", float(label))


# ---- Kinetics-Sounds and UCF101: <root>/<class>/<video> ------------------------------------------


def build_class_folders(root: Path, videos: list[str]) -> None:
    """`<class>/<video>` files (relative paths), labelled by their folder."""
    for relative in videos:
        write_clip(root / relative, relative.split("/")[0])


UCF_CLASSES = ("ApplyEyeMakeup", "Archery", "BabyCrawling")


def ucf_name(cls: str, group: int, clip: int = 1) -> str:
    return f"{cls}/v_{cls}_g{group:02d}_c{clip:02d}.avi"


def build_ucf101(root: Path, groups: range = range(1, 5), test_groups: tuple[int, ...] = (1,)) -> None:
    """3 classes x 4 groups of .avi clips; split 1 puts `test_groups` in test and the rest in train."""
    build_class_folders(root, [ucf_name(c, g) for c in UCF_CLASSES for g in groups])
    lists = root / "ucfTrainTestlist"
    write_lines(lists / "classInd.txt", [f"{i} {c}" for i, c in enumerate(UCF_CLASSES, start=1)])
    write_lines(
        lists / "trainlist01.txt",
        [f"{ucf_name(c, g)} {i}" for i, c in enumerate(UCF_CLASSES, start=1) for g in groups if g not in test_groups],
    )
    write_lines(lists / "testlist01.txt", [ucf_name(c, g) for c in UCF_CLASSES for g in groups if g in test_groups])


# ---- MMSA feature file (unaligned_50.pkl) ---------------------------------------------------------

MMSA_SHAPES = {"text": (6, 8), "audio": (7, 5), "vision": (6, 4)}  # [T, D] per clip


def mmsa_split(split: str, count: int, rng: np.random.Generator) -> dict:
    """One split of an MMSA file: padded features with lengths, labels in [-3, 3], ids and transcripts."""
    labels = np.round(rng.uniform(-3, 3, count), 1).astype(np.float32)
    texts = [f"clip {i} of {split} was {'good' if v > 0 else 'bad'}" for i, v in enumerate(labels)]
    part = {
        "id": np.array([f"vid{split}{i // 2}$_${i % 2 + 1}" for i in range(count)]),
        "raw_text": np.array(texts),
        "regression_labels": labels,
    }
    for key, (steps, dim) in MMSA_SHAPES.items():
        array = rng.normal(size=(count, steps, dim)).astype(np.float32) + labels[:, None, None]
        lengths = rng.integers(2, steps + 1, count)
        for i, n in enumerate(lengths):
            array[i, n:] = 0.0  # MMSA pads at the end with zeros
        part[key] = array
        if key != "text":
            part[f"{key}_lengths"] = lengths.tolist()
    return part


def mmsa_data(counts: dict[str, int] | None = None, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    data = {split: mmsa_split(split, n, rng) for split, n in (counts or {"train": 12, "valid": 4, "test": 4}).items()}
    data["train"]["audio"][0, 0, 0] = -np.inf  # as in MOSI's COVAREP features
    return data


def write_pickle(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(data))
    return path
