"""Early-time linear model of a two-layer network (Hu, Xiao, Adlam & Pennington, NeurIPS 2020).

For f(x) = (1/sqrt m) sum_r a_r phi(w_r . x / sqrt d) with the first layer trained, and inputs with
|x|^2 = d and covariance Sigma, the first-layer NTK is Theta(x, x') = (x.x'/d) E[phi'(u) phi'(v)]. For
d -> infinity (n/d fixed) it is close in operator norm to that of the linear model [zeta x / sqrt d; nu]:

    Theta_lin = zeta^2 X X^T / d + nu^2 1 1^T + (E[phi'(g)^2] - zeta^2) I,
    zeta = E[phi'(g)],  nu = E[phi''(g)] sqrt(Tr Sigma^2) / d,  g ~ N(0, 1).

The constants are computed exactly (sympy Gaussian integrals); the exact Theta comes from the library's
closed-form kernel of ``Dense(1, 0) >> phi >> Dense(1, 0)`` (NTK minus NNGP = the first-layer part).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy as sp

from kernelalg.core import _errors as E
from kernelalg.layers._activations import Erf, Gelu, Relu, Sin
from kernelalg.layers._dense import Dense
from ._sphere import from_network
from ._sphere import sphere_points

G = sp.Symbol("g", real=True)

UNKNOWN_ACTIVATION = ("activation {name!r} is not in the table {known}. Fix: pass a sympy expression in one symbol "
                      "(e.g. sympy.tanh(x)) and, for the exact kernel, the matching layer via layer=...")


def _table() -> dict[str, tuple[sp.Expr, Any]]:
    return {"relu": (sp.Max(0, G), Relu()), "erf": (sp.erf(G), Erf()),
            "gelu": (G / 2 * (1 + sp.erf(G / sp.sqrt(2))), Gelu()), "sin": (sp.sin(G), Sin())}


def _gauss_mean(expr: sp.Expr) -> sp.Expr:
    dens = sp.exp(-G ** 2 / 2) / sp.sqrt(2 * sp.pi)
    return sp.simplify(sp.integrate(sp.expand(expr * dens), (G, -sp.oo, sp.oo)))


@dataclass(frozen=True)
class EarlyTimeConstants:
    """zeta = E[phi'(g)], E[phi''(g)] and E[phi'(g)^2] for g ~ N(0, 1) (exact sympy numbers)."""

    phi: sp.Expr
    zeta: sp.Expr
    mean_ddphi: sp.Expr
    mean_dphi_sq: sp.Expr

    def nu(self, sigma: Any) -> float:
        """nu = E[phi''] sqrt(Tr Sigma^2) / d for the input covariance Sigma (d x d), or its eigenvalues."""
        s = np.asarray(sigma, dtype=np.float64)
        tr2 = float(np.sum(s ** 2)) if s.ndim == 1 else float(np.trace(s @ s))
        d = s.shape[0]
        return float(self.mean_ddphi) * np.sqrt(tr2) / d


def early_time_constants(activation: Any) -> EarlyTimeConstants:
    """Exact Hu et al. constants of an activation ("relu", "erf", "gelu", "sin", or a sympy expression).

    E.g. ReLU: zeta = 1/2, E[phi''] = 1/sqrt(2 pi), E[phi'^2] = 1/2; erf: zeta = 2/sqrt(3 pi), E[phi''] = 0.
    """
    if isinstance(activation, str):
        table = _table()
        if activation.lower() not in table:
            raise E.KernelalgError(UNKNOWN_ACTIVATION.format(name=activation, known=sorted(table)))
        phi = table[activation.lower()][0]
    else:
        phi = sp.sympify(activation)
        free = list(phi.free_symbols)
        if len(free) != 1:
            raise E.KernelalgError(UNKNOWN_ACTIVATION.format(name=activation, known=sorted(_table())))
        phi = phi.subs(free[0], G)
    d1 = sp.diff(phi, G)
    d2 = sp.diff(d1, G)
    return EarlyTimeConstants(phi, _gauss_mean(d1), _gauss_mean(d2), _gauss_mean(d1 ** 2))


def linear_model_ntk(x: Any, activation: Any, sigma: Any = None) -> np.ndarray:
    """Theta_lin = zeta^2 X X^T/d + nu^2 11^T + (E[phi'^2] - zeta^2) I for inputs x (n, d), |x|^2 ~ d.

    Args:
        x: Inputs (n, d).
        activation: Name or sympy expression (see :func:`early_time_constants`).
        sigma: The population input covariance (d x d) or its eigenvalues; default the identity (isotropic
            data, e.g. uniform on the sphere of radius sqrt(d)). Not the sample covariance: for n ~ d its
            Tr(Sigma^2) is biased upward by a factor 1 + d/n (Marchenko-Pastur), which spoils nu.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    c = early_time_constants(activation)
    zeta, e2 = float(c.zeta), float(c.mean_dphi_sq)
    nu = c.nu(np.ones(d) if sigma is None else sigma)
    return zeta ** 2 * (x @ x.T) / d + nu ** 2 * np.ones((n, n)) + (e2 - zeta ** 2) * np.eye(n)


def first_layer_ntk(x: Any, activation: Any, layer: Any = None) -> np.ndarray:
    """Exact infinite-width first-layer NTK (x.x'/d) E[phi'(u) phi'(v)] on inputs with |x|^2 = d.

    Evaluated from the library's closed form of ``Dense(1, 0) >> phi >> Dense(1, 0)`` (NTK minus NNGP) as a
    function of the cosine.
    """
    if layer is None:
        if not isinstance(activation, str) or activation.lower() not in _table():
            raise E.KernelalgError(UNKNOWN_ACTIVATION.format(name=activation, known=sorted(_table())))
        layer = _table()[activation.lower()][1]
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1)
    d = x.shape[1]
    if not np.allclose(norms ** 2, d, rtol=1e-8):
        raise E.KernelalgError("first_layer_ntk needs inputs with |x|^2 = d. Fix: x * sqrt(d) / |x| per row "
                               "(e.g. kernelalg.analysis.sphere_points).")
    net = Dense(1.0, 0.0) >> layer >> Dense(1.0, 0.0)
    cos = np.clip(x @ x.T / d, -1.0, 1.0)
    return from_network(net, "ntk")(cos) - from_network(net, "nngp")(cos)


def early_time_error(activation: Any, dims: Any, ratio: float = 1.0, seed: int = 0, layer: Any = None) -> np.ndarray:
    """Relative spectral-norm error |Theta - Theta_lin|_2 / |Theta|_2 on n = ratio d points of the sphere of
    radius sqrt(d), for each d in ``dims`` (it decreases as d grows, Hu et al. 2020, Thm. 2.1)."""
    out = []
    for i, d in enumerate(dims):
        x = sphere_points(max(2, int(round(ratio * d))), int(d), seed=seed + i)
        exact = first_layer_ntk(x, activation, layer)
        approx = linear_model_ntk(x, activation)
        out.append(np.linalg.norm(exact - approx, 2) / np.linalg.norm(exact, 2))
    return np.array(out)
