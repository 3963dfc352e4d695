"""The predicted loss exponent xi = kappa/nu against finite wide networks trained by gradient descent, and its
check in ``kernelalg verify`` (issue #20, item 1).

The finite networks are independent of the prediction: they are sampled and trained (``finite.descend``),
while xi is fitted from the exact NTK's Gram spectrum. The target has a power-law tail by construction on the
NTK's eigenvectors (kappa = 1), so what is tested is the law L ~ t^(-kappa/nu) on finite networks.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

import kernelalg as ka
from kernelalg import analysis as A
from kernelalg.cli import _exponent_report as R

NET = ka.Dense(1.0, 0.1) >> ka.Relu() >> ka.Dense(1.0)


def _digits(n: int) -> np.ndarray:
    sklearn = pytest.importorskip("sklearn.datasets")
    x = sklearn.load_digits().data[:n].astype(np.float64)
    x -= x.mean(0)
    return x / np.linalg.norm(x, axis=1, keepdims=True) * np.sqrt(x.shape[1])


def test_finite_networks_decay_with_the_predicted_exponent() -> None:
    """8x8 digits (400, 64), width 1024, 3 networks: measured xi = 0.758 [0.745, 0.772], finite slope
    0.758 +- 0.004, linearized 0.759."""
    x = _digits(400)
    y = R.power_law_target(np.asarray(ka.kernel(NET, x, get="ntk"), np.float64), seed=0)
    res = A.finite_loss_exponent(NET, x, y, width=1024, samples=3, imin=5, imax=40)
    assert res.passed and not res.drift
    assert res.predicted.kappa == pytest.approx(1.0, abs=0.1)  # built in: tail mass ~ i^-1
    assert abs(res.finite_slope - res.kernel_slope) <= 5 * res.finite_stderr  # z bound 5 on the networks' slopes
    window = res.steps
    rel = np.abs(res.finite_loss[window] / res.kernel_loss[window] - 1)
    assert np.max(rel) < 0.05  # width 1024: the trained networks follow the linearized curve


def _cfg(**kw) -> SimpleNamespace:
    base = dict(arch="Dense(1, 0.1) >> Relu() >> Dense(1)", data="sphere", dim=8, quick=True, widths=(256, 1024),
                samples=3, seed=0)
    return SimpleNamespace(**{**base, **kw})


def test_verify_check_passes_and_reports_numbers(tmp_path) -> None:
    chk = R.check_loss_exponent(NET, _cfg(), tmp_path)
    assert chk.status == "passed", chk.detail
    assert "lies in the predicted xi" in chk.detail and (tmp_path / "loss_exponent.png").exists()
    lo, hi = chk.numbers["tested_interval"]
    assert lo <= chk.numbers["finite_slope"] <= hi
    assert lo == pytest.approx(chk.numbers["xi_ci"][0] * (1 - R.XI_RTOL))


def test_verify_check_fails_truthfully(tmp_path, monkeypatch) -> None:
    """A prediction whose interval excludes the measured slope is reported as failed, with the numbers."""
    real = R.finite_loss_exponent

    def shifted(*args, **kwargs):
        res = real(*args, **kwargs)
        wrong = dataclasses.replace(res.predicted, xi=2 * res.finite_slope + 1.0,
                                    xi_ci=(1.5 * res.finite_slope + 0.5, 2 * res.finite_slope + 1.5))
        return dataclasses.replace(res, predicted=wrong)
    monkeypatch.setattr(R, "finite_loss_exponent", shifted)
    chk = R.check_loss_exponent(NET, _cfg(), tmp_path)
    assert chk.status == "failed" and "is OUTSIDE the predicted xi" in chk.detail
