"""Expression language, symbolic kernels and input validation (the contract of design.md)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp

import kernelalg as ka
from kernelalg.core import _errors as E
from kernelalg.backends import JAX_TABLE, evaluate

RNG = np.random.default_rng(0)
X = RNG.standard_normal((5, 4))


def _relu_net(depth: int, w: float = 1.5, b: float = 0.05) -> ka.Layer:
    return ka.serial(*[ka.Dense(w, b), ka.Relu()] * (depth - 1), ka.Dense(w, b))


# ------------------------------------------------------------------ composition


def test_rshift_serial_and_nested_serial_agree() -> None:
    a = ka.Dense(1.5, 0.05) >> ka.Erf() >> ka.Dense(1.2, 0.1)
    b = ka.serial(ka.Dense(1.5, 0.05), ka.serial(ka.Erf(), ka.Dense(1.2, 0.1)))
    ka_, kb = ka.kernel(a, X), ka.kernel(b, X)
    np.testing.assert_array_equal(np.asarray(ka_.ntk), np.asarray(kb.ntk))


def test_residual_block_matches_hand_recursion() -> None:
    """FanOut >> parallel(Dense >> Relu >> Dense, Identity) >> FanInSum: the branch ends in a Dense with
    fresh zero-mean weights, so its cross-covariance with the identity branch vanishes and the NNGPs add."""
    inner = ka.Dense(1.3, 0.1) >> ka.Relu() >> ka.Dense(0.9, 0.2)
    res = ka.FanOut(2) >> ka.parallel(inner, ka.Identity()) >> ka.FanInSum()
    k_res, k_inner = ka.kernel(res, X), ka.kernel(inner, X)
    lin = X @ X.T / X.shape[1]
    np.testing.assert_allclose(np.asarray(k_res.nngp), np.asarray(k_inner.nngp) + lin, rtol=1e-12)
    # The identity branch has no parameters: it adds nothing to the NTK.
    np.testing.assert_allclose(np.asarray(k_res.ntk), np.asarray(k_inner.ntk), rtol=1e-12)


def test_dense_recursion_by_hand() -> None:
    """theory.md's dense recursion with the ReLU closed form, written out in NumPy."""
    w, b = 1.5, 0.05
    d = X.shape[1]
    k = w**2 * X @ X.T / d + b**2
    theta = k.copy()
    for _ in range(2):
        q = np.sqrt(np.outer(np.diag(k), np.diag(k)))
        rho = np.clip(k / q, -1, 1)
        th = np.arccos(rho)
        t = q * (np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi)
        tdot = (np.pi - th) / (2 * np.pi)
        k_new = w**2 * t + b**2
        theta = k_new + w**2 * tdot * theta
        k = k_new
    out = ka.kernel(_relu_net(3, w, b), X)
    np.testing.assert_allclose(np.asarray(out.nngp), k, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(out.ntk), theta, rtol=1e-10)


def test_standard_parameterization_matches_neural_tangents_convention() -> None:
    """NT's standard parametrization: ntk' = n_in * nngp_prev + W^2 ntk (+1 with a bias), nngp as in 'ntk'."""
    n = 7
    net = ka.Dense(1.2, 0.3, parameterization="standard", out_dim=n) >> ka.Relu() >> ka.Dense(
        1.4, 0.2, parameterization="standard")
    d = X.shape[1]
    w1, b1, w2, b2 = 1.2, 0.3, 1.4, 0.2
    k1 = w1**2 * X @ X.T / d + b1**2
    # First layer: Theta_1 = n_in * (x.x'/d) + 1 = x.x' + 1 (NT's input NTK is 0).
    th1 = X @ X.T + 1.0
    q = np.sqrt(np.outer(np.diag(k1), np.diag(k1)))
    th = np.arccos(np.clip(k1 / q, -1, 1))
    t = q * (np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi)
    tdot = (np.pi - th) / (2 * np.pi)
    k2 = w2**2 * t + b2**2
    theta2 = n * t + 1.0 + w2**2 * tdot * th1
    out = ka.kernel(net, X)
    np.testing.assert_allclose(np.asarray(out.nngp), k2, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(out.ntk), theta2, rtol=1e-10)


# ------------------------------------------------------------------ symbolic


def test_symbolic_closed_form_in_named_statistics() -> None:
    sk = ka.symbolic(ka.Dense(1.0, 0.0) >> ka.Erf() >> ka.Dense(1.0, 0.0))
    q1, q2, c = sk.symbols["q1"], sk.symbols["q2"], sk.symbols["c"]
    williams = 2 / sp.pi * sp.asin(2 * c / sp.sqrt((1 + 2 * q1) * (1 + 2 * q2)))
    vals = {q1: sp.Rational(7, 10), q2: sp.Rational(13, 10), c: sp.Rational(-3, 10)}
    assert abs(float((sk.nngp - williams).subs(vals))) < 1e-14
    assert "arcsin" in sk.latex("nngp") or "asin" in sk.latex("nngp")


def test_keep_symbols_names_hyperparameters_and_differentiates() -> None:
    sk = ka.symbolic(ka.Dense(1.5, 0.05) >> ka.Relu() >> ka.Dense(1.5, 0.05), keep_symbols=True)
    names = set(sk.param_values)
    assert {"sigma_w_1", "sigma_b_1", "sigma_w_3", "sigma_b_3"} <= names
    sw3 = sk.symbols["sigma_w_3"]
    # d nngp / d sigma_w_3 = 2 sigma_w_3 T: derivative of the closed form, checked against the formula.
    dk = sp.diff(sk.nngp, sw3)
    sb3 = sk.symbols["sigma_b_3"]
    t_part = (sk.nngp - sb3**2) / sw3**2
    assert sp.simplify(dk - 2 * sw3 * t_part) == 0


def test_program_size_linear_in_depth() -> None:
    sizes = {d: ka.symbolic(_relu_net(d)).size() for d in (5, 10, 20)}
    inc1, inc2 = sizes[10] - sizes[5], sizes[20] - sizes[10]
    assert inc2 == 2 * inc1, sizes  # each extra layer adds the same number of operations


def test_deep_network_compiles_to_a_scan() -> None:
    """Depth 100: the repeated block lowers to one lax.scan, so the jaxpr stays small."""
    import jax

    f = ka.compile(_relu_net(100), get="ntk")
    jaxpr = jax.make_jaxpr(lambda x: f(x))(X)
    text = str(jaxpr)
    assert "scan" in text
    assert len(text) < 60_000, len(text)
    shallow = str(jax.make_jaxpr(lambda x: ka.compile(_relu_net(10), get="ntk")(x))(X))
    assert len(text) < 3 * len(shallow)


def test_elementwise_reports_route() -> None:
    exact = ka.Elementwise(lambda x: sp.exp(x / 2) * x, name="xexp")
    quad = ka.Elementwise(lambda x: sp.tanh(x), name="tanh")
    assert dict(exact.static)["route"].startswith("exact")
    assert dict(quad.static)["route"] == "Gauss-Hermite quadrature, degree 32"


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_is_rejected(bad: float) -> None:
    x = X.copy()
    x[2, 1] = bad
    with pytest.raises(ka.InputError, match="NaN or infinite"):
        ka.kernel(_relu_net(2), x)


def test_feature_mismatch() -> None:
    with pytest.raises(ka.InputError, match="same trailing"):
        ka.kernel(_relu_net(2), X, RNG.standard_normal((3, 5)))


def test_wrong_rank_names_fix() -> None:
    with pytest.raises(ka.InputError, match="reshape"):
        ka.kernel(_relu_net(2), RNG.standard_normal((3, 2, 2)))


def test_complex_input_dtype() -> None:
    with pytest.raises(ka.InputError, match="dtype"):
        ka.kernel(_relu_net(2), np.ones((3, 4), dtype=np.complex128))


@pytest.mark.parametrize("kw", [{"W_std": -1.0}, {"b_std": float("nan")}])
def test_negative_or_nan_std(kw: dict) -> None:
    with pytest.raises(ka.KernelalgError, match="must be a finite number >= 0"):
        ka.Dense(**kw)


def test_activation_without_affine_layer() -> None:
    with pytest.raises(ka.LayerOrderError, match="put an affine layer"):
        ka.symbolic(ka.Relu() >> ka.Dense(1.0))
    with pytest.raises(ka.LayerOrderError, match="put an affine layer"):
        # two activations in a row compose (tests/test_composed.py); a layer between them breaks the chain
        ka.symbolic(ka.Dense(1.0) >> ka.Relu() >> ka.Identity() >> ka.Erf() >> ka.Dense(1.0))
    with pytest.raises(ka.LayerOrderError, match="put an affine layer"):  # a JAX callable declares no formula
        ka.symbolic(ka.Dense(1.0) >> ka.Relu() >> ka.Elementwise(jnp.tanh) >> ka.Dense(1.0))


def test_unknown_sympy_node_is_refused_loudly() -> None:
    y = sp.Symbol("y")
    with pytest.raises(ka.LoweringError, match="register_jax_lowering"):
        evaluate(sp.zeta(y), {y: np.ones(2)}, JAX_TABLE)


def test_bad_get_and_unknown_param() -> None:
    with pytest.raises(ka.KernelalgError, match="get="):
        ka.kernel(_relu_net(2), X, get="cov")
    with pytest.raises(ka.KernelalgError, match="Unknown hyperparameter"):
        ka.kernel(_relu_net(2), X, params={"sigma_q_9": 1.0})


def test_not_a_layer() -> None:
    with pytest.raises(ka.KernelalgError, match="not a kernelalg layer"):
        ka.serial(ka.Dense(1.0), "relu")


def test_error_messages_show_a_fix() -> None:
    for name in dir(E):
        msg = getattr(E, name)
        if name.isupper() and isinstance(msg, str):
            assert "Fix:" in msg, name


def test_hyperparameter_override_equals_rebuilt_network() -> None:
    net = _relu_net(3)
    k_over = ka.kernel(net, X, get="ntk", params={"sigma_w_3": 0.7})
    rebuilt = ka.Dense(1.5, 0.05) >> ka.Relu() >> ka.Dense(0.7, 0.05) >> ka.Relu() >> ka.Dense(1.5, 0.05)
    np.testing.assert_allclose(np.asarray(k_over), np.asarray(ka.kernel(rebuilt, X, get="ntk")), rtol=1e-13)
    assert math.isfinite(float(np.asarray(k_over).sum()))


def test_numpy_function_gets_a_clear_error() -> None:
    with pytest.raises(ka.KernelalgError, match="jnp.tanh instead of np.tanh"):
        ka.Elementwise(np.tanh)


def test_quadrature_route_reproduces_published_sin_dual() -> None:
    """Elementwise(jnp.sin) takes the Gauss-Hermite route; theory.md: sin T = 0.1917002, Tdot = 0.4148304
    at (s11, s12, s22) = (1, 0.5, 1)."""
    import jax.numpy as jnp

    layer = ka.Elementwise(jnp.sin, name="jsin")
    assert dict(layer.static)["route"].startswith("Gauss-Hermite")
    xy = np.array([[1.0, 0.0], [0.5, math.sqrt(0.75)]]) * math.sqrt(2)
    k = ka.kernel(ka.Dense(1.0) >> layer, xy)
    assert abs(float(k.nngp[0, 1]) - 0.1917002) < 1e-6
    assert abs(float(k.ntk[0, 1]) / 0.5 - 0.4148304) < 1e-6
