import pytest
import torch
import torch.nn as nn

from trainers.calibration import ContextualCalibration
from trainers.models import build_model

DIMS = {"text": 12, "audio": 5, "video": 20}
REALISTIC_DIMS = {"text": 384, "audio": 64, "video": 1024}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sequences(dims=DIMS, batch=4, seed=0):
    """Features with every sequence length from 1 to max, padding filled with noise (it must not matter)."""
    gen = torch.Generator().manual_seed(seed)
    features, mask = {}, {}
    for i, (m, d) in enumerate(sorted(dims.items())):
        steps = 3 + 2 * i
        features[m] = torch.randn(batch, steps, d, generator=gen)
        lengths = torch.arange(batch) % steps + 1
        mask[m] = torch.arange(steps)[None] < lengths[:, None]
    return features, mask


def trained_like(module: ContextualCalibration) -> ContextualCalibration:
    """Move the zero-initialised output layer off zero so the module is no longer the identity."""
    torch.manual_seed(1)
    nn.init.normal_(module.cue_out.weight, std=0.5)
    nn.init.normal_(module.cue_out.bias, std=0.5)
    return module


@pytest.mark.parametrize("shift", [False, True])
def test_identity_at_init_for_sequences(shift):
    features, mask = sequences()
    present = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 0, 1], [0, 0, 0]], dtype=torch.bool)
    out = ContextualCalibration(DIMS, shift=shift)(features, mask, present)
    for m in DIMS:
        assert torch.equal(out.features[m], features[m])
    assert torch.equal(out.scales["instance"], torch.ones(4, 3))
    assert all(torch.equal(out.scales["dimension"][m], torch.ones(4, d)) for m, d in DIMS.items())


def test_identity_at_init_for_pooled_features():
    pooled = {m: torch.randn(6, d) for m, d in DIMS.items()}
    out = ContextualCalibration(DIMS, shift=True)(pooled)
    for m in DIMS:
        assert torch.equal(out.features[m], pooled[m])


def test_shapes_scales_and_padding_after_training():
    features, mask = sequences()
    present = torch.tensor([[1, 1, 1], [1, 0, 1], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    out = trained_like(ContextualCalibration(DIMS, shift=True))(features, mask, present)
    assert out.scales["instance"].shape == (4, 3)
    for i, m in enumerate(sorted(DIMS)):
        assert out.features[m].shape == features[m].shape
        assert out.scales["dimension"][m].shape == (4, DIMS[m])
        changed = (out.features[m] != features[m]).any(-1)
        assert not changed[~mask[m]].any()  # padded steps pass through
        assert not changed[~present[:, i]].any()  # a missing modality passes through
        assert changed[mask[m] & present[:, i, None]].all()
        scales = out.scales["instance"][:, i]
        assert torch.all((scales > 0) & (scales < 2))
        assert torch.all(scales[~present[:, i]] == 1)


def test_missing_modality_is_out_of_the_others_context():
    features, mask = sequences()
    present = torch.tensor([[1, 1, 0], [1, 0, 1], [1, 1, 1], [0, 1, 1]], dtype=torch.bool)
    module = trained_like(ContextualCalibration(DIMS))
    before = module(features, mask, present).features
    changed = {m: x.clone() for m, x in features.items()}
    for i, m in enumerate(sorted(DIMS)):  # rewrite every missing modality's features
        changed[m][~present[:, i]] = 100 * torch.randn_like(changed[m][~present[:, i]])
    after = module(changed, mask, present).features
    for i, m in enumerate(sorted(DIMS)):
        assert torch.equal(after[m][present[:, i]], before[m][present[:, i]])


def test_context_follows_the_other_modalities_when_present():
    features, mask = sequences()
    module = trained_like(ContextualCalibration(DIMS))
    before = module(features, mask).features["text"]
    changed = dict(features, audio=features["audio"] + 1.0)
    assert not torch.equal(module(changed, mask).features["text"], before)


def test_no_nan_when_a_modality_has_no_context():
    features, mask = sequences()
    features["audio"][0] = 0.0  # a zero summary as well
    present = torch.tensor([[0, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1]], dtype=torch.bool)
    module = trained_like(ContextualCalibration(DIMS, shift=True, variant="aux", num_outputs=3))
    out = module(features, mask, present)
    out.features["text"].sum().backward()
    assert all(torch.isfinite(x).all() for x in out.features.values())
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("dims", [{"a": 3, "b": 7}, {"a": 3, "b": 7, "c": 2, "d": 40}])
def test_any_number_of_modalities(dims):
    features, mask = sequences(dims)
    out = trained_like(ContextualCalibration(dims))(features, mask)
    assert out.scales["instance"].shape == (4, len(dims))
    assert all(out.features[m].shape == features[m].shape for m in dims)


def test_needs_two_modalities():
    with pytest.raises(ValueError, match="at least two"):
        ContextualCalibration({"text": 4})


@pytest.mark.parametrize("variant", ["paper", "aux"])
def test_gradients_reach_every_parameter(variant):
    features, mask = sequences()
    target = torch.tensor([0, 1, 2, 1])
    module = ContextualCalibration(DIMS, shift=True, variant=variant, num_outputs=3)
    readout = nn.Linear(sum(DIMS.values()), 3)  # stands in for a backbone

    def loss_and_grads():
        module.zero_grad()
        out = module(features, mask)
        pooled = torch.cat([out.features[m].mean(1) for m in sorted(DIMS)], -1)
        loss = nn.functional.cross_entropy(readout(pooled), target)
        if out.aux_logits is not None:
            loss = loss + sum(nn.functional.cross_entropy(out.aux_logits[m], target) for m in DIMS)
        loss.backward()
        return {name: p.grad for name, p in module.named_parameters()}

    grads = loss_and_grads()
    assert grads["cue_out.weight"].abs().sum() > 0  # at init only the zero-initialised layer can move
    torch.optim.SGD(module.parameters(), lr=0.1).step()
    grads = loss_and_grads()
    assert [name for name, g in grads.items() if g is None or g.abs().sum() == 0] == []


def test_at_most_five_percent_of_the_smallest_backbone():
    calibration = ContextualCalibration(REALISTIC_DIMS)
    backbone_sizes = [
        sum(p.numel() for p in build_model(name, REALISTIC_DIMS, 2, hidden=64).parameters())
        for name in ("late", "conv", "mult")
    ]
    assert sum(p.numel() for p in calibration.parameters()) <= 0.05 * min(backbone_sizes)


def test_pooled_is_the_mean_of_the_calibrated_features():
    """What late fusion reads (mean * scale + shift, from the summary's means) is the mean of X'_m."""
    features, mask = sequences()
    present = torch.tensor([[1, 1, 1], [1, 0, 1], [1, 1, 0], [0, 1, 1]], dtype=torch.bool)
    out = trained_like(ContextualCalibration(DIMS, shift=True))(features, mask, present)
    for i, m in enumerate(sorted(DIMS)):
        real = (mask[m] & present[:, i, None]).unsqueeze(-1)
        mean = (out.features[m] * real).sum(1) / real.sum(1).clamp_min(1)
        torch.testing.assert_close(out.pooled[m], mean)


def test_loads_checkpoints_with_one_tensor_per_modality():
    """Before the side-by-side layout, read/write/shift_write/norm were one tensor per modality."""
    module = trained_like(ContextualCalibration(DIMS, shift=True))
    state, old = module.state_dict(), {}
    for name, value in state.items():
        parts = {
            "read": "read.{}",
            "write": "write.{}",
            "shift_write": "shift_write.{}",
            "norm.weight": "norm.{}.weight",
            "norm.bias": "norm.{}.bias",
        }
        if name in parts:
            pieces = value.split(
                [DIMS[m] for m in sorted(DIMS)] if value.numel() == sum(DIMS.values()) else module.width
            )
            old.update({parts[name].format(m): piece for m, piece in zip(sorted(DIMS), pieces)})
        else:
            old[name] = value
    loaded = ContextualCalibration(DIMS, shift=True)
    loaded.load_state_dict(old)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), state.values()))
