"""Raw-level variants for the analysis: corrupted clips re-extracted into the store under their own ids, and
an analysis that uses them end to end."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from tests.helpers import bundled_subset
from trainers.config import ExperimentConfig
from trainers.experiment import run_experiment

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- raw-level variants ---------------------------------------------------------------------------------


def test_variants_need_the_feature_store_the_pack_was_made_in(tmp_path):
    from pipeline.analysis import variant_builder
    from storage.packinfo import PackInfo

    info = PackInfo(
        tmp_path / "store" / "packed" / "p1", "p1", "classification", ["a", "b"], {"audio": 4}, {"audio": "f"}, {}
    )
    build = variant_builder(tmp_path / "manifest.csv", None, (1,), 1, False)
    with pytest.raises(ValueError, match=f"{tmp_path / 'store'} is not a feature store; pass --store"):
        build(info, ["s1"], tmp_path / "variants")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """3 bundled AV-digits clips extracted (audio and video: no text model to load) and packed."""
    from pipeline.config import EncoderChoice, ExtractConfig
    from pipeline.extract import run_extraction, selection_for
    from pipeline.manifest import read_manifest
    from storage.pack import pack

    root = tmp_path_factory.mktemp("clips")
    manifest_path = bundled_subset(root / "data", 3)
    manifest = read_manifest(manifest_path)
    config = ExtractConfig(modalities={"audio": EncoderChoice(), "video": EncoderChoice()}, num_workers=0)
    run_extraction(manifest, root / "store", config, progress=False)
    packed = pack(root / "store", manifest, selection_for(root / "store", config), progress=False)
    return {
        "root": root,
        "manifest": manifest_path,
        "store": root / "store",
        "pack": packed.path,
        "ids": [s.sample_id for s in manifest.samples],
    }


def test_raw_variants_reextract_only_the_corrupted_modality(clips):
    from pipeline.variants import VARIANT_MARK, build_variants, variant_id
    from storage.catalog import Catalog
    from storage.packinfo import read_pack

    store, meta = clips["store"], read_pack(clips["pack"])
    before = sorted((r["sample_id"], r["modality"], r["content_hash"], r["shard"]) for r in Catalog(store).latest())
    records = build_variants(
        clips["manifest"],
        store,
        meta,
        clips["ids"],
        clips["root"] / "variants",
        kinds=["video-blur", "audio-noise", "text-drop"],
        severities=(4,),
        num_workers=0,
        progress=False,
    )
    assert [r["kind"] for r in records] == ["video-blur", "audio-noise"]  # no text in this pack
    done = {r["kind"]: {s["modality"]: (s["ok"], s["skipped"]) for s in r["extraction"]["modalities"]} for r in records}
    assert done["video-blur"] == {"video": (3, 0), "audio": (0, 3)}  # audio stays on the original clip's track
    assert done["audio-noise"] == {"audio": (3, 0), "video": (0, 3)}
    # The data set's own rows say what they said before: the variants do not replace its features. They
    # have rows of their own, under variant ids: new content for the corrupted modality, and the unchanged
    # one reusing the data set's features.
    after = Catalog(store).latest()
    assert (
        sorted(
            (r["sample_id"], r["modality"], r["content_hash"], r["shard"])
            for r in after
            if VARIANT_MARK not in r["sample_id"]
        )
        == before
    )
    own = {(r["sample_id"], r["modality"]): r for r in after}
    variants = {key: row for key, row in own.items() if VARIANT_MARK in key[0]}
    assert sorted(variants) == sorted(
        (variant_id(sid, v), m)
        for sid in clips["ids"]
        for v in ("video-blur-4", "audio-noise-4")
        for m in ("audio", "video")
    )
    for sid in clips["ids"]:
        for variant, changed, kept in (("video-blur-4", "video", "audio"), ("audio-noise-4", "audio", "video")):
            assert variants[variant_id(sid, variant), changed]["content_hash"] != own[sid, changed]["content_hash"]
            reused = variants[variant_id(sid, variant), kept]
            assert (reused["content_hash"], reused["shard"], reused["member"]) == (
                own[sid, kept]["content_hash"],
                own[sid, kept]["shard"],
                sid,
            )

    clean, blurred = packed_features(clips["pack"]), packed_features(records[0]["pack"])
    assert sorted(clean) == sorted(blurred) == sorted(clips["ids"])
    for sid in clean:
        assert np.array_equal(clean[sid]["audio"], blurred[sid]["audio"])
        assert clean[sid]["video"].shape == blurred[sid]["video"].shape
        assert not np.array_equal(clean[sid]["video"], blurred[sid]["video"])

    again = build_variants(
        clips["manifest"],
        store,
        meta,
        clips["ids"],
        clips["root"] / "variants",
        kinds=["video-blur"],
        severities=(4,),
        num_workers=0,
        progress=False,
    )
    assert again[0]["cached"] and again[0]["pack"] == records[0]["pack"]


def digits_subset(folder: Path, splits: list[str]) -> Path:
    """One bundled AV-digits clip of each of the first len(splits) digits, given these splits; the
    perturbation table is copied beside the manifest, as the builder writes it."""
    from pipeline.datasets.avdigits import bundled_sample_dir

    source = bundled_sample_dir()
    rows = list(csv.DictReader(open(source / "manifest.csv", newline="")))
    chosen = [next(r for r in rows if r["label"] == str(d)) for d in range(len(splits))]
    (folder / "clips").mkdir(parents=True)
    for row, split in zip(chosen, splits):
        shutil.copy2(source / row["video"], folder / row["video"])
        row["split"] = split
    with open(folder / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(chosen[0]))
        writer.writeheader()
        writer.writerows(chosen)
    shutil.copy2(source / "perturbations.csv", folder / "perturbations.csv")
    return folder / "manifest.csv"


def test_analyse_with_raw_variants_end_to_end(tmp_path):
    """Extract and pack 6 clips (audio, video), train with and without calibration, analyse with --manifest."""
    from pipeline.config import EncoderChoice, ExtractConfig
    from pipeline.extract import run_extraction, selection_for
    from pipeline.manifest import read_manifest
    from storage.pack import pack

    manifest_path = digits_subset(tmp_path / "data", ["train", "train", "train", "valid", "test", "test"])
    manifest, store = read_manifest(manifest_path), tmp_path / "store"
    config = ExtractConfig(modalities={"audio": EncoderChoice(), "video": EncoderChoice()}, num_workers=0)
    run_extraction(manifest, store, config, progress=False)
    packed = pack(store, manifest, selection_for(store, config), progress=False)
    run_experiment(
        ExperimentConfig(
            packs=[packed.path],
            out=tmp_path / "exp",
            backbones=["late"],
            methods=["none", "calibration"],
            seeds=[0],
            train={"epochs": 1, "batch_size": 4, "num_workers": 0, "hidden": 8},
        )
    )
    run_dir = tmp_path / "exp" / packed.path.name / "late-calibration-paper" / "seed-0"
    outcome = CliRunner().invoke(
        app,
        [
            "analyse",
            str(run_dir),
            "--manifest",
            str(manifest_path),
            "--severities",
            "5",
            "--workers",
            "0",
            "--tsne-points",
            "10",
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    result = json.loads((run_dir / "analysis" / "analysis.json").read_text())
    raw = result["raw_corruption"]
    assert set(raw["curves"]) == {"video-noise", "video-blur", "audio-noise"}
    assert raw["curves"]["audio-noise"]["severities"] == [0, 5]
    assert set(raw["curves"]["audio-noise"]["values"]) == {"calibration (paper)", "none"}
    for variant in raw["variants"]:
        changed = "audio" if variant["kind"] == "audio-noise" else "video"
        kept = "video" if changed == "audio" else "audio"
        assert variant["extraction"][changed]["ok"] == 2 and variant["extraction"][kept] == {
            "ok": 0,
            "failed": 0,
            "skipped": 2,
        }
    assert (run_dir / "analysis" / "variants" / "audio-noise-5" / "audio").is_dir()
    assert result["detection"]["perturbed_samples"]["all"] >= 0  # the table beside the manifest was found
    assert json.loads((run_dir / "metrics.json").read_text())["calibration_detection_lowest_share"]
    page = (run_dir / "analysis" / "report.html").read_text()
    assert "Raw-level corruption: test accuracy" in page
    assert page.count("<img ") == 6 and "Too few samples (2) for t-SNE" in page  # 2 test clips: scales, no t-SNE


def packed_features(pack_path) -> dict[str, dict[str, np.ndarray]]:
    """{sample_id: {modality: features}} of every shard of a pack."""
    from storage.npy import load_npy
    from storage.shards import read_shard

    found = {}
    for shard in sorted(Path(pack_path).glob("*.tar")):
        for sid, members in read_shard(shard):
            found[sid] = {ext.split(".")[0]: load_npy(data) for ext, data in members.items() if ext.endswith(".npy")}
    return found


def test_drop_words_keeps_one_word():
    from pipeline.variants import drop_words

    rng = np.random.default_rng(0)
    assert drop_words("the speaker said seven", 1.0, rng) in {"the", "speaker", "said", "seven"}
    assert drop_words("the speaker said seven", 0.0, rng) == "the speaker said seven"
