"""Early-time linear model of a two-layer network (Hu, Xiao, Adlam & Pennington, NeurIPS 2020).

For f(x) = (1/sqrt m) sum_r a_r phi(w_r . x / sqrt d) with the first layer trained, and inputs with
|x|^2 = d and covariance Sigma, the first-layer NTK is Theta(x, x') = (x.x'/d) E[phi'(u) phi'(v)]. For
d -> infinity (n/d fixed) it is close in operator norm to that of the linear model [zeta x / sqrt d; nu]:

    Theta_lin = zeta^2 X X^T / d + nu^2 1 1^T + (E[phi'(g)^2] - zeta^2) I,
    zeta = E[phi'(g)],  nu = E[phi''(g)] sqrt(Tr Sigma^2) / d,  g ~ N(0, 1).

The constants are computed exactly (sympy Gaussian integrals, term by term, checked against 30-digit
quadrature); the exact Theta comes from the library's closed-form kernel of ``Dense(1, 0) >> phi >> Dense(1, 0)``
(NTK minus NNGP = the first-layer part).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import mpmath
import numpy as np
import sympy as sp

from kernelalg.core import _errors as E
from kernelalg.backends import NUMPY_TABLE, evaluate
from kernelalg.layers._integrable import Integrability, analyse
from kernelalg.layers._activations import Erf, Gelu, Relu, Sin
from kernelalg.layers._dense import Dense
from ._sphere import from_network
from ._sphere import sphere_points

G = sp.Symbol("g", real=True)

UNKNOWN_ACTIVATION = ("activation {name!r} is not in the table {known}. Fix: pass a sympy expression in one symbol "
                      "(e.g. sympy.tanh(x)) and, for the exact kernel, the matching layer via layer=...")
NO_MEAN = ("E[{expr}] for g ~ N(0, 1) could not be computed (no closed form, and the Gaussian integral does not "
           "converge or cannot be evaluated). Fix: use an activation of at most exponential-quadratic growth "
           "whose derivatives are functions (or Dirac deltas), e.g. sympy.tanh(x).")


def _table() -> dict[str, tuple[sp.Expr, Any]]:
    return {"relu": (sp.Max(0, G), Relu()), "erf": (sp.erf(G), Erf()),
            "gelu": (G / 2 * (1 + sp.erf(G / sp.sqrt(2))), Gelu()), "sin": (sp.sin(G), Sin())}


#: Functions whose Gaussian integrals (times polynomials) sympy evaluates reliably and quickly.
_EXACT_FUNCTIONS = {sp.exp, sp.erf, sp.sin, sp.cos, sp.Heaviside, sp.DiracDelta, sp.Max, sp.Min, sp.Abs,
                    sp.sign, sp.Piecewise}


def _quadrature_mean(expr: sp.Expr, dps: int = 30) -> mpmath.mpf | None:
    """E[expr(g)] by mpmath tanh-sinh quadrature (split at 0, where ReLU-like kinks sit), or None when expr has
    a point mass (DiracDelta) or cannot be evaluated in mpmath."""
    if expr.has(sp.DiracDelta):
        return None
    f = sp.lambdify(G, sp.piecewise_fold(expr.rewrite(sp.Piecewise)), modules="mpmath")
    try:
        with mpmath.workdps(dps + 5):
            val, err = mpmath.quad(lambda g: f(g) * mpmath.npdf(g), [-mpmath.inf, 0, mpmath.inf], error=True)
    except (TypeError, ValueError, ZeroDivisionError, NameError):
        return None
    if not (mpmath.isfinite(val) and mpmath.im(val) == 0 and err <= mpmath.mpf(10) ** (-dps // 2) * (1 + abs(val))):
        return None
    return val


def _gauss_mean(expr: sp.Expr) -> sp.Expr:
    """E[expr(g)], g ~ N(0, 1): exact when sympy can integrate it, checked against 30-digit quadrature.

    The integrand is expanded and integrated term by term: sympy's ``integrate`` of the whole sum can drop
    terms (for GELU it lost sqrt(2) g e^{-g^2/2} erf(g/sqrt 2)/(2 sqrt pi) of E[phi'^2], worth sqrt(3)/(6 pi)).
    When sympy fails, or its value disagrees with the quadrature, the quadrature value (30 digits) is used.
    """
    numeric = _quadrature_mean(expr)
    funcs = {type(f) for f in expr.atoms(sp.Function)}
    ok = funcs <= _EXACT_FUNCTIONS and all(p.exp.is_Integer for p in expr.atoms(sp.Pow) if p.base.has(G))
    if ok:  # sympy's integrate can run for minutes outside this class (e.g. tanh): quadrature there
        dens = sp.exp(-G ** 2 / 2) / sp.sqrt(2 * sp.pi)
        exact = sp.Integer(0)
        for term in sp.Add.make_args(sp.expand(expr * dens)):
            exact += sp.integrate(term, (G, -sp.oo, sp.oo))
        exact = sp.simplify(exact)
        ok = exact.is_number and not exact.has(sp.Integral, sp.oo, -sp.oo, sp.zoo, sp.nan)
    if numeric is None:
        if not ok:
            raise E.KernelalgError(NO_MEAN.format(expr=expr))
        return exact
    if ok and abs(complex(sp.N(exact, 30)) - complex(numeric)) <= 1e-20 * (1 + abs(numeric)):
        return exact
    return sp.Float(mpmath.nstr(numeric, 30), 30)


@dataclass(frozen=True)
class EarlyTimeConstants:
    """zeta = E[phi'(g)], E[phi''(g)] and E[phi'(g)^2] for g ~ N(0, 1) (exact sympy numbers where sympy
    integrates them, else 30-digit quadrature values)."""

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
        verdict = analyse(phi, G, lambda e, a: evaluate(e, {G: a}, NUMPY_TABLE))
        if verdict.problem is None and 4 * verdict.growth >= 1:
            verdict = Integrability(f"E[phi'(g)^2] diverges for g ~ N(0, 1) (log|phi| / x^2 -> {verdict.growth:.4g} "
                                    ">= 1/4)")
        if verdict.problem is not None:
            raise E.DivergentKernelError(E.DIVERGENT_DUAL.format(name=f"early_time_constants({phi})",
                                                                 reason=verdict.problem))
    return _constants(phi)


@lru_cache(maxsize=32)
def _constants(phi: sp.Expr) -> EarlyTimeConstants:
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
