"""The "reliability" calibration variant: identity when attached, scale 1 for missing modalities, cues that
do not depend on the order of the other modalities, its losses, and the Gaussian evidence for regression."""

import pytest
import torch
import torch.nn as nn

from trainers.models import build_model
from trainers.reliability import ReliabilityCalibration, rank_loss, reliability_cues

DIMS = {"text": 12, "audio": 5, "video": 20}
CLASSES = 4

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sequences(batch=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    features, mask = {}, {}
    for i, (m, d) in enumerate(sorted(DIMS.items())):
        steps = 3 + i
        features[m] = torch.randn(batch, steps, d, generator=gen)
        mask[m] = torch.arange(steps)[None] < (torch.arange(batch) % steps + 1)[:, None]
    return features, mask


def trained_like(module: ReliabilityCalibration) -> ReliabilityCalibration:
    torch.manual_seed(1)
    nn.init.normal_(module.scale_out.weight, std=0.5)
    nn.init.normal_(module.scale_out.bias, std=0.5)
    return module


@pytest.mark.parametrize("shift", [False, True])
def test_identity_when_attached(shift):
    features, mask = sequences()
    out = ReliabilityCalibration(DIMS, CLASSES, shift=shift)(features, mask)
    assert torch.equal(out.instance, torch.ones_like(out.instance))
    for m in DIMS:
        assert torch.equal(out.features[m], features[m])


def test_the_fused_model_is_unchanged_when_attached():
    features, mask = sequences()
    batch = {"features": features, "mask": mask}
    for backbone in ("late", "conv"):
        torch.manual_seed(0)
        plain = build_model(backbone, DIMS, CLASSES).eval()
        torch.manual_seed(0)
        calibrated = build_model(backbone, DIMS, CLASSES, method="calibration", calibration="reliability").eval()
        assert torch.allclose(plain(batch).logits, calibrated(batch).logits, atol=1e-6)


def test_inactive_or_missing_modality_gets_scale_one():
    features, mask = sequences()
    mask["audio"][0] = False  # sample 0: audio is all padding
    present = torch.ones(6, 3, dtype=torch.bool)
    present[1, 2] = False  # sample 1: video missing
    out = trained_like(ReliabilityCalibration(DIMS, CLASSES))(features, mask, present)
    assert out.instance[0, 0] == 1 and out.instance[1, 2] == 1
    assert torch.equal(out.scales["dimension"]["audio"][0], torch.ones(5))
    assert torch.equal(out.features["video"][1], features["video"][1])
    assert (out.instance[2:] != 1).all()  # the trained-like module does scale where there is something


def test_cues_do_not_depend_on_the_order_of_the_modalities():
    gen = torch.Generator().manual_seed(0)
    evidence = torch.randn(5, 4, CLASSES, generator=gen)
    active = torch.rand(5, 4, generator=gen) > 0.2
    cues = reliability_cues(evidence, active)
    order = torch.tensor([2, 0, 3, 1])
    assert torch.allclose(reliability_cues(evidence[:, order], active[:, order]), cues[:, order], atol=1e-6)


def test_cues_see_a_conflict_in_class_space():
    """Two modalities agree on class 0, the third says class 1: only the third gets low support and high conflict."""
    evidence = torch.tensor([[[9.0, 0, 0], [9.0, 0, 0], [0, 9.0, 0]]])
    support, others_agree, conflict = reliability_cues(evidence, torch.ones(1, 3, dtype=torch.bool))[0, :, 3:].T
    assert support[2] < 0.01 and support[0] > 0.45
    assert conflict[2] > 0.95 and conflict[0] < 0.05
    assert others_agree[2] > 0.99


def test_rank_loss_asks_the_more_trusted_sample_for_the_larger_scale():
    trust = torch.tensor([[0.9], [0.1]])
    active = torch.ones(2, 1, dtype=torch.bool)
    assert rank_loss(torch.tensor([[1.5], [0.5]]), trust, active) == 0  # ordered, by more than the margin
    assert rank_loss(torch.tensor([[0.5], [1.5]]), trust, active) > 1  # wrong way round
    assert rank_loss(torch.tensor([[0.5], [1.5]]), trust, torch.tensor([[True], [False]])) == 0


@pytest.mark.parametrize("scale_loss", ["rank", "tcp"])
def test_scale_supervision_ranks_the_corrupted_modality_lowest(scale_loss):
    """Labels in every modality but one corrupted per sample: after training, the corrupted one is scaled lowest."""
    torch.manual_seed(0)
    n, dims = 256, {"a": 6, "b": 6, "c": 6}
    target = torch.randint(0, CLASSES, (n,))
    prototypes = torch.randn(CLASSES, 6) * 2
    features = {m: prototypes[target] + 0.3 * torch.randn(n, 6) for m in dims}
    corrupted = torch.randint(0, 3, (n,))
    for i, m in enumerate(sorted(dims)):
        features[m][corrupted == i] = prototypes[(target[corrupted == i] + 1) % CLASSES]
    module = ReliabilityCalibration(dims, CLASSES, scale_loss=scale_loss, dropout=0.0)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    for _ in range(60):
        out = module(features)
        loss = module.loss(out, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    lowest = module.eval()(features).instance.argmin(1)
    assert (lowest == corrupted).float().mean() > 0.9


def test_gradients_reach_every_parameter_through_the_task_and_own_loss():
    features, mask = sequences()
    model = build_model("conv", DIMS, CLASSES, method="calibration", calibration="reliability")
    trained_like(model.calibration)
    batch = {"features": features, "mask": mask, "target": torch.arange(6) % CLASSES}
    out = model(batch)
    (nn.functional.cross_entropy(out.logits, batch["target"]) + out.aux_loss).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


def test_regression_evidence_is_a_gaussian_that_learns_which_modality_to_trust():
    """Regression: a mean and a log-variance per modality and a Gaussian NLL. With one informative
    modality (the target in one dim) and one of pure noise, the informative one ends with the smaller
    variance and the larger scale."""
    torch.manual_seed(0)
    n = 256
    y = torch.randn(n)
    good = torch.tensor([0.0, 1, -1, 1, -1, 1, -1, 1]) + 0.05 * torch.randn(n, 8)
    good[:, 0] = y  # a constant pattern beside it, so that the head's LayerNorm keeps y's magnitude
    features = {"good": good, "noise": torch.randn(n, 8)}
    module = ReliabilityCalibration({"good": 8, "noise": 8}, 1, dropout=0.0)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        loss = module.loss(module(features), y)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    out = module.eval()(features)
    assert out.evidence.shape == (n, 2, 2)
    assert losses[-1] < losses[0] - 1
    mean, log_var = out.evidence.detach().unbind(-1)  # modalities are sorted: "good" first
    assert (mean[:, 0] - y).abs().mean() < 0.1
    assert log_var[:, 0].mean() < log_var[:, 1].mean() - 1
    assert (out.instance[:, 0] > out.instance[:, 1]).float().mean() > 0.9
