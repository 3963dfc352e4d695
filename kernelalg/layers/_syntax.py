"""The safe-syntax rules shared by the architecture parser and the activation-formula parser.

Limits (length, nesting, size, exponents, repeats, layer count, formula count), the messages that name the
problem and its fix, and the checked arithmetic on literal numbers. Nothing here evaluates a string: callers
parse with :mod:`ast` and walk the tree.
"""

from __future__ import annotations

import ast
import math
from typing import Any

from kernelalg.core._errors import KernelalgError
from kernelalg.core._layer import Layer

NOT_UNICODE = ("{what} contains {char!r} at position {pos}, which is not a valid Unicode character (a lone "
               "surrogate, e.g. from bytes decoded with the wrong encoding). Fix: retype the expression in plain "
               "text (ASCII suffices).")
#: Longest accepted expression, in characters.
MAX_LENGTH = 10_000
#: Deepest accepted nesting of calls/containers/arithmetic (a ``>>`` chain counts as one level).
MAX_DEPTH = 48
#: Most syntax nodes accepted.
MAX_NODES = 20_000
#: Largest |exponent| in ``a ** b`` and largest ``n`` in ``repeat(expr, n)``.
MAX_EXPONENT = 1024
MAX_REPEAT = 1000
#: Most leaf layers an architecture expression may build (``repeat`` counts its copies, nested repeats multiply).
MAX_LAYERS = 10_000
#: Most distinct ``Elementwise`` formulas in one expression (each derives its dual, up to about a second; a
#: formula used again, e.g. inside ``repeat``, is built once).
MAX_FORMULAS = 8
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
TOO_MANY_LAYERS = ("The architecture expression{where} builds {n} layers (limit {limit}). Fix: use fewer layers, e.g. "
                   "fewer or shorter repeat(...) blocks.")
TOO_MANY_FORMULAS = ("More than {limit} different Elementwise formulas{where}. Fix: reuse one formula (the same "
                     "text is built once), e.g. repeat(Dense() >> Elementwise('x * tanh(x)'), 10).")
NOT_LAYER = ("The expression evaluates to {got!r}, not a network. Fix: the whole expression must be a layer, "
             "e.g. \"Dense(1.5) >> Relu() >> Dense(1.5)\".")


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
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # a lone surrogate, e.g. from a mis-decoded file or shell argument
        raise KernelalgError(NOT_UNICODE.format(what=what, char=text[err.start], pos=err.start)) from None
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
