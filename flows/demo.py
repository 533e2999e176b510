"""The demo: the whole pipeline on the bundled AV-digits sample, offline, in a few minutes on CPU."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.pipeline import run_pipeline
from pipeline.config import PipelineConfig
from pipeline.datasets.avdigits import bundled_sample_dir

DEMO_EXPERIMENT = {
    "backbones": ["late"],
    "methods": ["none", "calibration"],
    "seeds": [0, 1, 2],
    "train": {"epochs": 30, "batch_size": 32, "lr": 2e-3, "hidden": 64, "num_workers": 1},
}


@flow(name="precal-demo")
def demo_flow(workdir: str) -> dict:
    """Extract the bundled sample's text, audio and video, pack, train late fusion with and without calibration."""
    work = Path(workdir)
    config = PipelineConfig(manifest=bundled_sample_dir() / "manifest.csv", store=work / "store", out=work,
                            train=DEMO_EXPERIMENT)
    return run_pipeline(config)
