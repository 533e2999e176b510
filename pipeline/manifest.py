"""The manifest: one row per sample, read from CSV, JSONL or Parquet with pyarrow.

Columns (ARCHITECTURE.md): `sample_id`, `split`, `label`, and any of `video`, `audio` (paths relative
to the manifest's folder), `text` (the transcript itself), `start`/`end` seconds of a segment.
The manifest and its media may be fsspec URLs (`s3://bucket/data/manifest.csv`); relative media paths
are then keys under the manifest's prefix, checked against one listing of it.
Validation reports every problem at once, each with its row number, instead of stopping at the first.
"""

from __future__ import annotations

import io
import json
import math
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from storage import remote
from storage.layout import SPLITS
from storage.remote import URL, Location, location

SAFE_ID = re.compile(r"^[A-Za-z0-9_-]+$")
# Shard members are named `<id>.<modality>.npy` in ustar tar headers of 100 bytes; this leaves room.
MAX_ID_LENGTH = 80
REQUIRED = ("sample_id", "split", "label")


class ManifestError(ValueError):
    """Every problem found in a manifest, one per line, with row numbers (1 = first data row)."""

    def __init__(self, path: Path, problems: list[str]):
        self.path, self.problems = path, problems
        listed = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} problem(s) in the manifest:\n{listed}")


@dataclass(frozen=True)
class Sample:
    sample_id: str
    split: str
    label: str | float | int
    video: Location | None = None
    audio: Location | None = None
    text: str | None = None
    start: float | None = None
    end: float | None = None

    def has(self, modality: str) -> bool:
        """Whether the manifest gives this modality a source (audio may come from the video)."""
        if modality == "text":
            return self.text is not None
        if modality == "audio":
            return self.audio is not None or self.video is not None
        return self.video is not None


@dataclass
class Manifest:
    path: Location
    root: Location
    samples: list[Sample] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # rows left out when read with strict=False

    def by_id(self) -> dict[str, Sample]:
        return {s.sample_id: s for s in self.samples}

    def task(self) -> str:
        """Regression when every label is a number and some are fractional, else classification."""
        labels = [s.label for s in self.samples]
        numeric = all(isinstance(x, (int, float)) for x in labels)
        if numeric and any(isinstance(x, float) and not x.is_integer() for x in labels):
            return "regression"
        return "classification"


def read_rows(where: Location) -> tuple[list[str], list[dict]]:
    """(column names, rows as dicts) of a CSV, JSONL or Parquet manifest."""
    suffix = where.suffix.lower()
    path = where if isinstance(where, Path) else io.BytesIO(remote.read_bytes(where))
    if suffix in (".jsonl", ".json", ".ndjson"):
        return _read_jsonl(path)
    if suffix == ".csv":
        # Everything as bytes, decoded per value: ids like "007" must not change type, and one row
        # with invalid UTF-8 must be reported as that row, not fail the file. An unquoted empty
        # field means "no value"; a quoted "" is an explicit (empty) transcript.
        with pacsv.open_csv(path, convert_options=pacsv.ConvertOptions(check_utf8=False)) as reader:
            names = reader.schema.names
        if not isinstance(path, Path):
            path.seek(0)
        opts = pacsv.ConvertOptions(
            column_types={n: pa.binary() for n in names},
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            check_utf8=False,
        )
        table = pacsv.read_csv(path, convert_options=opts)
    elif suffix == ".parquet":
        table = pq.read_table(path)
    else:
        raise ManifestError(where, [f"unknown manifest format {suffix!r}: use .csv, .jsonl or .parquet"])
    return table.column_names, table.to_pylist()


UNPARSED = "__unparsed__"  # key of a JSONL row that could not be read, holding why


def _read_jsonl(path: Path | io.BytesIO) -> tuple[list[str], list[dict]]:
    """One JSON object per line, each row keeping its own value types: pyarrow's reader wants one type
    per column and rejected the whole file when one label was a number and another a string. A line
    that is not a JSON object stays a row, reported by number like any other bad row."""
    rows = []
    opened = (
        open(path, encoding="utf-8", errors="replace")
        if isinstance(path, Path)
        else io.TextIOWrapper(path, encoding="utf-8", errors="replace")
    )
    with opened as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                row = {UNPARSED: f"not valid JSON ({err.msg} at column {err.colno})"}
            rows.append(row if isinstance(row, dict) else {UNPARSED: "not a JSON object"})
    columns = list(dict.fromkeys(key for row in rows for key in row if key != UNPARSED))
    return columns, rows


def read_manifest(
    path: str | Path | URL, *, allow_outside_root: bool = False, check_files: bool = True, strict: bool = True
) -> Manifest:
    """Read and validate a manifest; raise ManifestError listing every problem.

    With strict=False, rows with problems are left out and listed in `Manifest.rejected` instead, so
    that extraction goes on with every good sample; the error is raised only if no row is usable.
    """
    path = location(path)
    if not path.is_file():
        raise ManifestError(path, ["the manifest file does not exist"])
    try:
        columns, rows = read_rows(path)
    except (pa.ArrowInvalid, UnicodeDecodeError, OSError) as err:
        raise ManifestError(path, [f"cannot be parsed: {err}"]) from err
    root = path.parent.resolve() if isinstance(path, Path) else path.parent
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise ManifestError(path, [f"missing required column(s): {', '.join(missing)}"])
    problems: list[str] = []
    samples, seen = [], {}
    media = MediaRoot(root, allow_outside_root, check_files)
    for i, row in enumerate(rows, start=1):
        sample = _parse_row(row, i, media, problems)
        if sample is None:
            continue
        if sample.sample_id in seen:
            first = seen[sample.sample_id]
            problems.append(f"row {i}: duplicate sample_id {sample.sample_id!r} (first at row {first})")
            continue
        seen[sample.sample_id] = i
        samples.append(sample)
    if not rows:
        problems.append("the manifest has no rows")
    if problems and (strict or not samples):
        raise ManifestError(path, problems)
    return Manifest(path=path, root=root, samples=samples, rejected=problems)


def _blank(value) -> bool:
    return (
        value is None
        or (isinstance(value, str) and not value.strip())
        or (isinstance(value, float) and math.isnan(value))
    )


def _decode(row: dict, i: int, problems: list[str]) -> dict:
    """CSV values arrive as bytes: decode them, naming the row and column of invalid UTF-8."""
    decoded = {}
    for column, value in row.items():
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as err:
                problems.append(f"row {i}: {column} is not valid UTF-8 (byte {err.start})")
                value = None
        decoded[column] = value
    return decoded


def _parse_row(row: dict, i: int, media_root: MediaRoot, problems: list[str]) -> Sample | None:
    if UNPARSED in row:
        problems.append(f"row {i}: {row[UNPARSED]}")
        return None
    before = len(problems)
    row = _decode(row, i, problems)
    sample_id = "" if _blank(row.get("sample_id")) else str(row["sample_id"]).strip()
    if not SAFE_ID.match(sample_id):
        problems.append(f"row {i}: sample_id {sample_id!r} must be non-empty and use only letters, digits, '-' and '_'")
    elif len(sample_id) > MAX_ID_LENGTH:
        problems.append(
            f"row {i}: sample_id {sample_id[:20]}... is {len(sample_id)} characters long; at most "
            f"{MAX_ID_LENGTH} are allowed (shard member names are limited to 100 bytes)"
        )
    split = str(row.get("split") or "").strip()
    if split not in SPLITS:
        problems.append(f"row {i}: split {split!r} is not one of {', '.join(SPLITS)}")
    label = _parse_label(row.get("label"))
    if label is None:
        problems.append(f"row {i}: label is empty")
    elif isinstance(label, float) and not math.isfinite(label):
        problems.append(f"row {i}: label {row.get('label')!r} is not a finite number")
    media = {m: media_root.resolve(row.get(m), m, i, problems) for m in ("video", "audio")}
    text = None if row.get("text") is None else str(row["text"])
    start, end = (_parse_time(row.get(k), k, i, problems) for k in ("start", "end"))
    if start is not None and end is not None and end <= start:
        problems.append(f"row {i}: end ({end}) must be after start ({start})")
    if len(problems) == before and all(_blank(row.get(m)) for m in ("video", "audio")) and text is None:
        problems.append(f"row {i}: no modality given (video, audio and text are all empty)")
    if len(problems) > before:
        return None
    return Sample(sample_id, split, label, media["video"], media["audio"], text, start, end)


def _parse_label(value) -> str | float | int | None:
    """A class name, or a number; a whole number is an int however it is written (`1`, `1.0`, "1.0"),
    so that it is one class."""
    if _blank(value):
        return None
    if isinstance(value, (int, float)):
        return _whole(value)
    text = str(value).strip()
    for cast in (int, float):
        try:
            return _whole(cast(text))
        except ValueError:
            pass
    return text


def _whole(number: int | float) -> int | float:
    return int(number) if isinstance(number, float) and number.is_integer() else number


def _parse_time(value, name: str, i: int, problems: list[str]) -> float | None:
    if _blank(value):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        problems.append(f"row {i}: {name} {value!r} is not a number of seconds")
        return None
    if not 0 <= seconds < math.inf:
        problems.append(f"row {i}: {name} must be a finite number of seconds >= 0, got {value!r}")
        return None
    return seconds


class MediaRoot:
    """Resolves a row's media paths against the manifest's folder (a local folder or a URL prefix)."""

    def __init__(self, root: Location, allow_outside: bool, check_files: bool):
        self.root, self.allow_outside, self.check_files = root, allow_outside, check_files
        self._listed: set[Location] | None = None

    def resolve(self, value, column: str, i: int, problems: list[str]) -> Location | None:
        if _blank(value):
            return None
        path = self._join(str(value).strip())
        if not self.allow_outside and not self._inside(path):
            problems.append(
                f"row {i}: {column} path {value!r} escapes the dataset root {self.root} "
                "(pass --allow-outside-root to permit)"
            )
            return None
        if self.check_files and not self._is_file(path):
            problems.append(f"row {i}: {column} file {value!r} does not exist")
            return None
        return path

    def _join(self, value: str) -> Location:
        if "://" in value:
            return location(value)
        if isinstance(self.root, Path):
            return (self.root / value).resolve()
        return URL(f"{self.root.protocol}://{posixpath.normpath(posixpath.join(self.root.key, value))}")

    def _inside(self, path: Location) -> bool:
        if isinstance(self.root, Path):
            return isinstance(path, Path) and path.is_relative_to(self.root)
        return (
            isinstance(path, URL) and path.protocol == self.root.protocol and path.key.startswith(self.root.key + "/")
        )

    def _is_file(self, path: Location) -> bool:
        """A local file, or an object of the manifest's prefix (one listing for all rows, not a request each)."""
        if isinstance(path, Path) or not self._inside(path):
            return path.is_file()
        if self._listed is None:
            self._listed = set(remote.files_under(self.root))
        return path in self._listed


def write_manifest(samples: list[dict], path: Path) -> Path:
    """Write rows (dicts with manifest columns) as CSV, JSONL or Parquet by the path's suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["sample_id", "split", "label", "video", "audio", "text", "start", "end"]
    present = [c for c in columns if any(c in r for r in samples)]
    table = pa.table({c: [None if r.get(c) is None else str(r[c]) for r in samples] for c in present})
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        pq.write_table(table, path)
    elif suffix == ".csv":
        pacsv.write_csv(table, path)
    elif suffix in (".jsonl", ".ndjson"):
        with open(path, "w", encoding="utf-8") as f:
            for row in table.to_pylist():
                f.write(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n")
    else:
        raise ValueError(f"{path}: unknown manifest format {suffix!r}")
    return path
