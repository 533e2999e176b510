import math

import pytest
import torch
import torch.nn.functional as F

from storage.registry import Registry
from trainers.backbones import BACKBONES
from trainers.models import CALIBRATIONS, METHODS, ModelOutput, build_model, ogm_ge_modulate

DIMS = {"audio": 6, "text": 10, "video": 16}
MODALITIES = sorted(DIMS)
STEPS = {"audio": 9, "text": 5, "video": 4}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_batch(batch=6, num_classes=3, seed=0, present=None):
    """Variable lengths (1..T), noisy padding, and by default some missing modalities."""
    gen = torch.Generator().manual_seed(seed)
    features, mask = {}, {}
    for m in MODALITIES:
        features[m] = torch.randn(batch, STEPS[m], DIMS[m], generator=gen)
        lengths = torch.randint(1, STEPS[m] + 1, (batch,), generator=gen)
        mask[m] = torch.arange(STEPS[m])[None] < lengths[:, None]
    if present is None:
        present = torch.ones(batch, len(MODALITIES), dtype=torch.bool)
        present[1, 0] = present[2, 1] = present[3, 2] = False
        present[4, :2] = False  # only video left: no context for it
    return {
        "features": features,
        "mask": mask,
        "present": present,
        "target": torch.randint(0, num_classes, (batch,), generator=gen),
        "sample_id": [f"s{i}" for i in range(batch)],
    }


@pytest.mark.parametrize("backbone", BACKBONES.names())
@pytest.mark.parametrize("method", METHODS.names())
def test_forward_shapes(backbone, method):
    model = build_model(backbone, DIMS, 3, method=method)
    out = model(make_batch())
    assert out.logits.shape == (6, 3) and torch.isfinite(out.logits).all()
    assert sorted(out.unimodal_logits) == MODALITIES
    assert all(v.shape == (6, 3) for v in out.unimodal_logits.values())
    if method == "calibration":
        assert out.scales["instance"].shape == (6, 3)
        assert {m: v.shape[1] for m, v in out.scales["dimension"].items()} == DIMS
    else:
        assert out.scales is None
    assert out.aux_loss is None
    assert model.modalities == MODALITIES


@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_a_single_modality_works(backbone):
    batch = make_batch()
    batch = dict(
        batch,
        features={"text": batch["features"]["text"]},
        mask={"text": batch["mask"]["text"]},
        present=torch.ones(6, 1, dtype=torch.bool),
    )
    out = build_model(backbone, {"text": DIMS["text"]}, 3)(batch)
    assert out.logits.shape == (6, 3) and torch.isfinite(out.logits).all()


@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_pooled_features_and_regression(backbone):
    batch = make_batch()
    batch["features"] = {m: x[:, 0] for m, x in batch["features"].items()}
    batch.pop("mask")
    batch["target"] = torch.randn(6)
    out = build_model(backbone, DIMS, 1, method="calibration", calibration="aux")(batch)
    assert out.logits.shape == (6, 1)
    assert out.aux_loss.shape == () and torch.isfinite(out.aux_loss)


@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_calibration_is_the_identity_at_init(backbone):
    torch.manual_seed(0)
    plain = build_model(backbone, DIMS, 3).eval()
    torch.manual_seed(0)
    calibrated = build_model(backbone, DIMS, 3, method="calibration", shift=True).eval()
    plain_state, calibrated_state = plain.state_dict(), calibrated.state_dict()
    assert all(torch.equal(value, calibrated_state[name]) for name, value in plain_state.items())
    assert all(name.startswith("calibration.") for name in calibrated_state.keys() - plain_state.keys())
    batch = make_batch()
    a, b = plain(batch), calibrated(batch)
    assert torch.equal(a.logits, b.logits)
    assert all(torch.equal(a.unimodal_logits[m], b.unimodal_logits[m]) for m in MODALITIES)


@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_padding_and_missing_modalities_do_not_leak(backbone):
    torch.manual_seed(0)
    model = build_model(backbone, DIMS, 3, method="calibration").eval()
    batch = make_batch()
    longer = dict(batch, features={}, mask={})
    for m in MODALITIES:  # three more padded steps full of noise
        x, mask = batch["features"][m], batch["mask"][m]
        longer["features"][m] = torch.cat([x, 50 * torch.randn(x.shape[0], 3, x.shape[2])], 1)
        longer["mask"][m] = torch.cat([mask, torch.zeros(mask.shape[0], 3, dtype=torch.bool)], 1)
    for i, m in enumerate(MODALITIES):  # and new content for every missing modality
        missing = ~batch["present"][:, i]
        longer["features"][m][missing] = 50 * torch.randn_like(longer["features"][m][missing])
    torch.testing.assert_close(model(longer).logits, model(batch).logits, rtol=1e-5, atol=1e-5)


def test_gate_sits_between_the_branches_and_the_head():
    torch.manual_seed(0)
    plain = build_model("conv", DIMS, 3).eval()
    torch.manual_seed(0)
    gated = build_model("conv", DIMS, 3, method="gate").eval()
    batch = make_batch()
    with torch.no_grad():
        gated.gate.weight.zero_()
        gated.gate.bias.fill_(math.inf)  # gate 1: the plain model
        assert torch.equal(gated(batch).logits, plain(batch).logits)
        gated.gate.bias.fill_(-math.inf)  # gate 0: the head sees nothing
        head_alone = plain.backbone.head(torch.zeros(1, 3 * plain.backbone.hidden))
        torch.testing.assert_close(gated(batch).logits, head_alone.expand(6, 3))


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown backbone"):
        BACKBONES.get("resnet")
    with pytest.raises(ValueError, match="unknown method"):
        build_model("late", DIMS, 3, method="magic")


def test_a_registry_names_what_it_knows_when_asked_for_something_else():
    registry = Registry("backbone")
    registry.register("late")(object())
    registry.register("conv")(object())
    assert registry.names() == ["conv", "late"]
    with pytest.raises(ValueError, match="unknown backbone 'resnet'; registered: conv, late"):
        registry.get("resnet")
    with pytest.raises(ValueError, match="unknown calibration variant 'magic'; registered: aux, paper, reliability"):
        build_model("late", DIMS, 3, method="calibration", calibration="magic")


@pytest.mark.parametrize("registry", [BACKBONES, METHODS, CALIBRATIONS], ids=lambda r: r.kind)
def test_registries_refuse_a_taken_name(registry):
    taken = registry.names()[0]
    first = registry.get(taken)
    with pytest.raises(ValueError, match=f"{registry.kind} '{taken}' is already registered"):
        registry.register(taken)(object())
    assert registry.get(taken) is first  # the first registration stands


def ogm_setup(num_classes=2):
    torch.manual_seed(0)
    model = build_model("late", DIMS, num_classes, method="ogm_ge", dropout=0.0)
    batch = make_batch(num_classes=num_classes, present=torch.ones(6, 3, dtype=torch.bool))
    out = model(batch)
    F.cross_entropy(out.logits, batch["target"]).backward()
    # Audio is sure of the true class, text and video know nothing: audio is the dominant modality.
    sure = 20 * (2 * F.one_hot(batch["target"], num_classes).float() - 1)
    unimodal = {"audio": sure, "text": torch.zeros_like(sure), "video": torch.zeros_like(sure)}
    grads = {m: [p.grad.clone() for p in model.modality_parameters(m)] for m in MODALITIES}
    return model, ModelOutput(out.logits, unimodal), batch["target"], grads


def test_ogm_ge_slows_down_the_dominant_modality():
    model, output, target, before = ogm_setup()
    coefficients = ogm_ge_modulate(model, output, target, alpha=0.5, noise=False)
    expected = 1 - math.tanh(0.5 * (1.0 / 0.5 - 1))  # audio scores 1, the others 1/2 each
    assert coefficients == pytest.approx({"audio": expected, "text": 1.0, "video": 1.0})
    for m in MODALITIES:
        for g, p in zip(before[m], model.modality_parameters(m)):
            torch.testing.assert_close(p.grad, g * coefficients[m])
    head_grads = [p.grad for p in model.backbone.head.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in head_grads)


def test_ogm_ge_adds_noise_with_the_gradient_std():
    model, output, target, before = ogm_setup()
    torch.manual_seed(1)
    coefficients = ogm_ge_modulate(model, output, target, alpha=0.5)
    weight = model.modality_parameters("video")[0]  # the largest branch weight
    noise = weight.grad - before["video"][0] * coefficients["video"]
    assert noise.std().item() == pytest.approx(before["video"][0].std().item(), rel=0.1)


def test_ogm_ge_with_float_targets():
    torch.manual_seed(0)
    model = build_model("conv", DIMS, 1, method="ogm_ge")
    batch = make_batch()
    batch["target"] = torch.randn(6)
    out = model(batch)
    F.l1_loss(out.logits.squeeze(-1), batch["target"]).backward()
    coefficients = ogm_ge_modulate(model, out, batch["target"], present=batch["present"])
    assert sorted(coefficients) == MODALITIES and all(0 < k <= 1 for k in coefficients.values())
    assert min(coefficients.values()) < 1  # one modality is always at least as good as the others' mean


@pytest.mark.parametrize("backbone", BACKBONES.names())
@pytest.mark.parametrize("method", ["none", "calibration"])
def test_overfits_a_small_batch(backbone, method):
    torch.manual_seed(0)
    model = build_model(backbone, DIMS, 3, method=method, hidden=32, dropout=0.0)
    batch = make_batch(batch=12)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(batch).logits, batch["target"])
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


@pytest.mark.parametrize("method", ["none", "calibration"])
def test_late_fusion_on_pooled_batches(method):
    """The loader pools for late fusion (BatchSpec.pooled): a [B, 1, D] batch of means gives the same outputs."""
    torch.manual_seed(0)
    model = build_model("late", DIMS, 3, method=method, shift=True).eval()
    if method == "calibration":
        torch.nn.init.normal_(model.calibration.cue_out.weight, std=0.5)
    batch = make_batch()
    pooled = dict(batch, features={}, mask={})
    for i, m in enumerate(MODALITIES):
        real = batch["mask"][m] & batch["present"][:, i, None]
        mean = (batch["features"][m] * real.unsqueeze(-1)).sum(1) / real.sum(1, keepdim=True).clamp_min(1)
        pooled["features"][m], pooled["mask"][m] = mean.unsqueeze(1), real.any(1, keepdim=True)
    torch.testing.assert_close(model(pooled).logits, model(batch).logits)
