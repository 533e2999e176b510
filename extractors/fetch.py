"""Media in a bucket: any fsspec URL (`s3://...`, `gs://...`) a manifest names.

A clip is fetched whole in one request and decoded from memory: clips are small, and seeking in a
remote file would cost a request per seek. A caller that has the clip's bytes already (fetched once
for the whole run, many at a time) hands decoders a `Spooled` URL, and the local copy is read instead.
Credentials and endpoints come from the environment or the user's profiles, as fsspec finds them.
"""

from __future__ import annotations

import io
from pathlib import Path


class Spooled(str):
    """A media URL whose bytes may wait in a local file (`local`): decoders read that file when it is
    there and fetch the URL when it is not; messages name the URL."""

    local: str

    def __new__(cls, url: str, local: str | Path):
        spooled = super().__new__(cls, url)
        spooled.local = str(local)
        return spooled

    def __reduce__(self):  # str's own pickling would drop `local` on the way to a decoding worker
        return Spooled, (str(self), self.local)


def is_url(path) -> bool:
    """A media location that fsspec opens; `file://` URLs and plain paths are local files."""
    protocol, sep, _ = str(path).partition("://")
    return bool(sep) and protocol != "file"


def fetch(url, error: type[Exception]) -> io.BytesIO:
    """The bytes of the file at `url` (of its local copy, for a Spooled URL whose copy is there);
    `error(url, reason)` when it is missing, unreadable or empty."""
    if isinstance(url, Spooled):
        try:
            return io.BytesIO(Path(url.local).read_bytes())
        except FileNotFoundError:  # not fetched yet, or evicted: fetch it here
            pass
    url = str(url)
    import fsspec.core  # only for media in a bucket

    try:
        protocol = url.partition("://")[0]
        # One GET: opening the file, or s3fs's concurrent reads, would ask for its size first.
        fs, path = fsspec.core.url_to_fs(url, **({"max_concurrency": 1} if protocol in ("s3", "s3a") else {}))
        data = fs.cat_file(path)
    except FileNotFoundError:
        raise error(url, "file not found") from None
    except (OSError, ValueError) as e:
        raise error(url, f"cannot be read ({e})") from e
    if not data:
        raise error(url, "file is empty (0 bytes)")
    return io.BytesIO(data)
