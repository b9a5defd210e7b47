"""Evaluation as the MER2025 ranking does it: weighted F1 first (sklearn's average="weighted")."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score


def evaluate(truth: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict:
    """weighted_f1, accuracy, macro_f1, recall per label, confusion matrix (rows: truth)."""
    labels = list(labels)
    present = [lab for lab in labels if lab in set(truth) | set(pred)]
    recall = recall_score(truth, pred, labels=present, average=None, zero_division=0)
    return {
        "n": len(truth),
        "weighted_f1": float(f1_score(truth, pred, labels=present, average="weighted", zero_division=0)),
        "accuracy": float(accuracy_score(truth, pred)),
        "macro_f1": float(f1_score(truth, pred, labels=present, average="macro", zero_division=0)),
        "recall": {lab: float(r) for lab, r in zip(present, np.atleast_1d(recall), strict=True)},
        "confusion": {"labels": labels, "matrix": confusion_matrix(truth, pred, labels=labels).tolist()},
    }
