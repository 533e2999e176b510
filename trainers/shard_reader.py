"""A small streaming reader for a pack's shards: plain tar files of `<key>.<ext>` members (the WebDataset
layout, which plain `webdataset` reads too).

webdataset's generic pipeline (tarfile plus a chain of generators) costs ~240 us per sample on a pack's
few small members, more than the rest of loading together. This reads the 512-byte headers directly.
It reads the tars that `tarfile` writes (ustar, pax, GNU long names) and treats a shard as untrusted:
every header's checksum, magic and numbers are checked, a member over MAX_MEMBER_BYTES (or of negative
size) is refused before it is read, every step moves forward through the file, the file must end with
tar's end-of-archive block (a shard cut at a member boundary would otherwise read as a shorter one), only
regular files are returned (links, devices, directories are skipped; nothing is ever written), and any
damage raises CorruptShard, which names the shard and the byte offset.
"""
from __future__ import annotations

import itertools
import re
import zlib
from collections.abc import Iterator

BLOCK = 512
END = bytes(BLOCK)
MAX_MEMBER_BYTES = 256 << 20   # a sample's features are a few MB at most
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
        key, _, value = data[space + 1:end - 1].partition(b"=")
        records[key.decode("utf-8")] = value.decode("utf-8")
        pos = end
    return records


def tar_members(path: str, with_data: bool = True) -> Iterator[tuple[str, bytes | None]]:
    """(name, data) of each regular file of a tar, in order; data is None when with_data is False (the
    payloads are then skipped, not read)."""
    offset = 0
    with open(path, "rb", buffering=1 << 20) as f:
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
                raise CorruptShard(path, f"member {name!r} claims {size} bytes, more than the "
                                         f"{MAX_MEMBER_BYTES} allowed", offset)
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
                yield name, data


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
    for name, data in tar_members(path):
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
    return len({parts[0] for name, _ in tar_members(path, with_data=False) if (parts := split_name(name))})
