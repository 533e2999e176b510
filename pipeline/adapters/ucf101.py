"""UCF101 (Soomro et al., 2012): 13,320 clips of 101 actions; about half the classes have sound.

Layout: `<root>/<class>/v_<class>_gNN_cNN.avi` (the `UCF-101` folder) and the official lists
`ucfTrainTestlist/` (default `<root>/ucfTrainTestlist`, or `lists`): `classInd.txt` (`1 ApplyEyeMakeup`),
`trainlistNN.txt` (`ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1`) and `testlistNN.txt` for split
NN in 1-3. Validation is carved from train by whole groups (`gNN`: clips cut from one long video), as
the official splits do for test, so near-identical clips never sit on both sides.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from pipeline.adapters.common import (
    ADAPTERS,
    BAD_ROW,
    DUPLICATE,
    MISSING,
    UNKNOWN_LABEL,
    UNLISTED,
    Collected,
    LayoutError,
    ListEntry,
    carve,
    check_share,
    class_folder_videos,
    inside,
    read_list,
    require_file,
    safe_id,
)
from pipeline.manifest import Sample

SPLIT_NUMBERS = (1, 2, 3)
GROUP = re.compile(r"_(g\d+)_c\d+$")


@ADAPTERS.register("ucf101")
def collect(
    root: Path, *, lists: Path | None = None, split_number: int = 1, valid_share: float = 0.1, seed: int = 0
) -> Collected:
    if split_number not in SPLIT_NUMBERS:
        raise ValueError(f"split_number must be one of {SPLIT_NUMBERS}, got {split_number}")
    check_share("valid_share", valid_share)
    folder = Path(lists) if lists is not None else root / "ucfTrainTestlist"
    classes = class_index(require_file(folder / "classInd.txt", "UCF101 class index"))
    videos = class_folder_videos(root, (".avi",))
    if not videos:
        raise LayoutError(f"{root}: no <class>/<video>.avi files (is this the UCF-101 folder?)")
    out = Collected()
    samples: dict[str, Sample] = {}
    for split, name in (("train", f"trainlist{split_number:02d}.txt"), ("test", f"testlist{split_number:02d}.txt")):
        for entry in read_list(require_file(folder / name, f"UCF101 {split} list")):
            sample = to_sample(entry, split, videos, classes, samples, out)
            if sample is not None:
                samples[entry.path] = sample
    for relative in sorted(videos.keys() - samples.keys()):
        out.skip(UNLISTED, relative, f"in neither list of split {split_number}")
    out.samples = carve(list(samples.values()), valid_share, seed, target="valid", unit=group)
    return out


def class_index(path: Path) -> dict[str, str]:
    """Class name -> its number, from lines `1 ApplyEyeMakeup`."""
    classes = {}
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        number, _, name = line.strip().partition(" ")
        if number.isdigit() and name.strip():
            classes[name.strip()] = number
    if not classes:
        raise LayoutError(f"{path}: no `NUMBER CLASS` lines")
    return classes


def to_sample(
    entry: ListEntry,
    split: str,
    videos: dict[str, Path],
    classes: dict[str, str],
    taken: dict[str, Sample],
    out: Collected,
) -> Sample | None:
    if not inside(entry.path) or len(PurePosixPath(entry.path).parts) != 2:
        out.skip(BAD_ROW, entry.where, f"{entry.path!r} is not <class>/<video>.avi under the root")
        return None
    label = PurePosixPath(entry.path).parts[0]
    if label not in classes:
        out.skip(UNKNOWN_LABEL, entry.where, f"class {label!r} is not in classInd.txt")
        return None
    if entry.index is not None and entry.index != classes[label]:
        out.skip(
            UNKNOWN_LABEL, entry.where, f"class number {entry.index}, but classInd.txt numbers {label} {classes[label]}"
        )
        return None
    if entry.path not in videos:
        out.skip(MISSING, entry.path, entry.where)
        return None
    if entry.path in taken:
        out.skip(DUPLICATE, entry.where, f"already listed for {taken[entry.path].split}")
        return None
    return Sample(safe_id(videos[entry.path].stem), split, label, video=videos[entry.path])


def group(sample: Sample) -> str:
    """UCF101's group `gNN`, shared by all clips cut from one video (the clip itself when unnamed)."""
    match = GROUP.search(sample.sample_id)
    return match[1] if match else sample.sample_id
