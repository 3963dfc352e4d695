"""Mercer spectrum of a dot-product kernel on the sphere S^{d-1} (Funk-Hecke).

For ``(T f)(x) = E_{x' ~ Unif(S^{d-1})}[k(<x, x'>) f(x')]`` every degree-k spherical harmonic is an
eigenfunction, with eigenvalue (multiplicity N(d, k))

    mu_k = c_d int_{-1}^{1} k(t) P_k(d; t) (1 - t^2)^{(d-3)/2} dt
         = c_d int_0^pi k(cos th) P_k(d; cos th) sin(th)^{d-2} dth.

The angle form is what is integrated: kernels of ReLU-like networks have (1 - t)^{s} terms with half-integer
s at t = +-1, and (1 - cos th)^{1/2} = sqrt(2) sin(th/2) is analytic in th, so Gauss-Legendre in th converges
geometrically where it would converge only algebraically in t. Routes: float64 Gauss-Legendre (default),
mpmath Gauss-Legendre at ``dps`` digits, and exact symbolic integration (:func:`exact_eigenvalue`).

References:
    Bietti & Mairal (2019); Geifman et al. (2020); Smola, Ovari & Williamson (2001) (Funk-Hecke for
    dot-product kernels).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import mpmath
import numpy as np
import sympy as sp
from scipy.special import roots_legendre

from kernelalg.core import _errors as E
from ._decay import PowerFit
from ._sphere import (_angle_form, DotProductKernel, as_kernel, check_dim, gegenbauer_sympy, gegenbauer_table,
                      multiplicity, sphere_constant, sphere_points)
from ._plots import plot_spectrum

NOT_FINITE = ("{label}: k(t) is not finite at some t in (-1, 1). Fix: check the kernel (the sphere spectrum needs "
              "a kernel that is finite on the whole sphere).")
BAD_KMAX = "kmax={kmax!r} must be an integer >= 1. Fix: e.g. kmax=60."
NO_EXACT = ("exact_eigenvalue: after t = cos(theta) the kernel {label} is not a polynomial in theta, cos(theta), "
            "sin(theta) (it contains {bad}), so the exact route does not apply. Fix: use mercer_spectrum(..., dps=50) "
            "for a high-precision value.")


@dataclass(frozen=True)
class TraceCheck:
    """The trace identity sum_k N(d, k) mu_k = k(1).

    Attributes:
        partial: sum over k <= kmax.
        tail: Estimate of the sum over k > kmax (power law fitted to the last decade of N mu; 0 if the
            spectrum decays faster than any power).
        target: k(1).
        residual: target - partial - tail.
    """

    partial: float
    tail: float
    target: float
    residual: float

    @property
    def relative_residual(self) -> float:
        return abs(self.residual) / max(abs(self.target), 1e-300)


@dataclass(frozen=True)
class Spectrum:
    """Mercer eigenvalues mu_k of a dot-product kernel on S^{d-1}.

    Attributes:
        k: Degrees 0..kmax.
        mu: Eigenvalues mu_k (float64).
        multiplicity: N(d, k).
        dim: d (inputs in R^d).
        k_at_one: k(1) (the trace of the operator).
        label: What kernel this is.
        abs_error: Quadrature error estimate (difference between two node counts), per k.
        mu_mp: With ``dps``: the eigenvalues as mpmath numbers at that precision (``mu`` rounds them to
            float64); None otherwise.
    """

    k: np.ndarray
    mu: np.ndarray
    multiplicity: np.ndarray
    dim: int
    k_at_one: float
    label: str = "k(t)"
    abs_error: np.ndarray | None = None
    mu_mp: tuple | None = None

    def trace_check(self, tail: bool = True) -> TraceCheck:
        """Check sum_k N(d, k) mu_k = k(1); ``tail`` adds a power-law estimate of the truncated terms."""
        w = self.multiplicity.astype(np.float64) * self.mu
        partial = float(np.sum(w))
        rest = 0.0
        if tail:
            fit = self.fit(kmin=max(2, int(self.k[-1]) // 2), weighted=True)
            if fit is not None and fit.slope < -1.05:
                frac = fit.nonzero_fraction
                rest = float(frac * np.exp(fit.intercept) * mpmath.zeta(-fit.slope, int(self.k[-1]) + 1))
        return TraceCheck(partial, rest, self.k_at_one, self.k_at_one - partial - rest)

    def fit(self, kmin: int = 5, kmax: int | None = None, weighted: bool = False, rtol: float = 1e-10,
            corrections: int = 0) -> Any:
        """Least-squares fit of log mu_k (or of log N mu_k with ``weighted``) against log k.

        Model: log y = intercept + slope log k + sum_{j=1}^{corrections} c_j k^{-j}; the correction terms
        absorb the 1/k corrections of the asymptotic expansion, so the slope converges much faster
        (e.g. two-layer ReLU NTK, d = 5, k in [60, 200]: slope -4.92 plain, -4.9996 with corrections=2).
        Degrees whose mu_k is below ``rtol * max |mu|`` (vanishing by symmetry, or lost to rounding) are
        left out.

        Returns:
            A :class:`~kernelalg.analysis.PowerFit` or None when too few degrees qualify.
        """
        kmax = int(self.k[-1]) if kmax is None else kmax
        y = self.mu * (self.multiplicity.astype(np.float64) if weighted else 1)
        sel = (self.k >= max(kmin, 1)) & (self.k <= kmax)
        scale = np.max(np.abs(self.mu))
        nz = sel & (np.abs(self.mu) > rtol * scale) & (self.mu > 0)
        if np.count_nonzero(nz) < 3 + corrections:
            return None
        kk = self.k[nz].astype(np.float64)
        design = np.stack([np.ones_like(kk), np.log(kk)] + [kk ** -j for j in range(1, corrections + 1)], axis=1)
        coef = np.linalg.lstsq(design, np.log(y[nz]), rcond=None)[0]
        return PowerFit(float(coef[1]), float(coef[0]), int(kk[0]), int(kk[-1]),
                        float(np.count_nonzero(nz) / max(np.count_nonzero(sel), 1)),
                        tuple(float(c) for c in coef[2:]))

    def eigenvalues(self, count: int) -> np.ndarray:
        """The ``count`` largest operator eigenvalues with multiplicity, in decreasing order."""
        reps = np.array([min(int(m), count) for m in self.multiplicity], dtype=np.int64)
        vals = np.repeat(self.mu, reps)
        return np.sort(vals)[::-1][:count]

    def plot(self, path: Any, derived: Any = None, fit: Any = "auto", title: str | None = None) -> Any:
        """Log-log plot of mu_k (PNG); see :func:`kernelalg.analysis.plot_spectrum`."""
        return plot_spectrum(self, path, derived=derived, fit=fit, title=title)

    def as_rows(self) -> list[tuple[int, int, float]]:
        """(k, N(d, k), mu_k) rows (for CSV output)."""
        return [(int(a), int(b), float(c)) for a, b, c in zip(self.k, self.multiplicity, self.mu)]


def _check_kmax(kmax: Any) -> int:
    try:
        ok = not isinstance(kmax, bool) and int(kmax) == kmax and int(kmax) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise E.KernelalgError(BAD_KMAX.format(kmax=kmax))
    return int(kmax)


@lru_cache(maxsize=16)
def _legendre_nodes(n: int) -> tuple[np.ndarray, np.ndarray]:
    return roots_legendre(n)


@lru_cache(maxsize=8)
def _legendre_nodes_mp(n: int, dps: int) -> tuple[tuple, tuple]:
    """Gauss-Legendre nodes/weights on [-1, 1] at ``dps`` digits: float64 roots refined by Newton steps."""
    x0, _ = _legendre_nodes(n)
    xs, ws = [], []
    steps = max(1, int(np.ceil(np.log2(dps / 15.0))) + 1)
    with mpmath.workdps(dps + 10):
        for a in x0[: (n + 1) // 2]:
            x = mpmath.mpf(float(a))
            for _ in range(steps):
                p0, p1 = mpmath.mpf(1), x
                for k in range(1, n):
                    p0, p1 = p1, ((2 * k + 1) * x * p1 - k * p0) / (k + 1)
                dp = n * (x * p1 - p0) / (x * x - 1)
                x -= p1 / dp
            xs.append(x)
            ws.append(2 / ((1 - x * x) * dp * dp))
        half = n // 2  # mirror inside workdps: mpf negation rounds to the working precision
        xs_all = xs + [-v for v in reversed(xs[:half])]
    ws_all = ws + list(reversed(ws[:half]))
    return tuple(xs_all), tuple(ws_all)


def _gauss_float(kern: DotProductKernel, dim: int, kmax: int, n: int) -> np.ndarray:
    x, w = _legendre_nodes(n)
    th = 0.5 * np.pi * (x + 1.0)
    w = 0.5 * np.pi * w * np.sin(th) ** (dim - 2)
    t = np.cos(th)
    kt = kern(t)
    if not np.all(np.isfinite(kt)):
        raise E.KernelalgError(NOT_FINITE.format(label=kern.label))
    table = gegenbauer_table(kmax, dim, t)
    return sphere_constant(dim) * np.array([np.sum(w * kt * p) for p in table])


def _gauss_mp(kern: DotProductKernel, dim: int, kmax: int, n: int, dps: int) -> np.ndarray:
    xs, ws = _legendre_nodes_mp(n, dps)
    with mpmath.workdps(dps):
        half_pi = mpmath.pi / 2
        th = [half_pi * (a + 1) for a in xs]
        t = np.array([mpmath.cos(a) for a in th], dtype=object)
        w = np.array([half_pi * b * mpmath.sin(a) ** (dim - 2) * kern.mp(c) for a, b, c in zip(th, ws, t)],
                     dtype=object)
        if not all(mpmath.isfinite(v) for v in w):
            raise E.KernelalgError(NOT_FINITE.format(label=kern.label))
        table = gegenbauer_table(kmax, dim, t)
        cd = mpmath.gamma(mpmath.mpf(dim) / 2) / (mpmath.sqrt(mpmath.pi) * mpmath.gamma(mpmath.mpf(dim - 1) / 2))
        return np.array([cd * mpmath.fsum(w * p) for p in table], dtype=object)


def mercer_spectrum(net: Any, dim: int, kmax: int = 60, which: str = "ntk", *, q: float = 1.0,
                    dps: int | None = None, nodes: int | None = None) -> Spectrum:
    """Mercer eigenvalues mu_0..mu_kmax of a network's kernel (or any k(t)) on S^{dim-1}.

    Args:
        net: A dense network (its NNGP/NTK on inputs with |x|^2/d = q), a sympy expression in one symbol,
            a vectorised callable k(t), or a :class:`DotProductKernel`.
        dim: Input dimension d (sphere S^{d-1}), d >= 2.
        kmax: Largest degree.
        which: "ntk" or "nngp" (networks only).
        q: Input normalisation |x|^2/d (default 1, neural-tangents' standardised inputs).
        dps: If set, integrate in mpmath at this many digits (needed when mu_k falls below ~1e-13 k(1),
            e.g. high d or large k; the full-precision values are kept in ``mu_mp``); float64 otherwise.
        nodes: Gauss-Legendre nodes in the angle (default max(256, 4 kmax + 64) in float64, compared with
            twice as many for ``abs_error``; max(120, 2 kmax + 80) with ``dps``, compared with 32 more).

    Returns:
        A :class:`Spectrum`.

    Example:
        >>> import kernelalg as ka
        >>> from kernelalg.analysis import mercer_spectrum
        >>> s = mercer_spectrum(ka.Dense(1.0) >> ka.Relu() >> ka.Dense(2 ** 0.5), 3, which="nngp")
        >>> round(float(s.mu[0]), 6)   # 3/8
        0.375
    """
    dim = check_dim(dim)
    kmax = _check_kmax(kmax)
    kern = as_kernel(net, which, q)
    n = int(nodes) if nodes is not None else max(256, 4 * kmax + 64)
    hi = None
    if dps is None:
        mu = _gauss_float(kern, dim, kmax, n)
        err = np.abs(mu - _gauss_float(kern, dim, kmax, 2 * n))
    else:
        n = int(nodes) if nodes is not None else max(120, 2 * kmax + 80)
        hi = _gauss_mp(kern, dim, kmax, n + 32, dps)
        lo = _gauss_mp(kern, dim, kmax, n, dps)
        err = np.array([float(abs(a - b)) for a, b in zip(hi, lo)])
        mu = np.array([float(v) for v in hi])
    ks = np.arange(kmax + 1)
    mult_int = [multiplicity(dim, int(k)) for k in ks]  # exact; beyond int64 in high dimension
    mult = np.array(mult_int, dtype=np.int64 if max(mult_int) < 2**63 else object)
    return Spectrum(ks, mu, mult, dim, kern.at_one(), kern.label, err, None if hi is None else tuple(hi))


# ------------------------------------------------------------------------------------------ exact route


def _integrate_angle(poly_expr: sp.Expr, th: sp.Symbol) -> sp.Expr:
    """int_0^pi of a polynomial in th, cos th, sin th, exactly, via exp(i j th) th^a terms."""
    z = sp.Symbol("z")
    e = poly_expr.subs({sp.cos(th): (z + 1 / z) / 2, sp.sin(th): (z - 1 / z) / (2 * sp.I)})
    total = sp.Integer(0)
    for term in sp.Add.make_args(sp.expand(e)):
        c, ez = term.as_coeff_exponent(z)
        c, eth = c.as_coeff_exponent(th)
        if c.has(z) or c.has(th) or not ez.is_Integer or not eth.is_Integer:
            raise E.KernelalgError(NO_EXACT.format(label="k(t)", bad=term))
        total += c * _theta_exp_integral(int(eth), int(ez))
    return sp.simplify(sp.expand_complex(total))


def _theta_exp_integral(a: int, j: int) -> sp.Expr:
    """int_0^pi th^a exp(i j th) d th (exact)."""
    if j == 0:
        return sp.pi ** (a + 1) / (a + 1)
    ij = sp.I * j
    end = sp.Integer(-1) ** j  # exp(i j pi)
    val = (end - 1) / ij  # a = 0
    for b in range(1, a + 1):
        val = sp.pi ** b * end / ij - sp.Integer(b) / ij * val
    return val


def exact_eigenvalue(net: Any, dim: int, k: int, which: str = "ntk", q: float = 1.0) -> sp.Expr:
    """mu_k exactly (sympy), where the closed form permits.

    Substitutes t = cos(theta); for kernels that become polynomials in theta, cos theta and sin theta (one
    hidden layer of ReLU / step / LeakyReLU / Abs / monomials without input bias, polynomial kernels) the
    Funk-Hecke integral is a finite sum of int_0^pi theta^a e^{i j theta} terms, each done in closed form.

    Raises:
        KernelalgError: the kernel is not of that form (use ``mercer_spectrum(..., dps=...)`` instead).
    """
    dim = check_dim(dim)
    kern = as_kernel(net, which, q)
    if kern.expr is None:
        raise E.KernelalgError(NO_EXACT.format(label=kern.label, bad="no closed form"))
    th = sp.Symbol("theta", real=True)
    form = _angle_form(sp.nsimplify(kern.expr, rational=True), th)
    bad = [a for a in sp.preorder_traversal(form)
           if isinstance(a, (sp.acos, sp.asin, sp.atan, sp.exp, sp.log)) or (a.is_Pow and not a.exp.is_Integer
                                                                             and a.base.has(th))]
    if bad:
        raise E.KernelalgError(NO_EXACT.format(label=kern.label, bad=bad[0]))
    integrand = form * gegenbauer_sympy(int(k), dim, sp.cos(th)) * sp.sin(th) ** (dim - 2)
    cd = sp.gamma(sp.Rational(dim, 2)) / (sp.sqrt(sp.pi) * sp.gamma(sp.Rational(dim - 1, 2)))
    return sp.nsimplify(sp.simplify(cd * _integrate_angle(integrand, th)))


# ------------------------------------------------------------------------------------------ Gram spectra


def gram_spectrum(net: Any, dim: int, n: int, which: str = "ntk", seed: int = 0, q: float = 1.0) -> np.ndarray:
    """Eigenvalues / n of the kernel Gram matrix on n uniform points of S^{dim-1} (decreasing order).

    As n grows they converge to the Mercer eigenvalues with multiplicity (Koltchinskii & Gine 2000).
    The Gram matrix is k(<x_i, x_j>/(q d)) with the kernel's closed form (for a network: its NNGP/NTK at
    |x|^2/d = q, the same expression ``ka.kernel`` compiles).
    """
    dim = check_dim(dim)
    x = sphere_points(n, dim, seed, radius=float(np.sqrt(q * dim)))
    kern = as_kernel(net, which, q)
    cos = np.clip(x @ x.T / (q * dim), -1.0, 1.0)
    gram = kern(cos)
    return np.sort(np.linalg.eigvalsh(0.5 * (gram + gram.T)))[::-1] / n
