"""``ka.verify``: passes on a correct network, fails on a wrong closed form, reports and plots (PNG, Agg).

Sizing: one hidden layer is unbiased at any width, so a single width is used; 6 upper-triangle entries x 2
kernels at 5 SE: chance failure of the correct net < 12 x 5.7e-7 = 7e-6 (fixed seed: deterministic).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import sympy as sp  # noqa: E402

import kernelalg as ka  # noqa: E402
from kernelalg.core import _duals  # noqa: E402

X = np.random.default_rng(5).normal(size=(3, 3)).astype(np.float32)


def erf_net(act: ka.Layer) -> ka.Layer:
    return ka.Dense(1.3, 0.2) >> act >> ka.Dense(1.1, 0.1)


def wrong_erf() -> ka.Layer:
    """erf whose Tdot (the NTK factor) is multiplied by 1.3: only the NTK is wrong."""
    def dual(s11: sp.Expr, s12: sp.Expr, s22: sp.Expr) -> _duals.Dual:
        d = _duals.erf(s11, s12, s22, 1, 1, 0)
        return _duals.Dual(d.T, sp.Rational(13, 10) * d.Tdot, d.Tdiag)
    return ka.activation("WrongErf", dual, lambda u: sp.erf(u))


def test_verify_passes_correct_and_fails_wrong(tmp_path) -> None:
    good = ka.verify(erf_net(ka.Erf()), X, widths=(16,), samples=1024, key=1)
    assert good.passed and good.max_abs_z <= 5 and not good.failures()
    assert good.entries.sum() == 6 and good.widths == (16,) and good.samples == 1024
    assert "PASSED" in good.summary()

    bad = ka.verify(erf_net(wrong_erf()), X, widths=(16,), samples=1024, key=1)
    assert not bad.passed
    names = {f[0] for f in bad.failures()}
    assert names == {"ntk"}  # the NNGP of the wrong layer is right, its NTK is not
    assert "FAILED" in bad.summary() and "out of tolerance: ntk" in bad.summary()
    # the same draws: the estimates agree, only the exact kernel differs
    np.testing.assert_allclose(bad.estimate["ntk"], good.estimate["ntk"], rtol=1e-6)

    for v, name in ((good, "good.png"), (bad, "bad.png")):
        fig = v.plot(str(tmp_path / name))
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        import matplotlib.pyplot as plt
        plt.close(fig)


def test_verify_extrapolates_deep_nets_over_two_widths() -> None:
    """Two hidden layers: default widths (n, 2n); the estimate is Richardson's 2 E_2n - E_n, with its SE."""
    net = ka.Dense(1.3, 0.2) >> ka.Relu() >> ka.Dense(1.2, 0.1) >> ka.Relu() >> ka.Dense(1.0)
    v = ka.verify(net, X, width=32, samples=256, key=2)
    assert v.widths == (32, 64) and v.passed, v.summary()
    lo, hi = v.estimates
    np.testing.assert_allclose(v.estimate["nngp"], 2 * hi.nngp - lo.nngp, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(v.stderr["nngp"], np.maximum(np.sqrt(4 * hi.stderr.nngp**2 + lo.stderr.nngp**2),
                                                            1.2e-4 * np.max(np.abs(v.exact["nngp"]))), rtol=1e-6)
