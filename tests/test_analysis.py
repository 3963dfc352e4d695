"""Tests of kernelalg.analysis. Every expected value is independent of the code under test: theory.md numbers,
mpmath tanh-sinh quadrature, scipy solve_ivp, direct sums, hand-computed matrices, or Monte Carlo / simulation.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import sympy as sp
from scipy.integrate import solve_ivp

import kernelalg as ka
from kernelalg import analysis as A

t_ = sp.Symbol("t")
KAPPA = (sp.sqrt(1 - t_ ** 2) + (sp.pi - sp.acos(t_)) * t_) / sp.pi  # theory.md, arc-cosine kernel of degree 1
RELU2 = ka.Dense(1.0, 0.0) >> ka.Relu() >> ka.Dense(2 ** 0.5, 0.0)  # its NNGP at q = 1 is KAPPA
RELU_B = ka.Dense(1.0, 0.2) >> ka.Relu() >> ka.Dense(1.0, 0.1)
THEORY = {0: 3 / 8, 1: 1 / 6, 2: 3 / 128, 4: 1 / 1536}


# ------------------------------------------------------------------------------------------ spectra


@pytest.mark.parametrize("kernel", [KAPPA, "net"])
def test_theory_eigenvalues_d3(kernel):
    spec = A.mercer_spectrum(RELU2 if kernel == "net" else kernel, 3, kmax=25, which="nngp")
    for k, v in THEORY.items():
        assert spec.mu[k] == pytest.approx(v, rel=1e-12)
    assert np.all(np.abs(spec.mu[3::2]) < 1e-14)  # odd k >= 3 vanish (no bias)
    assert spec.multiplicity[:4].tolist() == [1, 3, 5, 7]  # 2k + 1 on S^2
    assert spec.k_at_one == pytest.approx(1.0)


def test_exact_symbolic_eigenvalues():
    exact = [A.exact_eigenvalue(RELU2, 3, k, which="nngp") for k in range(5)]
    assert exact == [sp.Rational(3, 8), sp.Rational(1, 6), sp.Rational(3, 128), 0, sp.Rational(1, 1536)]
    with pytest.raises(ka.KernelalgError, match="not a polynomial"):
        A.exact_eigenvalue(ka.Dense(1.0, 0.0) >> ka.Erf() >> ka.Dense(1.0), 3, 2)


def _mp_eigenvalue(f, d, k):
    """Independent Funk-Hecke integral in t with mpmath tanh-sinh and mpmath's own Gegenbauer function."""
    lam = mpmath.mpf(d - 2) / 2
    cd = mpmath.gamma(mpmath.mpf(d) / 2) / (mpmath.sqrt(mpmath.pi) * mpmath.gamma(mpmath.mpf(d - 1) / 2))
    norm = mpmath.gegenbauer(k, lam, 1)
    g = lambda t: f(t) * mpmath.gegenbauer(k, lam, t) / norm * (1 - t * t) ** ((mpmath.mpf(d) - 3) / 2)  # noqa
    return cd * mpmath.quad(g, mpmath.linspace(-1, 1, 5))


@pytest.mark.parametrize("net,d", [(ka.Dense(1.0, 0.3) >> ka.Erf() >> ka.Dense(1.0, 0.1), 5), (RELU_B, 4)])
def test_quadrature_against_mpmath(net, d):
    sym = ka.symbolic(net).ntk.subs({ka.Q1: 1, ka.Q2: 1, ka.C: t_})
    f = sp.lambdify(t_, sym, "mpmath")
    spec = A.mercer_spectrum(net, d, kmax=6)
    hp = A.mercer_spectrum(net, d, kmax=6, dps=30)
    with mpmath.workdps(25):
        ref = [float(mpmath.re(_mp_eigenvalue(f, d, k))) for k in range(7)]
    np.testing.assert_allclose(spec.mu, ref, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(hp.mu, ref, rtol=1e-12, atol=1e-16)


def test_kernel_function_matches_compiled_kernel():
    x = A.sphere_points(40, 4, seed=1)
    k_lib = np.asarray(ka.kernel(RELU_B, x, get="ntk"))
    k_fun = A.as_kernel(RELU_B, "ntk")(np.clip(x @ x.T / 4, -1, 1))
    np.testing.assert_allclose(k_fun, k_lib, rtol=1e-6, atol=1e-6)


def test_trace_identity():
    spec = A.mercer_spectrum(RELU_B, 3, kmax=300)
    k11 = float(np.asarray(ka.kernel(RELU_B, A.sphere_points(1, 3), get="ntk"))[0, 0])  # k(1) from ka.kernel
    chk = spec.trace_check()
    assert chk.target == pytest.approx(k11, rel=1e-6)
    assert chk.partial < chk.target  # all mu_k >= 0 (positive definite kernel)
    assert 0 < chk.target - chk.partial < 0.02 * chk.target  # tail ~ 1/kmax for the NTK
    assert abs(chk.residual) < 1e-4 * chk.target  # with the power-law tail added
    smooth = A.mercer_spectrum(ka.Dense(1.0, 0.3) >> ka.Erf() >> ka.Dense(1.0, 0.1), 4, kmax=40)
    assert smooth.trace_check().relative_residual < 1e-12  # analytic kernel: geometric decay


@pytest.mark.parametrize("d", [3, 5])
def test_decay_exponent_relu(d):
    ntk = A.decay_exponent(RELU2, d, "ntk")
    nngp = A.decay_exponent(RELU2, d, "nngp")
    assert (ntk.s_plus, ntk.slope) == (sp.Rational(1, 2), -d)  # theory.md: NTK ~ k^-d
    assert (nngp.s_plus, nngp.slope) == (sp.Rational(3, 2), -d - 2)  # NNGP ~ k^(-d-2)
    assert A.decay_exponent(RELU2, d, "ntk", method="differences").slope == -d
    spec = A.mercer_spectrum(RELU2, d, kmax=120, which="ntk")
    assert np.max(spec.abs_error) < 1e-13
    fit = spec.fit(kmin=30, corrections=2, rtol=1e-13)
    assert fit.slope == pytest.approx(-d, abs=0.005)
    assert fit.nonzero_fraction == pytest.approx(0.5, abs=0.01)  # odd k >= 3 vanish


def test_decay_exponent_deep_and_smooth():
    deep = ka.Dense(1.0, 0.1) >> ka.Relu() >> ka.Dense(1.0, 0.1) >> ka.Relu() >> ka.Dense(1.0, 0.1)
    de = A.decay_exponent(deep, 4, "ntk")
    assert de.s_plus == sp.Rational(1, 2) and de.s_minus is None and de.slope == -4
    assert A.mercer_spectrum(deep, 4, kmax=160).fit(kmin=40, corrections=2).slope == pytest.approx(-4, abs=0.01)
    smooth = A.decay_exponent(ka.Dense(1.0, 0.3) >> ka.Erf() >> ka.Dense(1.0), 3, "ntk")
    assert smooth.slope is None


def test_gram_spectrum_converges():
    spec = A.mercer_spectrum(RELU_B, 3, kmax=20)
    top = spec.eigenvalues(16)
    errs = [np.max(np.abs(A.gram_spectrum(RELU_B, 3, n, seed=3)[:16] - top)) / top[0] for n in (100, 1600)]
    assert errs[1] < 0.5 * errs[0]
    assert errs[1] < 0.03


# ------------------------------------------------------------------------------------------ loss


def test_power_law_loss_asymptote():
    K, kappa, Lam, nu = 2.0, 0.7, 1.5, 1.3
    k = np.arange(1, 2_000_001, dtype=np.float64)
    for t in (1e3, 1e4):
        direct = 0.5 * np.sum(K * k ** (-kappa - 1) * np.exp(-2 * Lam * k ** (-nu) * t))
        assert A.power_law_loss(t, K, kappa, Lam, nu) == pytest.approx(direct, rel=0.02)


def test_sphere_loss_matches_kernel_flow():
    d, n = 3, 1200
    a = np.array([0.0, 1.0, 0.8, 0.0, 0.5, 0.0, 0.3])
    spec = A.mercer_spectrum(RELU_B, d, kmax=10)
    x = A.sphere_points(n, d, seed=5)
    y = A.zonal_target(x, a, d)
    gram = A.as_kernel(RELU_B)(np.clip(x @ x.T / d, -1, 1))
    ts = np.array([0.0, 3.0, 30.0])
    pred = A.sphere_loss_curve(spec, a, ts)
    sim = A.kernel_flow_loss(gram, y, ts)  # the flow df/dt = -(1/n) K (f - y) on the n samples, exactly
    half_sq = 0.5 * y ** 2  # Monte Carlo of |f*|^2 / 2 with its standard error
    assert pred[0] == pytest.approx(half_sq.mean(), abs=4 * half_sq.std() / np.sqrt(n))
    # relative decay L(t)/L(0): population operator vs K/n on n samples. Two finite-n effects: the training
    # loss is biased low by ~ (functions fitted)/n = 49/1200 ~ 0.04 (harmonics up to degree 6 on S^2), and the
    # eigenvalues of K/n carry a relative error eps ~ 1/sqrt(n) ~ 0.03 that exp(-2 lambda t) amplifies to
    # ~ 2 lambda t eps: ~0.03 at t = 3 and ~0.12 at t = 30 (2 lambda t <= 4 where the loss sits there).
    np.testing.assert_allclose(sim[1] / sim[0], pred[1] / pred[0], rtol=0.08)
    np.testing.assert_allclose(sim[2] / sim[0], pred[2] / pred[0], rtol=0.15)
    assert pred[2] / pred[0] < 0.2  # the curve has decayed substantially over the compared range


# ------------------------------------------------------------------------------------------ dynamics


def _problem(seed=0, n=12, m=5):
    x = A.sphere_points(n + m, 3, seed=seed)
    kn = A.as_kernel(RELU_B, "nngp")(np.clip(x @ x.T / 3, -1, 1))
    kt = A.as_kernel(RELU_B, "ntk")(np.clip(x @ x.T / 3, -1, 1))
    y = np.sin(2 * x[:n, 0]) + x[:n, 1]
    return kn, kt, y, n


def test_gradient_descent_mse_limits_and_ode():
    _, kt, y, n = _problem()
    kdd, ktd = kt[:n, :n], kt[n:, :n]
    rng = np.random.default_rng(0)
    f0, g0 = rng.standard_normal(n), rng.standard_normal(kt.shape[0] - n)
    lr = 0.5
    pred = A.gradient_descent_mse(kdd, y, learning_rate=lr)
    ftr, fte = pred(None, f0, g0, ktd)  # t = infinity: kernel regression from f0
    np.testing.assert_allclose(ftr, y, atol=1e-8)
    np.testing.assert_allclose(fte, g0 + ktd @ np.linalg.solve(kdd, y - f0), atol=1e-7)
    ftr, fte = pred(0.0, f0, g0, ktd)
    np.testing.assert_allclose(ftr, f0, atol=1e-12)
    np.testing.assert_allclose(fte, g0, atol=1e-12)

    def rhs(_, z):  # neural-tangents' flow: d f / d(step) = -(lr/N) Theta (f_train - y)
        r = z[:n] - y
        return np.concatenate([-(lr / n) * kdd @ r, -(lr / n) * ktd @ r])
    steps = 7.0
    ode = solve_ivp(rhs, (0, steps), np.concatenate([f0, g0]), rtol=1e-10, atol=1e-12).y[:, -1]
    ftr, fte = pred(steps, f0, g0, ktd)
    np.testing.assert_allclose(np.concatenate([ftr, fte]), ode, atol=1e-7)


@pytest.mark.parametrize("get", ["ntk", "nngp"])
def test_ensemble_mean_and_covariance(get):
    kn, kt, y, n = _problem(1)
    theta = kt if get == "ntk" else kn
    lr, steps = 2.0, 5.0
    ens = A.gradient_descent_mse_ensemble(kn[:n, :n], y, kn[n:, :n], kn[n:, n:], kt[:n, :n], kt[n:, :n],
                                          learning_rate=lr)
    prior = ens(0.0, get)
    np.testing.assert_allclose(prior.mean, 0, atol=1e-12)
    np.testing.assert_allclose(prior.covariance, kn[n:, n:], atol=1e-10)
    inf = ens(None, get)
    np.testing.assert_allclose(inf.mean, theta[n:, :n] @ np.linalg.solve(theta[:n, :n], y), atol=1e-6)
    # finite t: f(t) = A(t) f0 + b(t) with f0 ~ N(0, K); A, b from the ODE of the joint (train, test) outputs
    N = kn.shape[0]

    def rhs(_, z):
        z = z.reshape(N, N + 1)
        r = z[:n].copy()
        r[:, -1] -= y  # last column carries the affine part (starts at 0)
        return (-(lr / n) * theta[:, :n] @ r).ravel()
    z0 = np.concatenate([np.eye(N), np.zeros((N, 1))], axis=1)
    z = solve_ivp(rhs, (0, steps), z0.ravel(), rtol=1e-10, atol=1e-12).y[:, -1].reshape(N, N + 1)
    amat, b = z[n:, :N], z[n:, -1]
    got = ens(steps, get)
    np.testing.assert_allclose(got.mean, b, atol=1e-7)
    np.testing.assert_allclose(got.covariance, amat @ kn @ amat.T, atol=1e-7)


def test_gp_inference_and_max_learning_rate():
    kn, kt, y, n = _problem(2)
    post = A.gp_inference(kn[:1, :1], y[:1], kn[n:, :1], kn[n:, n:])  # one training point, by hand
    np.testing.assert_allclose(post.mean, kn[n:, 0] * y[0] / kn[0, 0], atol=1e-12)
    np.testing.assert_allclose(post.covariance, kn[n:, n:] - np.outer(kn[n:, 0], kn[n:, 0]) / kn[0, 0], atol=1e-12)
    eta = A.max_learning_rate(kt[:n, :n])  # neural-tangents: 2 N / lambda_max for loss |f - y|^2 / (2N)
    assert eta == pytest.approx(2 * n / np.max(np.linalg.eigvalsh(kt[:n, :n])))
    for factor, stable in ((0.98, True), (1.02, False)):  # simulate GD on the linear model
        r = np.ones(n)
        for _ in range(3000):
            r = r - factor * eta / n * kt[:n, :n] @ r
        assert (np.linalg.norm(r) < 10) == stable


# ------------------------------------------------------------------------------------------ early time


def test_early_time_constants():
    relu = A.early_time_constants("relu")
    assert relu.zeta == sp.Rational(1, 2)
    assert sp.simplify(relu.mean_ddphi - 1 / sp.sqrt(2 * sp.pi)) == 0
    erf = A.early_time_constants("erf")
    assert sp.simplify(erf.zeta - 2 / sp.sqrt(3 * sp.pi)) == 0 and erf.mean_ddphi == 0
    g = np.random.default_rng(0).standard_normal(400_000)  # Monte Carlo of E[phi'(g)^2] for erf
    mc = (2 / np.sqrt(np.pi)) ** 2 * np.exp(-2 * g ** 2)
    assert float(erf.mean_dphi_sq) == pytest.approx(mc.mean(), abs=4 * mc.std() / np.sqrt(len(g)))


@pytest.mark.parametrize("act", ["relu", "erf"])
def test_early_time_error_decreases(act):
    err = A.early_time_error(act, [20, 80, 320])
    assert err[0] > err[1] > err[2]
    assert err[2] < 0.05


# ------------------------------------------------------------------------------------------ kernel evolution


def test_kernel_metrics_by_hand():
    n = 6
    eye, ones = np.eye(n), np.ones((n, n))
    assert A.kernel_distance(eye, ones) == pytest.approx(1 - 1 / np.sqrt(n))  # <I, 11^T> = n
    assert A.kernel_distance(eye, 3 * eye) == pytest.approx(0, abs=1e-15)
    x = np.random.default_rng(0).standard_normal((n, 3))
    k = x @ x.T
    assert A.centered_alignment(k, k + 5 * ones) == pytest.approx(1.0)  # centring removes constants
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((3, 3)))
    assert A.centered_alignment(k, (x @ q) @ (x @ q).T) == pytest.approx(1.0)
    np.testing.assert_allclose(A.kernel_velocity([eye, ones, ones], [0, 2, 3]), [(1 - 1 / np.sqrt(n)) / 2, 0],
                               atol=1e-15)


def test_finite_training_follows_linearized_prediction():
    x = A.sphere_points(8, 3, seed=4)
    y = np.sin(2 * x[:, 0])
    kt = A.as_kernel(RELU_B, "ntk")(np.clip(x @ x.T / 3, -1, 1))
    lr, steps = 0.5 * A.max_learning_rate(kt), 60
    dev, moved = [], []
    for width in (64, 4096):
        run = A.train_finite(RELU_B, x, y, width, lr, steps, seed=0, record_every=steps)
        pred = A.linearized_gd_loss(kt, y, run.f0, lr, steps)  # infinite-width NTK, the net's own f0
        dev.append(np.max(np.abs(run.loss - pred)) / run.loss[0])
        moved.append(run.distances_from_init()[-1])
    assert run.loss[-1] < 0.05 * run.loss[0]  # it trains
    # deviation from the linearized prediction is O(1/sqrt(width)) (Lee et al. 2019): ~0.02 measured at
    # width 1024, so ~0.01 expected at 4096
    assert dev[1] < 0.015
    assert moved[1] < moved[0] / 10  # lazy regime: the NTK's kernel distance from init falls ~ 1/width


# ------------------------------------------------------------------------------------------ plots, errors


def test_plots(tmp_path):
    spec = A.mercer_spectrum(RELU2, 3, kmax=40)
    p1 = spec.plot(tmp_path / "s.png", derived=A.decay_exponent(RELU2, 3))
    p2 = A.plot_loss_curves(np.array([1.0, 2.0, 4.0]), {"a": [1, 0.5, 0.2], "b": [1, 0.6, 0.3]}, tmp_path / "l.png")
    p3 = A.plot_gram_spectrum(spec, A.gram_spectrum(RELU2, 3, 60), tmp_path / "g.png")
    for p in (p1, p2, p3):
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_bad_input():
    with pytest.raises(ka.KernelalgError, match="dim"):
        A.mercer_spectrum(RELU2, 1)
    with pytest.raises(ka.KernelalgError, match="kmax"):
        A.mercer_spectrum(RELU2, 3, kmax=0)
    with pytest.raises(ka.KernelalgError, match="which"):
        A.mercer_spectrum(RELU2, 3, which="cov")
    with pytest.raises(ka.KernelalgError, match="dot-product"):
        A.mercer_spectrum(t_ * sp.Symbol("s"), 3)
    with pytest.raises(ka.KernelalgError, match="k_test_train"):
        A.gradient_descent_mse(np.eye(2), np.ones(2))(1.0, 0.0, np.zeros(1))
    assert math.isfinite(A.mercer_spectrum(RELU2, 2, kmax=5).mu[0])  # circle S^1 works
