"""Recurrent NTK (Elman RNN) against independent references.

* A brute-force NumPy implementation written here directly from theory.md ("Recurrent NTK"): double loop over
  the time-pair grid of each pair, sequences truncated to their own steps (so it knows nothing of masks).
* The identity "a length-1 RNN is Dense >> activation" (the dense kernel is computed by the core dense path).
* Monte Carlo over the finite-width twin RNN (empirical NNGP and J J^T), ReLU and erf, equal and unequal
  lengths, with the O(1/n) finite-width bias removed by Richardson extrapolation over two widths.
* Compile size: the lowered program does not grow with the sequence length.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp
from jax.flatten_util import ravel_pytree

import kernelalg as ka
from kernelalg.core._duals import plain

W, U, B, V = 1.2, 0.8, 0.3, 1.1
LENS = [5, 3, 1, 4]


# ------------------------------------------------------------------ brute-force reference (theory.md)

def relu_dual(s11, s12, s22):
    """Cho & Saul (2009): T = sqrt(s11 s22)(sin th + (pi - th) cos th)/(2 pi), Tdot = (pi - th)/(2 pi)."""
    th = np.arccos(np.clip(s12 / np.sqrt(s11 * s22), -1.0, 1.0))
    return np.sqrt(s11 * s22) * (np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi), (np.pi - th) / (2 * np.pi)


def erf_dual(s11, s12, s22):
    """Williams (1997)."""
    t = 2 / np.pi * np.arcsin(2 * s12 / np.sqrt((1 + 2 * s11) * (1 + 2 * s22)))
    return t, 4 / np.pi / np.sqrt((1 + 2 * s11) * (1 + 2 * s22) - 4 * s12**2)


def ref_grid(kxy, kxx, kyy, thxy, dual, w, u, b):
    """h-kernels K(t,t') and D(t,t') Theta(t,t') of one pair of full-length sequences (h_0 = 0)."""
    def diag_s(kin):
        s, k = np.zeros(len(kin)), 0.0
        for t in range(len(kin)):
            s[t] = w**2 * k + u**2 * kin[t] + b**2
            k = dual(s[t], s[t], s[t])[0]
        return s
    sx, sy = diag_s(np.diag(kxx)), diag_s(np.diag(kyy))
    t1, t2 = kxy.shape
    k, d, th = (np.zeros((t1 + 1, t2 + 1)) for _ in range(3))
    for t in range(1, t1 + 1):
        for s in range(1, t2 + 1):
            S = w**2 * k[t - 1, s - 1] + u**2 * kxy[t - 1, s - 1] + b**2
            k[t, s], d[t, s] = dual(sx[t - 1], S, sy[s - 1])
            th[t, s] = S + w**2 * d[t - 1, s - 1] * th[t - 1, s - 1] + u**2 * thxy[t - 1, s - 1]
    return k[1:, 1:], (d * th)[1:, 1:]


def raw_input(x, y):
    """Input kernel x_t.y_s/m and input NTK 0 on the time-pair grid."""
    return x @ y.T / x.shape[1], np.zeros((len(x), len(y)))


def ref_layer(inp, dual, w, u, b, bidirectional):
    """(x, y) -> (K grid, NTK grid, K last, NTK last) of h: both directions averaged; the backward RNN runs on
    the time-reversed input grids and reads out at its own end (the first step)."""
    def f(x, y):
        (kxy, thxy), kxx, kyy = inp(x, y), inp(x, x)[0], inp(y, y)[0]
        k, n = ref_grid(kxy, kxx, kyy, thxy, dual, w, u, b)
        outs = [(k, n, k[-1, -1], n[-1, -1])]
        if bidirectional:
            r = lambda a: a[::-1, ::-1]  # noqa: E731
            k, n = ref_grid(r(kxy), r(kxx), r(kyy), r(thxy), dual, w, u, b)
            outs.append((r(k), r(n), k[-1, -1], n[-1, -1]))
        return tuple(sum(o[i] for o in outs) / len(outs) for i in range(4))
    return f


def ref_kernel(seqs, layer_fn, readout, v=V):
    """NNGP and NTK of layer >> Dense(v) for all pairs of (unpadded) sequences."""
    out = np.zeros((len(seqs), len(seqs), 2))
    for i, x in enumerate(seqs):
        for j, y in enumerate(seqs):
            kg, ng, kl, nl = layer_fn(x, y)
            k, n = (kl, nl) if readout == "last" else (kg.mean(), ng.mean())
            out[i, j] = v**2 * k, v**2 * k + v**2 * n
    return out


def seqs_data(lens=LENS, m=2, seed=1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(L, m)).astype(dtype) for L in lens]


def test_reference_duals_match_published_values() -> None:
    """The reference's own duals reproduce theory.md's values at (s11, s12, s22) = (1, 0.5, 1)."""
    np.testing.assert_allclose(relu_dual(1.0, 0.5, 1.0), (0.3044989, 1 / 3), atol=5e-8)
    np.testing.assert_allclose(erf_dual(1.0, 0.5, 1.0), (0.2163469, 0.4501582), atol=5e-8)


DUALS = {"Relu": (ka.Relu, relu_dual), "Erf": (ka.Erf, erf_dual)}


@pytest.mark.parametrize("act, readout, bidirectional", [
    ("Relu", "last", False), ("Erf", "mean", False), ("Relu", "mean", True), ("Erf", "last", True)])
def test_matches_bruteforce_reference(act: str, readout: str, bidirectional: bool) -> None:
    """Unequal lengths (5, 3, 1, 4): the reference truncates each sequence; the kernel pads and masks."""
    make, dual = DUALS[act]
    seqs = seqs_data()
    k = ka.kernel(ka.Recurrent(make(), W, U, B, readout=readout, bidirectional=bidirectional) >> ka.Dense(V),
                  ka.Sequences.from_list(seqs, dtype=np.float64))
    ref = ref_kernel(seqs, ref_layer(raw_input, dual, W, U, B, bidirectional), readout)
    np.testing.assert_allclose(np.asarray(k.nngp), ref[..., 0], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(np.asarray(k.ntk), ref[..., 1], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(np.asarray(k.cov1), np.diag(ref[..., 0]), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("readout, bidirectional", [("last", True), ("mean", False)])
def test_stacked_matches_reference(readout: str, bidirectional: bool) -> None:
    """Recurrent(ReLU, sequence) >> Recurrent(erf): the second layer's input kernel and NTK are the first's grids."""
    seqs = seqs_data()
    net = (ka.Recurrent(ka.Relu(), W, U, B, readout="sequence", bidirectional=bidirectional)
           >> ka.Recurrent(ka.Erf(), 0.7, 1.1, 0.1, readout=readout) >> ka.Dense(V))
    k = ka.kernel(net, ka.Sequences.from_list(seqs, dtype=np.float64))
    first = ref_layer(raw_input, relu_dual, W, U, B, bidirectional)
    ref = ref_kernel(seqs, ref_layer(lambda x, y: first(x, y)[:2], erf_dual, 0.7, 1.1, 0.1, False), readout)
    np.testing.assert_allclose(np.asarray(k.nngp), ref[..., 0], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(np.asarray(k.ntk), ref[..., 1], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(np.asarray(k.cov1), np.diag(ref[..., 0]), rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------------ length 1 = two-layer dense network

@pytest.mark.parametrize("act, readout, param", [
    (ka.Relu(), "last", "ntk"), (ka.Relu(), "sequence", "standard"), (ka.Erf(0.9, 1.3, 0.1), "mean", "ntk"),
    (ka.Erf(0.9, 1.3, 0.1), "last", "standard"), (ka.Sin(1.1, 0.7, 0.2), "sequence", "ntk"),
    (ka.Sin(1.1, 0.7, 0.2), "mean", "standard")], ids=lambda v: v.name if isinstance(v, ka.Layer) else v)
def test_length_one_is_dense(act: ka.Layer, readout: str, param: str) -> None:
    """A length-1 RNN never uses W: it is Dense(U_std, b_std) >> phi (then the readout Dense)."""
    x = np.random.default_rng(3).normal(size=(5, 1, 3))
    rnn = ka.Recurrent(act, W, U, B, readout=readout, parameterization=param, out_dim=64) >> ka.Dense(
        V, parameterization=param)
    dense = ka.Dense(U, B, parameterization=param, out_dim=64) >> act >> ka.Dense(V, parameterization=param)
    k, d = ka.kernel(rnn, x), ka.kernel(dense, x[:, 0])
    for name in ("nngp", "ntk"):
        np.testing.assert_allclose(np.asarray(getattr(k, name)).reshape(5, 5), getattr(d, name), rtol=1e-13)


# ------------------------------------------------------------------ Monte Carlo over the finite-width twin

def _mc(layer: ka.Layer, x, n: int, samples: int, seed: int):
    """Mean and standard error of V^2 r.r'/n and of J J^T over random inits of the twin + readout v."""
    init, apply, out_shape = layer.finite(dict(layer.params), dict(layer.static), x.shape[1:], n)

    def one(key):
        k1, k2 = jax.random.split(key)
        params = {"rnn": init(k1), "v": jax.random.normal(k2, out_shape[-1:])}
        flat, unravel = ravel_pytree(params)

        def f(fl):
            p = unravel(fl)
            return V * apply(p["rnn"], x) @ p["v"] / jnp.sqrt(out_shape[-1])
        jac = jax.jacrev(f)(flat)
        r = apply(params["rnn"], x)
        return V**2 * r @ r.T / out_shape[-1], jac @ jac.T

    run = jax.jit(jax.vmap(one))
    keys = jax.random.split(jax.random.PRNGKey(seed), samples)
    chunks = [run(keys[i:i + 100]) for i in range(0, samples, 100)]
    est = [np.concatenate([np.asarray(c[j]) for c in chunks]) for j in (0, 1)]
    return [(e.mean(0), e.std(0, ddof=1) / np.sqrt(samples)) for e in est]


@pytest.mark.parametrize("act, readout, bidirectional", [("Relu", "last", False), ("Erf", "last", True),
                                                       ("Relu", "mean", True)])
def test_monte_carlo_finite_width(act: str, readout: str, bidirectional: bool) -> None:
    """Lengths (5, 5, 3, 2): pairs of equal and of unequal lengths (a plain array is a full-length batch).

    Richardson R = 2 E_{2n} - E_n removes the O(1/n) bias of the finite-width mean (E_n = K + a/n + O(n^-2):
    Dyer & Gur-Ari 2020, Hanin & Nica 2020): without it the bias at n = 128 is 3-7 standard errors here.
    Tolerance 4 SE_R (fixed seeds) + an allowance for the O(n^-2) remainder of a quarter of the observed
    shift |E_n - E_2n| (calibration with 1e4-2e4 samples at n = 16, 32, 64, ReLU, lengths (5, 3, 5, 4): the
    relative bias was 0.335, 0.161, 0.070 -- it halves per doubling, so the remainder is far below that)."""
    seqs = seqs_data([5, 5, 3, 2], seed=11, dtype=np.float32)
    x_mc, x_k = ka.Sequences.from_list(seqs), ka.Sequences.from_list(seqs, dtype=np.float64)
    layer = ka.Recurrent(DUALS[act][0](), W, U, B, readout=readout, bidirectional=bidirectional)
    k = ka.kernel(layer >> ka.Dense(V), x_k)
    iu = np.triu_indices(4)
    narrow, wide = _mc(layer, x_mc, 64, 2000, 1), _mc(layer, x_mc, 128, 2000, 2)
    for which, exact in ((0, np.asarray(k.nngp)), (1, np.asarray(k.ntk))):
        (e1, s1), (e2, s2) = narrow[which], wide[which]
        rich, se = 2 * e2 - e1, np.sqrt(4 * s2**2 + s1**2)
        tol = 4 * se + np.abs(e1 - e2) / 4
        assert np.all(np.abs(rich - exact)[iu] <= tol[iu]), (which, (rich - exact)[iu], tol[iu])


# ------------------------------------------------------------------ compile size independent of T

def _count_eqns(jaxpr) -> int:
    from jax.extend import core as jcore
    n = 0
    for eqn in jaxpr.eqns:
        n += 1
        for v in eqn.params.values():
            for s in v if isinstance(v, (tuple, list)) else (v,):
                if isinstance(s, jcore.ClosedJaxpr):
                    n += _count_eqns(s.jaxpr)
                elif isinstance(s, jcore.Jaxpr):
                    n += _count_eqns(s)
    return n


def test_program_size_independent_of_length() -> None:
    """Structural (not a timing): the traced jaxpr and the lowered StableHLO of the whole kernel function have
    the same number of operations for T = 10 and T = 100, so compile time cannot grow with the length."""
    net = (ka.Recurrent(ka.Erf(), 1.0, 1.0, 0.1, readout="sequence")
           >> ka.Recurrent(ka.Relu(), 1.0, 1.0, 0.1, readout="mean", bidirectional=True) >> ka.Dense())
    f = ka.compile(net)
    sizes = []
    for t in (10, 100):
        x = jax.tree_util.tree_map(jnp.asarray, ka.Sequences(np.ones((2, t, 2), np.float32), [t, 2]))
        p = {k: jnp.float32(v) for k, v in f.params.items()}
        eqns = _count_eqns(jax.make_jaxpr(f._jitted)(x, None, p).jaxpr)
        hlo = jax.jit(f._jitted).lower(x, None, p).as_text()
        sizes.append((eqns, len(re.findall(r"stablehlo\.\w+", hlo))))
    assert sizes[0] == sizes[1]


# ------------------------------------------------------------------ variable-length semantics and API

def test_padding_semantics() -> None:
    seqs = seqs_data()
    net = ka.Recurrent(ka.Relu(), W, U, B, readout="mean") >> ka.Dense(V)
    base = ka.Sequences.from_list(seqs, dtype=np.float64)
    k = ka.kernel(net, base)
    junk = np.array(base.x)
    junk[1, :2] = 7.0
    junk[2, :4] = np.nan  # padding values are ignored, even NaN
    np.testing.assert_allclose(ka.kernel(net, ka.Sequences(junk, LENS)).ntk, k.ntk, rtol=1e-14)
    back = np.zeros_like(base.x)
    for i, s in enumerate(seqs):
        back[i, :len(s)] = s
    np.testing.assert_allclose(ka.kernel(net, ka.Sequences(back, LENS, padding="back")).ntk, k.ntk, rtol=1e-14)
    # x1 and x2 may have different T (last steps aligned) = both front-padded to a common T
    short = ka.Sequences.from_list(seqs[1:3], dtype=np.float64)  # T = 3
    np.testing.assert_allclose(ka.kernel(net, base, short).ntk, np.asarray(k.ntk)[:, 1:3], rtol=1e-14)
    # full-length Sequences = plain array; tiling = one block
    x = np.random.default_rng(0).normal(size=(4, 5, 2))
    np.testing.assert_allclose(ka.kernel(net, ka.Sequences(x)).ntk, ka.kernel(net, x).ntk, rtol=1e-14)
    tiled = ka.kernel(net, base, batch_size=2)
    np.testing.assert_allclose(tiled.ntk, k.ntk, rtol=1e-14)
    np.testing.assert_allclose(tiled.cov1, k.cov1, rtol=1e-14)


def test_gradient_wrt_hyperparameter() -> None:
    """d NTK / d W_std through the scan equals a central finite difference (float32, eps = 1e-2: O(eps^2))."""
    f = ka.compile(ka.Recurrent(ka.Relu(), W, U, B, readout="mean") >> ka.Dense(V), "ntk")
    x = ka.Sequences.from_list(seqs_data(dtype=np.float32))
    g = jax.grad(lambda w: f(x, params={"sigma_w_1": w}).sum())(jnp.float32(W))
    eps = 1e-2
    fd = (f(x, params={"sigma_w_1": W + eps}).sum() - f(x, params={"sigma_w_1": W - eps}).sum()) / (2 * eps)
    assert abs(float(g) - float(fd)) < 1e-3 * abs(float(fd))


def test_step_map_is_theory() -> None:
    m = ka.recurrent_step_map(ka.Recurrent(ka.Relu(), W, U, B))
    w, u, b = sp.symbols("sigma_w_1 sigma_u_1 sigma_b_1", positive=True)
    kp, dp, tp, ki, ti = sp.symbols("K_prev D_prev Theta_prev K_in Theta_in", real=True)
    s = w**2 * kp + u**2 * ki + b**2
    assert sp.simplify(m["S"] - s) == 0
    assert sp.simplify(m["Theta"] - (s + w**2 * dp * tp + u**2 * ti)) == 0
    s11, s22 = sp.symbols("S_11 S_22", positive=True)
    vals = {w: W, u: U, b: B, kp: 0.4, ki: 0.3, s11: 1.1, s22: 0.9}
    t_ref, d_ref = relu_dual(1.1, float(s.subs(vals)), 0.9)
    k, d = (float(plain(m[name]).subs(vals)) for name in ("K", "D"))  # plain: corr node -> s12/sqrt(s11 s22)
    assert abs(k - t_ref) < 1e-12 and abs(d - d_ref) < 1e-12


@pytest.mark.parametrize("make, match", [
    (lambda: ka.Sequences(np.ones((2, 4, 1)), [0, 4]), "between 1 and T"),
    (lambda: ka.Sequences(np.ones((2, 4, 1)), [5, 4]), "between 1 and T"),
    (lambda: ka.Sequences(np.ones((2, 4, 1)), [2.5, 4]), "integers"),
    (lambda: ka.Sequences(np.ones((2, 4, 1)), [4]), "2 integers"),
    (lambda: ka.Sequences(np.ones((2, 4, 1, 1))), "3-D"),
    (lambda: ka.Sequences(np.full((2, 4, 1), np.nan), [2, 4]), "NaN"),
    (lambda: ka.Sequences(np.ones((2, 4, 1)), padding="left"), "front"),
    (lambda: np.asarray(ka.Sequences(np.ones((2, 4, 1)))), "lengths"),
    (lambda: ka.kernel(ka.Dense() >> ka.Relu(), ka.Sequences(np.ones((2, 4, 1)))), "lengths"),
    (lambda: ka.kernel(ka.Recurrent(ka.Relu()), np.ones((2, 4, 1)), np.ones((2, 4, 2))), "features"),
    (lambda: ka.kernel(ka.Recurrent(ka.Relu()) >> ka.Recurrent(ka.Relu()), np.ones((2, 3, 1))), "time axis"),
    (lambda: ka.kernel(ka.Dense() >> ka.Recurrent(ka.Relu(), readout="mean"), np.ones((2, 3, 1))), "tracked"),
    (lambda: ka.Recurrent(ka.Relu(), readout="first"), "readout"),
    (lambda: ka.Recurrent("relu"), "activation layer"),
    (lambda: ka.kernel(ka.Recurrent(ka.Relu(), parameterization="standard"), np.ones((2, 3, 1))), "out_dim"),
])
def test_errors_name_the_fix(make, match: str) -> None:
    with pytest.raises(ka.KernelalgError, match=match) as err:
        make()
    assert "Fix" in str(err.value)
