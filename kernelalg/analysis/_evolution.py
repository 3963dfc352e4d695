"""Kernel evolution during training (Fort et al. 2020) and gradient-descent training of finite twins.

Metrics between kernel (Gram) matrices:

* kernel distance ``S(K1, K2) = 1 - <K1, K2>_F / (|K1|_F |K2|_F)`` (0 for proportional kernels);
* kernel velocity ``S(K(t), K(t + dt)) / dt`` along a trajectory;
* centred kernel alignment ``<H K1 H, H K2 H>_F / (|H K1 H|_F |H K2 H|_F)``, H = I - 11^T/n
  (Cortes, Mohri & Rostamizadeh 2012; Kornblith et al. 2019).

:func:`train_finite` trains ``ka.finite(net, width)`` by full-batch gradient descent on neural-tangents'
MSE ``1/(2N) |f - y|^2`` with :func:`kernelalg.finite.train` and records the loss and, every ``record_every``
steps, the empirical NTK. In the lazy regime the NTK moves by O(1/sqrt(width)) (Jacot et al. 2018; Lee et al.
2019), so the distance from the initial kernel shrinks with width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import jax
import jax.numpy as jnp

from kernelalg.core import _errors as E
from kernelalg.finite._trainer import train
from kernelalg.finite._twins import finite

BAD_GRAM = "{name} must be a square matrix, got shape {shape}. Fix: pass an (n, n) Gram matrix."


def _gram(name: str, k: Any) -> np.ndarray:
    k = np.asarray(k, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise E.KernelalgError(BAD_GRAM.format(name=name, shape=k.shape))
    return k


def kernel_distance(k1: Any, k2: Any) -> float:
    """S = 1 - <K1, K2>_F / (|K1|_F |K2|_F) (Fort et al. 2020, Eq. 4)."""
    a, b = _gram("k1", k1), _gram("k2", k2)
    if a.shape != b.shape:
        raise E.KernelalgError(f"kernel shapes differ: {a.shape} vs {b.shape}. Fix: compare Gram matrices of the "
                               "same points.")
    den = np.linalg.norm(a) * np.linalg.norm(b)
    if den == 0:
        raise E.KernelalgError("kernel_distance of a zero matrix is undefined. Fix: pass non-zero kernels.")
    return float(1.0 - np.sum(a * b) / den)


def kernel_velocity(kernels: Any, times: Any) -> np.ndarray:
    """S(K_i, K_{i+1}) / (t_{i+1} - t_i) along a recorded trajectory (length len(times) - 1)."""
    ks = list(kernels)
    ts = np.asarray(times, dtype=np.float64)
    if len(ks) != len(ts) or len(ks) < 2:
        raise E.KernelalgError("kernel_velocity needs matching kernels and times, at least two. Fix: pass the "
                               "recorded kernels with their steps.")
    return np.array([kernel_distance(ks[i], ks[i + 1]) / (ts[i + 1] - ts[i]) for i in range(len(ks) - 1)])


def centered_alignment(k1: Any, k2: Any) -> float:
    """Centred kernel alignment <HK1H, HK2H>_F / (|HK1H|_F |HK2H|_F), H = I - 11^T/n."""
    a, b = _gram("k1", k1), _gram("k2", k2)
    ac = a - a.mean(0, keepdims=True) - a.mean(1, keepdims=True) + a.mean()
    bc = b - b.mean(0, keepdims=True) - b.mean(1, keepdims=True) + b.mean()
    den = np.linalg.norm(ac) * np.linalg.norm(bc)
    if den == 0:
        raise E.KernelalgError("centered_alignment: a centred kernel is zero (constant kernel). Fix: pass "
                               "kernels that vary over the points.")
    return float(np.sum(ac * bc) / den)


@dataclass(frozen=True)
class Training:
    """A gradient-descent run of a finite twin.

    Attributes:
        loss: Training loss 1/(2N)|f - y|^2 at steps 0..steps.
        f0: Outputs on the training inputs at initialisation, (n, out).
        ntk_steps: Steps at which the empirical NTK was recorded.
        ntks: The recorded (n, n) empirical NTKs.
        params: Final parameters.
    """

    loss: np.ndarray
    f0: np.ndarray
    ntk_steps: np.ndarray
    ntks: list
    params: Any

    def distances_from_init(self) -> np.ndarray:
        """kernel_distance(K(0), K(s)) for each recorded step."""
        return np.array([kernel_distance(self.ntks[0], k) for k in self.ntks])

    def velocity(self) -> np.ndarray:
        """kernel_velocity along the recorded NTKs."""
        return kernel_velocity(self.ntks, self.ntk_steps)


def train_finite(net: Any, x: Any, y: Any, width: int, learning_rate: float, steps: int, seed: int = 0,
                 record_every: int | None = None) -> Training:
    """Full-batch GD of ``ka.finite(net, width)`` on ``1/(2N) |f(x) - y|^2`` (N = y.size), float64.

    A thin layer over :func:`kernelalg.finite.train` (which adds optimizers, minibatches, frozen layers, test
    points, sharpness and the linearized model).

    Args:
        net: Architecture (dense or any layout ``ka.finite`` supports).
        x: Training inputs (n, ...).
        y: Targets (n,) or (n, out).
        width: Hidden width.
        learning_rate: eta (compare :func:`kernelalg.analysis.max_learning_rate`).
        steps: Number of GD steps.
        seed: PRNG seed of the initialisation.
        record_every: Record the empirical NTK every this many steps (None: only at 0 and at the end).
    """
    with jax.enable_x64(True):
        x = jnp.asarray(np.asarray(x, dtype=np.float64))
        y2 = np.asarray(y, dtype=np.float64).reshape(x.shape[0], -1)
        twin = finite(net, width, out_dim=y2.shape[1])
        params = twin.init(jax.random.PRNGKey(seed), x.shape[1:])
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        run = train(twin, params, x, y2, steps, float(learning_rate),
                    record={"ntk": record_every, "outputs": [0], "loss": [steps]})
    n = x.shape[0]
    ntks = [k.reshape(n, n) for k in run["ntk"]["train"]]
    loss = np.concatenate([run.step_loss, run["loss"]["train"]])
    return Training(loss, run["outputs"]["train"][0], run["ntk"].steps, ntks, run.params)
