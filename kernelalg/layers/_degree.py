"""Degree bounds of activation formulas: the largest power of x a formula can reach, read off its structure
without expanding it (shared by the formula parser and ``Elementwise``)."""

from __future__ import annotations

import math
import sympy as sp

from kernelalg.layers._generic import MAX_DEGREE, X, _fold

#: Largest degree in x of an ``Elementwise`` activation (a bound read off the formula, through sums, products,
#: powers and function arguments): the same limit as ``Monomial``/``Polynomial`` (``MAX_DEGREE``).
MAX_FORMULA_DEGREE = MAX_DEGREE
#: Functions that keep the polynomial degree of their arguments (abs, max, min).
_PIECEWISE_LINEAR = (sp.Abs, sp.Max, sp.Min)


def _degree_node(e: sp.Expr, d: list[int]) -> int:
    if e.is_Add:
        return max(d)
    if e.is_Mul:
        return sum(d)
    if e.is_Pow:
        n = e.exp
        return d[0] * math.ceil(min(abs(float(n)), 1e9)) if n.is_number and n.is_finite else d[0] + d[1]
    if isinstance(e, _PIECEWISE_LINEAR):
        return max(d)
    return max(d) if max(d) > 1 else 0  # exp(b x), sin(b x + c), tanh(x), ...: no polynomial growth of their own


def degree_bound(expr: sp.Expr) -> int:
    """An upper bound on the polynomial degree of ``expr`` in x: x**k counts k, sums the max, products the sum,
    abs/max/min the max of their arguments, other functions 0 for affine arguments and else the degree of their
    arguments (so x**16 * (x + 1) and x**16 * max(x, 0) have 17, x**16 * exp(x) has 16, tanh(x**3) has 3)."""
    return _fold(expr, lambda e: 1 if e == X else 0, _degree_node)
