"""Tanh and Sigmoid: Gauss-Hermite duals with a stated error bound (kernelalg.layers._sigmoidal).

Expected values: mpmath at 30 digits (benchmarks/make_mpmath_sigmoidal_reference.py: the 2-D Gaussian integral
by the trapezoidal rule in mpmath, independent of Gauss-Hermite), Monte Carlo of the finite twins."""

from __future__ import annotations

import math
from pathlib import Path

import jax
import numpy as np
import pytest
import sympy as sp
from scipy import integrate

import kernelalg as ka
from kernelalg.backends import JAX_TABLE, NUMPY_TABLE, evaluate
from kernelalg.core._program import Builder, KernelState
from kernelalg.layers._sigmoidal import ESTIMATES, VARIANCES, error_estimate, stated_estimate

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


def _points(layer: ka.Layer) -> int:
    """Points per arc of a Tanh/Sigmoid layer, read from its route."""
    return int(dict(layer.routes)[layer.name].split("quadrature, ")[1].split(" x ")[0])


def test_error_estimate_holds_against_mpmath() -> None:
    """Over rho = +-1, +-0.999, 0, 0.5 and variances 0.05..16 (tanh up to 4, sigmoid up to 16), T, Tdot and the
    diagonal are within the default layers' stated estimate eps * sqrt(T(x,x) T(x',x')) of mpmath (30 digits); and
    within the stated estimate of coarser rules too (24 and 32 points per arc, where it is large enough to be
    informative: the measured error must reach 1e-3 of it somewhere)."""
    data = np.load(REF_PATH)
    worst = 0.0
    for layer in (ka.Tanh(), ka.Sigmoid(), ka.Tanh(tol=1e-6, max_variance=4.0), ka.Sigmoid(tol=1e-6, max_variance=16.0)):
        name, n = layer.name, _points(layer)
        vmax = dict(layer.static)["max_variance"]
        eps = stated_estimate(name, n, vmax)
        for fname, (s11, s12, s22, t, tdot, t11, t22, d11, d22) in zip(data["names"], data["grid"]):
            if fname != name.lower() or max(s11, s22) > vmax:
                continue
            T, Tdot, T11, T22 = _duals(layer, s11, s12, s22, NUMPY_TABLE)  # JAX = NumPy: test_numpy_backend_matches
            for got, want, scale in ((T, t, math.sqrt(t11 * t22)), (Tdot, tdot, math.sqrt(d11 * d22)),
                                     (T11, t11, t11), (T22, t22, t22)):
                err = abs(got - want) / scale
                assert err <= eps, (name, n, s11, s12, s22, got, want, err, eps)
                if eps > 1e-9:
                    worst = max(worst, err / eps)
    assert worst > 1e-3  # the coarse rules reach the regime where the estimate is informative


def test_stored_estimates_recompute() -> None:
    """Entries of the stored table (benchmarks/make_sigmoidal_estimates.py) recompute to the printed 2 digits."""
    for name, n, k in (("Tanh", 48, 6), ("Sigmoid", 32, 8), ("Tanh", 24, 3)):
        assert error_estimate(name, n, VARIANCES[k]) == pytest.approx(ESTIMATES[name][n][k], rel=0.06)


LARGE = {"Tanh": 16.0, "Sigmoid": 64.0}


@pytest.mark.parametrize("name", ["Tanh", "Sigmoid"])
def test_largest_default_variance_against_adaptive_quadrature(name: str) -> None:
    """At the default max_variance (16 / 64), where the mpmath grid does not reach: T and Tdot of the default layer
    against scipy's adaptive 2-D quadrature (QUADPACK, independent of the rule; tolerance 1e-12) within the stated
    estimate plus that tolerance."""
    layer = getattr(ka, name)()
    eps = stated_estimate(name, _points(layer), LARGE[name])
    f = np.tanh if name == "Tanh" else (lambda u: (1 + np.tanh(u / 2)) / 2)
    df = (lambda u: 1 - np.tanh(u) ** 2) if name == "Tanh" else (lambda u: (1 - np.tanh(u / 2) ** 2) / 4)
    s = LARGE[name]
    for rho in (0.3, 0.95):
        r1, r2, sig = math.sqrt(s), math.sqrt(s / 2), math.sqrt(1 - rho * rho)
        s11, s12, s22 = s, rho * r1 * r2, s / 2
        T, Tdot = _duals(layer, s11, s12, s22, NUMPY_TABLE)[:2]
        for g, got in ((f, T), (df, Tdot)):
            val = integrate.dblquad(lambda z2, z1: np.exp(-(z1 * z1 + z2 * z2) / 2) / (2 * np.pi) * g(r1 * z1)
                                    * g(r2 * (rho * z1 + sig * z2)), -12, 12, -12, 12, epsabs=1e-12, epsrel=1e-12)[0]
            diag = [integrate.quad(lambda z: np.exp(-z * z / 2) / math.sqrt(2 * np.pi) * g(r * z) ** 2, -12, 12,
                                   epsabs=1e-13, epsrel=1e-13, limit=200)[0] for r in (r1, r2)]
            assert abs(got - val) <= eps * math.sqrt(diag[0] * diag[1]) + 1e-12, (name, rho, got, val)


@pytest.mark.parametrize("layer", [ka.Tanh(), ka.Sigmoid()])
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


def test_route_states_the_estimate() -> None:
    assert dict(ka.Tanh().routes)["Tanh"] == ("polar quadrature, 64 x 64 points per arc, estimated error <= 1.5e-12 "
                                              "for variances <= 16")
    assert "64 x 64 points per arc" in dict(ka.Sigmoid().routes)["Sigmoid"]
    assert ka.parse(repr(ka.Tanh(tol=1e-6, max_variance=2))).static == ka.Tanh(tol=1e-6, max_variance=2).static


def test_variance_beyond_the_bound_is_refused() -> None:
    x = np.array([[2.0, 1.0], [1.0, -1.0]])
    with pytest.raises(ka.DivergentKernelError, match="max_variance = 16"):
        ka.kernel(ka.Dense(6.0) >> ka.Tanh(), x)


@pytest.mark.parametrize("kw, words", [({"tol": 1e-12, "max_variance": 64.0}, "more than 96 x 96 points"),
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
