"""``Tanh`` and ``Sigmoid``: activations without a closed-form dual, by Gauss-Hermite with a stated error bound.

Their duals T = E[phi(u) phi(v)] and Tdot = E[phi'(u) phi'(v)] are computed by the 2-D Gauss-Hermite rule of
:mod:`kernelalg.layers._generic` (Cholesky factor of the covariance, both orders averaged). The degree n is the
smallest for which the error estimate below is at most ``tol`` at every variance up to ``max_variance``; the
layer's route states it ("Gauss-Hermite quadrature, degree n, error <= eps for variances <= V"), and evaluation
refuses inputs whose pre-activation variance exceeds ``max_variance`` (where the estimate no longer holds).

The estimate (docs/activations.md). In the standard normal variable z of the rule, u = sqrt(s) z, tanh(u) has
its poles nearest the real line at z = +-i pi / (2 sqrt(s)) (the logistic sigmoid, (1 + tanh(u / 2)) / 2, at
+-i pi / sqrt(s)): the integrand is analytic in the strip |Im z| < d = pole / sqrt(s_max). Gauss-Hermite converges
root-exponentially for such integrands (Wang & Zhang 2023, arXiv:2312.07940): the error is of order
exp(-2 y sqrt(n)) for any strip |Im z| <= y < d, times the growth exp(y^2 / 2) of the Gaussian weight there and
the size of the integrand on the strip: |tanh(a + ib)| <= 1 / cos(b) for |b| < pi / 2, so with y = t d,
|phi(u) phi(v)| <= 1 / cos(pi t / 2)^2 (k = 2) and |phi'(u) phi'(v)| <= 1 / cos(pi t / 2)^4 (k = 4). Hence

    eps(n, s) = A min_{0 < t < 1} exp(-2 t d sqrt(n) + (t d)^2 / 2) / cos(pi t / 2)^k,   d = pole / sqrt(s),

relative to sqrt(T(x, x) T(x', x')) (resp. Tdot), the larger of k = 2 and k = 4. The form is the classical
strip estimate; the constant A = 4 is calibrated, not proven: over a grid of variances 0.25..16, correlations
0..0.999 and degrees 16..128 against a converged reference, the measured error / the estimate with A = 1 was at
most 1.2 (T) and 1.43 (Tdot). The tests check the estimate against mpmath at 30 digits on other points.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import sympy as sp

from kernelalg.core import _errors as E
from kernelalg.core._layer import Layer, require_gaussian
from kernelalg.core._program import Builder, KernelState
from kernelalg.backends import NUMPY_TABLE, evaluate, lower_elementwise
from kernelalg.layers._activations import keep_shapes
from kernelalg.layers._compose import composable, compose
from kernelalg.layers._generic import X, quadrature_dual

#: Calibrated constant A of the error estimate (module docstring).
BOUND_CONSTANT = 4.0
#: Largest Gauss-Hermite degree these layers choose (numpy's nodes are finite up to about 300; the 2-D grid has
#: n^2 points per input pair).
MAX_SIGMOIDAL_DEGREE = 256
#: Distance of the nearest poles of phi from the real axis, in the pre-activation u.
TANH_POLE = math.pi / 2
SIGMOID_POLE = math.pi

_T = np.linspace(0.001, 0.999, 999)

UNREACHABLE = ("{name}: an error bound of tol = {tol:g} at variances up to max_variance = {var:g} needs a Gauss-Hermite "
               "degree above {limit} (degree {limit} reaches {best:.2g}). Fix: a looser tol (e.g. tol={best:.0e}) or a "
               "smaller max_variance (e.g. {name}(tol={tol:g}, max_variance={vmax:.3g})).")
BAD_SETTING = "{name}: {what} must be a number > 0, got {value!r}. Fix: e.g. {name}(tol=1e-10, max_variance=1.0)."
VARIANCE_REASON = ("{name}: an input variance exceeds max_variance = {var:g}, up to which its Gauss-Hermite error bound "
                   "{eps:.2g} (degree {n}) holds. Fix: {name}(max_variance=...) with a larger bound and a looser tol, "
                   "or smaller W_std/inputs before it.")


def error_bound(n: int, pole: float, variance: float) -> float:
    """The error estimate eps(n, s) of the T and Tdot quadratures (module docstring), relative to their scale."""
    y = _T * pole / math.sqrt(variance)
    with np.errstate(over="ignore", under="ignore"):
        base = np.exp(-2 * y * math.sqrt(n) + y * y / 2)
        return float(BOUND_CONSTANT * max(np.min(base / np.cos(np.pi * _T / 2) ** k) for k in (2, 4)))


def choose_degree(name: str, pole: float, tol: float, max_variance: float) -> tuple[int, float]:
    """The smallest degree whose error estimate at ``max_variance`` is <= tol, and that estimate."""
    for n in range(2, MAX_SIGMOIDAL_DEGREE + 1):
        eps = error_bound(n, pole, max_variance)
        if eps <= tol:
            return n, eps
    best = error_bound(MAX_SIGMOIDAL_DEGREE, pole, max_variance)
    lo, hi = 0.0, max_variance
    for _ in range(60):  # the largest variance reachable at tol (the estimate grows with the variance)
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if error_bound(MAX_SIGMOIDAL_DEGREE, pole, mid) <= tol else (lo, mid)
    raise E.KernelalgError(UNREACHABLE.format(name=name, tol=tol, var=max_variance, limit=MAX_SIGMOIDAL_DEGREE,
                                              best=best, vmax=lo))


def _positive(name: str, what: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if isinstance(value, bool) or not (math.isfinite(v) and v > 0):
        raise E.KernelalgError(BAD_SETTING.format(name=name, what=what, value=value))
    return v


def _sigmoidal(name: str, phi: sp.Expr, pole: float, tol: Any, max_variance: Any) -> Layer:
    tol, max_variance = _positive(name, "tol", tol), _positive(name, "max_variance", max_variance)
    n, eps = choose_degree(name, pole, tol, max_variance)
    dphi = sp.diff(phi, X)
    dual = quadrature_dual(name, lower_elementwise(phi, X), lower_elementwise(dphi, X),
                           lambda a: evaluate(phi, {X: a}, NUMPY_TABLE),
                           lambda a: evaluate(dphi, {X: a}, NUMPY_TABLE), n)
    route = f"Gauss-Hermite quadrature, degree {n}, error <= {eps:.1e} for variances <= {max_variance:g}"
    reason = VARIANCE_REASON.format(name=name, var=max_variance, eps=eps, n=n)
    limit = sp.Float(max_variance, 17) * (1 + sp.Float(1e-12))

    def kernel(b: Builder, st: KernelState, p: Mapping, static: Mapping) -> KernelState:
        if st.composable is not None:
            return keep_shapes(b, st, compose(b, st, phi, name))
        require_gaussian(st, name)
        b.require([(limit - v, reason) for v in (st.cov1, st.cov2)])
        d1, d2 = dual(st.cov1, st.nngp, st.cov2), dual(st.cov2, st.nngp, st.cov1)
        return keep_shapes(b, st, KernelState(d1.Tdiag, d2.Tdiag, d1.T, d1.Tdot * st.ntk, gaussian=False,
                                              width=st.width, after=name, layout=st.layout,
                                              composable=composable(st, phi, name)))

    def finite(p: Mapping, static: Mapping, in_shape: tuple, width: int) -> tuple:
        f = lower_elementwise(phi, X)
        return (lambda key: {}), (lambda params, x: f(x)), in_shape

    return Layer(name, kernel, static=(("tol", tol), ("max_variance", max_variance)), finite=finite,
                 role="activation", routes=((name, route),), identity="sympy:" + sp.srepr(phi))


def Tanh(tol: float = 1e-10, max_variance: float = 1.0) -> Layer:
    """tanh(x), its dual by Gauss-Hermite with the error bound ``tol`` (relative, in exact arithmetic) at
    pre-activation variances up to ``max_variance`` (the degree is chosen for that; larger variances are refused).

    The defaults need degree 135. tanh is hard for Gauss-Hermite at large variances (its poles at u = i pi / 2
    come close to the real axis of the rule's variable z = u / sqrt(s)): tol = 1e-6 up to variance 4 needs degree
    253, tol = 1e-8 up to variance 2 degree 191, and beyond variance ~4.3 no degree <= 256 reaches 1e-6.
    """
    return _sigmoidal("Tanh", sp.tanh(X), TANH_POLE, tol, max_variance)


def Sigmoid(tol: float = 1e-10, max_variance: float = 4.0) -> Layer:
    """The logistic sigmoid 1 / (1 + exp(-x)), its dual by Gauss-Hermite with the error bound ``tol`` (relative, in
    exact arithmetic) at pre-activation variances up to ``max_variance`` (larger variances are refused). Its poles
    are twice as far from the real axis as tanh's (sigmoid(x) = (1 + tanh(x / 2)) / 2): 4x the variance range."""
    return _sigmoidal("Sigmoid", 1 / (1 + sp.exp(-X)), SIGMOID_POLE, tol, max_variance)
