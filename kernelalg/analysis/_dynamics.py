"""Linearized (infinite-width) training dynamics on MSE in closed form, as in neural-tangents' ``predict``.

Conventions (neural-tangents' ``predict.gradient_descent_mse`` / ``max_learning_rate``): the loss is
``L = 1/(2 N) |f(X) - Y|^2`` with ``N = Y.size`` (one half of the mean squared error over all training
outputs), so gradient flow in function space is ``df/dt = -(eta/N) Theta (f - Y)``, and ``t`` counts
steps: absolute time is ``eta t``. The kernel is (n, n) and acts on each output column (neural-tangents'
``trace_axes=(-1,)``). ``diag_reg`` adds ``diag_reg * I`` (``diag_reg_absolute_scale=True``) or
``diag_reg * trace(K)/n * I`` (default, as neural-tangents). ``t=None`` means t = infinity.

References:
    Jacot et al. (2018); Lee et al. (2019), "Wide neural networks of any depth evolve as linear models under
    gradient descent" (Eqs. 9-16); Novak et al. (2020), Neural Tangents (``predict`` module).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from kernelalg.core import _errors as E

NEEDS_K_TEST = ("predictions on test points need k_test_train. Fix: pass k_test_train=kernel(x_test, x_train) "
                "(shape (n_test, n_train)).")
BAD_KERNEL_SHAPE = ("{name} has shape {shape}, expected {expected}. Fix: pass the kernel between the right point "
                    "sets (train-train is (n, n), test-train is (n_test, n)).")
NOT_PSD = ("k_train_train has a negative eigenvalue {ev:.3g} (relative {rel:.2g}): not a kernel matrix. Fix: check "
           "the kernel, or add diag_reg.")


@dataclass(frozen=True)
class Gaussian:
    """Mean and covariance of predictions (covariance over test points, shared by output columns)."""

    mean: np.ndarray
    covariance: np.ndarray | None


def _as2d(y: Any) -> tuple[np.ndarray, bool]:
    y = np.asarray(y, dtype=np.float64)
    return (y[:, None], True) if y.ndim == 1 else (y, False)


def _regularize(k: np.ndarray, diag_reg: float, absolute: bool) -> np.ndarray:
    n = k.shape[0]
    scale = diag_reg if absolute else diag_reg * np.trace(k) / n
    return k + scale * np.eye(n)


def _check_square(name: str, k: np.ndarray, n: int | None = None) -> np.ndarray:
    k = np.asarray(k, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or (n is not None and k.shape[0] != n):
        raise E.KernelalgError(BAD_KERNEL_SHAPE.format(name=name, shape=k.shape, expected=f"({n or 'n'}, {n or 'n'})"))
    return k


class _Eigen:
    """Eigendecomposition of a regularized PSD kernel matrix, with matrix functions on vectors."""

    def __init__(self, k: np.ndarray, diag_reg: float, absolute: bool):
        k = _regularize(0.5 * (k + k.T), diag_reg, absolute)
        self.evals, self.evecs = np.linalg.eigh(k)
        top = max(float(self.evals[-1]), 1e-300)
        if self.evals[0] < -1e-8 * top:
            raise E.KernelalgError(NOT_PSD.format(ev=self.evals[0], rel=self.evals[0] / top))
        self.evals = np.maximum(self.evals, 0.0)

    def apply(self, fn: Callable[[np.ndarray], np.ndarray], v: np.ndarray) -> np.ndarray:
        """fn(K) v for v of shape (n, c); fn acts on the eigenvalues."""
        return self.evecs @ (fn(self.evals)[:, None] * (self.evecs.T @ v))


def _expm1_over(evals: np.ndarray, tau: float) -> np.ndarray:
    """(exp(-lambda tau) - 1) / lambda, with the lambda -> 0 limit -tau."""
    out = np.full_like(evals, -tau if np.isfinite(tau) else -np.inf)
    pos = evals > 0
    out[pos] = np.expm1(-evals[pos] * tau) / evals[pos]
    return out


def gradient_descent_mse(k_train_train: Any, y_train: Any, learning_rate: float = 1.0, diag_reg: float = 0.0,
                         diag_reg_absolute_scale: bool = False) -> Callable:
    """Closed-form predictions of function-space gradient flow on MSE (one network, given its f_0).

    f_train(t) - Y = exp(-eta t Theta / N) (f_train(0) - Y);
    f_test(t) = f_test(0) + Theta_tx Theta^{-1} (exp(-eta t Theta / N) - I) (f_train(0) - Y).

    Args:
        k_train_train: (n, n) NTK (or NNGP, for training the readout only) on the training inputs.
        y_train: Targets (n,) or (n, c).
        learning_rate: eta.
        diag_reg: Diagonal regularizer (see the module docstring).
        diag_reg_absolute_scale: Absolute (True) or relative to the mean diagonal (False, default).

    Returns:
        ``predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None)`` returning ``fx_train_t``,
        ``(fx_train_t, fx_test_t)``, or ``fx_test_t`` when ``fx_train_0=None`` (its f_0 is then taken as 0);
        ``t`` a scalar (steps) or None for t = infinity.
    """
    y, flat = _as2d(y_train)
    k = _check_square("k_train_train", k_train_train, y.shape[0])
    norm = float(y.size)
    eig = _Eigen(k, diag_reg, diag_reg_absolute_scale)

    def predict_fn(t: float | None = None, fx_train_0: Any = 0.0, fx_test_0: Any = None,
                   k_test_train: Any = None) -> Any:
        want_train = fx_train_0 is not None
        f0 = np.asarray(0.0 if fx_train_0 is None else fx_train_0, dtype=np.float64)
        f0 = np.broadcast_to(f0.reshape(-1, 1) if f0.ndim == 1 else f0, y.shape)
        r0 = f0 - y
        tau = np.inf if t is None else float(t) * learning_rate / norm
        if np.isinf(tau):
            ftr = y.copy()
            coef = -eig.apply(lambda ev: np.where(ev > 0, 1.0 / np.where(ev > 0, ev, 1.0), 0.0), r0)
        else:
            ftr = f0 + eig.apply(lambda ev: np.expm1(-ev * tau), r0)
            coef = eig.apply(lambda ev: _expm1_over(ev, tau), r0)
        ftr = ftr[:, 0] if flat else ftr
        if fx_test_0 is None:
            if not want_train:
                raise E.KernelalgError("both fx_train_0 and fx_test_0 are None: nothing to predict. Fix: pass "
                                       "fx_train_0 (e.g. 0.) and/or fx_test_0 with k_test_train.")
            return ftr
        if k_test_train is None:
            raise E.KernelalgError(NEEDS_K_TEST)
        kt = np.asarray(k_test_train, dtype=np.float64)
        if kt.ndim != 2 or kt.shape[1] != y.shape[0]:
            raise E.KernelalgError(BAD_KERNEL_SHAPE.format(name="k_test_train", shape=kt.shape,
                                                           expected=f"(n_test, {y.shape[0]})"))
        ft0 = np.asarray(fx_test_0, dtype=np.float64)
        ft0 = np.broadcast_to(ft0.reshape(-1, 1) if ft0.ndim == 1 else ft0, (kt.shape[0], y.shape[1]))
        fte = ft0 + kt @ coef
        fte = fte[:, 0] if flat else fte
        return (ftr, fte) if want_train else fte

    return predict_fn


def gradient_descent_mse_ensemble(nngp_train_train: Any, y_train: Any, nngp_test_train: Any, nngp_test_test: Any,
                                  ntk_train_train: Any = None, ntk_test_train: Any = None,
                                  learning_rate: float = 1.0, diag_reg: float = 0.0,
                                  diag_reg_absolute_scale: bool = False) -> Callable:
    """Mean and covariance over random initialisations of the infinite-width network trained by gradient flow.

    With f_0 ~ GP(0, K) (NNGP) and training kernel Theta (Lee et al. 2019, Eqs. 13-16):
    U(t) = Theta_tx Theta^{-1} (I - exp(-eta t Theta / N)),
    mean(t) = U(t) Y,  cov(t) = K_tt + U K_xx U^T - (U K_xt + K_tx U^T).
    "nngp" (only the readout trained, Theta = K): cov = K_tt - K_tx K^{-1} (I - exp(-2 eta t K / N)) K_xt.

    Returns:
        ``predict_fn(t=None, get="ntk", compute_cov=True) -> Gaussian`` (get "nngp" or "ntk").
    """
    y, flat = _as2d(y_train)
    n = y.shape[0]
    norm = float(y.size)
    kdd = _check_square("nngp_train_train", nngp_train_train, n)
    ktd = np.asarray(nngp_test_train, dtype=np.float64)
    ktt = np.asarray(nngp_test_test, dtype=np.float64)
    cache: dict = {}

    def predict_fn(t: float | None = None, get: str = "ntk", compute_cov: bool = True) -> Gaussian:
        if get not in ("nngp", "ntk"):
            raise E.KernelalgError(f"get={get!r} is not known. Fix: use get='ntk' or get='nngp'.")
        if get == "ntk" and (ntk_train_train is None or ntk_test_train is None):
            raise E.KernelalgError("get='ntk' needs ntk_train_train and ntk_test_train. Fix: pass both kernels.")
        th_dd = kdd if get == "nngp" else _check_square("ntk_train_train", ntk_train_train, n)
        th_td = ktd if get == "nngp" else np.asarray(ntk_test_train, dtype=np.float64)
        if get not in cache:
            cache[get] = _Eigen(th_dd, diag_reg, diag_reg_absolute_scale)
        eig = cache[get]
        tau = np.inf if t is None else float(t) * learning_rate / norm
        if np.isinf(tau):
            g = lambda ev: np.where(ev > 0, 1.0 / np.where(ev > 0, ev, 1.0), 0.0)  # noqa: E731
        else:
            g = lambda ev: -_expm1_over(ev, tau)  # noqa: E731   (1 - e^{-lambda tau}) / lambda
        umat = eig.apply(g, th_td.T).T  # U = Theta_td Theta^{-1} (I - e^{-Theta tau})
        mean = umat @ y
        mean = mean[:, 0] if flat else mean
        if not compute_cov:
            return Gaussian(mean, None)
        if get == "nngp":
            g2 = (lambda ev: np.where(ev > 0, 1.0 / np.where(ev > 0, ev, 1.0), 0.0)) if np.isinf(tau) else \
                (lambda ev: -_expm1_over(ev, 2 * tau))
            cov = ktt - ktd @ eig.apply(g2, ktd.T)
        else:
            cross = umat @ ktd.T
            cov = ktt + umat @ kdd @ umat.T - cross - cross.T
        return Gaussian(mean, 0.5 * (cov + cov.T))

    return predict_fn


def gp_inference(k_train_train: Any, y_train: Any, k_test_train: Any, k_test_test: Any = None,
                 diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False) -> Gaussian:
    """Exact GP posterior: mean K_tx (K + reg)^{-1} Y and covariance K_tt - K_tx (K + reg)^{-1} K_xt."""
    y, flat = _as2d(y_train)
    k = _regularize(_check_square("k_train_train", k_train_train, y.shape[0]), diag_reg, diag_reg_absolute_scale)
    ktd = np.asarray(k_test_train, dtype=np.float64)
    sol = np.linalg.solve(k, np.concatenate([y, ktd.T], axis=1))
    mean = ktd @ sol[:, : y.shape[1]]
    cov = None
    if k_test_test is not None:
        cov = np.asarray(k_test_test, dtype=np.float64) - ktd @ sol[:, y.shape[1]:]
        cov = 0.5 * (cov + cov.T)
    return Gaussian(mean[:, 0] if flat else mean, cov)


def max_learning_rate(ntk_train_train: Any, y_train_size: int | None = None, momentum: float = 0.0) -> float:
    """Largest stable learning rate of full-batch gradient descent on ``1/(2 N) |f - Y|^2`` (neural-tangents).

    GD on the linearized model maps the residual by I - (eta/N) Theta, a contraction iff
    eta < 2 N / lambda_max(Theta) (times 1 + momentum with heavy-ball momentum). N = ``y_train_size``
    (default n, a single output).
    """
    k = _check_square("ntk_train_train", ntk_train_train)
    size = k.shape[0] if y_train_size is None else int(y_train_size)
    lam = float(np.linalg.eigvalsh(0.5 * (k + k.T))[-1])
    return 2.0 * (1.0 + momentum) * size / lam
