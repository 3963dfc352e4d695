"""The equivalent fully connected network (eFCN) of a CNN (d'Ascoli et al. 2019): ``ka.finite.efcn``.

1. The eFCN computes the CNN's function: outputs of the two networks on the same images agree to float64
   rounding (relative 1e-12), for VALID / SAME / CIRCULAR padding, strides, 1-D and 2-D, both parametrizations,
   average pooling folded into the previous or the next layer, GlobalAvgPool readouts, Dense on images. The
   expected values are the CNN's own outputs (lax.conv), independent of the dense matrices built here.
2. Its empirical NTK at initialisation is *not* the CNN's. For Conv(SAME) >> Relu >> Flatten >> Dense at width
   n, as n grows (derived here, see the test): the readout term is the CNN's, but the conv weights' term
   replaces the local window mean (1/|F|) sum_a x_{o+a}.x'_{o+a}/C of the CNTK by the global mean x.x'/(L C),
   since the eFCN's gradient runs over every dense entry with the multiplier W_std/sqrt(L C). That limit is
   computed below in NumPy from the ReLU closed forms (checked against ka.kernel on the CNN) and compared by
   Monte Carlo over independent initialisations (standard errors, |z| < 4.5) with the eFCN's empirical NTK.
3. Layers the eFCN cannot hold are refused with the error constants.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import kernelalg as ka
from kernelalg.core._errors import KernelalgError
from kernelalg.finite import efcn, empirical_ntk_fn
from kernelalg.finite import _efcn as F

CASES = {
    "1d_same_valid_stride": ((7, 3), lambda: ka.Conv((3,), padding="SAME", W_std=1.3, b_std=0.2) >> ka.Relu()
                             >> ka.Conv((2,), strides=(2,), W_std=1.1, b_std=0.1) >> ka.Erf() >> ka.Flatten()
                             >> ka.Dense(1.0, 0.1, out_dim=3)),
    "1d_circular_wide_filter": ((3, 2), lambda: ka.Conv((5,), padding="CIRCULAR", W_std=1.3, b_std=0.2)
                                >> ka.Relu() >> ka.Dense(1.0, 0.2) >> ka.Relu() >> ka.Flatten()
                                >> ka.Dense(1.0, 0.1, out_dim=2)),
    "2d_circular_strides": ((6, 5, 2), lambda: ka.Conv((3, 2), strides=(2, 1), padding="CIRCULAR", W_std=1.3,
                                                       b_std=0.2) >> ka.Relu()
                            >> ka.Conv((3, 3), padding="SAME", W_std=1.1) >> ka.Gelu() >> ka.Flatten()
                            >> ka.Dense(1.0, 0.1, out_dim=2)),
    "2d_same_stride_pool_gap": ((6, 6, 2), lambda: ka.Conv((3, 3), strides=(2, 2), padding="SAME", W_std=1.3,
                                                           b_std=0.2) >> ka.AvgPool((2, 2)) >> ka.Relu()
                                >> ka.Conv((2, 2), padding="SAME") >> ka.Relu() >> ka.GlobalAvgPool()
                                >> ka.Dense(1.0, 0.1, out_dim=2)),
    "2d_standard_pool_before_conv": ((5, 6, 2), lambda: ka.Conv((3, 3), padding="SAME", W_std=1.3, b_std=0.2,
                                                                parameterization="standard", out_chan=4)
                                     >> ka.Relu() >> ka.AvgPool((2, 2), padding="SAME")
                                     >> ka.Conv((3, 3), padding="VALID", parameterization="standard", out_chan=3)
                                     >> ka.GlobalSumPool()),
}


def _params(twin, shape: tuple, seed: int, dtype=np.float64) -> list:
    """Gaussian network parameters of the twin's shapes (drawn in NumPy: no compilation)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: twin.init(jax.random.PRNGKey(0), shape))
    return jax.tree_util.tree_map(lambda s: rng.standard_normal(s.shape).astype(dtype), shapes)


@pytest.mark.parametrize("case", sorted(CASES))
def test_efcn_computes_the_cnns_function(case: str) -> None:
    shape, make = CASES[case]
    with jax.enable_x64(True):
        twin = ka.finite(make(), 4)
        params = _params(twin, shape, 3)
        x = np.random.default_rng(1).standard_normal((5,) + shape)
        fc = efcn(twin, params, shape)
        y_cnn = np.asarray(jax.jit(twin.apply)(params, x))
        y_fc = np.asarray(jax.jit(fc.apply)(fc.params, x))
        assert y_fc.dtype == np.float64 and y_fc.shape == y_cnn.shape
        assert np.max(np.abs(y_fc - y_cnn)) < 1e-12 * np.max(np.abs(y_cnn))
        # only Dense layers and the CNN's activations, on the flattened image
        assert all(e.role in ("affine", "activation") for e in fc.twin.chain)
        assert all(("filter_shape" not in dict(e.static)) for e in fc.twin.chain)
        assert fc.twin.apply(fc.params, fc.flatten(x)).shape == y_cnn.shape


def test_efcn_float32_and_stencil_support() -> None:
    shape = (6, 2)
    twin = ka.finite(ka.Conv((3,), padding="VALID", W_std=1.5, b_std=0.1) >> ka.Relu() >> ka.Flatten()
                     >> ka.Dense(1.0, out_dim=1), 5)
    params = _params(twin, shape, 0, np.float32)
    x = np.random.default_rng(2).standard_normal((4,) + shape).astype(np.float32)
    fc = efcn(twin, params, shape)
    y, y_fc = np.asarray(jax.jit(twin.apply)(params, x)), np.asarray(jax.jit(fc.apply)(fc.params, x))
    assert y_fc.dtype == np.float32 and np.max(np.abs(y - y_fc)) < 1e-5 * np.max(np.abs(y))
    w, mask = np.asarray(fc.params[0]["W"]), fc.support[0]["W"]
    # a VALID 3-tap filter on 6 positions: 4 outputs x 3 taps x C_in 2 x C_out 5 entries on the stencil
    assert w.shape == (12, 20) and mask.sum() == 4 * 3 * 2 * 5 and np.all(w[~mask] == 0)
    # NTK parametrization: stored entries are the conv's times sqrt(fan_in_dense / fan_in_conv) = sqrt(12 / 6)
    w_conv = np.asarray(params[0]["W"])
    assert np.allclose(w[0:2, 0:5], w_conv[0] * np.sqrt(2.0), rtol=1e-6)
    assert np.allclose(w[2:4, 0:5], w_conv[1] * np.sqrt(2.0), rtol=1e-6)
    # the bias is repeated at every position
    assert np.allclose(np.asarray(fc.params[0]["b"]).reshape(4, 5), np.asarray(params[0]["b"])[None])


@pytest.mark.parametrize("net, message", [
    (lambda: ka.Conv((3,)) >> ka.LayerNorm() >> ka.Flatten() >> ka.Dense(), F.NOT_EMBEDDABLE),
    (lambda: ka.Conv((3,)) >> ka.Relu() >> ka.GlobalAvgPool(), F.TRAILING_LINEAR),
    (lambda: ka.Conv((3,)) >> ka.Relu() >> ka.AvgPool((2,)) >> ka.Relu() >> ka.Flatten() >> ka.Dense(),
     F.LINEAR_BETWEEN_ACTIVATIONS),
    (lambda: ka.Conv((3,)) >> ka.FanOut(2) >> ka.parallel(ka.Relu(), ka.Erf()) >> ka.FanInSum() >> ka.Flatten()
     >> ka.Dense(), F.BRANCHES),
])
def test_efcn_refuses_what_it_cannot_embed(net, message: str) -> None:
    twin = ka.finite(net(), 3)
    shape = (6, 2)
    with pytest.raises(KernelalgError) as err:
        efcn(twin, _params(twin, shape, 0), shape)
    tail = message[-40:]  # the constant's fix, after its last placeholder
    assert tail in str(err.value) and "Fix:" in str(err.value), str(err.value)


def test_efcn_refuses_other_inputs() -> None:
    shape = (6, 2)
    with pytest.raises(KernelalgError, match="needs the finite twin"):
        efcn(ka.Conv((3,)), [], shape)
    mup = ka.finite(ka.Conv((3,)) >> ka.Relu() >> ka.Flatten() >> ka.Dense(), 3, parametrization="mup")
    with pytest.raises(KernelalgError, match="abc-parametrization"):
        efcn(mup, _params(mup, shape, 0), shape)
    conv_only = ka.finite(ka.Flatten() >> ka.Relu(), 3)
    with pytest.raises(KernelalgError, match="no Conv or Dense"):
        efcn(conv_only, _params(conv_only, shape, 0), shape)


# ------------------------------------------------------------------------------------------ the NTK at init

W1, B1, W2, B2 = 1.4, 0.3, 1.2, 0.2
L, C_IN = 6, 2


def _relu_duals(s11: np.ndarray, s12: np.ndarray, s22: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cho & Saul's arc-cosine closed forms: T = E[relu u relu v], Tdot = E[relu' u relu' v]."""
    rho = np.clip(s12 / np.sqrt(s11 * s22), -1.0, 1.0)
    th = np.arccos(rho)
    return np.sqrt(s11 * s22) * (np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi), (np.pi - th) / (2 * np.pi)


def _limits(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Infinite-width NTKs of Conv(3, SAME) >> Relu >> Flatten >> Dense: the CNN's, and its eFCN's at the
    CNN's initialisation (the conv weights' term with the global instead of the windowed input kernel)."""
    xp = np.pad(x, ((0, 0), (1, 1), (0, 0)))
    win = sum(np.einsum("npc,mpc->nmp", xp[:, a:a + L], xp[:, a:a + L]) for a in range(3)) / (3 * C_IN)
    k1 = W1 ** 2 * win + B1 ** 2                                 # (N, N, L): per-position conv covariance
    var = np.einsum("nnp->np", k1)
    t, tdot = _relu_duals(var[:, None], k1, var[None])
    glob = W1 ** 2 * np.einsum("npc,mpc->nm", x, x) / (L * C_IN) + B1 ** 2
    readout = W2 ** 2 * t.mean(-1) + B2 ** 2
    return readout + W2 ** 2 * (tdot * k1).mean(-1), readout + W2 ** 2 * tdot.mean(-1) * glob


def test_efcn_ntk_at_init_is_not_the_cnns() -> None:
    """Monte Carlo over 24 initialisations at width 256: the CNN's empirical NTK matches the CNTK, the eFCN's
    (same function, same weights) matches the derived global-mean limit, and the two limits are far apart."""
    rng = np.random.default_rng(5)
    x0 = rng.standard_normal((2, L, C_IN))
    x = np.concatenate([x0, np.roll(x0, 2, axis=1), x0[:, ::-1]])   # shifted / reversed copies: local != global
    net = (ka.Conv((3,), padding="SAME", W_std=W1, b_std=B1) >> ka.Relu() >> ka.Flatten() >> ka.Dense(W2, B2))
    with jax.enable_x64(True):
        cntk, efcn_limit = _limits(x)
        exact = np.asarray(ka.kernel(net, x, get="ntk"))
        assert np.max(np.abs(exact - cntk)) < 1e-10 * np.max(np.abs(cntk))   # the NumPy limit is the CNTK
        twin = ka.finite(net, 256)
        init = jax.jit(lambda key: twin.init(key, (L, C_IN)))
        cnn_k, fc_k, ntk_cnn, ntk_fc = [], [], empirical_ntk_fn(twin.apply), None
        for seed in range(24):
            params = init(jax.random.PRNGKey(seed))
            fc = efcn(twin, params, (L, C_IN))
            ntk_fc = ntk_fc or empirical_ntk_fn(fc.apply)   # one compiled kernel for every eFCN of this shape
            cnn_k.append(np.asarray(ntk_cnn(x, x, params)))
            fc_k.append(np.asarray(ntk_fc(x, x, fc.params)))
        dense = np.asarray(ka.kernel(fc.net, x.reshape(len(x), -1), get="ntk"))
    iu = np.triu_indices(len(x))
    for est, limit in ((np.array(cnn_k), cntk), (np.array(fc_k), efcn_limit)):
        se = est.std(0, ddof=1) / np.sqrt(len(est))
        z = (est.mean(0) - limit) / se
        assert np.max(np.abs(z[iu])) < 4.5, z[iu]
    se = np.array(fc_k).std(0, ddof=1) / np.sqrt(24)
    # the eFCN's kernel is neither the CNN's nor that of a fully connected net of its shape
    assert np.max(np.abs((np.array(fc_k).mean(0) - cntk) / se)[iu]) > 10
    assert np.max(np.abs((np.array(fc_k).mean(0) - dense) / se)[iu]) > 10


@pytest.mark.slow
def test_cnn_to_efcn_example_quick(capsys: pytest.CaptureFixture) -> None:
    """examples/cnn_to_efcn.py --quick runs end to end; every model beats chance (0.1) on held-out digits.
    (The same experiment runs in the default suite through the gallery's quick check, tests/test_papers.py.)"""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "examples" / "cnn_to_efcn.py"
    spec = importlib.util.spec_from_file_location("cnn_to_efcn", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    acc = mod.main(["--quick"])
    assert set(acc) == {"cnn", "cnn_tw", "efcn", "fcn"} and all(a > 0.2 for a in acc.values()), acc
    assert "eFCN (CNN at t_w, then FC)" in capsys.readouterr().out
