"""The verification report tells the truth: tests of issue #16's findings.

Expected values come from outside the code under test: the documented readout rule of ``ka.finite``, a hand
expansion of sign's NNGP at large sharpness, the nominal level of a test on simulated data with a known mean,
the n^-1/2 law of one network's kernel fluctuation, and the report's own stated claims (same fit in plot and
text, whole titles inside the figure, failing checks shown as failing).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import kernelalg as ka  # noqa: E402
from kernelalg.analysis._plots import wrap_title  # noqa: E402
from kernelalg.cli._main import main  # noqa: E402
from kernelalg.finite._convergence import fit_spread, network_spread  # noqa: E402
from kernelalg.finite._verify import decorrelated_test  # noqa: E402

X4 = np.random.default_rng(11).normal(size=(4, 3)).astype(np.float32)
SG = ka.Dense(1.0, 0.1) >> ka.SurrogateSign() >> ka.Dense(1.0, 0.1)
TINY = ["--quick", "-n", "6", "--widths", "128,512", "--samples", "16", "--steps", "8", "--no-progress"]


def _inside(fig, text) -> bool:
    """The rendered text lies within the figure's pixel box."""
    fig.canvas.draw()
    box = text.get_window_extent(fig.canvas.get_renderer())
    return box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height


# ------------------------------------------------------------------ surrogate twins and the m = None kernel


def test_surrogate_twins_readout_width_is_that_of_ka_finite() -> None:
    """Documented readout rule: hidden layers get ``width``, the readout 1 output unless out_dim says otherwise."""
    net = ka.Dense(1.0, 0.1) >> ka.SurrogateSign(m=2.0) >> ka.Dense(1.0, 0.1)
    tw = ka.surrogate_twins(net, (3,), 64)
    assert tw.out_shape == (1,)
    shapes = [a.shape for a in jax.tree_util.tree_leaves(tw.init(jax.random.PRNGKey(0)))]
    ref = [a.shape for a in jax.tree_util.tree_leaves(ka.finite(net, 64).init(jax.random.PRNGKey(0), (3,)))]
    assert shapes == ref and sum(math.prod(s) for s in shapes) == 3 * 64 + 64 + 64 + 1
    assert ka.surrogate_twins(net, (3,), 64, out_dim=5).out_shape == (5,)
    x = jax.numpy.asarray(X4)
    assert tw.apply_true(tw.init(jax.random.PRNGKey(1)), x).shape == (4, 1)


@pytest.fixture(scope="module")
def sg_nngp() -> ka.Verification:
    return ka.verify(SG, X4, get="nngp", widths=(64,), samples=256, key=3)


def test_verify_refuses_the_exact_sign_ntk_but_checks_its_nngp(sg_nngp: ka.Verification) -> None:
    """At m = None the twins' true Jacobian of sign is 0 a.e.: ka.verify says so (with a fix) instead of a
    meaningless |z| ~ 1e11; the forward, hence the NNGP, is exact and its Monte Carlo is valid."""
    with pytest.raises(ka.KernelalgError, match="m=None") as err:
        ka.verify(SG, X4)
    assert "Fix" in str(err.value) and "verify_sharpness_limit" in str(err.value)
    assert sg_nngp.passed, sg_nngp.summary()


def test_sign_nngp_diagonal_approaches_one_as_one_over_m() -> None:
    """Hand expansion: (2/pi) arcsin(2 m^2 s / (1 + 2 m^2 s)) = 1 - (2/pi) / (m sqrt(s)) + O(m^-3), so
    m (1 - K_m(x, x)) -> 2 / (pi sqrt(s)) with s = W^2 |x|^2 / d + b^2: the O(1/m) rate of the sharpness check."""
    x = X4.astype(np.float64)
    s = 1.3**2 * np.sum(x**2, 1) / 3 + 0.2**2
    for m in (1e3, 1e4):
        k = np.diag(np.asarray(ka.kernel(ka.Dense(1.3, 0.2) >> ka.SurrogateSign(m=m), x, get="nngp")))
        np.testing.assert_allclose(m * (1 - k), 2 / (np.pi * np.sqrt(s)), rtol=3 / m)


def test_sharpness_limit_passes_and_catches_a_wrong_limit() -> None:
    """Finite-m Monte Carlo agrees with the exact finite-m kernels; extrapolated in m they land on the m = None
    kernel, and a m = None kernel off by 0.1% (far below any Monte Carlo resolution here) is caught."""
    lim = ka.verify_sharpness_limit(SG, X4, widths=(128,), samples=64, key=5)  # one hidden layer: no width bias
    assert lim.passed, lim.summary()
    assert lim.sharpness == (0.5, 2.0, 8.0) and lim.limit == (256.0, 1024.0, 4096.0)
    for n in ("nngp", "ntk"):
        assert np.all(np.diff(lim.distance[n]) < 0) and abs(lim.rate[n] - 1) < 0.05
    k = ka.kernel(SG, X4.astype(np.float64))
    wrong = ka.Kernel(np.asarray(k.nngp), np.asarray(k.ntk) * 1.001, k.cov1, k.cov2)
    bad = ka.verify_sharpness_limit(SG, X4, widths=(128,), samples=64, key=5, exact=wrong)
    assert all(v.passed for v in bad.checks) and not bad.passed and not bad.limit_passed
    assert bad.extrapolated["ntk"] > 0.5 and bad.extrapolated["nngp"] <= bad.remainder
    assert "FAIL" in bad.summary()


# ------------------------------------------------------------------------------ decorrelated entry test


def _correlated_draws(rng: np.random.Generator, mean: np.ndarray, samples: int) -> np.ndarray:
    """Per-network kernels: a common random scale shared by all entries (as the networks' weights do) plus
    independent entry noise."""
    common = rng.standard_normal((samples, 1, 1)) * 0.1 * mean
    return mean + common + 0.05 * rng.standard_normal((samples, *mean.shape))


def test_decorrelated_test_holds_its_level_where_entrywise_z_do_not() -> None:
    """Simulated networks with a known mean: the Hotelling p-value is uniform (rejections at 5% within 3 binomial
    SE of 5%), the mean z's per-network SE matches its spread over repetitions, while treating the correlated
    entries as independent (mean z ~ N(0, 1/E)) rejects far more often; a shift along the kernel is caught."""
    rng = np.random.default_rng(0)
    pts = rng.standard_normal((6, 2))
    exact = np.exp(-0.5 * np.sum((pts[:, None] - pts[None]) ** 2, -1))  # positive entries, like a ReLU NNGP
    mask = np.triu(np.ones((6, 6), bool))
    reps, samples = 300, 32
    p, naive, mz, se_mz = [], [], [], []
    for _ in range(reps):
        d = _correlated_draws(rng, exact, samples)
        se = d.std(0, ddof=1) / math.sqrt(samples)
        z = (d.mean(0) - exact) / se
        res = decorrelated_test([d], exact, z, se, mask, (64,), 4, 0.25, 0.0, 0.0)
        p.append(res.p_value)
        mz.append(res.mean_z)
        naive.append(abs(np.mean(z[mask])) * math.sqrt(mask.sum()) > 1.96)
        se_mz.append(res.mean_z_se)
    rate = np.mean(np.array(p) < 0.05)
    assert abs(rate - 0.05) <= 3 * math.sqrt(0.05 * 0.95 / reps), rate
    assert np.mean(naive) > 0.3  # nominally 0.05
    assert 0.8 < np.std(mz) / np.mean(se_mz) < 1.25
    d = _correlated_draws(rng, exact * 1.3, samples)
    se = d.std(0, ddof=1) / math.sqrt(samples)
    shifted = decorrelated_test([d], exact, (d.mean(0) - exact) / se, se, mask, (64,), 4, 0.25, 0.0, 0.0)
    assert shifted.p_value < 1e-6


# ------------------------------------------------------------------------------- per-network spread law


def test_per_network_spread_scales_as_width_to_minus_one_half() -> None:
    """One hidden layer: a network's kernel is a mean over n independent units, so E|Theta_s - K|^2 = c / n
    exactly (Jacot et al. 2018); the fitted exponent's 3-SE interval holds -1/2 and excludes 0 and -1."""
    net = ka.Dense(1.3, 0.2) >> ka.Erf() >> ka.Dense(1.1, 0.1)
    cv = ka.convergence(net, X4, widths=(16, 64, 256), samples=128, key=2)
    for n in ("nngp", "ntk"):
        lo, hi = cv.spread_fit[n].interval(3)
        assert lo <= -0.5 <= hi and hi < -0.25 and lo > -0.75, cv.spread_fit[n]
    assert cv.estimates[0].draws == {}  # per-draw arrays are not kept unless asked


def test_spread_fit_recovers_a_known_exponent() -> None:
    """Synthetic networks with spread exactly c n^-0.3: the fit finds -0.3 and excludes -1/2."""
    rng = np.random.default_rng(1)
    exact = np.ones((5, 5))
    widths = (32, 128, 512, 2048)
    stats = [network_spread(exact + w**-0.3 * rng.standard_normal((400, 5, 5)), exact) for w in widths]
    fit = fit_spread(widths, np.array([s[0] for s in stats]), np.array([s[1] for s in stats]))
    lo, hi = fit.interval(3)
    assert lo <= -0.3 <= hi and not lo <= -0.5 <= hi


# ---------------------------------------------------------------------------- plots and the markdown report


def test_titles_are_wrapped_not_cut(sg_nngp: ka.Verification) -> None:
    text = "NTK of " + " >> ".join(["Dense(W_std=1.5, b_std=0.05, parameterization='ntk')", "Relu()"] * 3)
    wrapped = wrap_title(text, 6.0)
    assert wrapped.split() == text.split() and max(map(len, wrapped.splitlines())) <= 6.0 * 72 / (0.55 * 8)
    v = sg_nngp
    assert len(v.net) > 120  # longer than the old cut
    fig = v.plot()
    title = fig._suptitle
    assert title.get_text().split() == f"{'PASSED' if v.passed else 'FAILED'}: {v.net}".split()
    assert _inside(fig, title)
    matplotlib.pyplot.close(fig)


def test_spectrum_plot_and_summary_use_one_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kernelalg.analysis._spectrum import Spectrum
    from kernelalg.cli._spectrum_report import check_spectrum
    from kernelalg.cli._verify_report import VerifyConfig
    seen = {}

    def record(self, path, derived=None, fit="auto", title=None):
        seen["fit"], seen["title"] = fit, title
    monkeypatch.setattr(Spectrum, "plot", record)
    cfg = VerifyConfig.make(arch="Dense(1.5, 0.05) >> Relu() >> Dense(1.5, 0.05)", data="sphere", n=None, dim=3,
                            widths=None, samples=None, steps=None, out=str(tmp_path), seed=0)
    check = check_spectrum(ka.parse(cfg.arch), cfg, tmp_path)
    assert check.status == "passed"
    assert -seen["fit"].slope == check.numbers["fitted_rate"]
    assert f"k = {seen['fit'].kmin}..{seen['fit'].kmax}" in check.detail and cfg.arch in seen["title"]


def test_digits_report_checks_the_data_spectrum(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """--data digits: the sphere's Mercer check is skipped with its reason, the data's Gram spectrum is checked."""
    code = main(["verify", "--data", "digits", "--out", str(tmp_path / "r"), *TINY])
    out = capsys.readouterr().out
    assert code == 0, out
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    status = {c["name"]: c["status"] for c in results["checks"]}
    assert status["Mercer spectrum on the sphere"] == "skipped"
    assert status["Spectrum of the data's Gram matrix"] == "passed"
    assert status["Per-network spread ~ width^-1/2"] == "passed"
    summary = (tmp_path / "r" / "summary.md").read_text()
    assert "not uniform on the sphere" in summary and "](gram_spectrum.png)" in summary
    assert "correlated" in summary and "decorrelated test p" in summary
    assert (tmp_path / "r" / "gram_spectrum.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_surrogate_sign_main_job_passes_quick(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """Issue #16 item 6: the exact-sign SG network's quick report passes, through finite sharpness."""
    code = main(["verify", "Dense(1.0, 0.1) >> SurrogateSign() >> Dense(1.0, 0.1)", "--quick", "--no-progress",
                 "--out", str(tmp_path / "r")])
    assert code == 0, capsys.readouterr().out
    summary = (tmp_path / "r" / "summary.md").read_text()
    assert "true derivative 0 almost everywhere" in summary and "](sharpness.png)" in summary
