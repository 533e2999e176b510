"""Content hashes of samples and fingerprints of settings.

A file's sha256 is remembered with its size and mtime (an object's: its size and ETag), so an unchanged
dataset is not re-read on every run; when either changes the file is hashed again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from storage import remote
from storage.atomic import write_json_atomic
from storage.remote import Location
from storage.shards import sha256_file


def json_fingerprint(obj, length: int = 16) -> str:
    """A short stable hash of JSON-able settings."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


PREFETCH = 64  # objects fetched at once when hashing files in a bucket


class FileHashCache:
    """sha256 of files keyed by (path, size, mtime_ns), kept as JSON in the store."""

    def __init__(self, path: Location, keep=None):
        self.path = path
        self.keep = keep  # keep(sha256, data): called with each object fetched to hash it, to reuse its bytes
        self.entries: dict[str, list] = {}
        if path.is_file():
            try:
                self.entries = json.loads(path.read_text())
            except (json.JSONDecodeError, OSError):
                self.entries = {}  # a damaged cache only costs re-hashing
        self.changed = False
        self._listed: dict[Location, dict] = {}  # folder in a bucket -> {object: (size, ETag)}

    def sha256(self, file: Location) -> str:
        size, version = self._version(file)
        key = str(file)
        cached = self.entries.get(key)
        if cached and cached[0] == size and cached[1] == version:
            return cached[2]
        digest = sha256_file(file)
        self.entries[key] = [size, version, digest]
        self.changed = True
        return digest

    def _version(self, file: Location) -> tuple[int, int | str]:
        """(size, mtime) of a file; (size, ETag) of an object, from one listing of its folder per run
        rather than a request per object."""
        if not remote.is_remote(file):
            return remote.version(file)
        if file.parent not in self._listed:
            self._listed[file.parent] = remote.versions_in(file.parent)
        return self._listed[file.parent].get(file) or remote.version(file)

    def prefetch(self, files) -> None:
        """Hash the objects among `files` whose digest is not cached, fetching PREFETCH of them at a time
        concurrently: one after another, a bucket's latency per request would dominate planning. A
        missing or unreadable object is left to sha256, which reports it."""
        stale = []
        for file in dict.fromkeys(f for f in files if f is not None and remote.is_remote(f)):
            try:
                if not self._cached(file):
                    stale.append(file)
            except OSError:
                continue
        for start in range(0, len(stale), PREFETCH):
            fetched = remote.read_available(stale[start : start + PREFETCH])
            for file, data in fetched.items():
                digest = hashlib.sha256(data).hexdigest()
                self.entries[str(file)] = [*self._version(file), digest]
                self.changed = True
                if self.keep is not None:
                    self.keep(digest, data)

    def _cached(self, file: Location) -> bool:
        cached = self.entries.get(str(file))
        return bool(cached) and list(cached[:2]) == list(self._version(file))

    def known(self, file: Location) -> str | None:
        """The file's sha256 when it is already known for its current version (no read), else None."""
        try:
            return self.entries[str(file)][2] if self._cached(file) else None
        except OSError:
            return None

    def save(self) -> None:
        if not self.changed:
            return
        write_json_atomic(self.path, self.entries)
        self.changed = False


def source_file(modality: str, sample) -> Location | None:
    """The media file a modality of the sample is computed from (None for text)."""
    if modality == "text":
        return None
    return sample.video if modality == "video" or sample.audio is None else sample.audio


def content_hash(modality: str, sample, files: FileHashCache) -> str:
    """What this modality of the sample is computed from: its source bytes, the segment, the text.

    Per modality, so that editing a transcript does not re-extract the video.
    """
    parts: dict = {"modality": modality}
    if modality == "text":
        parts["text"] = sample.text
    else:
        parts["source"] = _file_digest(source_file(modality, sample), files)
        parts["segment"] = [sample.start, sample.end]
    return json_fingerprint(parts, length=32)


def _file_digest(path: Path | None, files: FileHashCache) -> str:
    if path is None:
        return "none"
    try:
        return files.sha256(path)
    except OSError as err:
        return f"unreadable:{err.__class__.__name__}"  # extraction will fail it with the reason
