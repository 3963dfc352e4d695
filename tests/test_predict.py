"""analysis.gradient_descent (any loss, momentum): against neural-tangents' stored ODE solutions, closed forms
for MSE (matrix exponentials), and discrete training of the linearized network.

Independent references: tests/data/nt_train_reference.npz (``nt.predict.gradient_descent``, solved by JAX's
``odeint`` at rtol = atol = 1.4e-8, hence the 1e-6 tolerance); ``gradient_descent_mse``'s eigendecomposition;
``scipy.linalg.expm`` of the momentum system [[0, I], [-Theta/N, (m - 1)/sqrt(eta) I]]; gradient descent on
``ka.linearize`` of a network, whose trajectory converges to the ODE's at first order in the step size.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.linalg import expm

import kernelalg as ka
from kernelalg import analysis as A
from kernelalg.finite import descend

REF = Path(__file__).parent / "data" / "nt_train_reference.npz"


@pytest.fixture(scope="module")
def gd() -> dict:
    return {k[3:]: v for k, v in np.load(REF).items() if k.startswith("gd.")}


def ce_mean(f: jax.Array, y: jax.Array) -> jax.Array:
    """Softmax cross-entropy averaged over examples, written independently of kernelalg's."""
    return jnp.mean(optax.softmax_cross_entropy(f, y))


@pytest.mark.parametrize("run, loss, momentum, full", [
    ("ce", "cross_entropy", None, False), ("ce_momentum", ce_mean, 0.9, False),
    ("mse_momentum", "mse", 0.9, False), ("ce_full", "cross_entropy", None, True)])
def test_matches_neural_tangents(gd: dict, run: str, loss, momentum, full: bool) -> None:
    ktt = gd["k_full_train_train" if full else "k_train_train"]
    ktx = gd["k_full_test_train" if full else "k_test_train"]
    predict = A.gradient_descent(loss, ktt, gd["y"], float(gd["learning_rate"]), momentum)
    ftr, fte = predict(gd["t"], gd["fx_train_0"], gd["fx_test_0"], ktx)
    np.testing.assert_allclose(ftr, gd[f"{run}.train"], atol=1e-6)
    np.testing.assert_allclose(fte, gd[f"{run}.test"], atol=1e-6)
    assert np.abs(gd[f"{run}.train"][-1] - gd["fx_train_0"]).max() > 0.5  # the outputs did move


def test_mse_equals_closed_form(gd: dict) -> None:
    lr = float(gd["learning_rate"])
    ftr, fte = A.gradient_descent("mse", gd["k_train_train"], gd["y"], lr)(gd["t"], gd["fx_train_0"], gd["fx_test_0"],
                                                                          gd["k_test_train"])
    closed = A.gradient_descent_mse(gd["k_train_train"], gd["y"], lr)
    for i, t in enumerate(gd["t"]):
        a, b = closed(t, gd["fx_train_0"], gd["fx_test_0"], gd["k_test_train"])
        np.testing.assert_allclose(ftr[i], a, atol=1e-9)
        np.testing.assert_allclose(fte[i], b, atol=1e-9)
    # fx_train_0=None: the training outputs start at 0 and only the test outputs are returned
    only = A.gradient_descent("mse", gd["k_train_train"], gd["y"], lr)(gd["t"], None, gd["fx_test_0"],
                                                                        gd["k_test_train"])
    np.testing.assert_allclose(only[-1], closed(gd["t"][-1], 0.0, gd["fx_test_0"], gd["k_test_train"])[1], atol=1e-9)


def test_momentum_mse_equals_matrix_exponential(gd: dict) -> None:
    """r = f - y obeys r'' = -(Theta/N) r + ((m-1)/sqrt(eta)) r' in time sqrt(eta) t: a linear system."""
    k, y, f0 = gd["k_train_train"], gd["y"], gd["fx_train_0"]
    lr, m, n = float(gd["learning_rate"]), 0.8, k.shape[0]
    big = np.block([[np.zeros((n, n)), np.eye(n)], [-k / y.size, (m - 1) / np.sqrt(lr) * np.eye(n)]])
    got = A.gradient_descent("mse", k, y, lr, momentum=m)(gd["t"], f0)
    for i, t in enumerate(gd["t"]):
        state = expm(big * np.sqrt(lr) * t) @ np.concatenate([f0 - y, np.zeros_like(y)])
        np.testing.assert_allclose(got[i], y + state[:n], atol=1e-9)
    # 1-D targets (N = n) and a scalar time
    scalar = A.gradient_descent("mse", k, y[:, 0], lr, momentum=m)(3.0, f0[:, 0])
    big[n:, :n] = -k / n
    state = expm(big * np.sqrt(lr) * 3.0) @ np.concatenate([f0[:, 0] - y[:, 0], np.zeros(n)])
    assert scalar.shape == (n,)
    np.testing.assert_allclose(scalar, y[:, 0] + state[:n], atol=1e-9)


def test_discrete_linearized_training_converges_to_the_ode() -> None:
    """Gradient descent on the linearized network with the untraced empirical NTK: error O(step size)."""
    net = ka.Dense(1.4, 0.1) >> ka.Erf() >> ka.Dense(1.2, 0.1)
    rng = np.random.default_rng(11)
    with jax.enable_x64(True):
        twin = ka.finite(net, 32, out_dim=3)
        x = jnp.asarray(rng.standard_normal((6, 4)))
        y = np.eye(3)[rng.integers(0, 3, 6)]
        p0 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), twin.init(1, (4,)))
        kfull = np.asarray(ka.empirical_ntk(twin.apply, p0, x, trace=False))
        f0 = np.asarray(twin.apply(p0, x))
        horizon = 2.0  # absolute time eta * t
        ode = A.gradient_descent("cross_entropy", kfull, y, 1.0)(horizon, f0)
        lin = ka.linearize(twin.apply, p0)
        loss = lambda p: ce_mean(lin(p, x), jnp.asarray(y))  # noqa: E731
        errs = []
        for eta in (0.05, 0.025):
            p, _ = descend(loss, p0, optax.sgd(eta), int(round(horizon / eta)))
            errs.append(np.abs(np.asarray(lin(p, x)) - ode).max())
    assert errs[0] < 0.02 * np.abs(ode - f0).max()
    assert 0.4 < errs[1] / errs[0] < 0.6  # first-order convergence of the Euler steps to the ODE


def test_bad_input(gd: dict) -> None:
    k, y = gd["k_train_train"], gd["y"]
    with pytest.raises(ka.KernelalgError, match="momentum"):
        A.gradient_descent("mse", k, y, 1.0, momentum=1.5)
    with pytest.raises(ka.KernelalgError, match="loss"):
        A.gradient_descent("hinge", k, y)
    with pytest.raises(ka.KernelalgError, match="k_train_train"):
        A.gradient_descent("mse", k[:3], y)
    predict = A.gradient_descent("mse", k, y)
    with pytest.raises(ka.KernelalgError, match="increasing"):
        predict([2.0, 1.0])
    with pytest.raises(ka.KernelalgError, match="infinity"):
        predict(None)
    with pytest.raises(ka.KernelalgError, match="k_test_train"):
        predict(1.0, 0.0, gd["fx_test_0"])
