"""AV-digits rendering of one planned sample: its frames (an MNIST digit drifting across a dark canvas,
degraded where planned) and its audio (the FSDD recording centred in silence, buried in noise where
planned), written as an H.264 + AAC mp4.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np

from pipeline.datasets.avdigits_plan import PlannedSample
from pipeline.datasets.avdigits_sources import DIGIT_SIZE, DatasetError

FPS = 25
AUDIO_RATE = 16_000
SAMPLES_PER_FRAME = AUDIO_RATE // FPS
MIN_SECONDS = 0.5
CANVAS = 64
VIDEO_OPTIONS = {"crf": "28", "preset": "medium"}
AUDIO_BIT_RATE = 32_000


def load_speech(path: Path) -> np.ndarray:
    """Decode any audio file to mono float32 at 16 kHz with PyAV."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
    try:
        with av.open(str(path)) as container:
            chunks = [
                f.to_ndarray().reshape(-1) for frame in container.decode(audio=0) for f in resampler.resample(frame)
            ]
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    except (av.FFmpegError, IndexError) as err:
        reason = getattr(err, "strerror", None) or err  # FFmpeg's message without the path repeated
        raise DatasetError(f"{path}: cannot decode the recording ({reason})") from err
    speech = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if not speech.size:
        raise DatasetError(f"{path}: the recording has no audio samples")
    return speech


def clip_audio(speech: np.ndarray) -> np.ndarray:
    """Centre the speech in silence: at least MIN_SECONDS long and a whole number of video frames."""
    length = max(len(speech), int(MIN_SECONDS * AUDIO_RATE))
    length = -(-length // SAMPLES_PER_FRAME) * SAMPLES_PER_FRAME
    audio = np.zeros(length, np.float32)
    start = (length - len(speech)) // 2
    audio[start : start + len(speech)] = speech
    return audio


def bury_in_noise(audio: np.ndarray, speech: np.ndarray, snr_db: float, rng) -> np.ndarray:
    """White noise at `snr_db` relative to the speech's power, then rescaled to stay within [-1, 1]."""
    noise_power = np.mean(speech.astype(np.float64) ** 2) / 10 ** (snr_db / 10)
    noisy = audio + rng.normal(0.0, np.sqrt(noise_power), audio.shape)
    return (noisy / max(1.0, np.abs(noisy).max())).astype(np.float32)


def digit_path(n_frames: int, rng) -> np.ndarray:
    """Top-left corners [n, 2] (y, x) of a straight drift through the canvas centre, seeded direction."""
    room = CANVAS - DIGIT_SIZE
    angle, half_length = rng.uniform(0, 2 * np.pi), rng.uniform(8, room / 2 - 2)
    offset = half_length * np.array([np.sin(angle), np.cos(angle)])
    centre = np.array([room / 2, room / 2])
    return np.rint(np.linspace(centre - offset, centre + offset, n_frames)).astype(int)


def moving_digit(image: np.ndarray, corners: np.ndarray) -> np.ndarray:
    frames = np.zeros((len(corners), CANVAS, CANVAS), np.uint8)
    for frame, (y, x) in zip(frames, corners):
        frame[y : y + DIGIT_SIZE, x : x + DIGIT_SIZE] = image
    return frames


def degrade_video(frames: np.ndarray, corners: np.ndarray, how: str, rng) -> np.ndarray:
    if how == "noise":
        # Halved contrast under strong grain: the digit is barely visible, as in a bad low-light camera.
        return np.clip(0.5 * frames + rng.normal(64, 100, frames.shape), 0, 255).astype(np.uint8)
    # A grey block that follows the digit and hides its middle 20x20 pixels in every frame.
    occluded, margin = frames.copy(), (DIGIT_SIZE - 20) // 2
    for frame, (y, x) in zip(occluded, corners):
        frame[y + margin : y + margin + 20, x + margin : x + margin + 20] = 128
    return occluded


def render(sample: PlannedSample, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frames [T, 64, 64] uint8 and audio [T * 640] float32 at 16 kHz for one planned sample."""
    rng = np.random.default_rng(sample.render_seed)
    speech = load_speech(sample.speech.path)
    audio = clip_audio(speech)
    if sample.snr_db is not None:
        audio = bury_in_noise(audio, speech, sample.snr_db, rng)
    corners = digit_path(len(audio) // SAMPLES_PER_FRAME, rng)
    frames = moving_digit(images[sample.mnist_row], corners)
    if sample.perturbation.modality == "video" and sample.perturbation.kind == "degraded":
        frames = degrade_video(frames, corners, sample.perturbation.detail, rng)
    return frames, audio


def write_mp4(path: Path, frames: np.ndarray, audio: np.ndarray) -> None:
    """H.264 (yuv420p) + AAC mono; written under a temporary name so a crash leaves no partial clip."""
    partial = path.with_name(path.name + ".part")
    with av.open(str(partial), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=FPS, options=VIDEO_OPTIONS)
        video.width, video.height, video.pix_fmt = CANVAS, CANVAS, "yuv420p"
        sound = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        sound.bit_rate = AUDIO_BIT_RATE
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="gray")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode())
        chunk = av.AudioFrame.from_ndarray(audio[None, :], format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = AUDIO_RATE, 0
        container.mux(sound.encode(chunk))
        container.mux(sound.encode())
    os.replace(partial, path)
