"""precal extractors: decoding, encoders per modality (a registry of named builders), batched extraction.

    from extractors import encoder_spec, get_encoder, extract_features
    spec = encoder_spec("audio")                   # the offline default, log-mel: settings, no weights
    spec.fingerprint()                             # names its features in the store; loads no model
    encoder = spec.build()                         # the model loads when it first computes features
    for sample, result in extract_features(samples, encoder, num_workers=2):
        ...                                        # result: Features, or DecodeError for a bad input

This package never writes files; storage/ does.
"""

from . import audio, text, video  # noqa: F401  (importing registers the builders)
from .base import (DEFAULTS, EXTRACTOR_VERSION, Encoder, EncoderSpec, Features, encoder_spec, get_encoder,
                   list_encoders, register)
from .decode import DecodeError, iter_video_frames, read_audio, read_text, read_video
from .extract import extract_features

__all__ = [
    "DEFAULTS",
    "EXTRACTOR_VERSION",
    "DecodeError",
    "Encoder",
    "EncoderSpec",
    "Features",
    "encoder_spec",
    "extract_features",
    "get_encoder",
    "iter_video_frames",
    "list_encoders",
    "read_audio",
    "read_text",
    "read_video",
    "register",
]
