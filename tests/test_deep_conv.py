"""Deep CNNs: repeated [Conv, activation] blocks as one loop, the chunked matching-pixel (Flatten) and full-grid
(GlobalAvgPool) paths, the exact symmetric half of the image pairs, layer templates, float32.

Expected values are independent of the code under test:

* neural-tangents 0.6.5's kernels of deep networks, stored in tests/data/nt_conv_reference.npz (cases deep_*,
  made by benchmarks/make_nt_conv_reference.py in NT's own venv): 6 x [Conv, Relu] + Flatten + Dense, 5 x [Conv,
  Erf] + GlobalAvgPool, NT's README "Performance" CNN in small (8 x [Conv, Relu] + Flatten, W_std 1, no bias),
  4 x [Conv VALID, Relu] + Flatten (a state that shrinks: no loop). NT computes the arc-cosine angle as
  atan2(sqrt(s11 s22 - s12^2), s12), which loses ~1e-10 relative on pairs of an image with itself (correlation
  1) after a few ReLU layers, so there the NTK is held to its closed form instead: at correlation 1 the ReLU
  recursion is linear (T = s/2, Tdot = 1/2), a window mean of the per-pixel diagonal (:func:`self_ntk`);
* the brute-force pixel-pair recursion of tests/test_conv.py (theory.md, Arora et al. 2019);
* mpmath at 30 digits and the program built without layer templates (the plain symbolic trace).

The NumPy reference backend evaluates the same programs layer by layer (no loop) and is held to the same values.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from jax.extend.core import ClosedJaxpr, Jaxpr

import kernelalg as ka
from kernelalg.core import _layer
from kernelalg.layers.spatial import _inputs as SI
from kernelalg.layers.spatial._pairs import half_pairs
from test_conv import NETS, NT, SLOW, _images, _same_pads, assert_nt, build, nt_expected, nt_net, reference

DEEP = sorted({k.split(".")[0] for k in NT.files if k.startswith("deep_")})
RELU_CASES = {"deep_flatten", "deep_readme_flatten", "deep_valid_flatten"}


def _box(s: np.ndarray, filt: tuple, padding: str) -> np.ndarray:
    """Window mean over the last two axes (stride 1): the conv stencil on the matching-pixel diagonal."""
    (fh, fw), (h, w) = filt, s.shape[-2:]
    if padding == "SAME":
        (lo_h, oh), (lo_w, ow) = _same_pads(h, fh, 1), _same_pads(w, fw, 1)
    else:
        lo_h, oh, lo_w, ow = 0, h - fh + 1, 0, w - fw + 1
    pad = np.zeros(s.shape[:-2] + (oh + fh - 1, ow + fw - 1))
    pad[..., lo_h:lo_h + h, lo_w:lo_w + w] = s[..., :oh + fh - 1 - lo_h, :ow + fw - 1 - lo_w]
    return sum(pad[..., a:a + oh, c:c + ow] for a in range(fh) for c in range(fw)) / (fh * fw)


def self_ntk(name: str, x: np.ndarray) -> np.ndarray:
    """NTK(x, x) of a stored [Conv, Relu] x L + Flatten (+ Dense) case in closed form: at correlation 1 the
    per-pixel ReLU dual is linear (T(s, s, s) = s / 2, Tdot = 1 / 2), so only the per-pixel variances and NTKs
    of each image are needed (theory.md, "Convolutional NTK"; NT_NOTES.md part (e) for Conv and Flatten)."""
    import json
    s = (x * x).sum(-1) / x.shape[-1]
    t = np.zeros_like(s)
    for layer, args, kw in json.loads(str(NT[f"{name}.spec"])):
        w2, b2 = kw.get("W_std", 1.0) ** 2, (kw.get("b_std") or 0.0) ** 2
        if layer == "Conv":
            s, t = w2 * _box(s, tuple(args[1]), kw["padding"]) + b2, _box(t, tuple(args[1]), kw["padding"])
            t = s + w2 * t
        elif layer == "Relu":
            s, t = s / 2, t / 2
        elif layer == "Flatten":
            s, t = s.mean((-2, -1)), t.mean((-2, -1))
        else:  # Dense
            s = w2 * s + b2
            t = s + w2 * t
    return t


def _check_nt(k: ka.Kernel, name: str, call: str) -> None:
    if call == "cross" or name not in RELU_CASES:
        assert_nt(k, name, call)
        return
    x = NT[f"{name}.x1"]
    for field in ("nngp", "ntk", "cov1"):
        want, got = nt_expected(name, call, field), np.asarray(getattr(k, field))
        if field != "cov1":  # NT's self pairs lose ~1e-10 (see the module docstring): off the diagonal only
            off = ~np.eye(len(x), dtype=bool)
            want, got = want[off], got[off]
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=f"{name} {field}")
    np.testing.assert_allclose(np.diagonal(np.asarray(k.ntk)), self_ntk(name, x), rtol=1e-12)
    np.testing.assert_allclose(np.diagonal(np.asarray(k.nngp)), k.cov1, rtol=1e-14)


@pytest.mark.parametrize("name, call", [(n, c) for n in DEEP for c in ("sym", "cross")])
def test_deep_cnn_matches_neural_tangents(name: str, call: str) -> None:
    """Repeated [Conv, activation] blocks (one lax.scan inside the chunked readout) against NT 0.6.5."""
    x1, x2 = NT[f"{name}.x1"], NT[f"{name}.x2"]
    _check_nt(ka.kernel(nt_net(name), x1, x2 if call == "cross" else None), name, call)


@pytest.mark.parametrize("name", [n if n in ("deep_flatten", "deep_gap") else pytest.param(n, marks=SLOW)
                                  for n in DEEP])
def test_deep_cnn_reference_backend_matches_neural_tangents(name: str) -> None:
    f = ka.compile(nt_net(name), backend="numpy")
    x1, x2 = NT[f"{name}.x1"], NT[f"{name}.x2"]
    _check_nt(f(x1, None), name, "sym")
    _check_nt(f(x1, x2), name, "cross")


# ------------------------------------------------------------------ the traced program does not grow with depth


def _eqns(jaxpr: Jaxpr) -> int:
    n = 0
    for e in jaxpr.eqns:
        n += 1
        for v in e.params.values():
            for sub in (v if isinstance(v, (list, tuple)) else [v]):
                if isinstance(sub, (ClosedJaxpr, Jaxpr)):
                    n += _eqns(sub.jaxpr if isinstance(sub, ClosedJaxpr) else sub)
    return n


def _cnn(depth: int, readout: ka.Layer) -> ka.Layer:
    return ka.serial(*[layer for _ in range(depth) for layer in (ka.Conv((3, 3), padding="SAME", W_std=1.4,
                                                                         b_std=0.1), ka.Relu())], readout)


def _program_size(net: ka.Layer, x: np.ndarray) -> int:
    f = ka.compile(net, get="ntk")
    params = {k: jnp.asarray(v) for k, v in f.params.items()}
    return _eqns(jax.make_jaxpr(f._jitted)(jnp.asarray(x), None, params).jaxpr)


@pytest.mark.parametrize("readout, chunked", [(ka.Flatten, True), (ka.GlobalAvgPool, True),
                                              pytest.param(ka.GlobalAvgPool, False, marks=SLOW)])
def test_deep_cnn_program_size_is_independent_of_depth(readout, chunked: bool,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """[Conv, Relu] x L: the jitted program (all nested jaxprs) has the same size at depth 4 and 9, for the
    matching-pixel and the full-grid chunked readouts and for the batch layout (no chunks)."""
    if not chunked:
        orig = SI.plan
        monkeypatch.setattr(SI, "plan", lambda net, ndim: dataclasses.replace(orig(net, ndim), chunked=False))
    x = _images((4, 3, 2), 2, 3)
    assert _program_size(_cnn(4, readout()), x) == _program_size(_cnn(9, readout()), x)


# ------------------------------------------------------------------ pairs, templates, float32


@pytest.mark.parametrize("n", range(1, 10))
def test_half_pairs_enumerates_each_unordered_pair_once(n: int) -> None:
    rows, cols = half_pairs(n)
    assert sorted(tuple(sorted(p)) for p in zip(rows.tolist(), cols.tolist())) == list(
        itertools.combinations(range(n), 2))


@pytest.mark.parametrize("name", ["same_relu_gap", "strided_flatten"])
def test_even_batch_symmetric_half_matches_brute_force(name: str) -> None:
    """x2 = None with an even number of images, whose last cyclic offset (N/2) covers half a row of pairs."""
    ops = NETS[name]
    x = _images((4, 3, 2), 4, 5)
    k = ka.kernel(build(ops), x)
    rk, rt = reference(ops, x)
    np.testing.assert_allclose(k.nngp, rk, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(k.ntk, rt, rtol=1e-12, atol=1e-13)


def _mixed(depth: int) -> ka.Layer:
    layers = []
    for i in range(depth):
        layers += [ka.Dense(1.2 + 0.1 * i, 0.05), ka.Relu(), ka.Dense(0.9, 0.1), ka.Erf(), ka.Dense(1.1),
                   ka.LeakyRelu(0.1 * (i + 1))]
    return ka.serial(*layers, ka.Dense(1.3, 0.2))


def test_layer_templates_replay_the_plain_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replayed layers (renamed copies of a recorded block) give the kernel of the plain symbolic trace; with
    hyperparameters as numbers (keep_symbols=False, the mpmath route) a layer with other values is not replayed."""
    x = np.random.default_rng(4).normal(size=(3, 5))
    replays = []
    real = _layer.replay
    monkeypatch.setattr(_layer, "replay", lambda *a: replays.append(real(*a)) or replays[-1])
    net = _mixed(3)
    got = ka.reference_kernel(net, x, get=("nngp", "ntk"))
    got_mp = ka.reference_kernel(_mixed(3), x, get="ntk", dps=30)
    assert sum(r is not None for r in replays) >= 8
    monkeypatch.setattr(_layer, "signature", lambda *a: None)
    plain = ka.reference_kernel(_mixed(3), x, get=("nngp", "ntk"))
    plain_mp = ka.reference_kernel(_mixed(3), x, get="ntk", dps=30)
    np.testing.assert_allclose(got.nngp, plain.nngp, rtol=1e-13)
    np.testing.assert_allclose(got.ntk, plain.ntk, rtol=1e-13)
    np.testing.assert_allclose(got_mp, plain_mp, rtol=1e-15)


def test_float32_arc_sine_polynomial_accuracy() -> None:
    """The 5-coefficient float32 polynomial behind arccos/arcsin: within 1.5 / 2.5 ulps of mpmath (the float32
    range reduction, sqrt((1 - |x|) / 2), rounds once more)."""
    from kernelalg.backends._jax import fast_arccos, fast_arcsin
    xs = np.concatenate([np.linspace(-1, 1, 8001), 1 - np.logspace(-7, 0, 200), -1 + np.logspace(-7, 0, 200),
                         [0.5, -0.5, 0.0]]).astype(np.float32)
    for fn, ref_fn, ulps in ((fast_arccos, mpmath.acos, 1.5), (fast_arcsin, mpmath.asin, 2.5)):
        got = np.asarray(fn(jnp.asarray(xs)), np.float64)
        ref = np.array([float(ref_fn(mpmath.mpf(float(v)))) for v in xs])
        spacing = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
        assert np.max(np.abs(got - ref) / spacing) <= ulps, fn.__name__


def test_float32_deep_cnn_error() -> None:
    """NT's README CNN in small at float32 against float64: max error 1e-5 of max|K| (eps_32 = 1.2e-7 times the
    ~10 roundings per layer and 8 layers, with margin; NT 0.6.5 loses ~5e-4 on the 21-layer benchmark network,
    benchmarks/RESULTS.md)."""
    name = "deep_readme_flatten"
    x = NT[f"{name}.x1"]
    k64 = np.asarray(ka.kernel(nt_net(name), x, get="ntk"))
    k32 = np.asarray(ka.kernel(nt_net(name), x.astype(np.float32), get="ntk"))
    assert k32.dtype == np.float32
    assert np.max(np.abs(k32 - k64)) <= 1e-5 * np.abs(k64).max()
    assert math.isfinite(float(k32.sum()))


def test_float32_vanishing_variances() -> None:
    """70 x [Conv, Relu] with W_std = 1 and no bias (NT's README CNN, deeper) halves the variances at every layer,
    to ~1e-21: their product s11 s22 underflows in float32 (below 1.2e-38), so the correlation must not be
    computed from it (it came out 0 instead of ~1: 99.7% error at depth 100). Bound: 1e-4 of max|K| (the
    float32 error grows about linearly with depth, 1.3e-5 measured at depth 100)."""
    net = ka.serial(*[layer for _ in range(70) for layer in (ka.Conv((3, 3), padding="SAME"), ka.Relu())],
                    ka.Flatten())
    x = _images((4, 4, 2), 3, 7)
    k64 = np.asarray(ka.kernel(net, x, get="ntk"))
    k32 = np.asarray(ka.kernel(net, x.astype(np.float32), get="ntk"))
    assert np.abs(k64).max() < 1e-18
    assert np.max(np.abs(k32 - k64)) <= 1e-4 * np.abs(k64).max()
