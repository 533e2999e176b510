"""CMU-MOSI (Zadeh et al., 2016) and CMU-MOSEI (Zadeh et al., 2018) in the MMSA raw layout.

Layout: `label.csv` (`video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode`, mode one of
train/valid/test) and `Raw/<video_id>/<clip_id>.mp4`. The label is the sentiment score, a regression
target in [-3, 3]; the transcript is the text modality. The sample id joins video and clip ids with
`_` (see `clip_sample_id`), the same id the MMSA feature importer gives the same clip.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from pipeline.adapters.common import (
    ADAPTERS,
    BAD_ROW,
    MISSING,
    UNKNOWN_LABEL,
    Collected,
    LayoutError,
    require_dir,
    require_file,
    safe_id,
)
from pipeline.manifest import Sample
from storage.layout import SPLITS

COLUMNS = ("video_id", "clip_id", "text", "label", "mode")
LABEL_RANGE = (-3.0, 3.0)


def clip_sample_id(video_id: str, clip_id: str) -> str:
    return safe_id(f"{video_id}_{clip_id}")


@ADAPTERS.register("mosi")
@ADAPTERS.register("mosei")
def collect(root: Path) -> Collected:
    out = Collected()
    raw = require_dir(root / "Raw", "MMSA raw videos, Raw/<video_id>/<clip_id>.mp4")
    for number, row in rows(require_file(root / "label.csv", "MMSA label table")):
        sample = to_sample(row, f"label.csv:{number}", raw, out)
        if sample is not None:
            out.samples.append(sample)
    return out


def rows(path: Path):
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise LayoutError(f"{path}: missing column(s) {', '.join(missing)}; expected MMSA's label.csv")
        yield from enumerate(reader, start=2)  # line 1 is the header


def to_sample(row: dict, where: str, raw: Path, out: Collected) -> Sample | None:
    video_id, clip_id = (row["video_id"] or "").strip(), (row["clip_id"] or "").strip()
    mode = (row["mode"] or "").strip()
    if not video_id or not clip_id or mode not in SPLITS:
        out.skip(BAD_ROW, where, f"needs video_id, clip_id and a mode in {', '.join(SPLITS)}")
        return None
    label = score(row["label"])
    if label is None:
        out.skip(UNKNOWN_LABEL, where, f"label {row['label']!r} is not a number in [-3, 3]")
        return None
    video = raw / video_id / f"{clip_id}.mp4"
    if not video.is_file():
        out.skip(MISSING, f"Raw/{video_id}/{clip_id}.mp4", where)
        return None
    text = (row["text"] or "").strip() or None
    if text is None:
        out.lacks(MISSING, where, "empty transcript: no text modality")
    return Sample(clip_sample_id(video_id, clip_id), mode, label, video=video, text=text)


def score(value: str | None) -> float | None:
    try:
        label = float(value)
    except (TypeError, ValueError):
        return None
    low, high = LABEL_RANGE
    return label if math.isfinite(label) and low <= label <= high else None
