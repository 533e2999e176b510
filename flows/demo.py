"""The demo: the whole pipeline on the bundled AV-digits sample, offline, in a few minutes on CPU.

It trains late fusion without calibration and with the "reliability" calibration, both with corruption
augmentation, then tests both on the clean test samples and on the same test recordings with one modality
perturbed in every sample (the bundled `avdigits-pert`), and asks whether the scales find the perturbed one."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow

from flows.extract import extract_flow
from flows.pipeline import pack_flow, run_pipeline
from pipeline.config import PipelineConfig
from pipeline.datasets.avdigits import bundled_sample_dir

DEMO_EXPERIMENT = {
    "backbones": ["late"],
    "methods": ["none", "calibration"],
    "calibrations": ["reliability"],
    "seeds": [0, 1, 2],
    "train": {"epochs": 30, "batch_size": 32, "lr": 2e-3, "hidden": 64, "augment": {}, "num_workers": 1},
}


@flow(name="precal-demo")
def demo_flow(workdir: str) -> dict:
    """Extract the bundled sample's text, audio and video, pack, train late fusion with and without calibration,
    and test both on clean and on perturbed test samples."""
    from trainers.protocol_eval import robustness

    work = Path(workdir)
    config = PipelineConfig(
        manifest=bundled_sample_dir() / "manifest.csv", store=work / "store", out=work, train=DEMO_EXPERIMENT
    )
    result = run_pipeline(config)
    # The perturbed test clips share their sample ids with the clean ones: they get a store of their own.
    perturbed = bundled_sample_dir(perturbed=True)
    extract_flow(str(perturbed / "manifest.csv"), str(work / "store-pert"), config.extract, progress=False)
    pert_pack = pack_flow(str(perturbed / "manifest.csv"), str(work / "store-pert"), config.extract).result["path"]
    runs = json.loads(Path(result["metrics_path"]).read_text())["runs"]
    result["robustness"] = robustness(
        runs, bundled_sample_dir() / "perturbations.csv", Path(pert_pack), perturbed / "perturbations.csv"
    )
    return result
