"""``Elementwise(fn)``: the dual of an arbitrary activation, exact when sympy can derive it.

Routes, tried in order (the layer's ``route`` attribute says which one was taken):

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

import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from kernelalg.core import _errors as E
from kernelalg.layers._activations import X, keep_shapes
from kernelalg.layers._degree import MAX_FORMULA_DEGREE, _fold, degree_bound  # noqa: F401 (re-exported)
from kernelalg.core._duals import Dual, corr, hermite_weights
from kernelalg.core._fingerprint import FingerprintError, callable_fingerprint
from kernelalg.core._layer import Layer, require_gaussian
from kernelalg.core._program import Builder, KernelState
from kernelalg.backends import NUMPY_TABLE, evaluate, lower_elementwise
from kernelalg.backends._jax import snapped_corr
from kernelalg.layers._formula import _formula_function, parse_formula
from kernelalg.layers._integrable import analyse, analyse_callable, growth_condition


#: Most terms c x^k e^(b x) the exact route lets an activation expand into (an upper bound read off the
#: formula before expanding it); beyond that, the quadrature route is taken.
MAX_MGF_TERMS = 256
#: Bounds on the exact route's work, checked on the grouped terms {b: p_b(x)} of phi and phi' before any
#: expectation is taken (beyond them, the quadrature route is taken): most distinct slopes b; largest sum of
#: (degree + 1) of the p_b; largest sum over pairs of complex slopes (sin, cos) of ((deg p_a + 1)(deg p_b + 1))^2,
#: whose real parts are expanded. Together they keep one exact dual under about a second.
MAX_MGF_SLOPES = 17
MAX_MGF_WEIGHT = 17
MAX_MGF_COMPLEX = 1024

#: Largest Gauss-Hermite degree of the quadrature route: its 2-D grid has deg^2 points per input pair, and
#: numpy's nodes are NaN beyond about 300.
MAX_QUADRATURE_DEGREE = 128

TOO_HIGH_DEGREE = ("Elementwise({name}): the activation has degree up to {degree} in x (limit {limit}); its dual "
                   "would be a huge expression and overflow in floating point. Fix: use lower powers of x, e.g. "
                   "x**3 * tanh(x).")

#: Functions of an affine argument a x + c that are sums of exponentials e^(b x): their number of terms.
_EXP_SUMS = {sp.exp: 1, sp.sin: 2, sp.cos: 2, sp.sinh: 2, sp.cosh: 2}


def _affine(arg: sp.Expr) -> bool:
    return not sp.diff(arg, X).has(X)


def _terms_node(e: sp.Expr, t: list[int | None]) -> int | None:
    if not e.has(X):
        return 1
    if any(v is None for v in t):
        return None
    if e.is_Add:
        return sum(t)
    if e.is_Mul:
        return math.prod(t)
    if e.is_Pow:
        if e.exp.is_Integer and e.exp >= 0:
            return math.comb(t[0] + int(e.exp) - 1, int(e.exp)) if t[0] <= MAX_MGF_TERMS else None
        return 1 if not e.base.has(X) and _affine(e.exp) else None
    if type(e) in _EXP_SUMS and _affine(e.args[0]):
        return _EXP_SUMS[type(e)]
    return None


def mgf_terms_bound(expr: sp.Expr) -> int | None:
    """An upper bound on the number of terms c x^k e^(b x) of ``expr`` expanded, read off its structure (sums,
    products, non-negative integer powers, exp/sin/cos/sinh/cosh of affine arguments), or None when ``expr``
    is not of that form (then the exact route does not apply)."""
    return _fold(expr, lambda e: 1, _terms_node)


def _terms(expr: sp.Expr) -> list[tuple[sp.Expr, int, sp.Expr]] | None:
    """Split expr into [(coef, k, b)] with expr = sum coef x^k exp(b x), or None if impossible or too large."""
    bound = mgf_terms_bound(expr)
    if bound is None or bound > MAX_MGF_TERMS:
        return None
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


def _by_slope(terms: list[tuple[sp.Expr, int, sp.Expr]]) -> dict[sp.Expr, list[sp.Expr]]:
    """{b: [p_0, p_1, ...]}: the polynomial p_b(x) = sum_k p_k x^k multiplying e^(b x)."""
    out: dict[sp.Expr, list[sp.Expr]] = {}
    for coef, k, b in terms:
        poly = out.setdefault(sp.expand(b), [])
        poly.extend([sp.Integer(0)] * (k + 1 - len(poly)))
        poly[k] += coef
    return out


def _shift(poly: list[sp.Expr], m: sp.Expr) -> list[sp.Expr]:
    """Coefficients of p(x + m) from those of p(x)."""
    return [sp.Add(*(c * math.comb(i, j) * m ** (i - j) for i, c in enumerate(poly) if i >= j))
            for j in range(len(poly))]


def _re_im(e: sp.Expr, variables: tuple[sp.Symbol, ...]) -> tuple[sp.Expr, sp.Expr]:
    """(Re e, Im e) of a polynomial in the real ``variables`` with complex numeric coefficients."""
    if not e.has(sp.I):
        return e, sp.Integer(0)
    re, im = [], []
    for term in sp.Add.make_args(sp.expand(e)):
        coef, mono = term.as_independent(*variables, as_Add=False)
        a, b = coef.as_real_imag()
        re.append(a * mono)
        im.append(b * mono)
    return sp.Add(*re), sp.Add(*im)


def _tilted(a: sp.Expr, p: list[sp.Expr], b: sp.Expr, q: list[sp.Expr], s11: sp.Expr, s12: sp.Expr,
            s22: sp.Expr) -> sp.Expr:
    """Re E[p(u) e^(a u) q(v) e^(b v)] = Re M(a, b) E[p(U + m1) q(V + m2)] (see :func:`_mgf_expectation`)."""
    variables = (s11, s12, s22)
    re_q, im_q = _re_im(sp.expand((a**2 * s11 + 2 * a * b * s12 + b**2 * s22) / 2), variables)
    w1 = [_re_im(w, variables) for w in hermite_weights(tuple(_shift(p, a * s11 + b * s12)), s11)]
    w2 = [_re_im(w, variables) for w in hermite_weights(tuple(_shift(q, a * s12 + b * s22)), s22)]
    re_e = sp.Add(*(sp.factorial(k) * s12**k * (x[0] * y[0] - x[1] * y[1]) for k, (x, y) in enumerate(zip(w1, w2))))
    im_e = sp.Add(*(sp.factorial(k) * s12**k * (x[0] * y[1] + x[1] * y[0]) for k, (x, y) in enumerate(zip(w1, w2))))
    return sp.exp(re_q) * (sp.cos(im_q) * re_e - sp.sin(im_q) * im_e)


def _mgf_expectation(t1: list, t2: list, s11: sp.Expr, s12: sp.Expr, s22: sp.Expr) -> sp.Expr:
    """E[f(u) g(v)] for real f = sum_a p_a(x) e^(a x), g = sum_b q_b(x) e^(b x), by exponential tilting:
    E[p(u) e^(a u) q(v) e^(b v)] = M(a, b) E[p(U + m1) q(V + m2)] with M(a, b) = e^Q the Gaussian MGF,
    (U, V) ~ N(0, S) and (m1, m2) = S (a, b); the polynomial expectation is Isserlis' theorem grouped by powers
    of s12, sum_k k! s12^k A_k(s11) B_k(s22) (:func:`~kernelalg.core._duals.hermite_weights`). This equals
    d^k/da^k d^l/db^l M(a, b). Complex slopes (sin, cos) come in conjugate pairs and the sum is real, so each
    term contributes its real part e^(Re Q) (cos(Im Q) Re E - sin(Im Q) Im E), with Re/Im of the weights
    A_k, B_k expanded one at a time (never the whole product)."""
    g1, g2 = _by_slope(t1), _by_slope(t2)
    return sp.Add(*(_tilted(a, p, b, q, s11, s12, s22) for a, p in g1.items() for b, q in g2.items()))


def _affordable(terms: list[tuple[sp.Expr, int, sp.Expr]]) -> bool:
    """Whether the exact expectation of these terms is within MAX_MGF_SLOPES, _WEIGHT and _COMPLEX."""
    g = _by_slope(terms)
    sizes = [(b.has(sp.I), len(p)) for b, p in g.items()]
    complex_cost = sum((n1 * n2) ** 2 for c1, n1 in sizes for c2, n2 in sizes if c1 or c2)
    return len(g) <= MAX_MGF_SLOPES and sum(n for _, n in sizes) <= MAX_MGF_WEIGHT and complex_cost <= MAX_MGF_COMPLEX


def exact_dual(phi: sp.Expr) -> Callable[..., Dual] | None:
    """The MGF-route dual of a sympy activation, or None if phi is not of the form sum c x^k e^{bx} (or too
    large a one: see :data:`MAX_MGF_TERMS`, :data:`MAX_MGF_SLOPES`, :data:`MAX_MGF_WEIGHT`, :data:`MAX_MGF_COMPLEX`)."""
    t = _terms(phi)
    tp = None if t is None else _terms(sp.diff(phi, X))
    if t is None or tp is None or not (_affordable(t) and _affordable(tp)):
        return None
    s11, s22 = sp.symbols("s11 s22", positive=True)
    s12 = sp.Symbol("s12", real=True)
    T, Tdot = _mgf_expectation(t, t, s11, s12, s22), _mgf_expectation(tp, tp, s11, s12, s22)
    if any(e.has(sp.I, sp.re, sp.im) for e in (T, Tdot)):
        return None
    Tdiag = sp.expand(T.xreplace({s12: s11, s22: s11}))

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
        require_gaussian(st, name)
        b.require([cond(v) for cond in conditions for v in (st.cov1, st.cov2)])
        d1, d2 = dual(st.cov1, st.nngp, st.cov2), dual(st.cov2, st.nngp, st.cov1)
        return keep_shapes(b, st, KernelState(d1.Tdiag, d2.Tdiag, d1.T, d1.Tdot * st.ntk, gaussian=False,
                                              width=st.width, after=name, layout=st.layout))

    def finite(p: Mapping, static: Mapping, in_shape: tuple, width: int) -> tuple:
        if phi_sym is None:
            return (lambda key: {}), (lambda params, x: fn(x)), in_shape
        f = lower_elementwise(phi_sym, X)
        return (lambda key: {}), (lambda params, x: f(x)), in_shape

    return Layer(name, kernel, static=(("route", route),), finite=finite, role="activation", routes=((name, route),),
                 identity=identity, unidentified=unidentified)
