"""ka.linearize and ka.taylor_expand: against neural-tangents' stored outputs, finite differences and an exact
polynomial.

References for the expected values: tests/data/nt_train_reference.npz (neural-tangents 0.6.5 ``linearize`` /
``taylor_expand`` of stax networks, produced by benchmarks/make_nt_train_reference.py); central finite
differences (error O(h^2)); a network that is a polynomial of degree 3 in its parameters, whose Taylor
polynomial of degree 3 is the network itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernelalg as ka

REF = Path(__file__).parent / "data" / "nt_train_reference.npz"
LAYERS = {"Dense": lambda out, **kw: ka.Dense(out_dim=out, **kw), "Erf": ka.Erf, "Sin": ka.Sin, "Gelu": ka.Gelu}


@pytest.fixture(scope="module")
def ref() -> dict:
    return dict(np.load(REF))


def _twin_and_params(ref: dict, name: str) -> tuple:
    """The kernelalg twin of NT's stax network and NT's parameters in the twin's layout."""
    spec = json.loads(str(ref[f"net.{name}.spec"]))
    net = ka.serial(*[LAYERS[n](*a, **kw) for n, a, kw in spec])
    twin = ka.finite(net, 1)  # every Dense carries its own out_dim
    x = ref[f"net.{name}.x"]
    shapes = twin.init(0, x.shape[1:])
    treedef = jax.tree_util.tree_structure(shapes)
    count = len(jax.tree_util.tree_leaves(shapes))
    p0, p1 = ([jnp.asarray(ref[f"net.{name}.{which}.{i}"]) for i in range(count)] for which in ("p0", "p1"))
    return twin, jax.tree_util.tree_unflatten(treedef, p0), jax.tree_util.tree_unflatten(treedef, p1), x


@pytest.mark.parametrize("name", ["smooth", "standard"])
def test_matches_neural_tangents(ref: dict, name: str) -> None:
    with jax.enable_x64(True):
        twin, p0, p1, x = _twin_and_params(ref, name)
        x = jnp.asarray(x)
        # the twin is NT's network (same parametrization, same parameter layout)
        np.testing.assert_allclose(twin.apply(p0, x), ref[f"net.{name}.f0"], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(twin.apply(p1, x), ref[f"net.{name}.f1"], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ka.linearize(twin.apply, p0)(p1, x), ref[f"net.{name}.lin"], rtol=1e-11, atol=1e-12)
        for d in range(4):
            got = ka.taylor_expand(twin.apply, p0, d)(p1, x)
            np.testing.assert_allclose(got, ref[f"net.{name}.taylor{d}"], rtol=1e-10, atol=1e-11)
        # the expansion improves with the degree for this perturbation (a sanity check of the stored data)
        errs = [np.abs(ref[f"net.{name}.taylor{d}"] - ref[f"net.{name}.f1"]).max() for d in range(4)]
        assert errs[3] < errs[1] < errs[0]


def test_derivatives_match_finite_differences(ref: dict) -> None:
    """T_d(p0 + s v) = f + s D f[v] + s^2/2 D^2 f[v, v] + ...: its coefficients against central differences."""
    with jax.enable_x64(True):
        twin, p0, _, x = _twin_and_params(ref, "smooth")
        x = jnp.asarray(x)
        rng = np.random.default_rng(7)
        v = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.standard_normal(a.shape)), p0)
        at = lambda s: jax.tree_util.tree_map(lambda a, b: a + s * b, p0, v)  # noqa: E731
        f = lambda s: np.asarray(twin.apply(at(s), x))  # noqa: E731
        h = 1e-4
        d1_fd = (f(h) - f(-h)) / (2 * h)
        d2_fd = (f(h) - 2 * f(0.0) + f(-h)) / h**2
        lin = ka.linearize(twin.apply, p0)
        np.testing.assert_allclose(np.asarray(lin(at(1.0), x)) - f(0.0), d1_fd, rtol=1e-6, atol=1e-7)
        t2 = ka.taylor_expand(twin.apply, p0, 2)
        plus, minus = np.asarray(t2(at(1.0), x)), np.asarray(t2(at(-1.0), x))
        np.testing.assert_allclose((plus - minus) / 2, d1_fd, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(plus + minus - 2 * f(0.0), d2_fd, rtol=1e-4, atol=1e-4)


def test_cubic_network_is_its_own_third_order_expansion() -> None:
    """W2 (W1 x)^2 is a polynomial of degree 3 in the parameters: T_3 equals it, T_2 does not."""
    net = ka.Dense(1.2) >> ka.Monomial(2) >> ka.Dense(0.8)
    with jax.enable_x64(True):
        twin = ka.finite(net, 6, out_dim=2)
        p0 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), twin.init(3, (4,)))
        p1 = jax.tree_util.tree_map(lambda a: a + 0.5 * jnp.ones_like(a), p0)
        x = jnp.asarray(np.random.default_rng(2).standard_normal((5, 4)))
        exact = np.asarray(twin.apply(p1, x))
        np.testing.assert_allclose(ka.taylor_expand(twin.apply, p0, 3)(p1, x), exact, rtol=1e-11, atol=1e-11)
        np.testing.assert_allclose(ka.taylor_expand(twin.apply, p0, 5)(p1, x), exact, rtol=1e-11, atol=1e-11)
        assert np.abs(np.asarray(ka.taylor_expand(twin.apply, p0, 2)(p1, x)) - exact).max() > 1e-2
        np.testing.assert_array_equal(ka.taylor_expand(twin.apply, p0, 0)(p1, x), twin.apply(p0, x))


def test_pytree_outputs_and_arguments() -> None:
    """Any f(params, *args, **kwargs) returning a pytree, as in neural-tangents."""
    def f(p: dict, x: jax.Array, scale: float = 1.0) -> dict:
        return {"a": scale * jnp.sin(p["w"] * x), "b": p["w"] ** 2}
    p0, p1 = {"w": jnp.array(0.3)}, {"w": jnp.array(0.5)}
    out = ka.linearize(f, p0)(p1, jnp.array([1.0, 2.0]), scale=2.0)
    np.testing.assert_allclose(out["a"], 2 * (np.sin([0.3, 0.6]) + 0.2 * np.array([1.0, 2.0]) * np.cos([0.3, 0.6])),
                               rtol=1e-6)
    np.testing.assert_allclose(out["b"], 0.09 + 2 * 0.3 * 0.2, rtol=1e-6)
    np.testing.assert_allclose(ka.taylor_expand(f, p0, 2)(p1, jnp.array([1.0]))["b"], 0.25, rtol=1e-6)


def test_bad_input() -> None:
    f = lambda p, x: p["w"] * x  # noqa: E731
    with pytest.raises(ka.KernelalgError, match="degree"):
        ka.taylor_expand(f, {"w": 1.0}, -1)
    with pytest.raises(ka.KernelalgError, match="degree"):
        ka.taylor_expand(f, {"w": 1.0}, 1.5)
    with pytest.raises(ka.KernelalgError, match="structure"):
        ka.linearize(f, {"w": jnp.array(1.0)})({"v": jnp.array(1.0)}, 2.0)
