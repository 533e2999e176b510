"""What an encoder computes, apart from the encoder: EncoderSpec, fingerprints, the defaults.

Nothing here imports torch, so a caller that only plans (which samples a fingerprint still lacks)
starts in a fraction of a second; the encoder itself is built from the spec where features are computed.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Encoder

# Bump when a change in this package changes the features any encoder produces: the fingerprint
# covers it, so cached features from older code are not mistaken for current ones.
EXTRACTOR_VERSION = "1"

DEFAULTS = {"text": "minilm", "audio": "logmel", "video": "grey"}  # the modalities extractors serve, and their default


def fingerprint_of(description: dict) -> str:
    canonical = json.dumps(description, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EncoderSpec:
    """What an encoder computes, read without its weights, as transformers' AutoConfig is to AutoModel.

    `name` and `options` are the registered builder and its options as chosen (name None: the
    modality's default); `description` is what the fingerprint covers: the encoder's own name, its
    weights' identity, pooling, preprocessing settings and the extractor version. Planning, packing and
    checking stored features need only this; `build()` gives the encoder, whose model loads only when
    it computes features.
    """

    modality: str
    name: str | None
    options: dict
    description: dict

    @property
    def encoder_name(self) -> str:
        """The encoder's own name (`resnet18` for the `torchvision` builder with arch=resnet18)."""
        return self.description["name"]

    def describe(self) -> dict:
        return self.description

    def fingerprint(self) -> str:
        return fingerprint_of(self.description)

    def build(self) -> Encoder:
        """A new encoder for this spec (its model loads on first use)."""
        from .base import get_encoder

        return get_encoder(self.modality, self.name, **self.options)

    def shared(self) -> Encoder:
        """This process's one encoder for this spec, built on the first call: every extraction chunk a
        worker process (a Dask or Prefect worker, the CLI) runs reuses its loaded model."""
        key = (self.modality, self.fingerprint(), json.dumps(self.options, sort_keys=True, default=str))
        with _SHARED_LOCK:
            if key not in _SHARED:
                _SHARED[key] = self.build()
            return _SHARED[key]


_SHARED: dict[tuple[str, str, str], Encoder] = {}  # per process
_SHARED_LOCK = threading.Lock()  # chunks of one modality may run in threads of one worker
