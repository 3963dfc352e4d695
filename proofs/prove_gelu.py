"""Proof of the exact-GELU dual phi(x) = x Phi(x), Phi the standard normal CDF (``_duals.gelu``).

phi'(x) = Phi(x) + x pdf(x) and phi''(x) = (2 - x^2) pdf(x) (sympy differentiates x (1 + erf(x/sqrt 2))/2),
so E[phi''(u) phi''(v)] is a polynomial-times-Gaussian integral (``gauss2d``). Price's theorem twice
(``standard_claims``) with the means E[phi(u)] = s11/sqrt(2 pi (1 + s11)) and E[phi'(u)] = 1/2 from 1-D
integration pins down Tdot and T. The diagonal map is T's continuous extension at s12 = s11 = s22 and, in
addition, E[phi(u)^2] by direct 1-D integration is compared numerically (sympy cannot integrate
x^2 erf(x)^2 exp(-x^2)) -- that claim is recorded with its numeric route.

The library writes Delta = (1 + s11)(1 + s22) - s12^2 >= 1 so that the form has no singularity at
|rho| = 1; the forms with asin(s12/sqrt(P)) and atan(s12/sqrt(Delta)) are checked equal as well.
"""

from __future__ import annotations

import mpmath
import sympy as sp

from kernelalg.core import _duals

from ._common import (S11, S12, S22, U, V, X, Proof, dual_at, gauss2d, standard_claims)


def gelu_phi(x: sp.Expr) -> sp.Expr:
    return x * (1 + sp.erf(x / sp.sqrt(2))) / 2


def _second_moment_numeric(s: str) -> sp.Float:
    """E[phi(u)^2], u ~ N(0, s), by mpmath quadrature at 40 digits."""
    with mpmath.workdps(45):
        sd = mpmath.sqrt(mpmath.mpf(s))
        f = lambda x: (x * (1 + mpmath.erf(x / mpmath.sqrt(2))) / 2) ** 2 * mpmath.npdf(x, 0, sd)
        return sp.Float(mpmath.nstr(mpmath.quad(f, [-mpmath.inf, 0, mpmath.inf]), 42), 42)


def prove_gelu() -> Proof:
    p = Proof("gelu", covers=("gelu",))
    d = dual_at(_duals.gelu)
    phi = gelu_phi(X)
    d2 = sp.simplify(sp.diff(phi, X, 2))
    p.equal(d2, (2 - X**2) * sp.exp(-X**2 / 2) / sp.sqrt(2 * sp.pi), "phi'' == (2 - x^2) pdf(x)")
    base = gauss2d(d2.subs(X, U) * d2.subs(X, V))
    standard_claims(p, d, phi, base=base, square_mean=False)
    # the forms quoted in the docstring
    big_p = (1 + S11) * (1 + S22)
    delta = big_p - S12**2
    atan, asin = sp.atan(S12 / sp.sqrt(delta)), sp.asin(S12 / sp.sqrt(big_p))
    p.equal(sp.diff(atan, S12), sp.diff(asin, S12), "d/ds12 atan(s12/sqrt(Delta)) == d/ds12 asin(s12/sqrt(P))")
    p.check(atan.subs(S12, 0) == 0 == asin.subs(S12, 0), "atan(s12/sqrt(Delta)) == asin(s12/sqrt(P)) at s12 = 0")
    # Tdiag == E[phi(u)^2] at a few variances (sympy cannot integrate erf^2): 40-digit quadrature
    for s in ("0.25", "1", "3.5"):
        got = sp.N(d.Tdiag.subs(S11, sp.Rational(s)), 40)
        ref = _second_moment_numeric(s)
        p.check(abs(got - ref) < sp.Float("1e-30"),
                f"Tdiag({s}) == E[phi(u)^2] (mpmath quadrature, 40 digits)", "numeric 40-digit quadrature")
    return p


PROOFS = {"gelu": prove_gelu}


def prove() -> list[Proof]:
    return [fn() for fn in PROOFS.values()]
