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


@pytest.mark.parametrize("name", [n for n in NT_NAMES if n != "spatial_out"])
@pytest.mark.parametrize("call", ["sym", "cross"])
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
    for name in ("strided_valid_erf_gap", "circular_1d_gap"):
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


def _brute_local(k, t, v1, v2, filt, w, b, ntk_param=True):
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
