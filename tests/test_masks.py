"""Masked image inputs: ``ka.kernel(net, x1, x2, mask_constant=c)`` (issue #17; neural-tangents' ``mask_constant``).

Expected values are independent of the code under test:

* neural-tangents 0.6.5 itself (``kernel_fn(x1, x2, get, mask_constant=c)``): its kernels on small fixed inputs
  with masked positions are stored in tests/data/nt_masks_reference.npz by benchmarks/make_nt_masks_reference.py;
  float64 agreement to 1e-10 relative, NNGP and NTK, x2 = None and x2 given.
* Monte Carlo over finite networks written here with jax.lax (not kernelalg's twins): a one-hidden-layer conv
  net whose masked pixels are zeroed before each conv and whose GlobalAvgPool averages the valid pixels (NT's
  ``apply_fn(..., mask_constant=c)``); its hidden pre-activations are exactly Gaussian, so the mean NNGP
  f(x) f(x') and NTK J(x) J(x')^T equal the exact kernels at any width. z-scores against the standard errors
  (fixed seeds), bound |z| <= 5 per entry, and a power check that the estimate rejects the unmasked kernel.
  kernelalg's own twin (``FiniteNet.apply(..., mask_constant=c)``) must give the same outputs as that network.
* Monte Carlo over kernelalg's twin of a net whose layers move the masks (stride-2 SAME conv, AvgPool, VALID
  conv, GlobalAvgPool; one hidden layer, so exact at any width) against the exact kernel, whose handling of
  such layers is checked against the stored NT cases above; same z bound and power check.
* Brute force: the twin of parallel branches equals the sum of the branch networks' twins (a strided conv
  in one branch moves the mask of that branch only).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernelalg as ka
from _nt_masks import MASK_CASES, NT_MASKS, mask_inputs, mask_net
from kernelalg.backends import NUMPY_ARRAYS
from kernelalg.core import _errors as E
from kernelalg.layers.spatial._resize import TconvMask


@pytest.fixture(autouse=True, scope="module")
def _float64():
    """float64 for this module only (a global switch would change every test collected after it)."""
    with jax.enable_x64(True):
        yield


NT, CASES, _net, _inputs = NT_MASKS, MASK_CASES, mask_net, mask_inputs
Z_MAX = 5.0


def test_nt_reference_covers_every_case() -> None:
    assert set(CASES) == {"conv_gap", "dense_seq_gsp", "conv_flatten", "nan_gap", "graph_relu_gap",
                          "graph_erf_gsp_arcs", "valid_gap", "stride_flatten", "pool_gap", "edges_gsp",
                          "seq_valid_gsp", "local_flatten", "local_gap", "tconv_gap", "tconv_flatten", "index_gap",
                          "index_seq_flatten", "index_drop_gsp", "dot_free_gap", "layernorm_gap",
                          "layernorm_seq_flatten", "resize_gap"}


#: Cases of the default run (GlobalAvgPool, GlobalSumPool, Flatten, graphs with padding nodes; masks through
#: strided SAME and VALID convs before Flatten, and through AvgPool (stride 2) and SumPool before
#: GlobalAvgPool); the NaN constant, the graph case with arcs to padding nodes, VALID convs before
#: GlobalAvgPool, AvgPool with normalize_edges, 1-D VALID convs, ConvLocal (matching pixels, all pixel pairs) and
#: ConvTranspose (tconv_*) run under -m slow; Index (slices) before a VALID conv and GlobalAvgPool by default, on
#: sequences before Flatten and an integer index (a row of an image becomes a sequence) under -m slow; DotGeneral
#: with a free axis (an output reached only by masked positions is masked) and LayerNorm over positions (means over
#: the valid ones) and ImageResize (up one axis, down with antialias the other) by default, LayerNorm on sequences
#: under -m slow.
FAST = ("conv_gap", "dense_seq_gsp", "conv_flatten", "graph_relu_gap", "stride_flatten", "pool_gap", "index_gap", "dot_free_gap",
        "layernorm_gap", "resize_gap")


@pytest.mark.parametrize("case", [c if c in FAST else pytest.param(c, marks=pytest.mark.slow) for c in CASES])
def test_agrees_with_neural_tangents(case: str) -> None:
    net = _net(case)
    (x1, x2), c = _inputs(case), float(NT[f"{case}.c"])
    for call, b in (("sym", None), ("cross", x2)):
        k = ka.kernel(net, x1, b, mask_constant=c)
        for field in ("nngp", "ntk"):
            got, want = np.asarray(getattr(k, field)), NT[f"{case}.{call}.{field}"]
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * np.abs(want).max(),
                                       err_msg=f"{case} {call} {field}")


def test_compiled_call_and_float32() -> None:
    """The compiled kernel's call takes mask_constant too; float32 inputs give float32 kernels near float64's."""
    net = _net("conv_gap")
    x1, c = NT["conv_gap.x1"], float(NT["conv_gap.c"])
    f = ka.compile(net)
    want = NT["conv_gap.sym.ntk"]
    np.testing.assert_allclose(np.asarray(f(x1, mask_constant=c).ntk), want, rtol=1e-10)
    with jax.enable_x64(False):
        got32 = f(x1.astype(np.float32), mask_constant=c).ntk
        assert got32.dtype == np.float32
    np.testing.assert_allclose(np.asarray(got32), want, rtol=1e-5)


def test_hyperparameter_names_are_those_of_the_network() -> None:
    """Overrides use the network's own names: doubling the readout's W_std (1.1, b_std 0.2) of dense_seq_gsp maps
    NT's NNGP K to 4 (K - 0.2^2) + 0.2^2 (the readout is affine in its input kernel)."""
    net = _net("dense_seq_gsp")
    assert "sigma_w_6" in ka.compile(net).params
    x1, c = NT["dense_seq_gsp.x1"], float(NT["dense_seq_gsp.c"])
    got = ka.kernel(net, x1, get="nngp", mask_constant=c, params={"sigma_w_6": 2.2})
    want = 4.0 * (NT["dense_seq_gsp.sym.nngp"] - 0.04) + 0.04
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10)


# ------------------------------------------------------------------------------------------------ Monte Carlo

W1, B1, W2, B2 = 1.3, 0.2, 1.1, 0.1
C_MASK = -1.0
IMG1 = np.random.default_rng(21).normal(size=(2, 4, 3, 2))
IMG2 = np.random.default_rng(22).normal(size=(2, 4, 3, 2))
IMG1[0, 2:] = C_MASK  # two rows masked
IMG2[1, :, 0] = C_MASK  # a column masked
IMG2[0, 1, 1, 0] = C_MASK  # one entry zeroed, its pixel stays valid


def _mc_net() -> ka.Layer:
    return ka.Conv((2, 2), padding="SAME", W_std=W1, b_std=B1) >> ka.Relu() >> \
        ka.Conv((3, 3), padding="SAME", W_std=W2, b_std=B2) >> ka.GlobalAvgPool()


def _by_hand(params: dict, x: jax.Array, width: int) -> jax.Array:
    """NT's masked apply, written here: zero masked entries and pixels before each conv, mean over valid pixels."""
    hit = x == C_MASK
    valid = (~jnp.all(hit, axis=-1)).astype(x.dtype)[..., None]
    x = jnp.where(hit, 0.0, x)
    dn = ("NHWC", "HWIO", "NHWC")
    h = jax.lax.conv_general_dilated(x, params["w1"], (1, 1), "SAME", dimension_numbers=dn)
    h = W1 / np.sqrt(2 * 2 * x.shape[-1]) * h + B1 * params["b1"]
    g = jax.nn.relu(h) * valid
    y = jax.lax.conv_general_dilated(g, params["w2"], (1, 1), "SAME", dimension_numbers=dn)
    y = W2 / np.sqrt(3 * 3 * width) * y + B2 * params["b2"]
    return jnp.sum(y * valid, axis=(1, 2)) / jnp.sum(valid, axis=(1, 2))


def _sample(key: jax.Array, width: int) -> dict:
    k = jax.random.split(key, 4)
    return {"w1": jax.random.normal(k[0], (2, 2, 2, width)), "b1": jax.random.normal(k[1], (width,)),
            "w2": jax.random.normal(k[2], (3, 3, width, 1)), "b2": jax.random.normal(k[3], (1,))}


def _check_draws(draws: dict, ex: Any, plain: Any) -> None:
    """Per-network NNGP/NTK draws (samples, N, M): every z of their mean against the exact kernel ``ex`` within
    Z_MAX; power: some |z| against ``plain`` (the kernel without masks) beyond Z_MAX."""
    power = 0.0
    for name, d in draws.items():
        mean, err = np.mean(d, 0), np.std(d, 0, ddof=1) / np.sqrt(len(d))
        z = (mean - np.asarray(getattr(ex, name))) / err
        print(name, "z", np.round(z.ravel(), 2))
        assert np.all(np.abs(z) <= Z_MAX), (name, z)
        power = max(power, np.max(np.abs(mean - np.asarray(getattr(plain, name))) / err))
    print("largest |z| against the unmasked kernel", round(float(power), 1))
    assert power > Z_MAX


def _check_twin_nngp(net: ka.Layer, x: np.ndarray, c: float, want: Any, width: int, samples: int, key: int) -> None:
    """ka.monte_carlo of the masked twin: every NNGP z against ``want`` within Z_MAX; power: some |z| against the
    kernel of the zeroed inputs without masks beyond Z_MAX."""
    mc = ka.monte_carlo(net, x, width=width, samples=samples, key=key, mask_constant=c, get="nngp")
    z = (np.asarray(mc.nngp) - np.asarray(want)) / mc.stderr.nngp
    print("z", np.round(z.ravel(), 2))
    assert np.all(np.abs(z) <= Z_MAX), z
    plain = ka.kernel(net, np.where(x == c, 0.0, x), None, "nngp")
    power = np.max(np.abs(np.asarray(mc.nngp) - np.asarray(plain)) / mc.stderr.nngp)
    print("power", power)
    assert power > Z_MAX


def test_monte_carlo_masked_conv_net() -> None:
    """8 z-scores (4 entries x 2 kernels) within Z_MAX (chance failure < 1e-5); the estimate rejects the kernel
    of the same inputs without masks (power: some |z| > Z_MAX against it)."""
    width, samples = 8, 128
    xs = jnp.asarray(np.concatenate([IMG1, IMG2]))

    def one(key: jax.Array) -> tuple:
        p = _sample(key, width)
        f = _by_hand(p, xs, width)[:, 0]
        j = jax.jacrev(lambda q: _by_hand(q, xs, width)[:, 0])(p)
        ntk = sum(jnp.einsum("n...,m...->nm", j[n][:2], j[n][2:]) for n in p)
        return jnp.outer(f[:2], f[2:]), ntk

    nngp, ntk = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(3), samples))
    net = _mc_net()
    ex = ka.kernel(net, IMG1, IMG2, mask_constant=C_MASK)
    # the kernel that ignores the masks (zeroed entries, no masked pixel; the same compiled program, see
    # test_no_masked_position_is_the_unmasked_kernel)
    plain = ka.kernel(net, np.where(IMG1 == C_MASK, 0.0, IMG1), np.where(IMG2 == C_MASK, 0.0, IMG2), mask_constant=1e9)
    _check_draws({"nngp": nngp, "ntk": ntk}, ex, plain)


def test_finite_twin_matches_masked_network() -> None:
    """kernelalg's twin with mask_constant computes the network written by hand above (same weights)."""
    width = 4
    twin = ka.finite(_mc_net(), width)
    p = twin.init(0, IMG1.shape[1:])
    hand = {"w1": p[0]["W"], "b1": p[0]["b"], "w2": p[2]["W"], "b2": p[2]["b"]}
    x = np.concatenate([IMG1, IMG2])
    np.testing.assert_allclose(np.asarray(twin.apply(p, x, mask_constant=C_MASK)),
                               np.asarray(_by_hand(hand, jnp.asarray(x), width)), rtol=1e-12)


STRIDED1 = np.random.default_rng(31).normal(size=(2, 7, 6, 2))
STRIDED2 = np.random.default_rng(32).normal(size=(2, 7, 6, 2))
STRIDED1[0, 3:] = C_MASK  # rows 3-6 masked: the stride-2 centres of rows 2, 3 are masked, and so on to the readout
STRIDED2[1, :, 5] = C_MASK  # the last column: one stride-2 centre masked
STRIDED2[0, 2, 1:4] = C_MASK  # three single pixels
STRIDED1[1, 0, 0, 1] = C_MASK  # one entry zeroed, its pixel stays valid


def _strided_net() -> ka.Layer:
    """One hidden layer (its pre-activations exactly Gaussian), then only linear maps that change the positions."""
    return ka.Conv((3, 3), strides=(2, 2), padding="SAME", W_std=W1, b_std=B1) >> ka.Relu() >> \
        ka.AvgPool((2, 2), strides=(1, 1)) >> ka.Conv((2, 2), padding="VALID", W_std=W2, b_std=B2) >> \
        ka.GlobalAvgPool()


def test_monte_carlo_masked_strided_pooled_net() -> None:
    """kernelalg's finite twin with mask_constant (stride-2 SAME conv, AvgPool, VALID conv, GlobalAvgPool): the
    mean NNGP f(x) f(x') and NTK J(x) J(x')^T over 512 draws at width 4 equal the exact kernels at any width
    (one hidden layer). 8 z-scores within Z_MAX (chance failure < 1e-5); power: the estimate rejects the kernel
    of the same inputs without masks."""
    width, samples = 4, 512
    twin = ka.finite(_strided_net(), width)
    xs = np.concatenate([STRIDED1, STRIDED2])

    def one(key: jax.Array) -> tuple:
        p = twin.init(key, xs.shape[1:])
        out = (lambda q: twin.apply(q, xs, mask_constant=C_MASK)[:, 0])
        f, j = out(p), jax.jacrev(out)(p)
        flat = jnp.concatenate([a.reshape(len(xs), -1) for a in jax.tree_util.tree_leaves(j)], axis=1)
        return jnp.outer(f[:2], f[2:]), flat[:2] @ flat[2:].T

    nngp, ntk = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(5), samples))
    net = _strided_net()
    ex = ka.kernel(net, STRIDED1, STRIDED2, mask_constant=C_MASK)
    plain = ka.kernel(net, np.where(STRIDED1 == C_MASK, 0.0, STRIDED1), np.where(STRIDED2 == C_MASK, 0.0, STRIDED2),
                      mask_constant=1e9)  # no masked position: the kernel without masks, the same compiled program
    _check_draws({"nngp": nngp, "ntk": ntk}, ex, plain)


def test_index_under_masks_by_monte_carlo() -> None:
    """Index (slices) between convs: the finite twin moves the bound mask to the selected positions as the kernel
    does (ka.monte_carlo: 256 networks of width 8, every NNGP |z| within Z_MAX; two hidden layers, so the twin's
    NNGP carries an O(1/width) bias, small against the SE here), and the estimate rejects the kernel without masks
    (power)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 6, 5, 2))
    x[0, 4:], x[1, :, 0] = C_MASK, C_MASK
    net = (ka.Conv((2, 2), padding="SAME") >> ka.Relu() >> ka.Index(ka.Slice[:, 1:, ::2]) >> ka.Conv((2, 2)) >>
           ka.Erf() >> ka.GlobalAvgPool() >> ka.Dense())
    _check_twin_nngp(net, x, C_MASK, ka.kernel(net, x, None, "nngp", mask_constant=C_MASK), 8, 256, 3)


def test_dot_general_twin_under_masks_by_monte_carlo() -> None:
    """The DotGeneral twin moves the bound mask as NT's mask_fn (case dot_free_gap: one hidden layer, so the mean
    NNGP of 512 networks of width 8 is unbiased): within Z_MAX of NT's stored NNGP; the estimate rejects the kernel
    of the zeroed inputs without masks (power)."""
    net, x1, c = _net("dot_free_gap"), NT["dot_free_gap.x1"], float(NT["dot_free_gap.c"])
    _check_twin_nngp(net, x1, c, NT["dot_free_gap.sym.nngp"], 8, 512, 4)


def test_layernorm_twin_under_masks_by_monte_carlo() -> None:
    """The LayerNorm twin normalizes over the valid positions (case layernorm_gap's first two layers, read out by
    GlobalAvgPool >> Dense: the twin's NNGP at width 64 over 256 networks within Z_MAX of the exact kernel; the
    normalization's O(1/width) bias is small against the SE), and rejects the kernel of the zeroed inputs without
    masks (power)."""
    x1, c = NT["layernorm_gap.x1"], float(NT["layernorm_gap.c"])
    net = ka.Conv((2, 2), padding="SAME", W_std=1.3, b_std=0.2) >> ka.LayerNorm(axis=(1, 2, 3)) >> ka.Relu() >> \
        ka.GlobalAvgPool() >> ka.Dense(1.2, 0.1)
    _check_twin_nngp(net, x1, c, ka.kernel(net, x1, None, "nngp", mask_constant=c), 64, 256, 6)


def test_image_resize_twin_under_masks_by_monte_carlo() -> None:
    """The ImageResize twin moves the bound mask as the kernel (case resize_gap): the twin's NNGP at width 32 over
    256 networks within Z_MAX of NT's stored kernel (two hidden layers: an O(1/width) bias, small against the SE),
    and the estimate rejects the kernel of the zeroed inputs without masks (power)."""
    net, x1, c = _net("resize_gap"), NT["resize_gap.x1"], float(NT["resize_gap.c"])
    _check_twin_nngp(net, x1, c, NT["resize_gap.sym.nngp"], 32, 256, 8)


def test_parallel_branches_do_not_see_each_others_masks() -> None:
    """Brute force on the finite twin: in parallel branches, a strided conv moves the mask of its own branch
    only; the parallel net's output is the sum of the two branch networks' outputs (same weights)."""
    a = ka.Conv((2, 2), strides=(2, 2), W_std=W1, out_chan=2) >> ka.GlobalAvgPool()
    b = ka.Conv((1, 1), W_std=W2, out_chan=2) >> ka.GlobalAvgPool()
    twin = ka.finite(ka.FanOut(2) >> ka.parallel(a, b) >> ka.FanInSum(), 3)
    p = twin.init(2, STRIDED1.shape[1:])
    got = twin.apply(p, STRIDED1, mask_constant=C_MASK)
    want = ka.finite(a, 3).apply(p[1][0], STRIDED1, mask_constant=C_MASK) + \
        ka.finite(b, 3).apply(p[1][1], STRIDED1, mask_constant=C_MASK)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12)
    assert not np.allclose(np.asarray(got), np.asarray(twin.apply(p, np.where(STRIDED1 == C_MASK, 0.0, STRIDED1))))


def test_padded_graph_is_the_unpadded_graph() -> None:
    """Brute force: a graph padded with masked nodes (isolated or not) has the kernel of the graph without them."""
    net = ka.Aggregate() >> ka.Dense(1.3, 0.2) >> ka.Relu() >> ka.Aggregate() >> ka.GlobalAvgPool() >> ka.Dense(1.1, 0.1)
    rng = np.random.default_rng(5)
    x, a = rng.normal(size=(2, 5, 3)), np.maximum((rng.random((2, 5, 5)) < 0.4).astype(float), np.eye(5))
    x[1, 3:] = C_MASK  # graph 1 has 3 nodes; its padding nodes keep their arcs
    padded = ka.kernel(net, ka.Graphs(x, a), mask_constant=C_MASK)
    for i, n in ((0, 5), (1, 3)):
        alone = ka.kernel(net, ka.Graphs(x[i:i + 1, :n], a[i:i + 1, :n, :n]))
        for field in ("nngp", "ntk"):
            np.testing.assert_allclose(np.asarray(getattr(padded, field))[i, i], np.asarray(getattr(alone, field))[0, 0],
                                       rtol=1e-12, err_msg=f"graph {i} {field}")


@pytest.mark.slow
def test_finite_twin_of_padded_graph_is_the_unpadded_twin() -> None:
    """Brute force on the finite twin: same weights, padded graph with mask_constant = the graph without padding."""
    net = ka.Dense(1.3, 0.2) >> ka.Aggregate() >> ka.Relu() >> ka.Aggregate() >> ka.GlobalAvgPool() >> ka.Dense(1.1, 0.1)
    rng = np.random.default_rng(6)
    x, a = rng.normal(size=(1, 5, 3)), np.maximum((rng.random((1, 5, 5)) < 0.5).astype(float), np.eye(5))
    x[0, 3:] = C_MASK
    twin = ka.finite(net, 6)
    p = twin.init(1, (5, 3))
    padded = twin.apply(p, ka.Graphs(x, a), mask_constant=C_MASK)
    alone = twin.apply(p, ka.Graphs(x[:, :3], a[:, :3, :3]))
    np.testing.assert_allclose(np.asarray(padded), np.asarray(alone), rtol=1e-12)
    assert not np.allclose(np.asarray(twin.apply(p, ka.Graphs(x, a))), np.asarray(alone))  # the mask matters


# --------------------------------------------------------------------------------------------------- errors


@pytest.mark.slow
def test_no_masked_position_is_the_unmasked_kernel() -> None:
    net = _net("conv_gap")
    x = np.random.default_rng(1).normal(size=(2, 5, 4, 2))
    a, b = ka.kernel(net, x, mask_constant=123.0), ka.kernel(net, x)
    np.testing.assert_allclose(np.asarray(a.ntk), np.asarray(b.ntk), rtol=1e-13)


@pytest.mark.parametrize("net, match", [
    (ka.Conv((3, 3), padding="CIRCULAR") >> ka.Relu() >> ka.GlobalAvgPool(), "Conv: .*'CIRCULAR'"),
    (ka.Conv((2, 2), padding="SAME") >> ka.AvgPool((2, 2), padding="CIRCULAR") >> ka.GlobalAvgPool(),
     "AvgPool: .*'CIRCULAR'"),
    (ka.ConvLocal((2, 2), padding="CIRCULAR") >> ka.Flatten(), "ConvLocal: .*'CIRCULAR'"),
    (ka.Conv((2, 2), padding="SAME") >> ka.Relu(), "ends with a readout"),
    (ka.Conv((2, 2), strides=(2, 2)) >> ka.ConvTranspose((2, 2), strides=(2, 2), padding="CIRCULAR") >>
     ka.GlobalAvgPool(), "ConvTranspose: .*'CIRCULAR'"),
    (ka.Dense() >> ka.Relu(), "image and sequence networks"),
])
def test_unsupported_networks_are_refused_clearly(net: ka.Layer, match: str) -> None:
    x = np.random.default_rng(2).normal(size=(2, 5, 4, 2))
    if "networks" in match:
        x = x.reshape(2, -1)
    with pytest.raises(E.KernelalgError, match=match):
        ka.kernel(net, x, mask_constant=0.5)


@pytest.mark.parametrize("net, match", [
    (ka.Conv((3, 3), padding="CIRCULAR") >> ka.GlobalAvgPool(), "Conv: .*'CIRCULAR'"),
    (ka.Conv((2, 2)) >> ka.AvgPool((2, 2), padding="CIRCULAR") >> ka.GlobalAvgPool(), "AvgPool: .*'CIRCULAR'"),
])
def test_unsupported_twins_are_refused_clearly(net: ka.Layer, match: str) -> None:
    """The finite twin refuses what the kernel refuses (not a wrong-shaped mask further on)."""
    twin = ka.finite(net, 2)
    x = np.random.default_rng(2).normal(size=(2, 5, 4, 2))
    with pytest.raises(E.KernelalgError, match=match):
        twin.apply(twin.init(0, x.shape[1:]), x, mask_constant=0.5)


@pytest.mark.parametrize("filt, strides, padding", [((2, 3), (2, 1), "VALID"), ((3, 2), (2, 3), "SAME"),
                                                     ((1, 3), (3, 2), "VALID")])
def test_conv_transpose_mask_rule_of_kernel_and_twin_agree(filt: tuple, strides: tuple, padding: str) -> None:
    """ConvTranspose's mask rule (NT: a masked output is reached by a masked input): the kernel's (kernelalg's
    dilate/pad/window sums, NumPy backend) equals the twin's (jax.lax.conv_transpose with a filter of ones)."""
    rule = TconvMask(filt, strides, padding)
    m = (np.random.default_rng(7).random((3, 5, 4)) > 0.3).astype(float)
    got = rule(NUMPY_ARRAYS, m, 1)
    want = np.asarray(rule.finite(jnp.asarray(m)))
    assert got.shape == want.shape and 0 < want.sum() < want.size
    np.testing.assert_array_equal(got, want)


def test_no_valid_window_centre_is_refused_clearly() -> None:
    """An image whose only unmasked pixel is no stride-2 window centre has no position left for GlobalAvgPool:
    a clear error (neural-tangents gives NaN), not an overflow report."""
    x = np.random.default_rng(3).normal(size=(2, 5, 5, 2))
    x[0] = C_MASK
    x[0, 1, 1] = 0.3  # the centres of the 2x2 VALID windows with stride 2 are (0 or 2, 0 or 2)
    net = ka.Conv((2, 2), strides=(2, 2)) >> ka.Relu() >> ka.GlobalAvgPool()
    with pytest.raises(E.DivergentKernelError, match="no unmasked position left"):
        ka.kernel(net, x, mask_constant=C_MASK)


def test_bad_constant_and_fully_masked_image_are_refused() -> None:
    net = _mc_net()
    with pytest.raises(E.InputError, match="mask_constant must be a real number"):
        ka.kernel(net, IMG1, mask_constant="pad")
    x = IMG1.copy()
    x[1] = C_MASK
    with pytest.raises(E.InputError, match=r"x1\[1\] has every position masked"):
        ka.kernel(net, x, mask_constant=C_MASK)
