"""Agreement between predicted quality and human scores: SRCC, KRCC, PLCC, RMSE.

PLCC is given twice, and the field says which: `plcc` is Pearson's r on the raw predictions;
`plcc_logistic` is Pearson's r after mapping the predictions through the 4-parameter logistic
fitted to the targets (VQEG practice), whose parameters are kept in `logistic_params`.
`summarise` reduces the per-split results of the paper's 10-split protocol to
median and mean ± std.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
from scipy import optimize, special, stats

MIN_PAIRS = 3
LOGISTIC_PARAMS = 4  # the fit needs more pairs than this to be meaningful; at least this many to run
LOGISTIC_NAME = "4-parameter logistic f(x) = (b1 - b2) * sigmoid((x - b3) / |b4|) + b2"
LOGISTIC_MAX_EVALS = 10_000
SCALE_EPS = 1e-12  # keeps |b4| away from 0 and guards spread checks
STD_DDOF = 1  # spread across splits is a sample standard deviation
METRICS = ("srcc", "krcc", "plcc", "plcc_logistic", "rmse", "rmse_logistic")


@dataclass
class Correlations:
    """Agreement of `n` predictions with their targets. NaN where undefined (see `notes`)."""

    srcc: float  # Spearman rank correlation
    krcc: float  # Kendall rank correlation (tau-b)
    plcc: float  # Pearson correlation of the raw predictions (no fit)
    plcc_logistic: float  # Pearson correlation after the 4-parameter logistic fit
    rmse: float  # root-mean-square error of the raw predictions (same scale as the targets)
    n: int
    notes: list[str] = field(default_factory=list)
    rmse_logistic: float = float("nan")  # RMSE after the logistic fit
    logistic_params: tuple[float, float, float, float] | None = None  # (b1, b2, b3, b4) of the fit

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """One-line text: 'SRCC 0.912  KRCC ...  PLCC(raw) ...  PLCC(logistic-4) ...'."""
        return (f"SRCC {self.srcc:.4f}  KRCC {self.krcc:.4f}  PLCC(raw) {self.plcc:.4f}  "
                f"PLCC(logistic-4) {self.plcc_logistic:.4f}  RMSE {self.rmse:.4f}  n={self.n}")


@dataclass
class MetricSummary:
    """One metric over several splits; NaN results are left out and counted in `count`."""

    median: float
    mean: float
    std: float
    count: int  # finite values used


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """The monotonic 4-parameter logistic: from b2 (x -> -inf) to b1 (x -> +inf), centre b3, scale |b4|."""
    return (b1 - b2) * special.expit((x - b3) / (abs(b4) + SCALE_EPS)) + b2


def fit_logistic(pred: np.ndarray, target: np.ndarray) -> tuple[float, float, float, float] | None:
    """Least-squares fit of `logistic4` mapping pred -> target; None when it does not converge
    or there are fewer pairs than parameters."""
    if pred.size < LOGISTIC_PARAMS:
        return None
    p0 = [float(target.max()), float(target.min()), float(np.mean(pred)), float(np.std(pred)) or 1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optimize.OptimizeWarning)  # covariance unused
        try:
            params, _ = optimize.curve_fit(logistic4, pred, target, p0=p0, maxfev=LOGISTIC_MAX_EVALS)
        except (RuntimeError, ValueError):
            return None
    return tuple(float(p) for p in params) if np.all(np.isfinite(params)) else None


def _is_constant(x: np.ndarray) -> bool:
    return float(np.ptp(x)) <= SCALE_EPS * max(1.0, float(np.max(np.abs(x))))


def correlations(pred: Sequence[float] | np.ndarray, target: Sequence[float] | np.ndarray) -> Correlations:
    """SRCC, KRCC, PLCC (raw and after a 4-parameter logistic fit) and RMSE of `pred` vs `target`.

    pred, target: (N,) arrays, N >= 3. Non-finite or constant predictions give NaN correlations
    with a note rather than an error; a length mismatch, N < 3 or non-finite targets raise ValueError.
    """
    p = np.asarray(pred, dtype=np.float64).ravel()
    t = np.asarray(target, dtype=np.float64).ravel()
    if p.size != t.size:
        raise ValueError(f"pred has {p.size} values but target has {t.size}; they must pair up")
    if p.size < MIN_PAIRS:
        raise ValueError(f"need at least {MIN_PAIRS} (prediction, target) pairs to correlate, got {p.size}")
    if not np.all(np.isfinite(t)):
        raise ValueError(f"target holds {int((~np.isfinite(t)).sum())} NaN/inf value(s); check the labels")

    nan = float("nan")
    notes = [f"plcc: Pearson on raw predictions; plcc_logistic: Pearson after the {LOGISTIC_NAME}"]
    bad = int((~np.isfinite(p)).sum())
    if bad:
        notes.append(f"{bad} of {p.size} predictions are NaN/inf: every metric is NaN")
        return Correlations(nan, nan, nan, nan, nan, int(p.size), notes)

    rmse = float(np.sqrt(np.mean((p - t) ** 2)))
    if _is_constant(p) or _is_constant(t):
        which = "predictions" if _is_constant(p) else "targets"
        notes.append(f"{which} are constant: correlations are undefined (NaN)")
        return Correlations(nan, nan, nan, nan, rmse, int(p.size), notes)

    srcc = float(stats.spearmanr(p, t).statistic)
    krcc = float(stats.kendalltau(p, t).statistic)
    plcc = float(stats.pearsonr(p, t).statistic)
    params = fit_logistic(p, t)
    plcc_log = rmse_log = nan
    if params is None and p.size < LOGISTIC_PARAMS:
        notes.append(f"logistic fit needs at least {LOGISTIC_PARAMS} pairs: plcc_logistic is NaN")
    elif params is None:
        notes.append("logistic fit did not converge: plcc_logistic is NaN")
    else:
        mapped = logistic4(p, *params)
        if _is_constant(mapped):
            notes.append("logistic fit collapsed to a constant: plcc_logistic is NaN")
        else:
            plcc_log = float(stats.pearsonr(mapped, t).statistic)
        rmse_log = float(np.sqrt(np.mean((mapped - t) ** 2)))
        if params[0] < params[1]:
            notes.append("the fitted logistic is decreasing (predictions run opposite to the targets): "
                         "plcc_logistic is positive when the fit is good; srcc / plcc keep the sign")
    return Correlations(srcc, krcc, plcc, plcc_log, rmse, int(p.size), notes,
                        rmse_logistic=rmse_log, logistic_params=params)


def summarise(results: Sequence[Correlations]) -> dict[str, MetricSummary]:
    """Median, mean and std of each metric over `results` (e.g. one per split), keyed by metric name."""
    if not results:
        raise ValueError("nothing to summarise: no results given")
    out = {}
    for name in METRICS:
        values = np.array([getattr(r, name) for r in results], dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            out[name] = MetricSummary(float("nan"), float("nan"), float("nan"), 0)
            continue
        std = float(np.std(values, ddof=STD_DDOF)) if values.size > STD_DDOF else 0.0
        out[name] = MetricSummary(float(np.median(values)), float(np.mean(values)), std, int(values.size))
    return out
