"""Hugging Face and torchvision encoders, with tiny random models saved to a temporary folder and
loaded back offline through get_encoder: every family runs on real GRID clips of different lengths,
batched equals one by one, and the fingerprint follows the weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as tf
from safetensors.torch import save_file

from extractors import encoder_spec, extract_features, get_encoder
from pipeline.manifest import Sample

SMALL = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
# A two-layer convolutional front end (stride 80: a frame every 5 ms) keeps the speech models tiny.
CONV = dict(
    conv_dim=(8, 8),
    conv_stride=(10, 8),
    conv_kernel=(10, 8),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz", "bin", "blue", "at", "now"]


def save(folder: Path, model, *processors) -> Path:
    model.save_pretrained(folder)
    for p in processors:
        p.save_pretrained(folder)
    return folder


def tiny_bert(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB))
    tokenizer = tf.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    config = tf.BertConfig(vocab_size=len(VOCAB), max_position_embeddings=64, **SMALL)
    return save(folder, tf.BertModel(config), tokenizer)


def speech_extractor(mask: bool):
    return tf.Wav2Vec2FeatureExtractor(return_attention_mask=mask)


def image_processor(cls, short: int = 32):
    return cls(size={"shortest_edge": short}, crop_size={"height": short, "width": short})


MODELS = {
    "wav2vec2-group": lambda: (tf.Wav2Vec2Model(tf.Wav2Vec2Config(**SMALL, **CONV)), speech_extractor(False)),
    "wav2vec2-layer": lambda: (
        tf.Wav2Vec2Model(tf.Wav2Vec2Config(**SMALL, **CONV, feat_extract_norm="layer")),
        speech_extractor(True),
    ),
    "hubert": lambda: (
        tf.HubertModel(tf.HubertConfig(**SMALL, **CONV, feat_extract_norm="layer")),
        speech_extractor(True),
    ),
    "wavlm": lambda: (
        tf.WavLMModel(
            tf.WavLMConfig(**SMALL, **CONV, feat_extract_norm="layer", num_buckets=16, max_bucket_distance=32)
        ),
        speech_extractor(True),
    ),
    "whisper": lambda: (
        tf.WhisperModel(
            tf.WhisperConfig(
                d_model=16,
                encoder_layers=1,
                decoder_layers=1,
                encoder_attention_heads=2,
                decoder_attention_heads=2,
                encoder_ffn_dim=32,
                decoder_ffn_dim=32,
                vocab_size=8,
                max_target_positions=8,
                pad_token_id=0,
                bos_token_id=1,
                eos_token_id=2,
                decoder_start_token_id=1,
            )
        ),
        tf.WhisperFeatureExtractor(),
    ),
    "ast": lambda: (
        tf.ASTModel(tf.ASTConfig(**SMALL, max_length=100, num_mel_bins=32)),
        tf.ASTFeatureExtractor(max_length=100, num_mel_bins=32),
    ),
    "vit": lambda: (
        tf.ViTModel(tf.ViTConfig(**SMALL, image_size=32, patch_size=8)),
        tf.ViTImageProcessor(size={"height": 32, "width": 32}),
    ),
    "clip": lambda: (
        tf.CLIPVisionModel(tf.CLIPVisionConfig(**SMALL, image_size=32, patch_size=8)),
        image_processor(tf.CLIPImageProcessor),
    ),
    "dinov2": lambda: (
        tf.Dinov2Model(tf.Dinov2Config(**SMALL, image_size=32, patch_size=8)),
        image_processor(tf.BitImageProcessor),
    ),
    "videomae": lambda: (
        tf.VideoMAEModel(tf.VideoMAEConfig(**SMALL, image_size=32, patch_size=8, num_frames=4, tubelet_size=2)),
        image_processor(tf.VideoMAEImageProcessor),
    ),
}
AUDIO = ("wav2vec2-group", "wav2vec2-layer", "hubert", "wavlm", "whisper", "ast")
VIDEO = ("vit", "clip", "dinov2", "videomae")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")

    def build(name: str, seed: int = 0) -> Path:
        folder = root / f"{name}-{seed}"
        if not folder.exists():
            torch.manual_seed(seed)
            model, processor = MODELS[name]()
            save(folder, model, processor)
        return folder

    return build


@pytest.fixture(scope="module")
def clips(shared_data) -> list[Sample]:
    """GRID clips cut to different lengths (0.5 s to 3 s) so that batches need padding."""
    paths = sorted((shared_data / "grid").glob("*.mpg"))[:3]
    spans = [(None, None), (0.5, 1.0), (1.0, 2.7)]
    return [
        Sample(f"c{i}", "train", "0", video=p, text="bin blue at f two now"[: 6 + 5 * i], start=a, end=b)
        for i, (p, (a, b)) in enumerate(zip(paths, spans))
    ]


def check_batched_equals_alone(enc, clips, atol=1e-4):
    batched = [f for _, f in extract_features(clips, enc, batch_size=8)]
    for s, f in zip(clips, batched):
        alone = enc.encode([enc.load(s)])[0]
        np.testing.assert_allclose(f.array, alone.array, atol=atol, rtol=1e-4)
        if f.timestamps is not None:
            assert len(f.timestamps) == len(f.array) and np.all(np.diff(f.timestamps) > 0)
    return batched


def test_text_hf_checkpoint(tmp_path, clips):
    enc = get_encoder("text", "hf", model=tiny_bert(tmp_path / "bert"))
    out = check_batched_equals_alone(enc, clips)
    assert [f.array.shape for f in out] == [(2 + len(s.text.split()), 16) for s in clips]  # [CLS] words [SEP]
    ((_, pooled),) = extract_features(clips[:1], get_encoder("text", "hf", model=tmp_path / "bert", pooled=True))
    np.testing.assert_allclose(pooled.array, out[0].array.mean(0), atol=1e-6)


@pytest.mark.parametrize("name", AUDIO)
def test_audio_hf_families(model_dir, clips, name):
    enc = get_encoder("audio", "hf", model=model_dir(name))
    assert enc.describe()["model_type"] in name.replace("-", "_").replace("ast", "audio-spectrogram-transformer")
    out = check_batched_equals_alone(enc, clips)
    seconds = [len(enc.load(s)) / 16_000 for s in clips]  # 2.98 s, 0.5 s, 1.7 s
    step = {"whisper": 0.02, "ast": 0.1}.get(name, 80 / 16_000)  # seconds per output step
    for f, s in zip(out, seconds):
        assert f.array.shape[1] == 16
        if name != "ast":  # AST's tiny test context (1 s) caps each window at 9 time patches
            assert abs(len(f.array) * step - s) <= 2 * step + 0.002


@pytest.mark.parametrize("name", VIDEO)
def test_video_hf_families(model_dir, clips, name):
    enc = get_encoder("video", "hf", model=model_dir(name))
    out = check_batched_equals_alone(enc, clips)
    if name == "videomae":  # 8 fps in clips of 4 frames, one step per tubelet of 2 frames
        assert [len(f.array) for f in out] == [12, 2, 7]
        np.testing.assert_allclose(out[0].timestamps[:3], [0, 0.25, 0.5])
    else:  # one frame per second
        assert [len(f.array) for f in out] == [3, 1, 2]


def test_torchvision_resnet18_from_a_local_state_dict(tmp_path, clips):
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pt")
    enc = get_encoder("video", "resnet18", weights=tmp_path / "r18.pt")
    out = check_batched_equals_alone(enc, clips[1:], atol=1e-3)
    assert [f.array.shape for f in out] == [(1, 512), (2, 512)]
    assert enc.describe()["weights"].startswith("sha256:")
    save_file(torch.load(tmp_path / "r18.pt", weights_only=True), tmp_path / "r18.safetensors")
    ((_, same),) = extract_features(clips[1:2], get_encoder("video", "resnet18", weights=tmp_path / "r18.safetensors"))
    np.testing.assert_allclose(same.array, out[0].array, atol=1e-5)
    with pytest.raises(ValueError, match="weights=PATH"):
        get_encoder("video", "resnet18")


def test_fingerprint_follows_weights_and_preprocessing(tmp_path, model_dir):
    first = get_encoder("text", "hf", model=tiny_bert(tmp_path / "a", seed=0))
    assert first.fingerprint() == get_encoder("text", "hf", model=tmp_path / "a").fingerprint()
    # Same architecture, same sizes, same safetensors header; only the values differ (a fine-tune).
    assert first.fingerprint() != get_encoder("text", "hf", model=tiny_bert(tmp_path / "b", seed=1)).fingerprint()
    assert first.fingerprint() != get_encoder("text", "hf", model=tmp_path / "a", max_length=8).fingerprint()
    vit = get_encoder("video", "hf", model=model_dir("vit"))
    assert vit.fingerprint() != get_encoder("video", "hf", model=model_dir("vit"), fps=2).fingerprint()
    assert vit.fingerprint() != get_encoder("video", "hf", model=model_dir("vit", seed=1)).fingerprint()


def test_specs_read_weights_identity_from_files_without_loading_models(tmp_path, model_dir, monkeypatch):
    import torchvision

    import extractors.audio
    import extractors.text
    import extractors.video

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pt")
    chosen = [
        ("text", "hf", {"model": tiny_bert(tmp_path / "bert")}),
        ("audio", "hf", {"model": model_dir("wav2vec2-layer")}),
        ("audio", "hf", {"model": model_dir("whisper")}),
        ("video", "hf", {"model": model_dir("vit")}),
        ("video", "hf", {"model": model_dir("videomae")}),
        ("video", "resnet18", {"weights": tmp_path / "r18.pt"}),
    ]
    with monkeypatch.context() as patched:
        for module in (extractors.text, extractors.audio, extractors.video):
            real = module.hf_load
            patched.setattr(
                module,
                "hf_load",
                lambda auto, *a, real=real, **kw: (
                    pytest.fail(f"{auto} loaded") if auto == "AutoModel" else real(auto, *a, **kw)
                ),
            )
        patched.setattr(extractors.video, "load_state_dict", lambda path: pytest.fail(f"{path} loaded"))
        specs = [encoder_spec(m, name, **options) for m, name, options in chosen]
    for spec, (m, name, options) in zip(specs, chosen):
        loaded = get_encoder(m, name, **options)
        loaded.load_model()
        assert spec.fingerprint() == loaded.fingerprint(), spec
        assert spec.describe()["weights"].startswith("sha256:")


def test_remote_code_is_refused_unless_asked(tmp_path):
    folder = tiny_bert(tmp_path / "custom")
    config = (folder / "config.json").read_text()
    (folder / "config.json").write_text(
        config.replace('"model_type": "bert"', '"model_type": "precal-custom", "auto_map": {"AutoConfig": "conf.C"}')
    )
    (folder / "conf.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ValueError, match="trust_remote_code"):
        get_encoder("text", "hf", model=folder)


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        get_encoder("text", "hf", model=str(tmp_path / "nope"))
