"""Empirical NTK J J^T (``ka.empirical_ntk``) and output covariance (``ka.empirical_nngp``).

* Independent reference: the Jacobian of a linear and of a one-hidden-layer network written out by hand
  (NumPy, from the sampled parameters), contracted as J J^T.
* The two exact routes (Jacobian contraction, NTK-vector products) agree, tiled or not, per-example
  or whole-batch (NT's implementations 1 and 2), and the structured route for Dense chains.
* Layout semantics: trace=True is the channel average of the full kernel's diagonal channel blocks,
  shapes (N, M, *spatial, *spatial) vs (N, M, *out, *out), tiles mirror correctly.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

import kernelalg as ka

from kernelalg.backends._compile import precision_of

RNG = np.random.default_rng(11)


def x64():
    """Local float64 mode (the references are float64; rtol 1e-10 needs it)."""
    return precision_of(np.zeros(1))

X1 = RNG.normal(size=(4, 3))
X2 = RNG.normal(size=(3, 3))


def np_params(params):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float64), params)


def test_linear_network_is_its_input_kernel() -> None:
    """f = (W_std/sqrt d) x.W + b_std b: J J^T = (W_std^2 x.x'/d + b_std^2) delta_{channels}, at any params."""
    twin = ka.finite(ka.Dense(1.7, 0.4), width=8, out_dim=3)
    with x64():
        params = twin.init(0, (3,))
        full = np.asarray(ka.empirical_ntk(twin.apply, params, X1, X2, trace=False))
        tr = np.asarray(ka.empirical_ntk(twin.apply, params, X1, X2))
    k = 1.7**2 * X1 @ X2.T / 3 + 0.4**2
    assert full.shape == (4, 3, 3, 3)
    np.testing.assert_allclose(full, np.einsum("nm,ab->nmab", k, np.eye(3)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tr, k, rtol=1e-12, atol=1e-12)


def hand_ntk(p, x1: np.ndarray, x2: np.ndarray, ws: tuple, bs: tuple) -> np.ndarray:
    """J J^T of f = (v/sqrt n) V.erf(z) + c beta, z = (w/sqrt d) x W + b bias, summed over the four
    parameter groups (derivatives written out by hand)."""
    from scipy.special import erf
    (w, v), (b, c) = ws, bs
    d, n = x1.shape[1], p[0]["W"].shape[1]
    vv = p[2]["W"][:, 0]

    def pre(x: np.ndarray) -> np.ndarray:
        return w / math.sqrt(d) * x @ p[0]["W"] + b * p[0]["b"]

    z1, z2 = pre(x1), pre(x2)
    dphi = lambda z: 2 / math.sqrt(math.pi) * np.exp(-z**2)  # noqa: E731
    g1 = v / math.sqrt(n) * vv * dphi(z1)  # df/dz_i, (N, n)
    g2 = v / math.sqrt(n) * vv * dphi(z2)
    k_readout = v**2 * erf(z1) @ erf(z2).T / n + c**2  # d/dV and d/dbeta
    k_w = (g1 @ g2.T) * (w**2 * x1 @ x2.T / d)  # d/dW_ji = g_i * (w/sqrt d) x_j
    k_b = (g1 @ g2.T) * b**2  # d/dbias_i = g_i * b
    return k_readout + k_w + k_b


@pytest.mark.parametrize("method", ["jacobian", "ntvp"])
def test_one_hidden_layer_matches_hand_jacobian(method: str) -> None:
    net = ka.Dense(1.3, 0.3) >> ka.Erf() >> ka.Dense(0.9, 0.2)
    twin = ka.finite(net, width=6)
    with x64():
        params = twin.init(1, (3,))
        got = np.asarray(ka.empirical_ntk(twin.apply, params, X1, X2, method=method))
        sym = np.asarray(ka.empirical_ntk(twin.apply, params, X1, method=method))
    p = np_params(params)
    np.testing.assert_allclose(got, hand_ntk(p, X1, X2, (1.3, 0.9), (0.3, 0.2)), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sym, hand_ntk(p, X1, X1, (1.3, 0.9), (0.3, 0.2)), rtol=1e-10, atol=1e-12)


def test_empirical_nngp_is_channel_averaged_output_product() -> None:
    twin = ka.finite(ka.Dense(1.0, 0.1) >> ka.Relu() >> ka.Dense(1.0), width=8, out_dim=5)
    params = twin.init(2, (3,))
    x1, x2 = X1.astype(np.float32), X2.astype(np.float32)
    y1 = np.asarray(twin.apply(params, x1), dtype=np.float64)
    y2 = np.asarray(twin.apply(params, x2), dtype=np.float64)
    np.testing.assert_allclose(np.asarray(ka.empirical_nngp(twin.apply, params, x1, x2)), y1 @ y2.T / 5,
                               rtol=1e-5, atol=1e-6)
    full = np.asarray(ka.empirical_nngp(twin.apply, params, x1, x2, trace=False))
    np.testing.assert_allclose(full, np.einsum("na,mb->nmab", y1, y2), rtol=1e-5, atol=1e-6)


# a conv feature map without readout: output (N, 3, 3, C) -> spatial kernel layout (N, M, 3, 3, 3, 3)
CONV = ka.Conv((2, 2), padding="SAME", W_std=1.2, b_std=0.1) >> ka.Relu() >> ka.Conv((2, 2), padding="SAME")
IMG1 = RNG.normal(size=(3, 3, 3, 2))
IMG2 = RNG.normal(size=(2, 3, 3, 2))


def test_routes_agree_and_trace_layout_on_conv_feature_maps() -> None:
    twin = ka.finite(CONV, width=3, out_dim=3)  # the last Conv is the readout: give it 3 channels
    with x64():
        params = twin.init(0, (3, 3, 2))
        fn_j = ka.empirical_ntk_fn(twin.apply, method="jacobian", trace=False)
        fn_v = ka.empirical_ntk_fn(twin.apply, method="ntvp", trace=False)
        full = np.asarray(fn_j(IMG1, IMG2, params))
        np.testing.assert_allclose(np.asarray(fn_v(IMG1, IMG2, params)), full, rtol=1e-10, atol=1e-12)
        tr = np.asarray(ka.empirical_ntk(twin.apply, params, IMG1, IMG2, method="ntvp"))
        tiled = np.asarray(ka.empirical_ntk(twin.apply, params, IMG1, None, trace=False, batch_size=2))
        untiled_sym = np.asarray(ka.empirical_ntk(twin.apply, params, IMG1, None, trace=False))
    assert full.shape == (3, 2, 3, 3, 3, 3, 3, 3)  # (N, M, H, W, C, H', W', C')
    assert tr.shape == (3, 2, 3, 3, 3, 3)  # (N, M, H, W, H', W')
    # trace=True is the channel mean of the channel-diagonal blocks
    np.testing.assert_allclose(tr, np.einsum("nmhwcxyc->nmhwxy", full) / 3, rtol=1e-10, atol=1e-12)
    # a symmetric kernel: K[n, m, a, b] == K[m, n, b, a]; tiles mirrored with both axis groups swapped
    np.testing.assert_allclose(tiled, untiled_sym, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(untiled_sym, np.transpose(untiled_sym, (1, 0, 5, 6, 7, 2, 3, 4)), rtol=1e-10,
                               atol=1e-12)


def test_tiles_match_untiled_dense() -> None:
    twin = ka.finite(ka.Dense(1.0, 0.2) >> ka.Gelu() >> ka.Dense(1.0), width=8, out_dim=2)
    x = RNG.normal(size=(7, 3))
    with x64():
        params = twin.init(3, (3,))
        ref = np.asarray(ka.empirical_ntk(twin.apply, params, x))
        np.testing.assert_allclose(np.asarray(ka.empirical_ntk(twin.apply, params, x, batch_size=3)), ref,
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.asarray(ka.empirical_ntk(twin.apply, params, x, x[:5], batch_size=2)),
                                   ref[:, :5], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.asarray(ka.empirical_ntk(twin.apply, params, x, method="ntvp")), ref,
                                   rtol=1e-10, atol=1e-12)
        # whole-batch differentiation (no per-example vmap) gives the same kernel
        np.testing.assert_allclose(np.asarray(ka.empirical_ntk(twin.apply, params, x, vmap_examples=False)), ref,
                                   rtol=1e-10, atol=1e-12)


def test_bad_method_raises() -> None:
    with pytest.raises(ka.KernelalgError, match="method='jacobian'"):
        ka.empirical_ntk_fn(lambda p, x: x, method="autodiff")


@pytest.mark.parametrize("param", ["ntk", "standard"])
def test_structured_matches_jacobian(param: str) -> None:
    """method='structured' ((c_W h.h' + c_b) g.g' per Dense layer) == the Jacobian contraction, both
    parametrizations, with and without bias, trace on/off, x2 given or not, tiled."""
    out = 5 if param == "standard" else None
    net = (ka.Dense(1.5, 0.05, param, out_dim=out) >> ka.Relu() >> ka.Identity()
           >> ka.Dense(1.2, None, param, out_dim=out) >> ka.Erf() >> ka.Dense(0.9, 0.3, param))
    twin = ka.finite(net, width=6, out_dim=2)
    with x64():
        params = twin.init(4, (3,))
        combos = [(None, True), (X2, False)] + ([(None, False), (X2, True)] if param == "ntk" else [])
        for x2, trace in combos:
            ref = np.asarray(ka.empirical_ntk(twin.apply, params, X1, x2, trace=trace))
            got = np.asarray(ka.empirical_ntk(twin.apply, params, X1, x2, trace=trace, method="structured"))
            np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
        tiled = ka.empirical_ntk(twin.apply, params, X1, method="structured", batch_size=3)
        np.testing.assert_allclose(np.asarray(tiled), np.asarray(ka.empirical_ntk(twin.apply, params, X1)),
                                   rtol=1e-10, atol=1e-12)


def test_structured_refuses_what_it_cannot_do() -> None:
    conv = ka.finite(CONV, width=3, out_dim=3)
    params = conv.init(0, (3, 3, 2))
    with pytest.raises(ka.KernelalgError, match="method='jacobian'"):
        ka.empirical_ntk(conv.apply, params, IMG1, method="structured")
    dense = ka.finite(ka.Dense(1.0) >> ka.Relu() >> ka.Dense(1.0), width=4)
    with pytest.raises(ka.KernelalgError, match="structured"):
        ka.empirical_ntk(lambda p, x: dense.apply(p, x), dense.init(0, (3,)), X1, method="structured")
