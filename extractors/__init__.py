"""precal extractors: decoding, encoders per modality (a registry of named builders), batched extraction.

    from extractors import encoder_spec, get_encoder, extract_features
    spec = encoder_spec("audio")                   # the offline default, log-mel: settings, no weights
    spec.fingerprint()                             # names its features in the store; loads no model
    encoder = spec.build()                         # the model loads when it first computes features
    for sample, result in extract_features(samples, encoder, num_workers=2):
        ...                                        # result: Features, or DecodeError for a bad input

This package never writes files; storage/ does. The names that need torch, PyAV or OpenCV load with
their module on first use: `import extractors` for a spec or a fingerprint takes milliseconds, not seconds.
"""

import importlib

from .spec import DEFAULTS, EXTRACTOR_VERSION, EncoderSpec

_MODULE_OF = {
    "Encoder": "base",
    "Features": "base",
    "encoder_spec": "base",
    "get_encoder": "base",
    "list_encoders": "base",
    "register": "base",
    "DecodeError": "decode",
    "iter_video_frames": "decode",
    "read_audio": "decode",
    "read_text": "decode",
    "read_video": "decode",
    "extract_features": "extract",
}


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)


__all__ = [
    "DEFAULTS",
    "EXTRACTOR_VERSION",
    "EncoderSpec",
    *_MODULE_OF,
]
