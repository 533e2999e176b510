"""Analyses measured on their own: feature-level corruption of a trained run, and the detection scores."""

import numpy as np
import pytest

from tests.pack_helpers import write_pack
from trainers.analysis.corruption import feature_corruption
from trainers.analysis.detection import detection_metrics, lowest_credit, read_perturbations
from trainers.analysis.runs import load_batches, load_run
from trainers.config import TrainConfig
from trainers.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- corruption ---------------------------------------------------------------------------------------


def test_feature_corruption_lowers_accuracy_with_severity(tmp_path):
    pack = write_pack(
        tmp_path / "pack",
        dims={"audio": 8},
        counts={"train": 96, "valid": 24, "test": 60},
        missing_rate=0.0,
        signal=3.0,
    )
    train(TrainConfig(pack=pack, out=tmp_path / "run", epochs=6, batch_size=16, lr=1e-2, num_workers=0, hidden=16))
    run = load_run(tmp_path / "run")
    batches = load_batches(run)
    curves = feature_corruption({"run": run}, batches)["curves"]
    noise = curves["noise"]["audio"]["run"]
    assert noise[0] > 0.8, "the model should have learned the class from dim 0"
    assert noise[-1] < noise[0] - 0.2
    assert all(b <= a + 0.05 for a, b in zip(noise, noise[1:])), noise
    assert curves["zero_dims"]["audio"]["run"][-1] < noise[0]
    # One step per sample is always kept: the modality never disappears.
    assert curves["drop_steps"]["audio"]["run"][-1] > 1 / 3


# ---- detection ----------------------------------------------------------------------------------------


def test_detection_auroc_on_a_known_case():
    modalities = ["audio", "text", "video"]
    ids = ["clean", "conflict_audio", "degraded_video", "conflict_text"]
    table = {
        "clean": ("", "clean"),
        "conflict_audio": ("audio", "conflict"),
        "degraded_video": ("video", "degraded"),
        "conflict_text": ("text", "conflict"),
    }
    instance = np.array(
        [
            [1.0, 1.1, 0.9],
            [0.5, 1.2, 1.0],  # audio lowest: found
            [1.0, 0.8, 0.95],  # text lowest, video perturbed: missed
            [1.0, 0.7, 0.7],
        ]
    )  # text tied lowest with video: half credit
    present = np.ones_like(instance, bool)
    result = detection_metrics(instance, present, modalities, ids, table)
    # conflict: negatives 0.5 and 0.7 against positives {1.0, 1.1, 0.9, 1.2, 1.0, 1.0, 0.7}:
    # 0.5 is below all 7; 0.7 is below 6 and tied with 1 -> (7 + 6.5) / 14
    assert result["auroc"]["conflict"] == pytest.approx(13.5 / 14)
    # degraded: negative 0.95 against {1.0, 1.1, 0.9, 1.0, 0.8}: below 2 and tied with none above 3 -> 3 / 5
    assert result["auroc"]["degraded"] == pytest.approx(3 / 5)
    assert result["lowest_share"] == {"conflict": pytest.approx(0.75), "degraded": 0.0, "all": pytest.approx(0.5)}
    assert result["perturbed_samples"] == {"conflict": 2, "degraded": 1, "all": 3}
    # One modality at a time: audio and text drop when they are the conflicting one, video rises when degraded.
    within = result["auroc_within_modality"]
    assert within["audio"]["conflict"] == within["text"]["conflict"] == 1.0 and within["video"]["conflict"] is None
    assert within["video"]["degraded"] == 0.0
    assert result["auroc_within_modality_mean"]["conflict"] == 1.0
    perfect = detection_metrics(
        np.where([[0, 0, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]], 0.1, 1.5), present, modalities, ids, table
    )
    assert perfect["auroc"] == {"conflict": 1.0, "degraded": 1.0, "all": 1.0}
    assert perfect["lowest_share"]["all"] == 1.0


def test_identity_scales_score_chance():
    assert lowest_credit(np.ones(3), np.ones(3, bool), 1) == pytest.approx(1 / 3)
    assert lowest_credit(np.ones(3), np.array([True, True, False]), 0) == pytest.approx(1 / 2)
    result = detection_metrics(
        np.ones((2, 3)),
        np.ones((2, 3), bool),
        ["a", "b", "c"],
        ["x", "y"],
        {"x": ("a", "conflict"), "y": ("", "clean")},
    )
    assert result["auroc"]["all"] == 0.5 and result["lowest_share"]["all"] == pytest.approx(1 / 3)
    assert result["auroc"]["degraded"] is None  # no degraded pair: undefined, not a number


def test_read_perturbations(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("sample_id,split,modality,kind,detail\na,test,,clean,\nb,test,audio,conflict,digit=3\n")
    assert read_perturbations(path) == {"a": ("", "clean"), "b": ("audio", "conflict")}
    path.write_text("sample_id,kind\na,clean\n")
    with pytest.raises(ValueError, match="modality"):
        read_perturbations(path)
