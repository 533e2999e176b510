"""Video encoders: weight-free `grey`, torchvision CNNs per frame, Hugging Face image models per frame
(ViT, CLIP vision, DINOv2, ...) and VideoMAE over clips of frames.

Loaders (in DataLoader workers) decode frames at the target fps, scaled down while decoding, and
keep them as uint8, so a loaded clip costs about one byte per output pixel; `max_seconds` caps the
decoded duration of very long files. Model encoders then run frames in chunks on the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from .base import Encoder, register
from .decode import iter_video_frames
from .weights import file_sha256, hf_identity, hf_load, hf_source

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class FrameLoader:
    """uint8 frames [T, H, W] (grey) or [T, H, W, 3] of the sample's video at `fps`.

    size: int = shorter side (aspect kept), (w, h) = exact; crop: centre square of that side."""

    fps: float
    size: int | tuple[int, int] | None = None
    grey: bool = False
    crop: int | None = None
    interpolation: str = "BILINEAR"
    max_seconds: float | None = None

    def __call__(self, sample) -> np.ndarray:
        chunks = iter_video_frames(
            sample.video,
            fps=self.fps,
            size=self.size,
            grey=self.grey,
            start=sample.start,
            end=sample.end,
            max_seconds=self.max_seconds,
            interpolation=self.interpolation,
        )
        # Cropping chunk by chunk keeps the peak at one chunk of uncropped frames.
        return np.concatenate([center_crop(c, self.crop) if self.crop else c for c in chunks])


def center_crop(frames: np.ndarray, side: int) -> np.ndarray:
    h, w = frames.shape[1:3]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return np.ascontiguousarray(frames[:, top : top + side, left : left + side])


def frame_times(n: int, fps: float) -> np.ndarray:
    return np.arange(n) / fps


class GreyEncoder(Encoder):
    """Frames as 32x32 grey pixels in [0, 1]: [T, 1024]. Weight-free, fast, always available."""

    modality = "video"
    name = "grey"

    def __init__(self, *, fps: float = 10.0, size: int = 32, max_seconds: float | None = None, pooled: bool = False):
        super().__init__(pooled=pooled)
        # Grey frames are area-averaged while decoding: no aliasing when shrinking 360x288 to 32x32.
        self.loader = FrameLoader(fps=fps, size=(size, size), grey=True, max_seconds=max_seconds)

    def settings(self) -> dict:
        loader = self.loader
        return {
            "fps": loader.fps,
            "size": list(loader.size),
            "interpolation": "area",
            "max_seconds": loader.max_seconds,
        }

    def weights(self) -> None:
        return None

    def _encode(self, batch: list[np.ndarray]):
        return [(f.reshape(len(f), -1).astype(np.float32) / 255.0, frame_times(len(f), self.loader.fps)) for f in batch]


class FrameModelEncoder(Encoder):
    """Image model over units of frames (single frames, or windows for video models). Units of all
    clips in a batch go through the model together, `frames_per_batch` frames per forward: device
    memory stays bounded however long the clips, and only uint8 frames wait on the host."""

    modality = "video"
    frames_per_unit = 1

    def __init__(self, *, frames_per_batch: int, pooled: bool):
        super().__init__(pooled=pooled)
        self.frames_per_batch = frames_per_batch

    def _pixels(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [n, H, W, 3] -> model input [n, 3, h, w] on the device."""
        raise NotImplementedError

    def _embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Model input [n, 3, h, w] -> [n, D]."""
        raise NotImplementedError

    def _units(self, frames: np.ndarray) -> np.ndarray:
        return frames

    def _run(self, units: np.ndarray) -> torch.Tensor:
        pixels = self._pixels(units)
        with self.autocast():
            return self._embed(pixels)

    def _per_clip(self, batch: list[np.ndarray]) -> list[torch.Tensor]:
        units = [self._units(frames) for frames in batch]
        # One sequence of units when all clips decode to the same size, else clip by clip.
        groups = [np.concatenate(units)] if len({u.shape[1:] for u in units}) == 1 else units
        step = max(1, self.frames_per_batch // self.frames_per_unit)
        out = torch.cat([self._run(g[i : i + step]) for g in groups for i in range(0, len(g), step)])
        return list(out.split([len(u) for u in units]))

    def _encode(self, batch: list[np.ndarray]):
        fps = self.loader.fps
        return [(e.float().cpu().numpy(), frame_times(len(e), fps)) for e in self._per_clip(batch)]


class TorchvisionEncoder(FrameModelEncoder):
    """A torchvision classifier with its head removed, weights from a local state_dict file."""

    def __init__(
        self,
        arch: str,
        *,
        weights: str | Path | None = None,
        fps: float = 1.0,
        resize: int = 256,
        crop: int = 224,
        frames_per_batch: int = 64,
        max_seconds: float | None = None,
        pooled: bool = False,
    ):
        super().__init__(frames_per_batch=frames_per_batch, pooled=pooled)
        if weights is None:
            raise ValueError(
                f"video encoder {arch!r} needs weights=PATH, a local state_dict file (nothing is downloaded)"
            )
        self.name, self.weights_path = arch, Path(weights)
        if not self.weights_path.is_file():
            raise FileNotFoundError(f"weights file not found: {self.weights_path}")
        self.loader = FrameLoader(fps=fps, size=resize, crop=crop, max_seconds=max_seconds)
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def settings(self) -> dict:
        loader = self.loader
        return {
            "fps": loader.fps,
            "resize": loader.size,
            "crop": loader.crop,
            "interpolation": "bilinear",
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "max_seconds": loader.max_seconds,
        }

    def weights(self) -> str:
        return "sha256:" + file_sha256(self.weights_path)

    def _load_model(self) -> None:
        import torchvision  # imported on use: it loads slowly and only these encoders need it

        self.model = torchvision.models.get_model(self.name, weights=None)
        self.model.load_state_dict(load_state_dict(self.weights_path))
        drop_head(self.model)
        self.model.eval()

    def modules(self):
        return [self.model]

    def _pixels(self, frames: np.ndarray) -> torch.Tensor:
        x = self.tensor(frames).permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self.mean.to(self.device)) / self.std.to(self.device)

    def _embed(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels)


def load_state_dict(path: Path) -> dict:
    """safetensors, or a torch file read with weights_only=True (tensors only, no arbitrary unpickling)."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def drop_head(model: torch.nn.Module) -> None:
    """Replace the classification head by Identity so the model returns its pooled features."""
    for attr in ("fc", "classifier", "heads", "head"):
        if isinstance(getattr(model, attr, None), torch.nn.Module):
            setattr(model, attr, torch.nn.Identity())
            return
    raise ValueError(f"{type(model).__name__}: no fc/classifier/heads/head to remove")


def processor_short_side(processor) -> int | None:
    """The shorter side the processor resizes to, so frames can be decoded at about that size."""
    size = dict(processor.size or {})
    if size.get("shortest_edge"):
        return int(size["shortest_edge"])
    if size.get("height") and size.get("width"):
        return int(min(size["height"], size["width"]))
    return None


class HFVideoEncoder(FrameModelEncoder):
    """Hugging Face vision checkpoints. The image processor runs on the device, on uint8 frames."""

    name = "hf"

    def __init__(
        self,
        model,
        config,
        *,
        fps: float,
        frames_per_batch: int = 32,
        max_seconds: float | None = None,
        pooled: bool = False,
        revision: str | None = None,
        trust_remote_code: bool = False,
    ):
        super().__init__(frames_per_batch=frames_per_batch, pooled=pooled)
        self.source, self.config = hf_source(model), config
        self.load_options = dict(revision=revision, trust_remote_code=trust_remote_code)
        self.processor = hf_load("AutoImageProcessor", model, **self.load_options)
        self.loader = FrameLoader(fps=fps, size=processor_short_side(self.processor), max_seconds=max_seconds)

    def _load_model(self) -> None:
        self.model = hf_load("AutoModel", self.source, **self.load_options).eval()

    def settings(self) -> dict:
        return {
            "model_type": self.config.model_type,
            "fps": self.loader.fps,
            "decode_short_side": self.loader.size,
            "max_seconds": self.loader.max_seconds,
        }

    def weights(self) -> str:
        return hf_identity(self.source, self.config)

    def modules(self):
        return [self.model]

    def _pixels(self, frames: np.ndarray) -> torch.Tensor:
        images = torch.from_numpy(frames).permute(0, 3, 1, 2)
        # Torch-backed processors resize and normalise on the device; PIL-backed ones on the CPU.
        on_device = {"device": self.device} if getattr(self.processor, "backend", "pil") != "pil" else {}
        pixels = self.processor(images=images, return_tensors="pt", **on_device).pixel_values
        return pixels.reshape(-1, *pixels.shape[-3:]).to(self.device)


class HFImageEncoder(HFVideoEncoder):
    """One vector per frame: the image embedding for CLIP/SigLIP, else the CLS token (ViT, DINOv2)."""

    def _embed(self, pixels: torch.Tensor) -> torch.Tensor:
        if hasattr(self.model, "get_image_features"):  # full CLIP/SigLIP checkpoints: projected embedding
            out = self.model.get_image_features(pixel_values=pixels)
            return out if isinstance(out, torch.Tensor) else out.pooler_output
        out = self.model(pixel_values=pixels)
        if self.config.model_type in ("clip_vision_model", "siglip_vision_model"):
            return out.pooler_output  # post-layernorm CLS (CLIP) / attention-pooled (SigLIP)
        return out.last_hidden_state[:, 0]


class VideoMAEEncoder(HFVideoEncoder):
    """VideoMAE on consecutive windows of `num_frames` frames (the last padded by repeating its final
    frame). Tokens are a (time / tubelet) x height x width grid; averaging over space gives one vector
    per tubelet step, so the sequence keeps a time axis at fps / tubelet_size."""

    def __init__(self, model, config, **options):
        super().__init__(model, config, **options)
        self.frames_per_unit = config.num_frames

    def _units(self, frames: np.ndarray) -> np.ndarray:
        pad = -len(frames) % self.frames_per_unit
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)]) if pad else frames
        return frames.reshape(-1, self.frames_per_unit, *frames.shape[1:])

    def _run(self, windows: np.ndarray) -> torch.Tensor:
        pixels = self._pixels(windows.reshape(-1, *windows.shape[2:]))
        pixels = pixels.reshape(len(windows), self.frames_per_unit, *pixels.shape[1:])
        with self.autocast():
            hidden = self.model(pixel_values=pixels).last_hidden_state
        steps = self.frames_per_unit // self.config.tubelet_size
        return hidden.reshape(len(windows), steps, -1, hidden.shape[-1]).mean(2)  # [windows, steps, D]

    def _encode(self, batch: list[np.ndarray]):
        tubelet, out = self.config.tubelet_size, []
        for windows, frames in zip(self._per_clip(batch), batch):
            seq = windows.reshape(-1, windows.shape[-1])[: math.ceil(len(frames) / tubelet)]
            out.append((seq.float().cpu().numpy(), frame_times(len(seq), self.loader.fps / tubelet)))
        return out


TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


@register("video", "grey")
def grey(**options) -> GreyEncoder:
    return GreyEncoder(**options)


@register("video", "torchvision")
def torchvision_model(arch: str, **options) -> TorchvisionEncoder:
    """Any torchvision classifier by name:
    get_encoder("video", "torchvision", arch="efficientnet_b0", weights="effnet.pth")."""
    return TorchvisionEncoder(arch, **options)


for _arch in TORCHVISION_ARCHS:
    register("video", _arch)(lambda _arch=_arch, **options: TorchvisionEncoder(_arch, **options))


@register("video", "hf")
def hf_video(
    model: str | Path,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    fps: float | None = None,
    **options,
) -> HFVideoEncoder:
    """A Hugging Face vision checkpoint: VideoMAE over clips (default 8 fps), else per frame (default 1 fps)."""
    config = hf_load("AutoConfig", model, revision=revision, trust_remote_code=trust_remote_code)
    cls = VideoMAEEncoder if config.model_type == "videomae" else HFImageEncoder
    fps = fps if fps is not None else (8.0 if cls is VideoMAEEncoder else 1.0)
    return cls(model, config, fps=fps, revision=revision, trust_remote_code=trust_remote_code, **options)
