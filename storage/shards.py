"""WebDataset tar shards written atomically: temporary name, fsync, rename.

Members are `<key>.<ext>`, the layout plain `webdataset` reads. Arrays are `.npy` (never pickled),
metadata `.json`. A reader that finds a shard under its final name can trust it is complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

TMP_MARK = ".tmp-"


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def json_bytes(obj) -> bytes:
    return json.dumps(obj, sort_keys=True).encode("utf-8")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_shard(path: Path, samples: Iterable[tuple[str, dict[str, bytes]]]) -> str:
    """Write samples (key, {ext: bytes}) to `path` atomically; return the shard's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for key, members in samples:
                    for ext, data in members.items():
                        _add_member(tar, f"{key}.{ext}", data)
            raw.flush()
            os.fsync(raw.fileno())
        digest = sha256_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0  # fixed mtime: same content, same bytes
    tar.addfile(info, io.BytesIO(data))


def read_shard(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield (key, {ext: bytes}) per sample, grouping consecutive members by key."""
    key, members = None, {}
    with tarfile.open(path, mode="r:") as tar:
        for info in tar:
            if not info.isfile():
                continue
            name = info.name.rsplit("/", 1)[-1]
            this_key, _, ext = name.partition(".")
            if key is not None and this_key != key:
                yield key, members
                members = {}
            key = this_key
            members[ext] = tar.extractfile(info).read()
    if key is not None:
        yield key, members


def is_temporary(path: Path) -> bool:
    return TMP_MARK in path.name
