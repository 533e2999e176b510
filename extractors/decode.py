"""Decoding raw media with PyAV: video frames at a target fps and size, mono audio at a target rate, text.

Every failure a person can fix (missing file, empty file, corrupt container, missing stream, empty
segment, empty text) is a DecodeError naming the file and the reason. Video is read as a generator of
small chunks so that a long file never needs all its frames in memory.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

import av
import av.logging
import cv2
import numpy as np
import soxr
from av.video.reformatter import VideoReformatter
from torch.utils.data import get_worker_info

from extractors.fetch import fetch, is_url

# One OpenCV thread, set before any worker is forked: a child forked while OpenCV's thread pool exists
# can deadlock on the pool's lock (seen as a hung DataLoader worker), and our pictures are tiny anyway.
cv2.setNumThreads(1)

CHUNK_FRAMES = 64  # frames per chunk yielded by iter_video_frames: bounds memory, amortises numpy calls
MAX_PIXELS = 7680 * 4320  # 8K UHD; a larger picture is a broken header rather than a real video


class DecodeError(Exception):
    """A sample's input cannot be turned into features; str(e) names the file and the reason."""

    def __init__(self, path, reason: str):
        super().__init__(str(path), reason)  # args kept so the error pickles across DataLoader workers
        self.path = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def _open(path: Path | str | None, what: str) -> av.container.InputContainer:
    if path is None:
        raise DecodeError(f"<no {what} file>", f"the sample has no {what} file")
    if is_url(path):
        return _opened(str(path), fetch(path, DecodeError))
    path = Path(path)
    if not path.is_file():
        raise DecodeError(path, "file not found" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise DecodeError(path, "file is empty (0 bytes)")
    return _opened(path, str(path))


def _opened(path, source) -> av.container.InputContainer:
    """`source` (a file name, or a file's bytes in memory) opened by FFmpeg."""
    try:
        return av.open(source, mode="r")
    except (av.FFmpegError, OSError, ValueError) as e:
        raise DecodeError(path, f"not a readable media file ({e})") from e


def _origin(container) -> float:
    """Time (s) of the container's first packet; segment times are relative to it (keeps A/V in sync)."""
    return container.start_time / av.time_base if container.start_time is not None else 0.0


def _segment(start: float | None, end: float | None, max_seconds: float | None, path) -> tuple[float, float]:
    start = float(start or 0.0)
    end = math.inf if end is None else float(end)
    if start < 0 or end <= start:
        raise DecodeError(path, f"invalid segment start={start} end={end}")
    if max_seconds is not None:
        end = min(end, start + max_seconds)
    return start, end


SEEK_MARGIN = 1.0  # seconds: seek this much early, since seeking in some containers (MPEG-PS) is inexact


INT64_MAX = 2**63 - 1


def _seek(container, stream, seconds: float, path) -> None:
    """Seek to a keyframe before `seconds` (absolute); callers drop what comes before the segment."""
    if seconds > SEEK_MARGIN:
        target = int((seconds - SEEK_MARGIN) / stream.time_base)
        if target > INT64_MAX:  # FFmpeg's timestamps are 64-bit: e.g. start=1e300 cannot even be asked for
            raise DecodeError(path, f"segment start {seconds:g} s is past the end of the file{_lasting(container)}")
        container.seek(target, stream=stream, backward=True, any_frame=False)


def _lasting(container) -> str:
    """' (it lasts N s)' when the container knows its duration, for messages about segments."""
    return "" if container.duration is None else f" (it lasts {container.duration / av.time_base:.3f} s)"


def _decode(container, stream, path) -> Iterator:
    """Frames of `stream`, skipping packets the codec rejects (as ffmpeg does: after a seek into an
    MPEG program stream the first packet is often partial); nothing decodable at all is an error."""
    good, error = 0, None
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.InvalidDataError as e:
                error = e
                continue
            good += len(frames)
            yield from frames
    except av.FFmpegError as e:
        error = e
    if good == 0 and error is not None:
        raise DecodeError(path, f"{stream.type} stream cannot be decoded ({error})")


# Planar YUV formats whose first plane is 8-bit luma, i.e. the grey picture itself.
_LUMA_FORMATS = frozenset(
    {
        "yuv420p",
        "yuv422p",
        "yuv444p",
        "yuv410p",
        "yuv411p",
        "yuv440p",
        "nv12",
        "nv21",
        "yuvj420p",
        "yuvj422p",
        "yuvj444p",
        "yuvj440p",
    }
)
_LIMITED_TO_FULL = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)


def _grey_from_luma(frame, width: int, height: int) -> np.ndarray:
    """Area-averaged luma plane, in full range: what swscale's gray + AREA gives, ~10x faster
    (no colour conversion and no scaler set-up per frame)."""
    plane = frame.planes[0]
    luma = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : frame.width]
    small = cv2.resize(luma, (width, height), interpolation=cv2.INTER_AREA)
    full_range = frame.format.name.startswith("yuvj") or frame.color_range == 2  # 2 = JPEG (full) range
    return small if full_range else _LIMITED_TO_FULL[small]


def _set_threads(stream) -> None:
    """Codec threads only for large pictures outside DataLoader workers: workers already decode one
    clip per core, and for small pictures starting the threads costs more than they save."""
    ctx = stream.codec_context
    if get_worker_info() is None and ctx.width * ctx.height > 640 * 480:
        stream.thread_type = "AUTO"
    else:
        ctx.thread_count = 1


def _scaled_size(width: int, height: int, size: int | tuple[int, int] | None) -> tuple[int, int]:
    """(w, h) for `size`: None keeps the source, an int is the shorter side (aspect kept), a pair is exact."""
    if size is None:
        return width, height
    if isinstance(size, int):
        scale = size / min(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    return int(size[0]), int(size[1])


def iter_video_frames(
    path: Path | str | None,
    *,
    fps: float,
    size: int | tuple[int, int] | None = None,
    grey: bool = False,
    start: float | None = None,
    end: float | None = None,
    max_seconds: float | None = None,
    interpolation: str = "BILINEAR",
    chunk_frames: int = CHUNK_FRAMES,
) -> Iterator[np.ndarray]:
    """Yield uint8 chunks [n, H, W] (grey) or [n, H, W, 3] (RGB) of frames sampled at `fps`.

    Grey frames are always area-averaged (the right filter for large reductions); `interpolation`
    (an swscale name: BILINEAR, BICUBIC, AREA, ...) applies to RGB.

    Step k shows the frame on screen at time start + k/fps (sample and hold, so variable frame rates
    and sources slower than `fps` give one frame per step). Only the frames that are kept are
    converted, and they are scaled while converting, so full-size RGB never exists.
    """
    container = _open(path, "video")
    with container:
        if not container.streams.video:
            raise DecodeError(path, "missing modality: the file has no video track")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if not 0 < width * height <= MAX_PIXELS:
            raise DecodeError(path, f"absurd picture size {_picture_size(path, width, height)}")
        _set_threads(stream)
        origin = _origin(container)
        start, end = _segment(start, end, max_seconds, path)
        out_w, out_h = _scaled_size(width, height, size)
        reformatter = VideoReformatter()  # one scaler context for the whole file, not one per frame

        def convert(frame) -> np.ndarray:
            if grey and frame.format.name in _LUMA_FORMATS:
                return _grey_from_luma(frame, out_w, out_h)
            fmt, how = ("gray", "AREA") if grey else ("rgb24", interpolation)
            return reformatter.reformat(frame, out_w, out_h, fmt, interpolation=how).to_ndarray()

        seg_len = end - start
        chunk: list[np.ndarray] = []
        step = 0  # index of the next output step
        held, held_t = None, 0.0  # the frame on screen and its time

        def show(frame, until: float):
            """Append `frame` for every step before `until`; yields full chunks."""
            nonlocal step, chunk
            image = None
            while step / fps < min(until, seg_len) - 1e-6:  # tolerance: 2.2 - 1.2 > 1.0 in floats
                image = image if image is not None else convert(frame)
                chunk.append(image)
                step += 1
                if len(chunk) == chunk_frames:
                    yield np.stack(chunk)
                    chunk = []

        try:
            _seek(container, stream, origin + start, path)
            for frame in _decode(container, stream, path):
                if frame.time is None:
                    continue
                t = frame.time - origin - start
                # The first frame at or after the segment start also covers the gap before it.
                yield from show(held if held is not None else frame, t)
                if t >= seg_len:
                    break
                held, held_t = frame, t
            if held is not None:  # the last frame lasts one frame period (or to the segment end), so
                # a video that ends before the segment starts shows nothing in it
                period = 1.0 / float(stream.average_rate or stream.guessed_rate or fps)
                yield from show(held, held_t + period)
        except av.FFmpegError as e:
            raise DecodeError(path, f"video stream cannot be decoded ({e})") from e
        if chunk:
            yield np.stack(chunk)
        if step == 0:
            raise DecodeError(path, f"no video frames in the requested segment{_lasting(container)}")


def _picture_size(path, width: int, height: int) -> str:
    """WxH for a size FFmpeg refused: it then reports 0x0 and names the real size only in its log, so
    the file is opened again with the log captured (only on this error path)."""
    if width * height:
        return f"{width}x{height}"
    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture() as logs:
            av.open(str(path)).close()
    except av.FFmpegError:
        pass
    finally:
        av.logging.set_level(level)
    said = [m for _, _, m in logs if re.search(r"\d+x\d+", m)]
    return re.search(r"\d+x\d+", said[0]).group() if said else "unknown (the header gives none)"


def read_video(path, **options) -> np.ndarray:
    """All frames of iter_video_frames concatenated: [T, H, W] or [T, H, W, 3] uint8."""
    return np.concatenate(list(iter_video_frames(path, **options)))


_FULL_SCALE = {"u8": 128.0, "s16": 2.0**15, "s32": 2.0**31, "s64": 2.0**63, "flt": 1.0, "dbl": 1.0}


def _mono(frame) -> np.ndarray:
    """Average of the frame's channels as float32 in [-1, 1], for any sample format and layout."""
    samples = frame.to_ndarray()
    if not frame.format.is_planar:  # packed: [1, n * channels], interleaved
        samples = samples.reshape(-1, len(frame.layout.channels)).T
    kind = frame.format.name.removesuffix("p")
    mono = samples[0].astype(np.float32) if len(samples) == 1 else samples.mean(0, dtype=np.float32)
    if kind == "u8":
        mono -= 128.0
    return mono / _FULL_SCALE[kind]


class _Identity:
    """Stands in for soxr.ResampleStream when the source already has the target rate."""

    def resample_chunk(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        return x


def read_audio(
    path: Path | str | None,
    *,
    rate: int,
    start: float | None = None,
    end: float | None = None,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Mono float32 waveform at `rate` Hz for the segment, from any source rate or channel layout.

    Channels are averaged and the segment is cut at the source rate, then resampled (soxr, streamed)
    from the segment start, so a segment equals the same span of the whole file on the output grid.
    """
    container = _open(path, "audio")
    with container:
        if not container.streams.audio:
            raise DecodeError(path, "missing modality: the file has no audio track")
        stream = container.streams.audio[0]
        origin = _origin(container)
        start, end = _segment(start, end, max_seconds, path)
        out: list[np.ndarray] = []
        resampler, pos, stop = None, 0, math.inf  # pos: source-rate index (from start) of the next sample
        try:
            _seek(container, stream, origin + start, path)
            for frame in _decode(container, stream, path):
                if resampler is None:
                    sr = frame.sample_rate
                    resampler = _Identity() if sr == rate else soxr.ResampleStream(sr, rate, 1, dtype="float32")
                    first = frame.time - origin if frame.time is not None else 0.0
                    pos = round((first - start) * sr)
                    stop = math.inf if math.isinf(end) else round((end - start) * sr)
                    if pos > 0:  # the track starts after the segment does: silence until it starts
                        out.append(resampler.resample_chunk(np.zeros(pos, np.float32)))
                mono = _mono(frame)
                lo, hi = max(0, -pos), min(len(mono), stop - pos)
                if hi > lo:
                    out.append(resampler.resample_chunk(mono[lo:hi]))
                pos += len(mono)
                if pos >= stop:
                    break
        except (av.FFmpegError, ValueError) as e:
            raise DecodeError(path, f"audio stream cannot be decoded ({e})") from e
        if resampler is None:
            raise DecodeError(path, "audio track has no samples (zero-length audio)")
        out.append(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        wave = np.concatenate(out)
        if not math.isinf(end):
            wave = wave[: round((end - start) * rate)]
        if wave.size == 0:
            raise DecodeError(
                path, f"no audio samples in the requested segment (zero-length audio){_lasting(container)}"
            )
        if not np.isfinite(wave).all():  # float WAVs can hold NaN/Inf; features of them would be NaN
            raise DecodeError(path, "audio samples include NaN or infinite values")
        return wave


def read_text(text: str | None, sample_id: str) -> str:
    """The transcript itself (manifests carry text inline); empty or blank text is a DecodeError."""
    where = f"<text of sample {sample_id}>"
    if text is None:
        raise DecodeError(where, "missing modality: the sample has no text")
    if not isinstance(text, str):
        raise DecodeError(where, f"text is a {type(text).__name__}, not a string")
    if not text.strip():
        raise DecodeError(where, "text is empty or whitespace only")
    return text
