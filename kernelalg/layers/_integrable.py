"""Does the dual of an activation exist? Singularities, domain and growth of phi and phi'.

The kernels E[phi(u) phi(v)] and E[phi'(u) phi'(v)], (u, v) Gaussian with variances s, exist iff phi and phi'
are real on the whole line and phi^2, phi'^2 are integrable against the Gaussian density. Quadrature cannot
tell: Gauss-Hermite of a divergent integral returns a finite number. So before a quadrature dual is built:

* the domain: sympy's ``continuous_domain`` (exact) -- a gap of positive length (log or sqrt of negative
  numbers) is an error, and at each excluded point ``a`` phi^2 must be integrable, i.e.
  ``|x - a| phi(x)^2 -> 0`` (removable points such as sin(x)/x at 0 pass, poles such as 1/x do not);
  where sympy cannot decide, a grid scan of [-12, 12] with a local power-law test at each bad point and at 0 (phi ~
  |x - a|^-p has phi^2 integrable iff p < 1/2, read off |phi(a + 1e-7)| / |phi(a + 1e-4)| = 1000^p);
* a jump in phi (sign, Heaviside): phi' has a Dirac delta and the NTK diverges on the diagonal;
* the growth: c = lim log|phi(x)| / x^2, estimated in mpmath from log|phi| at |x| = 80, 160, 320 (no
  overflow). c growing with x (e.g. exp(x^3)) diverges for every variance: an error at construction.
  0 < c < oo (e.g. exp(x^2 / 8)) converges iff 1 - 4 c s > 0: a condition checked at evaluation on the
  variances actually met (:meth:`~kernelalg.core._program.Builder.require`).

References:
    Bogachev (1998), Gaussian Measures (integrability against the Gaussian density).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import mpmath
import numpy as np
import sympy as sp
from sympy.calculus.util import continuous_domain

NOT_REAL = "{what} is not real-valued for x in {where} (e.g. log or sqrt of a negative number)"
POLE = "{what} has a non-integrable singularity at x = {where} (E[{what}^2] diverges)"
UNDEFINED = "{what} is undefined (NaN) at x = {where}"
SUPER_GAUSSIAN = ("{what} grows faster than any Gaussian decays (log|{what}| / x^2 = {rate:.3g} at |x| = 320 and "
                  "rising), so E[{what}^2] diverges for every input variance")
JUMP = ("phi has a jump, so phi' contains a Dirac delta and E[phi'(u) phi'(v)] is infinite at x = x' (the ill-posed "
        "NTK of a step function; use ka.Sign() for its NNGP, whose NTK factor is 0, or a surrogate gradient)")
GROWTH_REASON = ("{name}: log|phi(x)| / x^2 -> {c:.6g} as |x| -> oo, so E[phi(u)^2] diverges unless 1 - 4 c s > 0 "
                 "for the variance s of its input (s < {smax:.6g}). Fix: smaller inputs or W_std before it, or an "
                 "activation that grows more slowly.")

#: Local power-law test: |phi| ~ |x - a|^-p has phi^2 integrable iff p < 1/2, i.e. iff the ratio
#: |phi(a + 1e-7)| / |phi(a + 1e-4)| = 1000^p is below 1000^(1/2); p >= 0.45 is refused (near the border the
#: integral is too large for any quadrature to mean anything).
_RATIO = 1000.0 ** 0.45
_GRID = np.concatenate([np.linspace(-12.0, 12.0, 2401), [0.0]])
_FAR = (80, 160, 320)


@dataclass(frozen=True)
class Integrability:
    """The verdict on one activation.

    Attributes:
        problem: Why the dual does not exist for any input variance, or None.
        growth: c = lim log|phi(x)| / x^2 when positive and finite (the dual exists for variances
            s < 1 / (4 c)), else 0.
    """

    problem: str | None
    growth: float = 0.0


def analyse(expr: sp.Expr, x: sp.Symbol, evaluate_np: Callable[[sp.Expr, np.ndarray], np.ndarray]) -> Integrability:
    """Check phi = ``expr`` and phi' (sympy, in ``x``); ``evaluate_np(e, grid)`` evaluates e in NumPy."""
    growth = 0.0
    dexpr = sp.diff(expr, x)
    if dexpr.has(sp.DiracDelta):
        return Integrability(JUMP)
    for what, e in (("phi", expr), ("phi'", dexpr)):
        problem = _domain_problem(e, x, what)
        if problem is None:
            rate, problem = _growth(e, x, what)
            growth = max(growth, rate)
        if problem is None:
            problem = _grid_problem(lambda t, e=e: evaluate_np(e, t), what)
        if problem is not None:
            return Integrability(problem)
    return Integrability(None, growth)


def analyse_callable(fn: Callable[[np.ndarray], Any], dfn: Callable[[np.ndarray], Any]) -> Integrability:
    """Check a numeric activation and its derivative on the grid (singularities, NaN); growth is left to the
    evaluation-time finiteness check of the kernel."""
    for what, f in (("phi", fn), ("phi'", dfn)):
        problem = _grid_problem(lambda t, f=f: np.asarray(f(t), dtype=np.float64), what)
        if problem is not None:
            return Integrability(problem)
    return Integrability(None)


def growth_condition(name: str, c: float) -> Callable[[sp.Expr], tuple[sp.Expr, str]]:
    """The evaluation-time condition 1 - 4 c s > 0 for an activation of Gaussian growth rate c > 0."""
    reason = GROWTH_REASON.format(name=name, c=c, smax=1.0 / (4.0 * c))
    return lambda s: (1 - 4 * sp.Float(c, 17) * s, reason)


def _domain_problem(e: sp.Expr, x: sp.Symbol, what: str) -> str | None:
    try:
        gaps = sp.S.Reals - continuous_domain(e, x, sp.S.Reals)
    except (NotImplementedError, ValueError, TypeError, AttributeError):
        return None  # sympy cannot decide: the grid scan decides
    if gaps.is_empty:
        return None
    if not gaps.is_FiniteSet:
        try:
            measure = gaps.measure
        except (NotImplementedError, AttributeError):
            return POLE.format(what=what, where="infinitely many points")  # e.g. tan: pi/2 + n pi
        if measure != 0:
            return NOT_REAL.format(what=what, where=gaps)
        return POLE.format(what=what, where="infinitely many points")
    for a in gaps:
        for side in ("+", "-"):
            try:
                lim = sp.limit(sp.Abs(x - a) * e ** 2, x, a, side)
            except (NotImplementedError, ValueError, TypeError):
                return None
            if not lim.is_zero:
                return POLE.format(what=what, where=a)
    return None


def _grid_problem(f: Callable[[np.ndarray], np.ndarray], what: str) -> str | None:
    try:
        with np.errstate(all="ignore"):
            vals = np.broadcast_to(f(_GRID), _GRID.shape)
    except Exception:  # noqa: BLE001 -- an evaluator that cannot run here proves nothing either way
        return None
    bad = ~np.isfinite(vals)
    bad[-1] = True  # x = 0, where activations put their kinks, is always probed (e.g. sign(x)/sqrt|x| is 0 there)
    nan = np.isnan(vals)
    if np.count_nonzero(nan) > 2:  # NaN on a stretch of the line, not at an isolated point
        pts = _GRID[nan]
        return NOT_REAL.format(what=what, where=f"[{pts.min():g}, {pts.max():g}] (at least)")
    for a in _GRID[bad]:
        with np.errstate(all="ignore"):
            near = np.broadcast_to(np.abs(np.asarray(f(a + np.array([-1e-7, 1e-7, -1e-4, 1e-4])), dtype=np.float64)),
                                   (4,))  # a constant function may return one number
        if np.isinf(near).all():
            continue  # overflow of fast (exp(c x^2)-like) growth, not a singularity: checked at evaluation
        if not np.all(np.isfinite(near)):
            return (UNDEFINED if np.isnan(near).any() else POLE).format(what=what, where=f"{a:g}")
        if np.any(near[:2] > _RATIO * np.maximum(near[2:], 1.0)):
            return POLE.format(what=what, where=f"{a:g}")
    return None


def _growth(e: sp.Expr, x: sp.Symbol, what: str) -> tuple[float, str | None]:
    """(c, problem): the Gaussian growth rate of |e| at +-infinity from log|e| at |x| = 80, 160, 320."""
    try:
        f = sp.lambdify(x, e, modules="mpmath")
        rates = []
        with mpmath.workdps(30):
            for sign in (1, -1):  # three offsets, the largest rate: robust to zeros of oscillating functions
                rates.append([max(max(_rate(f, sign, _FAR[i] + d, _FAR[i + 1] + d) for d in (0.0, 0.3, 0.7)), 0.0)
                              for i in range(2)])
    except (TypeError, ValueError, ZeroDivisionError, NameError, OverflowError):
        return 0.0, None  # not evaluable far out in mpmath: the kernel's finiteness check remains
    c = 0.0
    for near, far in rates:
        if far > 1e-3 and far > 1.1 * near:
            return 0.0, SUPER_GAUSSIAN.format(what=what, rate=far)
        c = max(c, far if far > 1e-3 else 0.0)
    return c, None


def _rate(f: Callable, sign: int, r1: float, r2: float) -> float:
    """(log|f(sign r2)| - log|f(sign r1)|) / (r2^2 - r1^2) in mpmath; -inf where f is 0 at either point (no rate:
    a zero, or an interval where f vanishes such as relu(sin(x)) at sin(x) < 0, says nothing about growth)."""
    vals = [abs(f(mpmath.mpf(sign * r))) for r in (r1, r2)]
    if not all(vals):
        return float("-inf")
    return float((mpmath.log(vals[1]) - mpmath.log(vals[0])) / (r2 ** 2 - r1 ** 2))
