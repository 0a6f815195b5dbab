"""Classification metrics from true label indices and predicted probabilities (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

CALIBRATION_BINS = 15


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, n_labels: int) -> np.ndarray:
    """[true label, predicted label] counts."""
    matrix = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); None without both classes."""
    positive = positive.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def calibration_bins(truth: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict]:
    """Per confidence bin (equal width over [0, 1]): count, mean confidence, accuracy of the top label."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == truth
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    out = []
    for k in range(bins):
        members = index == k
        count = int(members.sum())
        out.append(
            {
                "low": k / bins,
                "high": (k + 1) / bins,
                "count": count,
                "confidence": float(confidence[members].mean()) if count else None,
                "accuracy": float(correct[members].mean()) if count else None,
            }
        )
    return out


def expected_calibration_error(truth: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Top-label ECE: the count-weighted gap between confidence and accuracy over equal-width bins."""
    total = len(truth)
    return float(
        sum(
            b["count"] / total * abs(b["confidence"] - b["accuracy"])
            for b in calibration_bins(truth, probabilities, bins)
            if b["count"]
        )
    )


def classification_metrics(truth: np.ndarray, probabilities: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """accuracy, macro_f1, per_class precision/recall/f1/support, ece, confusion matrix; auc when binary.

    ``truth`` holds label indices into ``labels``; the AUC takes ``labels[1]`` as the positive class.
    """
    truth = np.asarray(truth, dtype=np.int64)
    if len(truth) == 0:
        raise ValueError("no rows to measure")
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(truth, predicted, len(labels))
    true_positive = np.diag(matrix).astype(np.float64)
    support, predicted_count = matrix.sum(axis=1), matrix.sum(axis=0)
    precision = np.divide(true_positive, predicted_count, out=np.zeros_like(true_positive), where=predicted_count > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(both), where=both > 0)
    present = support > 0  # macro-F1 over the labels that occur in the data, as sklearn does with labels=None
    metrics: dict[str, Any] = {
        "rows": len(truth),
        "accuracy": round(float((predicted == truth).mean()), 4),
        "macro_f1": round(float(f1[present | (predicted_count > 0)].mean()), 4),
        "ece": round(expected_calibration_error(truth, probabilities), 4),
        "per_class": {
            label: {
                "precision": round(float(precision[k]), 4),
                "recall": round(float(recall[k]), 4),
                "f1": round(float(f1[k]), 4),
                "support": int(support[k]),
            }
            for k, label in enumerate(labels)
        },
        "labels": list(labels),
        "confusion_matrix": matrix.tolist(),
    }
    if len(labels) == 2:
        auc = roc_auc(truth == 1, probabilities[:, 1])
        metrics["auc"] = None if auc is None else round(auc, 4)
    return metrics
