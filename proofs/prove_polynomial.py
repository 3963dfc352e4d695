"""Proofs of the polynomial duals (Isserlis' theorem) and of ``Elementwise``'s exact MGF route.

1. MGF lemma: E[exp(a u + b v)] = exp((a^2 s11 + 2 a b s12 + b^2 s22)/2), by ``gauss2d`` (a, b real).
2. Isserlis (all degrees): E[u^n v^m] = d^n/da^n d^m/db^m of the MGF at 0 (differentiation under the
   integral, the integrand being dominated by exp(|a u| + |b v|)) = n! m! [a^n b^m] of
   exp(a^2 s11/2) exp(a b s12) exp(b^2 s22/2), whose terms have n = k + 2i, m = k + 2j:
   n! m! (s11/2)^i/i! s12^k/k! (s22/2)^j/j!. Claim: this equals the library's term
   C(n,k) C(m,k) k! s12^k (n-k-1)!! s11^((n-k)/2) (m-k-1)!! s22^((m-k)/2) for symbolic i, j, k >= 0.
   Cross-check: ``gaussian_moment(n, m)`` == ``gauss2d(u^n v^m)`` for n, m <= MOMENT_DEGREE.
3. ``polynomial`` is sum_ij c_i c_j E[u^i v^j] (T) and sum_ij i j c_i c_j E[u^(i-1) v^(j-1)] (Tdot) by
   linearity; checked directly against ``gauss2d`` for a degree-4 polynomial with symbolic coefficients,
   plus Price and the s12 = 0 values; ``monomial(n)`` likewise for n <= MONOMIAL_DEGREE and theory.md's
   x^2, x^3 forms.
4. ``Elementwise``'s exact route (``_elementwise.exact_dual``): E[u^k e^(a u) v^l e^(b v)] =
   d^k/da^k d^l/db^l MGF (lemma 1, differentiated under the integral). Checked against ``gauss2d`` for
   several activations built from polynomials, exp, sin, cos, sinh, cosh.
"""

from __future__ import annotations

import sympy as sp

from kernelalg.core import _duals
from kernelalg.layers._elementwise import exact_dual

from ._common import (S11, S12, S22, U, V, X, Proof, dual_at, expect1d, gauss2d, standard_claims)

MOMENT_DEGREE = 5
MONOMIAL_DEGREE = 6
CS = sp.symbols("c0:5", real=True)


def _pair(phi: sp.Expr, exp_form: bool = False) -> sp.Expr:
    g = phi.subs(X, U) * phi.subs(X, V)
    return sp.expand(g.rewrite(sp.exp)) if exp_form else sp.expand(g)


def prove_moments() -> Proof:
    """Lemmas 1 and 2 (covers ``gaussian_moment``)."""
    p = Proof("gaussian_moment", covers=("gaussian_moment",))
    a, b = sp.symbols("a b", real=True)
    mgf = sp.exp((a**2 * S11 + 2 * a * b * S12 + b**2 * S22) / 2)
    p.equal(gauss2d(sp.exp(a * U + b * V)), mgf, "MGF: E[exp(a u + b v)] (Gaussian integral)")
    i, j, k = sp.symbols("i j k", integer=True, nonnegative=True)
    n, m = k + 2 * i, k + 2 * j
    lib = (sp.binomial(n, k) * sp.binomial(m, k) * sp.factorial(k) * S12**k * sp.factorial2(n - k - 1) * S11**i
           * sp.factorial2(m - k - 1) * S22**j)
    taylor = (sp.factorial(n) * sp.factorial(m) * (S11 / 2) ** i / sp.factorial(i) * S12**k / sp.factorial(k)
              * (S22 / 2) ** j / sp.factorial(j))
    ratio = sp.combsimp(sp.gammasimp((lib / taylor).rewrite(sp.gamma)))
    p.check(ratio == 1, "Isserlis term == n! m! [a^n b^m] MGF, all n = k + 2i, m = k + 2j", "symbolic (gamma)")
    for nn in range(MOMENT_DEGREE + 1):
        for mm in range(nn, MOMENT_DEGREE + 1):
            got = _duals.gaussian_moment(nn, mm, S11, S12, S22)
            p.equal(got, gauss2d(U**nn * V**mm), f"E[u^{nn} v^{mm}] (Gaussian integral)")
            p.equal(_duals.gaussian_moment(mm, nn, S22, S12, S11), got, f"E[u^{mm} v^{nn}] by symmetry")
    return p


def prove_polynomial() -> Proof:
    p = Proof("polynomial", covers=("polynomial",))
    d = dual_at(_duals.polynomial, CS)
    phi = sum((c * X**i for i, c in enumerate(CS)), sp.Integer(0))
    p.equal(gauss2d(_pair(phi)), d.T, "degree 4, symbolic coefficients: T == E[phi(u) phi(v)] (Gaussian integral)")
    dphi = sp.diff(phi, X)
    p.equal(gauss2d(_pair(dphi)), d.Tdot, "Tdot == E[phi'(u) phi'(v)] (Gaussian integral)")
    standard_claims(p, d, phi, base=gauss2d(_pair(sp.diff(phi, X, 2))))
    return p


def prove_monomial() -> Proof:
    p = Proof("monomial", covers=("monomial",))
    for n in range(MONOMIAL_DEGREE + 1):
        d = dual_at(_duals.monomial, n)
        base = gauss2d(_pair(sp.diff(X**n, X, 2))) if n >= 2 else sp.Integer(0)
        p.equal(d.T, gauss2d(_pair(X**n)) if n else 1, f"degree {n}: T == E[u^n v^n] (Gaussian integral)")
        standard_claims(p, d, X**n, base=base, label=f"degree {n}")
    p.equal(dual_at(_duals.monomial, 2).T, 2 * S12**2 + S11 * S22, "theory.md: x^2 -> 2 s12^2 + s11 s22")
    p.equal(dual_at(_duals.monomial, 3).T, 6 * S12**3 + 9 * S12 * S11 * S22,
            "theory.md: x^3 -> 6 s12^3 + 9 s12 s11 s22")
    return p


HERMITE_DEGREE = 5


def prove_hermite() -> Proof:
    """Hermite(n) = He_n / sqrt(n!): orthonormal under N(0, 1) (so the coefficients are the right ones, read
    independently of sympy's table through the Gaussian integral), T and Tdot by the Gaussian integral at
    any variances, and Mehler's form s12^n, n s12^(n-1) at unit variances (neural-tangents' kernel)."""
    p = Proof("hermite", covers=("hermite", "hermite_coefficients"))
    polys = [sum((c * X**i for i, c in enumerate(_duals.hermite_coefficients(n))), sp.Integer(0))
             for n in range(HERMITE_DEGREE + 1)]
    for n, hn in enumerate(polys):
        for m in range(n + 1):
            got = expect1d(sp.expand(hn * polys[m]), X, sp.Integer(1))
            p.equal(got, 1 if m == n else 0, f"E[h_{n} h_{m}] under N(0, 1) (Gaussian integral)")
        d = dual_at(_duals.hermite, n)
        p.equal(gauss2d(_pair(hn)), d.T, f"degree {n}: T == E[phi(u) phi(v)] (Gaussian integral)")
        dphi = sp.diff(hn, X)
        p.equal(gauss2d(_pair(dphi)) if dphi != 0 else 0, d.Tdot, f"degree {n}: Tdot == E[phi'(u) phi'(v)]")
        unit = {S11: 1, S22: 1}
        p.equal(d.T.subs(unit), S12**n, f"degree {n}, unit variances: T == s12^n (Mehler)")
        p.equal(d.Tdot.subs(unit), n * S12 ** max(n - 1, 0) if n else 0,
                f"degree {n}, unit variances: Tdot == n s12^(n-1)")
    return p


ELEMENTWISE_EXAMPLES = (
    X**3 - 2 * X,
    sp.exp(X / 2) * X**2,
    sp.sin(2 * X) + X,
    sp.cos(X) * X,
    sp.sinh(X / 2),
    sp.exp(-X) + sp.sin(X + 1),
)


def prove_elementwise_mgf() -> Proof:
    p = Proof("elementwise_mgf", covers=("exact_dual",))
    for phi in ELEMENTWISE_EXAMPLES:
        fn = exact_dual(phi)
        p.check(fn is not None, f"{phi}: exact route applies")
        d = dual_at(fn)
        p.equal(gauss2d(_pair(phi, True), complex_b=True), d.T, f"{phi}: T == E[phi(u) phi(v)] (Gaussian integral)")
        dphi = sp.diff(phi, X)
        p.equal(gauss2d(_pair(dphi, True), complex_b=True), d.Tdot, f"{phi}: Tdot == E[phi'(u) phi'(v)]")
        p.equal(d.Tdiag, d.T.subs({S12: S11, S22: S11}), f"{phi}: Tdiag == T(s, s, s)")
    p.check(exact_dual(sp.tanh(X)) is None, "tanh: exact route declines (quadrature route instead)")
    return p


PROOFS = {"gaussian_moment": prove_moments, "polynomial": prove_polynomial, "monomial": prove_monomial,
          "hermite": prove_hermite, "elementwise_mgf": prove_elementwise_mgf}


def prove() -> list[Proof]:
    return [fn() for fn in PROOFS.values()]
