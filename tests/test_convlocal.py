"""ConvLocal (locally connected layers, LCN): exact kernels against independent references.

* neural-tangents 0.6.5 ``stax.ConvLocal``: its kernels on small fixed inputs are stored in
  tests/data/nt_convlocal_reference.npz (made by benchmarks/make_nt_convlocal_reference.py in NT's own venv).
* Brute force: the matching-pixel kernel of an LCN with a Flatten readout by explicit loops over positions
  and filter taps (NumPy), for the entries where NT's float rounding at correlation 1 shows (see below).
* Monte Carlo over the finite-width twin (untied weights, ``jax.lax.conv_general_dilated_local``) with
  standard errors: one hidden nonlinearity, so the estimates are unbiased at every width.
* The CNN <-> LCN relations of docs/locally_connected.md (Novak et al. 2019): equal NNGP and NTK with a
  Flatten readout, different ones with global average pooling.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import kernelalg as ka

NT_REFERENCE = Path(__file__).resolve().parent / "data" / "nt_convlocal_reference.npz"
NT = np.load(NT_REFERENCE)
NT_NAMES = sorted({k.split(".")[0] for k in NT.files if not k.startswith("_")})


def _tup(v):
    return tuple(v) if isinstance(v, list) else v


def nt_net(name: str) -> ka.Layer:
    """The stored NT stax spec in kernelalg (NT's leading width argument is out_chan / out_dim)."""
    layers = []
    for layer, args, kw in json.loads(str(NT[f"{name}.spec"])):
        args, kw = [_tup(v) for v in args], {k: _tup(v) for k, v in kw.items()}
        if layer in ("Conv", "ConvLocal"):
            layers.append(getattr(ka, layer)(args[1], out_chan=args[0], **kw))
        elif layer == "Dense":
            layers.append(ka.Dense(out_dim=args[0], **kw))
        else:
            layers.append(getattr(ka, layer)(*args, **kw))
    return ka.serial(*layers)


def _self_pairs(shape: tuple, call: str) -> np.ndarray:
    """Mask of the entries K(x_i, x_i) (an input with itself: correlation exactly 1)."""
    mask = np.zeros(shape, bool)
    if call == "sym":
        np.fill_diagonal(mask, True)
    return mask


#: Flatten-readout cases with a Relu feeding a later layer: on the self pairs NT computes the arc-cosine dual at
#: a correlation rounded below 1 (arccos(1 - 1e-16) ~ 1.5e-8), off by up to 1e-8 relative; there the
#: brute force below is the reference (kernelalg evaluates an input with itself at correlation exactly 1).
NT_SELF_PAIR_ROUNDING = {"same_relu_flatten", "cnn_twin_relu_flatten"}


SLOW = pytest.mark.slow
#: (case, call) pairs run by default (1-D and 2-D, SAME/VALID/CIRCULAR, strides, Relu/Erf, Flatten/GAP, both
#: parameterizations, after Conv and AvgPool); the others (same code paths) with -m slow.
NT_DEFAULT = {("same_relu_flatten", "sym"), ("strided_valid_erf_gap", "cross"), ("circular_1d_gap", "sym"),
              ("standard_flatten", "cross"), ("mixed_conv_pool_gap", "cross")}


@pytest.mark.parametrize("name, call", [(n, c) if (n, c) in NT_DEFAULT else pytest.param(n, c, marks=SLOW)
                                        for n in NT_NAMES if n != "spatial_out" for c in ("sym", "cross")])
def test_matches_neural_tangents(name: str, call: str) -> None:
    """NNGP, NTK and the variances agree with neural-tangents 0.6.5 (float64) to 1e-10 relative."""
    x1, x2 = NT[f"{name}.x1"], NT[f"{name}.x2"]
    k = ka.kernel(nt_net(name), x1, x2 if call == "cross" else None)
    for field in ("nngp", "ntk", "cov1", "cov2"):
        key = f"{name}.{call}.{field}"
        if key not in NT.files:
            continue
        want, got = NT[key], np.asarray(getattr(k, field)).reshape(NT[key].shape)
        keep = np.ones(want.shape, bool)
        if field == "ntk" and name in NT_SELF_PAIR_ROUNDING:
            keep = ~_self_pairs(want.shape, call)
        np.testing.assert_allclose(got[keep], want[keep], rtol=1e-10, atol=1e-12, err_msg=f"{name} {call} {field}")


def test_spatial_output_matches_neural_tangents() -> None:
    """Without a readout NT returns only the matching-position entries after a ConvLocal (the others are 0 by
    construction); kernelalg keeps the full grid: its diagonal equals NT's, the rest is exactly 0."""
    x1, x2 = NT["spatial_out.x1"], NT["spatial_out.x2"]
    for call, b in (("sym", None), ("cross", x2)):
        k = ka.kernel(nt_net("spatial_out"), x1, b)
        for field in ("nngp", "ntk"):
            want = NT[f"spatial_out.{call}.{field}"]  # (N, M, 4, 1)
            got = np.asarray(getattr(k, field))  # (N, M, 4, 1, 4, 1)
            flat = got.reshape(got.shape[:2] + (4, 4))
            diag = np.diagonal(flat, axis1=2, axis2=3)
            np.testing.assert_allclose(diag.reshape(want.shape), want, rtol=1e-10, atol=1e-12)
            assert np.all(flat[..., ~np.eye(4, dtype=bool)] == 0.0)


def test_numpy_backend_matches_neural_tangents() -> None:
    """The NumPy reference backend (same program, other lowering) on the full pixel-pair grid."""
    for name in ("circular_1d_gap",):
        x1 = NT[f"{name}.x1"]
        got = ka.reference_kernel(nt_net(name), x1, None, get=("nngp", "ntk"))
        for field in ("nngp", "ntk"):
            np.testing.assert_allclose(np.asarray(getattr(got, field)), NT[f"{name}.sym.{field}"], rtol=1e-10,
                                       atol=1e-12)


# ------------------------------------------------------------------ brute force (matching pixels, Flatten)


def _relu(s11, s12, s22):
    """Arc-cosine (Relu) dual: E[relu(u) relu(v)] and E[relu'(u) relu'(v)] for a Gaussian pair."""
    norm = np.sqrt(s11 * s22)
    rho = np.clip(s12 / norm, -1.0, 1.0)
    th = np.arccos(rho)
    return norm * (np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi), (np.pi - th) / (2 * np.pi)


def _brute_local(k, t, v1, v2, filt, w, b):
    """One ConvLocal (SAME, stride 1, 2-D) on matching-pixel maps (H, W) by loops over positions and taps."""
    h, wd = k.shape
    out = [np.zeros_like(k) for _ in range(4)]
    lo = [(f - 1) // 2 for f in filt]
    for i in range(h):
        for j in range(wd):
            for a in range(filt[0]):
                for c in range(filt[1]):
                    p, q = i + a - lo[0], j + c - lo[1]
                    if 0 <= p < h and 0 <= q < wd:
                        for o, src in zip(out, (k, t, v1, v2)):
                            o[i, j] += src[p, q] / math.prod(filt)
    nk = w**2 * out[0] + b**2
    return nk, nk + w**2 * out[1], w**2 * out[2] + b**2, w**2 * out[3] + b**2


def test_brute_force_self_pairs() -> None:
    """same_relu_flatten on every pair, by explicit loops (the reference of the self pairs NT rounds)."""
    x1 = NT["same_relu_flatten.x1"]
    k = ka.kernel(nt_net("same_relu_flatten"), x1)
    spec = json.loads(str(NT["same_relu_flatten.spec"]))
    convs = [(tuple(a[1]), kw["W_std"], kw["b_std"]) for n, a, kw in spec if n == "ConvLocal"]
    dense = spec[-1][2]
    for i in range(len(x1)):
        for j in range(len(x1)):
            a, bb = x1[i], x1[j]
            kk = (a * bb).sum(-1) / a.shape[-1]
            v1, v2 = (a * a).sum(-1) / a.shape[-1], (bb * bb).sum(-1) / a.shape[-1]
            t = np.zeros_like(kk)
            for n, (filt, w, b) in enumerate(convs):
                kk, t, v1, v2 = _brute_local(kk, t, v1, v2, filt, w, b)
                if i == j:
                    kk = v1  # an input with itself: the same numbers (correlation exactly 1)
                tk, tdot = _relu(v1, kk, v2)
                t, kk = t * tdot, tk
                v1, v2 = _relu(v1, v1, v1)[0], _relu(v2, v2, v2)[0]
            wd, bd = dense["W_std"], dense["b_std"]
            nngp = wd**2 * kk.mean() + bd**2
            ntk = nngp + wd**2 * t.mean()
            assert np.isclose(float(k.nngp[i, j]), nngp, rtol=1e-13, atol=0)
            assert np.isclose(float(k.ntk[i, j]), ntk, rtol=1e-13, atol=0)


# ------------------------------------------------------------------ Monte Carlo and the CNN <-> LCN relations


V_STD, V_BIAS = 1.1, 0.1


def _pair(readout: ka.Layer | None) -> tuple[ka.Layer, ka.Layer]:
    """An LCN with one hidden nonlinearity and its CNN twin (same filters, strides, padding, W_std, b_std),
    ending in ``readout`` and a Dense readout (``readout`` None: the bodies alone, without either)."""
    def net(layer):
        body = ka.serial(layer((2, 2), (1, 1), "SAME", W_std=1.3, b_std=0.2), ka.Relu(),
                         layer((2, 2), (2, 1), "VALID", W_std=1.2, b_std=0.1))
        return body if readout is None else body >> readout >> ka.Dense(V_STD, V_BIAS)
    return net(ka.ConvLocal), net(ka.Conv)


MC_X = np.random.default_rng(3).standard_normal((3, 4, 3, 2))
MC_POSITIONS = 2 * 2  # output positions of the bodies: 4 x 3 -> SAME 4 x 3 -> VALID, stride (2, 1): 2 x 2
#: |z| bound of every entry (6 pairs i <= j per kernel; calibration runs: max |z| 2.4).
Z_MAX = 4.5


def _mc(lcn: ka.Layer, width: int, seed: int, get: str) -> ka.MonteCarlo:
    """Fixed-seed Monte Carlo of the finite LCN (128 draws)."""
    return ka.monte_carlo(lcn, MC_X.astype(np.float32), width=width, samples=128, key=seed, get=get)


def _check_spread(mcs: list, field: str) -> None:
    """The spread of the draws shrinks like 1/sqrt(width): mean standard error ratio of widths 8 and 32 near 2."""
    iu = np.triu_indices(len(MC_X))
    ratio = getattr(mcs[0].stderr, field)[iu].mean() / getattr(mcs[1].stderr, field)[iu].mean()
    assert 1.4 < ratio < 2.9, (field, ratio)


@pytest.mark.parametrize("get", ["nngp", pytest.param("ntk", marks=SLOW)])
def test_monte_carlo_finite_lcn_gap(get: str) -> None:
    """The finite LCN (untied weights per position) samples the LCN kernel; one hidden nonlinearity, so the
    means are unbiased at every width (Rao-Blackwellized NNGP over the Dense readout at widths 8 and 32, spread
    halving; the empirical NTK J J^T at width 16 with -m slow: its sampler compiles for ~15 s of CPU; measured
    max |z| 1.67 against both NTKs below, 25 to 81 against the CNN's).

    Global average pooling right after the last ConvLocal averages P matching pairs and P^2 - P zeros, so the
    same draws sample the CNN twin's *Flatten* kernel of the bodies divided by P (docs/locally_connected.md):
    NNGP = V^2 K_flat/P + B^2 and NTK = that + V^2 Theta_flat/P, from the CNN's kernel code alone. The CNN's own
    GAP kernel is tens of standard errors away."""
    lcn, cnn = _pair(ka.GlobalAvgPool())
    kl, kc = ka.kernel(lcn, MC_X), ka.kernel(cnn, MC_X)
    flat = ka.kernel(_pair(None)[1] >> ka.Flatten(), MC_X)  # the CNN body's Flatten kernel (no readout)
    via_cnn = {"nngp": V_STD**2 * np.asarray(flat.nngp) / MC_POSITIONS + V_BIAS**2}
    via_cnn["ntk"] = via_cnn["nngp"] + V_STD**2 * np.asarray(flat.ntk) / MC_POSITIONS
    iu = np.triu_indices(len(MC_X))
    runs = [_mc(lcn, 8, 11, "nngp"), _mc(lcn, 32, 12, "nngp")] if get == "nngp" else [_mc(lcn, 16, 13, "ntk")]
    field = get
    for mc in runs:
        for exact in (np.asarray(getattr(kl, field)), via_cnn[field]):
            z = mc.z(exact, field)[iu]
            assert np.all(np.abs(z) < Z_MAX), (mc.width, field, z)
        zc = mc.z(np.asarray(getattr(kc, field)), field)[iu]
        assert np.max(np.abs(zc)) > 20, (mc.width, field, zc)
    if get == "nngp":
        _check_spread(runs, "nngp")


@SLOW
def test_monte_carlo_finite_lcn_flatten() -> None:
    """Flatten readout (slow: the empirical NTK's sampler compiles for long): the finite LCN samples the CNN
    twin's kernel, NNGP and NTK (Novak et al. 2019), at widths 8 and 32; the spread halves."""
    lcn, cnn = _pair(ka.Flatten())
    kc = ka.kernel(cnn, MC_X)
    iu = np.triu_indices(len(MC_X))
    mcs = [ka.monte_carlo(lcn, MC_X.astype(np.float32), width=n, samples=128, key=s) for n, s in ((8, 11), (32, 12))]
    for mc in mcs:
        for field in ("nngp", "ntk"):
            z = mc.z(np.asarray(getattr(kc, field)), field)[iu]
            assert np.all(np.abs(z) < Z_MAX), (mc.width, field, z)
    _check_spread(mcs, "nngp")
    _check_spread(mcs, "ntk")


@SLOW
def test_asymmetric_local_after_conv_monte_carlo() -> None:
    """After a shared Conv on the full grid NT 0.6.5 applies ConvLocal's filter_shape/strides to transposed axes
    (docs/locally_connected.md); kernelalg follows the layer: the finite twin samples its kernel, not the
    transposed layer's (the same network on transposed images). One nonlinearity: unbiased; fixed seed."""
    x = np.random.default_rng(0).standard_normal((3, 5, 4, 2))
    net = ka.serial(ka.Conv((3, 3), padding="SAME", W_std=1.3, b_std=0.2), ka.Relu(),
                    ka.ConvLocal((3, 2), (1, 2), "SAME", W_std=1.3, b_std=0.2), ka.GlobalAvgPool(),
                    ka.Dense(V_STD, V_BIAS))
    mc = ka.monte_carlo(net, x.astype(np.float32), width=64, samples=256, key=3, get="nngp")
    assert np.all(np.abs(mc.z(np.asarray(ka.kernel(net, x).nngp), "nngp")) < Z_MAX)
    transposed = np.asarray(ka.kernel(net, np.swapaxes(x, 1, 2)).nngp)
    assert np.min(np.abs(mc.z(transposed, "nngp"))) > 5


CASES = {  # Flatten readouts: matching pixels only, so LCN and CNN kernels agree
    "strided": lambda L: ka.serial(L((3, 2), (2, 1), "SAME", W_std=1.4, b_std=0.3), ka.Erf(),
                                   L((2, 2), padding="CIRCULAR", W_std=1.1), ka.Relu(), ka.Flatten(), ka.Dense(1.2, 0.1)),
    "standard_1d": lambda L: ka.serial(L((3,), padding="VALID", parameterization="standard", W_std=1.2, b_std=0.2,
                                         out_chan=6), ka.Relu(), L((2,), (2,), "SAME", parameterization="standard",
                                                                   out_chan=5), ka.Relu(), ka.Flatten()),
}


@pytest.mark.parametrize("name", ["strided", pytest.param("standard_1d", marks=SLOW)])
def test_cnn_and_lcn_agree_with_flatten(name: str) -> None:
    """Novak et al. (2019): without pooling the CNN and its LCN twin have the same NNGP, and (derived in
    docs/locally_connected.md) the same NTK. Exact kernels of both, against NT's stored LCN in the next test."""
    x = np.random.default_rng(5).standard_normal((3, 6, 5, 2) if name == "strided" else (3, 7, 2))
    kc, kl = ka.kernel(CASES[name](ka.Conv), x), ka.kernel(CASES[name](ka.ConvLocal), x)
    np.testing.assert_allclose(np.asarray(kl.nngp), np.asarray(kc.nngp), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(kl.ntk), np.asarray(kc.ntk), rtol=1e-12)


def test_gap_after_lcn_is_flatten_over_positions() -> None:
    """After a ConvLocal the covariance of different output positions is 0, so global average pooling right after
    it keeps only the P matching pairs of the P^2 it averages: K_GAP = K_Flatten / P (NNGP and NTK) for the LCN,
    not for the CNN (its off-diagonal pixel pairs do not vanish)."""
    for body, equal in zip(_pair(None), (True, False)):
        gap, flat = ka.kernel(body >> ka.GlobalAvgPool(), MC_X), ka.kernel(body >> ka.Flatten(), MC_X)
        for field in ("nngp", "ntk"):
            a, b = np.asarray(getattr(gap, field)), np.asarray(getattr(flat, field)) / MC_POSITIONS
            assert np.allclose(a, b, rtol=1e-12) == equal, (equal, field, a, b)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("net, x, match", [
    (ka.ConvLocal((3, 3)) >> ka.Flatten(), np.ones((2, 5)), "must be a 4-D array"),
    (ka.Dense() >> ka.Relu() >> ka.ConvLocal((2,)) >> ka.Flatten(), np.ones((2, 5)), "must be a 3-D array"),
    (ka.Flatten() >> ka.ConvLocal((3, 3)), np.ones((2, 4, 4, 1)), "ConvLocal needs inputs with spatial axes"),
    (ka.ConvLocal((2, 2)) >> ka.Relu() >> ka.ConvLocal((2, 2), parameterization="standard") >> ka.Flatten(),
     np.ones((2, 4, 4, 1)), "Fix: give the previous Conv/ConvLocal/Dense out_chan"),
    (ka.ConvLocal((5, 2)) >> ka.Flatten(), np.ones((2, 4, 4, 1)), "does not fit the 4 pixels"),
    (ka.ConvLocal((2, 2)) >> ka.Relu() >> ka.ConvLocal((2,)) >> ka.Flatten(), np.ones((2, 4, 4, 1)),
     "filter_shape has 1 spatial dimension"),
])
def test_misuse_errors(net: ka.Layer, x: np.ndarray, match: str) -> None:
    with pytest.raises(ka.KernelalgError, match=match):
        ka.kernel(net, x)


def test_argument_and_twin_errors() -> None:
    with pytest.raises(ka.KernelalgError, match="padding must be one of"):
        ka.ConvLocal((3, 3), padding="FULL")
    with pytest.raises(ka.KernelalgError, match="different lengths"):
        ka.ConvLocal((3, 3), strides=(1,))
    with pytest.raises(ka.KernelalgError, match="out_chan must be a positive integer"):
        ka.ConvLocal((3, 3), out_chan=0)
    with pytest.raises(ka.KernelalgError, match="does not fit this network"):
        ka.finite(ka.ConvLocal((2,)) >> ka.Flatten(), 4).init(0, (5,))


def test_float32_and_parse() -> None:
    """float32 inputs give NT's float64 kernel to float32 accuracy (full grid: GAP); the parser knows ConvLocal."""
    x1 = NT["circular_1d_gap.x1"].astype(np.float32)
    k = ka.kernel(nt_net("circular_1d_gap"), x1)
    assert np.asarray(k.ntk).dtype == np.float32
    for field in ("nngp", "ntk"):
        np.testing.assert_allclose(np.asarray(getattr(k, field)), NT[f"circular_1d_gap.sym.{field}"], rtol=2e-5)
    parsed = ka.parse("ConvLocal((2, 2), (1, 1), 'SAME', W_std=1.3, b_std=0.2, out_chan=4)").leaves()[0]
    made = ka.ConvLocal((2, 2), (1, 1), "SAME", W_std=1.3, b_std=0.2, out_chan=4)
    assert (parsed.kernel, parsed.params, parsed.static) == (made.kernel, made.params, made.static)
