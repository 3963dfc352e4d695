"""Power-law fits with confidence intervals, and the warnings of the spectral analysis.

A power law y ~ A x^{slope} is fitted by least squares on (log x, log y). Two uncertainties are reported:

* statistical: the 95% Student-t interval of the least-squares slope, slope +- t_{0.975, m-2} se with
  se^2 = (residual variance) / sum (log x - mean)^2 (assumes independent residuals; spectra and tail sums
  have correlated residuals, so this part alone is optimistic);
* systematic: the slopes fitted separately on the lower and upper halves of the range (in log x). Their
  difference, the *drift*, is what a fit range that has not reached the asymptotic regime shows (the local
  slope still moves with the range); the reported interval ``ci`` covers the t-interval and both half slopes.

When the drift is larger than both the statistical spread of the two half slopes (2 sigma) and 5% of the
slope, a :class:`FitRangeWarning` says so, with the fix (move the range up, or add correction terms).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from kernelalg.core import _errors as E


class SpectralWarning(UserWarning):
    """A degenerate case of a spectral analysis (null-space mass, plateaus, precision floors)."""


class FitRangeWarning(SpectralWarning):
    """A power-law fit whose slope drifts with the fit range (range not in the asymptotic regime)."""


TOO_FEW = ("fit_power_law{what}: {m} usable points in the range (need >= 6 positive values). Fix: widen the range "
           "or use more points/degrees.")
DRIFT = ("fit{what}: the log-log slope drifts with the range: {s1:.3f} on [{a:.3g}, {m:.3g}] vs {s2:.3f} on "
         "[{m:.3g}, {b:.3g}] (overall {s:.3f}); the range has not reached the asymptotic regime, so the exponent is "
         "uncertain by about {d:.2f}. Fix: fit at larger x (more degrees / points), or add 1/k correction terms "
         "(Spectrum.fit(corrections=2)).")


@dataclass(frozen=True)
class SlopeFit:
    """A log-log least-squares fit y ~ exp(intercept) x^slope with its uncertainties.

    Attributes:
        slope: Fitted exponent.
        intercept: log of the prefactor.
        stderr: Least-squares standard error of the slope.
        ci: 95% interval covering the Student-t interval and the two half-range slopes.
        halves: Slopes fitted on the lower and upper halves of the range (in log x).
        drift: halves[1] - halves[0].
        x_range: (first, last) x used.
        points: Number of points used.
    """

    slope: float
    intercept: float
    stderr: float
    ci: tuple[float, float]
    halves: tuple[float, float]
    drift: float
    x_range: tuple[float, float]
    points: int

    @property
    def asymptotic(self) -> bool:
        """False when the drift is significant (see the module docstring)."""
        return not _drifts(self)

    def __call__(self, x: Any) -> np.ndarray:
        return np.exp(self.intercept) * np.asarray(x, dtype=np.float64) ** self.slope

    def __str__(self) -> str:
        return f"{self.slope:.3f} [{self.ci[0]:.3f}, {self.ci[1]:.3f}]"


def _ols(lx: np.ndarray, ly: np.ndarray) -> tuple[float, float, float]:
    a = np.stack([np.ones_like(lx), lx], axis=1)
    coef, *_ = np.linalg.lstsq(a, ly, rcond=None)
    res = ly - a @ coef
    dof = max(len(lx) - 2, 1)
    sxx = float(np.sum((lx - lx.mean()) ** 2))
    se = float(np.sqrt(np.sum(res ** 2) / dof / sxx)) if sxx > 0 else np.inf
    return float(coef[1]), float(coef[0]), se


def _drifts(fit: SlopeFit) -> bool:
    spread = 2.0 * fit.stderr * np.sqrt(8.0)  # se of a half-range slope ~ sqrt(8) x the full-range se
    return abs(fit.drift) > max(spread, 0.05 * abs(fit.slope))


def fit_power_law(x: Any, y: Any, xmin: float | None = None, xmax: float | None = None, *, what: str = "",
                  warn: bool = True) -> SlopeFit:
    """Fit y ~ A x^slope on xmin <= x <= xmax (positive finite y only), with a 95% interval and drift check.

    Args:
        x: Abscissae (> 0), e.g. degrees k or eigenvalue indices i.
        y: Values, e.g. eigenvalues or tail masses (non-positive entries are left out).
        xmin: Smallest x used (default: all).
        xmax: Largest x used (default: all).
        what: Name of the quantity, for messages.
        warn: Emit a :class:`FitRangeWarning` when the slope drifts with the range.

    Returns:
        A :class:`SlopeFit`.

    Raises:
        KernelalgError: fewer than 6 usable points.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    sel = (x > 0) & np.isfinite(y) & (y > 0)
    if xmin is not None:
        sel &= x >= xmin
    if xmax is not None:
        sel &= x <= xmax
    label = f" ({what})" if what else ""
    if np.count_nonzero(sel) < 6:
        raise E.KernelalgError(TOO_FEW.format(what=label, m=int(np.count_nonzero(sel))))
    lx, ly = np.log(x[sel]), np.log(y[sel])
    slope, intercept, se = _ols(lx, ly)
    mid = 0.5 * (lx.min() + lx.max())
    lo, hi = lx <= mid, lx >= mid
    if min(np.count_nonzero(lo), np.count_nonzero(hi)) < 3:  # points bunched at one end: split by count
        order = np.argsort(lx)
        lo = np.zeros_like(lx, dtype=bool)
        lo[order[: len(lx) // 2 + 1]] = True
        hi = ~lo
        hi[order[len(lx) // 2]] = True
    s1, s2 = _ols(lx[lo], ly[lo])[0], _ols(lx[hi], ly[hi])[0]
    tq = float(special.stdtrit(max(len(lx) - 2, 1), 0.975))  # Student t quantile
    ci = (min(slope - tq * se, s1, s2), max(slope + tq * se, s1, s2))
    fit = SlopeFit(slope, intercept, se, ci, (s1, s2), s2 - s1, (float(np.exp(lx.min())), float(np.exp(lx.max()))),
                   int(len(lx)))
    if warn and _drifts(fit):
        warnings.warn(DRIFT.format(what=label, s1=s1, s2=s2, s=slope, a=fit.x_range[0], b=fit.x_range[1],
                                   m=float(np.exp(mid)), d=abs(s2 - s1)), FitRangeWarning, stacklevel=3)
    return fit
