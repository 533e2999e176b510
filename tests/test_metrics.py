import math

import pytest
import torch

from trainers.metrics import classification_metrics, regression_metrics

PREDS = [0, 1, 2, 2, 1, 0]
TARGETS = [0, 1, 1, 2, 1, 2]
# Per class (TP, FP, FN): 0 -> (1, 1, 0), F1 2/3; 1 -> (2, 0, 1), F1 4/5; 2 -> (1, 1, 1), F1 1/2.
MACRO_F1 = (2 / 3 + 4 / 5 + 1 / 2) / 3


def test_classification_from_predictions_and_from_logits():
    expected = {"accuracy": pytest.approx(4 / 6), "macro_f1": pytest.approx(MACRO_F1)}
    assert classification_metrics(PREDS, TARGETS) == expected
    logits = torch.nn.functional.one_hot(torch.tensor(PREDS), 3).float() * 5 - 1
    assert classification_metrics(logits, torch.tensor(TARGETS)) == expected


def test_regression_in_the_mosi_convention():
    preds = torch.tensor([2.6, -0.4, 0.2, -1.6, 0.0, 1.4])
    targets = torch.tensor([2.2, -1.0, 0.0, -2.0, 0.6, -0.2])
    got = regression_metrics(preds, targets)
    # has0: truth >= 0 = [T F T F T F], preds >= 0 = [T F T F T T]: 5/6 right.
    # F1 of T: P 3/4, R 1 -> 6/7; of F: P 1, R 2/3 -> 4/5; weighted by support 3 and 3.
    assert got["acc2_has0"] == pytest.approx(5 / 6)
    assert got["f1_has0"] == pytest.approx((6 / 7 + 4 / 5) / 2)
    # non0 drops the label 0.0: truth > 0 = [T F F T F], preds > 0 = [T F F F T]: 3/5 right.
    # F1 of T: (TP 1, FP 1, FN 1) -> 1/2, support 2; of F: (2, 1, 1) -> 2/3, support 3.
    assert got["acc2_non0"] == pytest.approx(3 / 5)
    assert got["f1_non0"] == pytest.approx((2 * 1 / 2 + 3 * 2 / 3) / 5)
    # acc7 rounds [3 0 0 -2 0 1] vs [2 -1 0 -2 1 0]; acc5 clips first: [2 0 0 -2 0 1] vs [2 -1 0 -2 1 0].
    assert got["acc7"] == pytest.approx(2 / 6)
    assert got["acc5"] == pytest.approx(3 / 6)
    assert got["mae"] == pytest.approx((0.4 + 0.6 + 0.2 + 0.4 + 0.6 + 1.6) / 6)
    # Pearson from centred sums: S_pt = 9.18667, S_pp = 10.67333, S_tt = 10.21333.
    assert got["corr"] == pytest.approx(9.186667 / math.sqrt(10.673333 * 10.213333), abs=1e-6)


def test_regression_edge_cases():
    got = regression_metrics([0.5, 0.5, 0.5], [0.0, 0.0, 0.0])
    assert got["corr"] == 0.0  # undefined for a constant side
    assert got["acc2_non0"] == got["f1_non0"] == 0.0  # no non-zero label to score
    assert got["acc2_has0"] == 1.0
    assert regression_metrics([[0.5], [-2.5]], [[1.0], [-2.0]])["acc7"] == 0.5  # [B, 1] works; round half to even
