"""CREMA-D (Cao et al., 2014): 7,442 clips of 91 actors saying 12 sentences in 6 emotions.

Layout: `AudioWAV/<name>.wav` and `VideoFlash/<name>.flv`, named `{actor}_{sentence}_{emotion}_{level}`
(e.g. `1001_DFA_ANG_XX`). The label is the emotion code. Splits: the widely used lists `train.csv` and
`test.csv` (rows `1088_IOM_NEU_XX,NEU`, no header) when `lists` names their folder, else a seeded split
stratified by emotion; `speaker_independent` draws whole actors instead, so no voice is in two splits.
Validation is carved from train the same way. Each sentence code has one fixed sentence, which gives
a text modality that carries no emotion at all (`text=False` leaves it out).
"""

from __future__ import annotations

import csv
import re
from dataclasses import replace
from pathlib import Path

from pipeline.adapters.common import (
    ADAPTERS,
    BAD_NAME,
    BAD_ROW,
    DUPLICATE,
    MISSING,
    UNKNOWN_LABEL,
    UNLISTED,
    Collected,
    LayoutError,
    by_label,
    carve,
    check_share,
    require_file,
)
from pipeline.manifest import Sample

SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
LEVELS = ("LO", "MD", "HI", "XX")
NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


@ADAPTERS.register("cremad")
def collect(
    root: Path,
    *,
    lists: Path | None = None,
    speaker_independent: bool = False,
    valid_share: float = 0.1,
    test_share: float = 0.1,
    seed: int = 0,
    text: bool = True,
) -> Collected:
    check_share("valid_share", valid_share)
    check_share("test_share", test_share)
    out = Collected()
    samples = clips(root, out, text)
    unit = actor if speaker_independent else (lambda s: s.sample_id)
    stratum = (lambda s: "") if speaker_independent else by_label
    if lists is not None:
        samples = listed_splits(samples, Path(lists), out)
    else:
        samples = carve(samples, test_share, seed, target="test", unit=unit, stratum=stratum)
    out.samples = carve(samples, valid_share, seed, target="valid", unit=unit, stratum=stratum)
    return out


def actor(sample: Sample) -> str:
    return sample.sample_id.split("_")[0]


def clips(root: Path, out: Collected, text: bool) -> list[Sample]:
    audio = {p.stem: p for p in sorted((root / "AudioWAV").glob("*.wav"))}
    video = {p.stem: p for p in sorted((root / "VideoFlash").glob("*.flv"))}
    if not audio and not video:
        raise LayoutError(f"{root}: no AudioWAV/*.wav or VideoFlash/*.flv (is this the CREMA-D folder?)")
    found = (clip(name, audio.get(name), video.get(name), out, text) for name in sorted(audio.keys() | video.keys()))
    return [s for s in found if s is not None]


def clip(name: str, wav: Path | None, flv: Path | None, out: Collected, text: bool) -> Sample | None:
    match = NAME.match(name)
    if not match or match[2] not in SENTENCES or match[4] not in LEVELS:
        out.skip(BAD_NAME, name, "expected {actor}_{sentence}_{emotion}_{level}, e.g. 1001_DFA_ANG_XX")
        return None
    if match[3] not in EMOTIONS:
        out.skip(UNKNOWN_LABEL, name, f"emotion {match[3]!r} is not one of {', '.join(EMOTIONS)}")
        return None
    if wav is None:
        out.lacks(MISSING, f"AudioWAV/{name}.wav", "audio comes from the video's own track")
    if flv is None:
        out.lacks(MISSING, f"VideoFlash/{name}.flv", "no video for this clip")
    return Sample(name, "train", match[3], video=flv, audio=wav, text=SENTENCES[match[2]] if text else None)


def listed_splits(samples: list[Sample], folder: Path, out: Collected) -> list[Sample]:
    """Splits from `train.csv` / `test.csv`; a clip in neither is reported, not guessed, and a clip in
    both keeps its first listing (so it is never in test and train at once)."""
    by_name = {s.sample_id: s for s in samples}
    split_of: dict[str, str] = {}
    for split, filename in (("train", "train.csv"), ("test", "test.csv")):
        for where, name, label in list_rows(require_file(folder / filename, "CREMA-D split list"), out):
            if name not in by_name:
                out.skip(MISSING, where, f"{name} has no usable media")
            elif label != by_name[name].label:
                out.skip(UNKNOWN_LABEL, where, f"label {label!r} disagrees with the name's emotion")
            elif name in split_of:
                out.skip(DUPLICATE, where, f"{name} is already listed for {split_of[name]}")
            else:
                split_of[name] = split
    for name in sorted(by_name.keys() - split_of.keys()):
        out.skip(UNLISTED, name, "in neither train.csv nor test.csv")
    return [replace(by_name[n], split=s) for n, s in sorted(split_of.items())]


def list_rows(path: Path, out: Collected):
    with open(path, newline="", encoding="utf-8-sig") as f:
        for number, row in enumerate(csv.reader(f), start=1):
            if not row:
                continue
            if len(row) != 2:
                out.skip(BAD_ROW, f"{path.name}:{number}", "expected NAME,EMOTION")
                continue
            yield f"{path.name}:{number}", row[0].strip(), row[1].strip()
