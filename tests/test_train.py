"""The training loop: outputs, selection on valid, exact resumption after a kill, methods, evaluate()."""

import json
import shutil

import pytest
import torch

from storage.packinfo import read_pack
from tests.helpers import killed_at_step
from tests.pack_helpers import write_pack
from trainers.batches import BatchSpec, to_device
from trainers.checkpoints import load_checkpoint, load_model
from trainers.config import TrainConfig
from trainers.config_file import ConfigError
from trainers.data import eval_loader
from trainers.models import per_sample_loss
from trainers.runtime import Runtime
from trainers.steps import train_step
from trainers.train import evaluate, make_model, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    return write_pack(tmp_path_factory.mktemp("train") / "pack")


def config(pack, out, **changes) -> TrainConfig:
    base = {
        "pack": pack,
        "out": out,
        "epochs": 2,
        "batch_size": 8,
        "num_workers": 0,
        "shuffle_buffer": 16,
        "hidden": 16,
        "lr": 3e-3,
    }
    return TrainConfig(**{**base, **changes})


def test_outputs_selection_and_evaluate(pack, tmp_path):
    metrics = train(config(pack, tmp_path / "run", epochs=3))
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk == metrics
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert all(h["train_batches"] == [5] and h["train_loss"] > 0 for h in metrics["history"])
    best = min(metrics["history"], key=lambda h: (-h["valid_metric"], h["valid_loss"]))  # ties: lower loss
    assert metrics["best_epoch"] == best["epoch"] and metrics["valid"]["accuracy"] == best["valid_metric"]
    assert set(metrics["test"]) == {"accuracy", "macro_f1", "loss"} and metrics["config"]["backbone"] == "late"
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["epoch-002.pt", "epoch-003.pt"]
    saved = load_checkpoint(tmp_path / "run" / "best.pt")  # weights_only=True: plain state dicts only
    assert saved["epoch"] == metrics["best_epoch"]
    assert evaluate(tmp_path / "run" / "best.pt", pack, "test") == pytest.approx(metrics["test"])


def test_learns_an_easy_task(pack, tmp_path):
    metrics = train(config(pack, tmp_path / "run", epochs=8, lr=1e-2, dropout=0.0))
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]
    assert metrics["valid"]["accuracy"] >= 0.6  # chance is 1/3


@pytest.mark.parametrize(
    "method,workers,threads", [("calibration", 0, 1), ("ogm_ge", 0, 1), ("calibration", 1, 1), ("calibration", 0, 2)]
)
def test_resume_after_kill_equals_a_straight_run(pack, tmp_path, method, workers, threads):
    """With workers, the straight run keeps them from epoch to epoch while the resumed one starts them in
    epoch 3: the data and the RNG draws must not depend on that. Exact equality holds for a given thread
    count (each run sums in the same order), so it is checked with one and with two."""
    torch.set_num_threads(threads)  # the module's one-thread fixture restores the count afterwards
    straight = train(config(pack, tmp_path / "straight", epochs=3, method=method, num_workers=workers))

    with killed_at_step(12):  # 5 steps per epoch: the 2nd step of epoch 3
        train(config(pack, tmp_path / "resumed", epochs=3, method=method, num_workers=workers))
    assert sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()) == ["epoch-001.pt", "epoch-002.pt"]
    resumed = train(config(pack, tmp_path / "resumed", epochs=3, method=method, num_workers=workers))

    assert resumed["history"] == straight["history"]
    assert resumed["valid"] == straight["valid"] and resumed["test"] == straight["test"]
    a, b = (load_checkpoint(tmp_path / run / "checkpoints" / "epoch-003.pt") for run in ("straight", "resumed"))
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_more_epochs_continue_and_changed_settings_are_refused(pack, tmp_path):
    train(config(pack, tmp_path / "run", epochs=1))
    longer = train(config(pack, tmp_path / "run", epochs=2))
    assert [h["epoch"] for h in longer["history"]] == [1, 2]
    with pytest.raises(ConfigError, match="lr"):
        train(config(pack, tmp_path / "run", epochs=3, lr=0.5))


def test_regression_selects_on_lowest_mae(tmp_path):
    pack = write_pack(tmp_path / "reg", task="regression")
    metrics = train(config(pack, tmp_path / "run", epochs=3))
    best = min(metrics["history"], key=lambda h: h["valid_metric"])
    assert metrics["best_epoch"] == best["epoch"] and metrics["selection"] == {
        "metric": "mae",
        "higher_is_better": False,
    }
    assert metrics["valid"]["mae"] == best["valid_metric"] and "acc7" in metrics["test"]


@pytest.mark.parametrize(
    "backbone,method,options",
    [("mult", "gate", {}), ("conv", "ogm_ge", {}), ("late", "calibration", {"calibration": "aux"})],
)
def test_backbones_and_methods_train(pack, tmp_path, backbone, method, options):
    metrics = train(
        config(
            pack,
            tmp_path / "run",
            epochs=1,
            backbone=backbone,
            method=method,
            modalities=["audio", "video"],
            max_len={"audio": 4},
            **options,
        )
    )
    assert metrics["modalities"] == ["audio", "video"] and metrics["best_epoch"] == 1


def test_auxiliary_loss_is_added(pack, tmp_path):
    run = config(pack, tmp_path / "run", method="calibration", calibration="aux", dropout=0.0)
    info = read_pack(pack)
    model = make_model(run, info, sorted(info.dims))
    batch = next(iter(eval_loader(info, BatchSpec.for_pack(info, sorted(info.dims)), "train", batch_size=8)))
    output = model(batch)
    expected = per_sample_loss(output.logits, batch["target"]).mean() + output.aux_loss
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    loss = train_step(model, batch, optimizer, run, Runtime(0, 1, torch.device("cpu"), False), amp=False)
    assert output.aux_loss.item() > 0 and loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_evaluate_refuses_a_pack_of_another_shape(pack, tmp_path):
    train(config(pack, tmp_path / "run", epochs=1))
    other = write_pack(tmp_path / "other", dims={"audio": 8, "text": 7, "video": 5})
    with pytest.raises(ValueError, match="text width 6 vs 7"):
        evaluate(tmp_path / "run" / "best.pt", other)


@pytest.mark.parametrize(
    "backbone,method,options",
    [
        ("conv", "calibration", {"calibration": "reliability", "model_options": {"kernel": 5, "shift": True}}),
        ("mult", "gate", {"model_options": {"heads": 2}}),
    ],
)
def test_a_checkpoint_alone_rebuilds_its_model(tmp_path, backbone, method, options):
    """Like from_pretrained: the model comes back from best.pt with the pack deleted, and computes the same."""
    pack = write_pack(tmp_path / "pack")
    train(config(pack, tmp_path / "run", epochs=1, backbone=backbone, method=method, **options))
    info = read_pack(pack)
    batch = to_device(
        next(iter(eval_loader(info, BatchSpec.for_pack(info, sorted(info.dims)), "test", batch_size=8))),
        torch.device("cpu"),
    )
    saved = load_checkpoint(tmp_path / "run" / "best.pt")
    trained = make_model(TrainConfig.model_validate(saved["config"]), info, saved["modalities"])
    trained.load_state_dict(saved["model"])
    shutil.rmtree(pack)
    rebuilt = load_model(tmp_path / "run" / "best.pt")
    assert rebuilt.method == method and rebuilt.modalities == sorted(info.dims) and not rebuilt.training
    assert saved["model_config"]["options"]["reliability"]["scale_loss"] == "rank"
    with torch.no_grad():
        expected, got = trained.eval()(batch), rebuilt(batch)
    assert torch.equal(got.logits, expected.logits)
