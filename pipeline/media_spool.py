"""Media from a bucket spooled to local disk: each clip fetched once per process, many at a time, then
read by every decoder that needs it.

A clip in a bucket is needed up to three times in a run: hashed while planning, then decoded for audio
and for video. Fetched one request after another by a decoding worker, every use costs a round trip
(measured: 3 GETs per sample, extraction at 0.39 of local disk). The spool keeps the bytes planning
fetched, fetches what is still missing PREFETCH objects at a time in a thread that runs ahead of the
decoders, and hands decoders `Spooled` URLs: they read the local copy, or fetch the clip themselves when
it is not (or no longer) there. Copies are named by their sha256, so a changed object is never served
stale. The spool holds at most PRECAL_MEDIA_SPOOL_MB (default 1024, 0 turns it off; never more than a
quarter of the free space), dropping the least recently used copies; it is removed at exit, and the
folders of killed processes by the next process that makes one.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from storage import remote
from storage.fingerprint import source_file
from storage.remote import URL

PREFETCH = 64  # objects fetched at once
AHEAD = 512  # samples the fetching thread may run ahead of the decoders
DEFAULT_MB = 1024
PREFIX = "precal-media-"


class MediaSpool:
    """Local copies of remote media, named by their sha256, at most `limit` bytes in all."""

    def __init__(self, folder: Path, limit: int):
        self.folder = folder
        self.limit = limit
        self.sizes: OrderedDict[str, int] = OrderedDict()  # sha256 -> bytes, least recently used first
        self.used = 0
        self.lock = threading.Lock()

    def path(self, digest: str) -> Path:
        return self.folder / digest

    def keep(self, digest: str, data: bytes) -> None:
        """Keep an object's bytes; an empty one is left for its decoder to report."""
        if not data or len(data) > self.limit:
            return
        with self.lock:
            if digest in self.sizes:
                self.sizes.move_to_end(digest)
                return
        partial = self.folder / f".{digest}.{threading.get_ident()}"
        try:
            partial.write_bytes(data)
            os.replace(partial, self.path(digest))  # a decoder sees the whole copy or none
        except OSError:  # a full disk or a removed folder: the copy is only a shortcut, its decoder fetches
            partial.unlink(missing_ok=True)
            return
        with self.lock:
            if digest in self.sizes:  # another thread kept the same bytes meanwhile
                return
            self.sizes[digest] = len(data)
            self.used += len(data)
            while self.used > self.limit:
                gone, size = self.sizes.popitem(last=False)
                self.used -= size
                self.path(gone).unlink(missing_ok=True)

    def fetch(self, wanted: list[tuple[str, URL]]) -> None:
        """Fetch the (sha256, URL) pairs not spooled yet, concurrently. An object that cannot be read, or
        whose bytes are no longer those planning hashed, is not kept: its decoder fetches it and reports."""
        with self.lock:
            missing = {url: digest for digest, url in wanted if digest not in self.sizes}
        for url, data in remote.read_available(list(missing)).items():
            if hashlib.sha256(data).hexdigest() == missing[url]:
                self.keep(missing[url], data)

    def spooled(self, sample, modality: str, digest: str | None):
        """The sample with this modality's source as a Spooled URL (local copy: the spool's, by digest)."""
        from extractors.fetch import Spooled  # the decoders' type; cheap, no torch

        source = source_file(modality, sample)
        if digest is None or not remote.is_remote(source) or not self.limit:
            return sample
        field = "video" if source is sample.video else "audio"
        return dataclasses.replace(sample, **{field: Spooled(str(source), self.path(digest))})

    def ahead(self, wanted: list[tuple[int, str, URL]]) -> Prefetch:
        """A started Prefetch of (position, sha256, URL) triples, for a `with` block."""
        return Prefetch(self, wanted)


class Prefetch:
    """Fetches (position, sha256, URL) triples into a spool in a background thread, in order, at most
    AHEAD positions ahead of the samples the caller reports used."""

    def __init__(self, spool: MediaSpool, wanted: list[tuple[int, str, URL]]):
        self.spool, self.wanted = spool, wanted
        self.used = 0
        self.stopped = False
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="media-prefetch", daemon=True)
        if wanted and spool.limit:
            self.thread.start()

    def use(self) -> None:
        """One more sample has been decoded: the thread may fetch one further."""
        with self.changed:
            self.used += 1
            self.changed.notify_all()

    def _run(self) -> None:
        for start in range(0, len(self.wanted), PREFETCH):
            batch = self.wanted[start : start + PREFETCH]
            position = batch[0][0]
            with self.changed:
                self.changed.wait_for(lambda: self.stopped or position - self.used < AHEAD)  # noqa: B023 (waited on here)
                if self.stopped:
                    return
            try:
                self.spool.fetch([(digest, url) for _, digest, url in batch])
            except Exception:  # noqa: BLE001 (no credentials, no filesystem package...): the decoders fetch
                return  # each clip themselves and report, per file, what is wrong

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *_) -> None:
        with self.changed:
            self.stopped = True
            self.changed.notify_all()
        if self.thread.is_alive():
            self.thread.join()


_spool: MediaSpool | None = None
_making = threading.Lock()  # planning's fetching thread and the decoders' caller may both ask first


def media_spool() -> MediaSpool:
    """This process's spool (a Dask worker keeps its own across chunks, like its encoders)."""
    global _spool
    with _making:
        if _spool is None:
            root = Path(tempfile.gettempdir())
            _remove_abandoned(root)
            folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=root))
            atexit.register(_remove, folder, os.getpid())
            _spool = MediaSpool(folder, _limit(root))
        return _spool


def keep(digest: str, data: bytes) -> None:
    """Keep bytes fetched elsewhere (to hash them while planning) in this process's spool."""
    media_spool().keep(digest, data)


def _limit(root: Path) -> int:
    megabytes = os.environ.get("PRECAL_MEDIA_SPOOL_MB", str(DEFAULT_MB))
    try:
        wanted = int(float(megabytes) * 2**20)
    except ValueError:
        raise ValueError(f"PRECAL_MEDIA_SPOOL_MB must be a number of megabytes, got {megabytes!r}") from None
    return max(0, min(wanted, shutil.disk_usage(root).free // 4))


def _remove(folder: Path, owner: int) -> None:
    if os.getpid() == owner:  # a forked child inherits the exit hook, not the folder
        shutil.rmtree(folder, ignore_errors=True)


def _remove_abandoned(root: Path) -> None:
    """Spool folders whose process is gone (killed before its exit hook ran)."""
    for folder in root.glob(f"{PREFIX}*-*"):
        pid = folder.name[len(PREFIX) :].partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
