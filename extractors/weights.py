"""Loading pretrained weights offline and naming them for fingerprints."""

from __future__ import annotations

import hashlib
from pathlib import Path

# Files in a Hugging Face model folder that change what the model computes. README, licences and
# alternative formats (TF, Flax, ONNX) do not; pytorch_model*.bin counts only without safetensors.
_HF_SUFFIXES = (".json", ".txt", ".model", ".safetensors", ".tiktoken", ".py")

_digests: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path | str) -> str:
    """sha256 of a file's bytes, memoised per (path, size, mtime) so repeated builds cost nothing.

    The full content is hashed: a fine-tuned checkpoint has the same size and safetensors header
    as its parent, so anything cheaper would serve stale features after a fine-tune.
    """
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        with open(path, "rb") as f:
            _digests[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _digests[key]


def hf_files(folder: Path) -> list[Path]:
    files = [p for p in sorted(folder.iterdir()) if p.is_file()]
    has_safetensors = any(p.suffix == ".safetensors" for p in files)
    return [p for p in files if p.suffix in _HF_SUFFIXES or (p.suffix == ".bin" and not has_safetensors)]


def hf_identity(model: str | Path, config) -> str:
    """Content hash of a local model folder, or `hub:<id>@<commit>` for a hub id."""
    folder = Path(model)
    if folder.is_dir():
        digest = hashlib.sha256()
        for path in hf_files(folder):
            digest.update(f"{path.name}:{file_sha256(path)}\n".encode())
        return "sha256:" + digest.hexdigest()
    commit = getattr(config, "_commit_hash", None)
    return f"hub:{model}@{commit or 'unresolved'}"


def hf_source(model: str | Path) -> str:
    """A local folder as an absolute path (transformers then never goes to the network), else a hub id."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return str(folder.resolve())
    if folder.is_absolute() or str(model).startswith((".", "~")):
        raise FileNotFoundError(f"model folder not found: {model}")
    return str(model)


def hf_load(auto_class: str, model: str | Path, *, revision: str | None, trust_remote_code: bool, **kwargs):
    """transformers.<auto_class>.from_pretrained, remote code off unless asked for (it runs the repo's
    Python). transformers is imported here, on first use: it takes seconds, and most runs need only
    the weight-free defaults."""
    import transformers

    return getattr(transformers, auto_class).from_pretrained(
        hf_source(model), revision=revision, trust_remote_code=trust_remote_code, **kwargs
    )
