"""Kernel values against published numbers (theory.md) and independent 2-D quadrature of each activation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate as si
import sympy as sp

import kernelalg as ka
from kernelalg.layers._activations import X

# Inputs with |x|^2/d = |x'|^2/d = 1 and x.x'/d = 0.5 (d = 2).
XY = np.array([[1.0, 0.0], [0.5, math.sqrt(0.75)]]) * math.sqrt(2)


@pytest.mark.parametrize("act, t_ref, tdot_ref", [
    (ka.Relu(), 0.3044989, 1 / 3),           # Cho & Saul (2009), theory.md
    (ka.Erf(), 0.2163469, 0.4501582),         # Williams (1997), theory.md
    (ka.Sin(), 0.1917002, 0.4148304),         # theory.md
])
def test_reference_duals(act: ka.Layer, t_ref: float, tdot_ref: float) -> None:
    k = ka.kernel(ka.Dense(1.0) >> act, XY)
    assert abs(float(k.nngp[0, 1]) - t_ref) < 1e-6
    # NTK after Dense >> act: Tdot * Theta_1 with Theta_1 = x.x'/d = 0.5.
    assert abs(float(k.ntk[0, 1]) / 0.5 - tdot_ref) < 1e-6


@pytest.mark.parametrize("depth, nngp_ref, ntk_ref", [
    (2, 1.217996, 1.884662), (3, 1.367811, 2.702959), (5, 1.557790, 4.214225),
])
def test_deep_relu_reference(depth: int, nngp_ref: float, ntk_ref: float) -> None:
    """Deep ReLU, W^2 = 2, b = 0, |x|^2/d = 1, rho = 0.5 (theory.md); Theta(x, x) = L W^2 |x|^2/d."""
    w = math.sqrt(2)
    net = ka.serial(*[ka.Dense(w), ka.Relu()] * (depth - 1), ka.Dense(w))
    k = ka.kernel(net, XY)
    assert abs(float(k.nngp[0, 1]) - nngp_ref) < 1e-6
    assert abs(float(k.ntk[0, 1]) - ntk_ref) < 1e-6
    np.testing.assert_allclose(np.diag(np.asarray(k.ntk)), 2.0 * depth, rtol=1e-12)


def test_deep_relu_diagonal_exact_at_depth_200() -> None:
    """Rounding at rho = 1 must not be amplified by the square-root singularity (Theta(x,x) = 2L exactly)."""
    w = math.sqrt(2)
    net = ka.serial(*[ka.Dense(w), ka.Relu()] * 199, ka.Dense(w))
    k = ka.kernel(net, XY)
    np.testing.assert_allclose(np.diag(np.asarray(k.ntk)), 400.0, rtol=1e-10)
    np.testing.assert_allclose(np.diag(np.asarray(k.nngp)), 2.0, rtol=1e-10)


# ------------------------------------------------------------- every activation vs 2-D quadrature

ACTIVATIONS = [
    ka.Relu(), ka.LeakyRelu(0.2), ka.ABRelu(-0.5, 1.5), ka.Abs(), ka.Erf(1.3, 0.7, 0.2), ka.Gelu(),
    ka.Sin(1.2, 0.8, 0.3), ka.Cos(0.9, 1.1, -0.4), ka.Sign(), ka.Monomial(3), ka.RectifiedMonomial(2),
    ka.Polynomial([0.1, -0.5, 0.3]), ka.Exp(0.8, 0.4), ka.Gaussian(1.1, -0.6), ka.Rbf(0.7), ka.Identity(),
    ka.Hermite(4), ka.Sigmoid_like(), ka.Gabor(),
]
SIGMAS = [(1.0, 0.5, 1.0), (0.7, -0.45, 1.6), (1.3, 0.8, 0.95)]  # |rho| <= 0.68: the nested quadrature is reliable


def _heaviside(x: float, h: float = 0.5) -> float:
    return 0.0 if x < 0 else (1.0 if x > 0 else h)


def _phi(layer: ka.Layer, derivative: bool = False):
    """The activation (or its derivative) as a scalar Python function, lambdified from an independently
    written sympy form (math module only: no library lowering involved)."""
    expr = _forward_expr(layer)
    if derivative:
        expr = sp.diff(expr, X)
    return sp.lambdify(X, expr, modules=[{"Heaviside": _heaviside}, "math"])


def _forward_expr(layer: ka.Layer) -> sp.Expr:
    table = {
        "Relu": sp.Max(X, 0), "Abs": sp.Abs(X), "Gelu": X / 2 * (1 + sp.erf(X / sp.sqrt(2))), "Sign": sp.sign(X),
        "Identity": X, "Gabor": sp.exp(-X**2) * sp.sin(X),
    }
    p = dict(layer.params)
    s = dict(layer.static)
    name = layer.name
    if name in table:
        return table[name]
    if name == "LeakyRelu":
        return sp.Max(X, 0) + p["alpha"] * sp.Min(X, 0)
    if name == "ABRelu":
        return p["a"] * sp.Min(X, 0) + p["b"] * sp.Max(X, 0)
    if name == "Erf":
        return p["a"] * sp.erf(p["b"] * X) + p["c"]
    if name == "Sin":
        return p["a"] * sp.sin(p["b"] * X + p["c"])
    if name == "Cos":
        return p["a"] * sp.cos(p["b"] * X + p["c"])
    if name == "Monomial":
        return X ** s["degree"]
    if name == "Hermite":  # numpy's HermiteE coefficients, normalised by sqrt(n!)
        n = s["degree"]
        coef = np.polynomial.hermite_e.herme2poly([0] * n + [1]) / math.sqrt(math.factorial(n))
        return sum(float(c) * X**i for i, c in enumerate(coef))
    if name == "RectifiedMonomial":
        return sp.Max(X, 0) ** s["degree"]
    if name == "Polynomial":
        return sum(p[f"c{i}"] * X**i for i in range(len(p)))
    if name == "Exp":
        return p["a"] * sp.exp(p["b"] * X)
    if name == "Gaussian":
        return p["a"] * sp.exp(p["b"] * X**2)
    if name == "Rbf":
        return sp.sqrt(2) * sp.sin(sp.sqrt(2 * p["gamma"]) * X + sp.pi / 4)
    raise AssertionError(name)


#: Standard-normal integrals are truncated at |z| <= ZMAX: the tail mass exp(-ZMAX^2/2) ~ 1e-31 times the
#: at most exponential growth of the activations tested here is far below the 1e-7 tolerance.
ZMAX = 12.0


def _gauss_expect(f, g, s11: float, s12: float, s22: float) -> float:
    """E[f(u) g(v)] by adaptive 2-D quadrature, split at the kinks u = 0, v = 0 (independent of the duals).

    Uses u = sqrt(s11) z1, v = a z1 + r z2 with standard normal z1, z2.
    """
    a = s12 / math.sqrt(s11)
    r = math.sqrt(max(s22 - a * a, 0.0))
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    total = 0.0
    for lo1, hi1 in ((-ZMAX, 0.0), (0.0, ZMAX)):
        def inner(z1: float) -> float:
            u = math.sqrt(s11) * z1
            fu = float(f(u))
            if fu == 0.0:
                return 0.0
            if r < 1e-12:
                return fu * float(g(a * z1)) * pdf(z1)
            kink = -a * z1 / r  # v = 0 there
            val = 0.0
            for lo2, hi2 in ((-ZMAX, kink), (kink, ZMAX)):
                val += si.quad(lambda z2: float(g(a * z1 + r * z2)) * pdf(z2), lo2, hi2,
                               epsabs=1e-13, epsrel=1e-11, limit=200)[0]
            return fu * val * pdf(z1)
        total += si.quad(inner, lo1, hi1, epsabs=1e-12, epsrel=1e-10, limit=200)[0]
    return total


def _dual_numbers(layer: ka.Layer, s11: float, s12: float, s22: float) -> tuple[float, float]:
    """T and Tdot from the library: kernel of Dense(1) >> layer at inputs with the given statistics."""
    lchol = np.linalg.cholesky(np.array([[s11, s12], [s12, s22]]))
    x = lchol * math.sqrt(2)  # rows x_i with x_i . x_j / 2 = Sigma_ij
    k = ka.kernel(ka.Dense(1.0) >> layer, x)
    return float(k.nngp[0, 1]), float(k.ntk[0, 1]) / s12


@pytest.mark.parametrize("layer", ACTIVATIONS, ids=lambda l: l.name)
def test_dual_matches_quadrature(layer: ka.Layer) -> None:
    f = _phi(layer)
    for s11, s12, s22 in SIGMAS:
        t, tdot = _dual_numbers(layer, s11, s12, s22)
        t_q = _gauss_expect(f, f, s11, s12, s22)
        assert abs(t - t_q) < 1e-7 * max(1.0, abs(t_q)), (layer.name, (s11, s12, s22), t, t_q)
        if layer.name == "Sign":
            assert tdot == 0.0  # derivative 0 almost everywhere (neural-tangents' convention)
            continue
        df = _phi(layer, derivative=True)
        tdot_q = _gauss_expect(df, df, s11, s12, s22)
        assert abs(tdot - tdot_q) < 1e-7 * max(1.0, abs(tdot_q)), (layer.name, (s11, s12, s22), tdot, tdot_q)


@pytest.mark.parametrize("layer", ACTIVATIONS, ids=lambda l: l.name)
def test_variance_map_matches_quadrature(layer: ka.Layer) -> None:
    """cov1 = E[phi(u)^2] (the simplified diagonal map) vs 1-D quadrature."""
    f = _phi(layer)
    s = 0.8
    x = np.array([[math.sqrt(2 * s), 0.0]])
    cov1 = float(ka.kernel(ka.Dense(1.0) >> layer, x).cov1[0])
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    ref = sum(si.quad(lambda z: float(f(math.sqrt(s) * z)) ** 2 * pdf(z), lo, hi,
                      epsabs=1e-13, epsrel=1e-11)[0] for lo, hi in ((-ZMAX, 0), (0, ZMAX)))
    assert abs(cov1 - ref) < 1e-8 * max(1, ref)
