"""Correlation metrics against scipy.stats, the logistic fit, edge cases and the split summary."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from iqa.metrics import Correlations, correlations, fit_logistic, logistic4, summarise


def test_matches_scipy_on_known_data():
    rng = np.random.default_rng(0)
    target = rng.uniform(0, 1, 60)
    pred = target + rng.normal(0, 0.15, 60)
    c = correlations(pred, target)
    assert c.n == 60
    assert c.srcc == pytest.approx(stats.spearmanr(pred, target).statistic)
    assert c.krcc == pytest.approx(stats.kendalltau(pred, target).statistic)
    assert c.plcc == pytest.approx(stats.pearsonr(pred, target).statistic)
    assert c.rmse == pytest.approx(math.sqrt(np.mean((pred - target) ** 2)))
    assert 0.8 < c.srcc < 1 and c.logistic_params is not None
    assert any("raw" in n and "logistic" in n for n in c.notes)  # says which PLCC is which


def test_small_hand_checked_case():
    c = correlations([1, 2, 3, 4], [1, 3, 2, 4])
    assert c.srcc == pytest.approx(0.8) and c.krcc == pytest.approx(4 / 6)
    assert c.rmse == pytest.approx(math.sqrt(0.5))


def test_logistic_fit_linearises_a_monotonic_nonlinear_relation():
    rng = np.random.default_rng(1)
    pred = np.sort(rng.uniform(-4, 4, 80))
    target = logistic4(pred, 5.0, 1.0, 0.5, 0.8) + rng.normal(0, 0.02, 80)
    c = correlations(pred, target)
    assert c.plcc < 0.98 and c.plcc_logistic > 0.999
    assert c.rmse_logistic < c.rmse
    b1, b2, b3, b4 = c.logistic_params
    assert b1 == pytest.approx(5.0, abs=0.1) and b2 == pytest.approx(1.0, abs=0.1) and b3 == pytest.approx(0.5, abs=0.1)


def test_decreasing_relation_gives_negative_correlations():
    x = np.linspace(0, 1, 20)
    c = correlations(x, 1 - x ** 2)
    assert c.srcc == pytest.approx(-1.0) and c.krcc == pytest.approx(-1.0)
    assert c.plcc < -0.9  # raw Pearson keeps the sign
    assert c.plcc_logistic > 0.99 and c.logistic_params[0] < c.logistic_params[1]  # decreasing fit
    assert any("decreasing" in n for n in c.notes)


def test_logistic4_is_monotonic_between_its_asymptotes():
    x = np.linspace(-50, 50, 101)
    y = logistic4(x, 3.0, -1.0, 0.0, 2.0)
    assert np.all(np.diff(y) >= 0) and y[0] == pytest.approx(-1.0) and y[-1] == pytest.approx(3.0)
    assert logistic4(np.array([0.0]), 3.0, -1.0, 0.0, 2.0)[0] == pytest.approx(1.0)


def test_constant_predictions_give_nan_with_a_note_and_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = correlations([0.5, 0.5, 0.5, 0.5], [0.1, 0.4, 0.2, 0.9])
    assert math.isnan(c.srcc) and math.isnan(c.krcc) and math.isnan(c.plcc) and math.isnan(c.plcc_logistic)
    assert c.rmse == pytest.approx(math.sqrt(np.mean((0.5 - np.array([0.1, 0.4, 0.2, 0.9])) ** 2)))
    assert any("predictions are constant" in n for n in c.notes)


def test_constant_targets_give_nan_with_a_note():
    c = correlations([0.1, 0.2, 0.3], [1.0, 1.0, 1.0])
    assert math.isnan(c.srcc) and any("targets are constant" in n for n in c.notes)


def test_nan_predictions_give_nan_with_a_note():
    c = correlations([0.1, float("nan"), 0.3, float("inf")], [0.2, 0.3, 0.4, 0.5])
    assert all(math.isnan(getattr(c, m)) for m in ("srcc", "krcc", "plcc", "plcc_logistic", "rmse"))
    assert any("2 of 4 predictions are NaN" in n for n in c.notes)


def test_three_pairs_work_without_the_logistic_fit():
    c = correlations([1, 2, 3], [1, 3, 2])
    assert c.srcc == pytest.approx(0.5) and c.plcc == pytest.approx(0.5)
    assert math.isnan(c.plcc_logistic) and any("at least 4 pairs" in n for n in c.notes)


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="at least 3"):
        correlations([0.1, 0.2], [0.3, 0.4])
    with pytest.raises(ValueError, match="pred has 3 values but target has 4"):
        correlations([1, 2, 3], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="target holds 1 NaN"):
        correlations([1, 2, 3], [1, float("nan"), 3])


def test_fit_logistic_returns_none_when_it_cannot_converge(monkeypatch):
    from scipy import optimize

    def fail(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr(optimize, "curve_fit", fail)
    assert fit_logistic(np.arange(5.0), np.arange(5.0)) is None
    c = correlations([1, 2, 3, 4], [1, 3, 2, 4])
    assert math.isnan(c.plcc_logistic) and c.srcc == pytest.approx(0.8)
    assert any("did not converge" in n for n in c.notes)


def make(srcc: float, plcc: float = 0.5) -> Correlations:
    return Correlations(srcc=srcc, krcc=srcc / 2, plcc=plcc, plcc_logistic=plcc, rmse=0.1, n=10)


def test_summarise_median_mean_std_and_nan_skipping():
    s = summarise([make(0.9), make(0.8), make(0.7), make(float("nan")), make(0.95)])
    assert s["srcc"].median == pytest.approx(0.85) and s["srcc"].count == 4
    assert s["srcc"].mean == pytest.approx(np.mean([0.9, 0.8, 0.7, 0.95]))
    assert s["srcc"].std == pytest.approx(np.std([0.9, 0.8, 0.7, 0.95], ddof=1))
    assert s["plcc"].std == 0.0 and s["krcc"].median == pytest.approx(0.425)
    assert s["rmse_logistic"].count == 0 and math.isnan(s["rmse_logistic"].mean)
    single = summarise([make(0.9)])
    assert single["srcc"].std == 0.0 and single["srcc"].median == pytest.approx(0.9)
    with pytest.raises(ValueError, match="no results"):
        summarise([])
