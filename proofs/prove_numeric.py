"""Proof that every node of ``kernelalg.core._nodes`` evaluates its textbook form: numeric() == textbook().

The duals are proven in their textbook forms (``plain``); the backends evaluate the nodes' stable forms, so
this closes the gap. On the PD cone (``_common``: s12 = k s11, s22 = c + k^2 s11) with the node parameter
kappa > 0:

* ratio: the same formula.
* rdet: sqrt(r1) sqrt(r2) / sqrt(h) == 1 / sqrt(p1 p2 - kappa^2 s12^2), h = (1 - rho^2) e1 e2 + r1 + r2 - r1 r2
  (algebraic). The Gaussian activation uses kappa = -2 b, negative for b > 0: both sides are real-analytic in
  (kappa, s11, s12, s22) on the connected set where p1, p2 and the determinant are positive (kappa = 0 joins the
  two signs), so agreeing for kappa > 0 they agree there (identity theorem).
* williams: asin_gap(g, h) with g = rho sqrt(e1 e2) and h = 1 - g^2 (algebraic), and asin(g) ==
  asin(kappa s12 / sqrt(p1 p2)) (equal s12-derivatives, algebraic, and both 0 at s12 = 0; the segment from 0
  stays in the PD cone).
* asin_gap: atan(g / sqrt(1 - g^2)) == asin(g) on (-1, 1): equal g-derivatives (algebraic), both 0 at g = 0.
  (The JAX lowering evaluates asin(g) by a polynomial, reduced with 1 - |g| = h / (1 + |g|), which holds for
  h = 1 - g^2; its accuracy is tested against libm in tests/test_deep_numerics.py.)
* sqdist: (sqrt s11 - sqrt s22)^2 + 2 sqrt(s11 s22)(1 - rho) == s11 + s22 - 2 s12 (algebraic), and with -s12.
"""

from __future__ import annotations

import sympy as sp

from kernelalg.core import _nodes

from ._common import S11, S12, S22, Proof, at_zero, d12

KAPPA = sp.Symbol("kappa", positive=True)
G = sp.Symbol("g", real=True)


def _numeric(node: sp.Expr) -> sp.Expr:
    return _nodes.plain(node.numeric())


def prove_nodes() -> Proof:
    p = Proof("numeric forms", covers=("ratio", "rdet", "williams", "asin_gap", "sqdist"))
    node = _nodes.ratio(KAPPA, S11)
    p.equal(_numeric(node), node.textbook(), "ratio: numeric == k s / (1 + k s)")
    node = _nodes.rdet(KAPPA, S11, S12, S22)
    p.equal(_numeric(node), node.textbook(), "rdet: sqrt(r1 r2 / h) == 1/sqrt(p1 p2 - k^2 s12^2)")
    node = _nodes.williams(KAPPA, S11, S12, S22)
    gap = node.numeric()
    g, h = (_nodes.plain(a) for a in gap.args)
    p.equal(h, 1 - g**2, "williams: the asin_gap arguments satisfy h == 1 - g^2")
    p.equal(d12(_numeric(node)), d12(node.textbook()), "williams: d/ds12 asin(g) == d/ds12 asin(kappa s12/sqrt(p1 p2))")
    p.check(at_zero(_numeric(node)) == 0 == at_zero(node.textbook()), "williams: both 0 at s12 = 0")
    node = _nodes.asin_gap(G, 1 - G**2)
    p.equal(sp.diff(_numeric(node), G), sp.diff(node.textbook(), G), "asin_gap: d/dg atan(g/sqrt(1 - g^2)) == d/dg asin(g)")
    p.check(_numeric(node).subs(G, 0) == 0 == node.textbook().subs(G, 0), "asin_gap: both 0 at g = 0")
    for sign in (1, -1):
        node = _nodes.sqdist(S11, sign * S12, S22)
        p.equal(_numeric(node), node.textbook(), f"sqdist: stable form == s11 + s22 {'-' if sign > 0 else '+'} 2 s12")
    return p


PROOFS = {"nodes": prove_nodes}
