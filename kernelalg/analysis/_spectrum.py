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

import math
import warnings
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np
import sympy as sp

from kernelalg.core import _errors as E
from ._decay import PowerFit
from ._fit import SpectralWarning
from ._quadrature import FLOAT_FLOOR, MP_ROUNDS, gauss_float, mp_route, vanishing_degrees
from ._sphere import (_angle_form, DotProductKernel, as_kernel, check_dim, gegenbauer_sympy, multiplicity,
                      sphere_points)
from ._plots import plot_spectrum

BAD_KMAX = "kmax={kmax!r} must be an integer >= 1. Fix: e.g. kmax=60."
NO_EXACT = ("exact_eigenvalue: after t = cos(theta) the kernel {label} is not a polynomial in theta, cos(theta), "
            "sin(theta) (it contains {bad}), so the exact route does not apply. Fix: use mercer_spectrum(..., dps=50) "
            "for a high-precision value.")

BAD_DPS = "dps={dps!r} must be an integer in 1..{limit} (significant digits of every mu_k). Fix: e.g. dps=30."
BAD_PRECISION = "precision={precision!r} is not known. Fix: use precision='auto' or precision='float64'."
FLOAT_FLOOR_NOTE = ("mercer_spectrum ({label}): float64 resolves mu_k only to {worst:.1e} relative for k = {ks} "
                    "(their values sit near the rounding floor of the Gauss-Legendre sum).")
FIX_DPS = "Fix: use the default precision='auto' or pass dps=30 (mpmath route), or lower kmax."
FIX_COST = ("Fix: pass dps=20 to compute them in mpmath anyway (precision='auto' does so only up to kmax = "
            "{limit}: the cost grows as kmax^2, ~12 s at kmax = 1000), or lower kmax.")
FIX_CALLABLE = ("Fix: pass the kernel as a network or a sympy expression so that the mpmath route can evaluate it "
                "(dps=30), or lower kmax.")
MP_SHORT = ("mercer_spectrum: the mpmath route did not reach {digits} digits for k = {ks} in {rounds} rounds (worst "
            "relative error {worst:.1e}). Fix: pass more nodes= (the kernel may be rough in the angle) or a larger "
            "dps.")

#: float64 values are kept when every degree that does not vanish by parity is resolved to this (relative).
AUTO_RTOL = 1e-6
#: Significant digits of the automatic mpmath route (more than float64 holds).
AUTO_DIGITS = 20
#: Largest kmax of the automatic switch: the mpmath route costs ~ 12 s CPU at kmax = 1000 (Newton steps on
#: P_n for ~2 kmax nodes grow as kmax^2), ~1 s at 300; beyond, float64 is kept with a warning naming dps=.
AUTO_MAX_KMAX = 400
#: Largest dps accepted.
MAX_DPS = 2000
PRECISIONS = ("auto", "float64")


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
        abs_error: Error bound per k: float64, the larger of the change with twice the nodes and the rounding
            floor; mpmath, the change from the previous (fewer nodes, fewer digits) evaluation.
        mu_mp: On the mpmath route: the eigenvalues as mpmath numbers (``mu`` rounds them to float64); None
            otherwise.
        precision: "float64", or how the mpmath route computed them (working digits, nodes, digits held).
        note: Why the mpmath route was taken automatically, or which float64 degrees are unresolved ("" when
            float64 resolves every degree).
    """

    k: np.ndarray
    mu: np.ndarray
    multiplicity: np.ndarray
    dim: int
    k_at_one: float
    label: str = "k(t)"
    abs_error: np.ndarray | None = None
    mu_mp: tuple | None = None
    precision: str = "float64"
    note: str = ""

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


def _degrees(ks: np.ndarray) -> str:
    ks = [int(k) for k in ks]
    return ", ".join(map(str, ks[:6])) + (f", ... ({len(ks)} degrees)" if len(ks) > 6 else "")


def _check_dps(dps: Any) -> int:
    try:
        ok = not isinstance(dps, bool) and int(dps) == dps and 1 <= int(dps) <= MAX_DPS
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise E.KernelalgError(BAD_DPS.format(dps=dps, limit=MAX_DPS))
    return int(dps)


def mercer_spectrum(net: Any, dim: int, kmax: int = 60, which: str = "ntk", *, q: float = 1.0,
                    dps: int | None = None, nodes: int | None = None, precision: str = "auto") -> Spectrum:
    """Mercer eigenvalues mu_0..mu_kmax of a network's kernel (or any k(t)) on S^{dim-1}.

    Precision: float64 Gauss-Legendre resolves mu_k only down to its rounding floor, ~ 16 sqrt(nodes) eps S_k
    with S_k = c_d sum_i |w_i k(t_i) P_k(t_i)| (the terms summed; mu_k falls far below them at large k or
    high d: mu_36 = 1.9e-14 for the ReLU NNGP at d = 10 carries 7 float64 digits). With ``precision="auto"``
    (default), when a degree that does not vanish by parity is resolved to worse than 1e-6 relative, the
    spectrum is recomputed in mpmath to 20 digits (up to kmax = 400; beyond, a :class:`SpectralWarning` names
    the degrees and the fix ``dps=20``), and ``Spectrum.precision`` / ``Spectrum.note`` say so.
    With ``dps`` every mu_k holds ``dps`` significant digits (degrees that vanish by parity: 10^-dps of the
    largest mu), the working precision growing with the cancellation (see :func:`~kernelalg.analysis._quadrature.mp_route`).

    Args:
        net: A dense network (its NNGP/NTK on inputs with |x|^2/d = q), a sympy expression in one symbol,
            a vectorised callable k(t), or a :class:`DotProductKernel`.
        dim: Input dimension d (sphere S^{d-1}), d >= 2.
        kmax: Largest degree.
        which: "ntk" or "nngp" (networks only).
        q: Input normalisation |x|^2/d (default 1, neural-tangents' standardised inputs).
        dps: Significant digits wanted of every mu_k (mpmath route; the full-precision values are kept in
            ``mu_mp``, ``mu`` rounds them to float64). None: float64, or the automatic switch above.
        nodes: Gauss-Legendre nodes in the angle (default max(256, 4 kmax + 64) in float64, compared with
            twice as many for ``abs_error``; max(120, 2 kmax + 80) to start the mpmath route, compared with 32
            more).
        precision: "auto" (switch to mpmath when float64 cannot resolve a degree) or "float64" (never; a
            :class:`SpectralWarning` names the unresolved degrees). Kernels given as plain callables have no
            mpmath form and stay float64 with that warning.

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
    if precision not in PRECISIONS:
        raise E.KernelalgError(BAD_PRECISION.format(precision=precision))
    kern = as_kernel(net, which, q)
    ks = np.arange(kmax + 1)
    mult_int = [multiplicity(dim, int(k)) for k in ks]  # exact; beyond int64 in high dimension
    mult = np.array(mult_int, dtype=np.int64 if max(mult_int) < 2**63 else object)
    mp_nodes = int(nodes) if nodes is not None else max(120, 2 * kmax + 80)
    if dps is not None:
        digits = _check_dps(dps)
        return _mp_spectrum(kern, dim, kmax, digits, mp_nodes, vanishing_degrees(kern, kmax), mult, "")
    n = int(nodes) if nodes is not None else max(256, 4 * kmax + 64)
    mu, size = gauss_float(kern, dim, kmax, n)
    err = np.maximum(np.abs(mu - gauss_float(kern, dim, kmax, 2 * n)[0]),
                     FLOAT_FLOOR * math.sqrt(n) * np.finfo(np.float64).eps * size)
    bad = err > AUTO_RTOL * np.abs(mu)
    if bad.any():
        vanish = vanishing_degrees(kern, kmax)
        bad &= ~vanish
    if not bad.any():
        return Spectrum(ks, mu, mult, dim, kern.at_one(), kern.label, err)
    worst = float(np.max(err[bad] / np.maximum(np.abs(mu[bad]), 1e-300)))
    if precision == "float64" or kern._mp is None or kmax > AUTO_MAX_KMAX:
        fix = FIX_CALLABLE if kern._mp is None else FIX_COST.format(limit=AUTO_MAX_KMAX) if (
            precision == "auto") else FIX_DPS
        msg = FLOAT_FLOOR_NOTE.format(worst=worst, ks=_degrees(ks[bad]), label=kern.label) + " " + fix
        warnings.warn(msg, SpectralWarning, stacklevel=2)
        return Spectrum(ks, mu, mult, dim, kern.at_one(), kern.label, err, note=msg)
    note = FLOAT_FLOOR_NOTE.format(worst=worst, ks=_degrees(ks[bad]), label=kern.label)
    return _mp_spectrum(kern, dim, kmax, AUTO_DIGITS, mp_nodes, vanish, mult, note)


def _mp_spectrum(kern: DotProductKernel, dim: int, kmax: int, digits: int, n: int, vanish: np.ndarray,
                 mult: np.ndarray, note: str) -> Spectrum:
    """The mpmath route (:func:`~kernelalg.analysis._quadrature.mp_route`) as a :class:`Spectrum`; ``note`` says why it was taken."""
    hi, err, w, used, ok = mp_route(kern, dim, kmax, digits, n, vanish, digits + 10)
    mu = np.array([float(v) for v in hi])
    how = f"mpmath Gauss-Legendre, {w + 10} working digits, {used} nodes: {digits} significant digits per mu_k"
    if not ok:
        rel = err / np.maximum(np.abs(mu), 1e-300)
        bad = ~vanish & (rel > 10.0 ** -digits)
        msg = MP_SHORT.format(digits=digits, ks=_degrees(np.flatnonzero(bad)), worst=float(np.max(rel[bad])),
                              rounds=MP_ROUNDS)
        warnings.warn(msg, SpectralWarning, stacklevel=3)
        how, note = how.replace(f"{digits} significant", "fewer than " + f"{digits} significant"), note + " " + msg
    if note and ok:
        note = note + f" Recomputed by {how}."
    ks = np.arange(kmax + 1)
    return Spectrum(ks, mu, mult, dim, kern.at_one(), kern.label, err, tuple(hi), precision=how, note=note.strip())


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
