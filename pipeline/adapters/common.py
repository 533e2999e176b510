"""What every adapter shares: the registry of adapters, the issues they report, safe sample ids, seeded splits,
list files.

An adapter maps what it can and reports each item it could not (or could only partly) map as an
Issue, instead of stopping at the first problem: real data sets always have a few broken files.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from pipeline.manifest import SAFE_ID, Sample
from storage.registry import Registry

MISSING = "missing file"
UNKNOWN_LABEL = "unknown label"
BAD_NAME = "bad name"
BAD_ROW = "bad row"
UNLISTED = "not in a split list"
DUPLICATE = "duplicate"

UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_-]")


class LayoutError(ValueError):
    """The folder is not the data set's layout at all (a required list or folder is missing)."""


@dataclass(frozen=True)
class Issue:
    kind: str  # one of the constants above
    item: str  # the file, list line or id concerned
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind}: {self.item}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class Collected:
    """An adapter's result: the samples it mapped (absolute paths) and what it could not map."""

    samples: list[Sample] = field(default_factory=list)
    skipped: list[Issue] = field(default_factory=list)  # left out of the manifest
    incomplete: list[Issue] = field(default_factory=list)  # in the manifest, without some modality
    notes: list[str] = field(default_factory=list)

    def skip(self, kind: str, item, detail: str = "") -> None:
        self.skipped.append(Issue(kind, str(item), detail))

    def lacks(self, kind: str, item, detail: str = "") -> None:
        self.incomplete.append(Issue(kind, str(item), detail))


# Each adapter module registers its `collect(root, **options) -> Collected` under the data set's name.
ADAPTERS: Registry[Callable[..., Collected]] = Registry("data set")


def safe_id(original: str) -> str:
    """`original` when it is a valid sample_id; else its other characters replaced by '-' plus a short
    hash of the original, so that two originals differing only in those characters stay distinct."""
    if SAFE_ID.match(original):
        return original
    digest = hashlib.sha1(original.encode("utf-8")).hexdigest()[:8]
    return f"{UNSAFE_CHARS.sub('-', original)}-{digest}"


def check_share(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def by_label(sample: Sample) -> str:
    return str(sample.label)


def carve(
    samples: list[Sample],
    share: float,
    seed: int,
    *,
    source: str = "train",
    target: str = "valid",
    unit: Callable[[Sample], str] = lambda s: s.sample_id,
    stratum: Callable[[Sample], str] = lambda s: "",
) -> list[Sample]:
    """Move a seeded `share` of the `source` samples to `target`, in whole units (a unit is an actor, a
    UCF101 group, or one clip), drawn per stratum (e.g. per class) so that every class is represented.

    At least one unit moves when a stratum has two or more, and at least one stays, so tiny data sets
    still get a non-empty split of each kind."""
    pool = [s for s in samples if s.split == source]
    units: dict[str, set[str]] = defaultdict(set)
    for s in pool:
        units[stratum(s)].add(unit(s))
    moved: set[tuple[str, str]] = set()
    for key, members in sorted(units.items()):
        ordered = sorted(members)
        random.Random(f"{seed}/{target}/{key}").shuffle(ordered)
        count = round(share * len(ordered))
        if share > 0 and len(ordered) > 1:
            count = min(max(count, 1), len(ordered) - 1)
        moved.update((key, u) for u in ordered[:count])
    return [replace(s, split=target) if s.split == source and (stratum(s), unit(s)) in moved else s for s in samples]


@dataclass(frozen=True)
class ListEntry:
    where: str  # "trainlist01.txt:12", for reports
    path: str  # relative POSIX path as written in the list
    index: str | None  # a trailing class number (UCF101's trainlists), if any


def read_list(path: Path) -> Iterator[ListEntry]:
    """Lines `relative/path.ext [index]`; blank lines skipped. Paths may hold spaces (Kinetics class
    names), so only a trailing whole number is taken as an index."""
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        line = line.strip().replace("\\", "/")
        if not line:
            continue
        head, _, tail = line.rpartition(" ")
        index = tail if head.strip() and tail.isdigit() else None
        yield ListEntry(f"{path.name}:{number}", head.strip() if index else line, index)


def inside(relative: str) -> bool:
    """Whether a listed path stays inside the data set's folder (no absolute path, no '..')."""
    parts = PurePosixPath(relative).parts
    return bool(parts) and not PurePosixPath(relative).is_absolute() and ".." not in parts


def class_folder_videos(root: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """`<root>/<class>/<video>` files with one of `suffixes`, keyed by their relative POSIX path."""
    found = {}
    for path in sorted(root.glob("*/*")):
        if path.is_file() and path.suffix.lower() in suffixes:
            found[path.relative_to(root).as_posix()] = path
    return found


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise LayoutError(f"{path}: no such folder ({what})")
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise LayoutError(f"{path}: no such file ({what})")
    return path
