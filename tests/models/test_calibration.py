"""Calibration and the teacher's confusion by EM, on simulated sources with a known truth."""

from __future__ import annotations

import numpy as np
import pytest

from models.calibration import calibrate, calibrate_logp, fit_temperature, label_indices, teacher_posterior


def test_temperature_is_fitted_on_validation_rows():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 3000)
    logits = rng.normal(size=(3000, 3))
    logits[np.arange(3000), y] += 1.0                      # true calibrated logits
    over = calibrate_logp(logits, 1 / 2.5)                 # an over-confident model (T = 0.4)
    t = fit_temperature(over, y)
    assert 2.0 <= t <= 3.0                                 # undoes the sharpening (true 2.5)
    assert fit_temperature(calibrate_logp(logits, 1.0), y) == pytest.approx(1.0, abs=0.2)


def test_teacher_posterior_recovers_the_teachers_confusion():
    rng = np.random.default_rng(1)
    n, k = 6000, 3
    y = rng.integers(0, k, n)
    # A calibrated model: its guess is right with probability 0.6 + 0.4 / 3, and says so.
    right = 0.6 + 0.4 / k
    p = np.full((n, k), (1 - right) / (k - 1))
    guess = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))
    p[np.arange(n), guess] = right
    true_confusion = np.array([[0.8, 0.1, 0.1], [0.3, 0.5, 0.2], [0.1, 0.1, 0.8]])
    teacher = np.array([rng.choice(k, p=true_confusion[c]) for c in y])
    teacher[:100] = -1                                     # unanswered: the model's probabilities
    q, confusion = teacher_posterior(p, teacher)
    assert np.abs(confusion - true_confusion).max() < 0.08
    assert np.allclose(q[:100], p[:100] / p[:100].sum(axis=1, keepdims=True))
    agree = (p.argmax(1) == teacher) & (teacher >= 0)
    est, true = q[agree, p.argmax(1)[agree]].mean(), (y[agree] == teacher[agree]).mean()
    assert abs(est - true) < 0.03                          # the estimated precision is close


def test_calibrate_keeps_missing_rows_missing_and_label_indices():
    p = np.array([[0.9, 0.1], [np.nan, np.nan]])
    out = calibrate(p, 2.0)
    assert np.isnan(out[1]).all() and out[0, 0] == pytest.approx(0.75)
    assert label_indices(["b", None, "z", "a"], ["a", "b"]).tolist() == [1, -1, -1, 0]
