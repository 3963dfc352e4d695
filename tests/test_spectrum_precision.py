"""Digits of the Mercer spectrum: the ``dps=`` route holds its digits at every degree, and the default route
switches to it when float64 cannot resolve a degree (issue #20, items 3 and 4).

Expected values are exact sympy eigenvalues (:func:`exact_eigenvalue`: the Funk-Hecke integral done term by
term in closed form, no quadrature) and exact Legendre expansions of polynomials.
"""

from __future__ import annotations

import warnings

import mpmath
import numpy as np
import pytest
import sympy as sp

import kernelalg as ka
from kernelalg import analysis as A
from kernelalg.analysis._quadrature import vanishing_degrees
from kernelalg.analysis._sphere import as_kernel

t = sp.Symbol("t")
RELU2 = ka.Dense(1.0, 0.0) >> ka.Relu() >> ka.Dense(2 ** 0.5, 0.0)
RELU_OUT_BIAS = ka.Dense(1.0, 0.0) >> ka.Relu() >> ka.Dense(1.0, 0.5)  # k(t) + b^2: every even degree lives


def _rel(value: mpmath.mpf, exact: sp.Expr) -> mpmath.mpf:
    with mpmath.workdps(80):
        ref = mpmath.mpf(str(sp.N(exact, 80)))
        return abs(value / ref - 1)


@pytest.mark.parametrize("net, dim, k, which", [(RELU2, 10, 36, "nngp"), (RELU2, 10, 36, "ntk"),
                                                (RELU2, 20, 30, "ntk"), (RELU2, 3, 80, "nngp"),
                                                (RELU_OUT_BIAS, 10, 36, "ntk")])
def test_dps_holds_its_digits(net, dim, k, which) -> None:
    """dps=30: 30 significant digits at the top degree, where mu_k is 1e-10..1e-16 of the summed terms
    (the earlier fixed-precision route held 22 digits for the NNGP at k = 36, d = 10)."""
    exact = A.exact_eigenvalue(net, dim, k, which=which)
    spec = A.mercer_spectrum(net, dim, kmax=k, which=which, dps=30)
    assert _rel(spec.mu_mp[k], exact) < mpmath.mpf("1e-30")
    assert spec.precision.startswith("mpmath") and "30 significant digits" in spec.precision
    assert spec.mu[k] == pytest.approx(float(sp.N(exact, 30)), rel=1e-15)


def test_error_bound_covers_the_true_error_at_every_degree() -> None:
    """abs_error of the mpmath route bounds |mu_k - exact| for every k (d = 5, k <= 14, dps = 25)."""
    spec = A.mercer_spectrum(RELU_OUT_BIAS, 5, kmax=14, dps=25)
    for k in range(15):
        exact = A.exact_eigenvalue(RELU_OUT_BIAS, 5, k)
        with mpmath.workdps(60):
            err = abs(spec.mu_mp[k] - mpmath.mpf(str(sp.N(exact, 60))))
        assert float(err) <= spec.abs_error[k] + 1e-300
        if exact != 0:
            assert _rel(spec.mu_mp[k], exact) < mpmath.mpf("1e-25")


def test_auto_route_switches_when_float64_cannot_resolve() -> None:
    """ReLU NNGP on S^9: mu_36 = 1.9e-14 of sum |terms|; float64 holds ~7 digits there, so the default route
    recomputes in mpmath and says so; forcing float64 warns and is really off."""
    exact = A.exact_eigenvalue(RELU2, 10, 36, which="nngp")
    auto = A.mercer_spectrum(RELU2, 10, kmax=36, which="nngp")
    assert auto.precision.startswith("mpmath") and "float64 resolves" in auto.note and "Recomputed" in auto.note
    assert _rel(auto.mu_mp[36], exact) < mpmath.mpf("1e-20")
    with pytest.warns(A.SpectralWarning, match="float64 resolves mu_k only .* Fix: use the default"):
        forced = A.mercer_spectrum(RELU2, 10, kmax=36, which="nngp", precision="float64")
    assert forced.precision == "float64" and forced.note
    assert abs(forced.mu[36] / float(sp.N(exact, 20)) - 1) > 1e-9  # the floor is real


def test_auto_route_keeps_float64_when_resolved() -> None:
    """The NTK at the same degree is resolved in float64 (within 1e-6 relative): no switch, no warning."""
    exact = float(sp.N(A.exact_eigenvalue(RELU2, 10, 36, which="ntk"), 30))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec = A.mercer_spectrum(RELU2, 10, kmax=36, which="ntk")
    assert spec.precision == "float64" and spec.note == ""
    assert spec.mu[36] == pytest.approx(exact, rel=1e-6)


def test_zeros_by_parity_and_by_accident() -> None:
    """Bias-free ReLU: odd part t/2 (NNGP: t/4 ...) is linear, so odd k >= 3 vanish; acos(t) = pi/2 - asin(t):
    even k >= 2 vanish. t^3 - 3t/5 = (2/5) P_3 on S^2 has mu_1 = 0 with no parity reason: the mpmath route
    recognises the rounding noise and converges without a warning."""
    k = np.arange(12)
    assert np.array_equal(vanishing_degrees(as_kernel(RELU2, "ntk"), 11), (k % 2 == 1) & (k >= 3))
    assert np.array_equal(vanishing_degrees(as_kernel(sp.acos(t)), 11), (k % 2 == 0) & (k >= 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec = A.mercer_spectrum(t ** 3 - sp.Rational(3, 5) * t, 3, kmax=8)
    assert spec.precision.startswith("mpmath")
    assert spec.mu[3] == pytest.approx(2 / 5 / 7, rel=1e-15)  # a_3 = 2/5 = N(3, 3) mu_3, N = 7
    assert abs(spec.mu[1]) < 1e-20 and np.all(np.abs(spec.mu[4:]) < 1e-20)


def test_callable_kernel_warns_with_its_fix() -> None:
    """A plain callable has no mpmath form: float64 is kept and the warning says how to get more digits."""
    with pytest.warns(A.SpectralWarning, match="pass the kernel as a network or a sympy expression"):
        spec = A.mercer_spectrum(np.exp, 6, kmax=30)
    assert spec.precision == "float64"


def test_bad_precision_arguments() -> None:
    with pytest.raises(ka.KernelalgError, match="dps=0 must be an integer"):
        A.mercer_spectrum(RELU2, 3, kmax=4, dps=0)
    with pytest.raises(ka.KernelalgError, match="precision='double' is not known"):
        A.mercer_spectrum(RELU2, 3, kmax=4, precision="double")
