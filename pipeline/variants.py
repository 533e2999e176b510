"""Raw-level corrupted variants of a data set's test split, extracted incrementally into the same store.

A variant corrupts one modality's media at one severity (1-5):
  video-noise   Gaussian pixel noise, std 8 .. 128 (of 255)
  video-blur    Gaussian blur, sigma 0.5 .. 8 pixels per 64 pixels of the frame's short side
  audio-noise   white noise at 20 .. -5 dB SNR (relative to the mean power of the whole track)
  text-drop     10% .. 90% of the transcript's words dropped (one word is always kept)
and writes the corrupted files plus a manifest (`manifest.csv`, absolute paths to the untouched media)
under its own folder. Only the corrupted modality's content hash changes: a new video keeps the audio
on the original file (its `audio` column then names the original clip), new audio goes to a WAV file.
So extraction into the same store skips the other modalities, and the pack gathers the new features with
the cached ones.

The catalog keeps the newest row per (sample, modality, encoder), so a variant is extracted under its
own sample ids, `<id>~<kind>-<severity>` (`~` is outside the manifest's id grammar: no data set's id can
be one), and the data set's own rows stay the newest for its ids. Skips and packs go by (content hash,
encoder fingerprint), so the pack finds the variant's new features and the cached unchanged ones and
writes them under the samples' own ids. The variant lives on in its pack (and `variant.json`, which makes
a re-run reuse it). The corruption is seeded by (kind, severity, sample), so a variant is the same every
time it is built.
"""

from __future__ import annotations

import json
import os
import wave
import zlib
from dataclasses import replace
from pathlib import Path

import av
import cv2
import numpy as np
from tqdm.auto import tqdm

from extractors.decode import read_audio
from pipeline.config import EncoderChoice, ExtractConfig
from pipeline.encoders import choose_spec, recorded_dtype, store_fingerprint
from pipeline.extract import extract_one_modality, selection_for
from pipeline.extract_report import ExtractionReport
from pipeline.manifest import Manifest, Sample, read_manifest, write_manifest
from storage.atomic import write_json_atomic
from storage.layout import Store, pack_file
from storage.lock import store_lock
from storage.pack import pack
from storage.packinfo import PackInfo

CORRUPTIONS = {  # kind: (modality, level per severity 1..5)
    "video-noise": ("video", (8.0, 16.0, 32.0, 64.0, 128.0)),
    "video-blur": ("video", (0.5, 1.0, 2.0, 4.0, 8.0)),
    "audio-noise": ("audio", (20.0, 10.0, 5.0, 0.0, -5.0)),
    "text-drop": ("text", (0.1, 0.3, 0.5, 0.7, 0.9)),
}
AUDIO_RATE = 16_000
VARIANT_VERSION = 1
VARIANT_MARK = "~"  # not allowed in manifest ids (letters, digits, '-', '_'): a variant id never names a sample


def variant_id(sample_id: str, variant: str) -> str:
    """The id a sample's variant is extracted under, e.g. `clip7~video-blur-4`."""
    return f"{sample_id}{VARIANT_MARK}{variant}"


def rng_for(kind: str, severity: int, sample_id: str) -> np.random.Generator:
    return np.random.default_rng([VARIANT_VERSION, zlib.crc32(kind.encode()), severity, zlib.crc32(sample_id.encode())])


# ---- corrupting media ---------------------------------------------------------------------------


def drop_words(text: str, share: float, rng: np.random.Generator) -> str:
    words = text.split()
    kept = [w for w in words if rng.random() >= share]
    return " ".join(kept) if kept else words[int(rng.integers(len(words)))]


def add_noise_at_snr(wave_: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    power = float(np.mean(wave_.astype(np.float64) ** 2)) or 1e-8
    noisy = wave_ + rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), wave_.shape)
    return (noisy / max(1.0, np.abs(noisy).max())).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int = AUDIO_RATE) -> None:
    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())


def frame_transform(kind: str, level: float, rng: np.random.Generator):
    if kind == "video-noise":
        return lambda img: np.clip(img + rng.normal(0.0, level, img.shape), 0, 255).astype(np.uint8)

    def blur(img: np.ndarray) -> np.ndarray:
        sigma = level * min(img.shape[:2]) / 64
        return cv2.GaussianBlur(img, (0, 0), sigma)

    return blur


def rewrite_video(source: Path, target: Path, transform) -> None:
    """Every frame of the source through `transform`, as H.264 at the source's frame rate, no audio."""
    partial = target.with_name(target.name + ".part")
    with av.open(str(source)) as src, av.open(str(partial), "w", format="mp4") as dst:
        stream = src.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or 25
        out = dst.add_stream("libx264", rate=rate, options={"crf": "18", "preset": "fast"})
        width, height = stream.codec_context.width // 2 * 2, stream.codec_context.height // 2 * 2
        out.width, out.height, out.pix_fmt = width, height, "yuv420p"
        for i, frame in enumerate(src.decode(stream)):
            pixels = transform(frame.to_ndarray(format="rgb24")[:height, :width])
            new = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            new.pts = i
            dst.mux(out.encode(new))
        dst.mux(out.encode())
    os.replace(partial, target)


def original_row(sample: Sample) -> dict:
    return {
        "sample_id": sample.sample_id,
        "split": sample.split,
        "label": sample.label,
        "video": sample.video,
        "audio": sample.audio,
        "text": sample.text,
        "start": sample.start,
        "end": sample.end,
    }


def variant_row(sample: Sample, kind: str, severity: int, folder: Path) -> dict:
    """The sample's manifest row in the variant, writing its corrupted media under `folder`."""
    modality, levels = CORRUPTIONS[kind]
    level = levels[severity - 1]
    rng = rng_for(kind, severity, sample.sample_id)
    row = original_row(sample)
    if modality == "text":
        row["text"] = drop_words(sample.text, level, rng)
    elif modality == "audio":
        source = sample.audio if sample.audio is not None else sample.video
        target = folder / "audio" / f"{sample.sample_id}.wav"
        target.parent.mkdir(parents=True, exist_ok=True)
        write_wav(target, add_noise_at_snr(read_audio(source, rate=AUDIO_RATE), level, rng))
        row["audio"] = target
    else:
        target = folder / "video" / f"{sample.sample_id}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        rewrite_video(sample.video, target, frame_transform(kind, level, rng))
        row["video"] = target
        if sample.audio is None:  # the audio stays the original clip's track, with the same content hash
            row["audio"] = sample.video
    return row


def write_variant(samples: list[Sample], kind: str, severity: int, folder: Path, progress: bool = True) -> Path:
    """Corrupted media and `manifest.csv` for one variant; returns the manifest path."""
    modality = CORRUPTIONS[kind][0]
    rows = [
        variant_row(s, kind, severity, folder) if s.has(modality) else original_row(s)
        for s in tqdm(samples, desc=f"variant {kind}-{severity}", unit="sample", disable=not progress)
    ]
    return write_manifest(
        [{k: str(v) if isinstance(v, Path) else v for k, v in r.items()} for r in rows], folder / "manifest.csv"
    )


# ---- extraction into the same store ----------------------------------------------------------------


def extraction_config_for(store: Path, selection: dict[str, str], **settings) -> ExtractConfig:
    """The extraction config that made a pack's features, from the encoder.json kept beside them (checked
    against the encoders' specs: no model is loaded)."""
    choices, dtypes = {}, set()
    for m, fingerprint in selection.items():
        record = Store(store).encoder_record(m, fingerprint)
        if not record.is_file():
            raise FileNotFoundError(f"{record} is missing: the store does not say how the {m} features were made")
        try:
            info = json.loads(record.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(
                f"{record} is damaged ({err}): run `precal extract` with the same encoders to rewrite it"
            ) from None
        choices[m] = EncoderChoice(name=info.get("name"), options=info.get("options") or {})
        spec = choose_spec(m, choices[m].name, choices[m].options)
        dtype = recorded_dtype(info, record)
        if store_fingerprint(spec, dtype) != fingerprint:
            raise ValueError(
                f"the {m} encoder recorded in {record} no longer gives fingerprint {fingerprint} "
                "(the encoder or its weights changed since the pack was made)"
            )
        dtypes.add(dtype)
    if len(dtypes) != 1:
        raise ValueError(f"the pack's modalities were stored with different dtypes {sorted(dtypes)}")
    return ExtractConfig(modalities=choices, dtype=dtypes.pop(), **settings)


def extract_and_pack(
    manifest: Manifest,
    variant: str,
    store: Path,
    config: ExtractConfig,
    task: str,
    *,
    wait: float = 0.0,
    progress: bool = True,
) -> tuple[ExtractionReport, Path]:
    """Extract the variant's manifest into the store under variant ids (skipping what the content hashes say
    is done) and pack it under the manifest's own ids, both under the store lock."""
    selection = selection_for(store, config)
    renamed = [replace(s, sample_id=variant_id(s.sample_id, variant)) for s in manifest.samples]
    extracted = replace(manifest, samples=renamed)
    with store_lock(store, wait=wait):
        summaries = [extract_one_modality(extracted, store, m, config, progress) for m in config.modalities]
        packed = pack(store, manifest, selection, task=task, progress=progress)
    return ExtractionReport(summaries), packed.path


def build_variants(
    manifest_path: Path,
    store: Path,
    info: PackInfo,
    sample_ids: list[str],
    folder: Path,
    *,
    kinds: list[str] | None = None,
    severities=(1, 2, 3, 4, 5),
    num_workers: int = 1,
    progress: bool = True,
) -> list[dict]:
    """Every (kind, severity) variant of `sample_ids` (the run's test samples), each cached in
    `folder/<kind>-<severity>/variant.json`; returns those records ({"kind", "modality", "severity",
    "level", "pack", "extraction", "samples"}). `info` is the run's pack."""
    selection = dict(info.fingerprints)
    config = extraction_config_for(store, selection, num_workers=num_workers)
    source = read_manifest(manifest_path, allow_outside_root=True)
    by_id = source.by_id()
    missing = [sid for sid in sample_ids if sid not in by_id]
    if missing:
        raise ValueError(
            f"{len(missing)} test samples of the pack are not in {manifest_path} "
            f"(e.g. {missing[:3]}): is it the manifest the pack was built from?"
        )
    samples = [by_id[sid] for sid in sample_ids]
    records = []
    for kind in kinds or list(CORRUPTIONS):
        modality, levels = CORRUPTIONS[kind]
        if modality not in selection:
            continue
        for severity in severities:
            records.append(
                build_variant(
                    samples, store, config, info.task, kind, severity, folder / f"{kind}-{severity}", progress=progress
                )
            )
    return records


def build_variant(
    samples: list[Sample],
    store: Path,
    config: ExtractConfig,
    task: str,
    kind: str,
    severity: int,
    folder: Path,
    progress: bool = True,
) -> dict:
    record_path = folder / "variant.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if pack_file(record["pack"]).is_file() and record.get("version") == VARIANT_VERSION:
            return {**record, "cached": True}
    folder.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(write_variant(samples, kind, severity, folder, progress), allow_outside_root=True)
    report, pack_path = extract_and_pack(manifest, f"{kind}-{severity}", store, config, task, progress=progress)
    modality, levels = CORRUPTIONS[kind]
    record = {
        "version": VARIANT_VERSION,
        "kind": kind,
        "modality": modality,
        "severity": severity,
        "level": levels[severity - 1],
        "pack": str(pack_path),
        "samples": len(samples),
        "extraction": report.to_dict(),
    }
    write_json_atomic(record_path, record, indent=2)
    return {**record, "cached": False}
