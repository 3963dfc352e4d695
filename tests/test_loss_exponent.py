"""Loss exponents, empirical spectra, power-law fits and their warnings (issue #20).

Expected values are independent of the code under test: exact Legendre expansions, published decay rates
(Bietti & Mairal 2019: two-layer ReLU NTK k^-d, NNGP k^-(d+2); Bietti & Bach 2021: depth keeps them), and
loss curves simulated by summing the spectrum or by exact kernel gradient flow on sampled data.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sympy as sp

import kernelalg as ka
from kernelalg import analysis as A

t = sp.Symbol("t")
RELU_BIAS = ka.Dense(1.0, 0.1) >> ka.Relu() >> ka.Dense(1.0)
RELU = ka.Dense(1.0) >> ka.Relu() >> ka.Dense(1.0)


def _loss_slope(ts: np.ndarray, loss: np.ndarray) -> float:
    return float(np.polyfit(np.log(ts), np.log(loss), 1)[0])


@pytest.mark.parametrize("which, xi, kmax, times", [("ntk", sp.Rational(4, 3), 1500, (6, 8)),
                                                    ("nngp", sp.Rational(4, 5), 1000, (9.5, 11.5))])
def test_derived_xi_matches_simulated_sphere_loss(which: str, xi: sp.Rational, kmax: int, times: tuple) -> None:
    """d = 3, g = acos(t) (s_g = 1/2): xi = (2 + 4 s_g)/(2 + 2 s), s = 1/2 (NTK) or 3/2 (NNGP).

    The simulated curve sums the spectrum over kmax degrees; its local slope reaches xi only at large t (the
    constant and k = 1 parts of acos give a long pre-asymptotic bump), hence the late, kmax-dependent window.
    """
    le = A.loss_exponent(RELU_BIAS, 3, sp.acos(t), which=which)
    assert le.exact["xi"] == xi and le.derived == ("nu", "kappa")
    assert le.nu == pytest.approx({"ntk": 1.5, "nngp": 2.5}[which])  # mu_k ~ k^-d, k^-(d+2), index i ~ k^2
    with pytest.warns(A.SpectralWarning, match="float64 resolves mu_k only"):  # kmax > 400: float64 kept, said
        spec = A.mercer_spectrum(RELU_BIAS, 3, kmax=kmax, which=which)
        a = spec.multiplicity * A.mercer_spectrum(sp.acos(t), 3, kmax=kmax).mu
    ts = np.logspace(*times, 5)
    assert -_loss_slope(ts, A.sphere_loss_curve(spec, a, ts)) == pytest.approx(float(xi), abs=0.01)


def test_plateau_warning_for_odd_target_on_bias_free_relu() -> None:
    """t^3 = (3/5) P_1 + (2/5) P_3 on S^2; mu_3 = 0 for the bias-free ReLU NTK: L_inf = (2/5)^2 / (2 N(3,3))."""
    with pytest.warns(A.SpectralWarning, match="plateaus at L_inf"):
        le = A.loss_exponent(RELU, 3, t ** 3)
    assert le.plateau == pytest.approx(float(sp.Rational(4, 25) / 14), rel=1e-9)
    assert le.null_fraction == pytest.approx(float(sp.Rational(4, 175) / (sp.Rational(9, 75) + sp.Rational(4, 175))))
    spec = A.mercer_spectrum(RELU, 3, kmax=10)
    late = A.sphere_loss_curve(spec, [0, 0.6, 0, 0.4], [1e6])[0]
    assert late == pytest.approx(le.plateau, rel=1e-6)  # the simulated loss really stops there


def test_target_with_no_mass_on_live_spectrum_warns() -> None:
    with pytest.warns(A.SpectralWarning, match="zero mass on the kernel's non-zero spectrum"):
        A.loss_exponent(RELU, 3, t ** 3 - sp.Rational(3, 5) * t)  # = (2/5) P_3 only


def test_no_warning_with_bias() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert A.loss_exponent(RELU_BIAS, 3, t ** 3).xi == np.inf  # finitely many harmonics: faster than power


def test_fitted_target_coefficients_have_interval_around_truth() -> None:
    """c_k^2 = a_k^2 / N(3, k) = k^-3 (kappa_deg = 2, index kappa = 1): xi = 1 / (3/2) = 2/3."""
    k = np.arange(1, 201)
    a = np.concatenate([[0.0], np.sqrt((2 * k + 1) * k ** -3.0)])
    le = A.loss_exponent(RELU_BIAS, 3, a)
    assert le.derived == ("nu",)
    assert le.kappa_ci[0] <= 1.0 <= le.kappa_ci[1] and le.xi_ci[0] <= 2 / 3 <= le.xi_ci[1]
    assert le.xi == pytest.approx(2 / 3, abs=1e-6)


def test_data_route_fitted_xi_matches_kernel_flow() -> None:
    """Gram spectrum of n = 1200 sphere points, fit over eigenvalue indices 30..300: the fitted xi's interval
    holds the slope of exact kernel gradient flow on the same Gram over the matching times 1/lambda_i.

    (At these times the population curve is still pre-asymptotic: local slope ~2, not 4/3; see the sphere test.)
    """
    x = A.sphere_points(1200, 3, seed=1)
    y = np.arccos(np.clip(x[:, 0] / np.sqrt(3), -1, 1))
    gram = np.asarray(ka.kernel(RELU_BIAS, x, get="ntk"), dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", A.FitRangeWarning)
        le = A.loss_exponent(RELU_BIAS, x, y, matrix=gram, imin=30, imax=300)
    assert le.route == "data" and le.nu == pytest.approx(1.5, abs=0.2)  # mu_k ~ k^-3, i ~ k^2; finite n: 1.36
    lam = A.empirical_spectrum(None, matrix=gram).eigenvalues
    ts = np.logspace(np.log10(1 / lam[30]), np.log10(1 / lam[300]), 6)
    simulated = -_loss_slope(ts, A.kernel_flow_loss(gram, y, ts))
    assert le.xi_ci[0] <= simulated <= le.xi_ci[1]
    assert simulated == pytest.approx(le.xi, abs=0.2)


def test_fit_power_law_interval_and_drift_warning() -> None:
    x = np.arange(1.0, 400.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = A.fit_power_law(x, 3.0 * x ** -2.5, 10)
    assert fit.slope == pytest.approx(-2.5, abs=1e-9) and fit.asymptotic
    with pytest.warns(A.FitRangeWarning, match="drifts with the range"):
        bad = A.fit_power_law(x, x ** -2.0 * (1 + 30 / x), 1, 60)
    assert not bad.asymptotic and bad.ci[0] <= bad.halves[1] <= bad.ci[1]


def test_empirical_spectrum_routes_agree(tmp_path) -> None:
    x = A.sphere_points(160, 4, seed=3)
    gram = np.asarray(ka.kernel(RELU_BIAS, x, get="ntk"), dtype=np.float64)
    exact = np.sort(np.linalg.eigvalsh(gram))[::-1] / 160
    dense = A.empirical_spectrum(RELU_BIAS, x)
    lanczos = A.empirical_spectrum(RELU_BIAS, x, route="lanczos", top=20)
    stored = A.empirical_spectrum(RELU_BIAS, x, route="lanczos", top=20, store=tmp_path / "g.zarr")
    np.testing.assert_allclose(dense.eigenvalues, exact, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(lanczos.eigenvalues, exact[:20], rtol=1e-8)
    np.testing.assert_allclose(stored.eigenvalues, exact[:20], rtol=1e-5)
    assert stored.trace == pytest.approx(np.trace(gram) / 160, rel=1e-5)
    assert dense.effective_dimension() == pytest.approx(np.sum(exact) ** 2 / np.sum(exact ** 2), rel=1e-8)
    y = x[:, 0]
    align = dense.alignment(y)
    assert align[-1] == pytest.approx(1.0, abs=1e-10)
    v = np.linalg.eigh(gram)[1][:, ::-1]
    assert align[4] == pytest.approx(np.sum((v[:, :5].T @ y) ** 2) / np.sum(y ** 2), rel=1e-8)


@pytest.mark.parametrize("depth", [2, 3, 4])
@pytest.mark.parametrize("b_std", [0.0, 0.1])
def test_deep_relu_keeps_the_decay_rate(depth: int, b_std: float) -> None:
    """Bietti & Bach 2021: the deep ReLU NTK on S^{d-1} decays as k^-d at every depth, with or without bias."""
    net = ka.Dense(1.0, b_std)
    for _ in range(depth - 1):
        net = net >> ka.Relu() >> ka.Dense(1.0, b_std)
    assert A.decay_exponent(net, 3).slope == -3
    if b_std > 0:  # bias-free deep kernels mix parities with different subleading terms: fit checked with bias
        fit = A.mercer_spectrum(net, 3, kmax=160).fit(kmin=40, corrections=2)
        assert fit.slope == pytest.approx(-3, abs=0.02)
