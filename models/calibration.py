"""Calibration and source combination: temperature scaling, and a teacher's confusion by EM.

Plain numpy, no Prefect: the mining stage uses these to estimate the precision of pseudo-labels,
and the re-ranking stage to combine the final models with the teacher.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TEMPERATURES = tuple(np.linspace(0.25, 4.0, 76))


def fit_temperature(p: np.ndarray, y: np.ndarray, grid: Sequence[float] = TEMPERATURES) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(log p / T) on
    labelled rows (`p`: probabilities, `y`: true label indices): calibration on validation folds."""
    logp = np.log(np.clip(p, 1e-8, 1.0))
    rows = np.arange(len(y))

    def nll(t: float) -> float:
        q = calibrate_logp(logp, t)
        return float(-np.log(q[rows, y] + 1e-12).mean())

    return float(min(grid, key=nll)) if len(y) else 1.0


def calibrate_logp(logp: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logp / T), row-wise."""
    z = logp / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def calibrate(p: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities re-tempered (rows with a NaN stay NaN)."""
    out = np.full_like(p, np.nan, dtype=np.float64)
    known = ~np.isnan(p).any(axis=1)
    out[known] = calibrate_logp(np.log(np.clip(p[known], 1e-8, 1.0)), temperature)
    return out


def teacher_posterior(p_model: np.ndarray, teacher: np.ndarray, iterations: int = 50, smoothing: float = 1.0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(posterior (N, L), teacher confusion (L, L), rows = true label): EM in the manner of Dawid
    and Skene, each clip's prior being the model's calibrated probabilities `p_model` and the
    teacher an annotator with an unknown confusion matrix. `teacher`: the teacher's label index
    per clip, -1 where it gave none (the posterior is then the model's)."""
    n, k = p_model.shape
    answered = teacher >= 0
    confusion = np.full((k, k), 0.1 / k) + 0.9 * np.eye(k)
    q = p_model.copy()
    for _ in range(iterations):
        q = p_model.copy()
        q[answered] *= confusion[:, teacher[answered]].T
        q /= q.sum(axis=1, keepdims=True).clip(1e-12)
        counts = np.full((k, k), smoothing / k)
        for a in range(k):
            counts[:, a] += q[teacher == a].sum(axis=0)
        new = counts / counts.sum(axis=1, keepdims=True)
        if np.allclose(new, confusion, atol=1e-6):
            break
        confusion = new
    return q, confusion


def label_indices(said: Sequence, labels: Sequence[str]) -> np.ndarray:
    """Label index per entry, -1 where there is none or it is not one of `labels`."""
    index = {lab: i for i, lab in enumerate(labels)}
    return np.array([index.get(s, -1) if isinstance(s, str) else -1 for s in said], dtype=int)
