"""Decay of the Mercer eigenvalues from the singularities of k(t) at t = +-1.

If k(t) = (analytic) + a (1 - t)^s + ... near t = 1 with s not an integer, then mu_k ~ C k^{-(d-1)-2s}
(Bietti & Mairal 2019, Thm. 1; Bietti & Bach 2021). A term (1 + t)^s at t = -1 gives the same rate with a
factor (-1)^k (it can cancel the +1 term on odd or even k: e.g. odd k >= 3 vanish for the bias-free
two-layer ReLU kernels). A kernel analytic on [-1, 1] has eigenvalues decaying faster than any power.

Two symbolic routes to s:

* ``"series"``: sympy Puiseux expansion; the first odd power w^{2s} gives s (exact). In the angle
  (t = cos theta, w = theta) when acos(t) and sqrt(1 - t^2) are the only non-polynomial parts (fast), else
  of k(1 - w^2) (can take minutes for deep networks).
* ``"differences"``: the closed form evaluated in mpmath at 160 digits; the one-sided 8th difference
  sum_j (-1)^j C(8, j) k(1 - (1 + j) u) is O(u^8) for the analytic part and ~ u^s for the singular one, so
  its log-slope between u = 1e-8 and 1e-12 is s (any depth, milliseconds; s is rounded to the nearest
  quarter when within 1e-3; s >= 7.5 reads as analytic).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import mpmath
import numpy as np
import sympy as sp

from kernelalg.core import _errors as E
from ._sphere import T, DotProductKernel, _angle_form, as_kernel, check_dim

NO_CLOSED_FORM = ("decay_exponent needs the closed form of k(t) (got {label} without one). Fix: pass a network or "
                  "a sympy expression, or fit the decay numerically with mercer_spectrum(...).fit().")
BAD_METHOD = "method={method!r} is not known. Fix: use 'auto', 'series' or 'differences'."


@dataclass(frozen=True)
class PowerFit:
    """Least-squares fit log y = intercept + slope log k (+ sum_j c_j k^-j) over degrees kmin..kmax.

    Attributes:
        slope: Fitted exponent (negative for decay).
        intercept: log of the prefactor.
        kmin: First degree used.
        kmax: Last degree used.
        nonzero_fraction: Fraction of the degrees in range that are non-vanishing.
        corrections: Coefficients c_j of the k^{-j} correction terms in the exponent.
    """

    slope: float
    intercept: float
    kmin: int
    kmax: int
    nonzero_fraction: float = 1.0
    corrections: tuple = ()

    def __call__(self, k: Any) -> np.ndarray:
        k = np.asarray(k, dtype=np.float64)
        extra = sum(c * k ** -(j + 1) for j, c in enumerate(self.corrections))
        return np.exp(self.intercept + extra) * k ** self.slope


@dataclass(frozen=True)
class DecayExponent:
    """Predicted power-law decay mu_k ~ k^{slope} of the Mercer eigenvalues on S^{d-1}.

    Attributes:
        dim: d.
        s_plus: Exponent s of the leading non-analytic term (1 - t)^s at t = 1 (None: analytic).
        s_minus: Same at t = -1 for (1 + t)^s.
        slope: -(d - 1) - 2 min(s_plus, s_minus) (None if k is analytic at both ends: faster than any power).
        method: "series" or "differences".
        coefficient: Coefficient a of a (1 - t)^{s_plus} (series route only, else None).
    """

    dim: int
    s_plus: Any
    s_minus: Any
    slope: Any
    method: str
    coefficient: Any = None

    @property
    def rate(self) -> float | None:
        """-slope as a float (mu_k ~ k^{-rate}), or None."""
        return None if self.slope is None else -float(self.slope)


def _to_rational(x: float, tol: float = 1e-3) -> Any:
    f = Fraction(x).limit_denominator(4)
    return sp.Rational(f.numerator, f.denominator) if abs(float(f) - x) < tol else x


def _leading_odd(ser: sp.Expr, var: sp.Symbol) -> tuple[Any, Any]:
    """(exponent, coefficient) of the lowest power of ``var`` that is not an even integer, or (None, None)."""
    best = None
    for term in sp.Add.make_args(sp.expand(ser)):
        coef, e = term.as_coeff_exponent(var)
        if coef.has(var):
            if coef.has(sp.log):  # (1 - t)^n log(1 - t): treat as exponent n
                return e, coef
            continue
        if e.is_integer and e.is_even:
            continue
        if best is None or e < best[0]:
            best = (e, coef)
    return (None, None) if best is None else best


def _series_exponent(expr: sp.Expr, sign: int, order: int = 8) -> tuple[Any, Any]:
    """Leading singular term at t = sign via a Puiseux series (in the angle when the closed form allows)."""
    expr = expr.subs(T, sign * T)
    th = sp.Symbol("theta", positive=True)
    form = _angle_form(sp.nsimplify(expr, rational=True), th)
    if not any(isinstance(a, (sp.acos, sp.asin)) for a in sp.preorder_traversal(form)):
        # t = cos(theta): 1 - t = theta^2/2 + O(theta^4), so a (1 - t)^s = a 2^{-s} theta^{2s} (1 + ...).
        e, c = _leading_odd(sp.series(form, th, 0, order).removeO(), th)
        if e is None:
            return None, None
        s = sp.nsimplify(e / 2)
        return s, sp.nsimplify(sp.simplify(c * 2 ** s))
    w = sp.Symbol("w", positive=True)  # general closed form: t = 1 - w^2 (slow for deep networks)
    e, c = _leading_odd(sp.series(expr.subs(T, 1 - w ** 2), w, 0, order).removeO(), w)
    if e is None:
        return None, None
    return sp.nsimplify(e / 2), sp.nsimplify(c)


def _difference_exponent(kern: DotProductKernel, sign: int, order: int = 8, dps: int = 160) -> Any:
    """s from one-sided m-th differences D(u) = sum_j (-1)^j C(m, j) k(sign (1 - (1 + j) u)) ~ u^{min(s, m)}."""
    us = (mpmath.mpf("1e-8"), mpmath.mpf("1e-12"))
    with mpmath.workdps(dps):
        vals = []
        for u in us:
            d = mpmath.fsum((-1) ** j * mpmath.binomial(order, j) * kern.mp(sign * (1 - (1 + j) * u))
                            for j in range(order + 1))
            vals.append(abs(d))
        if vals[0] == 0 or vals[1] == 0:
            return None
        slope = float(mpmath.log(vals[1] / vals[0]) / mpmath.log(us[1] / us[0]))
    if slope > order - 0.5:
        return None
    return _to_rational(slope)


def singular_exponent(kern: DotProductKernel, at: int = 1, method: str = "differences") -> tuple[Any, Any]:
    """(s, coefficient) of the leading non-analytic term |1 -+ t|^s of k(t) at t = ``at`` (+1 or -1).

    Returns (None, None) when no such term is found (k analytic there up to the order examined).
    """
    if kern.expr is None:
        raise E.KernelalgError(NO_CLOSED_FORM.format(label=kern.label))
    if method == "series":
        return _series_exponent(kern.expr, at)
    if method == "differences":
        return _difference_exponent(kern, at), None
    raise E.KernelalgError(BAD_METHOD.format(method=method))


def decay_exponent(net: Any, dim: int, which: str = "ntk", *, q: float = 1.0, method: str = "auto") -> DecayExponent:
    """The derived decay mu_k ~ k^{-(d-1)-2s} of a kernel's Mercer eigenvalues on S^{dim-1}.

    Args:
        net: Dense network, sympy expression in one symbol, or :class:`DotProductKernel` (needs a closed form).
        dim: d.
        which: "ntk" or "nngp".
        q: Input normalisation |x|^2/d.
        method: "series" (exact Puiseux expansion), "differences" (high-precision finite differences),
            or "auto" (series when acos/asin only take +-t, i.e. the angle form is elementary; else differences).

    Returns:
        A :class:`DecayExponent`; e.g. two-layer ReLU: NTK slope -d (s = 1/2), NNGP slope -d-2 (s = 3/2).
    """
    dim = check_dim(dim)
    kern = as_kernel(net, which, q)
    if kern.expr is None:
        raise E.KernelalgError(NO_CLOSED_FORM.format(label=kern.label))
    if method == "auto":
        args = [f.args[0] for f in kern.expr.atoms(sp.acos, sp.asin)]
        simple = all(sp.expand(a - T) == 0 or sp.expand(a + T) == 0 for a in args)
        method = "series" if simple else "differences"
    sp_plus, coef = singular_exponent(kern, 1, method)
    sp_minus, _ = singular_exponent(kern, -1, method)
    present = [s for s in (sp_plus, sp_minus) if s is not None]
    slope = None
    if present:
        smin = min(present, key=float)
        slope = -(dim - 1) - 2 * smin
    return DecayExponent(dim, sp_plus, sp_minus, slope, method, coef)
