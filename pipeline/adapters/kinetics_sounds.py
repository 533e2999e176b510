"""Kinetics-Sounds (Arandjelović & Zisserman, 2017): the Kinetics classes one can hear, ~31 classes.

Layout: one folder per class, `<root>/<class>/<video>.mp4` (or .avi/.mkv/.webm). Splits from the list
files `train.txt`, `val.txt`, `test.txt` (one relative path `<class>/<video>.mp4` per line) in `lists`
(default: the root) where they exist; a missing valid or test list is carved from train, and with no
lists at all the split is seeded, stratified by class. The label is the class folder's name.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from pipeline.adapters.common import (
    ADAPTERS,
    BAD_ROW,
    DUPLICATE,
    MISSING,
    UNLISTED,
    Collected,
    LayoutError,
    by_label,
    carve,
    check_share,
    class_folder_videos,
    inside,
    read_list,
    safe_id,
)
from pipeline.manifest import Sample

SUFFIXES = (".mp4", ".avi", ".mkv", ".webm")
LIST_FILES = {"train": "train.txt", "valid": "val.txt", "test": "test.txt"}


@ADAPTERS.register("kinetics-sounds")
def collect(
    root: Path, *, lists: Path | None = None, valid_share: float = 0.1, test_share: float = 0.1, seed: int = 0
) -> Collected:
    check_share("valid_share", valid_share)
    check_share("test_share", test_share)
    out = Collected()
    videos = class_folder_videos(root, SUFFIXES)
    if not videos:
        raise LayoutError(f"{root}: no <class>/<video> files ({', '.join(SUFFIXES)})")
    folder = Path(lists) if lists is not None else root
    found = {split: folder / name for split, name in LIST_FILES.items() if (folder / name).is_file()}
    if found:
        samples = listed(videos, found, out)
    else:
        out.notes.append(f"no split lists in {folder}: seeded split (test {test_share:.0%}, valid {valid_share:.0%})")
        samples = [clip_sample(rel, path, "train") for rel, path in videos.items()]
    if "test" not in found:
        samples = carve(samples, test_share, seed, target="test", stratum=by_label)
    if "valid" not in found:
        samples = carve(samples, valid_share, seed, target="valid", stratum=by_label)
    out.samples = samples
    return out


def clip_sample(relative: str, path: Path, split: str) -> Sample:
    return Sample(safe_id(path.stem), split, PurePosixPath(relative).parts[0], video=path)


def listed(videos: dict[str, Path], lists: dict[str, Path], out: Collected) -> list[Sample]:
    """Samples named by the list files; a listed path must be a `<class>/<video>` file under the root."""
    split_of: dict[str, str] = {}
    for split, path in lists.items():
        for entry in read_list(path):
            if not inside(entry.path) or len(PurePosixPath(entry.path).parts) != 2:
                out.skip(BAD_ROW, entry.where, f"{entry.path!r} is not <class>/<video> under the root")
            elif entry.path not in videos:
                out.skip(MISSING, entry.path, entry.where)
            elif entry.path in split_of:
                out.skip(DUPLICATE, entry.where, f"already listed for {split_of[entry.path]}")
            else:
                split_of[entry.path] = split
    if "train" not in lists:
        out.notes.append("no train list: the train split is empty")
    for relative in sorted(videos.keys() - split_of.keys()):
        out.skip(UNLISTED, relative, f"in none of {', '.join(p.name for p in lists.values())}")
    return [clip_sample(rel, videos[rel], split) for rel, split in sorted(split_of.items())]
