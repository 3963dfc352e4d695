"""Finite-width twins (``ka.finite``): shapes, the NTK and standard parametrizations, branches, conv, recurrent
and surrogate twins, the readout-width rule and its errors.

Every expected output is recomputed here in NumPy from the sampled parameters and the documented
parametrization (design.md: a Dense layer computes (W_std/sqrt(fan_in)) W x + b_std b, W, b ~ N(0, 1);
standard: W ~ N(0, W_std^2/fan_in), b ~ N(0, b_std^2) used as x W + b), independently of the twin's code.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from scipy.special import erf

import kernelalg as ka

RNG = np.random.default_rng(7)
X = RNG.normal(size=(5, 4)).astype(np.float32)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def np_params(params):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float64), params)


# ------------------------------------------------------------------------------------------------ dense


def test_dense_ntk_parametrization_forward_and_shapes() -> None:
    net = ka.Dense(1.5, 0.3) >> ka.Relu() >> ka.Dense(0.8, 0.2)
    twin = ka.finite(net, width=32)
    params = twin.init(0, (4,))
    p = np_params(params)
    assert p[0]["W"].shape == (4, 32) and p[0]["b"].shape == (32,)
    assert p[1] == {} and p[2]["W"].shape == (32, 1) and p[2]["b"].shape == (1,)
    assert twin.output_shape((4,)) == (1,) and twin.out_dim == 1 and twin.readout == 2
    x = X.astype(np.float64)
    h = relu(1.5 / math.sqrt(4) * x @ p[0]["W"] + 0.3 * p[0]["b"])
    want = 0.8 / math.sqrt(32) * h @ p[2]["W"] + 0.2 * p[2]["b"]
    got = np.asarray(twin.apply(params, X))
    assert got.shape == (5, 1)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(np.asarray(twin.features(params, X)), h, rtol=2e-5, atol=2e-5)


def test_init_accepts_seed_key_and_batch_shape() -> None:
    twin = ka.finite(ka.Dense(1.0, 0.1) >> ka.Erf() >> ka.Dense(1.0), width=8)
    a = twin.init(3, (4,))
    b = twin.init(jax.random.PRNGKey(3), (-1, 4))  # neural-tangents' init_fn(key, (-1, d)) spelling
    c = twin.init(np.int64(4), (4,))
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    assert not np.array_equal(np.asarray(a[0]["W"]), np.asarray(c[0]["W"]))


def test_ntk_parameters_are_unit_gaussians() -> None:
    """NTK parametrization: every trainable entry ~ N(0, 1), whatever W_std / b_std (20000 draws: the sample
    std has standard error 1/sqrt(2 * 20000) = 0.005; tolerance 0.03 is 6 SE)."""
    twin = ka.finite(ka.Dense(3.0, 2.0), width=8, out_dim=1000)  # a lone Dense is the readout
    p = np_params(twin.init(1, (20,)))
    assert abs(p[0]["W"].std() - 1) < 0.03 and abs(p[0]["W"].mean()) < 0.03
    p = np_params(ka.finite(ka.Dense(3.0, 2.0) >> ka.Relu(), width=20000).init(1, (1,)))
    assert abs(p[0]["b"].std() - 1) < 0.03


def test_standard_parametrization() -> None:
    """Standard parametrization: W ~ N(0, W_std^2/fan_in), b ~ N(0, b_std^2), and y = x W + b. The declared
    out_dim is the width (the standard NTK depends on it)."""
    net = ka.Dense(2.0, 0.5, "standard", out_dim=400) >> ka.Relu() >> ka.Dense(1.2, 0.7, "standard")
    twin = ka.finite(net, width=17)  # width is unused: every hidden layer declares its own out_dim
    params = twin.init(2, (50,))
    p = np_params(params)
    assert p[0]["W"].shape == (50, 400) and p[2]["W"].shape == (400, 1)
    # 20000 weights: std of the sample std ~ sd/sqrt(2*20000) = 0.5% of sd; allow 3% (6 SE)
    assert abs(p[0]["W"].std() / (2.0 / math.sqrt(50)) - 1) < 0.03
    assert abs(p[0]["b"].std() / 0.5 - 1) < 0.1  # 400 biases: SE of the std 3.5%; allow ~3 SE
    x = RNG.normal(size=(3, 50))
    want = relu(x @ p[0]["W"] + p[0]["b"]) @ p[2]["W"] + p[2]["b"]
    np.testing.assert_allclose(np.asarray(twin.apply(params, x.astype(np.float32))), want, rtol=1e-4, atol=1e-4)


def test_residual_fanout_parallel_faninsum() -> None:
    block = ka.FanOut(2) >> ka.parallel(ka.Relu() >> ka.Dense(1.3, 0.1), ka.Identity()) >> ka.FanInSum()
    net = ka.Dense(1.0, 0.2) >> block >> ka.Erf() >> ka.Dense(0.9)
    twin = ka.finite(net, width=16)
    params = twin.init(5, (4,))
    p = np_params(params)
    x = X.astype(np.float64)
    z = 1.0 / 2 * x @ p[0]["W"] + 0.2 * p[0]["b"]
    # serial() flattens: [Dense, FanOut, parallel, FanInSum, Erf, Dense]; parallel holds
    # [serial[Relu, Dense], Identity]
    assert len(p) == 6
    dense_p = p[2][0][1]
    s = 1.3 / 4 * relu(z) @ dense_p["W"] + 0.1 * dense_p["b"] + z
    want = 0.9 / 4 * erf(s) @ p[5]["W"]
    np.testing.assert_allclose(np.asarray(twin.apply(params, X)), want, rtol=1e-4, atol=1e-4)


def test_parallel_branch_count_mismatch_raises() -> None:
    net = ka.Dense(1.0) >> ka.FanOut(3) >> ka.parallel(ka.Relu(), ka.Relu()) >> ka.FanInSum()
    with pytest.raises(ka.LayerOrderError):
        ka.finite(net, 8).init(0, (4,))


# ------------------------------------------------------------------------------------- conv, recurrent


def test_conv_twin_matches_numpy_convolution() -> None:
    """VALID 2x2 conv in NTK parametrization (fan_in = 2*2*C) == an explicit loop over windows; then GAP
    and a Dense readout."""
    x = RNG.normal(size=(2, 4, 5, 3))
    net = ka.Conv((2, 2), padding="VALID", W_std=1.4, b_std=0.3) >> ka.Relu() >> ka.GlobalAvgPool() >> ka.Dense(1.1)
    twin = ka.finite(net, width=6)
    params = twin.init(0, (4, 5, 3))
    p = np_params(params)
    assert p[0]["W"].shape == (2, 2, 3, 6) and twin.output_shape((4, 5, 3)) == (1,)
    w = p[0]["W"]
    y = np.zeros((2, 3, 4, 6))
    for i in range(3):
        for j in range(4):
            y[:, i, j] = np.einsum("nabc,abco->no", x[:, i:i + 2, j:j + 2], w)
    y = 1.4 / math.sqrt(12) * y + 0.3 * p[0]["b"]
    want = 1.1 / math.sqrt(6) * relu(y).mean((1, 2)) @ p[3]["W"]
    got = np.asarray(twin.apply(params, x.astype(np.float32)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # without the readout chain: the conv feature map keeps its spatial layout
    fm = ka.finite(ka.Conv((2, 2), padding="SAME") >> ka.Relu(), width=6)
    assert fm.output_shape((4, 5, 3)) == (4, 5, 6)


def test_conv_circular_padding_is_shift_equivariant() -> None:
    twin = ka.finite(ka.Conv((3, 3), padding="CIRCULAR", W_std=1.0) >> ka.Relu(), width=4)
    x = RNG.normal(size=(1, 5, 5, 2)).astype(np.float32)
    params = twin.init(1, (5, 5, 2))
    y = np.asarray(twin.apply(params, x))
    ys = np.asarray(twin.apply(params, np.roll(x, (1, 2), axis=(1, 2))))
    np.testing.assert_allclose(np.roll(y, (1, 2), axis=(1, 2)), ys, rtol=1e-5, atol=1e-5)


def test_recurrent_twin_matches_elman_recursion() -> None:
    """g_t = (W/sqrt n) W h_{t-1} + (U/sqrt m) U x_t + b beta, h_t = phi(g_t), h_0 = 0; readout last step."""
    x = RNG.normal(size=(3, 4, 2))
    net = ka.Recurrent(ka.Erf(), W_std=0.9, U_std=1.2, b_std=0.2) >> ka.Dense(1.0, 0.1)
    twin = ka.finite(net, width=7)
    params = twin.init(4, (4, 2))
    p = np_params(params)
    r = p[0]["fwd"]
    h = np.zeros((3, 7))
    for t in range(4):
        h = erf(0.9 / math.sqrt(7) * h @ r["W"] + 1.2 / math.sqrt(2) * x[:, t] @ r["U"] + 0.2 * r["b"])
    want = 1.0 / math.sqrt(7) * h @ p[1]["W"] + 0.1 * p[1]["b"]
    np.testing.assert_allclose(np.asarray(twin.apply(params, x.astype(np.float32))), want, rtol=1e-4, atol=1e-4)
    seq = ka.finite(ka.Recurrent(ka.Relu(), readout="sequence", bidirectional=True), width=5)
    assert seq.output_shape((4, 2)) == (4, 10)


def test_surrogate_twin_forward_is_erf_of_sharpness() -> None:
    """SurrogateSign(m) computes erf(m x) forward (the surrogate only changes the backward pass)."""
    net = ka.Dense(1.0) >> ka.SurrogateSign(2.0, "erf", 1.0) >> ka.Dense(1.0)
    twin = ka.finite(net, width=9)
    params = twin.init(0, (4,))
    p = np_params(params)
    want = erf(2.0 * (X.astype(np.float64) @ p[0]["W"] / 2)) @ p[2]["W"] / 3
    np.testing.assert_allclose(np.asarray(twin.apply(params, X)), want, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------- readout rule, errors


def test_readout_width_rule() -> None:
    net = ka.Dense(1.0) >> ka.Relu() >> ka.Dense(1.0)
    assert ka.finite(net, 8).output_shape((3,)) == (1,)
    assert ka.finite(net, 8, out_dim=5).output_shape((3,)) == (5,)
    own = ka.Dense(1.0) >> ka.Relu() >> ka.Dense(1.0, out_dim=4)
    assert ka.finite(own, 8).output_shape((3,)) == (4,)
    assert ka.finite(own, 8, out_dim=4).output_shape((3,)) == (4,)
    with pytest.raises(ka.KernelalgError, match="conflicts"):
        ka.finite(own, 8, out_dim=3)
    # the readout may be followed by linear parameter-free layers only
    conv = ka.Conv((2, 2)) >> ka.Relu() >> ka.Conv((2, 2)) >> ka.GlobalAvgPool()
    assert ka.finite(conv, 8).output_shape((4, 4, 2)) == (1,)
    # no readout: keeps its own width and refuses out_dim
    ends_in_act = ka.Dense(1.0) >> ka.Relu()
    assert ka.finite(ends_in_act, 8).output_shape((3,)) == (8,)
    with pytest.raises(ka.KernelalgError, match="no readout layer"):
        ka.finite(ends_in_act, 8, out_dim=2)
    with pytest.raises(ka.KernelalgError, match="readout"):
        ka.finite(ends_in_act, 8).features([{}, {}], X)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "64", None, float("nan")])
def test_bad_width_raises_with_fix(bad) -> None:
    with pytest.raises(ka.KernelalgError, match=r"width must be a positive integer.*Fix"):
        ka.finite(ka.Dense(1.0) >> ka.Relu(), bad)


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_bad_out_dim_raises(bad) -> None:
    with pytest.raises(ka.KernelalgError, match=r"out_dim must be a positive integer"):
        ka.finite(ka.Dense(1.0) >> ka.Relu() >> ka.Dense(1.0), 8, out_dim=bad)


def test_bad_input_shape_and_missing_twin() -> None:
    twin = ka.finite(ka.Dense(1.0) >> ka.Relu() >> ka.Dense(1.0), 8)
    with pytest.raises(ka.InputError, match="input_shape"):
        twin.init(0, (2, 3, 4))
    no_twin = ka.Layer("Mystery", kernel=lambda b, st, p, s: st)
    with pytest.raises(ka.KernelalgError, match="no finite-width twin"):
        ka.finite(ka.Dense(1.0) >> no_twin, 8).init(0, (3,))
    with pytest.raises(ka.KernelalgError):
        ka.finite("Dense", 8)
