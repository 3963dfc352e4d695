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
from ._sphere import gegenbauer_table


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


def gd_loss(ntk: Any, y: Any, learning_rate: float, steps: int, f0: Any = None, nngp: Any = None) -> np.ndarray:
    """Expected loss 1/(2N) E|f_s - y|^2 of discrete GD on the linearized model, s = 0..steps (N = y.size).

    Residuals follow r_{s+1} = A r_s, A = I - (eta/N) Theta (neural-tangents' MSE convention), from
    r_0 = f0 - y. With ``nngp`` the initial outputs are f0 ~ GP(mean f0, nngp) per output column, which adds
    tr(A^s K A^s^T) / (2N) per column. This is the one predicted-loss routine of kernelalg (the verification
    report and :func:`linearized_gd_loss` use it).

    Theta may be asymmetric (a surrogate-gradient NTK J J~^T, Eilers et al. 2024): the residual map is then
    applied as it is, never symmetrised; a symmetric Theta takes the eigendecomposition route.

    Args:
        ntk: Theta on the training points (n, n).
        y: Targets (n,) or (n, c).
        learning_rate: eta.
        steps: Number of GD steps.
        f0: Initial outputs (same shape as y), default 0.
        nngp: Covariance of the initial outputs (n, n), default none (f0 deterministic).

    Returns:
        Array (steps + 1,) of losses.
    """
    k = np.asarray(ntk, dtype=np.float64)
    n = k.shape[0]
    y2 = np.asarray(y, dtype=np.float64).reshape(n, -1)
    r = (np.zeros_like(y2) if f0 is None else np.asarray(f0, dtype=np.float64).reshape(y2.shape)) - y2
    size, cols = y2.size, y2.shape[1]
    cov = None if nngp is None else np.asarray(nngp, dtype=np.float64)
    scale = max(float(np.max(np.abs(k))), np.finfo(float).tiny)
    if np.max(np.abs(k - k.T)) <= 1e-12 * scale:
        ev, vec = np.linalg.eigh(0.5 * (k + k.T))
        factor = (1.0 - learning_rate * ev / size)[None, :] ** np.arange(steps + 1)[:, None]
        out = np.einsum("si,ic->s", factor ** 2, (vec.T @ r) ** 2)
        if cov is not None:
            out = out + cols * (factor ** 2) @ np.einsum("ij,ik,kj->j", vec, cov, vec)
        return 0.5 / size * out
    a = np.eye(n) - learning_rate * k / size
    out = np.empty(steps + 1)
    for s in range(steps + 1):
        out[s] = np.sum(r * r) + (0.0 if cov is None else cols * np.trace(cov))
        r = a @ r
        if cov is not None:
            cov = a @ cov @ a.T
    return 0.5 / size * out


def linearized_gd_loss(ntk: Any, y: Any, f0: Any, learning_rate: float, steps: int) -> np.ndarray:
    """Loss 1/(2N) |f_s - y|^2 of discrete GD on the linearized model, s = 0..steps (N = y.size).

    Residuals follow r_{s+1} = (I - (eta/N) Theta) r_s (neural-tangents' MSE convention); see :func:`gd_loss`
    (an asymmetric Theta is not symmetrised).
    """
    return gd_loss(ntk, y, learning_rate, steps, f0=f0)
