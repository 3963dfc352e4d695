"""Closed-form duals of activations: T(s) = E[phi(u) phi(v)] and Tdot(s) = E[phi'(u) phi'(v)].

Here (u, v) ~ N(0, [[s11, s12], [s12, s22]]). Every function in this module is pure sympy: it takes
sympy expressions for s11, s12, s22 and the activation's hyperparameters and returns sympy
expressions. Each closed form is proven in ``proofs/`` (Price's theorem dT/ds12 = Tdot plus the value
at s12 = 0, or an equivalent derivation).

Numerical form. Every dual is written in the variances and the correlation node ``corr`` (never in s12 alone)
so that the backends' snapping of |rho| to 1 pins the diagonal: at x = x' the pair formula evaluates the
same function as the variance map ``Tdiag``, at any depth, instead of drifting away from it where the
correlation map is expanding (the chaotic phase). Determinants are written without cancellation
(s11 s22 - s12^2 = s11 s22 (1 - rho^2), exactly 0 on the diagonal), and the unbounded duals are scaled so
that no intermediate grows faster than the result (no s^2 or s^4 overflow while the kernel is representable):
for p_i = 1 + k s_i, e_i = k s_i / p_i and r_i = 1 / p_i lie in [0, 1] and
(p1 p2 - k^2 s12^2) / (p1 p2) = (1 - rho^2) e1 e2 + r1 + r2 - r1 r2 (a sum of non-negative terms).

References:
    Cho & Saul (2009), Kernel methods for deep learning (arc-cosine kernels).
    Williams (1997), Computing with infinite networks (erf).
    Novak et al. (2020), Neural Tangents, ICLR (conventions of the activation parameters).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import sympy as sp

Expr = sp.Expr


@dataclass(frozen=True)
class Dual:
    """The dual pair of an activation, as sympy expressions.

    Attributes:
        T: E[phi(u) phi(v)].
        Tdot: E[phi'(u) phi'(v)] (or, for surrogate gradients, E[phi'(u) psi'(v)]).
        Tdiag: T at s11 = s12 = s22 = s, in the symbol of ``s11`` (simplified variance map).
    """

    T: Expr
    Tdot: Expr
    Tdiag: Expr


class corr(sp.Function):
    """The correlation rho = s12 / sqrt(s11 s22) as an explicit node.

    Mathematically it is just that quotient (``plain`` removes the node; sympy differentiates through
    it). The backends lower it with |rho| snapped to exactly 1 within a few ulps, so that identical (or
    parallel) inputs give exactly sqrt(1 - rho^2) = 0 and arccos(rho) = 0 instead of amplified rounding
    noise (the arc-cosine family has a square-root singularity at |rho| = 1).
    """

    nargs = 3

    def fdiff(self, argindex: int = 1) -> Expr:
        return sp.diff(plain(self), self.args[argindex - 1])

    def _latex(self, printer: object) -> str:
        return printer._print(plain(self))  # type: ignore[attr-defined]


def _ratio_value(k: object, s: object) -> object:
    return k * s / (1 + k * s)  # type: ignore[operator]


class ratio(sp.Function):
    """e = k s / (1 + k s) as an explicit node, so that products of per-sample ratios (e1 e2) stay products of
    ratios in the program (sympy would merge them into k^2 s11 s22 / (p1 p2) and CSE would extract s11 s22,
    which overflows float32 at s ~ 2e19). ``plain`` removes the node; every backend lowers it as written.
    """

    nargs = 2
    lowering = {"jax": _ratio_value, "numpy": _ratio_value, "mpmath": _ratio_value}

    def fdiff(self, argindex: int = 1) -> Expr:
        return sp.diff(plain(self), self.args[argindex - 1])

    def _latex(self, printer: object) -> str:
        return printer._print(plain(self))  # type: ignore[attr-defined]


def plain(expr: Expr) -> Expr:
    """Replace every :class:`corr` node by s12 / sqrt(s11 s22) and every :class:`ratio` by k s / (1 + k s)."""
    expr = expr.replace(lambda e: isinstance(e, ratio), lambda e: _ratio_value(*e.args))
    return expr.replace(lambda e: isinstance(e, corr), lambda e: e.args[1] / sp.sqrt(e.args[0] * e.args[2]))


def _rho(s11: Expr, s12: Expr, s22: Expr) -> Expr:
    return corr(s11, s12, s22)


def _theta(s11: Expr, s12: Expr, s22: Expr) -> Expr:
    return sp.acos(_rho(s11, s12, s22))


def _pinned_s12(s11: Expr, s12: Expr, s22: Expr) -> Expr:
    """s12 written as rho sqrt(s11) sqrt(s22): exactly sqrt(s11 s22) where the correlation is pinned to 1."""
    return _rho(s11, s12, s22) * sp.sqrt(s11) * sp.sqrt(s22)


def _on_diagonal(expr: Expr, s11: Expr, s12: Expr, s22: Expr) -> Expr:
    """``expr`` (written in s11, s22 and rho) at rho = 1, s22 = s11: the variance map of the same formula."""
    return sp.expand(expr.xreplace({_rho(s11, s12, s22): sp.Integer(1)}).xreplace({s22: s11}))


def _ratios(k: Expr, s: Expr) -> tuple[Expr, Expr]:
    """(e, r) = (k s / (1 + k s), 1 / (1 + k s)), both in [0, 1] for k >= 0."""
    return ratio(k, s), 1 / (1 + k * s)


def _scaled_det(rho: Expr, e1: Expr, e2: Expr, r1: Expr, r2: Expr) -> Expr:
    """1 - rho^2 e1 e2 without cancellation, symmetric in the two arguments: (p1 p2 - k^2 s12^2) / (p1 p2)."""
    return (1 - rho**2) * e1 * e2 + (r1 + r2 - r1 * r2)


def _distances(s11: Expr, s12: Expr, s22: Expr) -> tuple[Expr, Expr]:
    """(s11 + s22 - 2 s12, s11 + s22 + 2 s12) = E[(u -+ v)^2] as sums of non-negative terms (exactly 0 at
    rho = +-1 and s11 = s22, instead of the rounding noise of a difference of large numbers)."""
    rho, r1, r2 = _rho(s11, s12, s22), sp.sqrt(s11), sp.sqrt(s22)
    return (r1 - r2) ** 2 + 2 * r1 * r2 * (1 - rho), (r1 - r2) ** 2 + 2 * r1 * r2 * (1 + rho)


def abrelu(s11: Expr, s12: Expr, s22: Expr, a: Expr, b: Expr) -> Dual:
    """phi(x) = a min(x, 0) + b max(x, 0)."""
    rho, theta = _rho(s11, s12, s22), _theta(s11, s12, s22)
    tdot = (a**2 + b**2) / 2 - (a - b) ** 2 * theta / (2 * sp.pi)
    t = sp.sqrt(s11 * s22) * ((a - b) ** 2 / (2 * sp.pi) * sp.sqrt(1 - rho**2) + tdot * rho)
    return Dual(t, tdot, (a**2 + b**2) / 2 * s11)


def relu(s11: Expr, s12: Expr, s22: Expr) -> Dual:
    """phi(x) = max(x, 0): the arc-cosine kernel of degree 1 (Cho & Saul 2009)."""
    rho, theta = _rho(s11, s12, s22), _theta(s11, s12, s22)
    t = sp.sqrt(s11 * s22) * (sp.sqrt(1 - rho**2) + (sp.pi - theta) * rho) / (2 * sp.pi)
    return Dual(t, (sp.pi - theta) / (2 * sp.pi), s11 / 2)


def erf(s11: Expr, s12: Expr, s22: Expr, a: Expr, b: Expr, c: Expr) -> Dual:
    """phi(x) = a erf(b x) + c (Williams 1997).

    T = (2 a^2/pi) asin(2 b^2 s12 / sqrt(p1 p2)) + c^2 and Tdot = (4 a^2 b^2/pi) / sqrt(p1 p2 - 4 b^4 s12^2),
    p_i = 1 + 2 b^2 s_i, written as asin(g) = atan(g / sqrt(1 - g^2)) with g = rho sqrt(e1 e2) and the scaled
    determinant h = 1 - g^2 (module docstring): well conditioned near |g| = 1 (large variances), no overflow.
    """
    rho = _rho(s11, s12, s22)
    (e1, r1), (e2, r2) = _ratios(2 * b**2, s11), _ratios(2 * b**2, s22)
    h = _scaled_det(rho, e1, e2, r1, r2)
    t = a**2 * 2 / sp.pi * sp.atan(rho * sp.sqrt(e1) * sp.sqrt(e2) / sp.sqrt(h), evaluate=False) + c**2
    tdot = a**2 * b**2 * 4 / sp.pi * sp.sqrt(r1) * sp.sqrt(r2) / sp.sqrt(h)
    tdiag = a**2 * 2 / sp.pi * sp.atan(2 * b**2 * s11 / sp.sqrt(1 + 4 * b**2 * s11)) + c**2
    return Dual(t, tdot, tdiag)


def sin(s11: Expr, s12: Expr, s22: Expr, a: Expr, b: Expr, c: Expr) -> Dual:
    """phi(x) = a sin(b x + c): T = (a^2/2) [exp(-b^2 |u - v|^2 / 2) - exp(-b^2 |u + v|^2 / 2) cos 2c] (means)."""
    minus, plus = _distances(s11, s12, s22)
    minus, plus = sp.exp(-(b**2) * minus / 2), sp.exp(-(b**2) * plus / 2) * sp.cos(2 * c)
    tdiag = a**2 / 2 * (1 - sp.exp(-2 * b**2 * s11) * sp.cos(2 * c))
    return Dual(a**2 / 2 * (minus - plus), a**2 * b**2 / 2 * (minus + plus), tdiag)


def cos(s11: Expr, s12: Expr, s22: Expr, a: Expr, b: Expr, c: Expr) -> Dual:
    """phi(x) = a cos(b x + c) = a sin(b x + c + pi/2)."""
    return sin(s11, s12, s22, a, b, c + sp.pi / 2)


def sign(s11: Expr, s12: Expr, s22: Expr) -> Dual:
    """phi(x) = sign(x). Its derivative vanishes almost everywhere: Tdot = 0 (as neural-tangents).

    The NTK of sign networks is ill-posed; see the surrogate-gradient NTK for the meaningful object.
    """
    return Dual(2 / sp.pi * sp.asin(_rho(s11, s12, s22)), sp.Integer(0), sp.Integer(1))


def identity(s11: Expr, s12: Expr, s22: Expr) -> Dual:
    """phi(x) = x."""
    return Dual(s12, sp.Integer(1), s11)


def exp(s11: Expr, s12: Expr, s22: Expr, a: Expr, b: Expr) -> Dual:
    """phi(x) = a exp(b x): the Gaussian moment generating function, a^2 exp(b^2 E[(u + v)^2] / 2)."""
    t = a**2 * sp.exp(b**2 * _distances(s11, s12, s22)[1] / 2)
    return Dual(t, b**2 * t, a**2 * sp.exp(2 * b**2 * s11))


def gaussian(s11: Expr, s12: Expr, s22: Expr, a: Expr, b: Expr) -> Dual:
    """phi(x) = a exp(b x^2), b < 1 / (2 max(s11, s22)) for the expectation to exist.

    T = a^2 / sqrt(det), Tdot = 4 a^2 b^2 s12 / det^(3/2), det = (1 - 2 b s11)(1 - 2 b s22) - 4 b^2 s12^2,
    written with the scaled determinant (k = -2 b): det = p1 p2 h.
    """
    rho = _rho(s11, s12, s22)
    (e1, r1), (e2, r2) = _ratios(-2 * b, s11), _ratios(-2 * b, s22)
    h = _scaled_det(rho, e1, e2, r1, r2)
    t = a**2 * sp.sqrt(r1) * sp.sqrt(r2) / sp.sqrt(h)
    tdot = 4 * a**2 * b**2 * rho * sp.sqrt(s11 * r1) * sp.sqrt(s22 * r2) * r1 * r2 / h ** sp.Rational(3, 2)
    return Dual(t, tdot, a**2 / sp.sqrt(1 - 4 * b * s11))


def rbf(s11: Expr, s12: Expr, s22: Expr, gamma: Expr) -> Dual:
    """phi(x) = sqrt(2) sin(sqrt(2 gamma) x + pi/4), whose dual is the RBF kernel (neural-tangents' Rbf)."""
    t = sp.exp(-gamma * _distances(s11, s12, s22)[0])
    return Dual(t, 2 * gamma * t, sp.Integer(1))


def gaussian_moment(n: int, m: int, s11: Expr, s12: Expr, s22: Expr) -> Expr:
    """E[u^n v^m] for (u, v) ~ N(0, [[s11, s12], [s12, s22]]) by Isserlis' theorem."""
    total = sp.Integer(0)
    for k in range(min(n, m) + 1):
        if (n - k) % 2 or (m - k) % 2:
            continue
        total += (
            sp.binomial(n, k) * sp.binomial(m, k) * sp.factorial(k) * s12**k
            * sp.factorial2(n - k - 1) * s11 ** sp.Rational(n - k, 2)
            * sp.factorial2(m - k - 1) * s22 ** sp.Rational(m - k, 2)
        )
    return sp.expand(total)


def polynomial(s11: Expr, s12: Expr, s22: Expr, coef: tuple[Expr, ...]) -> Dual:
    """phi(x) = sum_i coef[i] x^i (Isserlis; s12 written as rho sqrt(s11 s22), see ``_pinned_s12``)."""
    x12 = _pinned_s12(s11, s12, s22)
    t = sum(
        (ci * cj * gaussian_moment(i, j, s11, x12, s22)
         for i, ci in enumerate(coef) for j, cj in enumerate(coef)),
        sp.Integer(0),
    )
    tdot = sum(
        (i * j * ci * cj * gaussian_moment(i - 1, j - 1, s11, x12, s22)
         for i, ci in enumerate(coef) for j, cj in enumerate(coef) if i and j),
        sp.Integer(0),
    )
    return Dual(t, tdot, _on_diagonal(t, s11, s12, s22))


def monomial(s11: Expr, s12: Expr, s22: Expr, degree: int) -> Dual:
    """phi(x) = x^degree."""
    coef = tuple(sp.Integer(1 if i == degree else 0) for i in range(degree + 1))
    return polynomial(s11, s12, s22, coef)


@functools.lru_cache(maxsize=None)
def _arccos_j(n: int, theta: sp.Symbol) -> Expr:
    """J_n(theta) of Cho & Saul (2009): (-1)^n sin^{2n+1} (1/sin d/dtheta)^n ((pi - theta)/sin)."""
    f = (sp.pi - theta) / sp.sin(theta)
    for _ in range(n):
        f = sp.diff(f, theta) / sp.sin(theta)
    return sp.simplify((-1) ** n * sp.sin(theta) ** (2 * n + 1) * f)


def _arccos_kernel(n: int, s11: Expr, s12: Expr, s22: Expr) -> Expr:
    """E[max(u,0)^n max(v,0)^n] = (s11 s22)^{n/2} J_n(theta) / (2 pi)."""
    theta = sp.Symbol("theta", positive=True)
    j = _arccos_j(n, theta)
    rho = _rho(s11, s12, s22)
    j = j.subs(sp.sin(theta), sp.sqrt(1 - rho**2)).subs(sp.cos(theta), rho).subs(theta, sp.acos(rho))
    return (s11 * s22) ** sp.Rational(n, 2) * j / (2 * sp.pi)


def rectified_monomial(s11: Expr, s12: Expr, s22: Expr, degree: int) -> Dual:
    """phi(x) = max(x, 0)^degree: arc-cosine kernels of degree n (Cho & Saul 2009)."""
    t = _arccos_kernel(degree, s11, s12, s22)
    tdot = degree**2 * _arccos_kernel(degree - 1, s11, s12, s22) if degree else sp.Integer(0)
    tdiag = sp.factorial2(2 * degree - 1) * s11**degree / 2
    return Dual(t, tdot, tdiag)


DualFn = Callable[..., Dual]


def gelu(s11: Expr, s12: Expr, s22: Expr) -> Dual:
    """phi(x) = x Phi(x), the exact GELU (Phi the standard normal CDF).

    With P = (1 + s11)(1 + s22) and Delta = P - s12^2 = 1 + s11 + s22 + (s11 s22 - s12^2) >= 1:

        T    = s12/4 + [(s12^2 + s11 s22 Delta) / (P sqrt(Delta)) + s12 atan(s12/sqrt(Delta))] / (2 pi)
        Tdot = 1/4 + [atan(s12/sqrt(Delta)) + s12 (1/Delta + (2 + s11 + s22)/P) / sqrt(Delta)] / (2 pi)

    (atan(s12/sqrt(Delta)) = asin(s12/sqrt(P)).) Delta never vanishes on the PSD cone, so there is no
    0/0 or square-root singularity at |rho| = 1. Derivation (proofs/prove_gelu.py): phi'' = (2 - x^2) pdf(x)
    gives E[phi''(u) phi''(v)] as a Gaussian integral; integrate twice in s12 from 0 (Price's theorem)
    with E[phi'(u)] E[phi'(v)] = 1/4 and E[phi(u)] = s11 / sqrt(2 pi (1 + s11)).

    Evaluated in scaled form (module docstring, k = 1): g = s12/sqrt(P) = rho sqrt(e1 e2), Delta = P h,
    1/P = r1 r2 and (2 + s11 + s22)/P = r1 + r2, so every term is O(s) at large variances s (the unscaled
    s11 s22 Delta is O(s^4) and overflows float32 at s ~ 1e9).
    """
    rho = _rho(s11, s12, s22)
    (e1, r1), (e2, r2) = _ratios(sp.Integer(1), s11), _ratios(sp.Integer(1), s22)
    h = _scaled_det(rho, e1, e2, r1, r2)
    g, root_p, root_h = rho * sp.sqrt(e1) * sp.sqrt(e2), sp.sqrt(1 + s11) * sp.sqrt(1 + s22), sp.sqrt(h)
    s12 = _pinned_s12(s11, s12, s22)
    angle = sp.atan(g / root_h, evaluate=False)
    t = s12 / 4 + (g**2 / (root_p * root_h) + e1 * e2 * root_p * root_h + s12 * angle) / (2 * sp.pi)
    tdot = sp.Rational(1, 4) + (angle + g * (r1 * r2 / h + r1 + r2) / root_h) / (2 * sp.pi)
    s = s11
    root1 = sp.sqrt(1 + 2 * s)
    tdiag = s / 4 + s * (2 * s / ((1 + s) * root1) + sp.atan(s / root1)) / (2 * sp.pi)
    return Dual(t, tdot, tdiag)
