"""Convergence in width: the Monte Carlo mean and the per-network spread of the kernels against the exact ones.

Two finite-width effects, each with a known rate:

* the *mean* of the empirical kernels over networks has an O(1/n) bias for networks with two or more hidden
  nonlinear layers (Dyer & Gur-Ari 2020; Hanin & Nica 2020), none with one hidden layer;
* a *single network's* kernel fluctuates around the limit with a spread of order n^{-1/2} (Jacot et al.
  2018, the kernel at initialization is a mean over n units; Hanin & Nica 2020 for its variance):
  ``spread_n = sqrt(E_s |Theta_s - K|_F^2) / |K|_F ~ C n^{-1/2}``.

:func:`convergence` measures both: the relative error of the mean with its Monte Carlo noise floor and the
fitted bias, and the spread at every width with the fitted exponent of ``spread_n ~ C n^p`` and its standard
error (from the spread of |Theta_s - K|^2 over the independent networks of each width, by the delta method;
inflated by the Birge ratio sqrt(chi2/dof) when the power law fits worse than the noise allows).
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from dataclasses import dataclass
from typing import Any, Sequence

import jax
import numpy as np

from kernelalg.backends._compile import kernel, normalize_get
from kernelalg.core import _errors as E
from kernelalg.core._layer import Layer
from kernelalg.finite._montecarlo import MonteCarlo, _key, _to64, extrapolate, monte_carlo

NO_WIDTH_FREEDOM = ("convergence(...): widths {widths} need at least two distinct values. "
                    "Fix: e.g. widths=(64, 128, 256, 512).")


@dataclass(frozen=True)
class SpreadFit:
    """Weighted least-squares fit ``log spread_n = c + exponent log n`` over the widths.

    Attributes:
        exponent: The fitted exponent p (theory: -1/2).
        stderr: Its standard error (inflated by sqrt(chi2/dof) when that exceeds 1).
        chi2: Weighted residual sum of squares of the fit.
        dof: Its degrees of freedom (widths - 2).
        intercept: c.
    """

    exponent: float
    stderr: float
    chi2: float
    dof: int
    intercept: float

    def interval(self, z: float = 3.0) -> tuple[float, float]:
        """exponent -+ z stderr."""
        return self.exponent - z * self.stderr, self.exponent + z * self.stderr


def fit_spread(widths: Sequence[int], spread: np.ndarray, se_log: np.ndarray) -> SpreadFit:
    """Fit ``log spread = c + p log n`` with weights 1 / se_log^2 (se_log: standard errors of log spread)."""
    x = np.stack([np.ones(len(widths)), np.log(np.asarray(widths, float))], axis=1)
    w = 1.0 / np.maximum(np.asarray(se_log, float), 1e-12) ** 2
    y = np.log(np.asarray(spread, float))
    cov = np.linalg.inv(x.T @ (w[:, None] * x))
    coef = cov @ (x.T @ (w * y))
    chi2 = float(np.sum(w * (y - x @ coef) ** 2))
    dof = len(widths) - 2
    birge = math.sqrt(max(1.0, chi2 / dof)) if dof > 0 else 1.0
    return SpreadFit(float(coef[1]), float(math.sqrt(cov[1, 1]) * birge), chi2, dof, float(coef[0]))


def network_spread(draws: np.ndarray, exact: np.ndarray) -> tuple[float, float]:
    """(spread, standard error of log spread): spread = sqrt(mean_s |draw_s - exact|_F^2) / |exact|_F over the
    independent networks s (delta method: se(log spread) = se(mean D^2) / (2 mean D^2))."""
    norm2 = max(float(np.sum(exact**2)), 1e-300)
    d2 = np.sum((draws - exact) ** 2, axis=tuple(range(1, draws.ndim))) / norm2
    mean = float(np.mean(d2))
    se = float(np.std(d2, ddof=1) / math.sqrt(len(d2)))
    return math.sqrt(mean), se / (2 * max(mean, 1e-300))


@dataclass(frozen=True)
class Convergence:
    """Monte Carlo estimates across widths against the exact kernels.

    Attributes:
        widths: The widths, increasing.
        estimates: One :class:`MonteCarlo` per width (without per-draw arrays).
        exact: {name: exact kernel array}.
        rel_error: {name: (len(widths),) relative Frobenius error |E_n - K|_F / |K|_F of the mean}.
        rel_noise: {name: (len(widths),) the Monte Carlo noise floor |SE_n|_F / |K|_F of that error}.
        extrapolated: {name: (a, stderr of a)} from the fit E_n = a + b/n (:func:`extrapolate`).
        bias_coefficient: {name: |b|_F / |K|_F}: the relative O(1/n) bias is about this over n.
        spread: {name: (len(widths),) per-network spread sqrt(mean_s |Theta_s - K|_F^2) / |K|_F}.
        spread_se: {name: (len(widths),) standard errors of log spread}.
        spread_fit: {name: :class:`SpreadFit`} of spread ~ C width^p (theory p = -1/2).
    """

    widths: tuple[int, ...]
    estimates: tuple[MonteCarlo, ...]
    exact: dict
    rel_error: dict
    rel_noise: dict
    extrapolated: dict
    bias_coefficient: dict
    spread: dict
    spread_se: dict
    spread_fit: dict

    def plot(self, path: str | None = None, title: str = "finite-width Monte Carlo vs exact kernel"):
        """Left: relative error of the mean vs width with the noise floor and fitted bias. Right: per-network
        spread vs width (+-2 SE) with the fitted power law and the n^-1/2 reference. Saves a PNG when ``path``
        is given; returns the matplotlib figure."""
        import matplotlib
        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.4))
        n = np.asarray(self.widths, dtype=float)
        for name in self.exact:
            line, = ax.loglog(n, self.rel_error[name], "o-", label=f"{name}: |mean - K| / |K|")
            c = line.get_color()
            ax.loglog(n, self.rel_noise[name], ":", color=c, label=f"{name}: Monte Carlo noise floor")
            ax.loglog(n, self.bias_coefficient[name] / n, "--", color=c, alpha=0.6,
                      label=f"{name}: fitted bias {self.bias_coefficient[name]:.3g}/n")
            s, se, fit = self.spread[name], self.spread_se[name], self.spread_fit[name]
            bx.errorbar(n, s, yerr=[s * (1 - np.exp(-2 * se)), s * (np.exp(2 * se) - 1)], fmt="o", ms=4, color=c,
                        label=f"{name}: per-network spread")
            bx.loglog(n, np.exp(fit.intercept) * n**fit.exponent, "-", color=c, lw=1,
                      label=f"{name}: fit n^({fit.exponent:.3f} +- {fit.stderr:.3f})")
            bx.loglog(n, s[-1] * (n / n[-1]) ** -0.5, "--", color=c, alpha=0.5, lw=1, label=f"{name}: n^-1/2")
        ax.set_xlabel("width n")
        ax.set_ylabel("relative error of the mean")
        ax.set_title("mean over networks: error vs noise + O(1/n) bias", fontsize=9)
        bx.set_xlabel("width n")
        bx.set_ylabel("sqrt(mean_s |Theta_s - K|^2) / |K|")
        bx.set_title("one network: spread around the exact kernel (+-2 SE)", fontsize=9)
        for a in (ax, bx):
            a.set_xscale("log")
            a.set_yscale("log")
            a.legend(fontsize=7)
        fig.suptitle(textwrap.fill(title, 130), fontsize=9)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig


def convergence(net: Layer, x1: Any, x2: Any = None, widths: Sequence[int] = (64, 128, 256, 512),
                samples: int = 64, key: Any = 0, *, get: Any = ("nngp", "ntk"), exact: Any = None,
                mask_constant: float | None = None, **kwargs: Any) -> Convergence:
    """Convergence study: Monte Carlo at each width vs the exact kernel (mean and per-network spread).

    Args:
        net: Architecture expression (NTK parametrization: its kernel must not depend on the widths).
        x1, x2: Inputs.
        widths: Hidden widths (at least two distinct).
        samples: Networks per width.
        key: PRNG key or int seed (each width gets its own subkey).
        get: Kernels to study.
        exact: Precomputed exact kernel (a ``ka.Kernel``); None computes it with ``ka.kernel`` in float64.
        mask_constant: Mask input positions whose every channel equals it (neural-tangents' ``mask_constant``;
            image networks and ``ka.Graphs``), in the exact kernel and in every Monte Carlo draw.
        **kwargs: Passed to :func:`monte_carlo` (per-draw arrays are kept only with ``keep_draws=True``).
    """
    names, _ = normalize_get(get)
    widths = tuple(sorted(int(w) for w in widths))
    if len(set(widths)) < 2:
        raise E.KernelalgError(NO_WIDTH_FREEDOM.format(widths=widths))
    keep = bool(kwargs.pop("keep_draws", False))
    if exact is None:
        exact = kernel(net, _to64(x1), None if x2 is None else _to64(x2), names, mask_constant=mask_constant)
    ex = {n: np.asarray(getattr(exact, n), dtype=np.float64) for n in names}
    keys = jax.random.split(_key(key), len(widths))
    ests = tuple(monte_carlo(net, x1, x2, w, samples, k, get=names, keep_draws=True, mask_constant=mask_constant,
                             **kwargs)
                 for w, k in zip(widths, keys))
    err, noise, extra, coef, spread, spread_se, fits = {}, {}, {}, {}, {}, {}, {}
    for n in names:
        norm = max(float(np.linalg.norm(ex[n])), 1e-300)
        err[n] = np.array([np.linalg.norm(e.get(n)[0] - ex[n]) / norm for e in ests])
        noise[n] = np.array([np.linalg.norm(e.get(n)[1]) / norm for e in ests])
        a, sa, b = extrapolate([e.get(n)[0] for e in ests], [e.get(n)[1] for e in ests], widths)
        extra[n] = (a, sa)
        coef[n] = float(np.linalg.norm(b) / norm)
        spread[n], spread_se[n] = map(np.array, zip(*(network_spread(e.draws[n], ex[n]) for e in ests)))
        fits[n] = fit_spread(widths, spread[n], spread_se[n])
    if not keep:
        ests = tuple(dataclasses.replace(e, draws={}) for e in ests)
    return Convergence(widths, ests, ex, err, noise, extra, coef, spread, spread_se, fits)
