"""A safe parser for architecture expressions given as strings (the command line's input).

``parse("Dense(1.5, 0.05) >> Relu() >> Dense(1.5)")`` returns the same :class:`~kernelalg.Layer` as the
Python expression would, but the string is never evaluated: it is parsed with :mod:`ast` and walked by a
small interpreter that knows only

* calls of the whitelisted layer constructors (kernelalg's public names that return a layer, e.g.
  ``Dense``, ``Relu``, ``Conv``, ``Recurrent``, ``serial``, ``parallel``) with positional and keyword
  arguments, plus ``repeat(expr, n)`` (``expr`` n times in series);
* literal numbers, strings, ``True``/``False``/``None``, tuples and lists of those;
* arithmetic on numbers (``+ - * / **``, unary ``-``) with bounded exponents, so ``Dense(2 ** 0.5)`` works;
* ``a >> b`` (serial composition);
* ``Elementwise("x * tanh(x)")``: an activation written as a formula in ``x`` (itself parsed by the same
  rules into sympy by :mod:`kernelalg.layers._formula`; functions: see its ``FORMULA_FUNCTIONS``).

Everything else -- attribute access, other names, lambdas, comprehensions, subscripts, ``**kwargs``,
over-long or deeply nested input, numbers that overflow -- raises :class:`~kernelalg.KernelalgError` whose
message names the problem, where it is, and the fix.
"""

from __future__ import annotations

import ast
import difflib
import inspect
from typing import Any, Callable

from kernelalg.core._errors import KernelalgError
from kernelalg.core._layer import Layer, parallel, serial
from kernelalg.layers._catalogue import constructors
from kernelalg.layers._formula import FORMULA_FUNCTIONS, elementwise_args, parse_formula  # noqa: F401 (re-exported)
from kernelalg.layers._syntax import (MAX_DEPTH, MAX_EXPONENT, MAX_FORMULAS, MAX_LAYERS, MAX_LENGTH,  # noqa: F401
                                      MAX_REPEAT, MAX_STRING, BAD_CALL, FORBIDDEN, NOT_CALLED, NOT_LAYER, TOO_DEEP,
                                      TOO_MANY_FORMULAS, TOO_MANY_LAYERS, UNKNOWN_NAME, _arith, _check_number,
                                      _describe, _parse_tree, _where)

#: Names of kernelalg's public callables that return a layer but are not allowed (need Python callables).
_EXCLUDED = frozenset({"activation", "Layer", "as_layer"})


def layer_constructors() -> dict[str, Callable[..., Layer]]:
    """The whitelist: the public functions of the layer modules that return a :class:`Layer`, by name.

    Read from :mod:`kernelalg.layers._catalogue` (functions annotated ``-> Layer``), so new layers are picked
    up automatically; classes and helpers that take Python callables are excluded.
    """
    out = {name: fn for name, fn in constructors().items() if name not in _EXCLUDED}
    out.setdefault("serial", serial)
    out.setdefault("parallel", parallel)
    out.setdefault("parse", parse)
    return out


def _size(value: Any) -> int:
    """Number of leaf layers of a value (0 for non-layers)."""
    return len(value.leaves()) if isinstance(value, Layer) else 0


def _check_layers(n: int, node: ast.AST) -> None:
    if n > MAX_LAYERS:
        raise KernelalgError(TOO_MANY_LAYERS.format(n=n, where=_where(node), limit=MAX_LAYERS))


class _Interpreter:
    def __init__(self, constructors: dict[str, Callable[..., Layer]]):
        self.constructors = constructors
        #: Elementwise layers by their call's arguments: the same formula is built (its dual derived) once.
        self.formulas: dict[str, Layer] = {}

    def value(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, str) and len(v) > MAX_STRING:
                raise KernelalgError(f"A string literal{_where(node)} is longer than {MAX_STRING} characters. "
                                     "Fix: shorten it.")
            if isinstance(v, bytes) or v is Ellipsis:
                raise KernelalgError(FORBIDDEN.format(what=f"The literal {v!r}", where=_where(node)))
            return _check_number(v, node)
        if isinstance(node, (ast.Tuple, ast.List)):
            items = [self.value(e) for e in node.elts]
            if any(isinstance(i, Layer) for i in items):
                raise KernelalgError(f"A tuple/list of layers{_where(node)} is not a layer. "
                                     "Fix: compose layers with >> or serial(a, b, ...).")
            return tuple(items) if isinstance(node, ast.Tuple) else items
        if isinstance(node, ast.UnaryOp):
            v = self.value(node.operand)
            if isinstance(node.op, (ast.USub, ast.UAdd)) and isinstance(v, (int, float)) and not isinstance(v, bool):
                return -v if isinstance(node.op, ast.USub) else v
            raise KernelalgError(FORBIDDEN.format(what=f"The unary operator {type(node.op).__name__}",
                                                  where=_where(node)))
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.RShift):
                return self.chain(node)
            return _arith(node.op, self.value(node.left), self.value(node.right), node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Name):
            if node.id in self.constructors or node.id == "repeat":
                raise KernelalgError(NOT_CALLED.format(name=node.id, where=_where(node)))
            raise self.unknown(node.id, node)
        raise KernelalgError(FORBIDDEN.format(what=_describe(node), where=_where(node)))

    def chain(self, node: ast.BinOp) -> Layer:
        operands: list[ast.AST] = []
        cur: ast.AST = node
        while isinstance(cur, ast.BinOp) and isinstance(cur.op, ast.RShift):
            operands.append(cur.right)
            cur = cur.left
        operands.append(cur)
        layers = []
        for op in reversed(operands):
            v = self.value(op)
            if not isinstance(v, Layer):
                raise KernelalgError(f"'>>'{_where(node)} composes layers, but one side is {v!r}. "
                                     "Fix: both sides of >> must be layers, e.g. Dense() >> Relu().")
            layers.append(v)
        _check_layers(sum(map(_size, layers)), node)
        return serial(*layers)

    def unknown(self, name: str, node: ast.AST) -> KernelalgError:
        known = sorted(self.constructors) + ["repeat"]
        lower = {k.lower(): k for k in known}
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        if name.lower() in lower and lower[name.lower()] not in close:
            close.insert(0, lower[name.lower()])
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return KernelalgError(UNKNOWN_NAME.format(name=name, where=_where(node), hint=hint, known=", ".join(known)))

    def call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name):
            raise KernelalgError(FORBIDDEN.format(what=_describe(node.func) if not isinstance(node.func, ast.Call)
                                                  else "Calling the result of a call", where=_where(node.func)))
        name = node.func.id
        if name not in self.constructors and name != "repeat":
            raise self.unknown(name, node.func)
        args = []
        for a in node.args:
            if isinstance(a, ast.Starred):
                raise KernelalgError(FORBIDDEN.format(what=_describe(a), where=_where(a)))
            args.append(self.value(a))
        kwargs = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise KernelalgError(FORBIDDEN.format(what="Unpacking ('**')", where=_where(kw.value)))
            kwargs[kw.arg] = self.value(kw.value)
        if name == "repeat":
            return _repeat(node, *args, **kwargs)
        _check_layers(sum(map(_size, args)) + sum(map(_size, kwargs.values())), node)
        if name == "Elementwise":
            return self.elementwise(node, args, kwargs)
        if name == "parse":  # a nested expression, read by this interpreter: its layers and formulas count here
            if kwargs or len(args) != 1:
                raise KernelalgError(BAD_CALL.format(name=name, where=_where(node), err="one string expected",
                                                     sig=_signature(parse)))
            return self.layer(_parse_tree(args[0], "Architecture expression"))
        return self.construct(node, name, args, kwargs)

    def layer(self, tree: ast.expr) -> Layer:
        """The layer a whole (parsed) expression builds, within MAX_LAYERS."""
        try:
            out = self.value(tree)
        except RecursionError:
            raise KernelalgError(TOO_DEEP.format(limit=MAX_DEPTH)) from None
        if not isinstance(out, Layer):
            raise KernelalgError(NOT_LAYER.format(got=out))
        _check_layers(_size(out), tree)
        return out

    def elementwise(self, node: ast.Call, args: list, kwargs: dict) -> Layer:
        """``Elementwise("formula", ...)``: at most MAX_FORMULAS different calls, each built once."""
        key = repr((args, sorted(kwargs.items())))
        if key not in self.formulas:
            if len(self.formulas) >= MAX_FORMULAS:
                raise KernelalgError(TOO_MANY_FORMULAS.format(limit=MAX_FORMULAS, where=_where(node)))
            args, kwargs = elementwise_args(args, kwargs)
            self.formulas[key] = self.construct(node, "Elementwise", args, kwargs)
        return self.formulas[key]

    def construct(self, node: ast.Call, name: str, args: list, kwargs: dict) -> Any:
        """Call the constructor ``name``, turning signature and value errors into messages with the fix."""
        fn = self.constructors[name]
        try:
            inspect.signature(fn).bind(*args, **kwargs)
        except TypeError as err:
            raise KernelalgError(BAD_CALL.format(name=name, where=_where(node), err=err, sig=_signature(fn))) from None
        try:
            return fn(*args, **kwargs)
        except KernelalgError:
            raise
        except (TypeError, ValueError, OverflowError, ArithmeticError) as err:
            raise KernelalgError(BAD_CALL.format(name=name, where=_where(node), err=err, sig=_signature(fn))) from None


def _signature(fn: Callable) -> str:
    """``(W_std=1.0, b_std=None, ...)``: a signature without annotations, as users type it."""
    parts, star = [], False
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        if p.kind is p.VAR_POSITIONAL:
            parts.append(f"*{p.name}")
            star = True
            continue
        parts.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
    return "(" + ", ".join(parts) + ")"


def _repeat(node: ast.Call, *args: Any, **kwargs: Any) -> Layer:
    if kwargs or len(args) != 2 or not isinstance(args[0], Layer) or isinstance(args[1], bool) \
            or not isinstance(args[1], int) or not 1 <= args[1] <= MAX_REPEAT:
        raise KernelalgError(f"repeat(...){_where(node)} takes a layer and a count 1..{MAX_REPEAT}. "
                             "Fix: e.g. repeat(Dense(1.5) >> Relu(), 3).")
    total = len(args[0].leaves()) * args[1]
    if total > MAX_LAYERS:
        raise KernelalgError(f"repeat(...){_where(node)} would build {total} layers (limit {MAX_LAYERS}). "
                             "Fix: use fewer repetitions or a smaller block.")
    return serial(*([args[0]] * args[1]))


def parse(text: str) -> Layer:
    """Parse an architecture expression safely (never ``eval``).

    Args:
        text: E.g. ``"Dense(1.5, 0.05) >> Relu() >> Dense(1.5)"``, ``"Conv((3, 3), padding='SAME') >> Relu()
            >> GlobalAvgPool() >> Dense()"``, ``"repeat(Dense(2 ** 0.5) >> Relu(), 3) >> Dense()"``,
            ``"Dense() >> Elementwise('x * tanh(x)') >> Dense()"``.

    Returns:
        The :class:`~kernelalg.Layer`.

    Raises:
        KernelalgError: For malformed, unsupported or malicious input, with the problem and the fix; also for
            input beyond the limits of :mod:`kernelalg.layers._syntax` (length, nesting, syntax nodes, exponents,
            repeat counts, MAX_LAYERS = 10,000 layers in all, MAX_FORMULAS = 8 different Elementwise formulas)
            and of the constructors (e.g. degrees up to 16).
    """
    return _Interpreter(layer_constructors()).layer(_parse_tree(text, "Architecture expression"))
