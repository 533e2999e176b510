"""Audio encoders: log-mel / MFCC / Kaldi fbank spectrograms and Hugging Face speech encoders.

All take a mono waveform at the encoder's rate (loaded in workers) and return a [T, D] sequence with
timestamps in seconds from the segment start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio
import torchaudio.compliance.kaldi

from .base import Encoder, register, unpad
from .decode import DecodeError, read_audio
from .weights import hf_identity, hf_load, hf_source

RATE = 16_000


@dataclass(frozen=True)
class AudioLoader:
    """The sample's audio file, or the audio track of its video; mono at `rate`."""

    rate: int = RATE
    min_samples: int = 400  # one 25 ms analysis window at 16 kHz
    max_seconds: float | None = None

    def __call__(self, sample) -> np.ndarray:
        path = sample.audio if sample.audio is not None else sample.video
        wave = read_audio(path, rate=self.rate, start=sample.start, end=sample.end, max_seconds=self.max_seconds)
        if len(wave) < self.min_samples:
            need = self.min_samples / self.rate
            raise DecodeError(path, f"audio too short: {len(wave) / self.rate:.3f} s, the encoder needs {need:.3f} s")
        return wave


@dataclass(frozen=True)
class FbankLoader(AudioLoader):
    """The clip's normalised Kaldi fbank, computed where the clip is decoded (a decoding worker): it is
    cheap CPU signal processing, so each worker uses its core for a whole clip and the encoding process
    only gathers results, instead of a third busy process sharing the cores."""

    n_mels: int = 128
    mean: float = -4.2677393
    std: float = 4.5689974

    def __call__(self, sample) -> np.ndarray:
        with torch.inference_mode():
            fbank = torchaudio.compliance.kaldi.fbank(
                torch.from_numpy(super().__call__(sample))[None],
                sample_frequency=self.rate,
                num_mel_bins=self.n_mels,
                frame_length=25.0,
                frame_shift=10.0,
                window_type="hanning",
                htk_compat=True,
                use_energy=False,
                dither=0.0,
            )
            return ((fbank - self.mean) / (2 * self.std)).numpy()  # AST's normalisation (std doubled)


def pad_batch(waves: list[np.ndarray]) -> np.ndarray:
    out = np.zeros((len(waves), max(len(w) for w in waves)), np.float32)
    for i, w in enumerate(waves):
        out[i, : len(w)] = w
    return out


class SpectrogramEncoder(Encoder):
    """Frames of 25 ms every 10 ms at 16 kHz, computed for the whole padded batch in one call.

    Each waveform is reflect-padded by half a window on its own before batch padding (what center=True
    does per clip), so no frame of a clip ever sees another clip's padding: batched == one by one.
    """

    modality = "audio"

    def __init__(self, name: str, *, n_mels: int = 64, n_mfcc: int | None = None, max_seconds=None, pooled=False):
        super().__init__(pooled=pooled)
        self.name, self.n_mels, self.n_mfcc = name, n_mels, n_mfcc
        self.n_fft, self.hop = 400, 160
        mel = dict(n_fft=self.n_fft, hop_length=self.hop, n_mels=n_mels, center=False)
        if n_mfcc is None:
            self.transform = torchaudio.transforms.MelSpectrogram(sample_rate=RATE, **mel)
        else:
            # log_mels: DCT of ln(mel + 1e-6) like logmel; the dB default clamps at 80 dB below the
            # loudest frame of the clip, which would make a segment's features depend on its neighbours.
            self.transform = torchaudio.transforms.MFCC(sample_rate=RATE, n_mfcc=n_mfcc, log_mels=True, melkwargs=mel)
        self.loader = AudioLoader(rate=RATE, min_samples=self.n_fft, max_seconds=max_seconds)

    def settings(self) -> dict:
        return {
            "rate": RATE,
            "n_fft": self.n_fft,
            "hop": self.hop,
            "n_mels": self.n_mels,
            "n_mfcc": self.n_mfcc,
            "log": "ln(mel + 1e-6)",
            "max_seconds": self.loader.max_seconds,
        }

    def weights(self) -> None:
        return None

    def modules(self):
        return [self.transform]

    def _encode(self, batch: list[np.ndarray]):
        half = self.n_fft // 2
        padded = pad_batch([np.pad(w, half, mode="reflect") for w in batch])
        spec = self.transform(self.tensor(padded))  # [B, n_mels or n_mfcc, frames]
        if self.n_mfcc is None:
            spec = torch.log(spec + 1e-6)
        lengths = [1 + len(w) // self.hop for w in batch]
        return [(seq, np.arange(len(seq)) * self.hop / RATE) for seq in unpad(spec.transpose(1, 2), lengths)]


class FbankEncoder(Encoder):
    """Kaldi-compatible log mel filterbank as AST computes it, normalised with AudioSet statistics."""

    modality = "audio"
    name = "fbank"

    def __init__(
        self, *, n_mels: int = 128, mean: float = -4.2677393, std: float = 4.5689974, max_seconds=None, pooled=False
    ):
        super().__init__(pooled=pooled)
        self.n_mels, self.mean, self.std = n_mels, mean, std
        self.loader = FbankLoader(
            rate=RATE, min_samples=400, max_seconds=max_seconds, n_mels=n_mels, mean=mean, std=std
        )

    def settings(self) -> dict:
        return {
            "rate": RATE,
            "frame_length_ms": 25,
            "frame_shift_ms": 10,
            "window": "hanning",
            "n_mels": self.n_mels,
            "mean": self.mean,
            "std": self.std,
            "max_seconds": self.loader.max_seconds,
        }

    def weights(self) -> None:
        return None

    def _encode(self, batch: list[np.ndarray]):
        return [(fbank, np.arange(len(fbank)) * 0.010) for fbank in batch]  # computed by the loader


class HFAudioEncoder(Encoder):
    """Shared parts of Hugging Face speech encoders: feature extractor, model, fingerprint."""

    modality = "audio"
    name = "hf"

    def __init__(self, model, config, *, max_seconds=None, pooled=False, revision=None, trust_remote_code=False):
        super().__init__(pooled=pooled)
        self.source, self.config = hf_source(model), config
        self.load_options = dict(revision=revision, trust_remote_code=trust_remote_code)
        self.extractor = hf_load("AutoFeatureExtractor", model, **self.load_options)
        self.rate = int(self.extractor.sampling_rate)
        self.loader = AudioLoader(rate=self.rate, min_samples=self._min_samples(), max_seconds=max_seconds)

    def _load_model(self) -> None:
        self.model = self._backbone(hf_load("AutoModel", self.source, **self.load_options)).eval()

    def _backbone(self, model):
        return model

    def _min_samples(self) -> int:
        return 400

    def settings(self) -> dict:
        return {"model_type": self.config.model_type, "rate": self.rate, "max_seconds": self.loader.max_seconds}

    def weights(self) -> str:
        return hf_identity(self.source, self.config)

    def modules(self):
        return [self.model]


def windows(wave: np.ndarray, size: int) -> list[tuple[int, np.ndarray]]:
    """(offset, piece) splitting `wave` into pieces of at most `size` samples (the model's context)."""
    return [(i, wave[i : i + size]) for i in range(0, len(wave), size)]


class Wav2Vec2StyleEncoder(HFAudioEncoder):
    """wav2vec2, HuBERT, WavLM, data2vec-audio: convolutional front end + transformer, 20 ms frames.

    Long audio is cut into windows of `window_seconds` (attention is quadratic), encoded as separate
    batch items and joined. Checkpoints with a group-norm front end (wav2vec2-base, hubert-base,
    wavlm-base) normalise over time including any padding and were trained without attention masks,
    so those run one window at a time; layer-norm ones are batched with a mask.
    """

    def __init__(self, model, config, *, window_seconds: float = 30.0, **options):
        super().__init__(model, config, **options)
        self.window = int(window_seconds * self.rate)
        self.stride = math.prod(config.conv_stride)
        self.masked = getattr(config, "feat_extract_norm", "group") == "layer"

    def _min_samples(self) -> int:
        return self._frames(0, need=1)

    def _frames(self, samples: int, need: int | None = None) -> int:
        """Output frames for `samples` inputs, or (need=n) the fewest inputs giving n frames."""
        kernels, strides = self.config.conv_kernel, self.config.conv_stride
        if need is not None:
            for k, s in reversed(list(zip(kernels, strides))):
                need = (need - 1) * s + k
            return need
        for k, s in zip(kernels, strides):
            samples = (samples - k) // s + 1
        return samples

    def settings(self) -> dict:
        return {**super().settings(), "window_seconds": self.window / self.rate, "masked": self.masked}

    def _run(self, pieces: list[np.ndarray]) -> list[np.ndarray]:
        inputs = self.extractor(
            pieces, sampling_rate=self.rate, padding=True, return_tensors="pt", return_attention_mask=self.masked
        )
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with self.autocast():
            hidden = self.model(**inputs).last_hidden_state
        return unpad(hidden, [self._frames(len(p)) for p in pieces])

    def _encode(self, batch: list[np.ndarray]):
        # A last window too short for one frame joins its predecessor's output as nothing: drop it.
        items = [[(o, p) for o, p in windows(w, self.window) if len(p) >= self._min_samples()] for w in batch]
        pieces = [p for item in items for _, p in item]
        groups = [pieces] if self.masked else [[p] for p in pieces]
        outputs = iter([seq for group in groups for seq in self._run(group)])
        results = []
        for item in items:
            seqs = [next(outputs) for _ in item]
            times = [o / self.rate + np.arange(len(s)) * self.stride / self.rate for (o, _), s in zip(item, seqs)]
            results.append((np.concatenate(seqs), np.concatenate(times)))
        return results


class WhisperEncoder(HFAudioEncoder):
    """Whisper's encoder on 30 s windows (it only accepts exactly 30 s), trimmed to the real audio."""

    def _backbone(self, model):
        return model.get_encoder()

    def _encode(self, batch: list[np.ndarray]):
        size = int(self.extractor.n_samples)
        step = size // self.config.max_source_positions  # input samples per output frame (320)
        items = [windows(w, size) for w in batch]
        pieces = [p for item in items for _, p in item]
        features = self.extractor(pieces, sampling_rate=self.rate, return_tensors="pt").input_features
        with self.autocast():
            hidden = self.model(self.tensor(features.numpy())).last_hidden_state
        seqs = iter(unpad(hidden, [math.ceil(len(p) / step) for p in pieces]))
        results = []
        for item in items:
            parts = [(o, next(seqs)) for o, _ in item]
            times = [(o + np.arange(len(s)) * step) / self.rate for o, s in parts]
            results.append((np.concatenate([s for _, s in parts]), np.concatenate(times)))
        return results


class ASTEncoder(HFAudioEncoder):
    """Audio Spectrogram Transformer. Its tokens are a frequency x time grid of patches; averaging
    over frequency gives one vector per time patch (about every 100 ms), trimmed to the real audio."""

    def _encode(self, batch: list[np.ndarray]):
        cfg, hop = self.config, self.rate // 100  # fbank frames every 10 ms
        size = (cfg.max_length - 1) * hop + 400  # samples filling the model's max_length frames
        f_patches = (cfg.num_mel_bins - cfg.patch_size) // cfg.frequency_stride + 1
        t_patches = (cfg.max_length - cfg.patch_size) // cfg.time_stride + 1
        items = [windows(w, size) for w in batch]
        pieces = [p for item in items for _, p in item]
        features = self.extractor(pieces, sampling_rate=self.rate, return_tensors="pt").input_values
        with self.autocast():
            hidden = self.model(self.tensor(features.numpy())).last_hidden_state
        grid = hidden[:, -f_patches * t_patches :].reshape(len(pieces), f_patches, t_patches, -1)
        real = [min(t_patches, math.ceil((1 + max(0, len(p) - 400) // hop) / cfg.time_stride)) for p in pieces]
        seqs = iter(unpad(grid.mean(1), real))
        results = []
        for item in items:
            parts = [(o, next(seqs)) for o, _ in item]
            times = [o / self.rate + np.arange(len(s)) * cfg.time_stride * hop / self.rate for o, s in parts]
            results.append((np.concatenate([s for _, s in parts]), np.concatenate(times)))
        return results


_HF_AUDIO = {"whisper": WhisperEncoder, "audio-spectrogram-transformer": ASTEncoder}


@register("audio", "logmel")
def logmel(*, n_mels: int = 64, **options) -> SpectrogramEncoder:
    return SpectrogramEncoder("logmel", n_mels=n_mels, **options)


@register("audio", "mfcc")
def mfcc(*, n_mfcc: int = 40, n_mels: int = 64, **options) -> SpectrogramEncoder:
    return SpectrogramEncoder("mfcc", n_mels=n_mels, n_mfcc=n_mfcc, **options)


@register("audio", "fbank")
def fbank(**options) -> FbankEncoder:
    return FbankEncoder(**options)


@register("audio", "hf")
def hf_audio(
    model: str | Path, *, revision: str | None = None, trust_remote_code: bool = False, **options
) -> HFAudioEncoder:
    """Any Hugging Face speech encoder; the class is chosen by the checkpoint's model_type."""
    config = hf_load("AutoConfig", model, revision=revision, trust_remote_code=trust_remote_code)
    cls = _HF_AUDIO.get(config.model_type, Wav2Vec2StyleEncoder)
    return cls(model, config, revision=revision, trust_remote_code=trust_remote_code, **options)
