"""The loss exponent xi of kernel gradient flow / gradient descent, from a kernel, data and a target.

Velikanov & Yarotsky (NeurIPS 2021, "Explicit loss asymptotics in the gradient descent training of neural
networks", Sec. 2-3): in the lazy regime gradient flow on the population loss gives
L(t) = 1/2 sum_i c_i^2 exp(-2 lambda_i t). With eigenvalues in decreasing order lambda_i ~ Lam i^{-nu} and
target coefficients c_i^2 ~ K i^{-kappa-1} (equivalently the tail mass sum_{j >= i} c_j^2 ~ (K/kappa) i^{-kappa}),

    L(t) ~ (K / (2 nu)) Gamma(kappa/nu) (2 Lam t)^{-xi},    xi = kappa / nu

(the sum is a Riemann sum of int K i^{-kappa-1} exp(-2 Lam t i^{-nu}) di / 2). Gradient descent with step
eta (lambda_i eta < 1) has the same exponent in the step count s, with t = eta s.

Derived route (dot-product kernel of a dense network on S^{d-1}, zonal target f*(x) = g(<x, e>)): the degree-k
eigenvalue mu_k ~ k^{-(d-1)-2s} (s: the kernel's singular exponent at t = +-1, Bietti & Mairal 2019) has
multiplicity N(d, k) ~ k^{d-2}, so the index of degree k is i ~ k^{d-1} and

    nu = ((d - 1) + 2 s) / (d - 1).

The target's Funk-Hecke coefficients are a_k = N(d, k) mu_k[g] with mu_k[g] ~ k^{-(d-1)-2 s_g}; its mass on
degree k is a_k^2 / N(d, k) ~ k^{-(d-1)-4 s_g-1}, so the tail beyond degree k is ~ k^{-(d-1)-4 s_g} and

    kappa = ((d - 1) + 4 s_g) / (d - 1),    xi = ((d - 1) + 4 s_g) / ((d - 1) + 2 s).

Only degrees with mu_k != 0 are learnt; when the kernel's eigenvalues vanish on one parity (bias-free ReLU:
odd k >= 3) s_g is taken from the part of g of the live parity, (g(t) +- g(-t))/2, and the mass on the null
degrees is a plateau L_inf = 1/2 sum_{mu_k = 0} a_k^2 / N(d, k) (a warning says so).

Fitted route (any kernel, data x, target values y): lambda_i = eig_i(K)/n and c_i^2 = (v_i . y)^2/n
(:mod:`kernelalg.analysis._empirical`); nu from a power-law fit of lambda_i, kappa from a fit of the tail mass
T(i) = sum_{j >= i} c_j^2 (smoother than the single c_i^2), both with 95% intervals (:func:`fit_power_law`);
the interval of xi is [kappa_lo / nu_hi, kappa_hi / nu_lo].
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy as sp

from kernelalg.core import _errors as E
from ._decay import decay_exponent
from ._empirical import empirical_spectrum
from ._fit import SlopeFit, SpectralWarning, fit_power_law
from ._spectrum import mercer_spectrum
from ._sphere import T, DotProductKernel, as_kernel

NULL_MASS = ("loss_exponent: the target has {frac:.3g} of its mass on the kernel's null spectrum ({where}); gradient "
             "flow never learns it and the loss plateaus at L_inf = {plateau:.4g}. xi describes L(t) - L_inf. Fix: add "
             "a bias (b_std > 0) or pick a kernel whose eigenvalues do not vanish there.")
ALL_NULL = ("loss_exponent: the target has (near-)zero mass on the kernel's non-zero spectrum ({frac:.3g} of it is "
            "on the null spectrum); nothing is learnt and the loss stays at {plateau:.4g}. Fix: change the kernel "
            "(e.g. add a bias) or the target.")
ANALYTIC_KERNEL = ("loss_exponent: {label} is analytic on [-1, 1]: its eigenvalues decay faster than any power, so "
                   "the loss decays slower than any power (xi = 0). Fix: nothing to fix; there is no power law.")
BAD_TARGET = ("target {obj!r}: on the sphere pass a zonal profile g(t) (sympy expression, DotProductKernel or "
              "callable) or the coefficients a_k of sum_k a_k P_k(d; <x, e>); on data pass values y (n,) or a "
              "callable y(x).")


@dataclass(frozen=True)
class LossExponent:
    """Predicted loss decay L(t) ~ t^{-xi} of kernel gradient flow (Velikanov & Yarotsky 2021).

    Exponents are in the index convention lambda_i ~ i^{-nu}, sum_{j >= i} c_j^2 ~ i^{-kappa}.

    Attributes:
        nu: Eigenvalue decay exponent.
        kappa: Target tail exponent.
        xi: kappa / nu (inf: the target is analytic / has finitely many modes, faster than any power).
        nu_ci: 95% interval of nu (a point when derived).
        kappa_ci: 95% interval of kappa.
        xi_ci: Interval of xi.
        derived: Which of "nu", "kappa" were derived (exact) rather than fitted.
        exact: Exact sympy values of the derived quantities (keys "nu", "kappa", "xi", "s", "s_target").
        plateau: L_inf = 1/2 (target mass on the null spectrum).
        null_fraction: Share of the target's mass on the null spectrum.
        route: "sphere" or "data".
        fits: The :class:`SlopeFit` objects of the fitted quantities.
    """

    nu: float
    kappa: float
    xi: float
    nu_ci: tuple[float, float]
    kappa_ci: tuple[float, float]
    xi_ci: tuple[float, float]
    derived: tuple[str, ...]
    exact: dict = field(default_factory=dict)
    plateau: float = 0.0
    null_fraction: float = 0.0
    route: str = "sphere"
    fits: dict = field(default_factory=dict)


def _ratio_ci(kappa_ci: tuple, nu_ci: tuple) -> tuple[float, float]:
    lo_nu, hi_nu = max(nu_ci[0], 1e-300), max(nu_ci[1], 1e-300)
    return (kappa_ci[0] / hi_nu, kappa_ci[1] / lo_nu)


def _null_warning(frac: float, plateau: float, where: str) -> None:
    if frac > 1.0 - 1e-6:
        warnings.warn(ALL_NULL.format(frac=frac, plateau=plateau), SpectralWarning, stacklevel=4)
    elif frac > 1e-8:
        warnings.warn(NULL_MASS.format(frac=frac, where=where, plateau=plateau), SpectralWarning, stacklevel=4)


def _null_degrees(spec: Any) -> np.ndarray:
    """Degrees whose mu_k is zero within the quadrature's resolution: |mu_k| <= max(1e-13 k(1), 10 x error)."""
    err = np.zeros_like(spec.mu) if spec.abs_error is None else np.asarray(spec.abs_error, dtype=np.float64)
    return np.abs(spec.mu) <= np.maximum(1e-13 * abs(spec.k_at_one), 10.0 * err)


def _target_profile(target: Any) -> DotProductKernel | None:
    if isinstance(target, (sp.Basic, DotProductKernel)) or callable(target):
        return as_kernel(target)
    return None


def _live_parities(mu: np.ndarray, null: np.ndarray) -> list[int]:
    """Parities p (k = p mod 2) whose eigenvalues are non-zero on most of the upper half of the degrees."""
    k = np.arange(len(mu))
    upper = k >= len(mu) // 2
    return [p for p in (0, 1) if np.mean(~null[upper & (k % 2 == p)]) > 0.5]


def _derived_target_s(expr: sp.Expr, dim: int, parities: list[int]) -> Any:
    """min over live parities p of s_g for g_p(t) = (g(t) + (-1)^p g(-t))/2 (None: analytic on all of them)."""
    best = None
    for p in parities:
        part = sp.simplify((expr + (-1) ** p * expr.subs(T, -T)) / 2)
        if part == 0:
            continue
        slope = decay_exponent(part, dim).slope
        if slope is None:
            continue
        s = sp.nsimplify((-slope - (dim - 1)) / 2)
        best = s if best is None or s < best else best
    return best


def _sphere(net: Any, dim: int, target: Any, which: str, q: float, kmax: int, kmin: int) -> LossExponent:
    dec = decay_exponent(net, dim, which, q=q)
    spec = mercer_spectrum(net, dim, kmax, which, q=q)
    null = _null_degrees(spec)
    profile = _target_profile(target)
    mult = spec.multiplicity.astype(np.float64)
    if profile is not None:
        a = mult * mercer_spectrum(profile, dim, kmax).mu
    else:
        a = np.zeros(kmax + 1)
        given = np.asarray(target, dtype=np.float64).ravel()
        a[: min(len(given), kmax + 1)] = given[: kmax + 1]
    c2 = a ** 2 / mult
    total = float(np.sum(c2))
    frac = float(np.sum(c2[null]) / total) if total > 0 else 0.0
    plateau = 0.5 * float(np.sum(c2[null]))
    ks = [int(k) for k in np.flatnonzero(null & (c2 > 1e-12 * max(total, 1e-300)))]
    where = f"degrees {ks[:6]}{' ...' if len(ks) > 6 else ''} where mu_k = 0"
    _null_warning(frac, plateau, where)
    if dec.slope is None:
        warnings.warn(ANALYTIC_KERNEL.format(label=spec.label), SpectralWarning, stacklevel=3)
        return LossExponent(math.inf, math.nan, 0.0, (math.inf,) * 2, (math.nan,) * 2, (0.0, 0.0), ("nu",),
                            {}, plateau, frac, "sphere")
    m = dim - 1
    s = sp.nsimplify((-dec.slope - m) / 2)
    nu_exact = sp.Rational(m + 2 * s) / m if s.is_Rational else (m + 2 * s) / m
    nu = float(nu_exact)
    exact = {"nu": nu_exact, "s": s}
    fits: dict[str, SlopeFit] = {}
    if profile is not None and profile.expr is not None:
        s_g = _derived_target_s(profile.expr, dim, _live_parities(spec.mu, null))
        if s_g is None:
            return LossExponent(nu, math.inf, math.inf, (nu, nu), (math.inf,) * 2, (math.inf,) * 2, ("nu", "kappa"),
                                exact, plateau, frac, "sphere")
        kappa_exact = (m + 4 * s_g) / sp.Integer(m)
        exact.update(kappa=kappa_exact, s_target=s_g, xi=sp.nsimplify(kappa_exact / nu_exact))
        kappa = float(kappa_exact)
        return LossExponent(nu, kappa, kappa / nu, (nu, nu), (kappa, kappa), (kappa / nu,) * 2, ("nu", "kappa"),
                            exact, plateau, frac, "sphere")
    k = np.arange(kmax + 1)
    live = ~null & (c2 > 0)
    fit = fit_power_law(k[live], c2[live], kmin, None, what="target mass per degree a_k^2/N(d,k)")
    fits["kappa"] = fit
    kappa_deg = (-fit.slope - 1.0, -fit.ci[1] - 1.0, -fit.ci[0] - 1.0)
    kappa, kci = kappa_deg[0] / m, (kappa_deg[1] / m, kappa_deg[2] / m)
    return LossExponent(nu, kappa, kappa / nu, (nu, nu), kci, _ratio_ci(kci, (nu, nu)), ("nu",), exact, plateau,
                        frac, "sphere", fits)


def _data(net: Any, x: Any, target: Any, which: str, imin: int, imax: int | None, matrix: Any) -> LossExponent:
    y = target(np.asarray(x)) if callable(target) else target
    if y is None:
        raise E.KernelalgError(BAD_TARGET.format(obj=target))
    spec = empirical_spectrum(net, x, which, matrix=matrix)
    n = spec.n
    imax = max(imin + 10, n // 10) if imax is None else imax
    c2 = spec.coefficients(y)
    lam = spec.eigenvalues
    null = lam <= n * np.finfo(float).eps * lam[0]
    total = float(np.sum(c2))
    frac = float(np.sum(c2[null]) / total) if total > 0 else 0.0
    plateau = 0.5 * float(np.sum(c2[null]))
    _null_warning(frac, plateau, f"{int(np.sum(null))} Gram eigenvalues at the float64 floor")
    nu_fit = spec.fit(imin, imax)
    tail = spec.tail_mass(y)
    kap_fit = fit_power_law(spec.index, tail, imin, imax, what="target tail mass sum_{j>=i} c_j^2")
    nu, nci = -nu_fit.slope, (-nu_fit.ci[1], -nu_fit.ci[0])
    kappa, kci = -kap_fit.slope, (-kap_fit.ci[1], -kap_fit.ci[0])
    return LossExponent(nu, kappa, kappa / nu, nci, kci, _ratio_ci(kci, nci), (), {}, plateau, frac, "data",
                        {"nu": nu_fit, "kappa": kap_fit})


def loss_exponent(net: Any, data: Any, target: Any, which: str = "ntk", *, q: float = 1.0, kmax: int = 200,
                  kmin: int = 20, imin: int = 10, imax: int | None = None, matrix: Any = None) -> LossExponent:
    """Eigenvalue decay nu, target decay kappa and the loss exponent xi = kappa / nu of L(t) ~ t^{-xi}.

    Formula and source: L(t) ~ (K / (2 nu)) Gamma(kappa/nu) (2 Lam t)^{-kappa/nu} for lambda_i ~ Lam i^{-nu},
    c_i^2 ~ K i^{-kappa-1} (Velikanov & Yarotsky, NeurIPS 2021, Sec. 2); on S^{d-1} with a zonal target
    xi = ((d-1) + 4 s_g) / ((d-1) + 2 s) (module docstring: s, s_g from Bietti & Mairal 2019's singular
    expansion). Gradient descent with step eta has the same xi in t = eta x steps.

    Args:
        net: A dense network (sphere route: derived) or any network (data route: fitted).
        data: The sphere dimension d (int: derived route) or inputs x (n, ...) (fitted route).
        target: Sphere: a zonal profile g(t) (sympy expression in one symbol: kappa derived; a callable:
            kappa fitted) or the coefficients a_k of f* = sum_k a_k P_k(d; <x, e>) (fitted). Data: values y
            (n,) or a callable y(x).
        which: "ntk" (gradient flow of the network) or "nngp" (kernel regression with the NNGP).
        q: Input normalisation |x|^2/d (sphere route).
        kmax: Degrees of the sphere spectrum used for null-space mass and fitted target coefficients.
        kmin: First degree of a fitted target decay.
        imin: First eigenvalue index of the data fits.
        imax: Last eigenvalue index of the data fits (default n / 10).
        matrix: A precomputed Gram matrix on ``data`` (data route).

    Returns:
        A :class:`LossExponent`. Warns (:class:`SpectralWarning`) when the target has mass on the null
        spectrum (plateau), and (:class:`FitRangeWarning`) when a fitted slope drifts with its range.

    Example:
        >>> import kernelalg as ka, sympy as sp
        >>> t = sp.Symbol("t")
        >>> net = ka.Dense(1.0, 0.1) >> ka.Relu() >> ka.Dense(1.0)
        >>> loss_exponent(net, 3, sp.acos(t)).exact["xi"]          # doctest: +SKIP
        4/3
    """
    if isinstance(data, (int, np.integer)) and not isinstance(data, bool):
        return _sphere(net, int(data), target, which, q, kmax, kmin)
    if target is None or isinstance(target, (sp.Basic, DotProductKernel)):
        raise E.KernelalgError(BAD_TARGET.format(obj=target))
    return _data(net, data, target, which, imin, imax, matrix)
