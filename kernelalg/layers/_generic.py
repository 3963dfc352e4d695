"""Generic duals of a sympy (or array) activation: the exact Gaussian-MGF route and Gauss-Hermite quadrature.

Shared by ``Elementwise`` (:mod:`kernelalg.layers._elementwise`), ``Tanh``/``Sigmoid``
(:mod:`kernelalg.layers._sigmoidal`) and the dual of two activations in a row (:mod:`kernelalg.layers._compose`),
and kept below :mod:`kernelalg.layers._activations` so that the activations can use it (no import cycle).

1. Exact: fn(x) rewritten with ``exp`` expands into terms c x^k exp(b x); then
   E[u^k e^{a u} v^l e^{b v}] = d^k/da^k d^l/db^l exp((a^2 s11 + 2 a b s12 + b^2 s22) / 2), computed by
   exponential tilting (:func:`exact_dual`).
2. Gauss-Hermite: T(s11, s12, s22) = sum_ij w_i w_j phi(u_i) phi(v_ij) on the 2-D Gauss-Hermite grid of the
   Cholesky factor of the covariance, averaged over both orders of (u, v) (:func:`quadrature_dual`).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import sympy as sp
import jax.numpy as jnp

from kernelalg.core._duals import Dual, corr, hermite_weights
from kernelalg.backends import NUMPY_TABLE
from kernelalg.backends._jax import snapped_corr

#: Largest degree of ``Monomial``, ``RectifiedMonomial`` and ``Polynomial`` (and of ``Elementwise`` formulas):
#: E[u^(2n)] = (2n - 1)!! s^n is 1.9e17 s^16 at n = 16, and the dual of a degree-n polynomial has O(n^2)
#: terms; higher powers overflow float32 kernels within a few layers and make huge programs.
MAX_DEGREE = 16

#: The variable of activation formulas phi(x).
X = sp.Symbol("x", real=True)


def _fold(expr: sp.Expr, leaf: Callable[[sp.Expr], Any], node: Callable[[sp.Expr, list], Any]) -> Any:
    """Evaluate ``node(e, [values of e.args])`` bottom-up without recursion (``leaf`` for atoms), each shared
    subexpression once."""
    memo: dict[int, Any] = {}
    stack = [expr]
    while stack:
        e = stack[-1]
        if id(e) in memo:
            stack.pop()
            continue
        todo = [a for a in e.args if id(a) not in memo]
        if todo:
            stack.extend(todo)
            continue
        stack.pop()
        memo[id(e)] = leaf(e) if not e.args else node(e, [memo[id(a)] for a in e.args])
    return memo[id(expr)]


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

    def ordered(r1: Any, r2: Any, rho: Any, args: tuple) -> Any:
        u = r1[..., None, None] * z[:, None]
        v = r2[..., None, None] * (rho[..., None, None] * z[:, None]
                                   + xp.sqrt(xp.maximum(1 - rho * rho, 0))[..., None, None] * z[None, :])
        return (f(u, *args) * f(v, *args) * ww).sum(axis=(-1, -2))

    def pair(s11: Any, s12: Any, s22: Any, *args: Any) -> Any:
        s11, s12, s22 = xp.broadcast_arrays(*(xp.asarray(s) for s in (s11, s12, s22)))
        rho = corr(s11, s12, s22)
        r1, r2 = xp.sqrt(xp.maximum(s11, 0)), xp.sqrt(xp.maximum(s22, 0))
        return (ordered(r1, r2, rho, args) + ordered(r2, r1, rho, args)) / 2

    def diag(s: Any, *args: Any) -> Any:
        u = xp.sqrt(xp.maximum(xp.asarray(s), 0))[..., None] * z
        return (f(u, *args) ** 2 * w).sum(axis=-1)

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
