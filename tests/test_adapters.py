"""Dataset adapters on tiny copies of the real layouts (generated clips), the adapter registry, the presets
and the `precal datasets import` command (MMSA features and end-to-end runs: test_adapters_pipeline.py)."""

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.adapters import ADAPTERS, adapter_options, ave, import_dataset, preset_path
from pipeline.adapters.common import (
    BAD_NAME,
    BAD_ROW,
    DUPLICATE,
    MISSING,
    UNKNOWN_LABEL,
    UNLISTED,
    Collected,
    LayoutError,
    safe_id,
)
from pipeline.config import load_pipeline_config
from pipeline.manifest import read_manifest
from tests.fixtures_layouts import (
    MOSI_ROWS,
    UCF_CLASSES,
    ave_row,
    build_ave,
    build_class_folders,
    build_cremad,
    build_mosi,
    build_ucf101,
    issues,
    samples_of,
    ucf_name,
    write_clip,
    write_cremad_clip,
    write_lines,
)
from trainers.config import ExperimentConfig, validate

# ---- CREMA-D ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cremad(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cremad")
    build_cremad(root)
    return root


def test_cremad_seeded_split_keeps_every_emotion_in_every_split(cremad, tmp_path):
    report = import_dataset("cremad", cremad, tmp_path / "m.csv")
    samples = samples_of(report.manifest)
    assert report.counts == {"train": 18, "valid": 3, "test": 3} and report.classes == 3
    assert not report.skipped and not report.incomplete
    assert "--allow-outside-root" in report.notes[0]  # the manifest was written outside the data set
    for split in ("train", "valid", "test"):
        assert {s.label for s in samples.values() if s.split == split} == {"ANG", "HAP", "NEU"}
    clip = samples["1003_IEO_HAP_XX"]
    assert clip.audio == cremad / "AudioWAV" / "1003_IEO_HAP_XX.wav"
    assert clip.video == cremad / "VideoFlash" / "1003_IEO_HAP_XX.flv"
    assert clip.text == "It's eleven o'clock" and clip.label == "HAP"


def test_cremad_split_is_a_function_of_the_seed(cremad, tmp_path):
    first = import_dataset("cremad", cremad, tmp_path / "a.csv", seed=3).manifest.read_bytes()
    again = import_dataset("cremad", cremad, tmp_path / "b.csv", seed=3).manifest.read_bytes()
    other = import_dataset("cremad", cremad, tmp_path / "c.csv", seed=4).manifest.read_bytes()
    assert first == again and first != other


def test_cremad_speaker_independent_split_keeps_each_actor_in_one_split(cremad, tmp_path):
    report = import_dataset("cremad", cremad, tmp_path / "m.csv", speaker_independent=True, text=False)
    samples = samples_of(report.manifest)
    actors = {}
    for s in samples.values():
        actors.setdefault(s.sample_id[:4], set()).add(s.split)
        assert s.text is None
    assert all(len(splits) == 1 for splits in actors.values())
    assert set().union(*actors.values()) == {"train", "valid", "test"}


def test_cremad_lists_and_broken_items_are_reported(tmp_path):
    root = tmp_path / "CREMA-D"
    names = build_cremad(root)
    write_cremad_clip(root, "1005_DFA_ANG_XX", wav=False)  # video only: audio comes from the flv
    write_cremad_clip(root, "1005_IEO_ANG_XX", flv=False)  # audio only
    write_cremad_clip(root, "1005_XYZ_ANG_XX")  # unknown sentence code
    write_cremad_clip(root, "1005_DFA_BOR_XX")  # unknown emotion
    write_cremad_clip(root, "take2", flv=False)
    train = [f"{n},{n.split('_')[2]}" for n in names if not n.startswith("1004")]
    test = [f"{n},{n.split('_')[2]}" for n in names if n.startswith("1004")]
    write_lines(
        tmp_path / "lists" / "train.csv",
        [*train, "1005_DFA_ANG_XX,ANG", "1009_DFA_ANG_XX,ANG", "1005_IEO_ANG_XX,SAD", "only-one-field"],
    )
    write_lines(tmp_path / "lists" / "test.csv", [*test, names[0] + ",ANG"])

    report = import_dataset("cremad", root, root / "manifest.csv", lists=tmp_path / "lists", valid_share=0.2)
    samples = samples_of(report.manifest)
    assert {s.sample_id for s in samples.values() if s.split == "test"} == {n for n in names if n.startswith("1004")}
    assert report.counts == {"train": 16, "valid": 3, "test": 6}  # valid: one clip per emotion
    assert samples["1005_DFA_ANG_XX"].audio is None and samples["1005_DFA_ANG_XX"].video.suffix == ".flv"
    assert issues(report, MISSING, "incomplete") == ["AudioWAV/1005_DFA_ANG_XX.wav", "VideoFlash/1005_IEO_ANG_XX.flv"]
    assert issues(report, BAD_NAME) == ["1005_XYZ_ANG_XX", "take2"]
    assert issues(report, UNKNOWN_LABEL) == ["1005_DFA_BOR_XX", "train.csv:21"]  # emotion code; label != name
    assert issues(report, MISSING) == ["train.csv:20"] and issues(report, BAD_ROW) == ["train.csv:22"]
    assert issues(report, DUPLICATE) == ["test.csv:7"]  # already listed for train: stays in train
    assert issues(report, UNLISTED) == ["1005_IEO_ANG_XX"]  # its only row had a wrong label


# ---- AVE -------------------------------------------------------------------------------------------


def test_ave_maps_each_event_with_its_segment_and_reports_the_rest(tmp_path):
    splits = {
        "train": [
            ave_row("Church bell", "RUhOCu3LNXM", 0, 4),
            ave_row("Bark", "RUhOCu3LNXM", 5, 10),
            ave_row("Bark", "a-b_c1"),
            ave_row("Dragon roar", "x9"),
        ],
        "valid": [ave_row("Church bell", "v1"), ave_row("Bark", "v2")],
        "test": [ave_row("Church bell", "t1", 2, 7), ave_row("Bark", "t2")],
    }
    build_ave(tmp_path, splits, extra_annotations=(ave_row("Bark", "unsplit"), "Bark&broken&good&x&1"))
    (tmp_path / "AVE" / "t2.mp4").unlink()
    write_lines(tmp_path / "valSet.txt", [*splits["valid"], ave_row("Cat", "ghost")])

    report = import_dataset("ave", tmp_path, tmp_path / "manifest.csv")
    samples = samples_of(report.manifest)
    assert report.counts == {"train": 3, "valid": 2, "test": 1} and report.classes == 2
    bell, bark = samples["RUhOCu3LNXM_0_4"], samples["RUhOCu3LNXM_5_10"]  # two events of one video
    assert (bell.label, bell.start, bell.end, bark.label, bark.start, bark.end) == ("Church bell", 0, 4, "Bark", 5, 10)
    assert bell.video == bark.video == tmp_path / "AVE" / "RUhOCu3LNXM.mp4"
    assert samples["t1_2_7"].split == "test" and samples["a-b_c1_0_1"].split == "train"
    assert issues(report, UNKNOWN_LABEL) == ["Annotations.txt:5"]
    assert issues(report, MISSING) == ["AVE/t2.mp4"]
    assert issues(report, UNLISTED) == ["Annotations.txt:10", "valSet.txt:3"]  # in no split; not annotated
    assert issues(report, BAD_ROW) == ["Annotations.txt:11"]


def test_ave_needs_its_annotations(tmp_path):
    (tmp_path / "AVE").mkdir()
    with pytest.raises(LayoutError, match="Annotations.txt"):
        import_dataset("ave", tmp_path, tmp_path / "m.csv")


# ---- CMU-MOSI / MOSEI ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mosi", "mosei"])
def test_mosi_layout_gives_regression_labels_transcripts_and_safe_ids(tmp_path, name):
    rows = [
        *MOSI_ROWS,
        ("odd id.v2", "3", "fine", 0.2, "train"),
        ("gone", "1", "x", 1.0, "test"),
        ("03bSnISJMiM", "9", "x", 4.5, "train"),
        ("03bSnISJMiM", "8", "x", 1.0, "dev"),
    ]
    build_mosi(tmp_path, rows, skip_media=("gone/1",))
    report = import_dataset(name, tmp_path, tmp_path / "manifest.jsonl")
    samples = samples_of(report.manifest)
    assert report.counts == {"train": 5, "valid": 2, "test": 2} and report.classes is None
    clip = samples["03bSnISJMiM_2"]
    assert (clip.label, clip.split, clip.text) == (-1.8, "train", "i didn't like it, at all")
    assert clip.video == tmp_path / "Raw" / "03bSnISJMiM" / "2.mp4"
    odd = safe_id("odd id.v2_3")
    assert odd.startswith("odd-id-v2_3-") and samples[odd].text == "fine"
    assert samples["2iD-tVS8NPw_2"].text is None
    assert issues(report, MISSING, "incomplete") == ["label.csv:9"]  # the empty transcript
    assert issues(report, MISSING) == ["Raw/gone/1.mp4"]
    assert issues(report, UNKNOWN_LABEL) == ["label.csv:12"] and issues(report, BAD_ROW) == ["label.csv:13"]
    assert read_manifest(report.manifest).task() == "regression"


def test_safe_ids_are_kept_or_made_safe_and_distinct():
    assert safe_id("abc-D_9") == "abc-D_9"
    assert safe_id("a.b") != safe_id("a b") and safe_id("a.b").startswith("a-b-")
    assert safe_id("a.b") == safe_id("a.b")


# ---- Kinetics-Sounds and UCF101 ---------------------------------------------------------------------

KS_CLASSES = ("playing bagpipes", "dog barking", "ripping paper")


def ks_videos(*numbers: int) -> list[str]:
    return [f"{cls}/{cls[:4]}{i}_000010_000020.mp4" for cls in KS_CLASSES for i in numbers]


def test_kinetics_sounds_lists_give_the_splits(tmp_path):
    build_class_folders(tmp_path, [*ks_videos(0, 1, 2, 3), "dog barking/unlisted.mp4"])
    write_lines(tmp_path / "train.txt", [*ks_videos(0, 1), "../outside/x.mp4"])
    write_lines(tmp_path / "val.txt", ks_videos(2))
    write_lines(tmp_path / "test.txt", [*ks_videos(3), "cat purring/none.mp4"])
    report = import_dataset("kinetics-sounds", tmp_path, tmp_path / "manifest.csv")
    samples = samples_of(report.manifest)
    assert report.counts == {"train": 6, "valid": 3, "test": 3} and report.classes == 3
    assert samples["play3_000010_000020"].label == "playing bagpipes"
    assert samples["play3_000010_000020"].split == "test"
    assert issues(report, UNLISTED) == ["dog barking/unlisted.mp4"]
    assert issues(report, MISSING) == ["cat purring/none.mp4"] and issues(report, BAD_ROW) == ["train.txt:7"]


def test_kinetics_sounds_without_lists_draws_a_stratified_split(tmp_path):
    build_class_folders(tmp_path, ks_videos(0, 1, 2, 3))
    report = import_dataset("kinetics-sounds", tmp_path, tmp_path / "m.csv", valid_share=0.25, test_share=0.25)
    per_split = Counter((s.split, s.label) for s in samples_of(report.manifest).values())
    assert all(per_split[("test", c)] == 1 and per_split[("valid", c)] == 1 for c in {k[1] for k in per_split})
    assert any("seeded split" in note for note in report.notes)


def test_ucf101_uses_the_official_lists_and_carves_valid_by_group(tmp_path):
    build_ucf101(tmp_path)
    lists = tmp_path / "ucfTrainTestlist"
    train = (lists / "trainlist01.txt").read_text().splitlines()
    write_clip(tmp_path / "Archery" / "v_Archery_g09_c01.avi", "Archery")  # in no list
    write_lines(
        lists / "trainlist01.txt",
        [*train, f"{ucf_name('Archery', 5)} 2", f"{ucf_name('Archery', 2, 2)} 1", "Juggling/v_Juggling_g02_c01.avi 4"],
    )
    report = import_dataset("ucf101", tmp_path, tmp_path / "manifest.csv")
    samples = samples_of(report.manifest)
    assert report.counts == {"train": 6, "valid": 3, "test": 3} and report.classes == len(UCF_CLASSES)
    assert {s.sample_id[-7:-4] for s in samples.values() if s.split == "test"} == {"g01"}
    valid_groups = {s.sample_id[-7:-4] for s in samples.values() if s.split == "valid"}
    assert len(valid_groups) == 1 and valid_groups < {"g02", "g03", "g04"}  # one whole group, every class
    assert samples["v_Archery_g03_c01"].label == "Archery"
    assert issues(report, MISSING) == [ucf_name("Archery", 5)]
    assert issues(report, UNKNOWN_LABEL) == ["trainlist01.txt:11", "trainlist01.txt:12"]  # class number; class
    assert issues(report, UNLISTED) == ["Archery/v_Archery_g09_c01.avi"]
    with pytest.raises(LayoutError, match="trainlist02.txt"):
        import_dataset("ucf101", tmp_path, tmp_path / "m2.csv", split_number=2)


# ---- the common interface, presets, the command ------------------------------------------------------


def test_options_that_do_not_apply_are_refused_by_name(tmp_path):
    assert adapter_options("ucf101") == ["lists", "split_number", "valid_share", "seed"]
    with pytest.raises(ValueError, match="speaker_independent do not apply to ave"):
        import_dataset("ave", tmp_path, tmp_path / "m.csv", speaker_independent=True)
    with pytest.raises(ValueError, match="unknown data set 'voxceleb'; registered: ave, cremad, kinetics-sounds"):
        import_dataset("voxceleb", tmp_path, tmp_path / "m.csv")


def test_adapters_are_registered_once_by_name():
    assert ADAPTERS.names() == ["ave", "cremad", "kinetics-sounds", "mosei", "mosi", "ucf101"]
    assert ADAPTERS.get("mosei") is ADAPTERS.get("mosi")  # one layout, two data sets
    with pytest.raises(ValueError, match="data set 'ave' is already registered"):
        ADAPTERS.register("ave")(lambda root: Collected())
    assert ADAPTERS.get("ave") is ave.collect  # the first registration is kept


@pytest.mark.parametrize("name", ADAPTERS.names())
def test_presets_are_valid_pipeline_and_experiment_configs(name):
    from extractors import list_encoders

    config = load_pipeline_config(preset_path(name))
    encoders = list_encoders()
    assert all(choice.name in encoders[m] for m, choice in config.extract.modalities.items())
    experiment = validate(ExperimentConfig, {**config.train, "packs": ["p"], "out": "o"}, name)
    assert set(experiment.train.max_len) <= set(config.extract.modalities)


def test_cli_import_writes_the_manifest_and_prints_the_report(cremad, tmp_path):
    from pipeline.cli import app

    runner = CliRunner()
    out, report = tmp_path / "m.csv", tmp_path / "report.json"
    result = runner.invoke(
        app,
        [
            "datasets",
            "import",
            "cremad",
            str(cremad),
            "--out",
            str(out),
            "--report",
            str(report),
            "--speaker-independent",
            "--no-text",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "train 12" in result.output and "cremad.yaml" in result.output and out.is_file()
    assert json.loads(report.read_text())["counts"]["train"] == 12
    refused = runner.invoke(app, ["datasets", "import", "ave", str(cremad), "--out", str(out), "--seed", "1"])
    assert refused.exit_code == 2 and "do not apply to ave" in refused.output
    assert "--split-number" in runner.invoke(app, ["datasets", "import", "--help"]).output
