"""Monte Carlo over finite-width twins (``ka.monte_carlo``, ``ka.convergence``) against the exact kernels.

Statistical sizing. Every check is a z-score z = (estimate - exact) / stderr per kernel entry, with
stderr = sample std / sqrt(samples) over independent networks (CLT). A test passes when all its |z| <= 5.
Under a correct kernel P(|z| > 5) = 5.7e-7 per entry, so by Bonferroni a test with m entries fails by
chance with probability <= m * 5.7e-7 (m <= 72 here: < 5e-5). Seeds are fixed, so the outcome is
deterministic; the bound says how unlucky a seed would have to be. Conversely an error of 5 SE is the
detection threshold; the relative SE of each check is printed in its docstring (measured).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kernelalg as ka
from kernelalg.finite._montecarlo import extrapolate

RNG = np.random.default_rng(2024)
X = RNG.normal(size=(3, 4)).astype(np.float32)
X2 = RNG.normal(size=(2, 4)).astype(np.float32)
Z_MAX = 5.0


def exact(net, x1, x2=None):
    return ka.kernel(net, np.asarray(x1, np.float64), None if x2 is None else np.asarray(x2, np.float64))


def two_hidden(act: ka.Layer) -> ka.Layer:
    return ka.Dense(1.4, 0.2) >> act >> ka.Dense(1.2, 0.1) >> act >> ka.Dense(1.0, 0.1)


@pytest.mark.parametrize("act", [ka.Relu(), ka.Erf(), ka.Gelu()], ids=["relu", "erf", "gelu"])
def test_large_width_two_hidden_layers(act: ka.Layer) -> None:
    """Done-when of the core issue: two hidden ReLU / erf / GELU layers at widths 128 and 256 (256 networks
    each). Richardson R = 2 E_256 - E_128 removes the O(1/n) bias (Dyer & Gur-Ari 2020); its remainder
    O(1/n^2) ~ (0.3/128)^2 relative is far below the SE (~2% relative, measured). SE of R: sqrt(4 SE_256^2 +
    SE_128^2). 6 upper-triangle entries x 2 kernels x 3 activations = 36 z-scores."""
    net = two_hidden(act)
    ex = exact(net, X)
    lo = ka.monte_carlo(net, X, width=128, samples=256, key=1)
    hi = ka.monte_carlo(net, X, width=256, samples=256, key=2)
    iu = np.triu_indices(3)
    for name in ("nngp", "ntk"):
        r = 2 * hi.get(name)[0] - lo.get(name)[0]
        se = np.sqrt(4 * hi.get(name)[1] ** 2 + lo.get(name)[1] ** 2)
        z = ((r - getattr(ex, name)) / se)[iu]
        assert np.all(np.abs(z) <= Z_MAX), (name, z)
        assert np.max(se) < 0.05 * np.max(np.abs(getattr(ex, name)))  # the check has power


@pytest.mark.parametrize("act", [ka.Relu(), ka.Erf(0.8, 1.3, 0.1), ka.Gelu()], ids=["relu", "erf", "gelu"])
def test_one_hidden_layer_unbiased_at_tiny_width(act: ka.Layer) -> None:
    """One hidden layer: the first pre-activations are exactly Gaussian, so E[NNGP] and E[NTK] equal the
    exact kernels at ANY width -- here width 4 with 4096 networks (SE <= 1.4% of max |K|). Cross inputs x2 too.
    (3 x 2 + 3 x 3 entries) x 2 kernels x 3 activations = 90 z-scores: chance failure < 5.2e-5."""
    net = ka.Dense(1.4, 0.2) >> act >> ka.Dense(1.2, 0.1)
    ex, ex_sym = exact(net, X, X2), exact(net, X)
    mc = ka.monte_carlo(net, X, X2, width=4, samples=4096, key=3)
    sym = ka.monte_carlo(net, X, width=4, samples=4096, key=4)
    assert mc.nngp.shape == (3, 2) and sym.ntk.shape == (3, 3) and mc.width == 4 and mc.samples == 4096
    for name in ("nngp", "ntk"):
        assert np.all(np.abs(mc.z(getattr(ex, name), name)) <= Z_MAX)
        assert np.all(np.abs(sym.z(getattr(ex_sym, name), name)) <= Z_MAX)
    assert np.max(sym.stderr.ntk) < 0.03 * np.max(np.abs(ex_sym.ntk))  # the check has power


DEEP_ERF = ka.serial(ka.Dense(1.5, 0.3), ka.Erf(), ka.Dense(1.5, 0.3), ka.Erf(), ka.Dense(1.5, 0.3), ka.Erf(),
                     ka.Dense(1.0, 0.1))


def test_convergence_in_width_removes_the_bias(tmp_path) -> None:
    """Three hidden erf layers at widths 4, 8, 16 (8192 networks each): the raw mean at width 4 is biased
    (the O(1/n) finite-width bias, entrywise z down to -7 in float32 draws), the error shrinks with width, and
    the weighted fit E_n = K + b/n extrapolates to the exact kernel (|z| <= 5 with the fit's SE)."""
    cv = ka.convergence(DEEP_ERF, X, widths=(16, 4, 8), samples=8192, key=3)
    assert cv.widths == (4, 8, 16)
    # NNGP: at width 4 the error is bias, well above the Monte Carlo noise floor (|E - K|_F / |SE|_F is about 1
    # without bias; measured 4.1 with float32 draws, 3.1 with float64 draws), and it shrinks with width
    assert cv.rel_error["nngp"][0] > 2 * cv.rel_noise["nngp"][0], (cv.rel_error, cv.rel_noise, cv.bias_coefficient)
    assert cv.rel_error["nngp"][-1] < cv.rel_error["nngp"][0], cv.rel_error
    for n in ("nngp", "ntk"):
        a, sa = cv.extrapolated[n]
        assert np.all(np.abs((a - cv.exact[n]) / sa) <= Z_MAX), (n, (a - cv.exact[n]) / sa)
    fig = cv.plot(str(tmp_path / "conv.png"))
    assert (tmp_path / "conv.png").stat().st_size > 1000
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_extrapolate_recovers_an_exact_one_over_n_law() -> None:
    """Noise-free E_n = K + b/n is fitted exactly; with two widths n, 2n the fit is Richardson's 2 E_2n - E_n
    with SE sqrt(4 SE_2n^2 + SE_n^2) (independent estimates)."""
    k, b = np.array([[1.0, 0.3], [0.3, 2.0]]), np.array([[0.5, -1.0], [-1.0, 4.0]])
    widths = (8, 16, 32, 64)
    means = [k + b / n for n in widths]
    ses = [np.full((2, 2), 0.01 * math.sqrt(n)) for n in widths]
    a, sa, bb = extrapolate(means, ses, widths)
    np.testing.assert_allclose(a, k, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(bb, b, rtol=1e-8, atol=1e-8)
    s1, s2 = np.full((2, 2), 0.02), np.full((2, 2), 0.03)
    a2, sa2, _ = extrapolate([k + b / 10, k + b / 20], [s1, s2], (10, 20))
    np.testing.assert_allclose(a2, 2 * (k + b / 20) - (k + b / 10), rtol=1e-10)
    np.testing.assert_allclose(sa2, np.sqrt(4 * s2**2 + s1**2), rtol=1e-10)


def test_standard_errors_match_the_spread_of_independent_estimates() -> None:
    """16 independent estimates (64 networks each, seeds 0..15): for every entry the spread across them,
    sum_k (E_k - mean)^2 / mean_k(SE_k^2), is chi^2 with 15 dof if the reported SE is right. Averaged over the
    12 entries (correlated: between chi2_15/15 and chi2_180/180) it must lie in [1/3, 3]; P(chi2_15/15 < 1/3)
    = 0.008, P(> 3) = 7e-5 even if fully correlated. A SE off by a factor 2 gives a ratio 4 or 1/4: caught."""
    net = ka.Dense(1.2, 0.3) >> ka.Gelu() >> ka.Dense(1.1, 0.2) >> ka.Relu() >> ka.Dense(1.0, 0.1)
    reps = [ka.monte_carlo(net, X, width=16, samples=64, key=k) for k in range(16)]
    iu = np.triu_indices(3)
    for name in ("nngp", "ntk"):
        est = np.stack([r.get(name)[0][iu] for r in reps])
        se2 = np.stack([r.get(name)[1][iu] ** 2 for r in reps]).mean(0)
        ratio = est.var(0, ddof=1) / se2
        assert 1 / 3 <= ratio.mean() <= 3, (name, ratio)


def test_keep_draws_chunking_and_methods_agree() -> None:
    """Per-draw estimates are kept on request, their mean/std/sqrt(S) are the reported ones, the result does
    not depend on how draws are chunked, and the ntvp route gives the same estimates."""
    net = ka.Dense(1.0, 0.1) >> ka.Sin() >> ka.Dense(1.0)
    a = ka.monte_carlo(net, X, width=8, samples=12, key=5, keep_draws=True)
    b = ka.monte_carlo(net, X, width=8, samples=12, key=5, chunk=5, method="ntvp")
    assert a.draws["ntk"].shape == (12, 3, 3)
    np.testing.assert_allclose(a.ntk, a.draws["ntk"].mean(0), rtol=1e-12)
    np.testing.assert_allclose(a.stderr.ntk, a.draws["ntk"].std(0, ddof=1) / math.sqrt(12), rtol=1e-10)
    np.testing.assert_allclose(b.ntk, a.ntk, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(b.nngp, a.nngp, rtol=1e-4, atol=1e-6)
    only = ka.monte_carlo(net, X, width=8, samples=12, key=5, get="nngp")
    assert only.ntk is None and only.stderr.ntk is None
    np.testing.assert_allclose(only.nngp, a.nngp, rtol=1e-5)


@pytest.mark.parametrize("samples", [1, 0, 2.5, True])
def test_too_few_samples_raises(samples) -> None:
    with pytest.raises(ka.KernelalgError, match="at least 2 draws"):
        ka.monte_carlo(ka.Dense(1.0) >> ka.Relu() >> ka.Dense(1.0), X, samples=samples)


def test_convergence_needs_two_widths() -> None:
    with pytest.raises(ka.KernelalgError, match="two distinct"):
        ka.convergence(ka.Dense(1.0) >> ka.Relu() >> ka.Dense(1.0), X, widths=(8, 8))
