"""The predicted loss exponent xi against the loss curves of finite wide networks trained by gradient descent.

:func:`loss_exponent` fits nu (eigenvalues lambda_i = eig_i(Theta)/n ~ i^-nu) and kappa (target tail mass
sum_{j >= i} c_j^2 ~ i^-kappa) on the training points and predicts L ~ t^-xi, xi = kappa/nu (Velikanov &
Yarotsky 2021). Here finite networks of the same architecture are trained by full-batch gradient descent
(``finite.descend``, loss |f - y|^2/(2n), learning rate eta = 1/lambda_1, so t = eta s) on the *centred* model
f_p(x) - f_{p0}(x) (Chizat et al. 2019: its initial output is 0 and its NTK is the network's, so the infinite-
width prediction is the target term alone), and the slope of log L against log s is fitted over the steps
s_i = 1/(2 eta lambda_i), i = imin..imax, at which mode i has decayed by exp(-2 eta lambda_i s) = 1/e. The same
slope of the exact linearized curve (``gd_loss``: same data, target, learning rate and steps) is the prediction
over that window; xi is its t -> infinity asymptote, which over the accessible steps the linearized loss
itself has not reached (measured 2-10% apart), so xi is reported beside it, not tested.

:attr:`FiniteLossExponent.passed`: the finite networks' slope lies within :data:`SLOPE_Z` standard errors
of the linearized slope (exact, float64: no sampling error of its own). Finite width biases the slope too (it
shrinks with width; figures in docs/spectra.md), so the check holds only at widths where that bias is below
the networks' noise.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kernelalg.backends._compile import kernel
from kernelalg.finite._train import descend, mse_loss
from kernelalg.finite._twins import finite
from ._exponent import LossExponent, loss_exponent
from ._fit import FitRangeWarning
from ._loss import gd_loss

#: The finite networks' slope must lie within this many standard errors of the linearized slope.
SLOPE_Z = 5.0


@dataclass(frozen=True)
class FiniteLossExponent:
    """Predicted xi vs the loss curves of finite networks (see the module docstring).

    Attributes:
        predicted: The :class:`LossExponent` fitted on the training points.
        finite_slope: -d log L / d log s of the mean finite-network loss over the window.
        finite_stderr: Standard error of that slope across the networks (per-network slopes).
        kernel_slope: The same slope of the exact linearized (infinite-width) loss ``gd_loss``.
        steps: The steps of the window (log-spaced, s_imin..s_imax).
        finite_loss: Mean finite-network loss at every step 0..max(steps).
        kernel_loss: Linearized prediction at every step.
        width: Hidden width of the finite networks.
        samples: Number of networks.
        learning_rate: eta = 1/lambda_1.
        drift: Whether a fit of nu or kappa drifted with its range (a :class:`FitRangeWarning` was raised).
    """

    predicted: LossExponent
    finite_slope: float
    finite_stderr: float
    kernel_slope: float
    steps: np.ndarray
    finite_loss: np.ndarray
    kernel_loss: np.ndarray
    width: int
    samples: int
    learning_rate: float
    drift: bool

    @property
    def z(self) -> float:
        """(finite_slope - kernel_slope) / finite_stderr: the linearized slope is exact, so the networks' standard
        error is the whole uncertainty (nan with one network)."""
        return float((self.finite_slope - self.kernel_slope) / self.finite_stderr)

    @property
    def passed(self) -> bool:
        """The finite networks' slope lies within :data:`SLOPE_Z` standard errors of the linearized slope."""
        return bool(abs(self.z) <= SLOPE_Z)


def _slope(steps: np.ndarray, loss: np.ndarray) -> float:
    return -float(np.polyfit(np.log(steps), np.log(loss), 1)[0])


def _centred_losses(net: Any, x: np.ndarray, y: np.ndarray, width: int, samples: int, lr: float, steps: int,
                    seed: int) -> np.ndarray:
    """Training losses (samples, steps + 1) of centred finite networks f_p - f_p0 (float32)."""
    twin = finite(net, width)
    xs, ys = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)

    def run(key: jax.Array) -> jax.Array:
        p0 = twin.init(key, xs.shape)
        f0 = jax.lax.stop_gradient(twin.apply(p0, xs))
        loss = mse_loss(lambda p, z: twin.apply(p, z) - f0, xs, ys)
        return descend(loss, p0, lr, steps)[1]

    keys = jax.random.split(jax.random.PRNGKey(seed), samples)
    return np.stack([np.asarray(jax.jit(run)(k), np.float64) for k in keys])


def finite_loss_exponent(net: Any, x: Any, y: Any, width: int = 1024, *, samples: int = 4, imin: int = 5,
                         imax: int | None = None, seed: int = 0, points: int = 8) -> FiniteLossExponent:
    """Predict xi from the NTK Gram spectrum of (x, y) and measure it on finite networks trained by GD.

    Args:
        net: Architecture (its finite twin is trained; dense, conv or recurrent).
        x: Training inputs (n, ...).
        y: Targets (n,).
        width: Hidden width of the finite networks.
        samples: Number of independently initialised networks.
        imin: First eigenvalue index of the fits and of the step window.
        imax: Last one (default n/10).
        seed: PRNG seed of the initialisations.
        points: Log-spaced steps in the window used for the slopes.

    Returns:
        A :class:`FiniteLossExponent` (``passed``: the finite slope lies within :data:`SLOPE_Z` standard errors
        of the exact linearized slope over the same steps; xi is reported as the asymptote).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).ravel()
    n = len(y)
    imax = max(imin + 10, n // 10) if imax is None else int(imax)
    gram = np.asarray(kernel(net, x, None, "ntk"), dtype=np.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FitRangeWarning)
        le = loss_exponent(net, x, y, matrix=gram, imin=imin, imax=imax)
    drift = any(issubclass(w.category, FitRangeWarning) for w in caught)
    for w in caught:
        if not issubclass(w.category, FitRangeWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    lam = np.sort(np.linalg.eigvalsh((gram + gram.T) / 2))[::-1] / n
    lr = 1.0 / lam[0]
    window = (0.5 * lam[0] / lam[imin - 1], 0.5 * lam[0] / lam[imax - 1])
    last = int(math.ceil(window[1]))
    steps = np.unique(np.round(np.geomspace(max(window[0], 1.0), last, points)).astype(int))
    losses = _centred_losses(net, x, y, width, samples, lr, last, seed)
    kern = gd_loss(gram, y, lr, last)
    mean = losses.mean(0)
    per = np.array([_slope(steps, c[steps]) for c in losses])
    se = float(per.std(ddof=1) / math.sqrt(samples)) if samples > 1 else math.nan
    return FiniteLossExponent(le, _slope(steps, mean[steps]), se, _slope(steps, kern[steps]), steps, mean, kern,
                              int(width), int(samples), float(lr), drift)
