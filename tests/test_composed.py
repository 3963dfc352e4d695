"""Two activations in a row (``Relu() >> Erf()``, ``Erf() >> Gelu()``, ``Relu() >> Relu()``): the dual of the
composition phi2(phi1(z)) on the Gaussian pre-activation (kernelalg.layers._compose).

Expected values: the proven closed forms of single activations where the composition is one (Relu o Relu = Relu,
x^2 o x^3 = x^6), mpmath nested quadrature of the 2-D Gaussian integral (split at the kink), Monte Carlo of the
finite twins (the two finite activations applied in turn)."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
import sympy as sp

import kernelalg as ka
from kernelalg.backends import JAX_TABLE, evaluate
from kernelalg.core._program import Builder, KernelState

@pytest.fixture(autouse=True, scope="module")
def _float64():
    """float64 for this module only (a global switch would change every test collected after it)."""
    with jax.enable_x64(True):
        yield


X = np.array([[0.9, -0.4, 0.3], [0.3, 0.8, -0.2], [-0.5, -0.6, 0.7], [0.9, -0.4, 0.3]])


def _duals(layers, s11: float, s12: float, s22: float) -> tuple[float, float]:
    """(T, Tdot) of the layers applied in turn to a Gaussian state (s11, s12, s22) with NTK 1, on JAX."""
    b = Builder(keep_symbols=False)
    a, c, d = sp.symbols("a c d", real=True)
    st = KernelState(a, d, c, sp.Integer(1))
    for layer in layers:
        st = layer.kernel(b, st, {k: sp.Float(v) for k, v in layer.params}, dict(layer.static))
    env = {a: np.float64(s11), c: np.float64(s12), d: np.float64(s22)}
    return tuple(float(evaluate(e, env, JAX_TABLE)) for e in (st.nngp, st.ntk))


REF_PATH = Path(__file__).parent / "data" / "mpmath_composed_reference.npz"


@pytest.mark.parametrize("layers, ref, tol, dtol", [
    ((ka.Relu(), ka.Erf()), "relu_erf", 1e-12, 1e-12),
    ((ka.LeakyRelu(0.1), ka.Gelu()), "leaky_gelu", 1e-12, 1e-12),
    ((ka.Abs(), ka.Sin()), "abs_sin", 1e-12, 1e-12),
    ((ka.Erf(), ka.Gelu()), "erf_gelu", 1e-12, 1e-12),
    ((ka.Sin(), ka.Monomial(2)), "sin_square", 1e-10, 1e-10),
])
def test_composition_against_mpmath(layers, ref: str, tol: float, dtol: float) -> None:
    """T and Tdot of the composition at two covariances vs nested mpmath quadrature
    (benchmarks/make_mpmath_composed_reference.py; its own accuracy ~1e-15) at three covariances. sin^2 is the MGF
    closed form; the others take the polar route over the sign quadrants (relu o erf, leaky o gelu and abs o sin
    have a kink at 0, erf o gelu is smooth): measured errors <= 4e-15, where Gauss-Hermite degree 128 was off by
    5.6e-4 (T) and 1e-2 (Tdot) for relu o erf and by 6e-9 / 2.5e-7 for erf o gelu."""
    data = np.load(REF_PATH)
    for (s11, s12, s22), (t_ref, tdot_ref) in zip(data["points"], data[ref]):
        T, Tdot = _duals(layers, s11, s12, s22)
        assert T == pytest.approx(t_ref, abs=tol)
        assert Tdot == pytest.approx(tdot_ref, abs=dtol)


def test_relu_relu_is_relu_closed_form() -> None:
    """relu(relu(z)) = relu(z): the composition's kernel is ReLU's proven arc-cosine closed form (route says so)."""
    one = ka.Dense(1.4, 0.1) >> ka.Relu() >> ka.Dense(1.2)
    two = ka.Dense(1.4, 0.1) >> ka.Relu() >> ka.Relu() >> ka.Dense(1.2)
    k1, k2 = ka.kernel(one, X), ka.kernel(two, X)
    np.testing.assert_allclose(k2.nngp, k1.nngp, rtol=1e-14)
    np.testing.assert_allclose(k2.ntk, k1.ntk, rtol=1e-14)
    sym = ka.symbolic(two)
    assert sym.routes["Relu>>Relu"] == "exact: phi2(phi1(x)) = phi1(x)"
    assert sp.simplify(sym.nngp - ka.symbolic(one).nngp) == 0  # the printed formula is the closed form


def test_exact_mgf_composition_is_closed_form() -> None:
    """x^2 then x^3 is x^6: the composition's closed form (MGF route) equals Monomial(6)'s proven dual; printed
    as a formula without quadrature nodes."""
    comp = ka.Dense(1.1, 0.2) >> ka.Monomial(2) >> ka.Monomial(3) >> ka.Dense(0.9)
    ref = ka.Dense(1.1, 0.2) >> ka.Monomial(6) >> ka.Dense(0.9)
    x = X * 0.5
    kc, kr = ka.kernel(comp, x), ka.kernel(ref, x)
    np.testing.assert_allclose(kc.nngp, kr.nngp, rtol=1e-12)
    np.testing.assert_allclose(kc.ntk, kr.ntk, rtol=1e-12)
    sym = ka.symbolic(comp)
    assert sym.routes["Monomial>>Monomial"] == "exact: Gaussian moment generating function"
    assert not any(type(f).__name__.startswith("T") for f in sym.nngp.atoms(sp.Function))


def test_chain_of_three_and_param_override() -> None:
    """Relu >> Erf >> Gelu composes all three; an Erf hyperparameter override equals rebuilding with that value."""
    net = lambda a: ka.Dense(1.3, 0.1) >> ka.Relu() >> ka.Erf(a=a) >> ka.Gelu() >> ka.Dense(1.0)  # noqa: E731
    sym = ka.symbolic(net(1.0))
    assert "Relu>>Erf>>Gelu" in sym.routes
    name = next(k for k in ka.compile(net(1.0)).params if k.startswith("a_"))
    over = ka.kernel(net(1.0), X, params={name: 0.7})
    direct = ka.kernel(net(0.7), X)
    np.testing.assert_allclose(over.nngp, direct.nngp, rtol=1e-13)
    np.testing.assert_allclose(over.ntk, direct.ntk, rtol=1e-13)


def test_layer_in_between_breaks_the_chain() -> None:
    with pytest.raises(ka.LayerOrderError, match="put an affine layer"):
        ka.symbolic(ka.Dense() >> ka.Relu() >> ka.Identity() >> ka.Erf() >> ka.Dense())


@pytest.mark.parametrize("acts", [(ka.Relu(), ka.Erf()), (ka.Erf(), ka.Gelu())])
def test_composition_monte_carlo(acts) -> None:
    """The finite twin applies the two finite activations in turn: one width (64), 512 networks, |z| <= 5 against
    the kernel (the readout conditional is exact, so one width is unbiased for the NNGP; the NTK at width 64 has an
    O(1/n) bias well inside 5 SE at this sample size)."""
    net = ka.Dense(1.4, 0.1) >> acts[0] >> acts[1] >> ka.Dense(1.1, 0.1)
    v = ka.verify(net, X.astype(np.float32), widths=(64,), samples=512, key=7)
    assert v.passed, v.summary()


def test_routes_by_smoothness() -> None:
    """Smooth on each side of 0 (kink at 0 or none): the polar route; kinks away from 0 (relu o sin, at k pi): the
    Gauss-Hermite fallback, finite and symmetric."""
    routes = ka.symbolic(ka.Dense(1.0) >> ka.Relu() >> ka.Erf() >> ka.Dense(1.0)).routes
    assert routes["Relu>>Erf"].startswith("polar quadrature over the sign arcs")
    routes = ka.symbolic(ka.Dense(1.0) >> ka.Erf() >> ka.Gelu() >> ka.Dense(1.0)).routes
    assert routes["Erf>>Gelu"].startswith("polar quadrature over the sign arcs")
    net = ka.Dense(1.5) >> ka.Sin() >> ka.Relu() >> ka.Dense(1.0)
    assert ka.symbolic(net).routes["Sin>>Relu"] == "Gauss-Hermite quadrature, degree 128"
    k = ka.kernel(net, X)
    assert np.all(np.isfinite(k.ntk)) and np.allclose(k.ntk, np.asarray(k.ntk).T, rtol=1e-14, atol=0)
