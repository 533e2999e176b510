"""What an extractor needs of a sample: its id, its media paths, its text and its segment.

A structural type: the manifest's samples fit it without this package knowing the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class SampleSource(Protocol):
    sample_id: str
    video: Path | None
    audio: Path | None  # None: the audio track of `video`, when it has one
    text: str | None
    start: float | None  # seconds; None: from the beginning
    end: float | None  # seconds; None: to the end
