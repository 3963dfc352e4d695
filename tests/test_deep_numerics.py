"""Numerics of deep networks (issue #23, issue #24 item 1): each measured failure as a regression test.

Expected values are independent of the code under test: the float64 kernel (for float32), the mpmath reference
at 30-50 digits (``ka.reference_kernel(..., dps=)``: the same closed forms evaluated pair by pair in arbitrary
precision, no JAX, no snapping), the NumPy reference, central differences, positive homogeneity, the variance
recursion ``cov1`` (a separate 1-D map: Tdiag), and the symbolic chi_1 = W^2 Tdot(q*, q*, q*) at the variance
fixed point (Poole et al. 2016).
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp

import kernelalg as ka
from kernelalg.backends import _jax as J
from kernelalg.backends._precision import amplification, layer_slopes
from kernelalg.core import _duals
from kernelalg.core._errors import NotRepresentableError, PrecisionWarning

X = np.random.default_rng(0).standard_normal((12, 8))
EPS32, EPS64 = float(np.finfo(np.float32).eps), float(np.finfo(np.float64).eps)


def deep(act: ka.Layer, w: float, depth: int, b: float = 0.05) -> ka.Layer:
    """[Dense(w, b) >> act] x depth >> Dense(w, b): a scanned program (compile time independent of depth)."""
    return ka.serial(*[ka.Dense(w, b), act] * depth, ka.Dense(w, b))


def quiet(f, *args, **kw):
    """Evaluate without PrecisionWarnings (tests that look at values, not at the warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        return f(*args, **kw)


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# ----------------------------------------------------------------- 1. no overflow while representable


def test_gelu_depth_100_float32_is_finite_and_matches_float64() -> None:
    """[Dense(1.6, 0.05), Gelu] x 100 >> Dense was NaN in every float32 entry (an O(s^4) intermediate); the kernel
    (largest NTK entry ~4e13) is representable in float32. Float64 is checked against mpmath at 30 digits."""
    net = deep(ka.Gelu(), 1.6, 100)
    k64 = ka.kernel(net, X)
    k32 = ka.kernel(net, X.astype(np.float32))
    for name in ("nngp", "ntk"):
        a32 = np.asarray(getattr(k32, name))
        assert a32.dtype == np.float32 and np.all(np.isfinite(a32))
        # each of the 201 layers adds a few float32 roundings to a relative error that does not amplify
        assert rel(a32, getattr(k64, name)) < 200 * 4 * EPS32
    assert np.max(np.asarray(k64.ntk)) > 1e12  # the regime of the report (values far beyond s^4 ~ float32 max)
    ref = ka.reference_kernel(net, X[:2], X[:3], get="ntk", dps=30)
    np.testing.assert_allclose(np.asarray(k64.ntk)[:2, :3], ref, rtol=1e-10)


def test_gelu_depth_50_float32_ntk_is_finite() -> None:
    """Depth 50, W_std 1.5: 142 of 25,600 NTK entries were inf in float32."""
    net = deep(ka.Gelu(), 1.5, 50)
    k32 = np.asarray(ka.kernel(net, X.astype(np.float32), get="ntk"))
    assert np.all(np.isfinite(k32))
    assert rel(k32, ka.kernel(net, X, get="ntk")) < 100 * 4 * EPS32


def test_unrepresentable_kernel_raises_and_names_the_precision() -> None:
    """ReLU without biases, W_std = 40: K(x, x) = 1600 * 800^L |x|^2/d exactly (W^2/2 = 800 per layer). At L = 13
    it is 8.8e40: beyond float32 (3.4e38), fine in float64 -> an error that says float64; at L = 106 (1e311)
    beyond float64 as well -> an error that says no supported precision computes it."""
    x = X / np.linalg.norm(X, axis=1, keepdims=True) * math.sqrt(X.shape[1])  # |x|^2/d = 1
    net = ka.serial(*[ka.Dense(40.0), ka.Relu()] * 13, ka.Dense(40.0))
    np.testing.assert_allclose(np.diag(np.asarray(ka.kernel(net, x, get="nngp"))), 1600 * 800.0**13, rtol=1e-12)
    with pytest.raises(NotRepresentableError, match="beyond float32's largest.*pass float64"):
        ka.kernel(net, x.astype(np.float32), get="nngp")
    deeper = ka.serial(*[ka.Dense(40.0), ka.Relu()] * 106, ka.Dense(40.0))
    with pytest.raises(NotRepresentableError, match="exceeds float64's range"):
        ka.kernel(deeper, x, get="nngp")


# ----------------------------------------------------------------- 2. exactly symmetric, PSD to rounding


@pytest.fixture
def small_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles of 17 x 17 pairs, so that small inputs take the upper-triangle tiled path (with padded tiles)."""
    monkeypatch.setattr(J, "TILE_ELEMENTS", 300)


@pytest.mark.parametrize("tiles", [False, True], ids=["one-block", "upper-tiles"])
def test_gram_of_x_is_exactly_symmetric_and_psd(tiles: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Depth 100 GELU (W_std 1.5), float64: K(x, x) differed from its transpose by 2.5e-7 relative and had a
    negative eigenvalue -8.6e-8 of the largest. Now bit-for-bit symmetric, eigenvalues >= -n eps max|K|, and
    equal to the NumPy reference (float64, pair by pair) to rounding."""
    if tiles:
        monkeypatch.setattr(J, "TILE_ELEMENTS", 300)
    x = np.random.default_rng(3).standard_normal((40, 8))  # 40 = 3 tiles of 17, the last one padded
    net = deep(ka.Gelu(), 1.5, 100)
    k = ka.kernel(net, x)
    for name in ("nngp", "ntk"):
        a = np.asarray(getattr(k, name))
        assert np.array_equal(a, a.T), name
        assert np.linalg.eigvalsh(a).min() >= -len(a) * EPS64 * np.abs(a).max(), name
        np.testing.assert_allclose(a, ka.reference_kernel(net, x, get=name), rtol=1e-10)
    np.testing.assert_array_equal(np.asarray(k.cov1), np.asarray(k.cov2))
    np.testing.assert_allclose(np.diag(np.asarray(k.nngp)), np.asarray(k.cov1), rtol=1e-13)


def test_tiled_gram_gradient_matches_finite_differences(small_tiles: None) -> None:
    """d sum(NTK) / d W_std of the first layer through the upper-triangle tiles (gather + mirror) against a
    central difference of the NumPy reference."""
    x = np.random.default_rng(4).standard_normal((37, 3))
    net = deep(ka.Erf(), 1.3, 3, b=0.1)
    f = ka.compile(net, get="ntk")
    with jax.enable_x64(True):
        g = float(jax.grad(lambda w: f(x, params={"sigma_w_1": w}).sum())(jnp.float64(1.3)))

    def ref(w: float) -> float:
        layers = [ka.Dense(w, 0.1), ka.Erf()] + [ka.Dense(1.3, 0.1), ka.Erf()] * 2 + [ka.Dense(1.3, 0.1)]
        return float(ka.reference_kernel(ka.serial(*layers), x).sum())

    h = 1e-5
    assert abs(g - (ref(1.3 + h) - ref(1.3 - h)) / (2 * h)) < 1e-7 * abs(g)


def test_surrogate_gradient_kernel_is_not_mirrored() -> None:
    """SG-NTKs are asymmetric by design (J J~^T): x2=None computes every entry, as x2 = a copy of x does."""
    net = ka.Dense(1.2, 0.1) >> ka.SurrogateSign(m=2.0, surrogate="erf", a=0.7) >> ka.Dense(1.1)
    x = np.random.default_rng(5).standard_normal((6, 3))
    a = np.asarray(ka.kernel(net, x, get="ntk"))
    np.testing.assert_allclose(a, np.asarray(ka.kernel(net, x, x.copy(), get="ntk")), rtol=1e-13)
    assert rel(a, a.T) > 1e-3


def test_gauss_hermite_route_is_symmetric_in_its_arguments() -> None:
    """Conv(2x2 VALID) >> Elementwise(tanh) (Gauss-Hermite) >> GlobalAvgPool >> Dense: K(x, y) = K(y, x)^T was
    off by 9e-6 relative (the 2-D rule on a Cholesky factor is not symmetric in (s11, s22)); the rule is now
    averaged over both orders."""
    tanh = ka.Elementwise(lambda u: sp.tanh(u), name="tanh")
    assert "Gauss-Hermite" in dict(tanh.static)["route"]
    net = ka.Conv((2, 2), padding="VALID") >> tanh >> ka.GlobalAvgPool() >> ka.Dense(1.0)
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(3, 3, 3, 2)), rng.normal(size=(4, 3, 3, 2))
    kxy, kyx = ka.kernel(net, x, y), ka.kernel(net, y, x)
    for name in ("nngp", "ntk"):
        assert rel(getattr(kxy, name), np.asarray(getattr(kyx, name)).T) < 1e-14, name


# ----------------------------------------------------------------- 3. float32 in the chaotic phase


CHAOTIC = dict(act=ka.Erf(), w=1.5, depth=100, b=0.05)


def _erf_chi() -> tuple[float, float]:
    """(q*, chi_1) of [Dense(1.5, 0.05), Erf] from the symbolic erf dual: q* = W^2 Tdiag(q*) + b^2 (iterated),
    chi_1 = W^2 Tdot(q*, q*, q*) (Poole et al. 2016, Schoenholz et al. 2017)."""
    s = sp.Symbol("s", positive=True)
    d = _duals.erf(s, s, s, 1, 1, 0)
    tdiag, tdot = sp.lambdify(s, d.Tdiag, "mpmath"), sp.lambdify(s, _duals.plain(d.Tdot), "mpmath")
    q = 1.0
    for _ in range(200):
        q = float(1.5**2 * tdiag(q) + 0.05**2)
    return q, float(1.5**2 * tdot(q))


def test_chaotic_erf_float32_agrees_with_float64_off_the_diagonal() -> None:
    """Erf, depth 100, W_std 1.5 (chi_1 = 1.24 > 1): the float32 NNGP differed from float64 by 108% -- the
    diagonal drifting from the variance map. With the correlation pinned, float32 agrees with float64 on
    inputs that are not nearly parallel (here |rho| <= 0.97)."""
    net = deep(CHAOTIC["act"], CHAOTIC["w"], CHAOTIC["depth"], CHAOTIC["b"])
    k64 = ka.kernel(net, X)
    k32 = quiet(ka.kernel, net, X.astype(np.float32))
    assert rel(k32.nngp, k64.nngp) < 1e-5
    assert rel(k32.ntk, k64.ntk) < 1e-4
    np.testing.assert_allclose(np.diag(np.asarray(k32.nngp)), np.asarray(k32.cov1), rtol=16 * EPS32)


def test_chaotic_amplification_is_chi_1_and_warns_in_float32_only() -> None:
    """The per-layer slope of the correlation map at rho = 1 (finite-gap evaluation of the program) equals the
    symbolic chi_1 at the fixed point; float32 (eps * A >> 1e-3) warns with the digits lost, float64 does not."""
    net = deep(CHAOTIC["act"], CHAOTIC["w"], CHAOTIC["depth"], CHAOTIC["b"])
    q_star, chi = _erf_chi()
    assert chi > 1  # chaotic phase
    sk = ka.symbolic(net, keep_symbols=True)
    slopes = layer_slopes(sk.program, sk.blocks, sk.outputs, sk.params, np.array([1.0]), X.shape[1])
    np.testing.assert_allclose(slopes[-3, 0] * slopes[-2, 0], chi, rtol=1e-5)  # last [Erf, Dense] unit
    amp = amplification(slopes)
    assert chi**100 / 10 < amp < chi**100 * 10
    with pytest.warns(PrecisionWarning, match=r"float32 loses about 7 of its 7 significant digits"):
        ka.kernel(net, X.astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionWarning)
        ka.kernel(net, X)


def test_predicted_error_matches_float64_against_mpmath() -> None:
    """The prediction eps * A, checked where float64 is the precision at stake: pairs with 1 - rho = 1e-12, 1e-11,
    1e-10 (decorrelated over the 100 layers). Their largest float64 error against the 40-digit mpmath reference
    is eps64 * A to within a factor 30 (one rounding pattern per pair: measured 2.0e-7 against 7.2e-7)."""
    net = deep(CHAOTIC["act"], CHAOTIC["w"], CHAOTIC["depth"], CHAOTIC["b"])
    x = X[:1] / np.sqrt(np.mean(X[:1] ** 2))
    other = np.random.default_rng(7).standard_normal(8)
    other -= other @ x[0] / (x[0] @ x[0]) * x[0]
    other *= np.linalg.norm(x[0]) / np.linalg.norm(other)
    y = np.stack([math.cos(t) * x[0] + math.sin(t) * other for t in np.arccos(1 - np.array([1e-12, 1e-11, 1e-10]))])
    got = np.asarray(ka.kernel(net, x, y, get="nngp"))[0]
    ref = ka.reference_kernel(net, x, y, get="nngp", dps=40)[0]
    sk = ka.symbolic(net, keep_symbols=True)
    amp = amplification(layer_slopes(sk.program, sk.blocks, sk.outputs, sk.params, np.array([1.0]), 8))
    err = float(np.max(np.abs(got - ref) / np.abs(ref)))
    assert EPS64 * amp / 30 < err < EPS64 * amp * 30


# ----------------------------------------------------------------- 4. finite gradients at zero inputs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradient_wrt_w_std_with_a_zero_input_is_the_homogeneity_identity(dtype: type) -> None:
    """A ReLU net without biases is homogeneous of degree 2 in each W_std: dK/dW = 2 K / W, also with an all-zero
    input row (where the gradient was NaN)."""
    x = X[:5].astype(dtype)
    x[2] = 0
    net = ka.Dense(1.3) >> ka.Relu() >> ka.Dense(1.2) >> ka.Relu() >> ka.Dense(0.9)
    f = ka.compile(net, get="nngp")
    with jax.enable_x64(dtype == np.float64):
        p = {k: jnp.asarray(v, dtype) for k, v in f.params.items()}
        g = jax.grad(lambda p: f(x, params=p).sum())(p)
        gx = jax.grad(lambda a: f(a).sum())(jnp.asarray(x))
    total = float(np.asarray(f(x), np.float64).sum())
    for k, v in f.params.items():
        np.testing.assert_allclose(float(g[k]), 2 * total / v, rtol=50 * float(np.finfo(dtype).eps))
    assert np.all(np.isfinite(np.asarray(gx)))


@pytest.mark.parametrize("act", [ka.Erf(), ka.Gelu(), ka.Sin(), ka.Relu(), ka.Gaussian()], ids=lambda a: a.name)
def test_input_gradient_at_a_zero_row_matches_central_differences(act: ka.Layer) -> None:
    """With biases the kernel is differentiable at x = 0 (the pre-activation variance is b^2 > 0): the gradient
    of sum(NNGP + NTK) w.r.t. the zero row equals central differences of the NumPy reference."""
    net = ka.Dense(1.2, 0.3) >> act >> ka.Dense(0.9, 0.2) >> act >> ka.Dense(1.1, 0.1)
    x = X[:4].copy()
    x[1] = 0
    f = ka.compile(net)
    with jax.enable_x64(True):
        g = np.asarray(jax.grad(lambda a: (lambda k: k.nngp.sum() + k.ntk.sum())(f(a, jnp.asarray(x))))(
            jnp.asarray(x)))

    def total(a: np.ndarray) -> float:
        return float(ka.reference_kernel(net, a, x, get="nngp").sum() + ka.reference_kernel(net, a, x).sum())

    h = 1e-6
    fd = np.zeros(x.shape[1])
    for j in range(x.shape[1]):
        e = np.zeros_like(x)
        e[1, j] = h
        fd[j] = (total(x + e) - total(x - e)) / (2 * h)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g[1], fd, rtol=1e-5, atol=1e-7 * np.abs(fd).max())


# ----------------------------------------------------------------- #24: the diagonal at large norms and depths


def _scaled(q: float, n: int = 3) -> np.ndarray:
    return X[:n] / np.sqrt(np.mean(X[:n] ** 2, axis=1, keepdims=True)) * math.sqrt(q)


@pytest.mark.parametrize("act, q, dtype, rtol", [
    (ka.Erf(), 1e8, np.float32, 1e-5), (ka.Erf(), 4e18, np.float64, 1e-12),
    (ka.Gelu(), 1.5e8, np.float32, 1e-5), (ka.Gelu(), 1e30, np.float64, 1e-12)], ids=str)
def test_gram_diagonal_at_large_norm_matches_mpmath(act: ka.Layer, q: float, dtype: type, rtol: float) -> None:
    """K(x, x) of Dense >> act >> Dense >> act >> Dense at |x|^2/d = q: erf float32 NTK was 2.858e4 against 8.194e3
    (s11 s22 - s12^2 cancelling), GELU gave inf. Against the 50-digit mpmath reference."""
    net = ka.Dense(1.0, 0.1) >> act >> ka.Dense(1.5, 0.05) >> act >> ka.Dense(1.2)
    x = _scaled(q).astype(dtype)
    k = ka.kernel(net, x)
    for name in ("nngp", "ntk"):
        ref = np.diag(ka.reference_kernel(net, x.astype(np.float64), get=name, dps=50))
        np.testing.assert_allclose(np.diag(np.asarray(getattr(k, name), np.float64)), ref, rtol=rtol)


CLOSED_FORMS = [
    ka.Relu(), ka.LeakyRelu(0.2), ka.ABRelu(-0.5, 1.5), ka.Abs(), ka.Erf(1.3, 0.7, 0.2), ka.Gelu(),
    ka.Sin(1.2, 0.8, 0.3), ka.Cos(0.9, 1.1, -0.4), ka.Monomial(3), ka.RectifiedMonomial(2),
    ka.Polynomial([0.1, -0.5, 0.3]), ka.Exp(0.8, 0.4), ka.Gaussian(1.1, -0.6), ka.Rbf(0.7), ka.Sign(),
]


@pytest.mark.parametrize("act", CLOSED_FORMS, ids=lambda a: a.name)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gram_diagonal_is_the_variance_map_at_every_scale(act: ka.Layer, dtype: type) -> None:
    """diag(NNGP) == cov1 (the 1-D variance recursion) for inputs of |x|^2/d from 1e-6 to 1e6, to a few ulps per
    layer; where the value is not representable, the error says so instead."""
    net = ka.Dense(1.1, 0.1) >> act >> ka.Dense(0.9, 0.1) >> act >> ka.Dense(1.0, 0.05)
    x = np.concatenate([_scaled(q, 1) for q in (1e-6, 1.0, 1e6)])[[0, 1, 2, 0]]  # with a repeated row
    try:
        k = quiet(ka.kernel, net, x.astype(dtype), get=("nngp", "ntk"))
    except NotRepresentableError as err:
        assert act.name in ("Exp", "Monomial", "RectifiedMonomial", "Polynomial"), str(err)
        return
    nngp = np.asarray(k.nngp)
    np.testing.assert_allclose(np.diag(nngp), np.asarray(k.cov1), rtol=64 * float(np.finfo(dtype).eps))
    np.testing.assert_allclose(nngp[0], nngp[3], rtol=4 * float(np.finfo(dtype).eps))  # identical rows
    assert np.all(np.isfinite(np.asarray(k.ntk)))


@pytest.mark.parametrize("route", ["tanh", "x/2+sin"])
def test_elementwise_routes_keep_the_diagonal_on_the_variance_map(route: str) -> None:
    """The Gauss-Hermite route (tanh) and the exact MGF route (x/2 + sin x) go through the pinned correlation too:
    at depth 30 with W_std 2 (chi_1 > 1 for both) diag(NNGP) stays on cov1 (float64)."""
    fn = {"tanh": lambda u: sp.tanh(u), "x/2+sin": lambda u: u / 2 + sp.sin(u)}[route]
    act = ka.Elementwise(fn, name=route)
    net = deep(act, 2.0, 30, b=0.1)
    k = quiet(ka.kernel, net, X[:6])
    np.testing.assert_allclose(np.diag(np.asarray(k.nngp)), np.asarray(k.cov1), rtol=1e-13)
    assert np.all(np.isfinite(np.asarray(k.ntk)))


@pytest.mark.parametrize("dtype, depth", [(np.float32, 70), (np.float64, 200)])
def test_chaotic_erf_diagonal_stays_on_the_variance_map(dtype: type, depth: int) -> None:
    """Erf, W_std 1.45, b_std 0.1 (chaotic): the pair-path diagonal was 110% off cov1 at depth 70 in float32 and
    0.116 against 0.867 at depth 1000 in float64 (see the slow test), with inf NTK entries."""
    net = deep(ka.Erf(), 1.45, depth, b=0.1)
    k = quiet(ka.kernel, net, X.astype(dtype))
    np.testing.assert_allclose(np.diag(np.asarray(k.nngp)), np.asarray(k.cov1), rtol=16 * float(np.finfo(dtype).eps))
    assert np.all(np.isfinite(np.asarray(k.ntk)))
    # cov1 itself against the 1-D variance recursion of the symbolic dual, in mpmath
    d = _duals.erf(sp.Symbol("s"), sp.Symbol("s"), sp.Symbol("s"), 1, 1, 0)
    tdiag = sp.lambdify(sp.Symbol("s"), d.Tdiag, "mpmath")
    qs = np.mean(X.astype(np.float64) ** 2, axis=1)
    for i in (0, 5):
        q = 1.45**2 * qs[i] + 0.01
        for _ in range(depth):
            q = 1.45**2 * float(tdiag(q)) + 0.01
        np.testing.assert_allclose(float(k.cov1[i]), q, rtol=100 * float(np.finfo(dtype).eps))


@pytest.mark.slow
def test_chaotic_erf_depth_1000_float64() -> None:
    """The depth-1000 case of #24: diag(NNGP) was 0.116 against cov1 = 0.867, with inf NTK entries."""
    net = deep(ka.Erf(), 1.45, 1000, b=0.1)
    k = quiet(ka.kernel, net, X)
    np.testing.assert_allclose(np.diag(np.asarray(k.nngp)), np.asarray(k.cov1), rtol=1e-13)
    assert np.all(np.isfinite(np.asarray(k.ntk)))
