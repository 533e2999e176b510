"""AVE, Audio-Visual Event (Tian et al., ECCV 2018): 4,143 events in 10 s YouTube videos, 28 classes.

Layout: `Annotations.txt` (`Category&VideoID&Quality&StartTime&EndTime`, first line a header) and
the splits of the paper, `trainSet.txt` / `valSet.txt` / `testSet.txt`, in the same format; videos
`AVE/<VideoID>.mp4`. One video may hold several events, so a sample is one annotated event: id
`<VideoID>_<start>_<end>`, label the category, and the event's segment in the `start`/`end` columns.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.adapters.common import (
    ADAPTERS,
    BAD_ROW,
    DUPLICATE,
    MISSING,
    UNKNOWN_LABEL,
    UNLISTED,
    Collected,
    require_dir,
    require_file,
    safe_id,
)
from pipeline.manifest import Sample

CATEGORIES = (
    "Church bell",
    "Male speech, man speaking",
    "Bark",
    "Fixed-wing aircraft, airplane",
    "Race car, auto racing",
    "Female speech, woman speaking",
    "Helicopter",
    "Violin, fiddle",
    "Flute",
    "Ukulele",
    "Frying (food)",
    "Truck",
    "Shofar",
    "Motorcycle",
    "Acoustic guitar",
    "Train horn",
    "Clock",
    "Banjo",
    "Goat",
    "Baby cry, infant cry",
    "Bus",
    "Chainsaw",
    "Cat",
    "Horse",
    "Toilet flush",
    "Rodents, rats, mice",
    "Accordion",
    "Mandolin",
)
SPLIT_FILES = {"train": "trainSet.txt", "valid": "valSet.txt", "test": "testSet.txt"}
HEADER = ("Category", "VideoID", "Quality", "StartTime", "EndTime")

Event = tuple[str, str, float, float]  # category, video id, start, end


@ADAPTERS.register("ave")
def collect(root: Path) -> Collected:
    out = Collected()
    videos = require_dir(root / "AVE", "AVE videos, AVE/<VideoID>.mp4")
    annotated = events(require_file(root / "Annotations.txt", "AVE annotations"), out)
    split_of = splits(root, set(annotated), out)
    for event, where in annotated.items():
        sample = to_sample(event, where, split_of.get(event), videos, out)
        if sample is not None:
            out.samples.append(sample)
    return out


def events(path: Path, out: Collected) -> dict[Event, str]:
    """Each well-formed row as (category, video id, start, end) -> "file:line"."""
    found: dict[Event, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        fields = tuple(f.strip() for f in line.split("&"))
        if not line.strip() or fields == HEADER:
            continue
        where = f"{path.name}:{number}"
        event = parse(fields)
        if event is None:
            out.skip(BAD_ROW, where, "expected Category&VideoID&Quality&StartTime&EndTime with end > start")
        elif event in found:
            out.skip(DUPLICATE, where, f"the same event as {found[event]}")
        else:
            found[event] = where
    return found


def parse(fields: tuple[str, ...]) -> Event | None:
    if len(fields) != 5 or not fields[0] or not fields[1]:
        return None
    try:
        start, end = float(fields[3]), float(fields[4])
    except ValueError:
        return None
    return (fields[0], fields[1], start, end) if 0 <= start < end else None


def splits(root: Path, annotated: set[Event], out: Collected) -> dict[Event, str]:
    split_of: dict[Event, str] = {}
    for split, name in SPLIT_FILES.items():
        for event, where in events(require_file(root / name, f"AVE {split} list"), out).items():
            if event not in annotated:
                out.skip(UNLISTED, where, "listed for a split but not in Annotations.txt")
            elif event in split_of:
                out.skip(DUPLICATE, where, f"already listed for {split_of[event]}")
            else:
                split_of[event] = split
    return split_of


def to_sample(event: Event, where: str, split: str | None, videos: Path, out: Collected) -> Sample | None:
    category, video_id, start, end = event
    if category not in CATEGORIES:
        out.skip(UNKNOWN_LABEL, where, f"category {category!r} is not one of AVE's 28")
        return None
    if split is None:
        out.skip(UNLISTED, where, "in none of trainSet.txt, valSet.txt, testSet.txt")
        return None
    video = videos / f"{video_id}.mp4"
    if not video.is_file():
        out.skip(MISSING, f"AVE/{video_id}.mp4", where)
        return None
    return Sample(safe_id(f"{video_id}_{start:g}_{end:g}"), split, category, video=video, start=start, end=end)
