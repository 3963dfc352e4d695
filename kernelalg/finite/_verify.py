"""``ka.verify``: the exact kernel against Monte Carlo over finite-width networks, with z-scores and a plot.

Test statistic, per kernel entry (the upper triangle when x2 is None):

    z = (estimate - exact) / stderr,   pass  iff  |estimate - exact| <= z_threshold * stderr + allowance.

The estimate is the width-extrapolated Monte Carlo mean (weighted fit E_n = K + b/n over the widths, by
default n and 2n: Richardson's 2 E_2n - E_n, which removes the O(1/n) finite-width bias of networks with
two or more hidden nonlinear layers; Dyer & Gur-Ari 2020, Hanin & Nica 2020). Its remainder is O(1/n^2);
the allowance for it is ``remainder`` times the observed shift |E_n - E_2n| (the shift is b/(2n), the
remainder about c/(2n^2); with c ~ b^2 their ratio is about the relative bias b/n itself, far below the
default 0.25 in the asymptotic regime; tests/test_montecarlo.py checks the fit to within 5 SE of the exact
kernel from widths as small as 4). Networks
whose kernel depends on the declared widths (standard parametrization) are checked at one width with an
optional ``bias_rtol * |exact|`` allowance (zero by default: one hidden layer is unbiased at any width).

The entries are not independent: every entry is a mean over the same networks, so the z-scores of one run
share the networks' common fluctuations (their histogram can sit visibly off N(0, 1) without anything
being wrong, and its spread says little). The *decorrelated* test accounts for it: per network s, the
kernel's components along the exact kernel's top ``directions`` singular pairs, g_s = (u_j^T Theta_s v_j)_j,
are independent across networks; their (width-extrapolated) mean against the exact values sigma_j gives
Hotelling's T^2 = d^T C^{-1} d with C the covariance of the mean estimated from the networks, referred to
F(k, nu - k + 1) with nu = (networks per width) - 1 (the smallest count when widths differ: conservative for
unequal covariances, cf. Yao 1965; Hotelling 1931). The deviation d is first shrunk by the same remainder and
bias allowances as the entries. It passes when its p-value is at least that of one entry at
``z_threshold`` (two-sided normal tail, 5.7e-7 at 5).
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from dataclasses import dataclass
from typing import Any, Sequence

import jax
import numpy as np
from scipy import special

from kernelalg.backends._compile import kernel, normalize_get
from kernelalg.core._errors import KernelalgError
from kernelalg.core._layer import Layer, as_layer
from kernelalg.finite._montecarlo import MonteCarlo, _floor, _key, _to64, extrapolate, monte_carlo, width_dependent
from kernelalg.layers._surrogate import exact_jumps

EXACT_JUMP = ("ka.verify: {net} has a surrogate layer at m=None (exact sign/step). Its finite-width twins have a "
              "true derivative 0 almost everywhere there, so their empirical NTK is the readout term alone and "
              "cannot estimate the SG-NTK (the m -> infinity limit of the finite-m kernels). Fix: verify the limit "
              "through finite sharpness, ka.verify_sharpness_limit(net, x), or one sharpness, "
              "ka.verify(ka.with_sharpness(net, m), x); get='nngp' alone is fine at m=None.")


@dataclass(frozen=True)
class Decorrelated:
    """Hotelling test of one kernel along the exact kernel's top singular directions (see the module doc).

    Attributes:
        exact: (k,) exact components sigma_j = u_j^T K v_j.
        estimate: (k,) width-extrapolated Monte Carlo mean of u_j^T Theta_s v_j.
        stderr: (k,) standard errors of ``estimate`` (diagonal of C).
        t2: Hotelling's T^2 of the deviation after the allowances.
        dof: (k, nu - k + 1) of the F reference distribution.
        p_value: P(F >= observed).
        mean_z: Mean of the tested entries' z-scores, with ``mean_z_se``, its standard error from the spread of
            per-network means (descriptive: why the z histogram may sit off N(0, 1)).
    """

    exact: np.ndarray
    estimate: np.ndarray
    stderr: np.ndarray
    t2: float
    dof: tuple[int, int]
    p_value: float
    mean_z: float
    mean_z_se: float


@dataclass(frozen=True)
class Verification:
    """Exact vs Monte Carlo, entry by entry.

    Attributes:
        net: repr of the architecture.
        exact, estimate, stderr, allowance, z: {name: array} (``z`` = (estimate - exact) / stderr).
        widths, samples: Monte Carlo settings.
        z_threshold: Pass threshold in standard errors.
        entries: Boolean mask of the entries tested (upper triangle for a symmetric kernel).
        estimates: The per-width :class:`MonteCarlo` results (without per-draw arrays).
        decorrelated: {name: :class:`Decorrelated`} (empty with ``directions=0``).
        p_threshold: Pass threshold of the decorrelated p-values (the two-sided normal tail at z_threshold).
        passed: True when every tested entry is within tolerance and every decorrelated p >= p_threshold.
    """

    net: str
    exact: dict
    estimate: dict
    stderr: dict
    allowance: dict
    z: dict
    widths: tuple[int, ...]
    samples: int
    z_threshold: float
    entries: np.ndarray
    estimates: tuple[MonteCarlo, ...]
    decorrelated: dict
    p_threshold: float
    passed: bool

    @property
    def max_abs_z(self) -> float:
        return max(float(np.max(np.abs(self.z[n][self._mask(n)]))) for n in self.z)

    def _mask(self, name: str) -> np.ndarray:
        arr = self.exact[name]
        return np.broadcast_to(self.entries.reshape(self.entries.shape + (1,) * (arr.ndim - 2)), arr.shape)

    def within(self, name: str) -> np.ndarray:
        """Entrywise pass mask of kernel ``name``."""
        tol = self.z_threshold * self.stderr[name] + self.allowance[name]
        return np.abs(self.estimate[name] - self.exact[name]) <= tol

    def failures(self) -> list[tuple]:
        """(name, index, exact, estimate, stderr, allowance) of every tested entry out of tolerance."""
        out = []
        for n in self.exact:
            bad = self._mask(n) & ~self.within(n)
            for idx in zip(*np.nonzero(bad)):
                out.append((n, tuple(int(i) for i in idx), float(self.exact[n][idx]), float(self.estimate[n][idx]),
                            float(self.stderr[n][idx]), float(self.allowance[n][idx])))
        return out

    def summary(self) -> str:
        lines = [f"verify {self.net}: {'PASSED' if self.passed else 'FAILED'} (widths {self.widths}, "
                 f"{self.samples} networks each, threshold {self.z_threshold:g} SE)"]
        for n in self.exact:
            m = self._mask(n)
            rel = np.abs(self.estimate[n] - self.exact[n])[m] / max(float(np.max(np.abs(self.exact[n]))), 1e-300)
            lines.append(f"  {n}: max |z| = {np.max(np.abs(self.z[n][m])):.2f}, max |error| / max|K| = "
                         f"{np.max(rel):.2e}, median SE / max|K| = "
                         f"{np.median(self.stderr[n][m]) / max(float(np.max(np.abs(self.exact[n]))), 1e-300):.2e}")
        for n, d in self.decorrelated.items():
            lines.append(f"  {n}, decorrelated (top {len(d.exact)} singular directions, networks as the samples): "
                         f"T^2 = {d.t2:.2f}, F{d.dof}, p = {d.p_value:.2g} (threshold {self.p_threshold:.1e}); "
                         f"mean z of the entries = {d.mean_z:+.2f} +- {d.mean_z_se:.2f} (per-network SE)")
        for f in self.failures()[:10]:
            lines.append(f"  out of tolerance: {f[0]}{list(f[1])}: exact {f[2]:.6g}, estimate {f[3]:.6g} "
                         f"+- {f[4]:.3g} (allowance {f[5]:.3g})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def plot(self, path: str | None = None):
        """Estimate vs exact (error bars: the tolerance) and the z-score histogram against N(0, 1), one row
        per kernel. Saves a PNG when ``path`` is given; returns the matplotlib figure."""
        import matplotlib
        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        names = list(self.exact)
        fig, axes = plt.subplots(len(names), 2, figsize=(9, 3.6 * len(names)), squeeze=False)
        for row, n in zip(axes, names):
            m = self._mask(n)
            ex, est = self.exact[n][m], self.estimate[n][m]
            tol = (self.z_threshold * self.stderr[n] + self.allowance[n])[m]
            ok = self.within(n)[m]
            ax = row[0]
            lo, hi = float(min(ex.min(), est.min())), float(max(ex.max(), est.max()))
            ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
            ax.errorbar(ex[ok], est[ok], yerr=tol[ok], fmt="o", ms=3, color="tab:blue", label="within tolerance")
            if (~ok).any():
                ax.errorbar(ex[~ok], est[~ok], yerr=tol[~ok], fmt="o", ms=4, color="tab:red", label="outside")
            ax.set_xlabel(f"exact {n}")
            ax.set_ylabel(f"Monte Carlo {n}")
            ax.set_title(f"{n}: estimate +- ({self.z_threshold:g} SE + allowance)", fontsize=9)
            ax.legend(fontsize=7)
            ax = row[1]
            z = self.z[n][m]
            ax.hist(z, bins=max(5, min(40, int(math.sqrt(z.size)) + 3)), density=True, color="tab:gray")
            t = np.linspace(min(-4.0, float(z.min())), max(4.0, float(z.max())), 200)
            ax.plot(t, np.exp(-t**2 / 2) / math.sqrt(2 * math.pi), "k-", lw=1, label="N(0, 1)")
            ax.set_xlabel("z = (estimate - exact) / SE")
            title = f"{n}: max |z| = {np.max(np.abs(z)):.2f}"
            d = self.decorrelated.get(n)
            if d is not None:
                ax.axvspan(d.mean_z - 2 * d.mean_z_se, d.mean_z + 2 * d.mean_z_se, color="tab:orange", alpha=0.2,
                           label="mean z +- 2 per-network SE")
                title += (f"; mean z {d.mean_z:+.2f} +- {d.mean_z_se:.2f}\n(entries share {self.samples} networks "
                          f"per width: correlated z)\ndecorrelated T^2 test: p = {d.p_value:.2g}")
            ax.set_title(title, fontsize=8)
            ax.legend(fontsize=7)
        head = f"{'PASSED' if self.passed else 'FAILED'}: {self.net}"
        fig.suptitle(textwrap.fill(head, 110), fontsize=9)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig


def intercept_weights(widths: Sequence[int]) -> np.ndarray:
    """c with sum_w c_w E_w = the intercept a of the least-squares fit E_n = a + b/n (one width: c = 1)."""
    if len(widths) == 1:
        return np.ones(1)
    x = np.stack([np.ones(len(widths)), 1.0 / np.asarray(widths, float)], axis=1)
    return np.linalg.pinv(x)[0]


def decorrelated_test(draws: Sequence[np.ndarray], exact: np.ndarray, z: np.ndarray, se: np.ndarray,
                      mask: np.ndarray, widths: Sequence[int], directions: int, remainder: float, bias_rtol: float,
                      floor: float) -> Decorrelated:
    """Hotelling's T^2 of the per-network components along the exact kernel's top singular pairs.

    Args:
        draws: Per width, the per-network kernels (samples, N, M, ...).
        exact: The exact kernel (N, M, ...).
        z, se: The entrywise z-scores and standard errors (for the descriptive mean z).
        mask: Tested entries (broadcast to the kernel's shape).
        widths: The widths of ``draws``.
        directions: Number k of singular pairs (at most nu = min samples - 1).
        remainder, bias_rtol: Allowances as for the entries (fraction of the width shift, of |exact|).
        floor: Standard-error floor (rounding), absolute.
    """
    mat = exact.reshape(exact.shape[0], -1)
    nu = min(len(d) for d in draws) - 1
    k = int(max(1, min(directions, nu, *mat.shape)))
    u, sig, vt = np.linalg.svd(mat, full_matrices=False)
    u, vt = u[:, :k], vt[:k]
    c = intercept_weights(widths)
    comps = [np.einsum("ik,sij,kj->sk", u, d.reshape(len(d), *mat.shape), vt) for d in draws]
    means = [g.mean(0) for g in comps]
    est = sum(cw * m for cw, m in zip(c, means))
    cov = sum(cw**2 * np.atleast_2d(np.cov(g, rowvar=False)) / len(g) for cw, g in zip(c, comps))
    cov = cov + floor**2 * np.eye(k)
    allow = bias_rtol * np.abs(sig[:k]) + (remainder * np.abs(means[0] - means[-1]) if len(draws) > 1 else 0.0)
    dev = np.sign(est - sig[:k]) * np.maximum(np.abs(est - sig[:k]) - allow, 0.0)
    t2 = float(dev @ np.linalg.solve(cov, dev))
    dof = (k, nu - k + 1)  # k <= nu: dof[1] >= 1
    p = float(special.fdtrc(dof[0], dof[1], t2 * dof[1] / (nu * k)))  # F(dof) survival function
    m = np.broadcast_to(mask, exact.shape)
    per_net = [(d[:, m] / se[m]).mean(1) for d in draws]  # per-network mean of the entries in SE units
    mz_se = math.sqrt(sum(cw**2 * float(np.var(a, ddof=1)) / len(a) for cw, a in zip(c, per_net)))
    return Decorrelated(sig[:k], est, np.sqrt(np.diag(cov)), t2, dof, p, float(np.mean(z[m])), mz_se)


def verify(net: Layer, x1: Any, x2: Any = None, *, width: int = 256, samples: int = 256, key: Any = 0,
           get: Any = ("nngp", "ntk"), widths: Sequence[int] | None = None, z_threshold: float = 5.0,
           remainder: float = 0.25, bias_rtol: float = 0.0, numeric_rtol: float | None = None, exact: Any = None,
           directions: int = 4, mask_constant: float | None = None, **mc_kwargs: Any) -> Verification:
    """Check ``net``'s exact kernels against Monte Carlo over its finite-width twins.

    Args:
        net: Architecture expression (a surrogate layer at m=None is refused for the NTK: see
            :func:`kernelalg.verify_sharpness_limit`).
        x1: Inputs (N, ...) for the Monte Carlo (float32 is fast; the exact kernel is computed in float64).
        x2: Inputs (M, ...) or None (x1; then only the upper triangle is tested).
        width: Base width: ``widths`` defaults to (width, 2 width), or (width,) for a width-dependent kernel.
        samples: Networks per width.
        key: PRNG key or int seed.
        get: Kernels to check.
        widths: Explicit widths (one width: no extrapolation).
        z_threshold: Tolerance in standard errors (5: about 6e-7 two-sided per entry).
        remainder: Allowance for the O(1/n^2) remainder, as a fraction of |E_n - E_2n| (two or more widths).
        bias_rtol: Extra allowance bias_rtol * |exact| (single width of a deep network; 0 by default).
        numeric_rtol: Floor of the standard error, times max |exact| of each kernel (rounding: entries that are
            the same in every draw, e.g. the NNGP diagonal after Sign, have no spread). None: 1000 machine
            epsilons of the Monte Carlo precision (1.2e-4 in float32, 2.2e-13 in float64) -- far below any
            standard error here.
        exact: Precomputed exact kernel (``ka.Kernel``); None: ``ka.kernel`` in float64.
        directions: Singular directions of the decorrelated test (0: entrywise test only).
        mask_constant: Mask input positions whose every channel equals it (neural-tangents' ``mask_constant``;
            image networks and ``ka.Graphs``): the masked exact kernel against Monte Carlo over masked twins.
        **mc_kwargs: Passed to :func:`kernelalg.monte_carlo` (e.g. ``ntk_units``, ``method``).

    Returns:
        A :class:`Verification` (``.passed``, ``.z``, ``.decorrelated``, ``.summary()``, ``.plot(path)``).
    """
    net = as_layer(net)
    names, _ = normalize_get(get)
    if "ntk" in names and exact_jumps(net):
        raise KernelalgError(EXACT_JUMP.format(net=repr(net)))
    if widths is None:
        widths = (int(width),) if width_dependent(net) else (int(width), 2 * int(width))
    widths = tuple(sorted(int(w) for w in widths))
    if exact is None:
        exact = kernel(net, _to64(x1), None if x2 is None else _to64(x2), names, mask_constant=mask_constant)
    ex = {n: np.asarray(getattr(exact, n), dtype=np.float64) for n in names}
    if numeric_rtol is None:
        leaves = jax.tree_util.tree_leaves(x1)
        numeric_rtol = 1000 * float(np.finfo(np.float64 if leaves[0].dtype == np.float64 else np.float32).eps)
    keys = jax.random.split(_key(key), len(widths))
    ests = tuple(monte_carlo(net, x1, x2, w, samples, k, get=names, keep_draws=directions > 0,
                             mask_constant=mask_constant, **mc_kwargs)
                 for w, k in zip(widths, keys))
    est, se, allow, z = {}, {}, {}, {}
    for n in names:
        means, ses = [e.get(n)[0] for e in ests], [e.get(n)[1] for e in ests]
        if len(widths) > 1:
            a, sa, _ = extrapolate(means, ses, widths)
            shift = np.abs(means[0] - means[-1])
        else:
            a, sa, shift = means[0], ses[0], np.zeros_like(means[0])
        est[n], se[n] = a, np.maximum(_floor(sa, ex[n]), numeric_rtol * float(np.max(np.abs(ex[n]))))
        allow[n] = remainder * shift + bias_rtol * np.abs(ex[n])
        z[n] = (a - ex[n]) / se[n]
    first = ex[names[0]]
    symmetric = x2 is None and all(np.allclose(ex[n], np.swapaxes(ex[n], 0, 1), rtol=1e-9, atol=0) for n in names
                                   if ex[n].ndim == 2)
    entries = np.triu(np.ones(first.shape[:2], bool)) if symmetric else np.ones(first.shape[:2], bool)
    p_threshold = math.erfc(z_threshold / math.sqrt(2))
    dec = {}
    if directions > 0:
        for n in names:
            mask = entries.reshape(entries.shape + (1,) * (ex[n].ndim - 2))
            dec[n] = decorrelated_test([e.draws[n] for e in ests], ex[n], z[n], se[n], mask, widths, directions,
                                       remainder, bias_rtol, numeric_rtol * float(np.max(np.abs(ex[n]))))
        ests = tuple(dataclasses.replace(e, draws={}) for e in ests)
    res = Verification(repr(net), ex, est, se, allow, z, widths, int(samples), float(z_threshold), entries, ests,
                       dec, p_threshold, passed=True)
    passed = (all(bool(np.all(res.within(n)[res._mask(n)])) for n in names)
              and all(d.p_value >= p_threshold for d in dec.values()))
    return dataclasses.replace(res, passed=passed)
