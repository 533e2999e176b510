"""Which encoder a modality uses, how its features are named in the store (the encoder's fingerprint
plus the stored dtype), and the record of it kept beside the features (`encoder.json`), from which
`verify --repair` and the corruption analyses make the same features again. No model is loaded here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from extractors import EncoderSpec
from storage.atomic import write_bytes_atomic
from storage.fingerprint import json_fingerprint
from storage.layout import Store

if TYPE_CHECKING:
    from extractors import Encoder

DTYPES = ("float16", "float32")


def store_fingerprint(encoder: Encoder | EncoderSpec, dtype: str) -> str:
    """The encoder's fingerprint plus how its output is stored."""
    return json_fingerprint({"encoder": encoder.fingerprint(), "dtype": dtype})


def choose_spec(modality: str, name: str | None = None, options: dict | None = None) -> EncoderSpec:
    """The chosen encoder's spec: its fingerprint without loading its model."""
    from extractors import encoder_spec

    return encoder_spec(modality, name, **(options or {}))


def record_encoder(store: Path, spec: EncoderSpec, fingerprint: str, dtype: str) -> None:
    """Keep how the features were made beside them, so `verify --repair` can make them again. Rewritten
    whenever it does not read back as this record (a torn or edited file is mended, not trusted)."""
    if not is_recorded(store, spec, fingerprint, dtype):
        write_bytes_atomic(
            Store(store).encoder_record(spec.modality, fingerprint), _record(spec, dtype).encode("utf-8")
        )


def is_recorded(store: Path, spec: EncoderSpec, fingerprint: str, dtype: str) -> bool:
    """Whether the store's encoder.json for these features reads back as this encoder's record."""
    return _read_text(Store(store).encoder_record(spec.modality, fingerprint)) == _record(spec, dtype)


def _record(spec: EncoderSpec, dtype: str) -> str:
    info = {
        "modality": spec.modality,
        "name": spec.name,
        "options": spec.options,
        "dtype": dtype,
        "settings": spec.describe(),
    }
    return json.dumps(info, indent=2, sort_keys=True, default=str)


def recorded_dtype(info: dict, path: Path) -> str:
    """The storage dtype an encoder.json records (records written before precal kept it lack it)."""
    if info.get("dtype") not in DTYPES:
        raise ValueError(
            f"{path} does not record the features' dtype (written by an older precal): "
            "run `precal extract` with the same encoders once to bring it up to date"
        )
    return info["dtype"]


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
