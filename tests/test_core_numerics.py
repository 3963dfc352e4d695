"""Numerics of the JAX lowering: finiteness at x = x' and |rho| = 1 (values and gradients), float32 and
float64, large depth, and agreement with the NumPy / mpmath reference backends."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernelalg as ka
from kernelalg.backends._jax import fast_arccos, fast_arcsin, fast_arctan

RNG = np.random.default_rng(1)
BASE = RNG.standard_normal((3, 5))
# Rows: x, x (x = x'), 2x (rho = 1), -x (rho = -1), and two generic rows.
EDGE = np.concatenate([BASE[:1], BASE[:1], 2 * BASE[:1], -BASE[:1], BASE[1:]])

ACTIVATIONS = [
    ka.Relu(), ka.LeakyRelu(0.2), ka.ABRelu(-0.5, 1.5), ka.Abs(), ka.Erf(1.3, 0.7, 0.2), ka.Gelu(),
    ka.Sin(1.2, 0.8, 0.3), ka.Cos(0.9, 1.1, -0.4), ka.Monomial(3), ka.RectifiedMonomial(2),
    ka.Polynomial([0.1, -0.5, 0.3]), ka.Exp(0.8, 0.4), ka.Gaussian(1.1, -0.6), ka.Rbf(0.7), ka.Sign(),
]


def _net(act: ka.Layer) -> ka.Layer:
    return ka.Dense(1.3, 0.1) >> act >> ka.Dense(0.9, 0.2) >> act >> ka.Dense(1.1, 0.05)


# ------------------------------------------------------------ vectorised inverse trigonometric functions


@pytest.mark.parametrize("fn, ref, lo, hi", [
    (fast_arccos, np.arccos, -1.0, 1.0), (fast_arcsin, np.arcsin, -1.0, 1.0), (fast_arctan, np.arctan, -50, 50)])
def test_fast_inverse_trig_matches_numpy(fn, ref, lo: float, hi: float) -> None:
    with jax.enable_x64(True):
        x = np.concatenate([np.linspace(lo, hi, 200_001), [lo, hi, 0.5, -0.5, 1 - 1e-16, -1 + 1e-16]])
        x = np.clip(x, lo, hi)
        got = np.asarray(fn(jnp.asarray(x, jnp.float64)))
    want = ref(x)
    err = np.abs(got - want) / np.maximum(np.abs(want), 1e-300)
    assert np.max(np.abs(got - want)) < 1e-15 * 4
    assert np.max(err[np.abs(want) > 1e-3]) < 4e-16 * 4
    x32 = x.astype(np.float32)
    got32 = np.asarray(fn(jnp.asarray(x32)), np.float64)
    want32 = ref(x32.astype(np.float64))  # the float32 input, exactly; float32 output rounding only
    assert np.max(np.abs(got32 - want32)) < 8 * np.finfo(np.float32).eps


# ------------------------------------------------------------ finiteness at the edges


EDGE_CASES = [(a, np.float64) for a in ACTIVATIONS] + [
    (a, np.float32) for a in ACTIVATIONS if a.name in ("Relu", "Erf", "Gelu", "Abs", "RectifiedMonomial")]


@pytest.mark.parametrize("act, dtype", EDGE_CASES, ids=lambda a: getattr(a, "name", getattr(a, "__name__", "")))
def test_values_and_gradients_finite_at_rho_one(act: ka.Layer, dtype: type) -> None:
    """Values and gradients (w.r.t. inputs and every hyperparameter) at x = x', x' = 2x and x' = -x."""
    net = _net(act)
    f = ka.compile(net, get=("nngp", "ntk"))
    x = EDGE.astype(dtype)
    k = f(x)
    for arr in (k.nngp, k.ntk):
        assert np.all(np.isfinite(np.asarray(arr))), act.name
        assert np.asarray(arr).dtype == dtype

    def loss(x1: jax.Array, p: dict) -> jax.Array:
        out = f(x1, jnp.asarray(x), p)
        return jnp.sum(out.nngp) + jnp.sum(out.ntk)

    with jax.enable_x64(dtype == np.float64):
        gx, gp = jax.grad(loss, argnums=(0, 1))(
            jnp.asarray(x), {k_: jnp.asarray(v, dtype) for k_, v in f.params.items()})
    assert np.all(np.isfinite(np.asarray(gx))), act.name
    assert all(np.isfinite(np.asarray(v)).all() for v in gp.values()), act.name


def test_gradient_matches_central_differences_away_from_the_edge() -> None:
    """d/dx1 of the ReLU NTK at generic inputs vs an independent central difference (float64)."""
    net = _net(ka.Relu())
    f = ka.compile(net, get="ntk")
    x1, x2 = BASE[1:2], BASE[2:3]
    with jax.enable_x64(True):
        g = np.asarray(jax.grad(lambda a: f(a, jnp.asarray(x2))[0, 0])(jnp.asarray(x1)))
    h = 1e-6
    fd = np.zeros_like(x1)
    for j in range(x1.shape[1]):
        e = np.zeros_like(x1)
        e[0, j] = h
        fd[0, j] = (float(f(x1 + e, x2)[0, 0]) - float(f(x1 - e, x2)[0, 0])) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


def test_float32_agrees_with_float64() -> None:
    net = _net(ka.Gelu())
    k64 = np.asarray(ka.kernel(net, BASE, get="ntk"))
    k32 = np.asarray(ka.kernel(net, BASE.astype(np.float32), get="ntk"))
    np.testing.assert_allclose(k32, k64, rtol=2e-5)


def test_large_depth_does_not_overflow() -> None:
    """Depth 300 at the ReLU edge of chaos: Theta(x, x) = L W^2 |x|^2/d exactly (theory.md); a deep erf
    net in the ordered phase stays finite in float32 and agrees with float64."""
    w = math.sqrt(2)
    depth = 300
    x = BASE / np.linalg.norm(BASE, axis=1, keepdims=True) * math.sqrt(BASE.shape[1])
    k = ka.kernel(ka.serial(*[ka.Dense(w), ka.Relu()] * (depth - 1), ka.Dense(w)), x)
    np.testing.assert_allclose(np.diag(np.asarray(k.ntk)), 2.0 * depth, rtol=1e-9)
    assert np.all(np.isfinite(np.asarray(k.ntk)))
    erf_net = ka.serial(*[ka.Dense(1.0, 0.1), ka.Erf()] * 199, ka.Dense(1.0))
    k32 = np.asarray(ka.kernel(erf_net, x.astype(np.float32)).ntk)
    k64 = np.asarray(ka.kernel(erf_net, x).ntk)
    assert np.all(np.isfinite(k32))
    np.testing.assert_allclose(k32, k64, rtol=1e-3)


# ------------------------------------------------------------ reference backends


@pytest.mark.parametrize("act", [ka.Relu(), ka.Erf(), ka.Gelu(), ka.Sin(), ka.Abs(), ka.Exp(0.5, 0.3)],
                         ids=lambda a: a.name)
def test_jax_matches_numpy_reference(act: ka.Layer) -> None:
    net = _net(act)
    for get in ("nngp", "ntk"):
        ref = ka.reference_kernel(net, EDGE, get=get)
        got = np.asarray(ka.kernel(net, EDGE, get=get))
        np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-13)


def test_jax_matches_mpmath_reference_at_50_digits() -> None:
    net = _net(ka.Gelu())
    ref = ka.reference_kernel(net, BASE, get="ntk", dps=50)
    got = np.asarray(ka.kernel(net, BASE, get="ntk"))
    np.testing.assert_allclose(got, ref, rtol=1e-12)
