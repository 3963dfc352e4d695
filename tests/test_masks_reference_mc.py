"""Masked inputs beyond the compiled kernel (issue #17): ``ka.reference_kernel``, ``ka.monte_carlo``,
``ka.verify`` and ``ka.empirical_ntk`` with ``mask_constant=c`` (neural-tangents' ``mask_constant``).

Expected values are independent of the code under test:

* neural-tangents 0.6.5 itself: the kernels stored in tests/data/nt_masks_reference.npz by
  benchmarks/make_nt_masks_reference.py (images and ka.Graphs, NNGP and NTK, x2 = None and x2 given); the
  NumPy reference backend must agree with them and with the compiled kernel to 1e-10 relative.
* Monte Carlo over finite twins: networks with a single nonlinearity whose pre-activations are exactly
  Gaussian at any width, so the MC means equal the exact masked kernels; z-scores against the standard
  errors (fixed seeds), |z| <= Z_MAX = 5 per entry (chance failure below 1e-5 over the entries here), and a
  power check: the same estimate is more than Z_MAX standard errors from the kernel computed WITHOUT masks.
* The empirical NTK of a masked twin against the Jacobians of the same network written here with jax.lax
  (masked pixels zeroed before the conv, the mean over valid pixels), same weights, to 1e-10.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernelalg as ka
from _nt_masks import MASK_CASES, NT_MASKS, mask_inputs, mask_net
from kernelalg.core import _errors as E


@pytest.fixture(autouse=True, scope="module")
def _float64():
    """float64 for this module only (a global switch would change every test collected after it)."""
    with jax.enable_x64(True):
        yield


NT, CASES, _nt_net, _nt_inputs = NT_MASKS, MASK_CASES, mask_net, mask_inputs
FAST = ("conv_gap", "dense_seq_gsp", "graph_relu_gap")  # the others (Flatten, NaN constant, arcs) under -m slow
Z_MAX = 5.0
C_MASK = -1.0


# --------------------------------------------------------------------------------------- reference backend


@pytest.mark.parametrize("case", [c if c in FAST else pytest.param(c, marks=pytest.mark.slow) for c in CASES])
def test_reference_agrees_with_neural_tangents_and_compiled(case: str) -> None:
    net = _nt_net(case)
    (x1, x2), c = _nt_inputs(case), float(NT[f"{case}.c"])
    jit = ka.kernel(net, x1, x2, mask_constant=c)  # the cross call only: one compilation per case
    for call, b in (("sym", None), ("cross", x2)):
        ref = ka.reference_kernel(net, x1, b, get=("nngp", "ntk"), mask_constant=c)
        for field in ("nngp", "ntk"):
            got, want = np.asarray(getattr(ref, field)), NT[f"{case}.{call}.{field}"]
            tol = dict(rtol=1e-10, atol=1e-12 * np.abs(want).max(), err_msg=f"{case} {call} {field}")
            np.testing.assert_allclose(got, want, **tol)
            if b is not None:
                np.testing.assert_allclose(got, np.asarray(getattr(jit, field)), **tol)


def test_reference_single_kernel_params_and_numpy_compile() -> None:
    """get='ntk' gives the array; hyperparameter overrides use the network's names (doubling the readout's W_std
    of dense_seq_gsp (1.1, b_std 0.2) maps NT's NNGP K to 4 (K - 0.04) + 0.04); ka.compile(backend='numpy')
    takes mask_constant in its call as well."""
    net = _nt_net("dense_seq_gsp")
    x1, c = NT["dense_seq_gsp.x1"], float(NT["dense_seq_gsp.c"])
    ntk = ka.reference_kernel(net, x1, mask_constant=c)
    np.testing.assert_allclose(ntk, NT["dense_seq_gsp.sym.ntk"], rtol=1e-10)
    f = ka.compile(net, "nngp", backend="numpy")
    got = f(x1, params={"sigma_w_6": 2.2}, mask_constant=c)
    np.testing.assert_allclose(got, 4.0 * (NT["dense_seq_gsp.sym.nngp"] - 0.04) + 0.04, rtol=1e-10)


def test_reference_refusals() -> None:
    net = _nt_net("conv_gap")
    x1 = NT["conv_gap.x1"]
    with pytest.raises(E.LoweringError, match="dps=None"):
        ka.reference_kernel(net, x1, dps=30, mask_constant=-1.0)
    with pytest.raises(E.InputError, match="image networks .* graph networks"):
        ka.reference_kernel(ka.Dense() >> ka.Relu(), np.ones((2, 3)), mask_constant=0.5)
    with pytest.raises(E.InputError, match="mask_constant must be a real number"):
        ka.reference_kernel(net, x1, mask_constant="pad")


# ------------------------------------------------------------------------------------------------ Monte Carlo

IMG1 = np.random.default_rng(21).normal(size=(2, 4, 3, 2))
IMG2 = np.random.default_rng(22).normal(size=(2, 4, 3, 2))
IMG1[0, 2:] = C_MASK  # two rows masked
IMG2[1, :, 0] = C_MASK  # a column masked
IMG2[0, 1, 1, 0] = C_MASK  # one entry zeroed, its pixel stays valid
W1, B1, W2, B2 = 1.3, 0.2, 1.2, 0.1


@functools.lru_cache(maxsize=None)
def _conv_net() -> ka.Layer:
    """One nonlinearity: its pre-activations are exactly Gaussian, so MC is unbiased at any width."""
    return ka.Conv((2, 2), padding="SAME", W_std=W1, b_std=B1) >> ka.Relu() >> ka.GlobalAvgPool() >> ka.Dense(W2, B2)


@functools.lru_cache(maxsize=None)
def _graph_case() -> tuple:
    net = ka.Aggregate() >> ka.Dense(1.3, 0.2) >> ka.Relu() >> ka.Aggregate() >> ka.GlobalAvgPool() >> ka.Dense(1.1, 0.1)
    rng = np.random.default_rng(5)
    x, a = rng.normal(size=(3, 5, 3)), np.maximum((rng.random((3, 5, 5)) < 0.4).astype(float), np.eye(5))
    x[1, 3:] = C_MASK  # graph 1 has 3 nodes, graph 2 has 4; the padding nodes keep their arcs
    x[2, 4:] = C_MASK
    plain = ka.Graphs(np.where(x == C_MASK, 0.0, x), a)
    return net, ka.Graphs(x, a), plain


def _check_mc(mc: ka.MonteCarlo, exact: ka.Kernel, unmasked: ka.Kernel, names: tuple = ("nngp", "ntk")) -> None:
    power = 0.0
    for name in names:
        z = mc.z(getattr(exact, name), name)
        print(name, "z", np.round(z.ravel(), 2))
        assert np.all(np.abs(z) <= Z_MAX), (name, z)
        power = max(power, float(np.max(np.abs(mc.z(getattr(unmasked, name), name)))))
    print("largest |z| against the kernel without masks", round(power, 1))
    assert power > Z_MAX


def test_monte_carlo_masked_images() -> None:
    """8 z-scores (2 x 2 entries x 2 kernels), width 8, 256 networks."""
    net = _conv_net()
    mc = ka.monte_carlo(net, IMG1, IMG2, width=8, samples=256, key=3, mask_constant=C_MASK)
    exact = ka.kernel(net, IMG1, IMG2, mask_constant=C_MASK)
    unmasked = ka.kernel(net, np.where(IMG1 == C_MASK, 0.0, IMG1), np.where(IMG2 == C_MASK, 0.0, IMG2))
    _check_mc(mc, exact, unmasked)


@pytest.mark.parametrize("get", ["nngp", pytest.param(("nngp", "ntk"), marks=pytest.mark.slow)])
def test_monte_carlo_masked_graphs(get: str | tuple) -> None:
    """9 z-scores per kernel (3 x 3 graphs; Aggregate reads padding nodes as zero, GlobalAvgPool averages the
    valid nodes), width 8, 256 networks; the NTK (a longer compilation) under -m slow."""
    net, g, plain = _graph_case()
    names = (get,) if isinstance(get, str) else get
    mc = ka.monte_carlo(net, g, width=8, samples=256, key=4, get=get, mask_constant=C_MASK)
    _check_mc(mc, ka.kernel(net, g, None, names, mask_constant=C_MASK), ka.kernel(net, plain, None, names), names)


def test_convergence_masked_graphs() -> None:
    """ka.convergence with mask_constant: its exact kernel is the masked one and the mean at each width is within
    Z_MAX standard errors of it (NNGP: one nonlinearity, unbiased at any width), 2 x 9 z-scores."""
    net, g, _ = _graph_case()
    res = ka.convergence(net, g, widths=(8, 16), samples=256, key=6, get="nngp", mask_constant=C_MASK)
    exact = np.asarray(ka.kernel(net, g, None, "nngp", mask_constant=C_MASK))
    np.testing.assert_allclose(res.exact["nngp"], exact, rtol=1e-12)
    for est in res.estimates:
        z = est.z(exact, "nngp")
        print("width", est.width, "z", np.round(z.ravel(), 2))
        assert np.all(np.abs(z) <= Z_MAX), (est.width, z)


def test_verify_masked_and_its_power() -> None:
    """ka.verify with mask_constant passes (the same draws as test_monte_carlo_masked_images: one width) and fails
    when handed the kernel without masks as the exact one."""
    net = _conv_net()
    kw = dict(widths=(8,), samples=256, key=3, directions=0, mask_constant=C_MASK)
    ok = ka.verify(net, IMG1, IMG2, **kw)
    assert ok.passed, ok.summary()
    unmasked = ka.kernel(net, np.where(IMG1 == C_MASK, 0.0, IMG1), np.where(IMG2 == C_MASK, 0.0, IMG2))
    assert not ka.verify(net, IMG1, IMG2, exact=unmasked, **kw).passed


def _by_hand(params: dict, x: jax.Array, width: int) -> jax.Array:
    """The masked network written here: masked entries and pixels zeroed before the conv, mean over valid pixels."""
    hit = x == C_MASK
    valid = (~jnp.all(hit, axis=-1)).astype(x.dtype)[..., None]
    x = jnp.where(hit, 0.0, x)
    h = jax.lax.conv_general_dilated(x, params["w1"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = W1 / np.sqrt(2 * 2 * x.shape[-1]) * h + B1 * params["b1"]
    g = jnp.sum(jax.nn.relu(h) * valid, axis=(1, 2)) / jnp.sum(valid, axis=(1, 2))
    return W2 / np.sqrt(width) * g @ params["w2"] + B2 * params["b2"]


def test_empirical_ntk_of_masked_twin_is_the_hand_written_network() -> None:
    width = 5
    twin = ka.finite(_conv_net(), width)
    p = twin.init(1, IMG1.shape[1:])
    hand = {"w1": p[0]["W"], "b1": p[0]["b"], "w2": p[3]["W"], "b2": p[3]["b"]}
    jac = jax.jit(jax.jacrev(lambda q, x: _by_hand(q, x, width)[:, 0]))
    j = jac(hand, jnp.asarray(np.concatenate([IMG1, IMG2])))
    want = sum((a := np.asarray(j[k]).reshape(len(IMG1) + len(IMG2), -1))[:len(IMG1)] @ a[len(IMG1):].T for k in hand)
    got = ka.empirical_ntk(twin.apply, p, IMG1, IMG2, mask_constant=C_MASK)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10)
    plain = ka.empirical_ntk(twin.apply, p, IMG1, IMG2)  # the mask matters
    assert not np.allclose(np.asarray(plain), want, rtol=1e-3)


def test_monte_carlo_refusals_name_the_fix() -> None:
    """Unsupported combinations are refused before any network is sampled, as ka.kernel refuses them."""
    circular = ka.Conv((2, 2), padding="CIRCULAR") >> ka.Relu() >> ka.GlobalAvgPool() >> ka.Dense()
    with pytest.raises(E.KernelalgError, match="CIRCULAR"):
        ka.monte_carlo(circular, IMG1, width=4, samples=2, mask_constant=C_MASK)
    with pytest.raises(E.InputError, match="image networks .* graph networks"):
        ka.monte_carlo(ka.Dense() >> ka.Relu() >> ka.Dense(), np.ones((2, 3)), width=4, samples=2, mask_constant=1.0)
    with pytest.raises(E.InputError, match=r"x1\[0\] has every position masked"):
        ka.monte_carlo(_conv_net(), np.full((1, 2, 2, 2), C_MASK), width=4, samples=2, mask_constant=C_MASK)
    with pytest.raises(E.InputError, match="twin.apply"):
        ka.empirical_ntk(lambda p, x: x.sum(axis=(1, 2)), {}, IMG1, mask_constant=C_MASK)
