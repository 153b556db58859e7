import math

import pytest
import torch

from iqa.config import DiffusionConfig
from iqa.schedule import BETA_MAX, alpha_bars, betas


def _closed_cosine(t: int, steps: int, s: float) -> float:
    def f(u: float) -> float:
        return math.cos((u / steps + s) / (1 + s) * math.pi / 2) ** 2
    return f(t) / f(0)


@pytest.mark.parametrize("steps", [10, 50, 2000])
def test_cosine_matches_closed_formula(steps):
    cfg = DiffusionConfig(schedule="cosine")
    ab = alpha_bars(cfg, steps)
    assert ab.shape == (steps + 1,) and ab.dtype == torch.float64
    assert ab[0].item() == 1.0
    # the last beta is clamped (closed form gives ᾱ_T = 0); all others are untouched
    for t in range(steps):
        assert ab[t].item() == pytest.approx(_closed_cosine(t, steps, cfg.cosine_s), rel=1e-9, abs=1e-12)
    assert 0 < ab[-1].item() < 1e-3
    assert torch.all(ab[1:] < ab[:-1])


def test_cosine_betas_are_clamped():
    b = betas(DiffusionConfig(schedule="cosine"), 50)
    assert b.shape == (50,)
    assert b.max().item() == pytest.approx(BETA_MAX)
    assert torch.all(b > 0)


def test_paper_noise_levels():
    cfg = DiffusionConfig(schedule="cosine")
    ab50, ab10 = alpha_bars(cfg, 50), alpha_bars(cfg, 10)
    assert ab50[5].item() == pytest.approx(0.972, abs=1e-3)
    assert ab50[10].item() == pytest.approx(0.899, abs=1e-3)
    assert ab10[1].item() == pytest.approx(0.972, abs=1e-3)
    assert ab10[2].item() == pytest.approx(0.899, abs=1e-3)


def test_linear_schedule():
    cfg = DiffusionConfig(schedule="linear", linear_start=1e-4, linear_end=2e-2)
    b = betas(cfg, 100)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(2e-2)
    ab = alpha_bars(cfg, 100)
    assert ab[0].item() == 1.0
    assert torch.allclose(ab[1:], torch.cumprod(1 - b, 0))
    assert ab[3].item() == pytest.approx((1 - b[0]) * (1 - b[1]) * (1 - b[2]))


def test_unknown_schedule_raises():
    with pytest.raises(ValueError, match="quadratic"):
        alpha_bars(DiffusionConfig(schedule="quadratic"), 10)


@pytest.mark.parametrize("steps", [0, -3, 2.5])
def test_bad_step_count_raises(steps):
    with pytest.raises(ValueError, match="steps"):
        alpha_bars(DiffusionConfig(), steps)
