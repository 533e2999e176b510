"""Store locations that may be URLs: the few filesystem operations the store needs, through fsspec.

A location is a local `Path` (a plain path or a `file://` URL) or a `URL` (`s3://bucket/key`,
`gs://...`, `memory://...`). Local paths keep the store's local code (rename, fsync, flock); URLs go
through fsspec, where there is no rename: objects are written once, whole, under a unique name (a PUT
is atomic per object). Credentials and endpoints come from the usual places (the environment, profiles;
`AWS_ENDPOINT_URL` for an S3-compatible server): nothing here takes them as arguments, so nothing can
log them.
"""

from __future__ import annotations

import errno
import fnmatch
import io
import os
from pathlib import Path, PurePosixPath
from typing import IO

# Object stores whose create-only write (fsspec's pipe_file(mode="create")) is a conditional PUT
# (If-None-Match: *) answered by the server itself, not an exists-then-write that two writers can race.
ATOMIC_CREATE = frozenset({"s3", "s3a"})


# s3fs asks for an object's size (a HEAD) before reading it whole, to read large ones in concurrent
# ranges; the store's objects (shards, parts, clips) are read whole in one GET instead.
ONE_GET = {"s3": {"max_concurrency": 1}, "s3a": {"max_concurrency": 1}}


class URL:
    """A location on an fsspec filesystem, joined and named like a PurePosixPath."""

    __slots__ = ("protocol", "key")

    def __init__(self, url: str):
        protocol, sep, rest = url.partition("://")
        if not sep or not protocol:
            raise ValueError(f"not a URL: {url!r}")
        self.protocol = protocol
        self.key = PurePosixPath(rest.strip("/")).as_posix() if rest.strip("/") else ""

    def __str__(self) -> str:
        return f"{self.protocol}://{self.key}"

    def __repr__(self) -> str:
        return f"URL({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, URL) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __lt__(self, other: URL) -> bool:
        return str(self) < str(other)

    def __truediv__(self, part: str | os.PathLike) -> URL:
        return URL(f"{self}/{PurePosixPath(part).as_posix()}")

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.key).suffix

    @property
    def parent(self) -> URL:
        return URL(f"{self.protocol}://{PurePosixPath(self.key).parent.as_posix()}")

    def with_name(self, name: str) -> URL:
        return self.parent / name

    def relative_to(self, other: URL) -> PurePosixPath:
        if not isinstance(other, URL) or other.protocol != self.protocol:
            raise ValueError(f"{self} is not under {other}")
        return PurePosixPath(self.key).relative_to(other.key)

    def as_posix(self) -> str:
        return str(self)

    # The Path methods the store's readers use, so that they take either kind of location. Writes
    # are whole objects (one PUT each): there is no rename, so crash-safe writers branch on is_remote.
    def exists(self) -> bool:
        return exists(self)

    def is_file(self) -> bool:
        return filesystem(self).isfile(self.key)

    def is_dir(self) -> bool:
        return filesystem(self).isdir(self.key)

    def iterdir(self) -> list[URL]:
        return children(self)

    def glob(self, pattern: str) -> list[URL]:
        """Like Path.glob, one listing per folder level of the pattern ("*/seed-*/metrics.json")."""
        first, _, rest = pattern.partition("/")
        found = [child for child in children(self) if fnmatch.fnmatchcase(child.name, first)]
        return sorted(deeper for child in found for deeper in child.glob(rest)) if rest else found

    def rglob(self, pattern: str) -> list[URL]:
        return [found for found in files_under(self) if fnmatch.fnmatchcase(found.name, pattern)]

    def read_bytes(self) -> bytes:
        return read_bytes(self)

    def read_text(self, encoding: str = "utf-8") -> str:
        return read_bytes(self).decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        put(self, data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        put(self, text.encode(encoding))

    def stat(self) -> os.stat_result:
        """Size only (an object has no inode); mtime from the store where it gives one."""
        info = filesystem(self).info(self.key)
        modified = info.get("LastModified") or info.get("mtime") or 0
        stamp = modified.timestamp() if hasattr(modified, "timestamp") else float(modified)
        return os.stat_result((0, 0, 0, 1, 0, 0, int(info.get("size") or 0), int(stamp), int(stamp), int(stamp)))

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: object stores have no folders, only key prefixes."""

    def unlink(self, missing_ok: bool = False) -> None:
        if not missing_ok and not exists(self):
            raise FileNotFoundError(str(self))
        remove(self)


Location = Path | URL


def location(value: str | os.PathLike | URL) -> Location:
    """What a user gave (a path, `file://...`, `s3://...`) as a Path or a URL."""
    if isinstance(value, (Path, URL)):
        return value
    text = os.fspath(value)
    protocol, sep, rest = text.partition("://")
    if not sep:
        return Path(text)
    if protocol == "file":
        return Path(rest or "/")
    return URL(text)


def is_remote(where: Location) -> bool:
    return isinstance(where, URL)


def filesystem(where: URL):
    """The fsspec filesystem of a URL, listings never cached (other processes write the same store)."""
    import fsspec

    try:
        return fsspec.filesystem(where.protocol, use_listings_cache=False, **ONE_GET.get(where.protocol, {}))
    except ImportError as err:
        extra = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}.get(where.protocol)
        hint = f" (pip install 'precal[{extra}]')" if extra else ""
        raise ImportError(f"{where}: no filesystem for {where.protocol}:// is installed{hint}") from err


def exists(where: Location) -> bool:
    if isinstance(where, Path):
        return where.exists()
    return filesystem(where).exists(where.key)


def size(where: Location) -> int:
    if isinstance(where, Path):
        return where.stat().st_size
    return int(filesystem(where).size(where.key))


def version(where: Location) -> tuple[int, int | str]:
    """(size, what changes when the bytes do): a file's mtime in ns, an object's ETag."""
    if isinstance(where, Path):
        stat = where.stat()
        return stat.st_size, stat.st_mtime_ns
    info = filesystem(where).info(where.key)
    return int(info.get("size") or 0), str(info.get("ETag") or info.get("etag") or info.get("mtime") or "")


def versions_in(folder: URL) -> dict[URL, tuple[int, str]]:
    """version() of every object directly in a folder, from one listing."""
    try:
        entries = filesystem(folder).ls(folder.key, detail=True)
    except FileNotFoundError:
        return {}
    return {
        folder / PurePosixPath(e["name"]).name: (int(e.get("size") or 0), str(e.get("ETag") or e.get("etag") or ""))
        for e in entries
        if e.get("type") == "file"
    }


def read_bytes(where: Location) -> bytes:
    """The whole file, in one request on an object store."""
    if isinstance(where, Path):
        return where.read_bytes()
    return filesystem(where).cat_file(where.key)


def read_many(locations: list[Location]) -> list[bytes]:
    """Several whole files; objects of one store are fetched concurrently."""
    urls = [where for where in locations if isinstance(where, URL)]
    if not urls:
        return [read_bytes(where) for where in locations]
    fetched = filesystem(urls[0]).cat([where.key for where in urls])
    return [read_bytes(where) if isinstance(where, Path) else fetched[where.key] for where in locations]


def read_available(urls: list[URL]) -> dict[URL, bytes]:
    """Whole objects, fetched concurrently (one GET each); any that cannot be read is left out, for
    whoever reads it next to report why."""
    fetched: dict[URL, bytes] = {}
    for protocol in {url.protocol for url in urls}:
        mine = [url for url in urls if url.protocol == protocol]
        found = filesystem(mine[0]).cat([url.key for url in mine], on_error="omit")
        fetched.update({url: found[url.key] for url in mine if url.key in found})
    return fetched


def open_read(where: Location) -> IO[bytes]:
    """A seekable binary reader; a remote file is fetched whole first (shards and parts are read whole)."""
    if isinstance(where, Path):
        return open(where, "rb")
    return io.BytesIO(read_bytes(where))


def open_stream(where: Location) -> IO[bytes]:
    """A seekable binary reader that fetches only the ranges read (media files: demuxers seek)."""
    if isinstance(where, Path):
        return open(where, "rb")
    return filesystem(where).open(where.key, "rb", cache_type="readahead", block_size=4 << 20)


def put(where: URL, data: bytes) -> str | None:
    """Write a whole object, replacing any before it (one PUT: readers see the old or the new).
    Returns the new version's tag where the store gives one."""
    return _tag_of(filesystem(where).pipe_file(where.key, data))


def put_once(where: URL, data: bytes) -> str | None:
    """Create an object that must not exist yet; FileExistsError when it does. Returns its version tag.

    Atomic where the store answers conditional PUTs (ATOMIC_CREATE); elsewhere an exists-then-write
    that two writers can race, which callers needing exclusion must verify (storage/lease.py does)."""
    try:
        return _tag_of(filesystem(where).pipe_file(where.key, data, mode="create"))
    except FileExistsError:
        raise
    except OSError as err:
        if precondition_failed(err):
            raise FileExistsError(errno.EEXIST, "already exists", str(where)) from err
        raise


def put_if_unchanged(where: URL, data: bytes, tag: str) -> str | None:
    """Replace an object only if it is still the version `tag` names; FileExistsError when it changed.
    Only for stores in ATOMIC_CREATE (an If-Match PUT). Returns the new version's tag."""
    try:
        return _tag_of(filesystem(where).pipe_file(where.key, data, IfMatch=tag))
    except OSError as err:
        if precondition_failed(err):
            raise FileExistsError(errno.EEXIST, "changed meanwhile", str(where)) from err
        raise


def _tag_of(response) -> str | None:
    return response.get("ETag") if isinstance(response, dict) else None


def etag(where: URL) -> str | None:
    """The version tag of an object, or None when it does not exist."""
    try:
        info = filesystem(where).info(where.key)
    except FileNotFoundError:
        return None
    return info.get("ETag") or info.get("etag")


def precondition_failed(err: BaseException) -> bool:
    """An HTTP 412 from the store (s3fs maps it to EINVAL unless the server names the condition)."""
    cause = err.__cause__
    response = getattr(cause, "response", None) or {}
    code = response.get("Error", {}).get("Code")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code == "PreconditionFailed" or status == 412


def remove(where: Location) -> None:
    """Delete a file or object; absent already is fine."""
    if isinstance(where, Path):
        where.unlink(missing_ok=True)
        return
    try:
        filesystem(where).rm_file(where.key)
    except FileNotFoundError:
        pass


def files_under(where: Location, suffix: str = "") -> dict[Location, int]:
    """Every file below `where` (recursively) whose name contains `suffix`, with its size in bytes."""
    if isinstance(where, Path):
        if not where.is_dir():
            return {}
        return {p: p.stat().st_size for p in sorted(where.rglob(f"*{suffix}*")) if p.is_file()}
    fs = filesystem(where)
    try:
        found = fs.find(where.key, detail=True)
    except FileNotFoundError:
        return {}
    root = PurePosixPath(where.key)
    return {
        where / PurePosixPath(key).relative_to(root): int(info.get("size") or 0)
        for key, info in sorted(found.items())
        if info.get("type") == "file" and suffix in PurePosixPath(key).name
    }


def children(where: Location) -> list[Location]:
    """The entries directly inside a folder (an object store's common prefixes count as folders)."""
    if isinstance(where, Path):
        return sorted(where.iterdir()) if where.is_dir() else []
    try:
        names = filesystem(where).ls(where.key, detail=False)
    except FileNotFoundError:
        return []
    return sorted(where / PurePosixPath(name).name for name in names if PurePosixPath(name).name)
