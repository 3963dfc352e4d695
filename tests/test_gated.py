"""Gated recurrent kernels (GRU, LSTM with input-driven gates) against independent references.

* ``_gated_reference``: a brute-force NumPy implementation from the model alone -- explicit sums over write
  times for the NNGP and the NTK computed BACKWARD from the readout (gradient covariances per parameter
  group), on unpadded sequences. The library runs forward recursions with masks; agreement to rounding when
  both use the same quadrature rule over the memory-gate weights.
* The quadrature: the library's trapezoid rule against a Gauss-Legendre rule on the same integrals (one gate
  weight: the reference with 400 Legendre nodes), and the error estimate of ``ka.gate_quadrature_error``.
* Monte Carlo over the finite-width twins (empirical NNGP and J J^T), Richardson-extrapolated over two widths;
  this also checks the gradient-independence assumption behind the NTK recursion.
* Compile size independent of the length, gradients w.r.t. hyperparameters, errors that name the fix.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from scipy.special import erf

import kernelalg as ka
from _gated_reference import gate_dual, reference
from kernelalg.layers.recurrent._gated_scan import gate_rule

HP = dict(w=1.2, u=0.8, b=0.3, gu=1.1, gb=0.6, v=1.1)
LENS = [5, 3, 1, 4]


def seqs_data(lens=LENS, m=2, seed=1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(L, m)).astype(dtype) for L in lens]


def make(cell: str, hp=HP, **kw) -> ka.Layer:
    layer = getattr(ka, cell)(ka.Erf(), hp["w"], hp["u"], hp["b"], gate_U_std=hp["gu"], gate_b_std=hp["gb"], **kw)
    return layer >> ka.Dense(hp["v"])


def test_gate_dual_matches_quadrature() -> None:
    """The reference's gate duals E[g g'], E[g' g'] (g = (1 + erf)/2) against a 2-D Gauss-Hermite rule."""
    z, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / w.sum()
    c11, c12, c22 = 0.9, 0.5, 1.3
    u = np.sqrt(c11) * z[:, None]
    v = c12 / np.sqrt(c11) * z[:, None] + np.sqrt(c22 - c12**2 / c11) * z[None, :]
    g = lambda a: 0.5 * (1 + erf(a))  # noqa: E731
    dg = lambda a: np.exp(-a * a) / np.sqrt(np.pi)  # noqa: E731
    ww = w[:, None] * w[None, :]
    np.testing.assert_allclose(gate_dual(c11, c12, c22), (np.sum(ww * g(u) * g(v)), np.sum(ww * dg(u) * dg(v))),
                               rtol=1e-12)


CASES = [("GRU", "last", False, True), ("GRU", "mean", True, True), ("GRU", "mean", False, False),
         ("LSTM", "mean", True, True), ("LSTM", "last", False, True)]


@pytest.mark.parametrize("cell, readout, bidirectional, reset", CASES)
def test_matches_bruteforce_reference(cell: str, readout: str, bidirectional: bool, reset: bool) -> None:
    """Unequal lengths (5, 3, 1, 4), m = 2: the reference truncates each sequence, the kernel pads and masks."""
    seqs, q = seqs_data(), 5
    kw = {"reset": reset} if cell == "GRU" else {}
    net = make(cell, readout=readout, bidirectional=bidirectional, quadrature=q, **kw)
    k = ka.kernel(net, ka.Sequences.from_list(seqs, dtype=np.float64))
    ref = reference(seqs, HP, cell == "LSTM", reset, gate_rule(3, q), readout, bidirectional)
    np.testing.assert_allclose(np.asarray(k.nngp), ref[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(k.ntk), ref[1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(k.cov1), np.diag(ref[0]), rtol=1e-12)


@pytest.mark.parametrize("cell", ["GRU", "LSTM"])
def test_sequence_readout_grid(cell: str) -> None:
    """readout="sequence" >> Dense: entry (t, t') is the "last" kernel of the sequences cut at t and t'."""
    seqs, q = seqs_data([4, 3], seed=5), 4
    k = ka.kernel(make(cell, readout="sequence", quadrature=q), ka.Sequences.from_list(seqs, dtype=np.float64))
    grid_k, grid_n = np.asarray(k.nngp)[0, 1], np.asarray(k.ntk)[0, 1]     # (T, T') = (4, 4), front padded
    for t in range(1, 5):
        for tp in range(1, 4):
            ref = reference([seqs[0][:t], seqs[1][:tp]], HP, cell == "LSTM", True, gate_rule(3, q), "last")
            np.testing.assert_allclose((grid_k[t - 1, tp], grid_n[t - 1, tp]), ref[:, 0, 1], rtol=1e-12)


def _legendre_rule(n: int = 400, half: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    z, w = np.polynomial.legendre.leggauss(n)
    z, w = half * z, half * w * np.exp(-(half * z) ** 2 / 2) / np.sqrt(2 * np.pi)
    return z[:, None], w


def test_quadrature_converges_to_an_independent_rule() -> None:
    """One gate weight (m = 1, no gate bias): Gauss-Legendre with 400 nodes on [-8, 8] in the reference vs the
    library's trapezoid rule. Once the spacing resolves the gate's transition in xi (width ~ 1/(gate_U_std
    max|x_t|) = 0.37 here) the error falls exponentially (65 -> 129 points: 4e-7 -> below 1e-11; with 17 or 33
    points it is 5e-3), and gate_quadrature_error (65 against 129 points) bounds it."""
    seqs = seqs_data([8, 6, 3], m=1, seed=2)
    hp = dict(HP, gb=None)
    ref = reference(seqs, hp, False, True, _legendre_rule(), "last")
    est = ka.gate_quadrature_error(make("GRU", hp, quadrature=65), ka.Sequences.from_list(seqs, dtype=np.float64))
    err = {q: max(np.abs(np.asarray(k.nngp) - ref[0]).max(), np.abs(np.asarray(k.ntk) - ref[1]).max())
           for q, k in ((65, est.coarse), (129, est.fine))}
    assert err[65] <= 1.5 * max(est.nngp, est.ntk) and err[65] < 1e-5, (err, est)
    assert err[129] < 1e-11 and err[129] < 1e-4 * err[65], err


# ------------------------------------------------------------------ Monte Carlo over the finite-width twin

def _mc(layer: ka.Layer, x: ka.Sequences, n: int, samples: int, seed: int, v: float = HP["v"]):
    """Mean and standard error of V^2 r.r'/n and of J J^T (one readout unit) over random initialisations."""
    init, apply, out_shape = layer.finite(dict(layer.params), dict(layer.static), x.shape[1:], n)
    xs, ms = jnp.asarray(x.x), jnp.asarray(x.mask)

    def one(key):
        k1, k2 = jax.random.split(key)
        params = {"rnn": init(k1), "v": jax.random.normal(k2, out_shape[-1:])}
        flat, unravel = ravel_pytree(params)

        def f(fl, xi, mi):
            p = unravel(fl)
            return v * apply(p["rnn"], ka.Sequences._raw(xi[None], mi[None]))[0] @ p["v"] / jnp.sqrt(out_shape[-1])
        jac = jax.vmap(jax.grad(f), (None, 0, 0))(flat, xs, ms)
        r = apply(params["rnn"], x)
        return v**2 * r @ r.T / out_shape[-1], jac @ jac.T

    run = jax.jit(jax.vmap(one))
    keys = jax.random.split(jax.random.PRNGKey(seed), samples)
    chunks = [run(keys[i:i + 100]) for i in range(0, samples, 100)]
    est = [np.concatenate([np.asarray(c[j]) for c in chunks]) for j in (0, 1)]
    return [(e.mean(0), e.std(0, ddof=1) / np.sqrt(samples)) for e in est]


@pytest.mark.parametrize("cell, readout, bidirectional", [
    ("GRU", "last", False),
    pytest.param("GRU", "mean", True, marks=pytest.mark.slow), pytest.param("LSTM", "last", False, marks=pytest.mark.slow)])
def test_monte_carlo_finite_width(cell: str, readout: str, bidirectional: bool) -> None:
    """Lengths (6, 6, 3, 1), m = 1: Richardson R = 2 E_2n - E_n over n = 64, 128 removes the O(1/n) bias;
    tolerance 4 SE_R plus a quarter of the observed shift |E_n - E_2n| (as in test_recurrent). The kernel's own
    quadrature error (65 points per gate weight and bias) is below 1e-8 relative here (gate_quadrature_error;
    33 points would give 6e-4 on the NTK)."""
    seqs = seqs_data([6, 6, 3, 1], m=1, seed=11, dtype=np.float32)
    layer = getattr(ka, cell)(ka.Erf(), HP["w"], HP["u"], HP["b"], gate_U_std=HP["gu"], gate_b_std=HP["gb"],
                              readout=readout, bidirectional=bidirectional, quadrature=65)
    k = ka.kernel(layer >> ka.Dense(HP["v"]), ka.Sequences.from_list(seqs, dtype=np.float64))
    x = ka.Sequences.from_list(seqs)
    iu = np.triu_indices(4)
    narrow, wide = _mc(layer, x, 64, 1200, 1), _mc(layer, x, 128, 1200, 2)
    for which, exact in ((0, np.asarray(k.nngp)), (1, np.asarray(k.ntk))):
        (e1, s1), (e2, s2) = narrow[which], wide[which]
        rich, se = 2 * e2 - e1, np.sqrt(4 * s2**2 + s1**2)
        tol = 4 * se + np.abs(e1 - e2) / 4
        assert np.all(np.abs(rich - exact)[iu] <= tol[iu]), (which, (rich - exact)[iu], tol[iu])


def test_recurrent_gates_have_a_twin_but_no_recursion() -> None:
    """gate_W_std > 0 (textbook GRU): ka.monte_carlo runs on the twin; ka.kernel refuses and says why."""
    net = ka.GRU(ka.Erf(), gate_W_std=1.0, gate_b_std=0.5) >> ka.Dense()
    x = np.random.default_rng(0).normal(size=(3, 4, 1))
    est = ka.monte_carlo(net, x, width=32, samples=4, key=0)
    assert np.all(np.isfinite(est.ntk)) and np.all(np.diag(est.nngp) > 0)
    with pytest.raises(ka.KernelalgError, match="time-pair recursion") as err:
        ka.kernel(net, x)
    assert "Fix" in str(err.value) and "monte_carlo" in str(err.value)


# ------------------------------------------------------------------ structure, gradients, stacking, errors

def test_program_size_independent_of_length() -> None:
    """The traced jaxpr of the whole kernel function has the same size for T = 10 and T = 60."""
    f = ka.compile(ka.GRU(ka.Erf(), gate_b_std=0.5, readout="mean", bidirectional=True, quadrature=5) >> ka.Dense())
    sizes = []
    for t in (10, 60):
        x = jax.tree_util.tree_map(jnp.asarray, ka.Sequences(np.ones((2, t, 1), np.float32), [t, 2]))
        p = {k: jnp.float32(v) for k, v in f.params.items()}
        sizes.append(len(re.findall(r"stablehlo\.\w+", jax.jit(f._jitted).lower(x, None, p).as_text())))
    assert sizes[0] == sizes[1]


@pytest.mark.slow
def test_gradient_wrt_gate_hyperparameter() -> None:
    """d NTK / d gate_U_std through both scans equals a central difference (float64, eps = 1e-4)."""
    f = ka.compile(make("LSTM", readout="mean", quadrature=5), "ntk")
    x = ka.Sequences.from_list(seqs_data([3, 2]), dtype=np.float64)
    name, eps = "sigma_gu_1", 1e-4
    with jax.enable_x64(True):
        g = jax.grad(lambda s: f(x, params={name: s}).sum())(jnp.float64(HP["gu"]))
        fd = (float(np.sum(f(x, params={name: HP["gu"] + eps}))) - float(np.sum(f(x, params={name: HP["gu"] - eps})))
              ) / (2 * eps)
    assert abs(float(g) - fd) < 1e-6 * abs(fd)


@pytest.mark.slow
def test_stacked_recurrent_after_sequence_readout() -> None:
    """GRU(sequence) >> Recurrent(Relu): the Elman layer reads the GRU's grids; Monte Carlo agrees (n = 128)."""
    seqs = seqs_data([4, 4, 2], m=1, seed=3)
    gru = ka.GRU(ka.Erf(), HP["w"], HP["u"], HP["b"], gate_U_std=HP["gu"], gate_b_std=HP["gb"],
                 readout="sequence", quadrature=65)
    net = gru >> ka.Recurrent(ka.Relu(), 1.0, 1.0, 0.2)
    k = ka.kernel(net >> ka.Dense(HP["v"]), ka.Sequences.from_list(seqs, dtype=np.float64))
    est = ka.monte_carlo(net >> ka.Dense(HP["v"]), ka.Sequences.from_list(seqs, dtype=np.float32), width=256,
                         samples=400, key=3)
    for name in ("nngp", "ntk"):
        z = est.z(getattr(k, name), name)
        assert np.abs(z).max() < 4.5, (name, z)


def test_padding_semantics() -> None:
    """Padding values are ignored (even NaN); x1 and x2 may have different padded lengths; tiles = one block."""
    seqs = seqs_data()
    net = make("LSTM", readout="mean", quadrature=5)
    f = ka.compile(net)
    base = ka.Sequences.from_list(seqs, dtype=np.float64)
    k = f(base)
    junk = np.array(base.x)
    junk[1, :2], junk[2, :4] = 7.0, np.nan
    np.testing.assert_allclose(f(ka.Sequences(junk, LENS)).ntk, k.ntk, rtol=1e-13)
    short = ka.Sequences.from_list(seqs[1:3], dtype=np.float64)          # T = 3 against T = 5
    np.testing.assert_allclose(f(base, short).ntk, np.asarray(k.ntk)[:, 1:3], rtol=1e-13)
    tiled = f(base, batch_size=2)
    np.testing.assert_allclose(tiled.ntk, k.ntk, rtol=1e-13)
    np.testing.assert_allclose(tiled.cov1, k.cov1, rtol=1e-13)


@pytest.mark.parametrize("make_err, match", [
    (lambda: ka.kernel(ka.Dense() >> ka.GRU(ka.Erf()), np.ones((2, 3, 1))), "raw input"),
    (lambda: ka.kernel(ka.LSTM(ka.Erf(), gate_W_std=0.5), np.ones((2, 3, 1))), "time-pair recursion"),
    (lambda: ka.kernel(ka.GRU(ka.Erf(), gate_b_std=0.5, quadrature=200), np.ones((2, 3, 1))), "nodes"),
    (lambda: ka.GRU(ka.Erf(), readout="first"), "readout"),
    (lambda: ka.LSTM("erf"), "activation layer"),
    (lambda: ka.GRU(ka.Erf(), quadrature=0), "quadrature"),
    (lambda: ka.GRU(ka.Erf(), gate_U_std=-1.0), "gate_U_std"),
])
def test_errors_name_the_fix(make_err, match: str) -> None:
    with pytest.raises(ka.KernelalgError, match=match) as err:
        make_err()
    assert "Fix" in str(err.value)


@pytest.mark.parametrize("cell", ["GRU", "LSTM"])
def test_float32_sequences_with_x64_switched_on(cell: str) -> None:
    """float32 sequences under a global x64 switch stay float32 (the scan carries crashed with a JAX TypeError:
    a strongly typed NumPy scalar promoted the gate factors to float64); values as the float64 kernel to 1e-4."""
    seqs = seqs_data([4, 2, 3], m=1, seed=3)
    with jax.enable_x64(True):
        k32 = ka.kernel(make(cell, quadrature=17), ka.Sequences.from_list(seqs, dtype=np.float32))
        k64 = ka.kernel(make(cell, quadrature=17), ka.Sequences.from_list(seqs, dtype=np.float64))
    for name in ("nngp", "ntk"):
        a, b = getattr(k32, name), getattr(k64, name)
        assert a.dtype == np.float32 and b.dtype == np.float64
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b), rtol=1e-4, atol=1e-6)
