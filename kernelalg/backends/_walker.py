"""Backend-independent evaluation of sympy expressions and straight-line programs.

A backend is a :class:`Table`: a mapping from sympy classes to functions on that backend's arrays,
plus how it builds constants and powers. The walker refuses any node the table does not know, with an
error that names the node and the fix. Opaque nodes (e.g. quadrature duals) carry their own lowering
in a ``lowering`` class attribute: ``{backend_name: fn}``; nodes with a ``numeric()`` method (the duals' stable
forms, :mod:`kernelalg.core._nodes`) are evaluated through the expression it returns, unless the table lowers
them itself. Structural nodes
(:class:`Op`: stencils, pooling, readouts, time recursions) carry one implementation per backend;
:func:`run_program` runs the one named like the table and refuses, naming the op and the fix, when there is none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import sympy as sp

from kernelalg.core import _errors as E
from kernelalg.core._program import Assign, Instruction, Op


@dataclass
class Table:
    """Lowering table of one backend.

    Attributes:
        name: Backend name ("jax", "numpy", "mpmath").
        functions: sympy class -> function of the lowered arguments.
        const: Python/sympy number -> backend constant.
        power: (lowered base, sympy exponent) -> lowered power.
        add: Binary addition.
        mul: Binary multiplication.
        div: Binary division.
        product: Optional (numerator values, denominator values) -> their quotient, for backends that choose
            the order of a product (None: left to right, then the divisions).
    """

    name: str
    functions: dict[type, Callable[..., Any]]
    const: Callable[[sp.Expr], Any]
    power: Callable[[Any, sp.Expr], Any]
    add: Callable[[Any, Any], Any] = field(default=lambda a, b: a + b)
    mul: Callable[[Any, Any], Any] = field(default=lambda a, b: a * b)
    div: Callable[[Any, Any], Any] = field(default=lambda a, b: a / b)
    product: Callable[[list, list], Any] | None = None

    def lowers(self, expr: sp.Basic) -> bool:
        """Whether this table (or the node's own ``lowering``) has a function for ``expr``."""
        own = getattr(type(expr), "lowering", None) or {}
        return self.name in own or any(cls in self.functions for cls in type(expr).__mro__)

    def lookup(self, expr: sp.Basic) -> Callable[..., Any]:
        own = getattr(type(expr), "lowering", None)
        if own and self.name in own:
            return own[self.name]
        for cls in type(expr).__mro__:
            if cls in self.functions:
                return self.functions[cls]
        supported = ", ".join(sorted({c.__name__ for c in self.functions}))
        raise E.LoweringError(E.UNKNOWN_NODE.format(backend=self.name, node=expr, cls=type(expr).__name__,
                                                    supported=supported))


def evaluate(expr: sp.Basic, env: Mapping[sp.Symbol, Any], table: Table,
             memo: dict[sp.Basic, Any] | None = None) -> Any:
    """Evaluate ``expr`` with symbols bound by ``env`` on the backend ``table``."""
    memo = {} if memo is None else memo

    def ev(e: sp.Basic) -> Any:
        if e in memo:
            return memo[e]
        if e.is_Symbol:
            if e not in env:
                raise E.LoweringError(f"Free symbol {e} has no value. Fix: pass it among the inputs/params.")
            out = env[e]
        elif e.is_Number or e.is_NumberSymbol:
            out = table.const(e)
        elif e.is_Add:
            terms = [ev(a) for a in e.args]
            out = terms[0]
            for t in terms[1:]:
                out = table.add(out, t)
        elif e.is_Mul:
            num = [ev(a) for a in e.args if not (a.is_Pow and a.exp == -1)]
            den = [ev(a.base) for a in e.args if a.is_Pow and a.exp == -1]
            out = table.product(num, den) if table.product is not None else _fold(table, num, den)
        elif e.is_Pow:
            out = table.power(ev(e.base), e.exp) if e.exp.is_Number else table.lookup(e)(ev(e.base), ev(e.exp))
        elif hasattr(e, "numeric") and not table.lowers(e):  # a stable form of its value (kernelalg.core._nodes)
            out = ev(e.numeric())
        else:
            out = table.lookup(e)(*[ev(a) for a in e.args])
        memo[e] = out
        return out

    return ev(expr)


def _fold(table: Table, num: list, den: list) -> Any:
    """num[0] * num[1] * ... / den[0] / den[1] / ..., left to right."""
    out = num[0] if num else table.const(sp.Integer(1))
    for a in num[1:]:
        out = table.mul(out, a)
    for a in den:
        out = table.div(out, a)
    return out


def run_program(program: Sequence[Instruction], env: dict[sp.Symbol, Any], table: Table) -> dict:
    """Execute a straight-line program in place on ``env`` and return it."""
    for ins in program:
        if isinstance(ins, Op):
            impl = ins.impls.get(table.name)
            if impl is None:
                raise E.LoweringError(E.NO_OP_IMPL.format(op=ins.name, backend=table.name,
                                                          have=", ".join(sorted(ins.impls)) or "none"))
            outs = impl(*[env[s] for s in ins.sources])
            env.update(zip(ins.targets, outs))
        else:
            assert isinstance(ins, Assign)
            env[ins.target] = evaluate(ins.expr, env, table)
    return env
