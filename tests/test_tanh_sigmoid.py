"""Tanh and Sigmoid: Gauss-Hermite duals with a stated error bound (kernelalg.layers._sigmoidal).

Expected values: mpmath at 30 digits (benchmarks/make_mpmath_sigmoidal_reference.py: the 2-D Gaussian integral
by the trapezoidal rule in mpmath, independent of Gauss-Hermite), Monte Carlo of the finite twins."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import jax
import numpy as np
import pytest
import sympy as sp

import kernelalg as ka
from kernelalg.backends import JAX_TABLE, NUMPY_TABLE, evaluate
from kernelalg.core._program import Builder, KernelState
from kernelalg.layers._sigmoidal import SIGMOID_POLE, TANH_POLE, error_bound

@pytest.fixture(autouse=True, scope="module")
def _float64():
    """float64 for this module only (a global switch would change every test collected after it)."""
    with jax.enable_x64(True):
        yield


REF_PATH = Path(__file__).parent / "data" / "mpmath_sigmoidal_reference.npz"


def _duals(layer: ka.Layer, s11: float, s12: float, s22: float, table=JAX_TABLE) -> tuple[float, ...]:
    """(T, Tdot, Tdiag(s11), Tdiag(s22)) of the layer's kernel map on a Gaussian state with NTK 1."""
    a, c, d = sp.symbols("a c d", real=True)
    st = layer.kernel(Builder(keep_symbols=False), KernelState(a, d, c, sp.Integer(1)), {}, dict(layer.static))
    env = {a: np.float64(s11), c: np.float64(s12), d: np.float64(s22)}
    return tuple(float(np.asarray(evaluate(e, env, table))) for e in (st.nngp, st.ntk, st.cov1, st.cov2))


@functools.lru_cache(maxsize=None)
def _layer(name: str, large: bool) -> tuple[ka.Layer, float, float]:
    """The layer whose stated range covers the variances (up to 1 / 4 or, ``large``, 4 / 16), its pole distance
    and its max_variance."""
    if name == "tanh":
        return (ka.Tanh(tol=1e-6, max_variance=4.0), TANH_POLE, 4.0) if large else (ka.Tanh(), TANH_POLE, 1.0)
    return ((ka.Sigmoid(tol=1e-6, max_variance=16.0), SIGMOID_POLE, 16.0) if large else
            (ka.Sigmoid(), SIGMOID_POLE, 4.0))


def test_error_bound_holds_against_mpmath() -> None:
    """Over rho = +-1, +-0.999, 0, 0.5 and variances 0.05..16 (tanh up to 4, sigmoid up to 16), T, Tdot and the
    diagonal are within the route's stated bound eps * sqrt(T(x,x) T(x',x')) of mpmath; the bound is not vacuous
    where it is large (measured/bound reported in docs/activations.md)."""
    data = np.load(REF_PATH)
    worst = 0.0
    for name, (s11, s12, s22, t, tdot, t11, t22, d11, d22) in zip(data["names"], data["grid"]):
        layer, pole, vmax = _layer(str(name), max(s11, s22) > (1.0 if name == "tanh" else 4.0))
        n = int(dict(layer.routes)[layer.name].split("degree ")[1].split(",")[0])
        eps = error_bound(n, pole, vmax)
        T, Tdot, T11, T22 = _duals(layer, s11, s12, s22, NUMPY_TABLE)  # JAX = NumPy: test_numpy_backend_matches
        for got, want, scale in ((T, t, math.sqrt(t11 * t22)), (Tdot, tdot, math.sqrt(d11 * d22)),
                                 (T11, t11, t11), (T22, t22, t22)):
            err = abs(got - want) / scale
            assert err <= eps, (name, s11, s12, s22, got, want, err, eps)
            worst = max(worst, err / eps)
    assert worst > 1e-4  # the grid reaches the regime where the bound is informative


@pytest.mark.parametrize("layer", [ka.Tanh(), ka.Sigmoid(tol=1e-6, max_variance=16.0)])
def test_numpy_backend_matches(layer: ka.Layer) -> None:
    """The JAX lowering of the nodes gives the NumPy values that the mpmath test checks (rho = 0.999, 0.5)."""
    for point in ((1.0, 0.999, 1.0), (0.3, 0.27, 1.0)):
        np.testing.assert_allclose(_duals(layer, *point, JAX_TABLE), _duals(layer, *point, NUMPY_TABLE), rtol=1e-12)


def test_two_layer_ntk_against_mpmath() -> None:
    """Dense >> Tanh >> Dense >> Tanh >> Dense: NNGP and NTK within 1e-9 of the mpmath recursion."""
    data = np.load(REF_PATH)
    (w1, b1), (w2, b2), (w3, b3) = data["net"]
    net = ka.Dense(w1, b1) >> ka.Tanh() >> ka.Dense(w2, b2) >> ka.Tanh() >> ka.Dense(w3, b3)
    k = ka.kernel(net, data["net_x"])
    np.testing.assert_allclose(k.nngp, data["net_nngp"], rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(k.ntk, data["net_ntk"], rtol=1e-9, atol=1e-11)
    k32 = ka.kernel(net, data["net_x"].astype(np.float32))  # float32 works (rounding only)
    assert k32.ntk.dtype == np.float32
    np.testing.assert_allclose(k32.ntk, data["net_ntk"], rtol=1e-5, atol=1e-6)


def test_route_states_the_bound() -> None:
    assert dict(ka.Tanh().routes)["Tanh"] == ("Gauss-Hermite quadrature, degree 135, error <= 9.4e-11 for variances "
                                              "<= 1")
    assert "degree 135" in dict(ka.Sigmoid().routes)["Sigmoid"]
    assert ka.parse(repr(ka.Tanh(tol=1e-6, max_variance=2))).static == ka.Tanh(tol=1e-6, max_variance=2).static


def test_variance_beyond_the_bound_is_refused() -> None:
    x = np.array([[2.0, 1.0], [1.0, -1.0]])
    with pytest.raises(ka.DivergentKernelError, match="max_variance = 1"):
        ka.kernel(ka.Dense(2.0) >> ka.Tanh(), x)


@pytest.mark.parametrize("kw, words", [({"tol": 1e-10, "max_variance": 4.0}, "degree above 256"),
                                       ({"tol": 0.0}, "tol must be a number > 0"),
                                       ({"max_variance": float("nan")}, "max_variance must be")])
def test_bad_settings(kw: dict, words: str) -> None:
    with pytest.raises(ka.KernelalgError, match=words):
        ka.Tanh(**kw)


@pytest.mark.parametrize("act", [ka.Tanh, ka.Sigmoid])
def test_monte_carlo(act) -> None:
    """The finite twin (jnp tanh / logistic): one width (64), 256 networks, |z| <= 5 against the kernel."""
    x = np.array([[0.9, -0.4, 0.3], [0.3, 0.8, -0.2], [-0.5, -0.6, 0.7]], dtype=np.float32)
    net = ka.Dense(1.2, 0.1) >> act() >> ka.Dense(1.1, 0.1)
    v = ka.verify(net, x, widths=(64,), samples=256, key=11)
    assert v.passed, v.summary()


NT_TANH = np.load(Path(__file__).parent / "data" / "nt_tanh_reference.npz")
NT_DENSE = {"tanh": ((0.9, 0.2), (1.0, 0.1), (1.0, 0.0)), "sigmoid": ((1.8, 0.3), (1.5, 0.2), (1.0, 0.0))}


@pytest.mark.parametrize("name", sorted(NT_DENSE))
def test_matches_neural_tangents_numerical(name: str) -> None:
    """Two hidden layers against neural-tangents 0.6.5's ElementwiseNumerical (bivariate Gauss-Hermite, 256 points
    per axis; stored by benchmarks/make_nt_tanh_reference.py): 1e-10 relative, NNGP and NTK. NT's own quadrature
    error, from its 192-point rule, is stored beside and must be far below that tolerance for the check to mean
    anything (measured 7e-15)."""
    act = ka.Tanh() if name == "tanh" else ka.Sigmoid()
    d1, d2, d3 = NT_DENSE[name]
    k = ka.kernel(ka.Dense(*d1) >> act >> ka.Dense(*d2) >> act >> ka.Dense(*d3), NT_TANH["x1"], NT_TANH["x2"])
    for part in ("nngp", "ntk"):
        ref, coarse = NT_TANH[f"{name}.{part}"], NT_TANH[f"{name}.{part}_coarse"]
        assert np.abs(ref - coarse).max() < 1e-12 * np.abs(ref).max()
        np.testing.assert_allclose(np.asarray(getattr(k, part)), ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())
