"""LayerNorm and Dropout: exact kernels against neural-tangents 0.6.5, closed forms, Monte Carlo, errors.

References of the values:
* neural-tangents 0.6.5 itself (tests/data/nt_attention_reference.npz, made by
  benchmarks/make_nt_attention_reference.py in NT's own venv), float64, 1e-10 relative;
* closed forms written out here (LayerNorm's rescaling, the ReLU NTK factor 1/2 at correlation 1, Dropout's
  1/rate on an input with itself);
* Monte Carlo over the finite-width twins with standard errors (``ka.verify``: |z| <= 5, extrapolated over
  two widths where the twin is biased at finite width).
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import kernelalg as ka
from _nt_reference import assert_matches_nt, nt_calls, nt_cases, nt_inputs, nt_net

CASES = [(n, c) for n in nt_cases() if n.startswith(("layernorm", "dropout")) for c in nt_calls(n)]
RNG = np.random.default_rng(7)
X = RNG.normal(size=(3, 4))


@pytest.mark.parametrize("name, call", CASES)
def test_matches_neural_tangents(name: str, call: str) -> None:
    """NNGP, NTK and variances agree with neural-tangents 0.6.5 to 1e-10 (dense, 1-D and 2-D conv states, spatial
    axes normalized, Dropout in train and test mode, x2 None / different / equal to x1)."""
    x1, x2 = nt_inputs(name, call)
    assert_matches_nt(ka.kernel(nt_net(name), x1, x2), name, call)


def test_layernorm_closed_form_is_the_rescaling() -> None:
    """ka.symbolic(Dense >> LayerNorm) is K / sqrt((eps + K11)(eps + K22)), Theta likewise (written out here)."""
    sym = ka.symbolic(ka.Dense(1.5, 0.3) >> ka.LayerNorm(eps=0.25), keep_symbols=True)
    w, b, eps = (next(s for s in sym.params if s.name.startswith(stem)) for stem in ("sigma_w", "sigma_b", "eps"))
    k, k1, k2 = (w**2 * v + b**2 for v in (ka.C, ka.Q1, ka.Q2))
    scale = 1 / sp.sqrt((eps + k1) * (eps + k2))
    assert sp.simplify(sym.nngp - k * scale) == 0
    assert sp.simplify(sym.ntk - k * scale) == 0  # Theta of one Dense layer is K in the NTK parametrization
    assert sp.simplify(sym.var1 - k1 / (eps + k1)) == 0


def test_layernorm_relu_ntk_diagonal() -> None:
    """After LayerNorm an input's own pair has correlation exactly 1, where the ReLU NTK factor is 1/2:
    Theta(x, x) = K_out(x, x) + W^2 / 2 * Theta_LN(x, x), K_out = W^2 T + b^2, T = v/2 (Cho & Saul at rho = 1)."""
    w1, b1, eps, w2, b2 = 1.3, 0.2, 0.1, 1.1, 0.05
    net = ka.Dense(w1, b1) >> ka.LayerNorm(eps=eps) >> ka.Relu() >> ka.Dense(w2, b2)
    k = ka.kernel(net, X)
    kin = w1**2 * np.sum(X * X, axis=1) / X.shape[1] + b1**2
    v = kin / (eps + kin)  # the LayerNorm variance of each input, = its NTK (one Dense layer)
    nngp = w2**2 * v / 2 + b2**2
    np.testing.assert_allclose(np.diag(k.nngp), nngp, rtol=1e-13)
    np.testing.assert_allclose(np.diag(k.ntk), nngp + w2**2 * v / 2, rtol=1e-13)


def test_dropout_changes_only_an_input_with_itself() -> None:
    """Train mode: (1/rate) on the pairs of an input with itself (x2 None: the diagonal; x2 a copy of x1: its
    diagonal; x2 different: nowhere), the test-mode kernel everywhere else."""
    rate = 0.6
    net = ka.Dense(1.2, 0.1) >> ka.Relu() >> ka.Dropout(rate) >> ka.Dense(1.4, 0.0)
    plain = ka.kernel(ka.Dense(1.2, 0.1) >> ka.Relu() >> ka.Dropout(rate, "test") >> ka.Dense(1.4, 0.0), X)
    eye = np.eye(len(X))
    for x2 in (None, X.copy()):
        k = ka.kernel(net, X, x2)
        for name in ("nngp", "ntk"):
            want = np.asarray(getattr(plain, name)) * (1 + (1 / rate - 1) * eye)
            np.testing.assert_allclose(getattr(k, name), want, rtol=1e-13)
    k = ka.kernel(net, X, X[::-1].copy())
    np.testing.assert_allclose(k.nngp, np.asarray(plain.nngp)[:, ::-1], rtol=1e-13)
    np.testing.assert_allclose(k.cov1, np.diag(plain.nngp) / rate, rtol=1e-13)
    assert "KroneckerDelta" in str(ka.symbolic(net).nngp)


def test_dropout_identity_survives_tiling_and_the_reference_backend() -> None:
    """Tiles of a symmetric kernel off the diagonal are pairs of different inputs: the tiled kernel equals the
    one-block kernel, and the NumPy reference equals JAX (conv net, pixel-pair grids in chunks)."""
    net = ka.Dense(1.2, 0.1) >> ka.Relu() >> ka.Dropout(0.7) >> ka.Dense(1.1, 0.1)
    x = RNG.normal(size=(7, 3))
    whole = ka.kernel(net, x)
    tiled = ka.kernel(net, x, batch_size=3)
    np.testing.assert_allclose(tiled.ntk, whole.ntk, rtol=1e-13)
    conv = ka.Conv((2,), padding="SAME") >> ka.Relu() >> ka.Dropout(0.7) >> ka.Conv((2,)) >> ka.Relu() \
        >> ka.GlobalAvgPool() >> ka.Dense()
    xs = RNG.normal(size=(3, 4, 2))
    for x2 in (None, xs.copy()):
        np.testing.assert_allclose(ka.reference_kernel(conv, xs, x2, get="ntk"), ka.kernel(conv, xs, x2, get="ntk"),
                                   rtol=1e-12)


def test_dropout_twin_masks() -> None:
    """The twin keeps each unit with probability rate (binomial: |kept/total - rate| < 5 SE), the same mask for
    the same input and independent masks for different inputs."""
    rate = 0.7
    twin = ka.finite(ka.Dense(1.0) >> ka.Relu() >> ka.Dropout(rate) >> ka.Dense(1.0), width=4096)
    params = twin.init(0, (3,))
    apply = twin.chain[2].finite(dict(twin.chain[2].params), dict(twin.chain[2].static), (4096,), 4096)[1]
    h = np.abs(RNG.normal(size=(2, 4096))) + 0.1
    h = np.concatenate([h, h[:1]])
    y = np.asarray(apply(params[2], h))
    kept = y != 0
    se = np.sqrt(rate * (1 - rate) / kept[:2].size)
    assert abs(kept[:2].mean() - rate) < 5 * se
    assert np.array_equal(kept[0], kept[2]) and not np.array_equal(kept[0], kept[1])
    np.testing.assert_allclose(y[kept], (h / rate)[kept], rtol=1e-6)
    agree = (kept[0] == kept[1]).mean()  # independent masks agree on rate^2 + (1 - rate)^2 of the units
    p = rate**2 + (1 - rate) ** 2
    assert abs(agree - p) < 5 * np.sqrt(p * (1 - p) / kept.shape[1])


def test_layernorm_monte_carlo() -> None:
    """Dense >> LayerNorm >> Relu >> Dense and a residual sum before the LayerNorm: the finite twins (variance
    estimated from the width's channels: biased as 1/n) extrapolated over widths (32, 64), 256 networks each,
    within 5 SE of the exact kernels (median SE 1.3% / 2.4% of max |K|)."""
    block = ka.FanOut(2) >> ka.parallel(ka.Relu() >> ka.Dense(1.1, 0.1), ka.Identity()) >> ka.FanInSum()
    net = ka.Dense(1.3, 0.2) >> block >> ka.LayerNorm(eps=0.05) >> ka.Relu() >> ka.Dense(1.2, 0.1)
    v = ka.verify(net, X.astype(np.float32), width=32, samples=256, key=3)
    assert v.passed, v.summary()


def test_dropout_monte_carlo_one_width() -> None:
    """One hidden layer with Dropout: the twin is unbiased at any width (the masks are exact Bernoulli draws, the
    readout conditional is exact), so one width (16) with 1024 networks: |z| <= 5 on x2 None (diagonal scaled)
    and on x2 a copy of x1 (the same inputs get the same masks); median SE 0.8% / 0.65% of max |K|."""
    net = ka.Dense(1.3, 0.2) >> ka.Relu() >> ka.Dropout(0.6) >> ka.Dense(1.2, 0.1)
    x = X.astype(np.float32)
    for x2 in (None, x.copy()):
        v = ka.verify(net, x, x2, widths=(16,), samples=1024, key=4)
        assert v.passed, v.summary()


@pytest.mark.parametrize("make, x, error, words", [
    (lambda: ka.Dense() >> ka.LayerNorm(axis=0), X, ka.KernelalgError, "batch axis"),
    (lambda: ka.Conv((2,)) >> ka.LayerNorm(axis=1), np.ones((2, 3, 2)), ka.KernelalgError, "channel axis"),
    (lambda: ka.Conv((2,)) >> ka.LayerNorm(axis=(1, 3)), np.ones((2, 3, 2)), ka.KernelalgError, "out of range"),
    (lambda: ka.Dense() >> ka.Relu() >> ka.LayerNorm(), X, ka.LayerOrderError, "not Gaussian"),
    (lambda: ka.Recurrent(ka.Erf(), readout="sequence") >> ka.Dense() >> ka.LayerNorm(axis=(1, 2)),
     np.ones((2, 3, 2)), ka.KernelalgError, "time axis"),
    (lambda: ka.Dropout(0.5) >> ka.Dense(), X, ka.LayerOrderError, "network input"),
])
def test_bad_use_names_the_fix(make, x, error, words: str) -> None:
    with pytest.raises(error, match=words) as info:
        ka.kernel(make(), x)
    assert "Fix:" in str(info.value)


@pytest.mark.parametrize("make, words", [
    (lambda: ka.Dropout(0.0), "keep probability"), (lambda: ka.Dropout(1.5), "keep probability"),
    (lambda: ka.Dropout(0.5, mode="eval"), "mode"), (lambda: ka.LayerNorm(axis="channels"), "axis"),
    (lambda: ka.LayerNorm(eps=-1.0), "eps"),
])
def test_bad_arguments_name_the_fix(make, words: str) -> None:
    with pytest.raises(ka.KernelalgError, match=words) as info:
        make()
    assert "Fix:" in str(info.value)
