"""Fingerprints of Python callables: a digest of everything that determines the values they compute.

A stored result (a Gram store, :mod:`kernelalg.scale`) must refuse to be resumed with a different
activation function, and ``repr`` of a lambda says nothing about its body. :func:`callable_fingerprint`
hashes what determines a callable's values: its bytecode, constants, default arguments, closure cells and
the globals it reads (recursively for Python functions; numbers, strings, arrays and sympy expressions by
value; library functions of numpy, jax, scipy, sympy, math and the builtins by qualified name).
Anything else (an arbitrary object a function reads) cannot be fingerprinted: :class:`FingerprintError`.

Limits (documented, not detected): library functions are identified by name, so a different library
version with a different ``jnp.tanh`` gives the same fingerprint; bytecode depends on the Python version,
so a store cannot be resumed with a callable under another Python minor version.

References:
    Python's ``dis`` and data model docs (code objects, ``__closure__``, ``__globals__``).
"""

from __future__ import annotations

import builtins
import dis
import functools
import hashlib
import types
from typing import Any, Iterator

import numpy as np
import sympy as sp

from kernelalg.core._errors import KernelalgError

#: Top-level packages whose callables are identified by qualified name (their code is the library's).
LIBRARIES = frozenset({"numpy", "jax", "jaxlib", "scipy", "sympy", "math", "cmath", "builtins", "operator",
                       "functools", "mpmath", "kernelalg"})
_LOAD_GLOBAL = frozenset({"LOAD_GLOBAL", "LOAD_NAME"})
_LOAD_ATTR = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
_MAX_DEPTH = 12


class FingerprintError(KernelalgError):
    """A callable reads something whose value cannot be fingerprinted."""


def callable_fingerprint(fn: Any) -> str:
    """SHA-256 (hex) of what determines the values of ``fn``.

    Raises:
        FingerprintError: ``fn`` is, or reads, an object that cannot be fingerprinted (its message names it).
    """
    return hashlib.sha256(_value(fn, "fn", set(), 0).encode()).hexdigest()


def _library_name(obj: Any) -> str | None:
    """'module.qualname' of a library callable or class, None for anything else."""
    if isinstance(obj, np.ufunc):
        return f"numpy.{obj.__name__}"
    if isinstance(obj, types.FunctionType) and (obj.__closure__ or "<" in obj.__qualname__):
        return None  # made at run time (a lambda, a closure): identified by its code and captured values
    mod = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if isinstance(mod, str) and isinstance(name, str) and mod.split(".")[0] in LIBRARIES:
        return f"{mod}.{name}"
    return None


def _value(v: Any, where: str, seen: set[int], depth: int) -> str:
    """A deterministic text for ``v`` that changes whenever a value computed from it could change."""
    if depth > _MAX_DEPTH:
        raise FingerprintError(f"{where} nests deeper than {_MAX_DEPTH} levels")
    if v is None or isinstance(v, (bool, int, float, complex, str, bytes)):
        return f"{type(v).__name__}:{v!r}"
    if isinstance(v, (tuple, list)):
        return f"{type(v).__name__}(" + ",".join(_value(e, where, seen, depth + 1) for e in v) + ")"
    if isinstance(v, dict):
        items = sorted((_value(k, where, seen, depth + 1), _value(e, where, seen, depth + 1)) for k, e in v.items())
        return "dict(" + ",".join(f"{k}={e}" for k, e in items) + ")"
    if isinstance(v, sp.Basic):
        return "sympy:" + sp.srepr(v)
    if isinstance(v, types.ModuleType):
        return "module:" + v.__name__
    if isinstance(v, (np.ndarray, np.generic)) or (hasattr(v, "__array__") and hasattr(v, "dtype")
                                                    and hasattr(v, "shape")):
        a = np.ascontiguousarray(np.asarray(v))
        if a.dtype == object:
            raise FingerprintError(f"{where} is an object array")
        return f"array:{a.dtype.str}:{a.shape}:{hashlib.sha256(a.tobytes()).hexdigest()}"
    lib = _library_name(v)
    if lib is not None:
        return "ref:" + lib
    if isinstance(v, functools.partial):
        return ("partial(" + _value(v.func, where, seen, depth + 1) + ";" + _value(v.args, where, seen, depth + 1)
                + ";" + _value(v.keywords, where, seen, depth + 1) + ")")
    if isinstance(v, types.FunctionType):
        return _function(v, seen, depth)
    wrapped = getattr(v, "__wrapped__", None)  # jax.jit(f), functools.wraps decorators
    if wrapped is not None and wrapped is not v:
        return "wrapped:" + _value(wrapped, where, seen, depth + 1)
    raise FingerprintError(f"{where} is a {type(v).__module__}.{type(v).__qualname__} object")


def _function(fn: types.FunctionType, seen: set[int], depth: int) -> str:
    name = getattr(fn, "__qualname__", "function")
    if id(fn) in seen:  # recursion (a function calling itself): its body is already being hashed
        return f"recursive:{name}"
    seen = seen | {id(fn)}
    parts = [f"function:{name}", _code(fn.__code__, name, seen, depth)]
    parts.append(_value(fn.__defaults__, f"a default argument of {name}", seen, depth + 1))
    parts.append(_value(fn.__kwdefaults__, f"a default argument of {name}", seen, depth + 1))
    cells = fn.__closure__ or ()
    for var, cell in zip(fn.__code__.co_freevars, cells):
        try:
            content = cell.cell_contents
        except ValueError:  # an empty cell (a name not yet bound when fn was made)
            content = None
        parts.append(f"{var}=" + _value(content, f"the variable {var!r} that {name} closes over", seen, depth + 1))
    for ref, value in _globals_read(fn):
        parts.append(f"{ref}=" + _value(value, f"the global {ref!r} that {name} reads", seen, depth + 1))
    return "{" + ";".join(parts) + "}"


def _code(co: types.CodeType, name: str, seen: set[int], depth: int) -> str:
    consts = []
    for c in co.co_consts:
        if isinstance(c, types.CodeType):
            consts.append(_code(c, name, seen, depth + 1))
        else:
            consts.append(_value(c, f"a constant of {name}", seen, depth + 1))
    body = hashlib.sha256(co.co_code).hexdigest()
    return f"code({body};{co.co_argcount};{','.join(co.co_names)};{','.join(consts)})"


def _codes(co: types.CodeType) -> Iterator[types.CodeType]:
    yield co
    for c in co.co_consts:
        if isinstance(c, types.CodeType):
            yield from _codes(c)


def _globals_read(fn: types.FunctionType) -> list[tuple[str, Any]]:
    """(dotted name, value) of each global ``fn`` (and code nested in it) reads; module attributes resolved.

    ``jnp.tanh`` inside fn gives ("jnp.tanh", <jax.numpy.tanh>): the attribute, not only the module, so a
    function of a user module is hashed by its code.
    """
    out: dict[str, Any] = {}
    env = fn.__globals__
    for co in _codes(fn.__code__):
        ins = list(dis.get_instructions(co))
        for k, op in enumerate(ins):
            if op.opname not in _LOAD_GLOBAL:
                continue
            name = str(op.argval)
            if name in env:
                value = env[name]
            elif hasattr(builtins, name):
                value = getattr(builtins, name)
            else:
                value = None  # unbound: calling fn would fail anyway
            ref = name
            q = k + 1
            while isinstance(value, types.ModuleType) and q < len(ins) and ins[q].opname in _LOAD_ATTR:
                attr = str(ins[q].argval)
                value = getattr(value, attr, None)
                ref, q = f"{ref}.{attr}", q + 1
            out[ref] = value
    return sorted(out.items())
