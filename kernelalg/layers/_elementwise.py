"""``Elementwise(fn)``: the dual of an arbitrary activation, exact when sympy can derive it.

Routes, tried in order (the layer's ``route`` attribute says which one was taken):

The routes themselves live in :mod:`kernelalg.layers._generic`.

1. ``"exact: Gaussian moment generating function"`` -- fn(x) (sympy) rewritten with ``exp`` expands into
   terms c x^k exp(b x) (polynomials, exp, sin, cos, sinh, cosh of affine arguments, their products/sums;
   at most MAX_MGF_TERMS terms, checked on the formula's structure before expanding). Then
   E[u^k e^{a u} v^l e^{b v}] = d^k/da^k d^l/db^l exp((a^2 s11 + 2 a b s12 + b^2 s22) / 2), computed by
   exponential tilting: M(a, b) E[(U + m1)^k (V + m2)^l] with (m1, m2) = S (a, b) and Isserlis' theorem.
2. ``"Gauss-Hermite quadrature, degree n"`` -- any other function (sympy or a JAX-traceable callable):
   T(s11, s12, s22) = sum_ij w_i w_j phi(u_i) phi(v_ij) on the 2-D Gauss-Hermite grid of the Cholesky
   factor of the covariance, averaged over both orders of (u, v) (symmetric in (s11, s22)); exact for
   polynomials of degree < 2n, error decaying with smoothness.

References:
    Novak et al. (2020), neural-tangents' ElementwiseNumerical (Gauss-Hermite route).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from kernelalg.core import _errors as E
from kernelalg.layers._activations import keep_shapes
from kernelalg.layers._compose import composable, compose
from kernelalg.layers._degree import MAX_FORMULA_DEGREE, degree_bound
from kernelalg.layers._generic import (MAX_MGF_COMPLEX, MAX_MGF_SLOPES, MAX_MGF_TERMS,  # noqa: F401 (re-exported)
                                       MAX_MGF_WEIGHT, X, _gauss_hermite, _quadrature_fns, exact_dual,
                                       mgf_terms_bound, quadrature_dual)
from kernelalg.core._fingerprint import FingerprintError, callable_fingerprint
from kernelalg.core._layer import Layer, require_gaussian
from kernelalg.core._program import Builder, KernelState
from kernelalg.backends import NUMPY_TABLE, evaluate, lower_elementwise
from kernelalg.layers._formula import _formula_function, parse_formula
from kernelalg.layers._integrable import analyse, analyse_callable, growth_condition


#: Largest Gauss-Hermite degree of the quadrature route: its 2-D grid has deg^2 points per input pair, and
#: numpy's nodes are NaN beyond about 300.
MAX_QUADRATURE_DEGREE = 128

TOO_HIGH_DEGREE = ("Elementwise({name}): the activation has degree up to {degree} in x (limit {limit}); its dual "
                   "would be a huge expression and overflow in floating point. Fix: use lower powers of x, e.g. "
                   "x**3 * tanh(x).")

def Elementwise(fn: Callable[[Any], Any] | str, name: str | None = None, deg: int = 32) -> Layer:
    """An activation given by any function; its dual is derived exactly when possible.

    Args:
        fn: The activation. Either it accepts a sympy symbol (e.g. ``lambda x: sympy.tanh(x)`` or
            ``lambda x: x**3 + sympy.sin(x)``), or it is a formula string in ``x`` as on the command line
            (``"x * tanh(x)"``, parsed safely by :func:`~kernelalg.layers._formula.parse_formula`), or it is a
            JAX-traceable callable on arrays (then only the quadrature route applies and its derivative comes
            from ``jax.grad``).
        name: Display name (default: from ``fn``).
        deg: Gauss-Hermite degree per dimension for the quadrature route (1..MAX_QUADRATURE_DEGREE = 128).

    Returns:
        The layer; ``layer.static`` holds ``route`` saying which route was taken, ``layer.identity`` what
        determines its values (the sympy form, or a fingerprint of fn's code and the values it reads).

    Raises:
        DivergentKernelError: the dual does not exist (phi or phi' not real on the whole line, a
            non-integrable singularity, growth faster than any Gaussian decays; see
            :mod:`kernelalg.layers._integrable`). Growth like exp(c x^2) is checked at evaluation, on the
            variances met (1 - 4 c s > 0).
        KernelalgError: A sympy activation of degree above MAX_FORMULA_DEGREE = 16 in x, or ``deg`` out of range.
    """
    if isinstance(fn, str):
        fn = _formula_function(parse_formula(fn))
        name = name or "phi"
    name = name or getattr(fn, "__name__", "phi").replace("<lambda>", "phi")
    if isinstance(deg, bool) or not isinstance(deg, (int, np.integer)) or not 1 <= deg <= MAX_QUADRATURE_DEGREE:
        raise E.KernelalgError(f"Elementwise({name}): deg must be an integer in 1..{MAX_QUADRATURE_DEGREE}, got "
                               f"{deg!r} (the quadrature grid has deg^2 points per input pair). Fix: e.g. deg=32.")
    deg = int(deg)
    try:
        expr = sp.sympify(fn(X))
        if not isinstance(expr, sp.Expr) or expr.free_symbols - {X}:
            raise TypeError
    except Exception:
        expr = None
    conditions: list[Callable[[sp.Expr], tuple[sp.Expr, str]]] = []
    if expr is not None:
        degree = degree_bound(expr)
        if degree > MAX_FORMULA_DEGREE:
            raise E.KernelalgError(TOO_HIGH_DEGREE.format(name=name, degree=degree, limit=MAX_FORMULA_DEGREE))
        dual = exact_dual(expr)  # sums of c x^k e^{bx}: entire, of at most exponential growth, always integrable
        route = "exact: Gaussian moment generating function"
        if dual is None:
            verdict = analyse(expr, X, lambda e, a: evaluate(e, {X: a}, NUMPY_TABLE))
            if verdict.problem is not None:
                raise E.DivergentKernelError(E.DIVERGENT_DUAL.format(name=f"Elementwise({expr})",
                                                                     reason=verdict.problem))
            if verdict.growth > 0:
                conditions.append(growth_condition(f"Elementwise({expr})", verdict.growth))
            dexpr = sp.diff(expr, X)
            route = f"Gauss-Hermite quadrature, degree {deg}"
            dual = quadrature_dual(name, lower_elementwise(expr, X), lower_elementwise(dexpr, X),
                                   lambda a: evaluate(expr, {X: a}, NUMPY_TABLE),
                                   lambda a: evaluate(dexpr, {X: a}, NUMPY_TABLE), deg)
        phi_sym = expr
        identity, unidentified = "sympy:" + sp.srepr(expr), ""
    else:
        try:
            probe = jnp.asarray(fn(jnp.linspace(-1.0, 1.0, 3)))
        except Exception as err:
            raise E.KernelalgError(E.UNSUPPORTED_ACTIVATION.format(name=name) + f" (calling it failed: {err})") from None
        if probe.shape != (3,):
            raise E.KernelalgError(f"Elementwise({name}): fn must act elementwise, got shape {probe.shape} for "
                                   "an input of shape (3,). Fix: use jnp functions that act per element.")
        dfn = jnp.vectorize(jax.grad(lambda t: jnp.asarray(fn(t)).astype(jnp.result_type(t))))
        try:  # the quadrature route traces fn and its derivative inside jit: check that now, not later
            jax.make_jaxpr(lambda t: (fn(t), dfn(t)))(jnp.linspace(-1.0, 1.0, 3))
        except Exception as err:
            raise E.KernelalgError(E.NOT_TRACEABLE.format(name=name, err=str(err).splitlines()[0][:200])) from None
        verdict = analyse_callable(fn, dfn)
        if verdict.problem is not None:
            raise E.DivergentKernelError(E.DIVERGENT_DUAL.format(name=f"Elementwise({name})",
                                                                 reason=verdict.problem))
        route = f"Gauss-Hermite quadrature, degree {deg}"
        dual = quadrature_dual(name, fn, dfn, None, None, deg)
        phi_sym = None
        try:
            identity, unidentified = "code:" + callable_fingerprint(fn), ""
        except FingerprintError as err:
            identity, unidentified = "", f"Elementwise({name}): its function cannot be fingerprinted ({err})"

    def kernel(b: Builder, st: KernelState, p: Mapping, static: Mapping) -> KernelState:
        if st.composable is not None and phi_sym is not None:
            return keep_shapes(b, st, compose(b, st, phi_sym, name))
        require_gaussian(st, name)
        b.require([cond(v) for cond in conditions for v in (st.cov1, st.cov2)])
        d1, d2 = dual(st.cov1, st.nngp, st.cov2), dual(st.cov2, st.nngp, st.cov1)
        return keep_shapes(b, st, KernelState(d1.Tdiag, d2.Tdiag, d1.T, d1.Tdot * st.ntk, gaussian=False,
                                              width=st.width, after=name, layout=st.layout,
                                              composable=composable(st, phi_sym, name)))

    def finite(p: Mapping, static: Mapping, in_shape: tuple, width: int) -> tuple:
        if phi_sym is None:
            return (lambda key: {}), (lambda params, x: fn(x)), in_shape
        f = lower_elementwise(phi_sym, X)
        return (lambda key: {}), (lambda params, x: f(x)), in_shape

    return Layer(name, kernel, static=(("route", route),), finite=finite, role="activation", routes=((name, route),),
                 identity=identity, unidentified=unidentified)
