"""The training harness ka.train and its pieces: linearized dynamics, width convergence, freezing, optimizers,
recorders, the memory-aware NTK.

Expected values come from outside the trainer: the exact discrete dynamics of a linear model under gradient
descent on MSE (r_{t+1} = (I - eta Theta / N) r_t with the untraced empirical NTK by Jacobian contraction);
the infinite-width kernels of ``ka.kernel`` (ensemble mean and covariance of linearized training, compared
with Monte Carlo standard errors over 128 initialisations); the readout NTK c_W h.h' + c_b of a network whose
hidden layers are frozen; a hand-written optax loop; dense Hessians (``jax.hessian``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import kernelalg as ka
from kernelalg import analysis as A
from kernelalg.finite import descend, lanczos, plan_ntk
from kernelalg.finite._train import batch_schedule, mse

ERF2 = ka.Dense(1.5, 0.1) >> ka.Erf() >> ka.Dense(1.5, 0.1)


def _f64(tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


def test_linearized_run_follows_exact_discrete_dynamics() -> None:
    """A linear model trained by GD on MSE: r_t = (I - eta Theta/N)^t r_0, f_test moves by -eta/N Theta_tx sum r_s."""
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        twin = ka.finite(ka.Dense(1.3, 0.2) >> ka.Gelu() >> ka.Dense(1.1, 0.1), 16, out_dim=2)
        x, xt, y = rng.standard_normal((6, 3)), rng.standard_normal((4, 3)), rng.standard_normal((6, 2))
        p0 = _f64(twin.init(2, (3,)))
        lr, steps = 0.8, 20
        run = ka.train(twin, p0, x, y, steps, lr, x_test=xt, record={"outputs": 5, "linearized": None})
        kfull = np.asarray(ka.empirical_ntk(twin.apply, p0, jnp.asarray(x), trace=False)).transpose(0, 2, 1, 3)
        ktx = np.asarray(ka.empirical_ntk(twin.apply, p0, jnp.asarray(xt), jnp.asarray(x), trace=False))
        r = (np.asarray(twin.apply(p0, jnp.asarray(x))) - y).reshape(-1)
        ft = np.asarray(twin.apply(p0, jnp.asarray(xt))).reshape(-1)
    theta, cross = kfull.reshape(12, 12), ktx.transpose(0, 2, 1, 3).reshape(8, 12)
    outs = run.linear["outputs"]
    assert list(outs.steps) == [0, 5, 10, 15, 20]
    for t in range(steps + 1):
        if t in outs.steps:
            i = list(outs.steps).index(t)
            np.testing.assert_allclose(outs["train"][i].reshape(-1), y.reshape(-1) + r, atol=1e-10)
            np.testing.assert_allclose(outs["test"][i].reshape(-1), ft, atol=1e-10)
        ft = ft - lr / y.size * cross @ r
        r = r - lr / y.size * theta @ r
    # the network itself moved away from its linearization, but only a little (width 16)
    gap = np.abs(run["outputs"]["train"][-1] - outs["train"][-1]).max()
    assert 1e-6 < gap < 0.2 * np.abs(outs["train"][-1] - outs["train"][0]).max()


def test_linearized_training_of_a_wide_net_matches_the_kernel_prediction() -> None:
    """Mean and variance over 128 initialisations of linearized GD vs the infinite-width ensemble (discrete time)."""
    x, xt = A.sphere_points(8, 3, seed=4), A.sphere_points(4, 3, seed=5)
    y = np.sin(2 * x[:, 0])
    xx = np.concatenate([x, xt])
    k = ka.kernel(ERF2, xx, get=("nngp", "ntk"))
    nngp, ntk = np.asarray(k.nngp, np.float64), np.asarray(k.ntk, np.float64)
    lr, steps, samples = 0.5 * A.max_learning_rate(ntk[:8, :8]), 30, 128
    amat = np.linalg.matrix_power(np.eye(8) - lr / 8 * ntk[:8, :8], steps)
    u = ntk[8:, :8] @ np.linalg.solve(ntk[:8, :8], np.eye(8) - amat)
    mean = u @ y
    cov = nngp[8:, 8:] + u @ nngp[:8, :8] @ u.T - u @ nngp[:8, 8:] - nngp[8:, :8] @ u.T
    twin = ka.finite(ERF2, 2048)
    with jax.enable_x64(True):
        xj, xtj, yj = jnp.asarray(x), jnp.asarray(xt), jnp.asarray(y)

        def one(key: jax.Array) -> jax.Array:
            p0 = _f64(twin.init(key, (3,)))
            lin = ka.linearize(twin.apply, p0)
            p, _ = descend(lambda p: mse(lin(p, xj)[:, 0], yj), p0, lr, steps)
            return lin(p, xtj)[:, 0]
        outs = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(0), samples)))
    z = (outs.mean(0) - mean) / np.sqrt(np.diag(cov) / samples)
    assert np.abs(z).max() < 4.0, z
    ratio = outs.var(0, ddof=1) / np.diag(cov)  # sampling sd of the ratio sqrt(2/127) = 0.125
    assert np.all((ratio > 0.55) & (ratio < 1.5)), ratio


def test_network_approaches_its_linearization_as_width_grows() -> None:
    """RMS |f - f_lin| after training falls at least like 1/sqrt(width) (Lee et al. 2019, Thm 2.1; measured ~1/width);
    the relative parameter distance falls like 1/sqrt(width) (the lazy regime)."""
    x, xt = A.sphere_points(8, 3, seed=4), A.sphere_points(4, 3, seed=5)
    y = np.sin(2 * x[:, 0])
    lr = 0.5 * A.max_learning_rate(np.asarray(ka.kernel(ERF2, x, get="ntk"), np.float64))
    widths, gaps, moved = (256, 1024, 4096), [], []
    with jax.enable_x64(True):
        xs, yj = jnp.asarray(np.concatenate([x, xt])), jnp.asarray(y)
        for width in widths:
            twin = ka.finite(ERF2, width)

            def one(key: jax.Array) -> tuple:
                p0 = _f64(twin.init(key, (3,)))
                lin = ka.linearize(twin.apply, p0)
                p, _ = descend(lambda p: mse(twin.apply(p, xs[:8])[:, 0], yj), p0, lr, 100)
                q, _ = descend(lambda p: mse(lin(p, xs[:8])[:, 0], yj), p0, lr, 100)
                gap = jnp.sqrt(jnp.mean((twin.apply(p, xs) - lin(q, xs)) ** 2))
                dist = jnp.sqrt(sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree_util.tree_leaves(p),
                                                                          jax.tree_util.tree_leaves(p0))))
                return gap, dist / jnp.sqrt(sum(jnp.sum(a ** 2) for a in jax.tree_util.tree_leaves(p0)))
            g, d = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(1), 8))
            gaps.append(float(np.mean(g)))
            moved.append(float(np.mean(d)))
    slope_f = np.polyfit(np.log(widths), np.log(gaps), 1)[0]
    slope_p = np.polyfit(np.log(widths), np.log(moved), 1)[0]
    assert slope_f < -0.5, (gaps, slope_f)
    assert -0.65 < slope_p < -0.35, (moved, slope_p)


def test_frozen_layers_stay_put_and_the_ntk_is_the_readout_kernel() -> None:
    net = ka.Dense(1.4, 0.2) >> ka.Relu() >> ka.Dense(1.3, 0.1) >> ka.Relu() >> ka.Dense(1.2, 0.3)
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        twin = ka.finite(net, 32, out_dim=2)
        x, y = rng.standard_normal((7, 4)), rng.standard_normal((7, 2))
        p0 = _f64(twin.init(0, (4,)))
        run = ka.train(twin, p0, x, y, 10, 0.5, freeze=[0, 2], record={"ntk": [0, 10]})
        h = np.asarray(twin.features(p0, jnp.asarray(x)))
    readout = 1.2 ** 2 * h @ h.T / 32 + 0.3 ** 2
    for t in range(2):  # frozen features: the NTK is the readout kernel, constant
        np.testing.assert_allclose(run["ntk"]["train"][t], readout, rtol=1e-10, atol=1e-12)
    for i in (0, 2):
        for key in ("W", "b"):
            np.testing.assert_array_equal(run.params[i][key], p0[i][key])
    assert np.abs(np.asarray(run.params[4]["W"]) - np.asarray(p0[4]["W"])).max() > 1e-3
    # the same partition from a pytree of bools and from a function of the path
    mask = [jax.tree_util.tree_map(lambda a: i in (0, 2), pr) for i, pr in enumerate(p0)]
    with jax.enable_x64(True):
        again = ka.train(twin, p0, x, y, 10, 0.5, freeze=mask, record=())
        by_path = ka.train(twin, p0, x, y, 10, 0.5, freeze=lambda path, leaf: path[0].idx in (0, 2), record=())
    np.testing.assert_array_equal(again.step_loss, run.step_loss)
    np.testing.assert_array_equal(by_path.step_loss, run.step_loss)


def test_minibatch_adam_cross_entropy_equals_a_hand_written_loop() -> None:
    rng = np.random.default_rng(5)
    with jax.enable_x64(True):
        twin = ka.finite(ka.Dense(1.5, 0.1) >> ka.Erf() >> ka.Dense(1.0, 0.1), 24, out_dim=3)
        x, labels = rng.standard_normal((10, 4)), rng.integers(0, 3, 10)
        p0 = _f64(twin.init(4, (4,)))
        run = ka.train(twin, p0, x, labels, 7, optax.adam(1e-2), loss="cross_entropy", batch_size=4, seed=9)
        tx, p, onehot = optax.adam(1e-2), p0, jnp.asarray(np.eye(3)[labels])
        state, losses = tx.init(p), []
        for rows in batch_schedule(10, 4, 7, 9):
            loss = lambda q: jnp.mean(optax.softmax_cross_entropy(twin.apply(q, jnp.asarray(x[rows])),  # noqa: E731
                                                                  onehot[rows]))
            val, g = jax.value_and_grad(loss)(p)
            upd, state = tx.update(g, state, p)
            p, losses = optax.apply_updates(p, upd), losses + [float(val)]
    np.testing.assert_allclose(run.step_loss, losses, rtol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(run.params), jax.tree_util.tree_leaves(p)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    rows = batch_schedule(10, 4, 7, 9)  # two batches per epoch, no example twice within an epoch
    for e in range(3):
        assert len(set(rows[2 * e: 2 * e + 2].ravel())) == 8


def test_hessian_and_ntk_eigenvalues() -> None:
    rng = np.random.default_rng(6)
    with jax.enable_x64(True):
        twin = ka.finite(ka.Dense(1.3, 0.2) >> ka.Erf() >> ka.Dense(1.1, 0.1), 8, out_dim=2)
        x, y = jnp.asarray(rng.standard_normal((5, 3))), jnp.asarray(rng.standard_normal((5, 2)))
        p0 = _f64(twin.init(1, (3,)))
        loss = lambda p, xb, yb: mse(twin.apply(p, xb), yb)  # noqa: E731
        flat, unravel = jax.flatten_util.ravel_pytree(p0)
        dense = np.linalg.eigvalsh(np.asarray(jax.hessian(lambda z: loss(unravel(z), x, y))(flat)))[::-1]
        top = ka.hessian_eigenvalues(loss, p0, x, y, k=3, iters=30)
        np.testing.assert_allclose(top.values, dense[:3], rtol=1e-8)
        assert np.all(top.residuals < 1e-6)
        kfull = np.asarray(ka.empirical_ntk(twin.apply, p0, x, trace=False)).transpose(0, 2, 1, 3).reshape(10, 10)
        np.testing.assert_allclose(ka.ntk_eigenvalues(twin.apply, p0, x, k=2, iters=10).values,
                                   np.linalg.eigvalsh(kfull)[::-1][:2], rtol=1e-10)
        # the loss Hessian of the linearized model is J^T J / N: its top eigenvalue is lambda_max(Theta) / N
        run = ka.train(twin, p0, x, y, 3, 0.5, record={"sharpness": [0, 3], "ntk_eigenvalues": [0],
                                                        "linearized": None}, lanczos_iters=20)
        np.testing.assert_allclose(run.linear["sharpness"]["eigenvalues"][:, 0],
                                   np.linalg.eigvalsh(kfull)[-1] / y.size, rtol=1e-8)
        np.testing.assert_allclose(run["sharpness"]["eigenvalues"][0], dense[:1], rtol=1e-8)
        np.testing.assert_allclose(run["ntk_eigenvalues"]["eigenvalues"][0, 0], np.linalg.eigvalsh(kfull)[-1],
                                   rtol=1e-10)
    # largest algebraic, not largest magnitude; exact with iters = dim
    diag = jnp.array([-5.0, 1.0, 2.0, 0.5])
    np.testing.assert_allclose(lanczos(lambda v: diag * v, 4, k=2, iters=4).values, [2.0, 1.0], rtol=1e-6)


def test_recorders_and_test_points() -> None:
    rng = np.random.default_rng(8)
    twin = ka.finite(ERF2, 32, out_dim=2)
    x, y, xt, yt = (rng.standard_normal(s) for s in ((9, 3), (9, 2), (5, 3), (5, 2)))
    p0 = twin.init(0, (3,))
    run = ka.train(twin, p0, x, y, 12, optax.sgd(0.3, momentum=0.9), x_test=xt, y_test=yt,
                   record={"loss": 4, "outputs": [0, 12], "ntk": [6], "distance": 6})
    assert run.step_loss.shape == (12,)
    assert list(run["loss"].steps) == [0, 4, 8, 12] and run["loss"]["test"].shape == (4,)
    np.testing.assert_allclose(run["loss"]["train"][0], 0.5 * np.mean((np.asarray(twin.apply(p0, x)) - y) ** 2),
                               rtol=1e-5)
    np.testing.assert_allclose(run["loss"]["train"][0], run.step_loss[0], rtol=1e-6)  # full batch
    assert run["outputs"]["test"].shape == (2, 5, 2)
    assert run["ntk"]["train"].shape == (1, 9, 9) and run["ntk"]["test_train"].shape == (1, 5, 9)
    assert run["distance"]["distance"][0] == 0 and run["distance"]["relative"][-1] > 0
    assert run.linear is None and run.linear_step_loss is None


def test_bad_input() -> None:
    twin = ka.finite(ERF2, 8)
    x, y = np.ones((4, 3)), np.ones(4)
    p0 = twin.init(0, (3,))
    with pytest.raises(ka.KernelalgError, match="not a recorder"):
        ka.train(twin, p0, x, y, 2, 0.1, record=["hessian"])
    with pytest.raises(ka.KernelalgError, match="steps of 'ntk'"):
        ka.train(twin, p0, x, y, 2, 0.1, record={"ntk": [5]})
    with pytest.raises(ka.KernelalgError, match="freezes every parameter"):
        ka.train(twin, p0, x, y, 2, 0.1, freeze=[0, 2])
    with pytest.raises(ka.KernelalgError, match="freeze"):
        ka.train(twin, p0, x, y, 2, 0.1, freeze=[7])
    with pytest.raises(ka.KernelalgError, match="optax"):
        ka.train(twin, p0, x, y, 2, "adam")
    with pytest.raises(ka.KernelalgError, match="out_dim=3"):
        ka.train(twin, p0, x, np.ones((4, 3)), 2, 0.1)
    with pytest.raises(ka.KernelalgError, match="integer labels"):
        ka.train(twin, p0, x, np.array([0.5, 1, 0, 1]), 2, 0.1, loss="cross_entropy")
    with pytest.raises(ka.KernelalgError, match="batch_size"):
        ka.train(twin, p0, x, y, 2, 0.1, batch_size=2.5)
    with pytest.raises(ka.KernelalgError, match="lr_rule"):
        ka.train(twin, p0, x, y, 2, 0.1, lr_rule="adam")


def test_memory_planner_never_builds_a_jacobian_that_does_not_fit() -> None:
    """Width 4096, 10 outputs, 1000 points: the structured route in one block (a full Jacobian would be 680 GB)."""
    twin = ka.finite(ka.Dense(1.4, 0.1) >> ka.Relu() >> ka.Dense(1.4, 0.1) >> ka.Relu() >> ka.Dense(1.0), 4096,
                     out_dim=10)
    params = jax.eval_shape(lambda: twin.init(0, (32,)))
    x = jax.ShapeDtypeStruct((1000, 32), jnp.float32)
    assert plan_ntk(twin.apply, params, x, memory=2 * 2**30) == ("structured", 1000)
    # not a twin: the Jacobian route, 2 tiles x 17.0M parameters x 10 outputs x 4 bytes x 2 = 2.7 GB per row
    generic = lambda p, xb: twin.apply(p, xb)  # noqa: E731
    assert plan_ntk(generic, params, x, memory=8 * 2**30) == ("jacobian", 3)
    with pytest.raises(ka.KernelalgError, match="GiB"):
        plan_ntk(generic, params, x, memory=2 * 2**30)
    # "auto" in tiles gives the Jacobian route's kernel
    small = ka.finite(ERF2, 16, out_dim=3)
    p0, xs = small.init(1, (3,)), jnp.asarray(np.random.default_rng(1).standard_normal((9, 3)), jnp.float32)
    ref = ka.empirical_ntk(small.apply, p0, xs)
    generic = lambda p, xb: small.apply(p, xb)  # noqa: E731  (not a twin: the Jacobian route)
    np.testing.assert_allclose(ka.empirical_ntk(small.apply, p0, xs, method="auto"), ref, rtol=2e-5, atol=1e-6)
    assert plan_ntk(generic, p0, xs, memory=25000) == ("jacobian", 4)  # 4 (4 b 3 115 + b^2) bytes <= 25000
    np.testing.assert_allclose(ka.empirical_ntk(generic, p0, xs, method="auto", memory=25000), ref, rtol=2e-5,
                               atol=1e-6)
