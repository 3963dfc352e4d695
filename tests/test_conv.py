"""Convolutional NTK (CNTK), pooling and readouts against independent references.

* A brute-force NumPy implementation of the pixel-pair recursion written here from theory.md ("Convolutional
  NTK", Arora et al. 2019) and neural-tangents' documented conventions (benchmarks/NT_NOTES.md, part (e)):
  explicit loops over output pixels and window offsets on the joint batch [x1; x2], so that every per-pixel
  variance is read off an image's own pixel-pair grid (it knows nothing of chunks, extensions or stencils).
* Identities: 1x1 images with 1x1 filters are the dense kernel; CIRCULAR padding + GlobalAvgPool is invariant
  to circular shifts of either input.
* neural-tangents 0.6.5 itself: its kernels on small fixed inputs are stored in tests/data/nt_conv_reference.npz
  (made by benchmarks/make_nt_conv_reference.py in NT's own venv; NT cannot be imported here).
* Monte Carlo over the finite-width twins (empirical NNGP and J J^T), Richardson-extrapolated over two widths.

Budget (CI=true, 2 cores): about 25 small kernel compilations (~70 s CPU); the remaining reference cases run with
``-m slow``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernelalg as ka
from kernelalg.layers.spatial import _inputs as SI

NT_REFERENCE = Path(__file__).resolve().parent / "data" / "nt_conv_reference.npz"
SLOW = pytest.mark.slow


# ------------------------------------------------------------------ brute-force reference (theory.md)

def relu_dual(s11, s12, s22):
    """Cho & Saul (2009)."""
    th = np.arccos(np.clip(s12 / np.sqrt(s11 * s22), -1.0, 1.0))
    return np.sqrt(s11 * s22) * (np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi), (np.pi - th) / (2 * np.pi)


def erf_dual(s11, s12, s22):
    """Williams (1997)."""
    t = 2 / np.pi * np.arcsin(2 * s12 / np.sqrt((1 + 2 * s11) * (1 + 2 * s22)))
    return t, 4 / np.pi / np.sqrt((1 + 2 * s11) * (1 + 2 * s22) - 4 * s12**2)


def sign_dual(s11, s12, s22):
    """phi = sign: E[sign u sign v] = (2/pi) arcsin(rho); sign' = 0 a.e. (neural-tangents' convention)."""
    return 2 / np.pi * np.arcsin(np.clip(s12 / np.sqrt(s11 * s22), -1.0, 1.0)), np.zeros_like(s12)


def _same_pads(n, f, s):
    out = -(-n // s)
    total = max((out - 1) * s + f - n, 0)
    return total // 2, out


def _reads(n, f, s, padding):
    """For each output position, the input positions read by offsets 0..f-1 (None: zero padding)."""
    if padding == "VALID":
        lo, out = 0, (n - f) // s + 1
    else:
        lo, out = _same_pads(n, f, s)
    rows = []
    for i in range(out):
        idx = [s * i + a - lo for a in range(f)]
        if padding == "CIRCULAR":
            idx = [t % n for t in idx]
        rows.append([t if 0 <= t < n else None for t in idx])
    return rows


class Ref:
    """Kernel state of the joint batch: K[i, j] and T[i, j] are (*S, *S) pixel-pair grids (or scalars)."""

    def __init__(self, z, c_in):
        self.shape = z.shape[1:-1]
        flat = z.reshape(len(z), -1, z.shape[-1])
        self.K = np.einsum("ipc,jqc->ijpq", flat, flat) / c_in
        self.T = np.zeros_like(self.K)
        self.width = c_in

    def _positions(self, filt, strides, padding):
        per_axis = [_reads(n, f, s, padding) for n, f, s in zip(self.shape, filt, strides)]
        out_shape = tuple(len(r) for r in per_axis)
        outs = []
        for o in itertools.product(*[range(len(r)) for r in per_axis]):
            taps = []
            for offs in itertools.product(*[range(f) for f in filt]):
                src = [per_axis[d][o[d]][offs[d]] for d in range(len(filt))]
                taps.append(None if None in src else int(np.ravel_multi_index(src, self.shape)))
            outs.append(taps)
        return out_shape, outs

    def conv(self, filt, strides, padding, w, b, standard=False, out_chan=None):
        out_shape, outs = self._positions(filt, strides, padding)
        q = math.prod(filt)

        def stencil(g):
            n = len(outs)
            r = np.zeros(g.shape[:2] + (n, n))
            for p, tp in enumerate(outs):
                for pp, tq in enumerate(outs):
                    r[:, :, p, pp] = sum(g[:, :, a, c] for a, c in zip(tp, tq) if a is not None and c is not None) / q
            return r
        ck, ct = stencil(self.K), stencil(self.T)
        self.K = w**2 * ck + b**2
        self.T = (self.width * q * ck + w**2 * ct + 1) if standard else (self.K + w**2 * ct)
        self.shape, self.width = out_shape, out_chan

    def pool(self, window, strides, padding, avg, normalize_edges=False):
        out_shape, outs = self._positions(window, strides, padding)
        n = len(outs)

        def apply(g):
            r = np.zeros(g.shape[:2] + (n, n))
            for p, tp in enumerate(outs):
                for pp, tq in enumerate(outs):
                    tot = sum(g[:, :, a, c] for a in tp for c in tq if a is not None and c is not None)
                    if avg:
                        norm = (sum(a is not None for a in tp) * sum(c is not None for c in tq)
                                if normalize_edges and padding == "SAME" else len(tp) ** 2)
                        tot = tot / norm
                    r[:, :, p, pp] = tot
            return r
        self.K, self.T = apply(self.K), apply(self.T)
        self.shape = out_shape

    def act(self, dual):
        d = np.einsum("iipp->ip", self.K)  # each image's per-pixel variances, from its own grid
        t, tdot = dual(d[:, None, :, None], self.K, d[None, :, None, :])
        self.K, self.T = t, tdot * self.T

    def readout(self, kind):
        p = self.K.shape[-1]
        if kind == "flatten":
            self.K, self.T = (np.einsum("ijpp->ij", g) / p for g in (self.K, self.T))
            self.width = None if self.width is None else self.width * p
        else:
            red = np.mean if kind == "gap" else np.sum
            self.K, self.T = red(self.K, axis=(2, 3)), red(self.T, axis=(2, 3))

    def dense(self, w, b):
        self.K = w**2 * self.K + b**2
        self.T = self.K + w**2 * self.T


def reference(ops, x1, x2=None):
    z = x1 if x2 is None else np.concatenate([x1, x2])
    r = Ref(z, z.shape[-1])
    for op, kw in ops:
        getattr(r, op)(**kw)
    n = len(x1)
    sl = (slice(0, n), slice(0, n) if x2 is None else slice(n, None))
    return r.K[sl], r.T[sl]


def build(ops):
    layers = []
    for op, kw in ops:
        if op == "conv":
            layers.append(ka.Conv(kw["filt"], kw["strides"], kw["padding"], kw["w"], kw["b"],
                                  "standard" if kw.get("standard") else "ntk", out_chan=kw.get("out_chan")))
        elif op == "pool":
            cls = ka.AvgPool if kw["avg"] else ka.SumPool
            extra = {"normalize_edges": kw.get("normalize_edges", False)} if kw["avg"] else {}
            layers.append(cls(kw["window"], kw["strides"], kw["padding"], **extra))
        elif op == "act":
            layers.append({relu_dual: ka.Relu, erf_dual: ka.Erf, sign_dual: ka.Sign}[kw["dual"]]())
        elif op == "readout":
            layers.append({"gap": ka.GlobalAvgPool, "gsp": ka.GlobalSumPool, "flatten": ka.Flatten}[kw["kind"]]())
        else:
            layers.append(ka.Dense(kw["w"], kw["b"]))
    return ka.serial(*layers)


def conv(filt, strides=None, padding="SAME", w=1.3, b=0.2, **kw):
    return ("conv", dict(filt=filt, strides=strides or (1,) * len(filt), padding=padding, w=w, b=b, **kw))


RELU, ERF, SIGN = ("act", {"dual": relu_dual}), ("act", {"dual": erf_dual}), ("act", {"dual": sign_dual})
DENSE = ("dense", {"w": 1.1, "b": 0.1})


def readout(kind):
    return ("readout", {"kind": kind})


def pool(window, strides=None, padding="VALID", avg=True, normalize_edges=False):
    return ("pool", {"window": window, "strides": strides or (1,) * len(window), "padding": padding, "avg": avg,
                         "normalize_edges": normalize_edges})


NETS = {
    "same_relu_gap": [conv((3, 3)), RELU, conv((2, 2), padding="VALID", w=1.1, b=0.1), ERF, readout("gap"), DENSE],
    "strided_flatten": [conv((3, 2), (2, 1), "SAME"), RELU, conv((2, 2), (1, 2), "VALID"), RELU,
                        readout("flatten"), DENSE],
    "circular_gsp": [conv((3, 3), padding="CIRCULAR"), ERF, conv((2, 3), (2, 1), "CIRCULAR"), readout("gsp")],
    "avgpool_edges": [conv((3, 3)), RELU, pool((2, 2), (1, 2), "SAME", normalize_edges=True), conv((2, 2)), RELU,
                      readout("gap"), DENSE],
    "pools_flatten": [conv((2, 2), padding="VALID"), ERF, pool((2, 1), (2, 1), "CIRCULAR"), conv((1, 2)),
                      RELU, pool((2, 2), padding="SAME", avg=False), readout("flatten")],
    "standard": [conv((3, 3), standard=True, out_chan=7), RELU, conv((2, 2), standard=True), RELU, readout("gap")],
    "conv1d": [conv((3,)), RELU, conv((2,), (2,), "VALID"), readout("gap"), DENSE],
    # Sign makes every per-pixel variance the constant 1 (zero padding then makes it position dependent again)
    "sign_pool": [conv((2, 2), padding="VALID"), SIGN, pool((2, 2), padding="SAME"), conv((2, 2)), RELU,
                  readout("gap"), DENSE],
}


def _images(shape, n, seed):
    return np.random.default_rng(seed).normal(size=(n,) + shape)


@pytest.mark.parametrize("name", [n if n in ("same_relu_gap", "pools_flatten", "sign_pool") else pytest.param(n, marks=SLOW)
                                  for n in sorted(NETS)])
def test_brute_force_reference(name: str) -> None:
    ops = NETS[name]
    shape = (6, 2) if name == "conv1d" else (4, 3, 2)
    x1, x2 = _images(shape, 3, 1), _images(shape, 2, 2)
    net = build(ops)
    for a, b in ((x1, None), (x1, x2)):
        k = ka.kernel(net, a, b)
        rk, rt = reference(ops, a, b)
        np.testing.assert_allclose(k.nngp, rk, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(k.ntk, rt, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(k.cov1, np.diagonal(reference(ops, a)[0]), rtol=1e-12)
        if b is not None:
            np.testing.assert_allclose(k.cov2, np.diagonal(reference(ops, b)[0]), rtol=1e-12)


# ------------------------------------------------------------------ identities

@pytest.mark.parametrize("param, ndim, readout_layer", [("standard", 1, ka.GlobalAvgPool), ("ntk", 2, ka.Flatten),
                                                        ("standard", 3, ka.GlobalSumPool)])
def test_one_pixel_equals_dense(param: str, ndim: int, readout_layer) -> None:
    """1x1(x1) images with 1x1 filters: every conv is a dense layer on the channels."""
    x = np.random.default_rng(7).normal(size=(4, 5))
    one = (1,) * ndim
    cnn = ka.serial(ka.Conv(one, W_std=1.4, b_std=0.3, parameterization=param, out_chan=6), ka.Relu(),
                    ka.Conv(one, W_std=0.9, b_std=0.2, parameterization=param, out_chan=6), ka.Erf(), readout_layer(),
                    ka.Dense(1.2, 0.1, parameterization=param))
    mlp = ka.serial(ka.Dense(1.4, 0.3, param, out_dim=6), ka.Relu(), ka.Dense(0.9, 0.2, param, out_dim=6), ka.Erf(),
                    ka.Dense(1.2, 0.1, parameterization=param))
    kc, kd = ka.kernel(cnn, x.reshape((4,) + one + (5,))), ka.kernel(mlp, x)
    for f in ("nngp", "ntk", "cov1"):
        np.testing.assert_allclose(getattr(kc, f), getattr(kd, f), rtol=1e-12)


def test_circular_gap_is_shift_invariant() -> None:
    """With CIRCULAR padding every layer commutes with circular shifts, and GAP averages over all pixel pairs."""
    net = ka.serial(ka.Conv((3, 3), padding="CIRCULAR", W_std=1.5, b_std=0.1), ka.Relu(),
                    ka.Conv((2, 3), padding="CIRCULAR", W_std=1.2, b_std=0.2), ka.Erf(), ka.GlobalAvgPool(), ka.Dense())
    same = ka.serial(ka.Conv((3, 3), padding="SAME", W_std=1.5, b_std=0.1), ka.Relu(), ka.GlobalAvgPool())
    x1, x2 = _images((5, 4, 2), 3, 8), _images((5, 4, 2), 2, 9)
    k = ka.kernel(net, x1, x2)
    ks = ka.kernel(same, x1, x2)
    for s1, s2 in (((1, 0), (0, 0)), ((2, 3), (0, 0)), ((0, 0), (4, 1)), ((3, 1), (1, 2))):
        y1, y2 = np.roll(x1, s1, axis=(1, 2)), np.roll(x2, s2, axis=(1, 2))
        kr = ka.kernel(net, y1, y2)
        np.testing.assert_allclose(kr.nngp, k.nngp, rtol=1e-12)
        np.testing.assert_allclose(kr.ntk, k.ntk, rtol=1e-12)
        np.testing.assert_allclose(kr.cov2, k.cov2, rtol=1e-12)
        # the shift is not trivial: zero padding (SAME) sees it
        assert np.abs(np.asarray(ka.kernel(same, y1, y2).ntk) - ks.ntk).max() > 1e-3


def test_fast_arccos_accuracy() -> None:
    """The vectorised arccos of the JAX backend (used by all arc-cosine duals) is within one ulp of mpmath."""
    import mpmath
    from kernelalg.backends._jax import fast_arccos
    xs = np.concatenate([np.linspace(-1, 1, 4001), 1 - np.logspace(-16, 0, 200), -1 + np.logspace(-16, 0, 200),
                         np.nextafter(0.5, [0.0, 1.0]), np.nextafter(-0.5, [0.0, -1.0]), [0.5, -0.5, 0.0]])
    from kernelalg.backends._compile import precision_of
    with precision_of(xs):
        got = np.asarray(fast_arccos(jnp.asarray(xs)))
    ref = np.array([float(mpmath.acos(mpmath.mpf(float(v)))) for v in xs])
    assert np.all(np.abs(got - ref) <= np.spacing(ref))


# ------------------------------------------------------------------ neural-tangents 0.6.5 (stored fixture)

NT = np.load(NT_REFERENCE)
#: The stored cases; the deep_* ones (repeated blocks) are checked in tests/test_deep_conv.py.
NT_NAMES = sorted({k.split(".")[0] for k in NT.files if not k.startswith(("_", "deep_"))})
#: (case, call) pairs run by default; the others (same code paths, other conventions) with -m slow.
NT_DEFAULT = {("bench_small", "sym"), ("bench_small", "cross"), ("mixed_2d_gap", "sym"), ("mixed_2d_gap", "cross"),
              ("pool_defaults_flatten", "cross"), ("conv3d_flatten", "sym"), ("conv3d_pool_gsp", "cross"),
              ("conv1d_gsp", "sym"), ("standard_gap", "cross"), ("standard_flatten", "sym"),
              ("spatial_out_one_conv", "sym"), ("spatial_out_two_convs", "cross")}


def _tup(v):
    return tuple(v) if isinstance(v, list) else v


def nt_net(name: str) -> ka.Layer:
    """The stored neural-tangents stax spec in kernelalg: same layer names and keywords; NT's leading width
    argument of Conv/Dense is kernelalg's out_chan/out_dim."""
    layers = []
    for layer, args, kw in json.loads(str(NT[f"{name}.spec"])):
        args, kw = [_tup(v) for v in args], {k: _tup(v) for k, v in kw.items()}
        if layer == "Conv":
            layers.append(ka.Conv(args[1], out_chan=args[0], **kw))
        elif layer == "Dense":
            layers.append(ka.Dense(out_dim=args[0], **kw))
        else:
            layers.append(getattr(ka, layer)(*args, **kw))
    return ka.serial(*layers)


def nt_expected(name: str, call: str, field: str) -> np.ndarray:
    """NT's array in kernelalg's layout: spatial kernels (N, M, *S, *S'), spatial variances (N, *S)."""
    want = NT[f"{name}.{call}.{field}"]
    k = want.ndim - (2 if field in ("nngp", "ntk") else 1)
    if k == 0:
        return want
    lead = want.ndim - k  # NT: interleaved (p_1, p'_1, p_2, p'_2, ...), reversed after an odd number of convs
    pairs = [(lead + 2 * i, lead + 2 * i + 1) for i in range(k // 2)]
    if bool(NT[f"{name}.{call}.is_reversed"]):
        pairs = pairs[::-1]
    want = want.transpose(tuple(range(lead)) + tuple(p[0] for p in pairs) + tuple(p[1] for p in pairs))
    if field.startswith("cov"):  # NT keeps each image's full self grid; kernelalg its per-pixel variances
        s = want.shape[lead:lead + k // 2]
        want = np.diagonal(want.reshape(want.shape[:lead] + (math.prod(s),) * 2), axis1=-2, axis2=-1).reshape(
            want.shape[:lead] + s)
    return want


def assert_nt(k: ka.Kernel, name: str, call: str) -> None:
    for field in ("nngp", "ntk", "cov1", "cov2"):
        if f"{name}.{call}.{field}" not in NT.files:
            continue
        want = nt_expected(name, call, field)
        got = np.asarray(getattr(k, field)).reshape(want.shape)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=f"{name} {call} {field}")


@pytest.mark.parametrize("name, call", [(n, c) if (n, c) in NT_DEFAULT else pytest.param(n, c, marks=SLOW)
                                        for n in NT_NAMES for c in ("sym", "cross")])
def test_matches_neural_tangents(name: str, call: str) -> None:
    """NNGP, NTK and the variances agree with neural-tangents 0.6.5 (float64) to 1e-10."""
    x1, x2 = NT[f"{name}.x1"], NT[f"{name}.x2"]
    assert_nt(ka.kernel(nt_net(name), x1, x2 if call == "cross" else None), name, call)


def test_batch_layout_matches_neural_tangents(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch layout (used when a network has no single readout: self grids carried on the batch diagonal,
    or in an extension row/column when x2 is given) is a second evaluation order of the same program."""
    orig = SI.plan
    monkeypatch.setattr(SI, "plan", lambda net, ndim: dataclasses.replace(orig(net, ndim), chunked=False))
    f = ka.compile(nt_net("mixed_2d_gap"))
    assert not f.layout.auto_batch.args[0].chunked
    x1, x2 = NT["mixed_2d_gap.x1"], NT["mixed_2d_gap.x2"]
    assert_nt(f(x1, None), "mixed_2d_gap", "sym")
    assert_nt(f(x1, x2), "mixed_2d_gap", "cross")


def test_tiles_match_neural_tangents() -> None:
    """batch_size tiles the N x M image pairs into blocks (bounded memory for any N); the result is unchanged."""
    x1, x2 = NT["bench_small.x1"], NT["bench_small.x2"]
    assert_nt(ka.kernel(nt_net("bench_small"), x1, x2, batch_size=2), "bench_small", "cross")


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("net, shape, match", [
    (ka.Flatten() >> ka.Conv((3, 3)), (2, 4, 4, 1), "Conv needs inputs with spatial axes"),
    (ka.Conv((3, 3)) >> ka.Relu() >> ka.AvgPool((2,)) >> ka.GlobalAvgPool(), (2, 4, 4, 1),
     "window_shape has 1 spatial dimension"),
    (ka.Conv((5, 2)) >> ka.Flatten(), (2, 4, 4, 1), "does not fit the 4 pixels"),
    (ka.Conv((2, 2)) >> ka.Relu() >> ka.Conv((2, 2), parameterization="standard") >> ka.Flatten(), (2, 4, 4, 1),
     "Fix: give the previous Conv/Dense out_chan"),
])
def test_layer_order_errors(net: ka.Layer, shape: tuple, match: str) -> None:
    with pytest.raises(ka.KernelalgError, match=match):
        ka.kernel(net, np.ones(shape))


def test_argument_errors() -> None:
    with pytest.raises(ka.KernelalgError, match="padding must be one of"):
        ka.Conv((3, 3), padding="FULL")
    with pytest.raises(ka.KernelalgError, match="different lengths"):
        ka.AvgPool((2, 2), strides=(1,))
    with pytest.raises(ka.KernelalgError, match="positive integers"):
        ka.Conv((0, 3))
    with pytest.raises(ka.KernelalgError, match="must be a 4-D array"):
        ka.kernel(ka.Conv((3, 3)) >> ka.Flatten(), np.ones((2, 4, 4)))


# ------------------------------------------------------------------ Monte Carlo over the finite-width twins

V_STD, V_BIAS = 1.1, 0.1


def _mc(body: ka.Layer, x, n: int, samples: int, seed: int):
    """Mean and standard error of the NNGP (exact in the readout weights) and of J J^T of
    f = V/sqrt(n) h.v + B beta, h = body(x) of width n (the finite-width twin ka.finite), over random inits."""
    twin = ka.finite(body, n)
    out_shape = twin.output_shape(x.shape[1:])

    def init(key):
        return twin.init(key, x.shape[1:])
    apply = twin.apply

    def one(key):
        k1, k2, k3 = jax.random.split(key, 3)
        params = {"body": init(k1), "v": jax.random.normal(k2, out_shape), "beta": jax.random.normal(k3, ())}

        def f(p):
            return V_STD * apply(p["body"], x) @ p["v"] / jnp.sqrt(out_shape[-1]) + V_BIAS * p["beta"]
        jac = [j.reshape(len(x), -1) for j in jax.tree_util.tree_leaves(jax.jacrev(f)(params))]
        h = apply(params["body"], x)
        return V_STD**2 * h @ h.T / out_shape[-1] + V_BIAS**2, sum(j @ j.T for j in jac)

    keys = jax.random.split(jax.random.PRNGKey(seed), samples)
    est = [np.asarray(e, np.float64) for e in jax.jit(lambda ks: jax.lax.map(one, ks))(keys)]
    return [(e.mean(0), e.std(0, ddof=1) / np.sqrt(samples)) for e in est]


MC_NETS = {
    "pool_gap": ka.serial(ka.Conv((3, 3), padding="SAME", W_std=1.3, b_std=0.2), ka.Relu(),
                          ka.AvgPool((2, 2), (2, 2), "SAME"), ka.Conv((2, 2), padding="CIRCULAR", W_std=1.2, b_std=0.1),
                          ka.Erf(), ka.GlobalAvgPool()),
    "strided_flatten": ka.serial(ka.Conv((2, 3), (2, 1), "VALID", W_std=1.4, b_std=0.3), ka.Relu(),
                                 ka.Conv((3, 3), padding="SAME", W_std=1.1), ka.Relu(), ka.Flatten()),
}


@pytest.mark.parametrize("name", ["pool_gap", pytest.param("strided_flatten", marks=SLOW)])
def test_monte_carlo_finite_width(name: str) -> None:
    """Richardson R = 2 E_{2n} - E_n removes the O(1/n) finite-width bias of the mean (E_n = K + a/n + O(n^-2),
    Dyer & Gur-Ari 2020); tolerance 5 standard errors of R plus a quarter of the observed shift |E_n - E_2n| for
    the O(n^-2) remainder (fixed seeds; 3 images 5x4x2; calibration runs: |z| < 1.3, error < 0.25 tol)."""
    body = MC_NETS[name]
    x = _images((5, 4, 2), 3, 21).astype(np.float32)
    k = ka.kernel(body >> ka.Dense(V_STD, V_BIAS), x.astype(np.float64))
    iu = np.triu_indices(3)
    small, large = _mc(body, x, 32, 2000, 1), _mc(body, x, 64, 2000, 2)
    for which, exact in ((0, np.asarray(k.nngp)), (1, np.asarray(k.ntk))):
        (e1, s1), (e2, s2) = small[which], large[which]
        rich, se = 2 * e2 - e1, np.sqrt(4 * s2**2 + s1**2)
        tol = 5 * se + np.abs(e1 - e2) / 4
        assert np.all(np.abs(rich - exact)[iu] <= tol[iu]), (which, (rich - exact)[iu], tol[iu])


@pytest.mark.parametrize("pool, value", [("gap", 1.0), ("gsp", 16.0), ("avgpool_same", 0.5625**2), ("flatten", 1.0)])
def test_constant_activation_keeps_the_pixel_grid(pool: str, value: float) -> None:
    """phi(x) = 1 after a conv layer (regression: a constant kernel lost the pixel-grid shape and crashed the
    pooling ops). By hand: every feature is 1, so the readout Dense(W_std=1, b_std=0) sees the pooled constant
    c and K = c^2 for every pair; GAP c = 1, GlobalSumPool over the 2x2 VALID grid c = 4, AvgPool 2x2 SAME
    without edge normalisation averages 4, 2, 2 and 1 valid cells of 4: c = 2.25 / 4; Flatten c = 1 per pixel
    (NTK parametrization divides by the fan-in). The NTK is the NNGP (the constant has zero derivative)."""
    readout = {"gap": ka.GlobalAvgPool(), "gsp": ka.GlobalSumPool(),
               "avgpool_same": ka.AvgPool((2, 2), (1, 1), "SAME") >> ka.GlobalAvgPool(), "flatten": ka.Flatten()}
    x = np.random.default_rng(0).normal(size=(3, 3, 3, 2))
    for act in (ka.Monomial(0), ka.Polynomial([1.0])):
        net = ka.Conv((2, 2), padding="VALID", b_std=0.0) >> act >> readout[pool] >> ka.Dense(W_std=1.0, b_std=0.0)
        k = ka.kernel(net, x)
        np.testing.assert_allclose(np.asarray(k.nngp), value, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(k.ntk), value, rtol=1e-12)
