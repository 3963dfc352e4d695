"""Loss curves of kernel gradient flow and their power-law asymptotics.

Population gradient flow in the lazy (kernel) regime, ``df/dt = -T_k (f - f*)``, decouples in the kernel's
eigenbasis: a target component of squared norm c_k^2 on an eigenvalue lambda_k decays as exp(-lambda_k t),
so ``L(t) = 1/2 sum_k c_k^2 exp(-2 lambda_k t)``. With lambda_k = Lam k^{-nu} and c_k^2 = K k^{-kappa-1},
``L(t) ~ (K / (2 nu)) Gamma(kappa/nu) (2 Lam t)^{-kappa/nu}`` as t -> infinity (Velikanov & Yarotsky 2021;
the sum is a Riemann sum of int_0^inf K k^{-kappa-1} exp(-2 Lam t k^{-nu}) dk / 2).

On the sphere the eigenvalues are the Mercer mu_k (multiplicity N(d, k)); a zonal target
f*(x) = sum_k a_k P_k(d; <x, e>) has c_k^2 = a_k^2 / N(d, k) (since E[P_k(<x, e>)^2] = 1/N(d, k)).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kernelalg.core import _errors as E


def power_law_loss(t: Any, K: float, kappa: float, Lam: float, nu: float) -> np.ndarray:
    """The large-t asymptote (K / (2 nu)) Gamma(kappa/nu) (2 Lam t)^{-kappa/nu}."""
    if kappa <= 0 or nu <= 0 or Lam <= 0:
        raise E.KernelalgError(f"power_law_loss needs kappa > 0, nu > 0, Lam > 0 (got {kappa}, {nu}, {Lam}). "
                               "Fix: pass the exponents of c_k^2 = K k^(-kappa-1) and lambda_k = Lam k^(-nu).")
    t = np.asarray(t, dtype=np.float64)
    return K / (2 * nu) * math.gamma(kappa / nu) * (2 * Lam * t) ** (-kappa / nu)


def spectral_loss(t: Any, eigenvalues: Any, coefficients2: Any) -> np.ndarray:
    """L(t) = 1/2 sum_i c_i^2 exp(-2 lambda_i t) for each t (eigenvalues lambda_i, squared coefficients c_i^2)."""
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    lam = np.asarray(eigenvalues, dtype=np.float64)
    c2 = np.asarray(coefficients2, dtype=np.float64)
    out = np.array([0.5 * np.sum(c2 * np.exp(-2.0 * lam * ti)) for ti in t])
    return out


def sphere_loss_curve(spectrum: Any, target_coefficients: Any, t: Any) -> np.ndarray:
    """Population loss of kernel gradient flow on S^{d-1} for a zonal target sum_k a_k P_k(d; <x, e>).

    Args:
        spectrum: A :class:`~kernelalg.analysis.Spectrum` (the eigenvalues mu_k).
        target_coefficients: a_0, a_1, ... (missing degrees are 0; length <= kmax + 1).
        t: Times (absolute: the flow is df/dt = -T_k (f - f*)).
    """
    a = np.asarray(target_coefficients, dtype=np.float64)
    if len(a) > len(spectrum.mu):
        raise E.KernelalgError(f"target has degree {len(a) - 1} > kmax = {len(spectrum.mu) - 1}. Fix: compute the "
                               "spectrum with a larger kmax.")
    c2 = a ** 2 / spectrum.multiplicity[: len(a)]
    return spectral_loss(t, spectrum.mu[: len(a)], c2)


def zonal_target(x: np.ndarray, coefficients: Any, dim: int, direction: Any = None) -> np.ndarray:
    """f*(x) = sum_k a_k P_k(d; <x/|x|, e>) on points x (e = first axis unless ``direction`` is given)."""
    from ._sphere import gegenbauer_table
    x = np.asarray(x, dtype=np.float64)
    e = np.zeros(dim) if direction is None else np.asarray(direction, dtype=np.float64)
    if direction is None:
        e[0] = 1.0
    e = e / np.linalg.norm(e)
    cos = np.clip((x @ e) / np.linalg.norm(x, axis=1), -1.0, 1.0)
    a = np.asarray(coefficients, dtype=np.float64)
    table = gegenbauer_table(max(len(a) - 1, 1), dim, cos)
    return sum(ak * p for ak, p in zip(a, table))


def kernel_flow_loss(gram: Any, y: Any, t: Any, f0: Any = None) -> np.ndarray:
    """Training loss 1/(2n) |f(t) - y|^2 of kernel gradient flow df/dt = -(1/n) K (f - y), exactly.

    This is the empirical counterpart of :func:`sphere_loss_curve` (the operator T_k acts on n samples as
    K/n); as n grows the curves converge (Koltchinskii & Gine 2000).
    """
    k = np.asarray(gram, dtype=np.float64)
    n = k.shape[0]
    r0 = (np.zeros(n) if f0 is None else np.asarray(f0, dtype=np.float64).reshape(n)) - np.asarray(y).reshape(n)
    ev, vec = np.linalg.eigh(0.5 * (k + k.T))
    proj = (vec.T @ r0) ** 2 / n
    return spectral_loss(t, np.maximum(ev, 0.0) / n, proj)


def linearized_gd_loss(ntk: Any, y: Any, f0: Any, learning_rate: float, steps: int) -> np.ndarray:
    """Loss 1/(2N) |f_s - y|^2 of discrete GD on the linearized model, s = 0..steps (N = y.size).

    Residuals follow r_{s+1} = (I - (eta/N) Theta) r_s (neural-tangents' MSE convention).
    """
    k = np.asarray(ntk, dtype=np.float64)
    y2 = np.asarray(y, dtype=np.float64).reshape(k.shape[0], -1)
    r = np.asarray(f0, dtype=np.float64).reshape(y2.shape) - y2
    size = y2.size
    ev, vec = np.linalg.eigh(0.5 * (k + k.T))
    coef = vec.T @ r
    s = np.arange(steps + 1)[:, None]
    factor = (1.0 - learning_rate * ev / size)[None, :] ** s
    return 0.5 / size * np.einsum("si,ic->s", factor ** 2, coef ** 2)
