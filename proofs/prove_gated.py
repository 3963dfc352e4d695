"""Proofs for the gated recurrent kernels (GRU, LSTM with input-driven gates; docs/recurrent.md, "Gated cells").

1. The erf gate g(x) = (1 + erf(x))/2 is erf_phi(x, 1/2, 1, 1/2), so E[g(u) g(v)] and E[g'(u) g'(v)] are the
   erf dual at (a, b, c) = (1/2, 1, 1/2), proven for symbolic a, b, c in ``prove_smooth.erf``; here also its
   Tdot by a direct Gaussian integral, the standard claims (Price, values at s12 = 0, diagonal) and the closed
   forms 1/4 + asin(2 s12 / sqrt((1 + 2 s11)(1 + 2 s22))) / (2 pi) and 1 / (pi sqrt((1 + 2 s11)(1 + 2 s22) - 4 s12^2)).
2. Given one unit's memory-gate weights xi, the state is h_t = F_t h_(t-1) + G_t phi_t (GRU: F = 1 - z, G = z;
   LSTM cell: F = f, G = 1, phi_t -> i_t phi(c_t)), so h_t = sum_k w_(k,t) phi_k with w_(k,t) = G_k prod_(l=k+1..t)
   F_l, and E[h_t h'_t' | xi] = sum_(k,k') w_(k,t) w'_(k',t') Q(k,k') for the source covariance Q. The library's
   cross-grid recursion (rows t, in-row recurrence for M') and own-grid recursion (columns t, with M'(s,t) =
   M(t,s)) reproduce that double sum exactly: checked as polynomial identities in symbolic F, G, F', G', Q for
   all t, t' <= 4.
3. The NTK recursion (N, A, A') is the same recursion with the tangent term V(u,u') = E[<v_u, v'_u'> | xi] in
   place of G G' Q, and equals sum_(u,u') prod F prod F' V(u,u') (the expansion of <dh_t, dh'_t'> for
   dh_t = F_t dh_(t-1) + v_t).
4. GRU update-gate tangent: E[(phi_t - h_(t-1))(phi'_t' - h'_(t'-1)) | xi] = P(t,t') - M(t-1,t') - M'(t,t'-1)
   + L(t-1,t'-1) with M(t,t') = F_t M(t-1,t') + G_t P(t,t') = E[h_t phi'_t' | xi].

The probabilistic steps (which quantities are jointly Gaussian and independent in the limit) are derivations in
docs/recurrent.md checked by Monte Carlo (tests/test_gated.py, benchmarks/bench_gated.py), not proofs here.
"""

from __future__ import annotations

import sympy as sp

from kernelalg.core import _duals
from kernelalg.layers.recurrent._gated import _gate_dual

from ._common import S11, S12, S22, X, Proof, dual_at, gauss2d, standard_claims
from .prove_smooth import _pair, erf_phi

#: Largest grid on which the recursions are checked symbolically.
GRID = 4


def prove_gate_dual() -> Proof:
    p = Proof("gate_dual")
    half = sp.Rational(1, 2)
    g = (1 + sp.erf(X)) / 2
    p.equal(g, erf_phi(X, half, 1, half), "g(x) = (1 + erf(x))/2 == erf_phi(x, 1/2, 1, 1/2)")
    d = _gate_dual(S11, S12, S22)
    ref = dual_at(_duals.erf, half, 1, half)
    p.equal(d.T, ref.T, "library gate dual T == erf dual at (1/2, 1, 1/2) (prove_smooth.erf)")
    p.equal(d.Tdot, ref.Tdot, "library gate dual Tdot == erf dual at (1/2, 1, 1/2)")
    p.equal(gauss2d(_pair(sp.diff(g, X))), d.Tdot, "Tdot == E[g'(u) g'(v)] (Gaussian integral)")
    standard_claims(p, d, g, base=None, square_mean=False, label="gate")
    p1, p2 = 1 + 2 * S11, 1 + 2 * S22
    p.equal(d.T, sp.Rational(1, 4) + sp.asin(2 * S12 / sp.sqrt(p1 * p2)) / (2 * sp.pi), "T == 1/4 + asin(.)/(2 pi)")
    p.equal(d.Tdot, 1 / (sp.pi * sp.sqrt(p1 * p2 - 4 * S12**2)), "Tdot == 1/(pi sqrt(.))")
    return p


def _symbols(n: int, name: str) -> list[sp.Symbol]:
    return [sp.Integer(0)] + list(sp.symbols(f"{name}1:{n + 1}", real=True))   # index 1..n


def _path_sum(f1, g1, f2, g2, q, t: int, tp: int) -> sp.Expr:
    """sum_(k <= t, k' <= t') w_(k,t) w'_(k',t') Q(k,k'), w_(k,t) = G_k prod_(l=k+1..t) F_l."""
    w = lambda f, g, k, t: g[k] * sp.Mul(*f[k + 1:t + 1])  # noqa: E731
    return sp.Add(*[w(f1, g1, k, t) * w(f2, g2, kp, tp) * q[k][kp] for k in range(1, t + 1) for kp in range(1, tp + 1)])


def _rows(f1, g1, f2, g2, q, n: int) -> dict:
    """The cross-grid recursion of the library, row by row (M' along the row)."""
    z = sp.Integer(0)
    L = {(t, tp): z for t in range(n + 1) for tp in range(n + 1)}
    M, Mq = dict(L), dict(L)
    for t in range(1, n + 1):
        for tp in range(1, n + 1):
            Mq[t, tp] = f2[tp] * Mq[t, tp - 1] + g2[tp] * q[t][tp]
        for tp in range(1, n + 1):
            L[t, tp] = (f1[t] * f2[tp] * L[t - 1, tp - 1] + f1[t] * g2[tp] * M[t - 1, tp] + g1[t] * f2[tp] * Mq[t, tp - 1]
                        + g1[t] * g2[tp] * q[t][tp])
            M[t, tp] = f1[t] * M[t - 1, tp] + g1[t] * q[t][tp]
    return {"L": L, "M": M, "Mq": Mq}


def _columns(f, g, q, n: int) -> dict:
    """The own-grid recursion of the library, column by column (M(tau-1, s) = M'(s, tau-1) by symmetry)."""
    z = sp.Integer(0)
    col, row = [z] * (n + 1), [z] * (n + 1)          # L(s, tau-1); M(tau-1, s)
    L = {}
    for tau in range(1, n + 1):
        mc = [z] * (n + 1)                            # M(s, tau), s <= tau
        for s in range(1, tau + 1):
            mc[s] = f[s] * mc[s - 1] + g[s] * q[s][tau]
        mv = [row[s] if s < tau else (mc[tau - 1] if s == tau else z) for s in range(n + 1)]
        new = [z] * (n + 1)
        for s in range(1, tau + 1):
            new[s] = (f[s] * f[tau] * col[s - 1] + f[s] * g[tau] * mc[s - 1] + g[s] * f[tau] * mv[s]
                      + g[s] * g[tau] * q[s][tau])
            L[s, tau] = new[s]
        row = [f[tau] * mv[s] + g[tau] * q[s][tau] if 1 <= s <= tau else z for s in range(n + 1)]
        col = new
    return L


def prove_recursions() -> Proof:
    p = Proof("gated_recursions")
    n = GRID
    f1, g1, f2, g2 = (_symbols(n, s) for s in ("F", "G", "Fp", "Gp"))
    q = [[sp.Symbol(f"Q_{k}_{kp}", real=True) for kp in range(n + 1)] for k in range(n + 1)]
    rows = _rows(f1, g1, f2, g2, q, n)
    ok = all(sp.expand(rows["L"][t, tp] - _path_sum(f1, g1, f2, g2, q, t, tp)) == 0
             for t in range(1, n + 1) for tp in range(1, n + 1))
    p.check(ok, f"cross grid (rows): L(t,t') == sum_(k,k') w_(k,t) w'_(k',t') Q(k,k') for t, t' <= {n}",
            "exact (polynomial identity)")
    ones = [sp.Integer(1)] * (n + 1)
    ok = all(sp.expand(rows["M"][t, tp] - sp.Add(*[g1[k] * sp.Mul(*f1[k + 1:t + 1]) * q[k][tp] for k in range(1, t + 1)]))
             == 0 for t in range(1, n + 1) for tp in range(1, n + 1))
    p.check(ok, "M(t,t') == sum_k w_(k,t) Q(k,t'): E[h_t phi'_t'] (GRU tangent term 4.)", "exact (polynomial identity)")
    # 3. the NTK recursion: the same recursion with G = G' = 1 and the tangent term V as the source
    v = [[sp.Symbol(f"V_{u}_{up}", real=True) for up in range(n + 1)] for u in range(n + 1)]
    ntk = _rows(f1, ones, f2, ones, v, n)["L"]
    ok = all(sp.expand(ntk[t, tp] - _path_sum(f1, ones, f2, ones, v, t, tp)) == 0
             for t in range(1, n + 1) for tp in range(1, n + 1))
    p.check(ok, "NTK: N(t,t') == sum_(u,u') prod_(u<l<=t) F_l prod_(u'<l'<=t') F'_l' V(u,u')", "exact (polynomial identity)")
    # own grid: x' = x, Q symmetric
    qs = [[sp.Symbol(f"S_{min(k, kp)}_{max(k, kp)}", real=True) for kp in range(n + 1)] for k in range(n + 1)]
    own = _columns(f1, g1, qs, n)
    ok = all(sp.expand(own[s, tau] - _path_sum(f1, g1, f1, g1, qs, s, tau)) == 0
             for tau in range(1, n + 1) for s in range(1, tau + 1))
    p.check(ok, "own grid (columns, symmetry M(tau-1, s) = M'(s, tau-1)): L(s,tau) == the double sum, s <= tau",
            "exact (polynomial identity)")
    # 4. GRU update-gate tangent term, with h_t = sum_k w_(k,t) phi_k and E[phi_k phi'_k'] = P(k,k')
    pm = rows
    ok = all(sp.expand(q[t][tp] - pm["M"][t - 1, tp] - pm["Mq"][t, tp - 1] + pm["L"][t - 1, tp - 1]
                       - _expect_diff(f1, g1, f2, g2, q, t, tp)) == 0 for t in range(1, n + 1) for tp in range(1, n + 1))
    p.check(ok, "E[(phi_t - h_(t-1))(phi'_t' - h'_(t'-1))] == P - M(t-1,t') - M'(t,t'-1) + L(t-1,t'-1)",
            "exact (polynomial identity)")
    return p


def _expect_diff(f1, g1, f2, g2, q, t: int, tp: int) -> sp.Expr:
    """E[(phi_t - h_(t-1))(phi'_t' - h'_(t'-1))] by expanding the unrolled states (E[phi_k phi'_k'] = Q(k,k'))."""
    w = lambda f, g, k, s: g[k] * sp.Mul(*f[k + 1:s + 1])  # noqa: E731
    a = {t: sp.Integer(1)} | {k: -w(f1, g1, k, t - 1) for k in range(1, t)}
    b = {tp: sp.Integer(1)} | {k: -w(f2, g2, k, tp - 1) for k in range(1, tp)}
    return sp.Add(*[ca * cb * q[k][kp] for k, ca in a.items() for kp, cb in b.items()])


PROOFS = {"gate_dual": prove_gate_dual, "recursions": prove_recursions}


def prove() -> list[Proof]:
    return [fn() for fn in PROOFS.values()]
