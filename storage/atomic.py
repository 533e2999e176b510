"""State files written whole or not at all: a temporary name in the same folder, fsync, rename, fsync the folder;
on an object store, one PUT of the whole object.

A reader (or a process started after a crash) finds either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from storage import remote
from storage.layout import temporary
from storage.remote import Location


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: Location, data: bytes) -> None:
    if remote.is_remote(path):
        remote.put(path, data)  # a PUT replaces an object whole: readers see the old one or the new
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: Location, obj, **dumps) -> None:
    """JSON as text (`dumps` go to json.dumps); NaN and infinities are refused: they are not JSON."""
    write_bytes_atomic(path, json.dumps(obj, allow_nan=False, **dumps).encode("utf-8"))
