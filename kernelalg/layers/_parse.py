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
import math
from typing import Any, Callable

from kernelalg.core._errors import KernelalgError
from kernelalg.layers._formula import FORMULA_FUNCTIONS, elementwise_args, parse_formula  # noqa: F401 (re-exported)
from kernelalg.core._layer import Layer, serial

#: Longest accepted expression, in characters.
MAX_LENGTH = 10_000
#: Deepest accepted nesting of calls/containers/arithmetic (a ``>>`` chain counts as one level).
MAX_DEPTH = 48
#: Most syntax nodes accepted.
MAX_NODES = 20_000
#: Largest |exponent| in ``a ** b`` and largest ``n`` in ``repeat(expr, n)``.
MAX_EXPONENT = 1024
MAX_REPEAT = 1000
#: Most leaf layers a ``repeat`` may produce (nested repeats multiply).
MAX_LAYERS = 10_000
#: Longest string literal.
MAX_STRING = 500

PARSE_HINT = "Example of a valid architecture: \"Dense(1.5, 0.05) >> Relu() >> Dense(1.5)\"."
TOO_LONG = ("Architecture expression has {n} characters (limit {limit}). "
            "Fix: shorten it, e.g. write repeated blocks as repeat(Dense(1.5) >> Relu(), 10).")
SYNTAX = ("Architecture expression is not valid syntax: {msg}{where}. Fix: check brackets, commas and quotes. "
          + PARSE_HINT)
TOO_DEEP = ("Architecture expression is nested too deeply (more than {limit} levels). "
            "Fix: flatten it, e.g. serial(a, b, c) or a >> b >> c instead of nested calls.")
TOO_MANY_NODES = ("Architecture expression is too large ({n} syntax nodes, limit {limit}). "
                  "Fix: use repeat(block, n) for repeated blocks.")
FORBIDDEN = ("{what} is not allowed in an architecture expression{where}. "
             "Fix: use only layer calls such as Dense(1.5, 0.05), literal numbers/strings/tuples, keyword "
             "arguments and >>. " + PARSE_HINT)
UNKNOWN_NAME = ("Unknown name {name!r}{where}.{hint} Fix: use one of the layer constructors: {known}.")
NOT_CALLED = ("{name!r}{where} is a layer constructor and must be called. Fix: write {name}(...), e.g. {name}().")
BAD_NUMBER = "{problem}{where}. Fix: use finite numbers of moderate size, e.g. 1.5, 2 ** 0.5, 1e-3."
BAD_OPERAND = ("Operator {op}{where} applies to {types}. Fix: arithmetic works on numbers only; compose "
               "layers with >> (e.g. Dense() >> Relu()).")
BAD_CALL = "{name}(...){where}: {err}. Fix: the signature is {name}{sig}."
NOT_LAYER = ("The expression evaluates to {got!r}, not a network. Fix: the whole expression must be a layer, "
             "e.g. \"Dense(1.5) >> Relu() >> Dense(1.5)\".")
#: Names of kernelalg's public callables that return a layer but are not allowed (need Python callables).
_EXCLUDED = frozenset({"activation", "Layer"})


def layer_constructors() -> dict[str, Callable[..., Layer]]:
    """The whitelist: kernelalg's public functions that return a :class:`Layer`, by name.

    Read from ``kernelalg.__all__`` (functions annotated ``-> Layer``), so new layers are picked up
    automatically; classes and helpers that take Python callables are excluded.
    """
    import kernelalg
    out: dict[str, Callable[..., Layer]] = {}
    for name in getattr(kernelalg, "__all__", ()):
        fn = getattr(kernelalg, name, None)
        if name in _EXCLUDED or not inspect.isfunction(fn):
            continue
        ret = fn.__annotations__.get("return")
        if ret is Layer or ret == "Layer":
            out[name] = fn
    out.setdefault("serial", serial)
    from kernelalg.core._layer import parallel
    out.setdefault("parallel", parallel)
    return out


def _where(node: ast.AST | None) -> str:
    if node is None or not hasattr(node, "col_offset"):
        return ""
    return f" (at column {node.col_offset + 1})"


def _describe(node: ast.AST) -> str:
    names = {
        ast.Attribute: "Attribute access ('.')", ast.Lambda: "A lambda", ast.ListComp: "A comprehension",
        ast.SetComp: "A comprehension", ast.DictComp: "A comprehension", ast.GeneratorExp: "A generator expression",
        ast.Subscript: "Indexing ('[...]')", ast.Dict: "A dict literal", ast.Set: "A set literal",
        ast.Starred: "Unpacking ('*')", ast.NamedExpr: "Assignment (':=')", ast.IfExp: "A conditional expression",
        ast.Compare: "A comparison", ast.BoolOp: "'and'/'or'", ast.JoinedStr: "An f-string", ast.Await: "'await'",
        ast.Yield: "'yield'", ast.YieldFrom: "'yield'",
    }
    return names.get(type(node), f"The syntax {type(node).__name__}")


def _check_shape(tree: ast.AST) -> None:
    """Iteratively bound the node count and the nesting depth (a >> chain counts as one level)."""
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise KernelalgError(TOO_MANY_NODES.format(n=f"more than {MAX_NODES}", limit=MAX_NODES))
        if depth > MAX_DEPTH:
            raise KernelalgError(TOO_DEEP.format(limit=MAX_DEPTH))
        chain = isinstance(node, ast.BinOp) and isinstance(node.op, ast.RShift)
        for child in ast.iter_child_nodes(node):
            same = chain and child is node.left and isinstance(child, ast.BinOp) and isinstance(child.op, ast.RShift)
            stack.append((child, depth if same else depth + 1))


def _parse_tree(text: Any, what: str) -> ast.expr:
    if not isinstance(text, str):
        raise KernelalgError(f"{what} must be a string, got {type(text).__name__}. "
                             "Fix: pass e.g. \"Dense() >> Relu()\".")
    if len(text) > MAX_LENGTH:
        raise KernelalgError(TOO_LONG.format(n=len(text), limit=MAX_LENGTH))
    if not text.strip():
        raise KernelalgError(f"{what} is empty. Fix: pass an expression. " + PARSE_HINT)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        where = f" at column {err.offset}" if err.offset else ""
        msg = err.msg or "invalid syntax"
        if "nested" in msg or "too many" in msg:
            raise KernelalgError(TOO_DEEP.format(limit=MAX_DEPTH)) from None
        raise KernelalgError(SYNTAX.format(msg=msg, where=where)) from None
    except (RecursionError, MemoryError, ValueError):
        raise KernelalgError(TOO_DEEP.format(limit=MAX_DEPTH)) from None
    _check_shape(tree)
    return tree.body


# ----------------------------------------------------------------------------------------- numbers


def _check_number(value: Any, node: ast.AST) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, complex):
        raise KernelalgError(BAD_NUMBER.format(problem="Complex numbers are not supported", where=_where(node)))
    if isinstance(value, float) and not math.isfinite(value):
        raise KernelalgError(BAD_NUMBER.format(problem=f"The number {value!r} is not finite", where=_where(node)))
    if isinstance(value, int) and abs(value) > 10 ** 308:
        raise KernelalgError(BAD_NUMBER.format(problem="An integer is too large", where=_where(node)))
    return value


def _power(a: Any, b: Any, node: ast.AST) -> Any:
    if abs(b) > MAX_EXPONENT:
        raise KernelalgError(BAD_NUMBER.format(problem=f"The exponent {b!r} is too large (limit {MAX_EXPONENT})",
                                               where=_where(node)))
    if isinstance(a, int) and isinstance(b, int) and b >= 0 and a not in (-1, 0, 1):
        if b * math.log2(abs(a)) > 1100:
            raise KernelalgError(BAD_NUMBER.format(problem=f"{a} ** {b} is too large", where=_where(node)))
    if a == 0 and b < 0:
        raise KernelalgError(BAD_NUMBER.format(problem="0 raised to a negative power", where=_where(node)))
    try:
        out = a ** b
    except OverflowError:
        raise KernelalgError(BAD_NUMBER.format(problem=f"{a!r} ** {b!r} overflows", where=_where(node))) from None
    return out


def _arith(op: ast.operator, a: Any, b: Any, node: ast.AST) -> Any:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    if not numeric:
        types = " and ".join(type(v).__name__ if not isinstance(v, Layer) else "a layer" for v in (a, b))
        raise KernelalgError(BAD_OPERAND.format(op=_OP_NAMES.get(type(op), "?"), where=_where(node), types=types))
    try:
        if isinstance(op, ast.Pow):
            out = _power(a, b, node)
        elif isinstance(op, ast.Add):
            out = a + b
        elif isinstance(op, ast.Sub):
            out = a - b
        elif isinstance(op, ast.Mult):
            out = a * b
        elif isinstance(op, ast.Div):
            out = a / b
        else:
            raise KernelalgError(FORBIDDEN.format(what=f"The operator {_OP_NAMES.get(type(op), type(op).__name__)}",
                                                  where=_where(node)))
    except ZeroDivisionError:
        raise KernelalgError(BAD_NUMBER.format(problem="Division by zero", where=_where(node))) from None
    except OverflowError:
        raise KernelalgError(BAD_NUMBER.format(problem="A number overflows", where=_where(node))) from None
    return _check_number(out, node)


_OP_NAMES = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.RShift: ">>",
             ast.FloorDiv: "//", ast.Mod: "%", ast.MatMult: "@", ast.LShift: "<<", ast.BitAnd: "&",
             ast.BitOr: "|", ast.BitXor: "^"}


# ----------------------------------------------------------------------------------------- interpreter


class _Interpreter:
    def __init__(self, constructors: dict[str, Callable[..., Layer]]):
        self.constructors = constructors

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
        fn = self.constructors[name]
        if name == "Elementwise":
            args, kwargs = elementwise_args(args, kwargs)
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
        KernelalgError: For malformed, unsupported or malicious input, with the problem and the fix.
    """
    tree = _parse_tree(text, "Architecture expression")
    try:
        out = _Interpreter(layer_constructors()).value(tree)
    except RecursionError:
        raise KernelalgError(TOO_DEEP.format(limit=MAX_DEPTH)) from None
    if not isinstance(out, Layer):
        raise KernelalgError(NOT_LAYER.format(got=out))
    return out
