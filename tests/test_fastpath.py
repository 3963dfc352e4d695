"""The dense fast path: polynomial inverse trigonometric functions and row-tiled evaluation.

References are independent of the JAX lowering: libm through NumPy for the elementary functions, the
NumPy float64 reference backend (``ka.reference_kernel``, pair by pair through the same closed forms but
no JAX) for kernels, and central finite differences of that reference for gradients.
"""

from __future__ import annotations

import numpy as np
import pytest

import jax

import kernelalg as ka
from kernelalg.backends import _jax as J



@pytest.fixture(autouse=True, scope="module")
def _float64():
    """float64 for this module only (a global switch would change every test collected after it)."""
    with jax.enable_x64(True):
        yield


def _ulps(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.abs(y - ref) / np.spacing(np.maximum(np.abs(ref), np.finfo(float).tiny))


def test_polynomial_inverse_trig_match_libm() -> None:
    rng = np.random.default_rng(0)
    u = np.concatenate([rng.uniform(-1, 1, 200_000), np.linspace(-1, 1, 20_001),
                        [0.0, 1e-300, -1e-20, 0.5, -0.5, np.nextafter(0.5, 1), 1.0, -1.0]])
    assert _ulps(np.asarray(jax.jit(J.fast_arcsin)(u)), np.arcsin(u)).max() <= 3
    assert _ulps(np.asarray(jax.jit(J.fast_arccos)(u)), np.arccos(u)).max() <= 3
    t = np.concatenate([np.tan(rng.uniform(-1.57, 1.57, 200_000)), np.logspace(-300, 300, 2001),
                        -np.logspace(-20, 20, 2001), [0.0, 1.0, -1.0, np.inf, -np.inf]])
    assert _ulps(np.asarray(jax.jit(J.fast_arctan)(t)), np.arctan(t)).max() <= 4
    x = np.array([-3.0, -0.4, 0.0, 0.7, 12.0])
    np.testing.assert_allclose(np.asarray(jax.vmap(jax.grad(J.fast_arctan))(x)), 1 / (1 + x * x), rtol=1e-15)


def _net(act: ka.Layer, depth: int = 4) -> ka.Layer:
    layers = []
    for _ in range(depth):
        layers += [ka.Dense(W_std=1.5, b_std=0.05), act]
    return ka.serial(*layers, ka.Dense(W_std=1.5, b_std=0.05))


@pytest.fixture
def small_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles of a few rows, so that small inputs take the tiled path (with a padded last tile)."""
    monkeypatch.setattr(J, "TILE_ELEMENTS", 300)


@pytest.mark.parametrize("act", [ka.Relu(), ka.Erf(), ka.Gelu()], ids=lambda a: a.name)
def test_tiled_scanned_kernel_matches_numpy_reference(act: ka.Layer, small_tiles: None) -> None:
    rng = np.random.default_rng(1)
    x1, x2 = rng.standard_normal((53, 5)), rng.standard_normal((37, 5))  # 53: prime, padded tiles
    net = _net(act)
    for a, b in ((x1, None), (x1, x2)):
        k = ka.compile(net)(a, b)
        for name in ("nngp", "ntk"):
            ref = ka.reference_kernel(net, a, b, get=name)
            np.testing.assert_allclose(np.asarray(getattr(k, name)), ref, rtol=1e-12, atol=1e-13)
        # per-sample outputs are tiled too: K(x, x) against the reference's diagonal
        np.testing.assert_allclose(np.asarray(k.cov1), np.diag(ka.reference_kernel(net, a, get="nngp")),
                                   rtol=1e-12)


def test_tiled_gradient_matches_finite_differences(small_tiles: None) -> None:
    """d ntk / d W_std of the first layer, through lax.map + lax.scan + the custom JVPs (GELU: arctan)."""
    x = np.random.default_rng(2).standard_normal((41, 3))
    f = ka.compile(_net(ka.Gelu(), depth=3), get="ntk")
    g = jax.grad(lambda w: f(x, params={"sigma_w_1": w}).sum())(1.5)

    def ref(w: float) -> float:
        layers = [ka.Dense(W_std=w, b_std=0.05), ka.Gelu()]
        for _ in range(2):
            layers += [ka.Dense(W_std=1.5, b_std=0.05), ka.Gelu()]
        return float(ka.reference_kernel(ka.serial(*layers, ka.Dense(W_std=1.5, b_std=0.05)), x).sum())

    h = 1e-5
    fd = (ref(1.5 + h) - ref(1.5 - h)) / (2 * h)
    assert abs(float(g) - fd) < 1e-6 * abs(fd)
