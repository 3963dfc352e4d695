"""ConvTranspose and ImageResize against independent references.

* neural-tangents 0.6.5 itself: its kernels (NNGP, NTK, variances) on small fixed inputs are stored in
  tests/data/nt_resize_reference.npz (made by benchmarks/make_nt_resize_reference.py in NT's own venv).
* jax.image.resize: the per-axis resampling matrices equal jax's resize of the identity.
* The finite twins: ConvTranspose's equals jax.lax.conv_transpose with NT's CIRCULAR fold; Monte Carlo over
  the finite twins (empirical NNGP and J J^T), Richardson-extrapolated over two widths, with stated z bounds.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernelalg as ka
from kernelalg.layers.spatial import _inputs as SI
from kernelalg.layers.spatial._imageresize import resize_matrix

NT_REFERENCE = Path(__file__).resolve().parent / "data" / "nt_resize_reference.npz"
NT = np.load(NT_REFERENCE)
NT_NAMES = sorted({k.split(".")[0] for k in NT.files if not k.startswith("_")})
SLOW = pytest.mark.slow


def _tup(v):
    return tuple(v) if isinstance(v, list) else v


def nt_net(name: str) -> ka.Layer:
    """The stored stax spec in kernelalg: same names and keywords; NT's leading width is out_chan/out_dim."""
    layers = []
    for layer, args, kw in json.loads(str(NT[f"{name}.spec"])):
        args, kw = [_tup(v) for v in args], {k: _tup(v) for k, v in kw.items()}
        if layer in ("Conv", "ConvTranspose"):
            layers.append(getattr(ka, layer)(args[1], out_chan=args[0], **kw))
        elif layer == "Dense":
            layers.append(ka.Dense(out_dim=args[0], **kw))
        else:
            layers.append(getattr(ka, layer)(*args, **kw))
    return ka.serial(*layers)


#: Cases run by default (ConvTranspose SAME and CIRCULAR on the matching-pixel layout, Conv + ConvTranspose +
#: ImageResize on the full grid); the others (same code paths, other settings) with -m slow.
NT_DEFAULT = ("ct2d_same_flatten", "ct2d_circular_flatten", "ct_then_resize_gap")


@pytest.mark.parametrize("name", [n if n in NT_DEFAULT else pytest.param(n, marks=SLOW) for n in NT_NAMES
                                  if f"{n}.sym.nngp" in NT.files])
def test_matches_neural_tangents(name: str) -> None:
    """NNGP, NTK and the variances agree with neural-tangents 0.6.5 (float64) to 1e-10 relative, x2 None and given."""
    f = ka.compile(nt_net(name))
    x1, x2 = NT[f"{name}.x1"], NT[f"{name}.x2"]
    for call, b in (("sym", None), ("cross", x2)):
        k = f(x1, b)
        for field in ("nngp", "ntk", "cov1", "cov2"):
            key = f"{name}.{call}.{field}"
            if key in NT.files:
                want = NT[key]
                got = np.asarray(getattr(k, field)).reshape(want.shape)
                np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=key)


def test_batch_layout_matches_neural_tangents(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch layout (networks without a single readout: self grids on the batch diagonal, or in an
    extension row/column with x2 given) is a second evaluation order of ImageResize's map."""
    orig = SI.plan
    monkeypatch.setattr(SI, "plan", lambda net, ndim: dataclasses.replace(orig(net, ndim), chunked=False))
    name = "ct_then_resize_gap"
    f = ka.compile(nt_net(name))
    x1, x2 = NT[f"{name}.x1"], NT[f"{name}.x2"]
    for call, b in (("sym", None), ("cross", x2)):
        k = f(x1, b)
        for field in ("nngp", "ntk", "cov1", "cov2"):
            if f"{name}.{call}.{field}" not in NT.files:  # NT's cov2 is None for x2 = None
                continue
            want = NT[f"{name}.{call}.{field}"]
            np.testing.assert_allclose(np.asarray(getattr(k, field)).reshape(want.shape), want, rtol=1e-10,
                                       atol=1e-12, err_msg=f"{call} {field}")


def test_resize_after_one_conv_matches_nt_monte_carlo() -> None:
    """neural-tangents 0.6.5's analytic ImageResize kernel ignores its reversed spatial axes after an odd number
    of convolutions (there: no resize at all), so this network is checked against NT's own Monte Carlo of its
    finite network (linear in the weights: the empirical NNGP is unbiased; 400 networks of width 256, standard
    errors of 10 batches): |z| < 4 on all entries (observed: max |z| = 0.9; NT's analytic values are 2 to 38
    standard errors off)."""
    name = "resize_after_one_conv_mc"
    k = np.asarray(ka.kernel(nt_net(name), NT[f"{name}.x1"], get="nngp"))
    z = (k - NT[f"{name}.mc_mean"]) / NT[f"{name}.mc_se"]
    assert np.all(np.abs(z) < 4.0), z


@pytest.mark.parametrize("n_in, n_out, method, antialias", [
    (5, 9, "linear", True), (9, 4, "linear", True), (9, 4, "linear", False), (13, 6, "nearest", True),
    (3, 1, "linear", True)])
def test_resize_matrix_is_jax_image_resize(n_in: int, n_out: int, method: str, antialias: bool) -> None:
    """R x equals jax.image.resize(x) along one axis: R is jax's resize of the identity. This jax computes the
    linear weights in float32 (atol 1e-6); jax 0.4.26 (neural-tangents' venv) in float64, which the stored
    neural-tangents kernels check to 1e-10."""
    want = np.asarray(jax.image.resize(jnp.eye(n_in, dtype=jnp.float64), (n_out, n_in), method, antialias=antialias))
    np.testing.assert_allclose(resize_matrix(n_in, n_out, "nearest" if method == "nearest" else "linear", antialias),
                               want, rtol=0, atol=1e-6)


def test_numpy_reference_and_float32() -> None:
    """The NumPy reference evaluation of the same program agrees to 1e-12; float32 inputs give float32 kernels
    within 1e-4 relative of float64."""
    net = (ka.ConvTranspose((2, 2), (2, 1), "CIRCULAR", 1.2, 0.1) >> ka.Relu() >> ka.Conv((2, 2), padding="SAME")
           >> ka.ImageResize((-1, 3, 3, -1), "linear") >> ka.GlobalAvgPool())
    x1 = np.random.default_rng(3).normal(size=(2, 2, 2, 1))
    k64 = ka.kernel(net, x1)
    ref = ka.reference_kernel(net, x1, get=("nngp", "ntk"))
    for field in ("nngp", "ntk"):
        np.testing.assert_allclose(np.asarray(getattr(ref, field)), np.asarray(getattr(k64, field)), rtol=1e-12)
    k32 = ka.kernel(net, x1.astype(np.float32))
    assert np.asarray(k32.ntk).dtype == np.float32
    np.testing.assert_allclose(np.asarray(k32.ntk), np.asarray(k64.ntk), rtol=1e-4)


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("net, shape, match", [
    (ka.Dense() >> ka.ImageResize((-1, 4, -1), "linear"), (2, 3), "must be a 3-D array \\(batch, length, channels\\)"),
    (ka.Conv((2,)) >> ka.GlobalAvgPool() >> ka.ImageResize((-1, 4, -1), "linear"), (2, 3, 1),
     "ImageResize needs inputs with spatial axes"),
    (ka.Flatten() >> ka.ConvTranspose((2, 2)), (2, 3, 3, 1), "ConvTranspose needs inputs with spatial axes"),
    (ka.Conv((2, 2)) >> ka.ImageResize((-1, 4, -1), "linear") >> ka.GlobalAvgPool(), (2, 3, 3, 1),
     "shape has 1 spatial dimension"),
    (ka.Conv((2, 2)) >> ka.Relu() >> ka.ConvTranspose((2, 2), parameterization="standard") >> ka.Flatten(),
     (2, 3, 3, 1), "Fix: give the previous Conv/Dense out_chan"),
    (ka.Conv((2, 2)) >> ka.Relu() >> ka.ImageResize((-1, 4, 4, -1), "linear") >> ka.Relu() >> ka.Flatten(),
     (2, 3, 3, 1), "Gaussian"),
])
def test_layer_order_errors(net: ka.Layer, shape: tuple, match: str) -> None:
    with pytest.raises(ka.KernelalgError, match=match):
        ka.kernel(net, np.ones(shape))


def test_argument_errors() -> None:
    with pytest.raises(ka.KernelalgError, match="method='linear'"):
        ka.ImageResize((-1, 4, 4, -1), "cubic")
    with pytest.raises(ka.KernelalgError, match="set shape\\[0\\] = -1"):
        ka.ImageResize((2, 4, 4, -1), "linear")
    with pytest.raises(ka.KernelalgError, match="set shape\\[-1\\] = -1"):
        ka.ImageResize((-1, 4, 4, 3), "linear")
    with pytest.raises(ka.KernelalgError, match="shape=\\(-1, 16, 16, -1\\)"):
        ka.ImageResize((4, 4), "linear")
    with pytest.raises(ka.KernelalgError, match="batch_axis must be 0"):
        ka.ImageResize((-1, 4, 4, -1), "linear", channel_axis=1)
    with pytest.raises(ka.KernelalgError, match="padding must be one of"):
        ka.ConvTranspose((3, 3), padding="FULL")
    with pytest.raises(ka.KernelalgError, match="different lengths"):
        ka.ConvTranspose((3, 3), strides=(2,))
    assert ka.parse("ConvTranspose((3, 3), (2, 2), 'SAME') >> Relu() >> ImageResize((-1, 4, 4, -1), 'nearest')")


# ------------------------------------------------------------------ Monte Carlo over the finite-width twins

V_STD, V_BIAS = 1.1, 0.1


def _mc(body: ka.Layer, x, n: int, samples: int, seed: int):
    """Mean and standard error of the NNGP and of J J^T of f = V/sqrt(n) h.v + B beta, h = body(x) of width n."""
    twin = ka.finite(body, n)
    out_shape = twin.output_shape(x.shape[1:])

    def one(key):
        k1, k2, k3 = jax.random.split(key, 3)
        params = {"body": twin.init(k1, x.shape[1:]), "v": jax.random.normal(k2, out_shape),
                  "beta": jax.random.normal(k3, ())}

        def f(p):
            return V_STD * twin.apply(p["body"], x) @ p["v"] / jnp.sqrt(out_shape[-1]) + V_BIAS * p["beta"]
        jac = [j.reshape(len(x), -1) for j in jax.tree_util.tree_leaves(jax.jacrev(f)(params))]
        h = twin.apply(params["body"], x)
        return V_STD**2 * h @ h.T / out_shape[-1] + V_BIAS**2, sum(j @ j.T for j in jac)

    keys = jax.random.split(jax.random.PRNGKey(seed), samples)
    est = [np.asarray(e, np.float64) for e in jax.jit(lambda ks: jax.lax.map(one, ks))(keys)]
    return [(e.mean(0), e.std(0, ddof=1) / np.sqrt(samples)) for e in est]


MC_NETS = {  # one hidden nonlinearity: its pre-activations are exactly Gaussian at any width, so the empirical
    # NNGP and J J^T are unbiased and no width extrapolation is needed
    "circular_resize_gap": (ka.ConvTranspose((3, 2), (2, 1), "CIRCULAR", 1.3, 0.2) >> ka.Relu()
                            >> ka.ImageResize((-1, 4, 5, -1), "linear") >> ka.GlobalAvgPool(), (3, 2, 2)),
    "valid_1d_flatten": (ka.ConvTranspose((2,), (3,), "VALID", 1.2, 0.3) >> ka.Erf()
                         >> ka.ImageResize((-1, 5, -1), "nearest") >> ka.Flatten(), (3, 2)),
}


@pytest.mark.parametrize("name", ["circular_resize_gap", pytest.param("valid_1d_flatten", marks=SLOW)])
def test_monte_carlo_finite_width(name: str) -> None:
    """The finite twins' empirical NNGP and NTK (J J^T) average to the kernel: 1500 networks of width 8, fixed
    seeds; |z| < 4.5 on the 12 distinct (correlated) entries (observed max |z|: 2.2 circular_resize_gap,
    3.0 valid_1d_flatten; with 16000 networks and another seed valid_1d_flatten's max |z| is 1.3)."""
    body, shape = MC_NETS[name]
    x = np.random.default_rng(7).normal(size=(3,) + shape)
    k = ka.kernel(body >> ka.Dense(V_STD, V_BIAS), x)
    iu = np.triu_indices(3)
    for (mean, se), exact in zip(_mc(body, x.astype(np.float32), 8, 1500, 3), (k.nngp, k.ntk)):
        z = (mean - np.asarray(exact))[iu] / se[iu]
        assert np.all(np.abs(z) < 4.5), z


@SLOW  # ~25 s of compilation on a loaded 2-core machine; the default Monte Carlo test already differentiates the twin
def test_empirical_ntk_of_the_twin() -> None:
    """ka.empirical_ntk of the finite twin (its default jacobian route) is J J^T by jax.jacrev written out here."""
    net = MC_NETS["circular_resize_gap"][0] >> ka.Dense(V_STD, V_BIAS, out_dim=1)
    x = np.random.default_rng(5).normal(size=(3, 3, 2, 2))
    twin = ka.finite(net, 6)
    params = twin.init(jax.random.PRNGKey(0), x.shape[1:])
    jac = jax.jacrev(lambda p: twin.apply(p, x)[:, 0])(params)
    want = sum(np.asarray(j).reshape(len(x), -1) @ np.asarray(j).reshape(len(x), -1).T
               for j in jax.tree_util.tree_leaves(jac))
    got = np.asarray(ka.empirical_ntk(twin.apply, params, x)).reshape(want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-5)  # float32 parameters and resize weights
