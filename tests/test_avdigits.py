"""AV-digits builder on the real FSDD + MNIST data, and the bundled sample built from them."""

import csv
from collections import Counter

import av
import numpy as np
import pytest

from pipeline.datasets.avdigits import MANIFEST_COLUMNS, SAMPLE_SPLIT_SHARES, build_avdigits, bundled_sample_dir
from pipeline.datasets.avdigits_plan import plan_avdigits
from pipeline.datasets.avdigits_sources import (
    DIGIT_WORDS,
    DatasetError,
    find_recordings,
    load_mnist,
    split_of_take,
)
from pipeline.manifest import read_manifest
from storage.layout import SPLITS

TAKES = (0, 5, 10, 11)  # per digit: one test take, one valid take, two train takes


@pytest.fixture(scope="module")
def mnist_file(shared_data):
    return shared_data / "mnist" / "mnist_5k.csv.gz"


@pytest.fixture(scope="module")
def mnist_labels(mnist_file):
    return load_mnist(mnist_file)[1]


@pytest.fixture(scope="module")
def all_recordings(shared_data):
    return find_recordings(shared_data / "fsdd" / "recordings")


@pytest.fixture(scope="module")
def fsdd_subset(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fsdd")
    for digit in range(10):
        for take in TAKES:
            name = f"{digit}_george_{take}.wav"
            (folder / name).symlink_to(shared_data / "fsdd" / "recordings" / name)
    return folder


def build_tiny(fsdd, mnist, out, seed=1):
    return build_avdigits(fsdd, mnist, out, per_class=3, seed=seed, perturb_share=0.5, progress=False)


@pytest.fixture(scope="module")
def tiny(fsdd_subset, mnist_file, tmp_path_factory):
    return build_tiny(fsdd_subset, mnist_file, tmp_path_factory.mktemp("tiny"))


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_clips_are_h264_video_with_aac_audio_of_the_same_length(tiny):
    for row in read_rows(tiny):
        with av.open(str(tiny.parent / row["video"])) as container:
            video, audio = container.streams.video[0], container.streams.audio[0]
            assert (video.codec_context.name, video.width, video.height) == ("h264", 64, 64)
            assert (audio.codec_context.name, audio.sample_rate, audio.layout.name) == ("aac", 16000, "mono")
            seconds = sum(1 for _ in container.decode(video=0)) / 25
            assert seconds >= 0.5
            assert abs(float(audio.duration * audio.time_base) - seconds) < 0.1


def test_manifest_has_the_contract_columns_splits_by_take_and_true_labels(tiny):
    rows = read_rows(tiny)
    assert tuple(rows[0]) == MANIFEST_COLUMNS
    assert len(rows) == 30
    for row in rows:
        digit, _, take = row["sample_id"].split("_")
        assert row["split"] == split_of_take(int(take))
        assert row["label"] == digit
        assert row["audio"] == "" and row["text"].strip()
    assert Counter(r["split"] for r in rows) == {"train": 10, "valid": 10, "test": 10}
    manifest = read_manifest(tiny)  # the project's own reader accepts it; audio comes from the clip
    assert all(s.audio is None and s.video.is_file() for s in manifest.samples)


def test_perturbations_change_one_modality_and_never_the_label(tiny, mnist_labels):
    texts = {r["sample_id"]: r["text"] for r in read_rows(tiny)}
    rows = read_rows(tiny.parent / "perturbations.csv")
    assert [r["sample_id"] for r in rows] == list(texts)
    assert Counter(r["kind"] for r in rows)["clean"] == 15  # half of each split of 10, rounded
    for row in rows:
        label = int(row["sample_id"][0])
        shown, heard = int(mnist_labels[int(row["mnist_row"])]), int(row["fsdd_file"][0])
        words = texts[row["sample_id"]].replace(",", " ").split()
        said = [d for d, word in enumerate(DIGIT_WORDS) if word in words]
        expected = {"video": label, "audio": label, "text": [label]}
        if row["kind"] == "conflict":
            other = int(row["detail"].removeprefix("digit="))
            assert other != label
            expected[row["modality"]] = [other] if row["modality"] == "text" else other
        elif row["kind"] == "degraded" and row["modality"] == "text":
            expected["text"] = []
        assert (shown, heard, said) == (expected["video"], expected["audio"], expected["text"]), row


def test_same_seed_writes_the_same_tables(tiny, fsdd_subset, mnist_file, tmp_path):
    again = build_tiny(fsdd_subset, mnist_file, tmp_path)
    for name in ("manifest.csv", "perturbations.csv"):
        assert (tmp_path / name).read_bytes() == (tiny.parent / name).read_bytes()
    other = plan_avdigits(
        find_recordings(fsdd_subset), load_mnist(mnist_file)[1], per_class=3, seed=2, perturb_share=0.5
    )
    assert [s.text for s in other] != [row["text"] for row in read_rows(again)]


def test_mnist_images_are_disjoint_across_splits(all_recordings, mnist_labels):
    plan = plan_avdigits(all_recordings, mnist_labels, seed=3)
    rows = {split: {s.mnist_row for s in plan if s.split == split} for split in SPLITS}
    assert not rows["train"] & rows["valid"] and not rows["train"] & rows["test"] and not rows["valid"] & rows["test"]


def test_perturbation_share_and_kinds_follow_the_request(all_recordings, mnist_labels):
    plan = plan_avdigits(all_recordings, mnist_labels, seed=4, perturb_share=0.3)
    assert len(plan) == 2500
    for split in SPLITS:
        in_split = [s for s in plan if s.split == split]
        assert sum(s.perturbation.kind != "clean" for s in in_split) / len(in_split) == pytest.approx(0.3, abs=0.01)
    perturbed = [s.perturbation for s in plan if s.perturbation.kind != "clean"]
    assert set(Counter(p.modality for p in perturbed)) == {"video", "audio", "text"}
    assert set(Counter(p.kind for p in perturbed)) == {"conflict", "degraded"}
    assert all(s.text.strip() for s in plan)  # emptied transcripts are filler words, not missing text
    clean = plan_avdigits(all_recordings, mnist_labels, perturb_share=0)
    assert all(s.perturbation.kind == "clean" for s in clean)


def test_per_class_is_spread_over_splits_by_take(all_recordings, mnist_labels):
    plan = plan_avdigits(all_recordings, mnist_labels, per_class=30, split_shares=SAMPLE_SPLIT_SHARES)
    assert Counter((s.label, s.split) for s in plan) == {
        (d, s): n for d in range(10) for s, n in (("train", 18), ("valid", 6), ("test", 6))
    }
    default = plan_avdigits(all_recordings, mnist_labels, per_class=50)
    assert Counter(s.split for s in default) == {"train": 400, "valid": 50, "test": 50}
    with pytest.raises(DatasetError, match="per-class 251"):
        plan_avdigits(all_recordings, mnist_labels, per_class=251)


def test_missing_fsdd_folder_is_a_clear_error(mnist_file, tmp_path):
    missing = tmp_path / "no-such-fsdd"
    with pytest.raises(DatasetError, match="no-such-fsdd: FSDD recordings folder does not exist"):
        build_avdigits(missing, mnist_file, tmp_path / "out", progress=False)


def test_unreadable_mnist_is_a_clear_error(fsdd_subset, tmp_path):
    broken = tmp_path / "mnist.csv.gz"
    broken.write_bytes(b"this is not gzip")
    with pytest.raises(DatasetError, match="mnist.csv.gz: cannot read the MNIST CSV"):
        build_avdigits(fsdd_subset, broken, tmp_path / "out", progress=False)
    short = tmp_path / "short.csv"
    short.write_text("1,2,3\n")
    with pytest.raises(DatasetError, match="short.csv: MNIST rows need 785 values"):
        build_avdigits(fsdd_subset, short, tmp_path / "out", progress=False)


def test_bundled_sample_is_small_complete_and_attributed():
    sample = bundled_sample_dir()
    assert (sample / "manifest.csv").is_file(), f"bundled sample missing at {sample}"
    size = sum(p.stat().st_size for p in sample.rglob("*") if p.is_file())
    assert size < 10 * 2**20
    rows = read_rows(sample / "manifest.csv")
    assert 280 <= len(rows) <= 320
    assert Counter(r["split"] for r in rows).keys() == set(SPLITS)
    assert all((sample / r["video"]).is_file() for r in rows)
    assert [r["sample_id"] for r in read_rows(sample / "perturbations.csv")] == [r["sample_id"] for r in rows]
    licences = (sample / "LICENSES.md").read_text(encoding="utf-8")
    assert "CC BY-SA 4.0" in licences and "CC BY-SA 3.0" in licences and "BSD" in licences
    assert np.isin([int(r["label"]) for r in rows], range(10)).all()


def test_bundled_perturbed_test_set_is_the_same_recordings_each_with_one_modality_perturbed():
    sample, perturbed = bundled_sample_dir(), bundled_sample_dir(perturbed=True)
    test = {r["sample_id"]: r for r in read_rows(sample / "perturbations.csv") if r["split"] == "test"}
    rows = read_rows(perturbed / "perturbations.csv")
    assert sorted(r["sample_id"] for r in rows) == sorted(test)
    assert all(r["kind"] in ("conflict", "degraded") and r["modality"] for r in rows)
    # same recording and image; the perturbation may swap one of them (conflict) but the label stays
    manifest = {r["sample_id"]: r for r in read_rows(sample / "manifest.csv")}
    assert all(m["label"] == manifest[m["sample_id"]]["label"] for m in read_rows(perturbed / "manifest.csv"))
    assert all((perturbed / m["video"]).is_file() for m in read_rows(perturbed / "manifest.csv"))


def test_splits_keeps_only_the_chosen_splits_as_planned(tiny, fsdd_subset, mnist_file, tmp_path):
    build_avdigits(
        fsdd_subset, mnist_file, tmp_path, per_class=3, seed=1, perturb_share=0.5, splits=("test",), progress=False
    )
    whole = [r for r in read_rows(tiny.parent / "perturbations.csv") if r["split"] == "test"]
    assert read_rows(tmp_path / "perturbations.csv") == whole
    assert len(list((tmp_path / "clips").iterdir())) == len(whole)
