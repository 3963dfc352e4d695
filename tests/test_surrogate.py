"""Surrogate-gradient NTK: closed forms vs quadrature, sympy limits, the theory.md number, Monte Carlo of the
empirical J J_tilde^T of finite-width twins, asymmetry and tiling, the naive kernel's divergence."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate as si
import sympy as sp
from scipy.special import erf

import kernelalg as ka
from kernelalg.layers._surrogate import SurrogateSign, SurrogateStep, explicit, true_gradient
from kernelalg.finite._surrogate import empirical_sg_ntk, surrogate_twins

# (|x|^2/d, x.x'/d, |x'|^2/d) = (1, 0.5, 1) with d = 2 (theory.md's reference point)
XY = np.array([[1.0, 0.0], [0.5, math.sqrt(0.75)]]) * math.sqrt(2)


def pair(s11: float, s12: float, s22: float) -> tuple[np.ndarray, np.ndarray]:
    """Inputs x, x' (d = 2) with |x|^2/d = s11, x.x'/d = s12, |x'|^2/d = s22."""
    rho = s12 / math.sqrt(s11 * s22)
    x = np.array([[math.sqrt(2 * s11), 0.0]])
    y = math.sqrt(2 * s22) * np.array([[rho, math.sqrt(1 - rho**2)]])
    return x, y


# ---------------------------------------------------------- independent definitions for the quadrature

def phi(kind: str, m: float, u: np.ndarray) -> np.ndarray:
    s = erf(m * u)
    return s if kind == "sign" else (1 + s) / 2


def dphi(kind: str, m: float, u: float) -> float:
    """d/du of erf(m u) (sign) or (1 + erf(m u))/2 (step)."""
    d = 2 * m / math.sqrt(math.pi) * math.exp(-(m * u) ** 2)
    return d if kind == "sign" else d / 2


def dpsi(kind: str, surrogate: str, a: float, v: np.ndarray) -> np.ndarray:
    """The documented surrogates: area 2 (sign) or 1 (step), width ~ 1/a."""
    jump = 2.0 if kind == "sign" else 1.0
    if surrogate == "erf":
        return jump * a / math.sqrt(math.pi) * np.exp(-(a * v) ** 2)
    if surrogate == "triangle":
        return jump * a * np.maximum(0.0, 1 - np.abs(a * v))
    return jump * a * (np.abs(a * v) < 0.5)


def cond_mean(f, mu: float, sd: float, breaks: tuple[float, ...] = ()) -> float:
    """E[f(v)], v ~ N(mu, sd^2), by adaptive quadrature over +-12 sd with the kinks of f as break points."""
    lo, hi = mu - 12 * sd, mu + 12 * sd
    pts = sorted(p for p in breaks if lo < p < hi)
    dens = lambda v: f(v) * math.exp(-0.5 * ((v - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))  # noqa: E731
    edges = [lo, *pts, hi]
    return sum(si.quad(dens, e0, e1, epsabs=1e-13, epsrel=1e-11, limit=200)[0] for e0, e1 in zip(edges, edges[1:]))


def quad_pair(f_u, f_v, s11: float, s12: float, s22: float, breaks_v: tuple[float, ...] = ()) -> float:
    """E[f_u(u) f_v(v)] for (u, v) ~ N(0, S): outer over u, inner over v | u."""
    csd = math.sqrt(s22 - s12**2 / s11)
    inner = lambda u: f_u(u) * cond_mean(f_v, s12 / s11 * u, csd, breaks_v)  # noqa: E731
    return cond_mean(inner, 0.0, math.sqrt(s11), (0.0,))


def breaks(surrogate: str, a: float) -> tuple[float, ...]:
    return {"erf": (), "triangle": (-1 / a, 0.0, 1 / a), "rectangle": (-0.5 / a, 0.5 / a)}[surrogate]


LAYERS = {"sign": SurrogateSign, "step": SurrogateStep}
S = (0.7, 0.3, 1.9)  # a non-symmetric covariance: s11 != s22


@pytest.mark.parametrize("kind", ["sign", "step"])
@pytest.mark.parametrize("surrogate", ["erf", "triangle", "rectangle"])
def test_finite_m_closed_form_vs_quadrature(kind: str, surrogate: str) -> None:
    """T, Tdot = E[phi'(u) psi'(v)] (u at x1), the variances: ka.kernel of Dense(1) >> layer vs 2-D quadrature."""
    m, a = 2.5, 0.8
    x, y = pair(*S)
    k = ka.kernel(ka.Dense(1.0) >> LAYERS[kind](m=m, surrogate=surrogate, a=a), x, y)
    t_ref = quad_pair(lambda u: phi(kind, m, u), lambda v: phi(kind, m, v), *S)
    tdot_ref = quad_pair(lambda u: dphi(kind, m, u), lambda v: dpsi(kind, surrogate, a, v), *S, breaks(surrogate, a))
    tdot_swapped = quad_pair(lambda u: dphi(kind, m, u), lambda v: dpsi(kind, surrogate, a, v),
                             S[2], S[1], S[0], breaks(surrogate, a))
    assert abs(float(k.nngp[0, 0]) - t_ref) < 1e-8
    assert abs(float(k.ntk[0, 0]) / S[1] - tdot_ref) < 1e-8
    assert abs(tdot_ref - tdot_swapped) > 1e-3  # the order matters here, so the check above pins it down
    var_ref = [cond_mean(lambda u: phi(kind, m, u) ** 2, 0.0, math.sqrt(s), (0.0,)) for s in (S[0], S[2])]
    np.testing.assert_allclose([float(k.cov1[0]), float(k.cov2[0])], var_ref, atol=1e-10)


@pytest.mark.parametrize("kind", ["sign", "step"])
@pytest.mark.parametrize("surrogate", ["erf", "triangle", "rectangle"])
def test_m_infinity_vs_delta_quadrature(kind: str, surrogate: str) -> None:
    """m = None: phi' = J delta(u), so Tdot = J p_u(0) E[psi'(v) | u = 0] (1-D quadrature), incl. parallel inputs."""
    a, jump = 1.7, (2.0 if kind == "sign" else 1.0)
    for s11, s12, s22 in (S, (1.3, 1.3, 1.3)):
        x, y = pair(s11, s12, s22) if s11 != s12 else (np.array([[math.sqrt(2 * s11), 0.0]]),) * 2
        k = ka.kernel(ka.Dense(1.0) >> LAYERS[kind](surrogate=surrogate, a=a), x, y, get="ntk")
        csd = math.sqrt(max(s22 - s12**2 / s11, 0.0))
        e = (cond_mean(lambda v: dpsi(kind, surrogate, a, v), 0.0, csd, breaks(surrogate, a)) if csd > 0
             else float(dpsi(kind, surrogate, a, np.array(0.0))))
        ref = jump / math.sqrt(2 * math.pi * s11) * e
        assert abs(float(k[0, 0]) / s12 - ref) < 1e-9, (s11, s12, s22)


def test_reference_number() -> None:
    """theory.md: E[sign'(u) erf_a'(v)] = 0.569410 at (1, .5, 1), a = 1; sign's NNGP (2/pi) asin(1/2) = 1/3."""
    k = ka.kernel(ka.Dense(1.0) >> SurrogateSign(a=1.0), XY)
    assert abs(float(k.ntk[0, 1]) / 0.5 - 0.569410) < 1e-6
    assert abs(float(k.nngp[0, 1]) - 1 / 3) < 1e-12
    np.testing.assert_allclose(np.diag(np.asarray(k.nngp)), 1.0, rtol=1e-14)


def test_sympy_limit_is_the_stated_m_infinity_form() -> None:
    """limit_{m -> oo} of the finite-m symbolic SG-NTK == theory.md's form == the library's m = None kernel."""
    sym = ka.symbolic(ka.Dense(1.3) >> SurrogateSign(m=2.0, a=0.7), keep_symbols=True)
    mm, a, w = sym.symbols["m_2"], sym.symbols["a_2"], sym.symbols["sigma_w_1"]
    q1, q2, c = sym.symbols["q1"], sym.symbols["q2"], sym.symbols["c"]
    lim = sp.limit(explicit(sym.ntk), mm, sp.oo)
    s11, s12, s22 = w**2 * q1, w**2 * c, w**2 * q2
    stated = s12 * (4 * a / (sp.pi * sp.sqrt(2))) / sp.sqrt(s11 + 2 * a**2 * (s11 * s22 - s12**2))
    assert sp.simplify(lim - stated) == 0
    inf = ka.symbolic(ka.Dense(1.3) >> SurrogateSign(a=0.7), keep_symbols=True)
    assert sp.simplify(explicit(inf.ntk) - stated.subs(a, inf.symbols["a_2"])) == 0


# ----------------------------------------------------------------------- finite-width twins, Monte Carlo

def _mc(net: ka.Layer, x: np.ndarray, width: int, samples: int) -> np.ndarray:
    tw = surrogate_twins(net, x.shape[1:], width)
    f = jax.jit(lambda key: empirical_sg_ntk(tw, tw.init(key), x))
    return np.stack([np.asarray(f(k), np.float64) for k in jax.random.split(jax.random.PRNGKey(7), samples)])


X4 = np.random.default_rng(0).normal(size=(4, 3)) * np.array([[0.4], [1.0], [2.5], [1.2]])


@pytest.mark.parametrize("layer", [SurrogateSign(m=4.0, surrogate="erf", a=0.5),
                                   SurrogateSign(m=1.0, surrogate="triangle", a=3.0),
                                   SurrogateStep(m=3.0, surrogate="rectangle", a=0.7)], ids=repr)
def test_monte_carlo_empirical_sg_ntk(layer: ka.Layer) -> None:
    """Mean of J(x_i) J_tilde(x_j)^T over 48 width-512 twins == ka.kernel, entrywise within 4.5 standard errors.

    One hidden layer: the hidden pre-activations are exactly Gaussian and independent of the readout weights,
    so the empirical kernel's mean equals the infinite-width kernel exactly (no 1/width bias). The
    antisymmetric part is tested separately: its standard error is ~30x smaller, so it pins the argument
    order (true Jacobian on the first argument) and the surrogate's shape and scale.
    """
    net = ka.Dense(1.2, 0.2) >> layer >> ka.Dense(1.0, 0.1, out_dim=1)
    exact = np.asarray(ka.kernel(net, X4, get="ntk"))
    draws = _mc(net, X4, 512, 48)
    off = ~np.eye(4, dtype=bool)
    for vals, ref, mask in ((draws, exact, np.ones((4, 4), bool)),
                            (draws - draws.transpose(0, 2, 1), exact - exact.T, off)):
        mean, se = vals.mean(0), vals.std(0, ddof=1) / math.sqrt(len(vals))
        assert np.all(np.abs(mean - ref)[mask] < 4.5 * se[mask]), (mean - ref) / np.where(se > 0, se, 1)
    # power: some exact antisymmetric entry is >= 10 standard errors, so swapping x1 and x2 would fail above
    assert (np.abs(exact - exact.T)[off] / se[off]).max() > 10


def test_twins_custom_jvp() -> None:
    """Same forward; autodiff gives the surrogate derivative (apply_surrogate) and the true one (apply_true)."""
    net = SurrogateSign(m=3.0, surrogate="triangle", a=2.0)
    tw = surrogate_twins(ka.Dense(1.0) >> net, (1,), 1)
    p = [{"W": jnp.ones((1, 1))}, {}]  # identity pre-activation: the twin is the bare activation
    u = jnp.linspace(-1.0, 1.0, 9)[:, None]
    np.testing.assert_allclose(tw.apply_true(p, u), tw.apply_surrogate(p, u))
    np.testing.assert_allclose(tw.apply_true(p, u)[:, 0], erf(3.0 * np.asarray(u[:, 0])), rtol=1e-6)
    g_s = jax.vmap(jax.grad(lambda x: tw.apply_surrogate(p, x[None, None])[0, 0]))(u[:, 0])
    g_t = jax.vmap(jax.grad(lambda x: tw.apply_true(p, x[None, None])[0, 0]))(u[:, 0])
    np.testing.assert_allclose(g_s, 4.0 * np.maximum(0, 1 - np.abs(2.0 * np.asarray(u[:, 0]))), atol=1e-6)
    np.testing.assert_allclose(g_t, [dphi("sign", 3.0, float(v)) for v in u[:, 0]], rtol=1e-5)


# --------------------------------------------------------------------------- asymmetry, tiling, naive

def test_asymmetry_preserved_and_tiling() -> None:
    net = ka.Dense(1.1, 0.1) >> SurrogateStep(surrogate="triangle", a=1.5) >> ka.Dense(1.0, 0.2) \
        >> SurrogateSign(m=2.0, a=0.6) >> ka.Dense(1.0)
    x = np.random.default_rng(1).normal(size=(7, 3)) * np.linspace(0.3, 2.0, 7)[:, None]
    assert ka.symbolic(net).asymmetric
    full = np.asarray(ka.kernel(net, x, get="ntk"))
    assert np.abs(full - full.T).max() > 1e-2
    np.testing.assert_allclose(ka.kernel(net, x, get="ntk", batch_size=3), full, rtol=1e-12, atol=1e-14)
    # rows carry x1 (true Jacobian), columns x2 (surrogate): blocks of the full matrix, never transposed
    np.testing.assert_allclose(np.asarray(ka.kernel(net, x[:3], x[3:], get="ntk")), full[:3, 3:], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(ka.kernel(net, x[3:], x[:3], get="ntk")), full[3:, :3], rtol=1e-12)
    # the naive (true-gradient) kernel is symmetric and is the Erf(b=m) network's NTK
    naive = ka.Dense(1.1, 0.1) >> SurrogateSign(m=2.0, surrogate="true") >> ka.Dense(1.0)
    erf_net = ka.Dense(1.1, 0.1) >> ka.Erf(1.0, 2.0, 0.0) >> ka.Dense(1.0)
    assert not ka.symbolic(naive).asymmetric
    np.testing.assert_allclose(ka.kernel(naive, x, get="ntk"), ka.kernel(erf_net, x, get="ntk"), rtol=1e-12)
    tg = true_gradient(ka.Dense(1.1, 0.1) >> SurrogateSign(m=2.0, a=0.3) >> ka.Dense(1.0))
    np.testing.assert_allclose(ka.kernel(tg, x, get="ntk"), ka.kernel(erf_net, x, get="ntk"), rtol=1e-12)


def test_naive_kernel_diagonal_grows_linearly_in_m() -> None:
    """psi' = phi' (naive NTK): Theta(x, x) ~ (2 sqrt(q)/pi) m, off-diagonal -> (2/pi) c / sqrt(q1 q2 - c^2);
    the SG-NTK stays bounded and tends to its m = None value."""
    naive = ka.Dense(1.0) >> SurrogateSign(m=1.0, surrogate="true")
    sg = ka.Dense(1.0) >> SurrogateSign(m=1.0, a=1.0)
    sg_inf = np.asarray(ka.kernel(ka.Dense(1.0) >> SurrogateSign(a=1.0), XY, get="ntk"))
    prev = None
    for m in (1e2, 1e3, 1e4):
        k = np.asarray(ka.kernel(naive, XY, get="ntk", params={"m_2": m}))
        np.testing.assert_allclose(np.diag(k) / m, 2 / math.pi, rtol=2 / m)  # q = 1
        assert abs(k[0, 1] - 2 / math.pi * 0.5 / math.sqrt(0.75)) < 1 / m
        if prev is not None:
            np.testing.assert_allclose(np.diag(k) / np.diag(prev), 10.0, rtol=1e-3)
        prev = k
        np.testing.assert_allclose(ka.kernel(sg, XY, get="ntk", params={"m_2": m}), sg_inf, rtol=2 / m)


def test_errors() -> None:
    with pytest.raises(ka.KernelalgError, match="finite sharpness"):
        SurrogateSign(surrogate="true")
    with pytest.raises(ka.KernelalgError, match="surrogate must be one of"):
        SurrogateStep(surrogate="sigmoid")
    with pytest.raises(ka.KernelalgError, match="> 0"):
        SurrogateSign(a=-1.0)
    with pytest.raises(ka.LayerOrderError):
        ka.kernel(SurrogateSign() >> SurrogateSign(), XY)
