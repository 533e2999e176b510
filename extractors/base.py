"""The Encoder interface, its Features output, and the registry of named builders."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .registry import Registry
from .spec import DEFAULTS, EXTRACTOR_VERSION, EncoderSpec, fingerprint_of

if TYPE_CHECKING:
    from .source import SampleSource


@dataclass
class Features:
    array: np.ndarray  # [T, D] float32, or [D] when the encoder is pooled
    timestamps: np.ndarray | None  # [T] seconds from the segment start; None for pooled or text tokens


class Encoder:
    """One encoder choice for one modality.

    Building one is cheap: it reads settings, preprocessing and its weights' identity (config files,
    tokenizers, processors), so describe() and fingerprint() never load a model. The model loads once,
    on first use (`to` or `encode`), i.e. only where features are computed.
    `loader` (decode + light preprocessing of one Sample) holds no model and pickles, so DataLoader
    workers can run it; `encode` runs the model on a batch of loaded items on `self.device`.
    Subclasses set modality, name and loader, and implement settings(), weights(), _encode() and,
    when they have weights, _load_model().
    """

    modality: str
    name: str
    loader: Callable[[SampleSource], Any]

    def __init__(self, *, pooled: bool = False):
        self.pooled = pooled
        self.device = torch.device("cpu")
        self.amp = False
        self._description: dict | None = None
        self._model_loaded = False

    def settings(self) -> dict:
        """Preprocessing and model options that change the features (JSON-able)."""
        raise NotImplementedError

    def weights(self) -> str | None:
        """Identity of the weights (content hash or hub commit); None for weight-free encoders."""
        raise NotImplementedError

    def _encode(self, batch: list[Any]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """(sequence [T, D] float32, timestamps [T] or None) for each loaded item."""
        raise NotImplementedError

    def describe(self) -> dict:
        if self._description is None:
            self._description = {
                "modality": self.modality,
                "name": self.name,
                "weights": self.weights(),
                "pooled": self.pooled,
                "extractor_version": EXTRACTOR_VERSION,
                **self.settings(),
            }
        return self._description

    def fingerprint(self) -> str:
        return fingerprint_of(self.describe())

    def _load_model(self) -> None:
        """Load the weights into the model(s) that modules() returns; weight-free encoders have none."""

    def load_model(self) -> None:
        """Load the model now, once; to() and encode() do it on first use."""
        if not self._model_loaded:
            self._load_model()
            self._model_loaded = True

    def load(self, sample: SampleSource) -> Any:
        return self.loader(sample)

    def modules(self) -> list[torch.nn.Module]:
        """The torch modules to move to the device (none for weight-free encoders)."""
        return []

    def to(self, device: str | torch.device, *, amp: bool = True) -> Encoder:
        """Move to `device`; `amp` enables bf16/fp16 autocast around model forwards on CUDA only."""
        self.load_model()
        self.device = torch.device(device)
        self.amp = amp and self.device.type == "cuda"
        for module in self.modules():
            module.to(self.device)
        return self

    def encode(self, batch: list[Any]) -> list[Features]:
        """Features of each loaded item, in order. Items go to the model in groups of similar length,
        so padding one long clip never multiplies memory by the batch size."""
        self.load_model()
        outputs: list[Any] = [None] * len(batch)
        with torch.inference_mode():
            for group in padding_groups([len(item) for item in batch]):
                for i, out in zip(group, self._encode([batch[i] for i in group])):
                    outputs[i] = out
        return [self._features(seq, times) for seq, times in outputs]

    def _features(self, seq: np.ndarray, times: np.ndarray | None) -> Features:
        seq = np.ascontiguousarray(seq, dtype=np.float32)
        if self.pooled:  # mean over the real steps only: padding never reaches this point
            return Features(seq.mean(0), None)
        return Features(seq, None if times is None else np.asarray(times, dtype=np.float32))

    def autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        """Host array to the device; through pinned memory on CUDA so the copy is asynchronous."""
        t = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cuda":
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.modality}/{self.name}, pooled={self.pooled})"


_BUILDERS: dict[str, Registry[Callable[..., Encoder]]] = {m: Registry(f"{m} encoder") for m in DEFAULTS}


def register(modality: str, name: str):
    """Decorator: make `builder(**options) -> Encoder` available as get_encoder(modality, name).
    The builder must not load weights (the encoder loads them on first use); a taken name is refused."""
    return _BUILDERS[modality].register(name)


def get_encoder(modality: str, name: str | None = None, **options) -> Encoder:
    """Build a registered encoder (its model loads on first use); name None is the modality's offline default."""
    if modality not in _BUILDERS:
        raise ValueError(f"unknown modality {modality!r}; expected one of {', '.join(DEFAULTS)}")
    return _BUILDERS[modality].get(name or DEFAULTS[modality])(**options)


def encoder_spec(modality: str, name: str | None = None, **options) -> EncoderSpec:
    """The spec of a registered encoder: its settings and weights' identity, no weights loaded."""
    return EncoderSpec(modality, name, options, get_encoder(modality, name, **options).describe())


def list_encoders() -> dict[str, list[str]]:
    return {m: registry.names() for m, registry in _BUILDERS.items()}


def padding_groups(lengths: list[int]) -> list[list[int]]:
    """Indices grouped so that each group, padded to its longest item, takes at most twice the memory
    of its items themselves: memory follows the longest clip, not batch x longest. A batch that
    already meets this stays one group, in its order."""
    if len(lengths) * max(lengths, default=0) <= 2 * sum(lengths):
        return [list(range(len(lengths)))]
    groups: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True):  # longest first
        if current and (len(current) + 1) * lengths[current[0]] > 2 * (real + lengths[i]):
            groups.append(current)
            current, real = [], 0
        current.append(i)
        real += lengths[i]
    groups.append(current)
    return groups


def unpad(padded: torch.Tensor, lengths: list[int]) -> list[np.ndarray]:
    """[B, T, D] device tensor -> per-item float32 numpy [length_i, D], one device-to-host copy."""
    host = padded.float().cpu().numpy()
    return [host[i, :n] for i, n in enumerate(lengths)]


# The built-in encoders register themselves when imported; they need the names above, so they come last.
from . import audio, text, video  # noqa: E402, F401
