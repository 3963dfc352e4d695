"""Proofs of the piecewise-linear and rectified duals: ReLU, ABReLU (LeakyRelu, Abs), sign, max(x, 0)^n.

phi is piecewise polynomial, so its derivatives are taken in the sense of distributions: for
phi = a min(x, 0) + b max(x, 0), phi' = a 1[x < 0] + b 1[x > 0] and phi'' = (b - a) delta(x), hence
E[phi''(u) phi''(v)] = (b - a)^2 p(0, 0) with p(0, 0) = 1 / (2 pi sqrt(det S)) (the bivariate normal
density at the origin, computed from the density in ``density_at_origin``). Price's theorem holds for such
phi (smooth them with a Gaussian of width eps and let eps -> 0; every term is continuous in eps on the open
PD cone). Means E[phi^(j)(u)] by 1-D integration on each half-line (``expect1d(split=True)``).

The library's Tdot of sign and of max(x, 0)^0 = step is 0: their derivative vanishes almost everywhere and
the library follows neural-tangents in using that derivative (the distributional one, 2 delta resp. delta,
gives an ill-posed NTK; see ``prove_surrogate``). That convention is recorded as a claim, not proven from T.
"""

from __future__ import annotations

import sympy as sp

from kernelalg.core import _duals

from ._common import (S11, S12, S22, X, Proof, at_point, at_zero, d12, density_at_origin, diagonal, dual_at,
                      expect1d, mean_product, price_chain, standard_claims)

A, B = sp.symbols("a b", real=True)
#: Degrees of max(x, 0)^n proven (the library builds J_n for any n; larger n are not covered).
RECTIFIED_DEGREES = tuple(range(6))


def relu_phi(x: sp.Expr) -> sp.Expr:
    return sp.Max(x, 0)


def abrelu_phi(x: sp.Expr, a: sp.Expr, b: sp.Expr) -> sp.Expr:
    return a * sp.Min(x, 0) + b * sp.Max(x, 0)


def prove_abrelu() -> Proof:
    """a min(x, 0) + b max(x, 0) for symbolic real a, b (LeakyRelu: a = alpha, b = 1; Abs: a = -1, b = 1)."""
    p = Proof("abrelu", covers=("abrelu",))
    d = dual_at(_duals.abrelu, A, B)
    dphi = A * sp.Heaviside(-X) + B * sp.Heaviside(X)
    standard_claims(p, d, abrelu_phi(X, A, B), dphi=dphi, base=(B - A) ** 2 * density_at_origin(), split=True)
    # theory.md's form: T = ((a-b)^2/(2 pi)) sqrt(s11 s22 - s12^2) + Tdot s12
    p.equal(d.T, (A - B) ** 2 / (2 * sp.pi) * sp.sqrt(S11 * S22 - S12**2) + d.Tdot * S12, "T == theory.md form")
    return p


def prove_relu() -> Proof:
    p = Proof("relu", covers=("relu",))
    d = dual_at(_duals.relu)
    standard_claims(p, d, relu_phi(X), dphi=sp.Heaviside(X), base=density_at_origin(), split=True)
    ab = dual_at(_duals.abrelu, 0, 1)
    p.equal(d.T, ab.T, "relu == abrelu(0, 1): T")
    p.equal(d.Tdot, ab.Tdot, "relu == abrelu(0, 1): Tdot")
    p.close_to(at_point(d.T, 1, 0.5, 1), "0.3044989", "theory.md ReLU T(1, .5, 1)")
    p.check(sp.nsimplify(at_point(d.Tdot, 1, 0.5, 1)) == sp.Rational(1, 3), "theory.md ReLU Tdot(1, .5, 1) == 1/3")
    return p


def prove_sign() -> Proof:
    p = Proof("sign", covers=("sign",))
    d = dual_at(_duals.sign)
    phi = sp.sign(X)
    # phi' = 2 delta: dT/ds12 = 4 p(0, 0); T(0) = E[sign]^2 = 0
    price_chain(p, [d.T], [mean_product(phi, split=True)], 4 * density_at_origin(), "sign")
    p.equal(d.Tdiag, diagonal(d.T), "Tdiag == T(s, s, s)")
    p.equal(d.Tdiag, expect1d(phi**2, X, S11, split=True), "Tdiag == E[sign(u)^2]")
    p.check(d.Tdot == 0, "Tdot == 0: convention (sign' = 0 almost everywhere, as neural-tangents)", "convention")
    return p


def _rect_phi(n: int, x: sp.Expr) -> sp.Expr:
    return sp.Heaviside(x) if n == 0 else sp.Max(x, 0) ** n


def prove_rectified_monomial() -> Proof:
    """max(x, 0)^n for n in RECTIFIED_DEGREES, K_n = the library's T of degree n.

    Price links, proven once for every j: dK_j/ds12 == j^2 K_(j-1) (phi_j' = j phi_(j-1)) and
    dK_0/ds12 == p(0, 0) (step' = delta), with K_j(s12 = 0) == E[phi_j(u)] E[phi_j(v)]. By induction on j
    (uniqueness as in ``price_chain``) K_j == E[phi_j(u) phi_j(v)] for all j, and Tdot_n == n^2 K_(n-1).
    """
    p = Proof("rectified_monomial", covers=("rectified_monomial",))
    kern = {j: dual_at(_duals.rectified_monomial, j) for j in RECTIFIED_DEGREES}
    p.equal(d12(kern[0].T), density_at_origin(), "dK_0/ds12 == p(0, 0)")
    for n in RECTIFIED_DEGREES:
        d = kern[n]
        if n:
            p.equal(d12(d.T), n**2 * kern[n - 1].T, f"dK_{n}/ds12 == {n}^2 K_{n - 1}")
            p.equal(d.Tdot, n**2 * kern[n - 1].T, f"degree {n}: Tdot == {n}^2 K_{n - 1}")
        else:
            p.check(d.Tdot == 0, "degree 0: Tdot == 0: convention (step' = 0 almost everywhere)", "convention")
        p.equal(at_zero(d.T), mean_product(_rect_phi(n, X), split=True), f"K_{n}(s12=0) == E[phi(u)] E[phi(v)]")
        p.equal(d.Tdiag, diagonal(d.T), f"degree {n}: Tdiag == T(s, s, s)")
        p.equal(d.Tdiag, expect1d(_rect_phi(n, X) ** 2, X, S11, split=True), f"degree {n}: Tdiag == E[phi^2]")
    p.equal(kern[1].T, dual_at(_duals.relu).T, "degree 1 == relu")
    return p


PROOFS = {"abrelu": prove_abrelu, "relu": prove_relu, "sign": prove_sign,
          "rectified_monomial": prove_rectified_monomial}


def prove() -> list[Proof]:
    return [fn() for fn in PROOFS.values()]
