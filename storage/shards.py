"""The store's tar shards (feature shards and training shards): written atomically, read validated.

Members are `<key>.<ext>`, the layout plain `webdataset` reads. Arrays are `.npy` (never pickled),
metadata `.json`. A shard is written to a temporary name, fsynced and renamed: a reader that finds a
shard under its final name can trust it was complete.

Reading: webdataset's generic pipeline (tarfile plus a chain of generators) costs ~240 us per sample on a
pack's few small members, more than the rest of loading together, so `tar_entries` reads the 512-byte
headers directly. It reads the tars that `tarfile` writes (ustar, pax, GNU long names) and treats a shard
as untrusted: every header's checksum, magic and numbers are checked, a member over MAX_MEMBER_BYTES (or
of negative size) is refused before it is read, every step moves forward through the file, the file must
end with tar's end-of-archive block (a shard cut at a member boundary would otherwise read as a shorter
one), only regular files are returned (links, devices, directories are skipped; nothing is ever written),
and any damage raises CorruptShard, which names the shard and the byte offset.
"""

from __future__ import annotations

import errno
import hashlib
import io
import itertools
import json
import os
import re
import stat
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from storage import remote
from storage.atomic import fsync_dir
from storage.layout import Store, temporary
from storage.npy import check_npy
from storage.remote import Location

NAME_LIMIT = 100  # bytes of a ustar member name (no '/' in ours, so no prefix field to spill into)
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
        raise StoreFullError(
            err.errno,
            f"no space left on the store's device while writing {path}; free space "
            "and run again (what was committed before is kept)",
        ) from err


def check_member_names(key: str, extensions) -> None:
    """ValueError when a sample's member names do not fit a tar header, before anything is written."""
    for ext in extensions:
        size = len(f"{key}.{ext}".encode())
        if size > NAME_LIMIT:
            raise ValueError(f"member name {key}.{ext} is {size} bytes; tar shards allow {NAME_LIMIT}")


def json_bytes(obj) -> bytes:
    return json.dumps(obj, sort_keys=True).encode("utf-8")


def sha256_file(path: Location, chunk: int = 1 << 20) -> str:
    """sha256 of a regular file's bytes; NotRegularFileError for anything else (a FIFO would block the
    open or the read forever, /dev/zero never ends)."""
    digest = hashlib.sha256()
    if remote.is_remote(path):
        return hashlib.sha256(remote.read_bytes(path)).hexdigest()  # one request (shards, clips: small)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO must not wait for a writer
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFileError(f"{path}: not a regular file")
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_shard(path: Location, samples: Iterable[tuple[str, dict[str, bytes]]]) -> str:
    """Write samples (key, {ext: bytes}) to `path` atomically; return the shard's sha256.

    On an object store the shard is built in memory and sent in one PUT (objects appear whole or not
    at all, so there is no temporary name to rename)."""
    if remote.is_remote(path):
        raw = io.BytesIO()
        _write_tar(raw, samples)
        remote.put(path, raw.getvalue())
        return hashlib.sha256(raw.getbuffer()).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary(path)
    try:
        with full_disk_stops(path), open(tmp, "wb") as raw:
            _write_tar(raw, samples)
            raw.flush()
            os.fsync(raw.fileno())
        digest = sha256_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest


def _write_tar(raw, samples: Iterable[tuple[str, dict[str, bytes]]]) -> None:
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            check_member_names(key, members)
            for ext, data in members.items():
                _check_member(key, ext, data)
                _add_member(tar, f"{key}.{ext}", data)


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


BLOCK = 512
END = bytes(BLOCK)
MAX_MEMBER_BYTES = 256 << 20  # a sample's features are a few MB at most
REGULAR = (b"0", b"\0", b"7")  # regular file (old and new spelling), contiguous file
META = re.compile(r"__[^/]*__($|/)")  # names webdataset skips (e.g. __index__)


class CorruptShard(ValueError):
    def __init__(self, path: str, reason: str, offset: int | None = None):
        where = "" if offset is None else f" (at byte {offset})"
        super().__init__(f"{path}: not a readable tar shard{where}: {reason}")


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8")


def _number(field: bytes) -> int:
    """A numeric header field: octal digits, or GNU base-256 for large values (first byte 0x80; 0xff for a
    negative one, which no size or checksum may be)."""
    if field[0] in (0x80, 0xFF):
        return int.from_bytes(field[1:], "big") - (256 ** (len(field) - 1) if field[0] == 0xFF else 0)
    digits = field.split(b"\0", 1)[0].strip()
    return int(digits, 8) if digits else 0  # int() takes a sign: a negative size is refused by the caller


def _checksum_ok(header: bytes) -> bool:
    """The stored sum of the header's bytes (its own field counted as spaces), compared modulo 65521: the
    low half of Adler-32 is 1 + that sum mod 65521, computed in C, where a sum in Python costs more than
    the rest of the header."""
    byte_sum = (zlib.adler32(header) & 0xFFFF) - 1
    return (byte_sum - sum(header[148:156]) + 8 * 32 - _number(header[148:156])) % 65521 == 0


def _pax_records(data: bytes) -> dict[str, str]:
    """'<length> <key>=<value>\\n' records, the decimal length counting the whole record. A length that
    ends the record before its key or after the data is refused: a record of length 0 would never advance."""
    records, pos = {}, 0
    while pos < len(data):
        space = data.index(b" ", pos)
        digits = data[pos:space]
        if not digits.isdigit():
            raise ValueError(f"record at {pos}: bad length {digits[:20]!r}")
        end = pos + int(digits)
        if not space + 1 < end <= len(data) or data[end - 1] != 0x0A:
            raise ValueError(f"record at {pos}: length {int(digits)} does not fit its record")
        key, _, value = data[space + 1 : end - 1].partition(b"=")
        records[key.decode("utf-8")] = value.decode("utf-8")
        pos = end
    return records


def tar_entries(path: str, with_data: bool = True, opened=None) -> Iterator[tuple[str, int, int, bytes | None]]:
    """(name, offset of its data, size, data) of each regular file of a tar, in order; data is None when
    with_data is False (the payloads are then skipped, not read). `opened`: the tar's file, already open
    at its start, read instead of opening `path` (which then only names it in errors)."""
    offset = 0
    with nullcontext(opened) if opened is not None else _open_shard(path) as f:
        pending: dict[str, str] = {}  # pax / GNU long-name fields for the next member
        while True:
            header = f.read(BLOCK)
            if header == END:
                return
            if not header:  # tar writers always end with zero blocks: a shard cut at a member boundary
                raise CorruptShard(path, "the file ends without tar's end-of-archive block (cut short?)", offset)
            try:
                if len(header) < BLOCK:
                    raise ValueError("the file ends inside a header")
                if header[257:262] != b"ustar" or not _checksum_ok(header):
                    raise ValueError("not a ustar header (or a damaged one)")
                kind = header[156:157]
                size = int(pending.get("size", _number(header[124:136])))
                name = _text(header[:100])
                if header[257:263] == b"ustar\0" and header[345] != 0:  # POSIX: long names are split
                    name = _text(header[345:500]) + "/" + name
                name = pending.get("path", name)
            except (ValueError, UnicodeDecodeError) as err:
                raise CorruptShard(path, str(err), offset) from None
            if size < 0:  # read(-n) would read to the end of the file, and seek(-n) go backwards
                raise CorruptShard(path, f"member {name!r} claims a negative size ({size} bytes)", offset)
            if size > MAX_MEMBER_BYTES:
                raise CorruptShard(
                    path, f"member {name!r} claims {size} bytes, more than the {MAX_MEMBER_BYTES} allowed", offset
                )
            padded = size + (-size) % BLOCK
            wanted = with_data or kind in (b"x", b"L")
            data = f.read(size) if wanted else None
            if wanted and len(data) < size:
                raise CorruptShard(path, f"member {name!r} is cut short ({len(data)} of {size} bytes)", offset)
            f.seek(padded - size if wanted else padded, 1)
            start, offset = offset, offset + BLOCK + padded
            if kind in (b"x", b"L"):  # pax extended header, GNU long name: fields for the next member
                try:
                    pending = _pax_records(data) if kind == b"x" else {"path": _text(data)}
                except (ValueError, UnicodeDecodeError) as err:
                    what = "pax header" if kind == b"x" else "long name"
                    raise CorruptShard(path, f"bad {what}: {err}", start) from None
                continue
            pending = {}
            if kind in REGULAR:
                yield name, start + BLOCK, size, data


def _open_shard(path: str):
    where = remote.location(path)
    return open(where, "rb", buffering=1 << 20) if isinstance(where, Path) else remote.open_read(where)


def split_name(name: str) -> tuple[str, str] | None:
    """webdataset's grouping: (key, field) = (the name up to the first dot of its base name, the rest)."""
    folder, slash, base = name.rpartition("/")
    stem, dot, field = base.partition(".")
    if not stem or not dot or META.match(name):
        return None
    return folder + slash + stem, field.lower()


def tar_samples(path: str) -> Iterator[dict]:
    """webdataset-style samples of one shard: {"__key__", "__url__", field: bytes, ...}."""
    sample = None
    for name, _, _, data in tar_entries(path):
        parts = split_name(name)
        if parts is None:
            continue
        key, field = parts
        if sample is None or key != sample["__key__"]:
            if sample is not None:
                yield sample
            sample = {"__key__": key, "__url__": path}
        if field in sample:
            raise CorruptShard(path, f"{name!r} appears twice")
        sample[field] = data
    if sample is not None:
        yield sample


def shards_samples(paths: list[str]) -> Iterator[dict]:
    return itertools.chain.from_iterable(tar_samples(p) for p in paths)


def count_samples(path: str) -> int:
    """Samples in a shard, from its headers alone."""
    return len({parts[0] for name, *_ in tar_entries(path, with_data=False) if (parts := split_name(name))})


def read_shard(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {field: bytes}) per sample of a shard, as tar_samples reads them."""
    for sample in tar_samples(str(path)):
        key = sample.pop("__key__")
        del sample["__url__"]
        yield key, sample


class MemberReader:
    """Random access to members of a store's feature shards (named relative to the store, as catalog rows
    name them): each shard's index comes from `tar_entries`' headers, then members are read by offset."""

    def __init__(self, store: Location):
        self.layout = Store(store)
        # Files: far below the process's descriptor limit; objects, held whole in memory: a few.
        self.max_open = 8 if remote.is_remote(self.layout.root) else 64
        self.index: dict[str, dict[str, tuple[int, int]]] = {}
        self.files: dict[str, object] = {}

    def read(self, shard: str, member: str) -> bytes:
        path = self.layout.shard_path(shard)
        if shard not in self.files and len(self.files) >= self.max_open:
            self.close()
        if shard not in self.files:
            self.files[shard] = remote.open_read(path)  # an object is fetched whole: one request per shard
        if shard not in self.index:
            try:
                entries = tar_entries(str(path), with_data=False, opened=self.files[shard])
                self.index[shard] = {name: (at, size) for name, at, size, _ in entries}
            except CorruptShard as err:
                raise ValueError(
                    f"{path}: unreadable feature shard ({err}); `precal verify --repair` re-extracts it"
                ) from None
        if member not in self.index[shard]:
            raise ValueError(
                f"{path}: no member {member!r}, which the catalog places there "
                "(`precal verify --repair` re-extracts the shard)"
            )
        f = self.files[shard]
        offset, size = self.index[shard][member]
        f.seek(offset)
        return f.read(size)

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        self.files.clear()
