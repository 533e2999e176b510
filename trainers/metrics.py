"""Evaluation metrics. Regression follows the CMU-MOSI/MOSEI convention of MulT and MMSA."""

import math

import numpy as np
from sklearn.metrics import accuracy_score, f1_score


def to_numpy(values) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def json_safe(value):
    """A copy of nested dicts and lists with NaN and infinite floats as None (JSON null): JSON has no
    spelling for them, and json.dumps would write NaN, which strict readers refuse."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def classification_metrics(logits_or_preds, targets) -> dict[str, float]:
    """Logits/probabilities [N, C] (argmax taken) or class predictions [N]."""
    preds, targets = to_numpy(logits_or_preds), to_numpy(targets)
    if preds.ndim == 2:
        preds = preds.argmax(1)
    return {
        "accuracy": float(accuracy_score(targets, preds)),
        "macro_f1": float(f1_score(targets, preds, average="macro", zero_division=0)),
    }


def regression_metrics(preds, targets) -> dict[str, float]:
    """Sentiment scores in [-3, 3].

    acc2_has0 / f1_has0: non-negative vs negative over all samples; acc2_non0 / f1_non0: positive vs
    negative over the samples whose label is not 0; F1 is weighted; acc7 / acc5: clip to [-3, 3] / [-2, 2]
    and round (numpy's round-half-to-even, as the reference code); corr: Pearson (0 when either side is
    constant, where it is undefined).
    """
    preds, targets = to_numpy(preds).reshape(-1).astype(np.float64), to_numpy(targets).reshape(-1).astype(np.float64)
    non0 = targets != 0

    def binary(truth, guess) -> tuple[float, float]:
        if truth.size == 0:
            return 0.0, 0.0
        return float(accuracy_score(truth, guess)), float(f1_score(truth, guess, average="weighted", zero_division=0))

    acc2_has0, f1_has0 = binary(targets >= 0, preds >= 0)
    acc2_non0, f1_non0 = binary(targets[non0] > 0, preds[non0] > 0)
    constant = preds.std() == 0 or targets.std() == 0
    return {
        "acc2_has0": acc2_has0,
        "acc2_non0": acc2_non0,
        "f1_has0": f1_has0,
        "f1_non0": f1_non0,
        "acc7": float(np.mean(np.round(np.clip(preds, -3, 3)) == np.round(np.clip(targets, -3, 3)))),
        "acc5": float(np.mean(np.round(np.clip(preds, -2, 2)) == np.round(np.clip(targets, -2, 2)))),
        "mae": float(np.mean(np.abs(preds - targets))),
        "corr": 0.0 if constant else float(np.corrcoef(preds, targets)[0, 1]),
    }
