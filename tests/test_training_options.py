"""Training options every method gets: corruption augmentation, branch losses, selection with a loss tie-break."""

import pytest
import torch

import trainers.steps as steps
from storage.packinfo import read_pack
from tests.pack_helpers import write_pack
from trainers.augment import corrupt, feature_std, swap_partners
from trainers.batches import BatchSpec, to_device
from trainers.config import Augment, TrainConfig
from trainers.data import eval_loader
from trainers.epochs import is_better
from trainers.models import per_sample_loss
from trainers.runtime import Runtime
from trainers.steps import train_step
from trainers.train import make_model, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MODS = ["audio", "text", "video"]


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    return write_pack(tmp_path_factory.mktemp("options") / "pack")


def make_batch(n=8, steps=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mask = {m: torch.arange(steps)[None] < (torch.arange(n) % steps + 1)[:, None] for m in MODS}
    features = {m: torch.randn(n, steps, 3, generator=gen) * mask[m].unsqueeze(-1) for m in MODS}
    present = torch.ones(n, 3, dtype=torch.bool)
    present[0, 1] = present[0, 2] = False  # sample 0 has audio only
    return {
        "features": features,
        "mask": mask,
        "present": present,
        "target": torch.arange(n) % 4,
        "sample_id": [str(i) for i in range(n)],
    }


def changed(batch, corrupted) -> torch.Tensor:
    """[B, M]: which (sample, modality) features differ."""
    return torch.stack([(batch["features"][m] != corrupted["features"][m]).flatten(1).any(1) for m in MODS], 1)


def test_swap_puts_another_labels_features_in_exactly_one_present_modality():
    torch.manual_seed(0)
    batch = make_batch()
    out = corrupt(batch, Augment(share=1.0, kinds=["swap"]), None, MODS)
    diff = changed(batch, out)
    assert (diff.sum(1)[1:] == 1).all() and not (diff & ~batch["present"]).any()
    for i, j in zip(*diff.nonzero(as_tuple=True)):
        m = MODS[j]
        donors = [k for k in range(8) if torch.equal(out["features"][m][i], batch["features"][m][k])]
        assert donors and all(batch["target"][k] != batch["target"][i] for k in donors)
        assert any(torch.equal(out["mask"][m][i], batch["mask"][m][k]) for k in donors)
    assert torch.equal(out["target"], batch["target"])


def test_noise_is_scaled_by_the_std_and_spares_padding_and_absent_modalities():
    torch.manual_seed(0)
    batch = make_batch(n=64, steps=6)
    std = {m: torch.tensor([0.1, 1.0, 10.0]) for m in MODS}
    out = corrupt(batch, Augment(share=1.0, kinds=["noise"], noise_levels=[2.0]), std, MODS)
    diff = changed(batch, out)
    assert (diff.sum(1)[1:] == 1).all() and not (diff & ~batch["present"]).any()
    noise = torch.cat(
        [
            (out["features"][m] - batch["features"][m])[diff[:, j]][batch["mask"][m][diff[:, j]]]
            for j, m in enumerate(MODS)
        ]
    )
    assert torch.allclose(noise.std(0), 2 * std["audio"], rtol=0.2)
    for m in MODS:
        padding = ~batch["mask"][m]
        assert torch.equal(out["features"][m][padding], batch["features"][m][padding])


def test_share_zero_changes_nothing():
    batch = make_batch()
    assert corrupt(batch, Augment(share=0.0), None, MODS) is batch


def test_swap_partners_differ_in_label_or_at_least_in_sample():
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 2])
    partners = swap_partners(labels)
    assert (labels[partners] != labels).all()
    same = swap_partners(torch.zeros(3, dtype=torch.long))  # no other label in the batch: another sample
    assert (same != torch.arange(3)).all()


def test_feature_std_counts_only_real_steps_of_present_modalities():
    batch = make_batch(n=16, steps=5)
    std = feature_std([batch], MODS)
    real = batch["mask"]["text"] & batch["present"][:, 1, None]
    assert torch.allclose(std["text"], batch["features"]["text"][real].std(0, unbiased=False), atol=1e-5)


def config(pack, out, **changes) -> TrainConfig:
    base = {
        "pack": pack,
        "out": out,
        "epochs": 1,
        "batch_size": 8,
        "num_workers": 0,
        "shuffle_buffer": 16,
        "hidden": 16,
        "lr": 3e-3,
    }
    return TrainConfig(**{**base, **changes})


@pytest.mark.parametrize("method", ["none", "gate"])
def test_augmentation_applies_to_baselines(pack, tmp_path, monkeypatch, method):
    seen = []

    def spy(batch, options, std, modalities):
        seen.append((options.share, sorted(std)))
        return corrupt(batch, options, std, modalities)

    monkeypatch.setattr(steps, "corrupt", spy)
    train(config(pack, tmp_path / "run", method=method, augment={"share": 0.5}))
    assert len(seen) == 5 and seen[0] == (0.5, MODS)  # every step of the epoch, with the training std


def test_branch_unimodal_loss_is_added_for_any_method(pack, tmp_path):
    run = config(pack, tmp_path / "run", dropout=0.0, branch_unimodal_weight=0.5)
    info = read_pack(pack)
    model = make_model(run, info, sorted(info.dims))
    batch = to_device(
        next(iter(eval_loader(info, BatchSpec.for_pack(info, sorted(info.dims)), "train", batch_size=8))),
        torch.device("cpu"),
    )
    output = model(batch)
    branches = torch.stack([per_sample_loss(output.unimodal_logits[m], batch["target"]) for m in MODS], 1)
    present = batch["present"].float()
    expected = per_sample_loss(output.logits, batch["target"]).mean() + 0.5 * (branches * present).sum() / present.sum()
    loss = train_step(
        model,
        batch,
        torch.optim.SGD(model.parameters(), lr=0.0),
        run,
        Runtime(0, 1, torch.device("cpu"), False),
        amp=False,
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_selection_breaks_accuracy_ties_by_valid_loss():
    assert is_better(0.9, None, True)
    assert is_better(0.9, 0.9, True, loss=0.3, best_loss=0.4)
    assert not is_better(0.9, 0.9, True, loss=0.5, best_loss=0.4)
    assert not is_better(0.89, 0.9, True, loss=0.1, best_loss=0.4)
    assert is_better(0.91, 0.9, True, loss=0.9, best_loss=0.4)
    assert is_better(1.0, 1.2, False)  # MAE: lower is better


def test_reliability_trains_with_augmentation_and_branch_losses(pack, tmp_path):
    metrics = train(
        config(
            pack,
            tmp_path / "run",
            epochs=2,
            backbone="conv",
            method="calibration",
            calibration="reliability",
            augment={},
            branch_unimodal_weight=1.0,
            model_options={"reliability": {"scale_loss": "tcp", "evidence_hidden": 8}},
        )
    )
    assert metrics["best_epoch"] in (1, 2) and metrics["test"]["accuracy"] >= 0


def test_reliability_and_augmentation_train_on_a_regression_pack(tmp_path):
    pack = write_pack(tmp_path / "regression", task="regression")
    metrics = train(
        config(
            pack,
            tmp_path / "run",
            method="calibration",
            calibration="reliability",
            augment={},
            branch_unimodal_weight=0.5,
        )
    )
    assert metrics["selection"]["metric"] == "mae" and metrics["test"]["mae"] > 0
