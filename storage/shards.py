"""WebDataset tar shards written atomically: temporary name, fsync, rename.

Members are `<key>.<ext>`, the layout plain `webdataset` reads. Arrays are `.npy` (never pickled),
metadata `.json`. A reader that finds a shard under its final name can trust it is complete.
"""

from __future__ import annotations

import ast
import errno
import functools
import hashlib
import io
import json
import math
import os
import stat
import tarfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from storage.atomic import TMP_MARK, fsync_dir

NAME_LIMIT = 100  # bytes of a ustar member name (no '/' in ours, so no prefix field to spill into)
NPY_MAGIC = b"\x93NUMPY"


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class NotRegularFileError(OSError):
    """A FIFO, device or directory where a file's bytes were expected: reading it could block forever."""


class StoreFullError(OSError):
    """The store's disk (or quota) is full: every further write would fail too, so the run stops."""


@contextmanager
def full_disk_stops(path: Path):
    """Turn ENOSPC/EDQUOT while writing `path` into a StoreFullError that says what to do."""
    try:
        yield
    except OSError as err:
        if err.errno not in DISK_FULL or isinstance(err, StoreFullError):
            raise
        raise StoreFullError(err.errno, f"no space left on the store's device while writing {path}; free space "
                             "and run again (what was committed before is kept)") from err


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def load_npy(data: bytes) -> np.ndarray:
    check_npy(data)
    return np.load(io.BytesIO(data), allow_pickle=False)


def check_npy(data: bytes) -> tuple[np.dtype, tuple[int, ...]]:
    """(dtype, shape) of a .npy member, after checking that its header describes exactly its bytes:
    no object dtype (pickle), no negative or missing dimensions; else ValueError saying what is wrong."""
    if data[:6] != NPY_MAGIC or len(data) < 10:
        raise ValueError("not a .npy array (bad magic bytes)")
    width = 2 if data[6] == 1 else 4  # format 1.0 has a 2-byte header length, 2.0 and 3.0 a 4-byte one
    start = 8 + width + int.from_bytes(data[8:8 + width], "little")
    dtype, shape = _npy_header(data[8 + width:start])
    if len(data) - start != math.prod(shape) * dtype.itemsize:
        raise ValueError(f".npy shape {shape} of {dtype} needs {math.prod(shape) * dtype.itemsize} bytes, "
                         f"the member holds {len(data) - start}")
    return dtype, shape


@functools.lru_cache(maxsize=4096)
def _npy_header(header: bytes) -> tuple[np.dtype, tuple[int, ...]]:
    """Parsed once per distinct header: headers repeat across samples of the same shape."""
    try:
        fields = ast.literal_eval(header.decode("latin1"))
        dtype = np.lib.format.descr_to_dtype(fields["descr"])
        shape = fields["shape"]
    except (ValueError, SyntaxError, TypeError, KeyError) as err:
        raise ValueError(f".npy header cannot be read ({err})") from None
    if dtype.hasobject:
        raise ValueError(".npy holds Python objects, which need pickle (refused)")
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
        raise ValueError(f".npy shape {shape!r} is not a tuple of non-negative integers")
    return dtype, shape


def check_member_names(key: str, extensions) -> None:
    """ValueError when a sample's member names do not fit a tar header, before anything is written."""
    for ext in extensions:
        size = len(f"{key}.{ext}".encode())
        if size > NAME_LIMIT:
            raise ValueError(f"member name {key}.{ext} is {size} bytes; tar shards allow {NAME_LIMIT}")


def json_bytes(obj) -> bytes:
    return json.dumps(obj, sort_keys=True).encode("utf-8")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a regular file's bytes; NotRegularFileError for anything else (a FIFO would block the
    open or the read forever, /dev/zero never ends)."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO must not wait for a writer
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFileError(f"{path}: not a regular file")
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_shard(path: Path, samples: Iterable[tuple[str, dict[str, bytes]]]) -> str:
    """Write samples (key, {ext: bytes}) to `path` atomically; return the shard's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with full_disk_stops(path), open(tmp, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for key, members in samples:
                    check_member_names(key, members)
                    for ext, data in members.items():
                        _check_member(key, ext, data)
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


def _check_member(key: str, ext: str, data: bytes) -> None:
    """Every array in a shard must load: a malformed one (copied from a tampered shard) stops the write."""
    if ext.endswith("npy"):
        try:
            check_npy(data)
        except ValueError as err:
            raise ValueError(f"sample {key}: member {key}.{ext}: {err}") from None


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
