"""Proofs of the duals of smooth activations: erf, sin, cos, Rbf, exp, Gaussian, identity.

Each phi here is (a sum of) polynomial x exp(quadratic) after writing sin/cos through complex exponentials,
or its derivative is (erf' is a Gaussian), so E[phi(u) phi(v)] or E[phi'(u) phi'(v)] is computed DIRECTLY
by two Gaussian line integrals (``gauss2d``; for sin/cos the linear coefficient is imaginary, and the
real-B formula of the monomial integral continues analytically since it is entire in B). Price's theorem
then ties T to Tdot, and the values at s12 = 0 are checked against independent 1-D integrals.

Gaussian activation a exp(b x^2): the integrals converge for b < 1/(4 max(s11, s22)) (1/(4 s) for the
diagonal). The Gaussian integration is done for b = -beta < 0; both E[phi(u) phi(v)] and the closed form are
real-analytic in b on the connected interval where they are finite, so agreeing for b < 0 they agree on all
of it (identity theorem). Price's theorem and the diagonal are checked for symbolic real b.
"""

from __future__ import annotations

import sympy as sp

from kernelalg.core import _duals

from ._common import S11, S12, S22, U, V, X, Proof, at_point, dual_at, gauss2d, standard_claims

A, B, C0 = sp.symbols("a b c0", real=True)
GAMMA, BETA = sp.symbols("gamma beta", positive=True)


def _pair(phi: sp.Expr, *, exp_form: bool = False) -> sp.Expr:
    """phi(u) phi(v) as a sum of polynomial x exp(linear/quadratic) terms (for ``gauss2d``)."""
    g = phi.subs(X, U) * phi.subs(X, V)
    return sp.expand(g.rewrite(sp.exp)) if exp_form else g


def erf_phi(x: sp.Expr, a: sp.Expr, b: sp.Expr, c: sp.Expr) -> sp.Expr:
    return a * sp.erf(b * x) + c


def prove_erf() -> Proof:
    p = Proof("erf", covers=("erf",))
    d = dual_at(_duals.erf, A, B, C0)
    phi = erf_phi(X, A, B, C0)
    p.equal(gauss2d(_pair(sp.diff(phi, X))), d.Tdot, "Tdot == E[phi'(u) phi'(v)] (Gaussian integral)")
    standard_claims(p, d, phi, base=None, square_mean=False)
    p1, p2 = 1 + 2 * S11, 1 + 2 * S22
    unit = dual_at(_duals.erf, 1, 1, 0)
    p.equal(unit.T, 2 / sp.pi * sp.asin(2 * S12 / sp.sqrt(p1 * p2)), "a=b=1, c=0: T == theory.md form")
    p.equal(unit.Tdot, 4 / sp.pi / sp.sqrt(p1 * p2 - 4 * S12**2), "a=b=1, c=0: Tdot == theory.md form")
    p.close_to(at_point(unit.T, 1, 0.5, 1), "0.2163469", "theory.md erf T(1, .5, 1)")
    p.close_to(at_point(unit.Tdot, 1, 0.5, 1), "0.4501582", "theory.md erf Tdot(1, .5, 1)")
    return p


def sin_phi(x: sp.Expr, a: sp.Expr, b: sp.Expr, c: sp.Expr) -> sp.Expr:
    return a * sp.sin(b * x + c)


def cos_phi(x: sp.Expr, a: sp.Expr, b: sp.Expr, c: sp.Expr) -> sp.Expr:
    return a * sp.cos(b * x + c)


def rbf_phi(x: sp.Expr, gamma: sp.Expr) -> sp.Expr:
    return sp.sqrt(2) * sp.sin(sp.sqrt(2 * gamma) * x + sp.pi / 4)


def prove_sin() -> Proof:
    """a sin(b x + c) for symbolic real a, b, c."""
    p = Proof("sin", covers=("sin",))
    d = dual_at(_duals.sin, A, B, C0)
    phi = sin_phi(X, A, B, C0)
    p.equal(gauss2d(_pair(phi, exp_form=True), complex_b=True), d.T, "T == E[phi(u) phi(v)] (Gaussian integral)")
    p.equal(gauss2d(_pair(sp.diff(phi, X), exp_form=True), complex_b=True), d.Tdot,
            "Tdot == E[phi'(u) phi'(v)] (Gaussian integral)")
    standard_claims(p, d, phi, base=None)
    unit = dual_at(_duals.sin, 1, 1, 0)
    p.equal(unit.T, sp.exp(-(S11 + S22) / 2) * sp.sinh(S12), "a=b=1, c=0: T == theory.md form")
    p.equal(unit.Tdot, sp.exp(-(S11 + S22) / 2) * sp.cosh(S12), "a=b=1, c=0: Tdot == theory.md form")
    p.close_to(at_point(unit.T, 1, 0.5, 1), "0.1917002", "theory.md sin T(1, .5, 1)")
    p.close_to(at_point(unit.Tdot, 1, 0.5, 1), "0.4148304", "theory.md sin Tdot(1, .5, 1)")
    return p


def prove_cos() -> Proof:
    """cos = sin shifted by pi/2; the sin proof holds for every real c."""
    p = Proof("cos", covers=("cos",))
    d, s = dual_at(_duals.cos, A, B, C0), dual_at(_duals.sin, A, B, C0 + sp.pi / 2)
    phi = cos_phi(X, A, B, C0)
    p.equal(phi, sin_phi(X, A, B, C0 + sp.pi / 2), "a cos(b x + c) == a sin(b x + c + pi/2)")
    for part in ("T", "Tdot", "Tdiag"):
        p.equal(getattr(d, part), getattr(s, part), f"{part} == sin's {part} at c + pi/2")
    standard_claims(p, d, phi, base=None)
    return p


def prove_rbf() -> Proof:
    """Rbf(gamma) is sin with a = sqrt(2), b = sqrt(2 gamma), c = pi/4 (proven for every real a, b, c)."""
    p = Proof("rbf", covers=("rbf",))
    d, s = dual_at(_duals.rbf, GAMMA), dual_at(_duals.sin, sp.sqrt(2), sp.sqrt(2 * GAMMA), sp.pi / 4)
    p.equal(rbf_phi(X, GAMMA), sin_phi(X, sp.sqrt(2), sp.sqrt(2 * GAMMA), sp.pi / 4),
            "phi == sin(sqrt 2, sqrt(2 gamma), pi/4)")
    for part in ("T", "Tdot", "Tdiag"):
        p.equal(getattr(d, part), getattr(s, part), f"{part} == sin's {part}")
    p.equal(d.T, sp.exp(-GAMMA * (S11 + S22 - 2 * S12)), "T == exp(-gamma |u - v|^2 mean) (neural-tangents' Rbf)")
    standard_claims(p, d, rbf_phi(X, GAMMA), base=None)
    return p


def exp_phi(x: sp.Expr, a: sp.Expr, b: sp.Expr) -> sp.Expr:
    return a * sp.exp(b * x)


def prove_exp() -> Proof:
    p = Proof("exp", covers=("exp",))
    d = dual_at(_duals.exp, A, B)
    phi = exp_phi(X, A, B)
    p.equal(gauss2d(_pair(phi)), d.T, "T == E[phi(u) phi(v)] (Gaussian integral)")
    p.equal(gauss2d(_pair(sp.diff(phi, X))), d.Tdot, "Tdot == E[phi'(u) phi'(v)] (Gaussian integral)")
    standard_claims(p, d, phi, base=None)
    return p


def gaussian_phi(x: sp.Expr, a: sp.Expr, b: sp.Expr) -> sp.Expr:
    return a * sp.exp(b * x**2)


def prove_gaussian() -> Proof:
    p = Proof("gaussian", covers=("gaussian",))
    d = dual_at(_duals.gaussian, A, B)
    p.equal(sp.diff(d.T, S12), d.Tdot, "Price dT/ds12 == Tdot (symbolic real b)")
    p.equal(d.Tdiag, d.T.subs({S12: S11, S22: S11}), "Tdiag == T(s, s, s) (symbolic real b)")
    neg = dual_at(_duals.gaussian, A, -BETA)
    phi = gaussian_phi(X, A, -BETA)
    p.equal(gauss2d(_pair(phi)), neg.T, "b = -beta < 0: T == E[phi(u) phi(v)] (Gaussian integral)")
    p.equal(gauss2d(_pair(sp.diff(phi, X))), neg.Tdot, "b = -beta < 0: Tdot == E[phi'(u) phi'(v)] (Gaussian integral)")
    standard_claims(p, neg, phi, base=None, label="b = -beta < 0")
    return p


def gabor_phi(x: sp.Expr) -> sp.Expr:
    return sp.exp(-x**2) * sp.sin(x)


def prove_gabor() -> Proof:
    """exp(-x^2) sin(x): T and Tdot by the Gaussian integral, Price, the diagonal, and neural-tangents' form."""
    p = Proof("gabor", covers=("gabor",))
    d = dual_at(_duals.gabor)
    phi = gabor_phi(X)
    p.equal(gauss2d(_pair(phi, exp_form=True), complex_b=True), d.T, "T == E[phi(u) phi(v)] (Gaussian integral)")
    # Tdot by Price's theorem, E[phi'(u) phi'(v)] = dE[phi(u) phi(v)]/ds12 (the direct Gaussian integral of
    # phi'(u) phi'(v) holds too, numerically, but takes minutes to simplify symbolically)
    p.equal(sp.diff(d.T, S12), d.Tdot, "Price: dT/ds12 == Tdot")
    p.equal(d.Tdiag, d.T.subs({S12: S11, S22: S11}), "Tdiag == T(s, s, s)")
    # neural-tangents 0.6.5 (stax.Gabor): exp_left (exp_right - 1) / (2 sqrt(denom))
    diff = 4 * (S11 * S22 - S12**2)
    denom = 2 * (S11 + S22) + diff + 1
    nt = sp.exp(-(S11 + S22 + diff + 2 * S12) / (2 * denom)) * (sp.exp(2 * S12 / denom) - 1) / (2 * sp.sqrt(denom))
    p.equal(d.T, nt, "T == neural-tangents' formula")
    return p


def prove_exp_normalized() -> Proof:
    """ExpNormalized: T / (sqrt(s11 s22) exp(gamma (1 + shift))) is the (proven) sin dual of
    sqrt(2) sin(sqrt(gamma) u + pi/4) at unit variances and correlation rho (the finite twin's activation),
    Tdot == dT/ds12, the diagonal, and neural-tangents' form."""
    p = Proof("exp_normalized", covers=("exp_normalized",))
    g, sh, rho = sp.Symbol("gamma", positive=True), sp.Symbol("shift", real=True), sp.Symbol("rho", real=True)
    d = dual_at(_duals.exp_normalized, g, sh)
    unit = _duals.sin(sp.Integer(1), rho, sp.Integer(1), sp.sqrt(2), sp.sqrt(g), sp.pi / 4)
    on_rho = sp.expand_power_base(_duals.plain(d.T).subs(S12, rho * sp.sqrt(S11) * sp.sqrt(S22)), force=True)
    p.equal(on_rho / (sp.sqrt(S11) * sp.sqrt(S22) * sp.exp(g * (1 + sh))), _duals.plain(unit.T),
            "T == sqrt(s11 s22) exp(gamma (1 + shift)) x sin dual (unit variances)")
    p.equal(sp.diff(_duals.plain(d.T), S12), _duals.plain(d.Tdot), "Tdot == dT/ds12")
    p.equal(_duals.plain(d.Tdiag), _duals.plain(d.T).subs({S12: S11, S22: S11}), "Tdiag == T(s, s, s)")
    nt = sp.sqrt(S11 * S22) * sp.exp(g * (S12 / sp.sqrt(S11 * S22) + sh))
    p.equal(_duals.plain(d.T), nt, "T == neural-tangents' formula")
    return p


def prove_identity() -> Proof:
    p = Proof("identity", covers=("identity",))
    d = dual_at(_duals.identity)
    p.equal(gauss2d(U * V), d.T, "T == E[u v] (Gaussian integral)")
    standard_claims(p, d, X, base=sp.Integer(0))
    return p


PROOFS = {"erf": prove_erf, "sin": prove_sin, "cos": prove_cos, "rbf": prove_rbf, "exp": prove_exp,
          "gaussian": prove_gaussian, "gabor": prove_gabor, "exp_normalized": prove_exp_normalized,
          "identity": prove_identity}


def prove() -> list[Proof]:
    return [fn() for fn in PROOFS.values()]
