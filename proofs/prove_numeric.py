"""Proof that every node of ``kernelalg.core._nodes`` evaluates its textbook form: numeric() == textbook().

The duals are proven in their textbook forms (``plain``); the backends evaluate the nodes' stable forms, so
this closes the gap. On the PD cone (``_common``: s12 = k s11, s22 = c + k^2 s11) with the node parameter
kappa > 0:

* ratio: the same formula.
* rdet: sqrt(r1) sqrt(r2) / sqrt(h) == 1 / sqrt(p1 p2 - kappa^2 s12^2), h = (1 - rho^2) e1 e2 + r1 + r2 - r1 r2
  (algebraic). The Gaussian activation uses kappa = -2 b, negative for b > 0: both sides are real-analytic in
  (kappa, s11, s12, s22) on the connected set where p1, p2 and the determinant are positive (kappa = 0 joins the
  two signs), so agreeing for kappa > 0 they agree there (identity theorem).
* williams: atan(g / sqrt(h)) == asin(kappa s12 / sqrt(p1 p2)), g = rho sqrt(e1 e2): equal s12-derivatives
  (algebraic) and both 0 at s12 = 0 (the segment from 0 stays in the PD cone).
* sqdist: (sqrt s11 - sqrt s22)^2 + 2 sqrt(s11 s22)(1 - rho) == s11 + s22 - 2 s12 (algebraic), and with -s12.
"""

from __future__ import annotations

import sympy as sp

from kernelalg.core import _nodes

from ._common import S11, S12, S22, Proof, at_zero, d12

KAPPA = sp.Symbol("kappa", positive=True)


def _numeric(node: sp.Expr) -> sp.Expr:
    return _nodes.plain(node.numeric())


def prove_nodes() -> Proof:
    p = Proof("numeric forms", covers=("ratio", "rdet", "williams", "sqdist"))
    node = _nodes.ratio(KAPPA, S11)
    p.equal(_numeric(node), node.textbook(), "ratio: numeric == k s / (1 + k s)")
    node = _nodes.rdet(KAPPA, S11, S12, S22)
    p.equal(_numeric(node), node.textbook(), "rdet: sqrt(r1 r2 / h) == 1/sqrt(p1 p2 - k^2 s12^2)")
    node = _nodes.williams(KAPPA, S11, S12, S22)
    p.equal(d12(_numeric(node)), d12(node.textbook()), "williams: d/ds12 atan(g/sqrt(h)) == d/ds12 asin(...)")
    p.check(at_zero(_numeric(node)) == 0 == at_zero(node.textbook()), "williams: both 0 at s12 = 0")
    for sign in (1, -1):
        node = _nodes.sqdist(S11, sign * S12, S22)
        p.equal(_numeric(node), node.textbook(), f"sqdist: stable form == s11 + s22 {'-' if sign > 0 else '+'} 2 s12")
    return p


PROOFS = {"nodes": prove_nodes}
