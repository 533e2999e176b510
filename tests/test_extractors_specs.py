"""Encoder fingerprints, specs and the registry: what identifies stored features, known without loading
a model's weights."""

from __future__ import annotations

import json

import pytest

from extractors import (
    encoder_spec,
    get_encoder,
    register,
)

# --- fingerprints, specs and the registry ------------------------------------------------------


def test_fingerprints_follow_settings_and_are_stable():
    base = {m: get_encoder(m).fingerprint() for m in ("text", "audio", "video")}
    assert base == {m: get_encoder(m).fingerprint() for m in ("text", "audio", "video")}
    assert all(len(f) == 16 and int(f, 16) >= 0 for f in base.values())
    changed = [
        get_encoder("text", max_length=128),
        get_encoder("text", pooled=True),
        get_encoder("audio", n_mels=80),
        get_encoder("audio", max_seconds=10),
        get_encoder("audio", "mfcc"),
        get_encoder("video", fps=5),
        get_encoder("video", size=16),
        get_encoder("video", pooled=True),
    ]
    for enc in changed:
        assert enc.fingerprint() != base[enc.modality], enc.describe()
        json.dumps(enc.describe())  # JSON-able
    assert get_encoder("text").describe()["weights"].startswith("sha256:")


# Computed with precal before EncoderSpec (each encoder built with its model loaded): stores extracted
# then must keep skipping, so these values must never change for the same settings.
PINNED = [  # (modality, name, options, encoder fingerprint, store fingerprint float16, float32)
    ("text", None, {}, "9fe2c69964a27b69", "8b5576efa346b903", "8e37885f9d510eca"),
    ("text", "minilm", {"max_length": 128}, "60f8a1107e099ffb", "b5a07640d085a6a9", "79afe600040f6bef"),
    ("audio", None, {}, "59817d204b5153f4", "9938eb85ab09f2d2", "033bebf18fc2446d"),
    ("audio", "mfcc", {}, "ba8c90dab1fc1b96", "feea466e9f418c33", "0b2c9c64cd061bba"),
    ("audio", "fbank", {}, "a8c436afc1147204", "8baaeb33dc0208f2", "f93f974ab59fa9f8"),
    ("video", None, {}, "5f25bfa7e6ea35f8", "8a65b5a0a5b0b3c0", "cc7dca3e3c2718c5"),
    ("video", "grey", {"fps": 5.0, "pooled": True}, "dee2193bf199cb40", "e6404dd7d01fdd47", "d967838332922db3"),
]


@pytest.mark.parametrize("modality, name, options, encoder, float16, float32", PINNED)
def test_spec_fingerprints_equal_those_of_loaded_encoders(modality, name, options, encoder, float16, float32):
    from pipeline.encoders import store_fingerprint

    spec = encoder_spec(modality, name, **options)
    loaded = get_encoder(modality, name, **options)
    loaded.load_model()
    assert spec.fingerprint() == loaded.fingerprint() == encoder
    assert spec.describe() == loaded.describe()
    assert [store_fingerprint(spec, "float16"), store_fingerprint(spec, "float32")] == [float16, float32]


def test_specs_and_fingerprints_load_no_weights(monkeypatch):
    import extractors.text

    real = extractors.text.hf_load

    def no_weights(auto_class, *args, **kwargs):
        assert auto_class != "AutoModel", "weights loaded"
        return real(auto_class, *args, **kwargs)

    monkeypatch.setattr(extractors.text, "hf_load", no_weights)
    spec = encoder_spec("text", "minilm")
    assert spec.fingerprint() == PINNED[0][3] and spec.describe()["weights"].startswith("sha256:")
    encoder = spec.build()
    assert encoder.fingerprint() == spec.fingerprint()
    with pytest.raises(AssertionError, match="weights loaded"):  # the model loads where features are computed
        encoder.encode(["one two"])


def test_a_process_builds_one_encoder_per_spec():
    """Extraction chunks run in one worker share its encoder, so its model loads once there."""
    spec = encoder_spec("audio", "mfcc")
    shared = spec.shared()
    assert encoder_spec("audio", "mfcc").shared() is shared and spec.build() is not shared
    assert encoder_spec("audio", "logmel").shared() is not shared


def test_registry_refuses_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):
        register("audio", "logmel")(lambda **options: None)
    assert get_encoder("audio", "logmel").name == "logmel"  # the first builder stays
