"""Expression nodes of the closed-form duals: a textbook form, and a form that is evaluated stably.

A dual such as Williams' erf kernel is a textbook formula (what ``ka.symbolic`` shows, what the analysis
package expands and integrates, what ``proofs/`` prove), but evaluated as written it cancels or overflows:
s11 s22 - s12^2 at large variances, asin(g) near |g| = 1, s11 + s22 - 2 s12 for nearly parallel inputs. Each
node here stands for one such sub-formula. :func:`plain` replaces a node by its textbook form; the backends'
walker evaluates :meth:`numeric` instead (a sympy expression of the same value), unless the backend lowers the
node itself (:class:`corr`: |rho| snapped to 1; :class:`asin_gap` on JAX: a range-reduced polynomial). ``proofs/prove_numeric.py`` proves numeric == textbook for
every node.

Stable forms. With p_i = 1 + k s_i, the ratios e_i = k s_i / p_i and r_i = 1 / p_i lie in [0, 1] for k >= 0, and

    (p1 p2 - k^2 s12^2) / (p1 p2) = h = (1 - rho^2) e1 e2 + r1 + r2 - r1 r2

is a sum of non-negative terms (exactly r1 + r2 - r1 r2 at |rho| = 1), symmetric in its arguments, and no
intermediate grows faster than s (s11 s22 would overflow float32 at s ~ 2e19, Delta s11 s22 at s ~ 1e9).
"""

from __future__ import annotations

import sympy as sp
from sympy.core.cache import cacheit

Expr = sp.Expr


class _Node(sp.Function):
    """Base class: :meth:`textbook` is the formula; sympy differentiates and prints through it."""

    def textbook(self) -> Expr:
        raise NotImplementedError

    def fdiff(self, argindex: int = 1) -> Expr:
        return sp.diff(plain(self), self.args[argindex - 1])

    def _latex(self, printer: object) -> str:
        return printer._print(plain(self))  # type: ignore[attr-defined]


class corr(_Node):
    """The correlation rho = s12 / sqrt(s11 s22) as an explicit node.

    The backends lower it with |rho| snapped to exactly 1 within a few ulps, so that identical (or parallel)
    inputs give exactly sqrt(1 - rho^2) = 0 and arccos(rho) = 0 instead of amplified rounding noise (the
    arc-cosine family has a square-root singularity at |rho| = 1), and so that the kernel of x with itself is
    the variance map at any depth (every dual is written through this node).
    """

    nargs = 3

    def textbook(self) -> Expr:
        s11, s12, s22 = self.args
        return s12 / sp.sqrt(s11 * s22)


class ratio(_Node):
    """e = k s / (1 + k s): a node, so that products of per-sample ratios (e1 e2) stay products of ratios in
    the program (sympy would merge them into k^2 s11 s22 / (p1 p2), and CSE would extract s11 s22)."""

    nargs = 2

    def textbook(self) -> Expr:
        k, s = self.args
        return k * s / (1 + k * s)

    @cacheit
    def numeric(self) -> Expr:
        return self.textbook()


def _scaled(k: Expr, s11: Expr, s12: Expr, s22: Expr) -> tuple[Expr, Expr, Expr, Expr, Expr]:
    """(rho, e1, e2, r1, r2) and the scaled determinant h of the module docstring, as (rho, e1, e2, r_root, h)
    with r_root = sqrt(r1 r2) = 1 / sqrt(p1 p2)."""
    rho = corr(s11, s12, s22)
    e1, e2 = ratio(k, s11), ratio(k, s22)
    r1, r2 = 1 / (1 + k * s11), 1 / (1 + k * s22)
    h = (1 - rho**2) * e1 * e2 + (r1 + r2 - r1 * r2)
    return rho, e1, e2, sp.sqrt(r1) * sp.sqrt(r2), h


class asin_gap(_Node):
    """asin(g), given h = 1 - g^2 computed without cancellation (the JAX backend reduces the range with
    1 - |g| = h / (1 + |g|), exact near |g| = 1 where 1 - |g| itself has lost its digits); elsewhere evaluated as
    atan(g / sqrt(h))."""

    nargs = 2

    def textbook(self) -> Expr:
        return sp.asin(self.args[0])

    @cacheit
    def numeric(self) -> Expr:
        g, h = self.args
        return sp.atan(g / sp.sqrt(h), evaluate=False)


class williams(_Node):
    """asin(k s12 / sqrt((1 + k s11)(1 + k s22))), k >= 0 (Williams' erf kernel has k = 2 b^2; GELU's angle k = 1).

    Evaluated as :class:`asin_gap` (g, h) with g = rho sqrt(e1 e2): asin of a rounded g is ill-conditioned near
    |g| = 1 (large variances, nearly parallel inputs); with 1 - g^2 = h known accurately it is not.
    """

    nargs = 4

    def textbook(self) -> Expr:
        k, s11, s12, s22 = self.args
        return sp.asin(k * s12 / sp.sqrt((1 + k * s11) * (1 + k * s22)))

    @cacheit
    def numeric(self) -> Expr:
        k, s11, s12, s22 = self.args
        rho, e1, e2, _, h = _scaled(k, s11, s12, s22)
        return asin_gap(rho * sp.sqrt(e1) * sp.sqrt(e2), h)


class rdet(_Node):
    """1 / sqrt((1 + k s11)(1 + k s22) - k^2 s12^2), evaluated as sqrt(r1 r2 / h) (no cancellation, no s^2)."""

    nargs = 4

    def textbook(self) -> Expr:
        k, s11, s12, s22 = self.args
        return 1 / sp.sqrt((1 + k * s11) * (1 + k * s22) - k**2 * s12**2)

    @cacheit
    def numeric(self) -> Expr:
        k, s11, s12, s22 = self.args
        _, _, _, root, h = _scaled(k, s11, s12, s22)
        return root / sp.sqrt(h)


class sqdist(_Node):
    """s11 + s22 - 2 s12 = E[(u - v)^2], evaluated as (sqrt s11 - sqrt s22)^2 + 2 sqrt(s11 s22)(1 - rho): exactly 0
    for parallel inputs of equal norm instead of the rounding noise of a difference of large numbers.
    (E[(u + v)^2] is sqdist(s11, -s12, s22).)"""

    nargs = 3

    def textbook(self) -> Expr:
        s11, s12, s22 = self.args
        return s11 + s22 - 2 * s12

    @cacheit
    def numeric(self) -> Expr:
        s11, s12, s22 = self.args
        r1, r2 = sp.sqrt(s11), sp.sqrt(s22)
        return (r1 - r2) ** 2 + 2 * r1 * r2 * (1 - corr(s11, s12, s22))


def plain(expr: Expr) -> Expr:
    """``expr`` with every node replaced by its textbook form (for display, analysis and proofs)."""
    while True:
        out = expr.replace(lambda e: isinstance(e, _Node), lambda e: e.textbook())
        if out == expr:
            return out
        expr = out
