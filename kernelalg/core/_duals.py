"""Closed-form duals of activations: T(s) = E[phi(u) phi(v)] and Tdot(s) = E[phi'(u) phi'(v)].

Here (u, v) ~ N(0, [[s11, s12], [s12, s22]]). Every function in this module is pure sympy: it takes
sympy expressions for s11, s12, s22 and the activation's hyperparameters and returns sympy
expressions. Each closed form is proven in ``proofs/`` (Price's theorem dT/ds12 = Tdot plus the value
at s12 = 0, or an equivalent derivation).

Numerical form. Every dual is written in the variances and the correlation node ``corr`` (never in s12 alone)
so that the backends' snapping of |rho| to 1 pins the diagonal: at x = x' the pair formula evaluates the
same function as the variance map ``Tdiag``, at any depth, instead of drifting away from it where the
correlation map is expanding (the chaotic phase). Sub-formulas that cancel or overflow when evaluated as
written are nodes of :mod:`kernelalg.core._nodes` (textbook form for display and proofs, stable form for
evaluation): Williams' asin, the determinant of the pair covariance, the mean squared distance E[(u - v)^2].

References:
    Cho & Saul (2009), Kernel methods for deep learning (arc-cosine kernels).
    Williams (1997), Computing with infinite networks (erf).
    Novak et al. (2020), Neural Tangents, ICLR (conventions of the activation parameters).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import sympy as sp

from kernelalg.core._nodes import corr, plain, ratio, rdet, sqdist, williams  # noqa: F401 (corr, plain: re-exported)

Expr = sp.Expr

GAUSSIAN_DIVERGES = ("Gaussian(a, b): E[exp(2 b u^2)] diverges unless 1 - 4 b s > 0 for the variance s of its input "
                     "(b > 0 needs s < 1/(4 b)). Fix: use b < 0, a smaller b, or smaller inputs / W_std before it.")


@dataclass(frozen=True)
class Dual:
    """The dual pair of an activation, as sympy expressions.

    Attributes:
        T: E[phi(u) phi(v)].
        Tdot: E[phi'(u) phi'(v)] (or, for surrogate gradients, E[phi'(u) psi'(v)]).
        Tdiag: T at s11 = s12 = s22 = s, in the symbol of ``s11`` (simplified variance map).
        requires: Conditions ``(expr, reason)`` with expr > 0 needed for the expectations to exist (e.g.
            1 - 4 b s11 > 0 for a exp(b x^2)); checked by the backends on the values actually met.
    """

    T: Expr
    Tdot: Expr
    Tdiag: Expr
    requires: tuple[tuple[Expr, str], ...] = ()


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

    T = (2 a^2/pi) asin(2 b^2 s12 / sqrt(p1 p2)) + c^2, Tdot = (4 a^2 b^2/pi) / sqrt(p1 p2 - 4 b^4 s12^2),
    p_i = 1 + 2 b^2 s_i (nodes ``williams`` and ``rdet``). Tdiag = (2 a^2/pi) atan(2 b^2 s / sqrt(1 + 4 b^2 s)) + c^2
    (= asin(2 b^2 s / (1 + 2 b^2 s)), well conditioned at large s).
    """
    k = 2 * b**2
    t = a**2 * 2 / sp.pi * williams(k, s11, s12, s22) + c**2
    tdot = a**2 * b**2 * 4 / sp.pi * rdet(k, s11, s12, s22)
    tdiag = a**2 * 2 / sp.pi * sp.atan(2 * b**2 * s11 / sp.sqrt(1 + 4 * b**2 * s11)) + c**2
    return Dual(t, tdot, tdiag)


def sin(s11: Expr, s12: Expr, s22: Expr, a: Expr, b: Expr, c: Expr) -> Dual:
    """phi(x) = a sin(b x + c): T = (a^2/2) [exp(-b^2 E[(u - v)^2] / 2) - exp(-b^2 E[(u + v)^2] / 2) cos 2c]."""
    minus = sp.exp(-(b**2) * sqdist(s11, s12, s22) / 2)
    plus = sp.exp(-(b**2) * sqdist(s11, -s12, s22) / 2) * sp.cos(2 * c)
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
    t = a**2 * sp.exp(b**2 * sqdist(s11, -s12, s22) / 2)
    return Dual(t, b**2 * t, a**2 * sp.exp(2 * b**2 * s11))


def gaussian(s11: Expr, s12: Expr, s22: Expr, a: Expr, b: Expr) -> Dual:
    """phi(x) = a exp(b x^2), the expectations exist iff 1 - 4 b s > 0 for both
    variances s = s11, s22 (checked on the values met: ``requires``).

    T = a^2 / sqrt(det), Tdot = 4 a^2 b^2 s12 / det^(3/2), det = (1 - 2 b s11)(1 - 2 b s22) - 4 b^2 s12^2
    (node ``rdet`` with k = -2 b).
    """
    r = rdet(-2 * b, s11, s12, s22)
    return Dual(a**2 * r, 4 * a**2 * b**2 * _pinned_s12(s11, s12, s22) * r**3, a**2 / sp.sqrt(1 - 4 * b * s11),
                ((1 - 4 * b * s11, GAUSSIAN_DIVERGES), (1 - 4 * b * s22, GAUSSIAN_DIVERGES)))


def gabor(s11: Expr, s12: Expr, s22: Expr) -> Dual:
    """phi(x) = exp(-x^2) sin(x) (neural-tangents' ``stax.Gabor``).

    With sin u sin v = (cos(u - v) - cos(u + v)) / 2 and E[exp(-|z|^2 + i w.z)] = D^(-1/2) exp(-w.M w / 2),
    M = Sigma (I + 2 Sigma)^(-1): T = D^(-1/2) exp(-(s11 + s22 + 2 d) / (2 D)) sinh(s12 / D), with
    d = 2 (s11 s22 - s12^2) and D = det(I + 2 Sigma) = 1 + 2 (s11 + s22) + 2 d >= 1 (no singularity at
    |rho| = 1); Tdot = dT/ds12 (Price's theorem).
    """
    c = sp.Dummy("s12", real=True)
    d = 2 * (s11 * s22 - c**2)
    det = 1 + 2 * (s11 + s22) + 2 * d
    t = sp.exp(-(s11 + s22 + 2 * d) / (2 * det)) * sp.sinh(c / det) / sp.sqrt(det)
    tdot = sp.diff(t, c)
    r = 1 + 4 * s11
    return Dual(t.xreplace({c: s12}), tdot.xreplace({c: s12}), sp.exp(-s11 / r) * sp.sinh(s11 / r) / sp.sqrt(r))


def exp_normalized(s11: Expr, s12: Expr, s22: Expr, gamma: Expr, shift: Expr) -> Dual:
    """neural-tangents' ``stax.ExpNormalized`` (the "Gaussian normalized kernel" of Shankar et al. 2020):
    T = sqrt(s11 s22) exp(gamma (rho + shift)), Tdot = dT/ds12 = gamma exp(gamma (rho + shift)),
    Tdiag = s11 exp(gamma (1 + shift)). A network realizing it: normalize each position's pre-activations to unit
    variance, apply sqrt(2) sin(sqrt(gamma) x + pi/4) (E = exp(gamma (rho - 1)) at unit variances), rescale by
    the norm and exp(gamma (1 + shift) / 2) (``layers/_normalization.py``)."""
    e = sp.exp(gamma * (corr(s11, s12, s22) + shift))
    return Dual(sp.sqrt(s11) * sp.sqrt(s22) * e, gamma * e, s11 * sp.exp(gamma * (1 + shift)))


def rbf(s11: Expr, s12: Expr, s22: Expr, gamma: Expr) -> Dual:
    """phi(x) = sqrt(2) sin(sqrt(2 gamma) x + pi/4), whose dual is the RBF kernel (neural-tangents' Rbf)."""
    t = sp.exp(-gamma * sqdist(s11, s12, s22))
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


def _double_factorial(n: int) -> int:
    """n!! for n >= -1 ((-1)!! = 0!! = 1)."""
    return math.prod(range(n, 0, -2)) if n > 0 else 1


def hermite_weights(coef: tuple[Expr, ...], s: Expr) -> list[Expr]:
    """A_k(s) = sum_{i >= k, i - k even} c_i C(i, k) (i - k - 1)!! s^((i - k)/2), k = 0..len(coef) - 1.

    By Isserlis' theorem E[u^i v^j] = sum_k C(i,k) C(j,k) k! s12^k (i-k-1)!! s11^((i-k)/2) (j-k-1)!! s22^((j-k)/2),
    so E[p(u) q(v)] = sum_k k! s12^k A_k^p(s11) A_k^q(s22) for p = sum_i c_i x^i and likewise q (the Hermite
    (Mehler) expansion): O(n^2) terms instead of the O(n^3) of the expanded double sum. Zero coefficients are
    skipped.
    """
    out = []
    for k in range(len(coef)):
        out.append(sp.Add(*(c * (math.comb(i, k) * _double_factorial(i - k - 1)) * s ** ((i - k) // 2)
                            for i, c in enumerate(coef) if i >= k and (i - k) % 2 == 0 and c != 0)))
    return out


def polynomial_expectation(p: tuple[Expr, ...], q: tuple[Expr, ...], s11: Expr, s12: Expr, s22: Expr) -> Expr:
    """E[p(u) q(v)] = sum_k k! s12^k A_k^p(s11) A_k^q(s22) for polynomials with coefficients p, q (lowest
    degree first): Isserlis' theorem grouped by powers of s12 (see :func:`hermite_weights`)."""
    a1 = hermite_weights(p, s11)
    a2 = a1 if (q == p and s22 == s11) else hermite_weights(q, s22)
    return sp.Add(*(sp.factorial(k) * s12**k * x * y for k, (x, y) in enumerate(zip(a1, a2)) if x != 0 and y != 0))


def polynomial(s11: Expr, s12: Expr, s22: Expr, coef: tuple[Expr, ...]) -> Dual:
    """phi(x) = sum_i coef[i] x^i: T = sum_ij c_i c_j E[u^i v^j] by Isserlis' theorem, grouped by the power of
    s12 (Mehler's expansion, O(n^2) terms; s12 written as rho sqrt(s11 s22), see ``_pinned_s12``); phi' has the
    coefficients (i + 1) c_(i+1)."""
    coef = tuple(coef)
    dcoef = tuple(i * c for i, c in enumerate(coef))[1:]
    x12 = _pinned_s12(s11, s12, s22)
    t = polynomial_expectation(coef, coef, s11, x12, s22)
    tdot = polynomial_expectation(dcoef, dcoef, s11, x12, s22)
    return Dual(t, tdot, polynomial_expectation(coef, coef, s11, s11, s11))


def monomial(s11: Expr, s12: Expr, s22: Expr, degree: int) -> Dual:
    """phi(x) = x^degree."""
    coef = tuple(sp.Integer(1 if i == degree else 0) for i in range(degree + 1))
    return polynomial(s11, s12, s22, coef)


def hermite_coefficients(degree: int) -> tuple[Expr, ...]:
    """Coefficients (lowest degree first) of the normalised probabilists' Hermite polynomial
    He_n(x) / sqrt(n!), orthonormal under N(0, 1)."""
    x = sp.Dummy("x")
    poly = sp.Poly(sp.hermite_prob(degree, x), x)
    return tuple(poly.coeff_monomial(x**i) / sp.sqrt(sp.factorial(degree)) for i in range(degree + 1))


def hermite(s11: Expr, s12: Expr, s22: Expr, degree: int) -> Dual:
    """phi(x) = He_n(x) / sqrt(n!) (neural-tangents' ``stax.Hermite``), exact for any variances; on unit
    variances T = s12^n and Tdot = n s12^(n-1) (Mehler), the form neural-tangents assumes."""
    return polynomial(s11, s12, s22, hermite_coefficients(degree))


@functools.lru_cache(maxsize=None)
def _arccos_coefficients(n: int) -> tuple[dict[tuple[int, int], int], dict[tuple[int, int], int]]:
    """J_n(theta) = sum A[a, b] cos^a sin^(2b+1) + (pi - theta) sum B[a, b] cos^a sin^(2b), integers A, B >= 0.

    J_n of Cho & Saul (2009), (-1)^n sin^(2n+1) (1/sin d/dtheta)^n ((pi - theta)/sin), obeys the three-term
    recurrence J_n = (2n - 1) cos J_(n-1) + (n - 1)^2 sin^2 J_(n-2) with J_0 = pi - theta and
    J_1 = sin + (pi - theta) cos (proven for the degrees in ``proofs/prove_arccos.py`` through Price's theorem,
    dK_n/ds12 = n^2 K_(n-1)); each component obeys it separately, with positive coefficients.
    """
    def step(p1: dict, p2: dict, m: int) -> dict:
        out: dict[tuple[int, int], int] = {}
        for (a, b), v in p1.items():
            out[(a + 1, b)] = out.get((a + 1, b), 0) + (2 * m - 1) * v
        for (a, b), v in p2.items():
            out[(a, b + 1)] = out.get((a, b + 1), 0) + (m - 1) ** 2 * v
        return out
    prev, cur = ({}, {(0, 0): 1}), ({(0, 0): 1}, {(1, 0): 1})
    if n == 0:
        return prev
    for m in range(2, n + 1):
        prev, cur = cur, (step(cur[0], prev[0], m), step(cur[1], prev[1], m))
    return cur


def _arccos_kernel(n: int, s11: Expr, s12: Expr, s22: Expr) -> Expr:
    """E[max(u,0)^n max(v,0)^n] = (s11 s22)^{n/2} J_n(theta) / (2 pi)."""
    rho = _rho(s11, s12, s22)
    sin = sp.sqrt(1 - rho**2)
    a, b = _arccos_coefficients(n)
    j = (sp.Add(*(v * rho**p * sin ** (2 * q + 1) for (p, q), v in a.items()))
         + (sp.pi - sp.acos(rho)) * sp.Add(*(v * rho**p * sin ** (2 * q) for (p, q), v in b.items())))
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

    Written for evaluation with R = 1/sqrt(Delta) (node ``rdet``), the angle asin(s12/sqrt(P)) (node ``williams``)
    and e_i = s_i/(1 + s_i) (node ``ratio``): (s12^2 + s11 s22 Delta)/(P sqrt(Delta)) = rho^2 e1 e2 R + e1 e2 / R
    and (2 + s11 + s22)/P = 1/(1 + s11) + 1/(1 + s22), so every term is O(s) at large variances s (s11 s22 Delta
    is O(s^4) and overflowed float32 at s ~ 1e9).
    """
    rho, x12 = _rho(s11, s12, s22), _pinned_s12(s11, s12, s22)
    e1, e2 = ratio(1, s11), ratio(1, s22)
    r, angle = rdet(1, s11, s12, s22), williams(1, s11, s12, s22)
    t = x12 / 4 + (rho**2 * e1 * e2 * r + e1 * e2 / r + x12 * angle) / (2 * sp.pi)
    tdot = sp.Rational(1, 4) + (angle + x12 * (r**3 + r * (1 / (1 + s11) + 1 / (1 + s22)))) / (2 * sp.pi)
    s = s11
    root1 = sp.sqrt(1 + 2 * s)
    tdiag = s / 4 + s * (2 * s / ((1 + s) * root1) + sp.atan(s / root1)) / (2 * sp.pi)
    return Dual(t, tdot, tdiag)
