"""Regression tests of the error sweep (issues #16 and #24): wrong numbers fixed, bad input refused clearly.

Expected values come from outside the code under test: scipy/mpmath quadrature written here from the
textbook definitions, the exact sympy eigenvalue, Monte Carlo with its standard error, or the documented
behaviour (a ``KernelalgError`` whose message names the problem and the fix).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
import sympy as sp
from scipy import integrate

import kernelalg as ka
from kernelalg import analysis as A
from kernelalg.core import _errors as E
from kernelalg.layers._formula import parse_formula

RNG = np.random.default_rng(0)
X4 = RNG.standard_normal((4, 3))


def _net(layer: ka.Layer) -> ka.Layer:
    return ka.Dense(1.0, 0.1) >> layer >> ka.Dense(1.0)


# ---------------------------------------------------------------------------------- 1. early-time constants

def _pdf(g: float) -> float:
    return math.exp(-g * g / 2) / math.sqrt(2 * math.pi)


def _cdf(g: float) -> float:
    return 0.5 * (1 + math.erf(g / math.sqrt(2)))


#: phi, phi', phi'' written out by hand (not from the module), for every activation of the module's table.
HAND = {
    "relu": (lambda g: max(g, 0.0), lambda g: float(g > 0), None),
    "erf": (math.erf, lambda g: 2 / math.sqrt(math.pi) * math.exp(-g * g),
            lambda g: -4 * g / math.sqrt(math.pi) * math.exp(-g * g)),
    "gelu": (lambda g: g * _cdf(g), lambda g: _cdf(g) + g * _pdf(g), lambda g: (2 - g * g) * _pdf(g)),
    "sin": (math.sin, math.cos, lambda g: -math.sin(g)),
}


def _gauss(f) -> float:
    """E[f(g)], g ~ N(0, 1), by adaptive scipy quadrature (split at the kink at 0)."""
    return sum(integrate.quad(lambda g: f(g) * _pdf(g), a, b, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
               for a, b in ((-np.inf, 0.0), (0.0, np.inf)))


@pytest.mark.parametrize("act", sorted(HAND))
def test_early_time_constants_match_quadrature(act):
    phi, d1, d2 = HAND[act]
    c = A.early_time_constants(act)
    assert float(c.zeta) == pytest.approx(_gauss(d1), abs=1e-11)
    assert float(c.mean_dphi_sq) == pytest.approx(_gauss(lambda g: d1(g) ** 2), abs=1e-11)
    # E[phi''] by Stein's identity E[phi''(g)] = E[(g^2 - 1) phi(g)] (valid for ReLU's Dirac delta too)
    assert float(c.mean_ddphi) == pytest.approx(_gauss(lambda g: (g * g - 1) * phi(g)), abs=1e-11)
    if d2 is not None:
        assert float(c.mean_ddphi) == pytest.approx(_gauss(d2), abs=1e-11)


def test_gelu_mean_dphi_sq_is_the_full_integral():
    """The GELU value sympy's whole-sum integrate gave, (sqrt 3 + 6 pi)/(18 pi), misses sqrt(3)/(6 pi)."""
    val = float(A.early_time_constants("gelu").mean_dphi_sq)
    assert val == pytest.approx(0.4558508656, abs=1e-9)
    assert val - (math.sqrt(3) + 6 * math.pi) / (18 * math.pi) == pytest.approx(math.sqrt(3) / (6 * math.pi), abs=1e-12)


def test_early_time_constants_of_an_expression_without_closed_form():
    x = sp.Symbol("x")
    c = A.early_time_constants(sp.tanh(x))
    sech2 = lambda g: 1 - math.tanh(g) ** 2  # noqa: E731
    assert float(c.zeta) == pytest.approx(_gauss(sech2), abs=1e-11)
    assert float(c.mean_dphi_sq) == pytest.approx(_gauss(lambda g: sech2(g) ** 2), abs=1e-11)
    assert float(c.mean_ddphi) == pytest.approx(0.0, abs=1e-12)  # odd integrand


def test_linear_model_ntk_uses_the_quadrature_constants():
    x = A.sphere_points(5, 7, seed=1)
    d1 = HAND["gelu"][1]
    zeta, e2 = _gauss(d1), _gauss(lambda g: d1(g) ** 2)
    nu = _gauss(HAND["gelu"][2]) * math.sqrt(7) / 7
    want = zeta ** 2 * x @ x.T / 7 + nu ** 2 + (e2 - zeta ** 2) * np.eye(5)
    np.testing.assert_allclose(A.linear_model_ntk(x, "gelu"), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("expr", ["1/x", "log(x)", "exp(x**2)"])
def test_early_time_constants_refuse_divergent_integrals(expr):
    with pytest.raises(E.DivergentKernelError, match="Fix:"):
        A.early_time_constants(sp.sympify(expr))


# ---------------------------------------------------------------------------------- 2. Mercer spectrum digits

@pytest.mark.parametrize("dim,k", [(10, 36), (7, 24), (5, 30)])
def test_mercer_spectrum_dps_holds_30_digits(dim, k):
    net = ka.Dense(1.0, 0.0) >> ka.Relu() >> ka.Dense(2 ** 0.5, 0.0)
    exact = A.exact_eigenvalue(net, dim, k)
    s = A.mercer_spectrum(net, dim, kmax=k, dps=40)
    with mpmath.workdps(50):
        ref = mpmath.mpf(sp.N(exact, 50))
        assert abs(s.mu_mp[k] / ref - 1) < mpmath.mpf("1e-30")
    assert s.mu[k] == pytest.approx(float(ref), rel=1e-15)


def test_legendre_nodes_are_symmetric_to_full_precision():
    from kernelalg.analysis._quadrature import _legendre_nodes_mp
    xs, _ = _legendre_nodes_mp(64, 40)
    with mpmath.workdps(60):
        assert max(abs(mpmath.legendre(64, x)) for x in xs) < mpmath.mpf("1e-38")


# ---------------------------------------------------------------------------------- 3. divergent duals

@pytest.mark.parametrize("fn,reason", [
    (lambda t: 1 / t, "singularity at x = 0"),
    (sp.log, "not real-valued"),
    (sp.sqrt, "not real-valued"),
    (sp.asin, "not real-valued"),
    (sp.tan, "singularity"),
    (lambda t: sp.exp(t ** 3), "grows faster than any Gaussian"),
    (lambda t: sp.sqrt(sp.Abs(t)), "phi' has a non-integrable singularity"),
    (sp.sign, "Dirac delta"),
    ("1/(x - 0.3)", "singularity"),
    (lambda t: 1 / jnp.asarray(t), "singularity at x = 0"),
    (lambda t: jnp.log(jnp.asarray(t)), "not real-valued"),
])
def test_divergent_activation_is_refused_at_construction(fn, reason):
    with pytest.raises(E.DivergentKernelError, match=reason) as err:
        ka.Elementwise(fn)
    assert "Fix:" in str(err.value)


@pytest.mark.parametrize("fn", [lambda t: sp.sin(t) / t, lambda t: sp.erf(t) / t, "x*tanh(x)", "softplus(x)",
                                lambda t: 1 / (1 + t ** 2)])
def test_integrable_activations_with_removable_points_are_accepted(fn):
    """Removable singularities (sin(x)/x at 0) are no reason to refuse; checked against 2-D quadrature."""
    layer = ka.Elementwise(fn)
    phi = sp.lambdify(sp.Symbol("x"), layer_expr(fn), "mpmath")
    q = 0.7
    x = np.array([[math.sqrt(q), 0.0]])
    got = float(np.asarray(ka.kernel(ka.Dense(1.0, 0.0) >> layer, x, get="nngp"))[0, 0])
    with mpmath.workdps(20):
        want = mpmath.quad(lambda u: phi(u) ** 2 * mpmath.npdf(u, 0, mpmath.sqrt(q / 2)), [-mpmath.inf, 0, mpmath.inf])
    assert got == pytest.approx(float(want), rel=1e-6)


def layer_expr(fn):
    x = sp.Symbol("x")
    return parse_formula(fn).subs(sp.Symbol("x", real=True), x) if isinstance(fn, str) else fn(x)


def test_gaussian_with_positive_b_is_checked_on_the_variances_met():
    """E[exp(2 b u^2)] exists iff 1 - 4 b s > 0 (Gaussian integral): small inputs pass, large ones raise."""
    net = ka.Dense(1.0, 0.0) >> ka.Gaussian(1.0, 1.0) >> ka.Dense(1.0)
    x = np.array([[0.3, 0.2], [0.1, -0.4]])  # s = |x|^2 / 2 < 1/4
    k = np.asarray(ka.kernel(net, x, get="nngp"))
    s = (x * x).sum(1) / 2
    np.testing.assert_allclose(np.diag(k), 1 / np.sqrt(1 - 4 * s), rtol=1e-6)
    with pytest.raises(E.DivergentKernelError, match="1 - 4 b s > 0"):
        ka.kernel(net, 3 * x)


def test_quadrature_activation_of_gaussian_growth_is_checked_on_the_variances_met():
    layer = ka.Elementwise(lambda t: sp.exp(t ** 2 / 8) * sp.tanh(t))  # exists iff s < 2
    x = np.array([[1.0, 1.0]])  # s = 1
    ka.kernel(ka.Dense(1.0, 0.0) >> layer, x)
    with pytest.raises(E.DivergentKernelError, match=r"s < \d") as err:
        ka.kernel(ka.Dense(1.0, 0.0) >> layer, 2 * x)  # s = 4
    smax = float(str(err.value).split("s < ")[1].split(")")[0])
    assert smax == pytest.approx(2.0, rel=1e-4)


def test_exp_overflow_is_reported_not_returned_as_nan():
    with pytest.raises(E.NotRepresentableError, match="non-finite"):  # exists, overflows float64
        ka.kernel(_net(ka.Exp(1.0, 30.0)), X4)


def test_elementwise_accepts_the_command_line_string_form():
    a = ka.Elementwise("x*tanh(x)")
    b = ka.Elementwise(lambda t: t * sp.tanh(t))
    np.testing.assert_allclose(np.asarray(ka.kernel(_net(a), X4, get="ntk")),
                               np.asarray(ka.kernel(_net(b), X4, get="ntk")), rtol=1e-12)
    with pytest.raises(E.KernelalgError, match="Elementwise formula"):
        ka.Elementwise("x +* 2")


# ---------------------------------------------------------------------------------- 4. inputs and hyperparameters

RELU = ka.Dense(1.2, 0.1) >> ka.Relu() >> ka.Dense(1.2, 0.1)


@pytest.mark.parametrize("x,dtype,fix", [(1e30, np.float32, "float64"), (1e200, np.float64, "rescale")])
def test_inputs_whose_statistics_overflow_are_refused(x, dtype, fix):
    with pytest.raises(E.InputError, match=f"overflow the precision.*{fix}"):
        ka.kernel(RELU, np.full((2, 3), x, dtype=dtype))


def test_large_but_representable_inputs_still_work():
    """1e18 in float32: |x|^2 = 3e36 fits; the kernel is positively homogeneous of degree 2 (ReLU, no bias)."""
    net = ka.Dense(1.0, 0.0) >> ka.Relu() >> ka.Dense(1.0, 0.0)
    x = np.array([[1.0, 2.0, -1.0], [0.5, -1.0, 2.0]])
    small = np.asarray(ka.kernel(net, x, get="nngp"))
    big = np.asarray(ka.kernel(net, (1e18 * x).astype(np.float32), get="nngp"))
    np.testing.assert_allclose(big / 1e36, small, rtol=1e-5)


def test_inputs_without_features_are_refused():
    with pytest.raises(E.InputError, match="no features"):
        ka.kernel(RELU, np.zeros((3, 0)))


@pytest.mark.parametrize("params,match", [
    ({"sigma_w_1": -1.0}, "finite number >= 0"), ({"sigma_b_1": float("inf")}, "finite number >= 0"),
    ({"sigma_w_3": float("nan")}, "finite number >= 0"), ({"sigma_w_1": "a"}, "finite number >= 0"),
])
def test_hyperparameter_overrides_follow_the_constructor_rules(params, match):
    with pytest.raises(E.KernelalgError, match=match):
        ka.kernel(RELU, X4, params=params)
    with pytest.raises(E.KernelalgError, match=match):  # the same message as the constructor's
        ka.Dense(W_std=next(iter(params.values())))


def test_non_std_hyperparameters_must_be_finite():
    net = ka.Dense(1.0) >> ka.Erf(1.0, 1.0, 0.0) >> ka.Dense(1.0)
    with pytest.raises(E.KernelalgError, match="must be finite"):
        ka.kernel(net, X4, params={"a_2": float("nan")})
    with pytest.raises(E.KernelalgError, match="must be finite"):
        ka.compile(net, "ntk")(X4, params={"c_2": float("inf")})


def test_hyperparameter_override_equals_constructor_value():
    """A valid override gives the kernel of the network built with that value (documented behaviour)."""
    a = np.asarray(ka.kernel(RELU, X4, get="ntk", params={"sigma_w_1": 0.7}))
    b = np.asarray(ka.kernel(ka.Dense(0.7, 0.1) >> ka.Relu() >> ka.Dense(1.2, 0.1), X4, get="ntk"))
    np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("bs", [0, -1, 2.5, True, "4"])
def test_bad_batch_size_is_refused(bs):
    with pytest.raises(E.KernelalgError, match="batch_size"):
        ka.kernel(RELU, X4, batch_size=bs)


def test_get_none_and_bogus_reference_get_are_refused():
    with pytest.raises(E.KernelalgError, match="get=None"):
        ka.kernel(RELU, X4, get=None)
    with pytest.raises(E.KernelalgError, match="'bogus'"):
        ka.reference_kernel(RELU, X4, get="bogus")


def test_latex_of_an_unknown_kernel_is_refused():
    sk = ka.symbolic(RELU)
    with pytest.raises(E.KernelalgError, match="which='foo'"):
        sk.latex("foo")
    assert sk.latex("cov1") == sp.latex(sk.cov1)


# ---------------------------------------------------------------------------------- 5. Monte Carlo and empirical NTK

@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_monte_carlo_refuses_non_finite_inputs(bad):
    x = X4.copy()
    x[1, 2] = bad
    with pytest.raises(E.InputError, match="NaN or infinite"):
        ka.monte_carlo(RELU, x, width=8, samples=2)
    with pytest.raises(E.InputError, match="NaN or infinite"):
        ka.convergence(RELU, x, widths=(8, 16), samples=2)
    twin = ka.finite(RELU, 8)
    params = twin.init(jax.random.PRNGKey(0), (3,))
    with pytest.raises(E.InputError, match="NaN or infinite"):
        ka.empirical_ntk(twin.apply, params, x)


@pytest.mark.parametrize("kwargs,match", [
    (dict(x2=np.ones((2, 4))), "features"), (dict(x1=np.ones((0, 3))), "no samples"),
    (dict(ntk_units=0), "ntk_units"), (dict(chunk=0), "chunk"),
])
def test_monte_carlo_bad_arguments(kwargs, match):
    args = dict(x1=X4, width=8, samples=2) | kwargs
    with pytest.raises(E.KernelalgError, match=match):
        ka.monte_carlo(RELU, **args)


def test_empirical_ntk_of_a_one_dimensional_input_says_how_to_fix_it():
    twin = ka.finite(RELU, 8)
    params = twin.init(jax.random.PRNGKey(0), (3,))
    with pytest.raises(E.InputError, match=r"x1\[None, :\]"):
        ka.empirical_ntk(twin.apply, params, np.ones(3))
    with pytest.raises(E.KernelalgError, match="batch_size"):
        ka.empirical_ntk(twin.apply, params, X4, batch_size=0)


def test_monte_carlo_still_estimates_the_kernel():
    """After the checks, a valid call still agrees with the exact NNGP within 4 standard errors."""
    x = X4[:2]
    est = ka.monte_carlo(RELU, x, width=64, samples=64, key=1, get="nngp")
    exact = np.asarray(ka.kernel(RELU, x, get="nngp"))
    assert np.all(np.abs(est.nngp - exact) <= 4 * est.stderr.nngp + 1e-12)


# ---------------------------------------------------------------------------------- parser-adjacent constructors

@pytest.mark.parametrize("num", [10 ** 300, 0, 2.5, float("inf"), "2", True])
def test_fanout_sizes(num):
    with pytest.raises(E.KernelalgError, match="FanOut: num"):
        ka.FanOut(num)


def test_lone_surrogate_is_named_as_such():
    with pytest.raises(E.KernelalgError, match="not a valid Unicode character"):
        ka.parse("Dense(1.0) >> Relu(\udc80)")
