"""The safe architecture parser: valid strings build the same networks as Python, bad ones fail clearly.

Expected values come from the Python API (the same expression written in Python) and from theory.md's
published deep-ReLU numbers; malicious strings must be refused without evaluating anything.
"""

from __future__ import annotations

import builtins
import contextlib
import math
from typing import Iterator

import numpy as np
import pytest
import sympy as sp
from hypothesis import given
from hypothesis import strategies as st

import kernelalg as ka
from kernelalg.layers._parse import MAX_DEPTH, MAX_EXPONENT, MAX_LENGTH
from kernelalg.layers._parse import parse as _parse
from kernelalg.layers._parse import parse_formula as _parse_formula
from kernelalg.layers._activations import X

# |x|^2/d = 1, x.x'/d = 0.5 (d = 2), as in theory.md.
XY = np.array([[1.0, 0.0], [0.5, math.sqrt(0.75)]]) * math.sqrt(2)
X3 = np.random.default_rng(0).standard_normal((4, 3))


@contextlib.contextmanager
def no_eval() -> Iterator[None]:
    """While parsing, eval/exec of any source text raises (the parser must never evaluate the string)."""
    saved = builtins.eval, builtins.exec

    def guard(original):
        def forbidden(source, *args, **kwargs):
            if isinstance(source, (str, bytes)):
                raise AssertionError(f"eval/exec of source text: {source[:60]!r}")
            return original(source, *args, **kwargs)
        return forbidden
    builtins.eval, builtins.exec = guard(saved[0]), guard(saved[1])
    try:
        yield
    finally:
        builtins.eval, builtins.exec = saved


def parse(text: str) -> ka.Layer:
    with no_eval():
        return _parse(text)


def parse_formula(text: str) -> sp.Expr:
    with no_eval():
        return _parse_formula(text)


_parse("Dense(1.0, 0.1) >> Relu() >> Elementwise('x * tanh(x)') >> Dense(2 ** 0.5)")  # warm the lazy imports


def same_symbolic(a: ka.Layer, b: ka.Layer) -> bool:
    sa, sb = ka.symbolic(a), ka.symbolic(b)
    return sp.simplify(sa.nngp - sb.nngp) == 0 and sp.simplify(sa.ntk - sb.ntk) == 0


@pytest.mark.parametrize("text, built", [
    ("Dense(1.5, 0.05) >> Relu() >> Dense(1.5)", lambda: ka.Dense(1.5, 0.05) >> ka.Relu() >> ka.Dense(1.5)),
    ("Dense(W_std=2 ** 0.5, b_std=0.1) >> Erf() >> Dense(1.0, b_std=1e-1)",
     lambda: ka.Dense(W_std=2 ** 0.5, b_std=0.1) >> ka.Erf() >> ka.Dense(1.0, b_std=0.1)),
    ("serial(Dense(1.2), LeakyRelu(-0.1), Dense(0.9, 0.2))",
     lambda: ka.serial(ka.Dense(1.2), ka.LeakyRelu(-0.1), ka.Dense(0.9, 0.2))),
    ("repeat(Dense(1.4, 0.1) >> Relu(), 3) >> Dense(1.4)",
     lambda: ka.serial(*[ka.Dense(1.4, 0.1), ka.Relu()] * 3, ka.Dense(1.4))),
    ("Dense(1.1) >> FanOut(2) >> parallel(Relu(), Erf()) >> FanInSum() >> Dense(0.7)",
     lambda: ka.Dense(1.1) >> ka.FanOut(2) >> ka.parallel(ka.Relu(), ka.Erf()) >> ka.FanInSum() >> ka.Dense(0.7)),
    ("Dense(1, 0.1) >> ABRelu(-0.5, 1.5) >> Dense(1) >> Sin(2.0, 0.5) >> Dense(1)",
     lambda: ka.Dense(1, 0.1) >> ka.ABRelu(-0.5, 1.5) >> ka.Dense(1) >> ka.Sin(2.0, 0.5) >> ka.Dense(1)),
])
def test_valid_expressions_match_python(text: str, built) -> None:
    assert same_symbolic(parse(text), built())
    assert repr(parse(text)) == repr(built())


def test_deep_relu_published_values() -> None:
    """theory.md: deep ReLU, W^2 = 2, b = 0, rho = 0.5, L = 3: NNGP 1.367811, NTK 2.702959."""
    k = ka.kernel(parse("repeat(Dense(2 ** 0.5) >> Relu(), 2) >> Dense(2 ** 0.5)"), XY)
    assert abs(float(k.nngp[0, 1]) - 1.367811) < 1e-6
    assert abs(float(k.ntk[0, 1]) - 2.702959) < 1e-6


def test_conv_expression_matches_python() -> None:
    imgs = np.random.default_rng(1).standard_normal((3, 4, 4, 2))
    a = parse("Conv((3, 3), padding='SAME', W_std=1.5) >> Relu() >> GlobalAvgPool() >> Dense(1.0)")
    b = ka.Conv((3, 3), padding="SAME", W_std=1.5) >> ka.Relu() >> ka.GlobalAvgPool() >> ka.Dense(1.0)
    ka_, kb = ka.kernel(a, imgs), ka.kernel(b, imgs)
    np.testing.assert_array_equal(np.asarray(ka_.ntk), np.asarray(kb.ntk))


def test_elementwise_formula_matches_python_callable() -> None:
    a = parse("Dense(1.2) >> Elementwise('x * tanh(x)') >> Dense(1.0)")
    b = ka.Dense(1.2) >> ka.Elementwise(lambda t: t * sp.tanh(t), name="phi") >> ka.Dense(1.0)
    ka_, kb = ka.kernel(a, X3), ka.kernel(b, X3)
    np.testing.assert_allclose(np.asarray(ka_.nngp), np.asarray(kb.nngp), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(ka_.ntk), np.asarray(kb.ntk), rtol=1e-12)


@pytest.mark.parametrize("text, expr", [
    ("x * tanh(x)", X * sp.tanh(X)), ("sigmoid(2*x) - 1/2", 1 / (1 + sp.exp(-2 * X)) - sp.Rational(1, 2)),
    ("exp(-x**2 / 2) * cos(pi * x)", sp.exp(-X ** 2 / 2) * sp.cos(sp.pi * X)), ("-x + 3", 3 - X),
])
def test_parse_formula(text: str, expr: sp.Expr) -> None:
    assert sp.simplify(parse_formula(text) - expr) == 0


@given(w=st.floats(0.0, 10.0, allow_nan=False), b=st.floats(0.0, 10.0, allow_nan=False),
       alpha=st.floats(-2.0, 2.0, allow_nan=False))
def test_numbers_round_trip(w: float, b: float, alpha: float) -> None:
    net = parse(f"Dense({w!r}, {b!r}) >> LeakyRelu({alpha!r}) >> Dense({w!r})")
    assert repr(net) == repr(ka.Dense(w, b) >> ka.LeakyRelu(alpha) >> ka.Dense(w))


# ----------------------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("text, words", [
    ("__import__('os').system('x')", ["Attribute access", "not allowed", "Fix:"]),
    ("Dense(W_std=__import__('os'))", ["Unknown name '__import__'", "Fix:"]),
    ("Dense().__class__", ["Attribute access", "Fix:"]),
    ("Dense(1).__class__.__bases__[0].__subclasses__()", ["not allowed", "Fix:"]),
    ("Elementwise(lambda x: x)", ["lambda", "not allowed"]),
    ("(lambda: Dense())()", ["lambda", "not allowed"]),
    ("Dense()()", ["Calling the result of a call", "not allowed"]),
    ("[Dense() for _ in range(3)]", ["comprehension", "not allowed"]),
    ("Dense()[0]", ["Indexing", "not allowed"]),
    ("Dense(**{'W_std': 1})", ["Unpacking", "not allowed"]),
    ("Dense(*[1, 2])", ["Unpacking", "not allowed"]),
    ("Dense(f'{1}')", ["f-string", "not allowed"]),
    ("(y := Dense())", ["Assignment", "not allowed"]),
    ("Dense(9**9**9)", ["exponent", "too large", f"{MAX_EXPONENT}"]),
    ("Dense(10 ** 400)", ["too large"]),
    ("Dense(1e999)", ["not finite"]),
    ("Dense(1 / 0)", ["Division by zero"]),
    ("Dense(1j)", ["Complex"]),
    ("Dens(1.5) >> Relu()", ["Unknown name 'Dens'", "Did you mean 'Dense'", "Fix:"]),
    ("Dense() >> relu()", ["Unknown name 'relu'", "'Relu'"]),
    ("os", ["Unknown name 'os'"]),
    ("Dense >> Relu()", ["must be called", "Dense(...)"]),
    ("Dense(1, 2, 3, 4, 5)", ["Dense(...)", "signature", "W_std"]),
    ("Dense(W=1)", ["unexpected keyword", "W_std"]),
    ("Dense() + Relu()", ["Operator +", ">>"]),
    ("Dense() >> 3", ["'>>'", "layers"]),
    ("1.5", ["not a network"]),
    ("Dense(1.5", ["not valid syntax", "brackets"]),
    ("", ["empty"]),
    ("repeat(Dense(), 10 ** 6)", ["repeat", "count"]),
    ("repeat(repeat(repeat(Dense() >> Relu(), 1000), 1000), 1000)", ["repeat", "layers (limit"]),
    ("Dense() >> Elementwise('__import__(\"os\")')", ["Elementwise formula", "unknown function '__import__'"]),
    ("Dense() >> Elementwise('x.real')", ["Elementwise formula", "Attribute access"]),
    ("Dense() >> Elementwise('y + 1')", ["unknown name 'y'", "the variable is x"]),
    ("Dense() >> Elementwise('x ** 5000')", ["exponent", "too large"]),
])
def test_refused_with_clear_message(text: str, words: list[str]) -> None:
    with pytest.raises(ka.KernelalgError) as err:
        parse(text)
    msg = str(err.value)
    for w in words:
        assert w in msg, (w, msg)
    assert "Fix" in msg


def test_side_effects_never_happen(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    for text in ("__import__('os').system('echo hacked')", "Dense(W_std=__import__('os').system('x'))",
                 "Elementwise('__import__(\"os\").system(\"x\")')"):
        with pytest.raises(ka.KernelalgError):
            parse(text)
    assert calls == []


@pytest.mark.parametrize("text", [
    "Dense(" * 500 + ")" * 500,
    "-" * 200 + "1",
    "Dense(" + "(" * (MAX_DEPTH + 5) + "1" + ",)" * (MAX_DEPTH + 5) + ")",
    "Dense(" + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + ")",
])
def test_deep_nesting_refused(text: str) -> None:
    with pytest.raises(ka.KernelalgError, match="nested too deeply"):
        parse(text)


def test_long_chains_are_not_too_deep() -> None:
    """A >> chain counts as one level: 200 layers in series are fine."""
    net = parse(" >> ".join(["Dense(1.2) >> Relu()"] * 100) + " >> Dense()")
    assert len(net.leaves()) == 201


def test_too_long_refused() -> None:
    with pytest.raises(ka.KernelalgError, match="characters"):
        parse("Dense() >> " * (MAX_LENGTH // 5) + "Dense()")


def test_not_a_string() -> None:
    with pytest.raises(ka.KernelalgError, match="must be a string"):
        parse(ka.Dense())  # type: ignore[arg-type]
