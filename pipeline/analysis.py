"""`precal analyse` outside the CLI: the media work of the raw-level corruption (pipeline/variants.py) joined
to the trainers' analyses, which read packs only.

Given the manifest a pack was built from, the test clips' media are corrupted, re-extracted into the feature
store and packed (`VariantBuilder`); the perturbation table the AV-digits builder writes beside its manifest
is used when none is named.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.variants import build_variants
from storage.layout import Store
from storage.packinfo import PackInfo
from trainers.analysis.analyse import VariantBuilder
from trainers.analysis.analyse import analyse as analyse_packs
from trainers.analysis.corruption import SEVERITIES

PERTURBATIONS_FILE = "perturbations.csv"


def variant_builder(manifest: Path, store: Path | None, severities, num_workers: int, progress: bool) -> VariantBuilder:
    """Builds a run's raw variants from `manifest` into `store` (default: the store holding the pack,
    STORE/packed/<pack-id>)."""

    def build(info: PackInfo, sample_ids: list[str], folder: Path) -> list[dict]:
        feature_store = Store(store) if store else Store.holding_pack(info.path)
        if not feature_store.catalog_dir.is_dir():
            raise ValueError(
                f"{feature_store.root} is not a feature store; pass --store (the store the pack was made in)."
            )
        return build_variants(
            manifest,
            feature_store.root,
            info,
            sample_ids,
            folder,
            severities=severities,
            num_workers=num_workers,
            progress=progress,
        )

    return build


def analyse(
    path: Path | str,
    *,
    manifest: Path | str | None = None,
    store: Path | str | None = None,
    perturbations: Path | str | None = None,
    severities=SEVERITIES,
    num_workers: int = 1,
    progress: bool = True,
    **options,
) -> dict:
    """trainers.analysis.analyse.analyse on a run or experiment folder, with raw-level corruption when the
    manifest is given (`options`: raw, batch_size, tsne_points, publish)."""
    variants = None
    if manifest is not None:
        manifest = Path(manifest)
        variants = variant_builder(manifest, Path(store) if store else None, severities, num_workers, progress)
        if perturbations is None and (manifest.parent / PERTURBATIONS_FILE).is_file():
            perturbations = manifest.parent / PERTURBATIONS_FILE
    return analyse_packs(
        path, variants=variants, perturbations=perturbations, severities=severities, progress=progress, **options
    )
