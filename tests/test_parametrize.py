"""abc-parametrizations (standard, NTK, muP, mean-field): tables, training, regimes and infinite-width limits.

Independent references: the layers' own "ntk"/"standard" twins (the tables must reproduce them bit for bit);
the symmetry of abc-parametrizations (muP and mean-field must train identically, under SGD and Adam);
Adam's first step, whose size per element is exactly the learning rate; the feature-learning dichotomy
(hidden features move Theta(1) under muP, Theta(n^{-1/2}) under NTK: Yang & Hu 2021, Thm. 3.3 and Cor. 3.9);
Monte Carlo means of empirical kernels with their standard errors for the limits at initialisation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import kernelalg as ka
from kernelalg.finite import descend
from kernelalg.finite._parametrize import FeatureLearningError, Parametrization, limit_kernel, regime
from kernelalg.finite._train import mse


def _net(p: str = "ntk", act=ka.Relu) -> ka.Layer:
    return ka.Dense(1.4, 0.2, p) >> act() >> ka.Dense(1.3, 0.1, p) >> act() >> ka.Dense(1.2, 0.3, p)


X = np.random.default_rng(0).standard_normal((6, 5))
Y = np.sin(X[:, :2])


def _leaves(tree) -> list:
    return jax.tree_util.tree_leaves(tree)


@pytest.mark.parametrize("name", ["ntk", "standard"])
def test_tables_reproduce_the_layer_parametrizations(name: str) -> None:
    a, b = ka.finite(_net(name), 64, out_dim=2), ka.finite(_net(), 64, out_dim=2, parametrization=name)
    pa, pb = a.init(3, (5,)), b.init(3, (5,))
    for u, v in zip(_leaves(pa), _leaves(pb)):
        np.testing.assert_allclose(u, v, rtol=1e-6)
    np.testing.assert_allclose(a.apply(pa, X), b.apply(pb, X), rtol=1e-5, atol=1e-6)
    assert b.learning_rate_scales(pb, None) is None  # no per-layer learning rates


@pytest.mark.parametrize("rule, optimizer", [("sgd", optax.sgd(0.4, momentum=0.5)),
                                             ("adam", optax.adam(3e-3, eps=1e-30))])
def test_mup_and_mean_field_train_identically(rule: str, optimizer) -> None:
    """(a, b, c) -> (a + t, b - t, c - 2t) [SGD] or (c - t) [Adam] leaves training unchanged: the two tables agree."""
    with jax.enable_x64(True):
        runs = []
        for name in ("mup", "mean_field"):
            twin = ka.finite(_net(), 128, out_dim=2, parametrization=name)
            p0 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), twin.init(5, (5,)))
            runs.append(ka.train(twin, p0, X, Y, 15, optimizer, lr_rule=rule, record={"outputs": [0, 15]}))
    np.testing.assert_allclose(runs[0]["outputs"]["train"], runs[1]["outputs"]["train"], rtol=1e-8, atol=1e-10)
    assert np.abs(runs[0]["outputs"]["train"][1] - runs[0]["outputs"]["train"][0]).max() > 0.05  # it trained


def test_adam_first_step_has_the_table_learning_rates() -> None:
    """Adam's first update is -lr * sign(g) per element: its size is lr * n^{-c} (muP: c = 1/2, 1, 1/2)."""
    width, lr = 256, 1e-2
    twin = ka.finite(_net(act=ka.Erf), width, out_dim=2, parametrization="mup")  # no exactly zero gradient
    with jax.enable_x64(True):
        p0 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), twin.init(1, (5,)))
        run = ka.train(twin, p0, X, Y, 1, optax.adam(lr, eps=0.0), lr_rule="adam", record=())
    expected = {(0, "W"): width ** -0.5, (0, "b"): width ** -0.5, (2, "W"): 1 / width, (2, "b"): width ** -0.5,
                (4, "W"): width ** -0.5, (4, "b"): 1.0}
    for (i, key), factor in expected.items():
        np.testing.assert_allclose(np.abs(np.asarray(run.params[i][key] - p0[i][key])), lr * factor, rtol=1e-9)


def test_features_move_by_order_one_under_mup_and_vanish_under_ntk() -> None:
    """RMS change of the last hidden features after 10 SGD steps, relative to their RMS, at widths 128..2048."""
    xj, yj = jnp.asarray(X, jnp.float32), jnp.asarray(Y, jnp.float32)
    slopes = {}
    for name in ("mup", "ntk"):
        moved = []
        for width in (128, 512, 2048):
            twin = ka.finite(_net(), width, out_dim=2, parametrization=name)

            def one(key: jax.Array) -> jax.Array:
                p0 = twin.init(key, (5,))
                p, _ = descend(lambda p: mse(twin.apply(p, xj), yj), p0, 0.5, 10)
                h0, h1 = twin.features(p0, xj), twin.features(p, xj)
                return jnp.sqrt(jnp.mean((h1 - h0) ** 2) / jnp.mean(h0 ** 2))
            moved.append(float(jnp.mean(jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(2), 4)))))
        slopes[name] = np.polyfit(np.log([128, 512, 2048]), np.log(moved), 1)[0]
        assert name == "ntk" or min(moved) > 0.02, moved  # muP: features change by O(1)
    assert abs(slopes["mup"]) < 0.15, slopes
    assert -0.65 < slopes["ntk"] < -0.35, slopes


def test_regimes_follow_yang_and_hu() -> None:
    assert regime("ntk", 2).kind == "kernel" and regime("ntk", 2).r == 0.5
    assert regime("mup", 2).kind == "feature learning" and regime("mup", 2).r == 0.0
    assert regime("mean_field", 0).kind == "feature learning"
    assert regime("standard", 2).kind == "unstable"  # SP at a width-independent learning rate blows up
    sp_small_lr = Parametrization("sp, c=1", (0, 0, 0), (0, 0.5, 0.5), (1, 1, 1), (1, 1, 1), "init")
    assert regime(sp_small_lr, 2).kind == "kernel"  # SP at learning rate 1/n: the kernel regime (Cor. 3.9)


def test_limit_kernels_at_initialisation_match_monte_carlo() -> None:
    """muP's (and mean-field's learning-rate weighted) tangent kernel at init converges to the NTK-parametrization
    NTK; their outputs to the readout bias alone."""
    exact = limit_kernel(_net(), "mup", X, training=False)
    ref = ka.kernel(_net(), X, get=("nngp", "ntk"))
    np.testing.assert_allclose(exact.ntk, ref.ntk, rtol=1e-6)
    np.testing.assert_allclose(exact.nngp, np.full((6, 6), 0.3 ** 2), rtol=1e-6)
    for name in ("mup", "mean_field"):
        twin = ka.finite(_net(), 1024, out_dim=4, parametrization=name)
        keys = jax.random.split(jax.random.PRNGKey(7), 32)
        rates = twin.learning_rate_scales(twin.init(0, (5,)), "sgd")  # mean-field trains at rate eta n
        ntk = np.stack([np.asarray(ka.empirical_ntk(twin.apply, twin.init(k, (5,)), X, weights=rates,
                                                    method="structured")) for k in keys[:16]])
        z = (ntk.mean(0) - exact.ntk) / (ntk.std(0, ddof=1) / 4 + 1e-12)
        assert np.abs(z).max() < 4.5, name
        f = np.stack([np.asarray(twin.apply(twin.init(k, (5,)), X)) for k in keys])  # (32, 6, 4)
        prods = np.einsum("sic,sjc->sij", f, f) / 4
        z = (prods.mean(0) - exact.nngp) / (prods.std(0, ddof=1) / np.sqrt(32))
        assert np.abs(z).max() < 4.5, name
    np.testing.assert_allclose(limit_kernel(_net(), "ntk", X).ntk, ref.ntk, rtol=1e-6)  # kernel regime: training


def test_refusals() -> None:
    with pytest.raises(FeatureLearningError, match="not a kernel"):
        limit_kernel(_net(), "mup", X)
    with pytest.raises(FeatureLearningError):
        limit_kernel(_net(), "mean_field", X)
    with pytest.raises(ka.KernelalgError, match="width\\^1"):
        limit_kernel(_net(), "standard", X, training=False)
    with pytest.raises(ka.KernelalgError, match="not known"):
        ka.finite(_net(), 8, parametrization="mu")
    with pytest.raises(ka.KernelalgError, match="readout"):
        ka.finite(ka.Dense() >> ka.Relu() >> ka.Dense() >> ka.Relu(), 8, parametrization="mup")
    with pytest.raises(ka.KernelalgError, match="affine layer"):
        ka.finite(ka.Dense() >> ka.Relu(), 8, parametrization="mup")
    with pytest.raises(ka.KernelalgError, match="FanOut"):
        ka.finite(ka.FanOut(2) >> ka.parallel(ka.Dense(), ka.Dense()) >> ka.FanInSum() >> ka.Dense(), 8,
                  parametrization="mup")
    twin = ka.finite(_net(), 8, out_dim=2, parametrization="mup")
    with pytest.raises(ka.KernelalgError, match="lr_rule"):
        ka.train(twin, twin.init(0, (5,)), X, Y, 1, 0.1)
    with pytest.raises(ka.KernelalgError, match="lr_rule"):
        ka.train(twin, twin.init(0, (5,)), X, Y, 1, 0.1, lr_rule="rmsprop")
