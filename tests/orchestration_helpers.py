"""Tiny manifests and pipeline configs for the orchestration tests."""

import csv
import shutil
from pathlib import Path

import yaml

from pipeline.datasets.avdigits import bundled_sample_dir

TINY_TRAIN = {
    "backbones": ["late"],
    "methods": ["none"],
    "seeds": [0],
    "train": {"epochs": 1, "batch_size": 8, "hidden": 16, "num_workers": 0},
}


def split_subset(folder: Path, per_split: dict[str, int], media: bool = True) -> Path:
    """`per_split[split]` bundled AV-digits rows of each split, spread over the digits (the bundled
    manifest is sorted by digit); clips are copied when `media`, else the rows keep only their text."""
    source = bundled_sample_dir()
    rows = list(csv.DictReader(open(source / "manifest.csv", newline="")))
    chosen = []
    for split, n in per_split.items():
        of_split = [r for r in rows if r["split"] == split]
        chosen += of_split[:: max(1, len(of_split) // n)][:n]
    folder.mkdir(parents=True, exist_ok=True)
    for row in chosen:
        if media:
            (folder / row["video"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / row["video"], folder / row["video"])
        else:
            row["video"] = ""
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(chosen[0]))
        writer.writeheader()
        writer.writerows(chosen)
    return manifest


def write_config(folder: Path, modalities: dict, train: dict | None = None, **extract) -> Path:
    """A pipeline config next to `folder/manifest.csv`: store, out, extract {modalities, ...}, train."""
    config = {
        "manifest": "manifest.csv",
        "store": "store",
        "out": "out",
        "extract": {"modalities": modalities, "num_workers": 0, **extract},
        "train": train if train is not None else TINY_TRAIN,
    }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
