"""``Elementwise(fn)``: the dual of an arbitrary activation, exact when sympy can derive it.

Routes, tried in order (the layer's ``route`` attribute says which one was taken):

1. ``"exact: Gaussian moment generating function"`` -- fn(x) (sympy) rewritten with ``exp`` expands into
   terms c x^k exp(b x) (polynomials, exp, sin, cos, sinh, cosh and their products/sums). Then
   E[u^k e^{a u} v^l e^{b v}] = d^k/da^k d^l/db^l exp((a^2 s11 + 2 a b s12 + b^2 s22) / 2).
2. ``"Gauss-Hermite quadrature, degree n"`` -- any other function (sympy or a JAX-traceable callable):
   T(s11, s12, s22) = sum_ij w_i w_j phi(u_i) phi(v_ij) on the 2-D Gauss-Hermite grid of the Cholesky
   factor of the covariance, averaged over both orders of (u, v) (symmetric in (s11, s22)); exact for
   polynomials of degree < 2n, error decaying with smoothness.

References:
    Novak et al. (2020), neural-tangents' ElementwiseNumerical (Gauss-Hermite route).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from kernelalg.core import _errors as E
from kernelalg.layers._activations import X
from kernelalg.core._duals import Dual, corr
from kernelalg.core._fingerprint import FingerprintError, callable_fingerprint
from kernelalg.core._layer import Layer, require_gaussian
from kernelalg.core._program import Builder, KernelState
from kernelalg.backends import NUMPY_TABLE, evaluate, lower_elementwise
from kernelalg.backends._jax import snapped_corr
from kernelalg.layers._formula import _formula_function, parse_formula
from kernelalg.layers._integrable import analyse, analyse_callable, growth_condition


def _terms(expr: sp.Expr) -> list[tuple[sp.Expr, int, sp.Expr]] | None:
    """Split expr into [(coef, k, b)] with expr = sum coef x^k exp(b x), or None if impossible."""
    expanded = sp.expand(sp.expand(expr.rewrite(sp.exp)), power_exp=True)
    out = []
    for term in sp.Add.make_args(expanded):
        coef, dep = term.as_independent(X, as_Add=False)
        k, b = 0, sp.Integer(0)
        for f in sp.Mul.make_args(dep):
            if f == X:
                k += 1
            elif f.is_Pow and f.base == X and f.exp.is_Integer and f.exp > 0:
                k += int(f.exp)
            elif isinstance(f, sp.exp) or (f.is_Pow and f.base == sp.E):
                arg = f.args[0] if isinstance(f, sp.exp) else f.exp
                slope = sp.diff(arg, X)
                if slope.has(X):
                    return None
                coef *= sp.exp(sp.expand(arg - slope * X))
                b += slope
            elif f != 1:
                return None
        out.append((coef, k, b))
    return out


def _mgf_expectation(t1: list, t2: list, s11: sp.Expr, s12: sp.Expr, s22: sp.Expr) -> sp.Expr:
    a, b = sp.Dummy("a"), sp.Dummy("b")
    mgf = sp.exp((a**2 * s11 + 2 * a * b * s12 + b**2 * s22) / 2)
    total = sp.Integer(0)
    for c1, k1, b1 in t1:
        for c2, k2, b2 in t2:
            total += c1 * c2 * sp.diff(mgf, a, k1, b, k2).subs({a: b1, b: b2})
    total = sp.expand_complex(sp.expand(total))
    return sp.simplify(total) if total.has(sp.I) else total


def exact_dual(phi: sp.Expr) -> Callable[..., Dual] | None:
    """The MGF-route dual of a sympy activation, or None if phi is not of the form sum c x^k e^{bx}."""
    t, tp = _terms(phi), _terms(sp.diff(phi, X))
    if t is None or tp is None:
        return None
    s11, s22 = sp.symbols("s11 s22", positive=True)
    s12 = sp.Symbol("s12", real=True)
    T, Tdot = _mgf_expectation(t, t, s11, s12, s22), _mgf_expectation(tp, tp, s11, s12, s22)
    if T.has(sp.I) or Tdot.has(sp.I):
        return None
    Tdiag = sp.simplify(T.subs({s12: s11, s22: s11}))

    def dual(a11: sp.Expr, a12: sp.Expr, a22: sp.Expr) -> Dual:
        # s12 through the correlation node, so that the backends pin the diagonal (see kernelalg.core._duals)
        rep = {s11: a11, s12: corr(a11, a12, a22) * sp.sqrt(a11) * sp.sqrt(a22), s22: a22}
        return Dual(T.xreplace(rep), Tdot.xreplace(rep), Tdiag.xreplace({s11: a11}))
    return dual


def _gauss_hermite(deg: int) -> tuple[np.ndarray, np.ndarray]:
    z, w = np.polynomial.hermite_e.hermegauss(deg)
    return z, w / math.sqrt(2 * math.pi)


def _quadrature_fns(f: Callable[[Any], Any], deg: int, xp: Any, corr: Callable) -> tuple[Callable, Callable]:
    """2-D and 1-D Gauss-Hermite expectations E[f(u) f(v)] and E[f(u)^2] for the array module ``xp``.

    The 2-D rule integrates on the Cholesky factor of the covariance, u = sqrt(s11) z1,
    v = sqrt(s22) (rho z1 + sqrt(1 - rho^2) z2), with the backend's snapped correlation ``corr`` (so the
    diagonal is pinned: at rho = 1 the rule is the 1-D rule, at any depth). That rule is not symmetric in
    (s11, s22); the average of both orders is, so the kernel of x with x' is that of x' with x.
    """
    z, w = _gauss_hermite(deg)
    ww = w[:, None] * w[None, :]

    def ordered(r1: Any, r2: Any, rho: Any) -> Any:
        u = r1[..., None, None] * z[:, None]
        v = r2[..., None, None] * (rho[..., None, None] * z[:, None]
                                   + xp.sqrt(xp.maximum(1 - rho * rho, 0))[..., None, None] * z[None, :])
        return (f(u) * f(v) * ww).sum(axis=(-1, -2))

    def pair(s11: Any, s12: Any, s22: Any) -> Any:
        s11, s12, s22 = xp.broadcast_arrays(*(xp.asarray(s) for s in (s11, s12, s22)))
        rho = corr(s11, s12, s22)
        r1, r2 = xp.sqrt(xp.maximum(s11, 0)), xp.sqrt(xp.maximum(s22, 0))
        return (ordered(r1, r2, rho) + ordered(r2, r1, rho)) / 2

    def diag(s: Any) -> Any:
        u = xp.sqrt(xp.maximum(xp.asarray(s), 0))[..., None] * z
        return (f(u) ** 2 * w).sum(axis=-1)

    return pair, diag


def _node(name: str, nargs: int, jax_fn: Callable, np_fn: Callable) -> type:
    return type(name, (sp.Function,), {"nargs": nargs, "lowering": {"jax": jax_fn, "numpy": np_fn}})


def quadrature_dual(name: str, phi: Callable, dphi: Callable, phi_np: Callable | None, dphi_np: Callable | None,
                    deg: int) -> Callable[..., Dual]:
    """A dual whose T, Tdot, Tdiag are opaque sympy nodes lowered to Gauss-Hermite quadrature."""
    jt, jd = _quadrature_fns(phi, deg, jnp, snapped_corr)
    jtd, _ = _quadrature_fns(dphi, deg, jnp, snapped_corr)
    nt, nd = _quadrature_fns(phi_np or phi, deg, np, NUMPY_TABLE.functions[corr])
    ntd, _ = _quadrature_fns(dphi_np or dphi, deg, np, NUMPY_TABLE.functions[corr])
    T = _node(f"T_{name}", 3, jt, nt)
    Tdot = _node(f"Tdot_{name}", 3, jtd, ntd)
    Tdiag = _node(f"Tdiag_{name}", 1, jd, nd)

    def dual(s11: sp.Expr, s12: sp.Expr, s22: sp.Expr) -> Dual:
        return Dual(T(s11, s12, s22), Tdot(s11, s12, s22), Tdiag(s11))
    return dual


def Elementwise(fn: Callable[[Any], Any] | str, name: str | None = None, deg: int = 32) -> Layer:
    """An activation given by any function; its dual is derived exactly when possible.

    Args:
        fn: The activation. Either it accepts a sympy symbol (e.g. ``lambda x: sympy.tanh(x)`` or
            ``lambda x: x**3 + sympy.sin(x)``), or it is a formula string in ``x`` as on the command line
            (``"x * tanh(x)"``, parsed safely by :func:`~kernelalg.layers._formula.parse_formula`), or it is a
            JAX-traceable callable on arrays (then only the quadrature route applies and its derivative comes
            from ``jax.grad``).
        name: Display name (default: from ``fn``).
        deg: Gauss-Hermite degree per dimension for the quadrature route.

    Returns:
        The layer; ``layer.static`` holds ``route`` saying which route was taken, ``layer.identity`` what
        determines its values (the sympy form, or a fingerprint of fn's code and the values it reads).

    Raises:
        DivergentKernelError: the dual does not exist (phi or phi' not real on the whole line, a
            non-integrable singularity, growth faster than any Gaussian decays; see
            :mod:`kernelalg.layers._integrable`). Growth like exp(c x^2) is checked at evaluation, on the
            variances met (1 - 4 c s > 0).
    """
    if isinstance(fn, str):
        fn = _formula_function(parse_formula(fn))
        name = name or "phi"
    name = name or getattr(fn, "__name__", "phi").replace("<lambda>", "phi")
    try:
        expr = sp.sympify(fn(X))
        if not isinstance(expr, sp.Expr) or expr.free_symbols - {X}:
            raise TypeError
    except Exception:
        expr = None
    conditions: list[Callable[[sp.Expr], tuple[sp.Expr, str]]] = []
    if expr is not None:
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
        require_gaussian(st, name)
        b.require([cond(v) for cond in conditions for v in (st.cov1, st.cov2)])
        d1, d2 = dual(st.cov1, st.nngp, st.cov2), dual(st.cov2, st.nngp, st.cov1)
        return KernelState(d1.Tdiag, d2.Tdiag, d1.T, d1.Tdot * st.ntk, gaussian=False, width=st.width, after=name,
                     layout=st.layout)

    def finite(p: Mapping, static: Mapping, in_shape: tuple, width: int) -> tuple:
        if phi_sym is None:
            return (lambda key: {}), (lambda params, x: fn(x)), in_shape
        f = lower_elementwise(phi_sym, X)
        return (lambda key: {}), (lambda params, x: f(x)), in_shape

    return Layer(name, kernel, static=(("route", route),), finite=finite, role="activation", routes=((name, route),),
                 identity=identity, unidentified=unidentified)
