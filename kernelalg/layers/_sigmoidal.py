"""``Tanh`` and ``Sigmoid``: activations without a closed-form dual, by polar quadrature with a stated error estimate.

Their duals T = E[phi(u) phi(v)] and Tdot = E[phi'(u) phi'(v)] are computed by the polar rule of
:mod:`kernelalg.layers._kinked` (whitened polar coordinates, Gauss-Legendre over the four sign arcs of the angle, a
Gauss rule for the weight R exp(-R^2 / 2) on the radius; n points each). Why it suits these functions: on each arc
the integrand, as a function of the radius R, is f(a R) g(b R) with f, g odd up to a constant (tanh, and
sigmoid = (1 + tanh(x / 2)) / 2), so its parts are functions of R^2 times at most R, whose singularities (the poles
of tanh at u = +-i pi / 2) lie on the negative axis of R^2, away from the integration range. A 2-D Gauss-Hermite rule
instead sees the poles at distance pi / (2 sqrt(s)) from its real axis and converges only root-exponentially:
measured at variance 4 (rho 0.99, against a converged rule), Gauss-Hermite degree 135 is off by 3e-6 (Tdot), the
polar rule with 64 x 64 points per arc by 5e-15.

The degree n is the smallest of :data:`DEGREES` whose error estimate is at most ``tol`` up to ``max_variance``; the
layer's route states it ("polar quadrature, n x n points per arc, estimated error <= eps for variances <= V"), and
evaluation refuses inputs whose pre-activation variance exceeds ``max_variance`` (where the estimate was not made).

The estimate (an embedded-rule estimate, not a proof): on a grid of variances (0.05 .. max_variance, geometric, both
equal and 4:1) and correlations (+-1, +-0.999, +-0.9, 0, 0.5, 0.99), the largest difference between the n-point and
the 2n-point rule, relative to sqrt(T(x, x) T(x', x')) (resp. Tdot), times :data:`SAFETY` = 10 (for points between
the grid's), and at least :data:`FLOOR` (rounding). The 2n-point rule converges much faster than the n-point one,
so the difference is the n-point rule's error. The tests check the stated estimate against mpmath at 30 digits
(variances up to 4 for tanh, 16 for the sigmoid) and against an independent adaptive quadrature (scipy) at
variances up to 16 / 64.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import sympy as sp

from kernelalg.core import _errors as E
from kernelalg.core._duals import corr
from kernelalg.core._layer import Layer, require_gaussian
from kernelalg.core._program import Builder, KernelState
from kernelalg.backends import NUMPY_TABLE, evaluate, lower_elementwise
from kernelalg.layers._activations import keep_shapes
from kernelalg.layers._compose import composable, compose, polar_dual
from kernelalg.layers._generic import X
from kernelalg.layers._kinked import polar_fns

#: Points per arc (radial and angular) the layers choose from.
DEGREES = (16, 24, 32, 48, 64, 96)
#: Factor on the largest embedded difference over the grid (module docstring).
SAFETY = 10.0
#: Smallest stated estimate: float64 rounding of the sums.
FLOOR = 1e-14
_RHOS = np.array([-1.0, -0.999, -0.9, 0.0, 0.5, 0.9, 0.99, 0.999, 1.0])
#: The variances at which the estimates are stored.
VARIANCES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0)
#: {name: {points per arc: estimate at each of VARIANCES}}, from benchmarks/make_sigmoidal_estimates.py
#: (error_estimate; tests/test_tanh_sigmoid.py recomputes entries).
ESTIMATES: dict = {
    "Tanh": {
        16: (4.1e-10, 6.8e-09, 5.4e-08, 3.3e-06, 2.0e-05, 4.9e-04, 1.4e-03, 1.6e-02, 1.4e-02, 1.3e-01, 3.2e-01, 3.7e-01),
        24: (3.8e-14, 6.3e-13, 4.9e-11, 1.8e-09, 9.5e-08, 2.5e-06, 3.7e-05, 5.5e-04, 1.1e-03, 1.1e-02, 9.9e-03, 7.4e-02),
        32: (2.4e-14, 2.2e-14, 4.2e-14, 8.6e-13, 5.1e-10, 1.4e-08, 1.2e-06, 2.2e-05, 1.6e-04, 5.6e-04, 4.5e-03, 7.9e-03),
        48: (8.3e-14, 8.3e-14, 9.4e-14, 1.5e-13, 2.6e-13, 1.1e-11, 3.7e-10, 7.4e-08, 1.6e-06, 2.0e-05, 1.5e-04, 4.3e-04),
        64: (7.5e-14, 7.3e-14, 9.4e-14, 1.5e-13, 2.3e-13, 3.6e-13, 1.5e-12, 3.6e-10, 8.8e-09, 5.6e-07, 8.1e-06, 5.6e-05),
        96: (1.6e-13, 1.6e-13, 1.6e-13, 2.6e-13, 4.1e-13, 6.3e-13, 9.3e-13, 1.3e-12, 5.2e-12, 2.0e-10, 3.4e-08, 6.2e-07),
    },
    "Sigmoid": {
        16: (2.7e-13, 1.2e-11, 4.1e-10, 6.8e-09, 5.4e-08, 3.3e-06, 2.0e-05, 4.9e-04, 1.4e-03, 1.6e-02, 1.4e-02, 1.3e-01),
        24: (1.0e-14, 1.2e-14, 1.4e-14, 6.3e-13, 4.9e-11, 1.8e-09, 9.5e-08, 2.5e-06, 3.7e-05, 5.5e-04, 1.1e-03, 1.1e-02),
        32: (1.0e-14, 1.0e-14, 1.2e-14, 1.7e-14, 4.2e-14, 8.6e-13, 5.1e-10, 1.4e-08, 1.2e-06, 2.2e-05, 1.6e-04, 5.6e-04),
        48: (1.1e-14, 1.8e-14, 3.4e-14, 5.6e-14, 9.4e-14, 1.5e-13, 2.6e-13, 1.1e-11, 3.7e-10, 7.4e-08, 1.6e-06, 2.0e-05),
        64: (1.5e-14, 2.3e-14, 3.7e-14, 5.6e-14, 9.4e-14, 1.5e-13, 2.3e-13, 3.6e-13, 1.5e-12, 3.6e-10, 8.8e-09, 5.6e-07),
        96: (1.9e-14, 2.6e-14, 4.6e-14, 8.8e-14, 1.6e-13, 2.6e-13, 4.1e-13, 6.3e-13, 9.3e-13, 1.3e-12, 5.2e-12, 2.0e-10),
    },
}

UNREACHABLE = ("{name}: an estimated error of tol = {tol:g} at variances up to max_variance = {var:g} needs more than "
               "{limit} x {limit} points per arc ({limit} reach {best:.2g}; estimates are stored up to variance 512). Fix: a looser tol (e.g. tol={best:.0e}) or "
               "a smaller max_variance (e.g. {name}(tol={tol:g}, max_variance={vmax:.3g})).")
BAD_SETTING = "{name}: {what} must be a number > 0, got {value!r}. Fix: e.g. {name}(tol=1e-10, max_variance=16.0)."
VARIANCE_REASON = ("{name}: an input variance exceeds max_variance = {var:g}, up to which its quadrature's error estimate "
                   "{eps:.2g} ({n} x {n} points per arc) was made. Fix: {name}(max_variance=...) with a larger bound "
                   "(and a looser tol if needed), or smaller W_std/inputs before it.")


def _grid(variance: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(s11, s12, s22) of the estimate's grid at one variance v: pairs (v, v) and (v, v / 4) times the correlations."""
    s11 = np.repeat([variance, variance], len(_RHOS))
    s22 = np.repeat([variance, variance / 4], len(_RHOS))
    return s11, np.tile(_RHOS, 2) * np.sqrt(s11 * s22), s22


def error_estimate(name: str, n: int, variance: float) -> float:
    """The embedded-rule error estimate of the n-point rule for ``name`` ("Tanh" or "Sigmoid") at ``variance``
    (module docstring): SAFETY x the largest |Q_n - Q_2n| / scale over the grid, at least FLOOR. Computes; the
    layers read the stored :data:`ESTIMATES` (benchmarks/make_sigmoidal_estimates.py)."""
    phi = _PHIS[name]
    npcorr = NUMPY_TABLE.functions[corr]
    s11, s12, s22 = _grid(variance)
    worst = 0.0
    for expr in (phi, sp.diff(phi, X)):
        f = (lambda e: (lambda a: np.asarray(evaluate(e, {X: a}, NUMPY_TABLE), dtype=np.float64)))(expr)
        coarse, fine = polar_fns(f, f, np, npcorr, n, n), polar_fns(f, f, np, npcorr, 2 * n, 2 * n)
        scale = np.sqrt(fine[1](s11) * fine[1](s22))
        for q in (coarse[0](s11, s12, s22), fine[0](s11, s12, s22), scale):
            if not np.all(np.isfinite(q)):
                raise E.InternalError(f"{name}: a non-finite quadrature value at variance {variance:g}.")
        worst = max(worst, float(np.max(np.abs(coarse[0](s11, s12, s22) - fine[0](s11, s12, s22)) / scale)),
                    float(np.max(np.abs(coarse[1](s11) - fine[1](s11)) / fine[1](s11))))
    return max(SAFETY * worst, FLOOR)


def stated_estimate(name: str, n: int, max_variance: float) -> float:
    """The estimate stated for variances up to ``max_variance``: the largest stored one over the ladder up to the
    first ladder variance >= max_variance (the error grows with the variance); inf beyond the ladder."""
    k = int(np.searchsorted(VARIANCES, max_variance * (1 - 1e-12)))
    if k >= len(VARIANCES):
        return math.inf
    return max(ESTIMATES[name][n][: k + 1])


def choose_degree(name: str, tol: float, max_variance: float) -> tuple[int, float]:
    """The smallest of :data:`DEGREES` whose stated estimate up to ``max_variance`` is <= tol, and that estimate."""
    for n in DEGREES:
        eps = stated_estimate(name, n, max_variance)
        if eps <= tol:
            return n, eps
    best = stated_estimate(name, DEGREES[-1], max_variance)
    top = max([v for v in VARIANCES if stated_estimate(name, DEGREES[-1], v) <= tol], default=0.0)
    raise E.KernelalgError(UNREACHABLE.format(name=name, tol=tol, var=max_variance, limit=DEGREES[-1], best=best,
                                              vmax=top))


def _positive(name: str, what: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if isinstance(value, bool) or not (math.isfinite(v) and v > 0):
        raise E.KernelalgError(BAD_SETTING.format(name=name, what=what, value=value))
    return v


def _sigmoidal(name: str, phi: sp.Expr, tol: Any, max_variance: Any) -> Layer:
    tol, max_variance = _positive(name, "tol", tol), _positive(name, "max_variance", max_variance)
    n, eps = choose_degree(name, tol, max_variance)
    dual = polar_dual(name, (phi, phi), (), n)
    route = f"polar quadrature, {n} x {n} points per arc, estimated error <= {eps:.1e} for variances <= {max_variance:g}"
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


#: phi of each layer; the sigmoid as (1 + tanh(x / 2)) / 2, whose derivative (1 - tanh(x / 2)^2) / 4 stays finite
#: where exp(-x) overflows (x < -88 in float32: the outer nodes at large variances).
_PHIS = {"Tanh": sp.tanh(X), "Sigmoid": (1 + sp.tanh(X / 2)) / 2}


def Tanh(tol: float = 1e-10, max_variance: float = 16.0) -> Layer:
    """tanh(x), its dual by polar quadrature with the estimated error ``tol`` (relative) at pre-activation variances
    up to ``max_variance`` (the points per arc are chosen for that; larger variances are refused).

    The defaults take 48 x 48 points per arc. The integrand's scale shrinks like 1 / sqrt(s): Tdot at variance 64
    needs 96 points per arc for 1e-9, and beyond a few hundred no rule here reaches 1e-6 (the error says so).
    """
    return _sigmoidal("Tanh", _PHIS["Tanh"], tol, max_variance)


def Sigmoid(tol: float = 1e-10, max_variance: float = 64.0) -> Layer:
    """The logistic sigmoid 1 / (1 + exp(-x)), its dual by polar quadrature with the estimated error ``tol``
    (relative) at pre-activation variances up to ``max_variance`` (larger variances are refused). sigmoid(x) =
    (1 + tanh(x / 2)) / 2: the same accuracy as tanh at 4x the variance."""
    return _sigmoidal("Sigmoid", _PHIS["Sigmoid"], tol, max_variance)
