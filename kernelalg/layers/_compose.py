"""The dual of two (or more) activations in a row: phi2(phi1(z)) on the Gaussian pre-activation z.

After an activation the representation is no longer Gaussian, so a second activation's own dual does not apply
(neural-tangents refuses ``Relu() >> Erf()``). But phi2(phi1(z)) is one activation of the Gaussian z: its dual is
T = E[phi2(phi1(u)) phi2(phi1(v))] and its NTK factor Tdot = E[c'(u) c'(v)] with c' = phi1'(z) phi2'(phi1(z)) (the
chain rule), both on the covariance of (u, v) *before* the first activation.

Each activation that declares its forward function (sympy, in ``x``) leaves a :class:`Composable` record on its
output state (the Gaussian state it was applied to and phi); an activation that finds such a record on its input
takes the dual of the composition here. Routes, in order:

1. ``"exact: phi2(phi1(x)) = phi1(x)"`` -- phi2 leaves phi1's values unchanged (``Relu() >> Relu()``): the
   state after the first activation already is the answer.
2. ``"exact: Gaussian moment generating function"`` -- the composition is a sum of c x^k e^(b x) terms
   (``Sin() >> Monomial(2)``, ``Monomial(2) >> Monomial(3)``): closed form (:func:`~._generic.exact_dual`).
3. ``"polar quadrature over the sign arcs of (u, v), ..."`` -- any other composition smooth on each side of 0
   (``Relu() >> Erf()``, ``LeakyRelu() >> Gelu()``, ``Erf() >> Gelu()``): :mod:`kernelalg.layers._kinked`
   integrates each quadrant of (u, v) separately, where the integrand is analytic (measured against mpmath within
   4e-15 on T and 1.5e-15 on Tdot; Gauss-Hermite degree 128 was off by 5.6e-4 / 1e-2 on relu o erf, 6e-9 / 2.5e-7
   on erf o gelu). The layers' hyperparameters are arguments of the quadrature nodes (so they stay symbols).
4. ``"Gauss-Hermite quadrature, degree 128"`` -- a composition with kinks away from 0 (``Sin() >> Relu()``),
   which the quadrants do not separate: no error bound is stated (algebraic convergence at the kinks).
"""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
import sympy as sp

from kernelalg.core import _errors as E
from kernelalg.core._duals import Dual, corr
from kernelalg.core._program import Builder, Composable, KernelState
from kernelalg.backends import NUMPY_TABLE, evaluate
from kernelalg.backends._jax import JAX_TABLE, snapped_corr
from kernelalg.layers._degree import MAX_FORMULA_DEGREE, degree_bound
from kernelalg.layers._generic import X, _node, _quadrature_fns, exact_dual
from kernelalg.layers._integrable import analyse, growth_condition
from kernelalg.layers._kinked import POLAR_ROUTE, polar_fns, split_at_zero

#: Gauss-Hermite degree per dimension of the quadrature route of a composition.
COMPOSED_DEGREE = 128

TOO_HIGH_COMPOSED_DEGREE = ("{name}: the composition has degree up to {degree} in x (limit {limit}). Fix: use lower "
                            "powers (e.g. Monomial(2) >> Monomial(3) has degree 6).")

IDENTITY_ROUTE = "exact: phi2(phi1(x)) = phi1(x)"
MGF_ROUTE = "exact: Gaussian moment generating function"


def _lowered(expr: sp.Expr, syms: tuple[sp.Symbol, ...], table: Any, xp: Any) -> Callable[..., Any]:
    """``f(u, *values of syms)``: expr evaluated elementwise on the backend ``table``."""
    def f(u: Any, *args: Any) -> Any:
        out = evaluate(expr, {X: u, **dict(zip(syms, args))}, table)
        if xp is jnp:
            return jnp.broadcast_to(jnp.asarray(out, dtype=jnp.result_type(u, float)), jnp.shape(u))
        return np.broadcast_to(np.asarray(out), np.shape(u))
    return f


def _quadrature(name: str, expr: sp.Expr, syms: tuple[sp.Symbol, ...], deg: int) -> Callable[..., Dual]:
    """Gauss-Hermite dual of ``expr`` whose nodes take the hyperparameter symbols ``syms`` as extra arguments."""
    dexpr = sp.diff(expr, X).replace(sp.DiracDelta, lambda *a: sp.Integer(0))
    jt, jd = _quadrature_fns(_lowered(expr, syms, JAX_TABLE, jnp), deg, jnp, snapped_corr)
    jtd, _ = _quadrature_fns(_lowered(dexpr, syms, JAX_TABLE, jnp), deg, jnp, snapped_corr)
    npcorr = NUMPY_TABLE.functions[corr]
    nt, nd = _quadrature_fns(_lowered(expr, syms, NUMPY_TABLE, np), deg, np, npcorr)
    ntd, _ = _quadrature_fns(_lowered(dexpr, syms, NUMPY_TABLE, np), deg, np, npcorr)
    k = len(syms)
    T, Tdot, Tdiag = _node(f"T_{name}", 3 + k, jt, nt), _node(f"Tdot_{name}", 3 + k, jtd, ntd), _node(
        f"Tdiag_{name}", 1 + k, jd, nd)

    def dual(s11: sp.Expr, s12: sp.Expr, s22: sp.Expr) -> Dual:
        return Dual(T(s11, s12, s22, *syms), Tdot(s11, s12, s22, *syms), Tdiag(s11, *syms))
    return dual


def polar_dual(name: str, pieces: tuple[sp.Expr, sp.Expr], syms: tuple[sp.Symbol, ...] = (),
               degree: int | None = None) -> Callable[..., Dual]:
    """The polar-quadrature dual of a function given by its ``pieces`` (x < 0, x > 0), hyperparameters ``syms`` as
    arguments of the nodes; ``degree`` points per arc (radial and angular; default: the module's)."""
    dpieces = [sp.diff(p, X) for p in pieces]
    npcorr = NUMPY_TABLE.functions[corr]
    fns = {}
    for xp, table, cr in ((jnp, JAX_TABLE, snapped_corr), (np, NUMPY_TABLE, npcorr)):
        f = [_lowered(p, syms, table, xp) for p in pieces]
        df = [_lowered(p, syms, table, xp) for p in dpieces]
        deg = {} if degree is None else {"radial": degree, "angular": degree}
        fns[xp] = polar_fns(*f, xp, cr, **deg) + polar_fns(*df, xp, cr, **deg)[:1]
    k = len(syms)
    (jt, jd, jtd), (nt, nd, ntd) = fns[jnp], fns[np]
    T, Tdot, Tdiag = _node(f"T_{name}", 3 + k, jt, nt), _node(f"Tdot_{name}", 3 + k, jtd, ntd), _node(
        f"Tdiag_{name}", 1 + k, jd, nd)

    def dual(s11: sp.Expr, s12: sp.Expr, s22: sp.Expr) -> Dual:
        return Dual(T(s11, s12, s22, *syms), Tdot(s11, s12, s22, *syms), Tdiag(s11, *syms))
    return dual


def composable(st: KernelState, phi: sp.Expr | None, name: str) -> Composable | None:
    """The record an activation with forward function ``phi`` leaves on its output (None: phi not declared)."""
    return None if phi is None else Composable(st, phi, name)


def compose(b: Builder, st: KernelState, phi2: sp.Expr, name: str) -> KernelState:
    """The state after the activation ``phi2`` (named ``name``) applied to ``st``, the output of the activation
    chain recorded in ``st.composable``: the dual of the composition on the chain's Gaussian input."""
    chain = st.composable
    pre, phi = chain.pre, sp.sympify(phi2).xreplace({X: chain.phi})
    cname = f"{chain.name}>>{name}"
    if phi == chain.phi:  # phi2 is the identity on phi1's values
        b.routes[cname] = IDENTITY_ROUTE
        return st.replace(after=name, composable=Composable(pre, phi, cname))
    degree = degree_bound(phi)
    if degree > MAX_FORMULA_DEGREE:
        raise E.KernelalgError(TOO_HIGH_COMPOSED_DEGREE.format(name=cname, degree=degree, limit=MAX_FORMULA_DEGREE))
    dual, route = exact_dual(phi), MGF_ROUTE
    if dual is None:
        numeric = phi.xreplace({s: sp.Float(v, 17) for s, v in b.params.items()})
        verdict = analyse(numeric, X, lambda e, a: evaluate(e, {X: a}, NUMPY_TABLE))
        if verdict.problem is not None:
            raise E.DivergentKernelError(E.DIVERGENT_DUAL.format(name=cname, reason=verdict.problem))
        if verdict.growth > 0:
            cond = growth_condition(cname, verdict.growth)
            b.require([cond(v) for v in (pre.cov1, pre.cov2)])
        syms = tuple(sorted(phi.free_symbols - {X}, key=str))
        pieces = split_at_zero(phi, X)
        if pieces is not None:
            dual, route = polar_dual(cname, pieces, syms), POLAR_ROUTE
        else:
            dual, route = (_quadrature(cname, phi, syms, COMPOSED_DEGREE),
                           f"Gauss-Hermite quadrature, degree {COMPOSED_DEGREE}")
    b.routes[cname] = route
    d1, d2 = dual(pre.cov1, pre.nngp, pre.cov2), dual(pre.cov2, pre.nngp, pre.cov1)
    return KernelState(d1.Tdiag, d2.Tdiag, d1.T, d1.Tdot * pre.ntk, gaussian=False, width=st.width, after=name,
                       layout=st.layout, composable=Composable(pre, phi, cname))
