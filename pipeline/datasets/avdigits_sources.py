"""AV-digits sources: the FSDD recordings and the MNIST images, read and checked, and MNIST's fixed split.

Splits follow FSDD's own convention by take index (0-4 test, 5-9 valid, 10+ train). MNIST images are
partitioned per digit in file order (first fifth test, next fifth valid, rest train), so no image is
seen in two splits whatever the seed.
"""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DIGITS = tuple(range(10))
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_SIZE = 28
FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


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


def split_of_take(take: int) -> str:
    return "test" if take < 5 else "valid" if take < 10 else "train"


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
        raise DatasetError(
            f"{path}: MNIST needs at least 5 images of every digit, digit {counts.argmin()} has {counts.min()}"
        )
    return pixels.reshape(-1, DIGIT_SIZE, DIGIT_SIZE).astype(np.uint8), labels


def mnist_partition(labels: np.ndarray) -> dict[tuple[int, str], np.ndarray]:
    """Row indices per (digit, split): per digit in file order, first fifth test, next fifth valid, rest train."""
    pools = {}
    for digit in DIGITS:
        rows = np.flatnonzero(labels == digit)
        fifth = len(rows) // 5
        pools[digit, "test"], pools[digit, "valid"], pools[digit, "train"] = np.split(rows, [fifth, 2 * fifth])
    return pools
