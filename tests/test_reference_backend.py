"""The NumPy reference backend on structural networks (conv, pooling, readouts, recurrent).

* Independent expectations: the reference alone (no JAX in the loop) against neural-tangents 0.6.5's stored
  kernels (tests/data/nt_conv_reference.npz, every stored case) and against the brute-force recurrent kernel
  written from theory.md in tests/test_recurrent.py.
* Two backends of one program: the JAX kernel and the NumPy reference agree to ~1e-12 at float64 on small conv
  (SAME/VALID/CIRCULAR, strides, AvgPool, SumPool, GlobalAvgPool, GlobalSumPool, Flatten, chunked and batch
  layouts) and recurrent networks (readouts last/mean/sequence, bidirectional, stacked, ka.Sequences of
  different lengths, x1 and x2 of different T).
* Refusals: a structural op without an implementation for the backend it runs on, mpmath on a non-dense
  network, an unknown ``backend``.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import kernelalg as ka
from kernelalg.backends import MPMATH_TABLE, NUMPY_TABLE, run_program
from kernelalg.core._errors import KernelalgError, LoweringError
from kernelalg.core._program import Op
from test_conv import NT, NT_NAMES, assert_nt, nt_net
from test_recurrent import DUALS, B, U, V, W, raw_input, ref_kernel, ref_layer, seqs_data

TOL = dict(rtol=1e-12, atol=1e-12)


def _close(jax_out: ka.Kernel, ref_out: ka.Kernel) -> None:
    for field in ("nngp", "ntk", "cov1", "cov2"):
        np.testing.assert_allclose(np.asarray(getattr(jax_out, field)), getattr(ref_out, field), **TOL,
                                   err_msg=field)


# ------------------------------------------------------------------------------ independent expectations


@pytest.mark.parametrize("name", NT_NAMES)
def test_reference_matches_neural_tangents(name: str) -> None:
    """Every stored neural-tangents case (symmetric and cross), evaluated by the NumPy reference alone."""
    x1, x2 = NT[f"{name}.x1"], NT[f"{name}.x2"]
    f = ka.compile(nt_net(name), backend="numpy")
    assert isinstance(f, ka.ReferenceKernel)
    assert_nt(f(x1, None), name, "sym")
    assert_nt(f(x1, x2), name, "cross")


@pytest.mark.parametrize("act, readout, bidirectional", [
    ("Relu", "last", False), ("Erf", "mean", False), ("Relu", "mean", True), ("Erf", "last", True)])
def test_reference_matches_recurrent_bruteforce(act: str, readout: str, bidirectional: bool) -> None:
    """Unequal lengths (5, 3, 1, 4): the brute force truncates each sequence, the reference pads and masks."""
    make, dual = DUALS[act]
    seqs = seqs_data()
    net = ka.Recurrent(make(), W, U, B, readout=readout, bidirectional=bidirectional) >> ka.Dense(V)
    k = ka.reference_kernel(net, ka.Sequences.from_list(seqs, dtype=np.float64), get=("nngp", "ntk"))
    ref = ref_kernel(seqs, ref_layer(raw_input, dual, W, U, B, bidirectional), readout)
    np.testing.assert_allclose(k.nngp, ref[..., 0], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(k.ntk, ref[..., 1], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(k.cov1, np.diag(ref[..., 0]), rtol=1e-12, atol=1e-13)


# --------------------------------------------------------------------------- JAX and NumPy, same program


def _images(shape: tuple, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n,) + shape)


CONV_NETS = {
    # chunked (one readout), full pixel-pair grids: SAME + strides, AvgPool, CIRCULAR, GlobalAvgPool
    "same_avgpool_circular_gap": (ka.Conv((3, 3), strides=(2, 1), padding="SAME", W_std=1.4, b_std=0.1) >> ka.Relu()
                                  >> ka.AvgPool((2, 2), padding="SAME", normalize_edges=True)
                                  >> ka.Conv((2, 2), padding="CIRCULAR", W_std=1.2, b_std=0.2) >> ka.Erf()
                                  >> ka.GlobalAvgPool() >> ka.Dense(1.1, 0.1), (5, 4, 2)),
    # chunked, matching-pixel diagonal: VALID + strides, Flatten
    "valid_strided_flatten": (ka.Conv((2, 2), strides=(1, 2), padding="VALID", W_std=1.3, b_std=0.05) >> ka.Relu()
                              >> ka.Conv((2, 1), padding="CIRCULAR", W_std=1.1) >> ka.Flatten()
                              >> ka.Dense(0.9, 0.2), (4, 5, 3)),
    # 1-D, SumPool with strides, GlobalSumPool
    "conv1d_sumpool_gsp": (ka.Conv((3,), padding="SAME", W_std=1.2, b_std=0.1) >> ka.Relu()
                           >> ka.SumPool((2,), strides=(2,), padding="VALID") >> ka.Conv((2,), W_std=1.0)
                           >> ka.GlobalSumPool(), (7, 2)),
    # two readouts: batch layout with self grids on the batch diagonal / in the extension
    "batch_two_readouts": (ka.Conv((2, 2), padding="SAME", W_std=1.5, b_std=0.1) >> ka.Relu()
                           >> ka.AvgPool((2, 2), strides=(1, 1), padding="VALID")
                           >> ka.FanOut(2) >> ka.parallel(ka.Flatten() >> ka.Dense(1.0),
                                                          ka.GlobalAvgPool() >> ka.Dense(1.2, 0.1))
                           >> ka.FanInSum(), (4, 3, 2)),
}


@pytest.mark.parametrize("name, sym", [(n, False) for n in sorted(CONV_NETS)] + [
    ("valid_strided_flatten", True), ("batch_two_readouts", True)])
def test_conv_reference_matches_jax(name: str, sym: bool) -> None:
    """x2 given; x2 = None (symmetric half, self grids on the batch diagonal) on two networks (the stored
    neural-tangents cases check the reference's symmetric calls on every case)."""
    net, shape = CONV_NETS[name]
    x1, x2 = _images(shape, 3, 0), (None if sym else _images(shape, 2, 1))
    _close(ka.kernel(net, x1, x2), ka.reference_kernel(net, x1, x2, get=("nngp", "ntk")))


def test_conv_spatial_output_reference_matches_jax() -> None:
    """Without a readout the kernel keeps its pixel axes (N, M, *S, *S')."""
    net = ka.Conv((3, 3), padding="SAME", W_std=1.3, b_std=0.1) >> ka.Relu() >> ka.Conv((2, 2), W_std=1.2)
    x = _images((4, 3, 2), 3, 2)
    ref = ka.reference_kernel(net, x, get=("nngp", "ntk"))
    assert ref.ntk.shape == (3, 3, 3, 2, 3, 2)
    _close(ka.kernel(net, x), ref)


def _seqs(lens: list[int], t: int, seed: int) -> ka.Sequences:
    rng = np.random.default_rng(seed)
    return ka.Sequences.from_list([rng.normal(size=(n, 2)) for n in lens], length=t, dtype=np.float64)


RNN_NETS = {
    "relu_last": ka.Recurrent(ka.Relu(), 1.1, 0.9, 0.1) >> ka.Dense(1.2),
    "erf_mean": ka.Recurrent(ka.Erf(), 1.0, 1.2, 0.2, readout="mean") >> ka.Dense(1.0, 0.1),
    "bidirectional_stack": (ka.Recurrent(ka.Relu(), 1.0, 1.0, 0.1, readout="sequence", bidirectional=True)
                            >> ka.Recurrent(ka.Erf(), 0.8, 1.0, 0.1, readout="mean") >> ka.Dense(1.0)),
    "time_distributed": (ka.Recurrent(ka.Relu(), 1.0, 1.0, 0.1, readout="sequence") >> ka.Dense(1.3, 0.1)
                         >> ka.Relu() >> ka.Recurrent(ka.Erf(), 0.8, 1.0, 0.1) >> ka.Dense(1.0)),
    "sequence_out": ka.Recurrent(ka.Relu(), 1.0, 1.0, 0.1, readout="sequence", bidirectional=True),
}


@pytest.mark.parametrize("name, sym", [(n, False) for n in sorted(RNN_NETS)] + [("relu_last", True)])
def test_recurrent_reference_matches_jax(name: str, sym: bool) -> None:
    """ka.Sequences of different lengths; x2 with another padded length T (or None)."""
    net = RNN_NETS[name]
    x1, x2 = _seqs([2, 4, 3], 4, 0), (None if sym else _seqs([5, 1], 5, 1))
    _close(ka.kernel(net, x1, x2), ka.reference_kernel(net, x1, x2, get=("nngp", "ntk")))


def test_numpy_backend_takes_params_and_any_input_dtype() -> None:
    """compile(backend="numpy"): hyperparameter overrides equal the network built with those values; float32
    inputs are evaluated in float64."""
    def conv(w: float) -> ka.Layer:
        return ka.Conv((2, 2), padding="SAME", W_std=w, b_std=0.1) >> ka.Relu() >> ka.GlobalAvgPool()

    x = _images((3, 3, 2), 3, 4)
    f = ka.compile(conv(1.0), get="ntk", backend="numpy")
    name = next(n for n in f.params if n.startswith("sigma_w"))
    want = ka.reference_kernel(conv(1.7), x)
    np.testing.assert_allclose(f(x, params={name: 1.7}), want, rtol=1e-14, atol=0)
    got32 = f(x.astype(np.float32))
    assert got32.dtype == np.float64
    np.testing.assert_array_equal(got32, ka.reference_kernel(conv(1.0), x.astype(np.float32).astype(np.float64)))


# ----------------------------------------------------------------------------------------------- refusals


def test_walker_refuses_op_without_implementation_for_its_backend() -> None:
    a, out = sp.Symbol("a"), sp.Symbol("out")
    op = Op((out,), "my_stencil", {"jax": lambda x: (x,)}, (a,))
    with pytest.raises(LoweringError, match=r"'my_stencil'.*no numpy implementation.*it has: jax.*Fix:"):
        run_program([op], {a: np.ones(2)}, NUMPY_TABLE)


def test_mpmath_walker_refuses_conv_ops() -> None:
    net = ka.Conv((2, 2), W_std=1.0) >> ka.Relu() >> ka.Flatten()
    program = ka.symbolic(net).program
    with pytest.raises(LoweringError, match=r"'flatten'.*no mpmath implementation.*it has: jax, numpy"):
        run_program(program, {}, MPMATH_TABLE)


@pytest.mark.parametrize("net, x", [
    (ka.Conv((2, 2), W_std=1.0) >> ka.Relu() >> ka.GlobalAvgPool(), _images((3, 3, 1), 2, 0)),
    (ka.Recurrent(ka.Relu(), 1.0, 1.0) >> ka.Dense(), np.ones((2, 3, 2)))])
def test_mpmath_reference_refuses_structural_networks(net: ka.Layer, x: np.ndarray) -> None:
    with pytest.raises(LoweringError, match=r"dense networks only.*no mpmath implementation.*Fix: use dps=None"):
        ka.reference_kernel(net, x, dps=30)


def test_unknown_backend_names_the_real_ones() -> None:
    with pytest.raises(KernelalgError, match=r"backend='torch'.*backend='jax'.*backend='numpy'") as err:
        ka.compile(ka.Dense(), backend="torch")
    assert "reference'" not in str(err.value)
