"""Activation formulas for ``Elementwise("x * tanh(x)")`` in architecture strings, parsed safely into sympy.

The formula is parsed with :mod:`ast` and walked (never ``eval``): ``x``, numbers, ``pi``, ``e``,
``+ - * / **`` (bounded exponents), unary minus and the functions of :data:`FORMULA_FUNCTIONS`.
"""

from __future__ import annotations

import ast
from typing import Any, Callable

import sympy as sp

from kernelalg.core._errors import KernelalgError
from kernelalg.layers._activations import X
from kernelalg.layers._degree import MAX_FORMULA_DEGREE, degree_bound
from kernelalg.layers._syntax import _check_number, _describe, _parse_tree, _where

#: Largest |exponent| of x in a formula (the dual of a high power is a huge expression).
MAX_FORMULA_EXPONENT = 16

BAD_FORMULA = ("Elementwise formula {text!r}: {problem}. Fix: write a function of x with numbers, + - * / **, "
               "and the functions {funcs}, e.g. Elementwise(\"x * tanh(x)\").")

#: Functions allowed in ``Elementwise("...")`` formulas.
FORMULA_FUNCTIONS: dict[str, Callable[..., sp.Expr]] = {
    "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "sinh": sp.sinh, "cosh": sp.cosh, "tanh": sp.tanh,
    "asin": sp.asin, "acos": sp.acos, "atan": sp.atan, "arctan": sp.atan, "asinh": sp.asinh,
    "exp": sp.exp, "log": sp.log, "sqrt": sp.sqrt, "erf": sp.erf, "erfc": sp.erfc, "abs": sp.Abs,
    "sign": sp.sign, "max": sp.Max, "min": sp.Min, "heaviside": lambda t: sp.Heaviside(t, sp.Rational(1, 2)),
    "sigmoid": lambda t: 1 / (1 + sp.exp(-t)), "softplus": lambda t: sp.log(1 + sp.exp(t)),
    "relu": lambda t: sp.Max(t, 0),
}
_FORMULA_CONSTANTS = {"pi": sp.pi, "e": sp.E}


def elementwise_args(args: list, kwargs: dict) -> tuple[list, dict]:
    """Arguments of ``Elementwise`` with the formula string replaced by a sympy-compatible callable."""
    fn = args[0] if args else kwargs.pop("fn", None)
    if not isinstance(fn, str):
        raise KernelalgError(BAD_FORMULA.format(text=fn, problem="the activation must be a quoted formula in x",
                                                funcs=", ".join(sorted(FORMULA_FUNCTIONS))))
    expr = parse_formula(fn)
    f = _formula_function(expr)
    kwargs.setdefault("name", "phi")
    return [f, *args[1:]], kwargs


def _formula_function(expr: sp.Expr) -> Callable[[Any], Any]:

    def phi(x: Any) -> Any:
        return expr.subs(X, x)
    return phi


def parse_formula(text: str) -> sp.Expr:
    """Parse an activation formula in ``x`` (e.g. ``"x * tanh(x)"``) into sympy, safely (no eval).

    Allowed: ``x``, numbers, ``pi``, ``e``, ``+ - * / **``, unary minus and :data:`FORMULA_FUNCTIONS`; exponents
    up to MAX_FORMULA_EXPONENT = 16 and a degree in x up to MAX_FORMULA_DEGREE = 16 (so (x**16)**16 is refused).

    Raises:
        KernelalgError: Naming the problem and the fix.
    """
    funcs = ", ".join(sorted(FORMULA_FUNCTIONS))

    def fail(problem: str) -> KernelalgError:
        return KernelalgError(BAD_FORMULA.format(text=text, problem=problem, funcs=funcs))

    try:
        tree = _parse_tree(text, "Elementwise formula")
    except KernelalgError as err:
        raise fail(str(err).split(" Fix:")[0]) from None

    def walk(node: ast.AST) -> sp.Expr:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            _check_number(node.value, node)
            return sp.Integer(node.value) if isinstance(node.value, int) else sp.Float(node.value)
        if isinstance(node, ast.Name):
            if node.id == "x":
                return X
            if node.id in _FORMULA_CONSTANTS:
                return _FORMULA_CONSTANTS[node.id]
            raise fail(f"unknown name {node.id!r}{_where(node)} (the variable is x)")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = walk(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow):
            a, b = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow):
                if not b.is_number:
                    raise fail(f"the exponent{_where(node)} must be a number")
                if abs(float(b)) > MAX_FORMULA_EXPONENT:
                    raise fail(f"the exponent {b} is too large (limit {MAX_FORMULA_EXPONENT}; the dual of a "
                               "high power is a huge expression)")
                return a ** b
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            return a * b if isinstance(node.op, ast.Mult) else a / b
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            f = FORMULA_FUNCTIONS.get(node.func.id)
            if f is None:
                raise fail(f"unknown function {node.func.id!r}{_where(node)}")
            try:
                return f(*(walk(a) for a in node.args))
            except TypeError:
                raise fail(f"wrong number of arguments to {node.func.id}{_where(node)}") from None
        bad = node.func if isinstance(node, ast.Call) and not isinstance(node.func, ast.Name) else node
        raise fail(f"{_describe(bad)}{_where(bad)} is not allowed")

    expr = sp.sympify(walk(tree))
    if expr.free_symbols - {X}:
        raise fail("it has symbols other than x")
    degree = degree_bound(expr)
    if degree > MAX_FORMULA_DEGREE:
        raise fail(f"its degree in x is up to {degree} (limit {MAX_FORMULA_DEGREE}, e.g. (x**16)**16 has 256; the "
                   "dual of a high power is a huge expression and overflows)")
    return expr
