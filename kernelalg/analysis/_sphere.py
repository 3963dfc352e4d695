"""Dot-product kernels on the sphere: the kernel of a dense network as a function of t = cos(angle).

A dense network's NNGP/NTK depends on its inputs through ``q1 = |x|^2/d``, ``q2 = |x'|^2/d`` and
``c = x.x'/d`` (the library's input convention, as in neural-tangents). On inputs normalised to
``|x|^2/d = q`` (default ``q = 1``: the sphere of radius sqrt(d)) the kernel is a function of the cosine
``t = <x, x'>/(|x||x'|)`` alone: ``k(t) = K(q, q, q t)``. Its Mercer eigenvalues for the uniform measure do
not depend on the sphere's radius, so this module speaks of S^{d-1} throughout.

References:
    Bietti & Mairal (2019), "On the inductive bias of neural tangent kernels";
    Geifman et al. (2020), "On the similarity between the Laplace and neural tangent kernels".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import mpmath
import numpy as np
import sympy as sp

from kernelalg.core import _errors as E
from kernelalg.core._program import C, Q1, Q2
from kernelalg.core._symbolic import symbolic
from kernelalg.core._layer import Layer

#: The variable of every dot-product kernel expression in this package.
T = sp.Symbol("t", real=True)

WHICH = ("nngp", "ntk")
BAD_WHICH = "which={which!r} is not a kernel of a network. Fix: use which='ntk' or which='nngp'."
NOT_DOT_PRODUCT = ("{what}: the kernel depends on {extra}, so it is not a dot-product kernel of dense inputs on the "
                   "sphere. Fix: use a dense network (Dense layers and elementwise activations, no conv/recurrent "
                   "layers or fan-in dependent parametrization), or pass k(t) itself as a sympy expression in one "
                   "symbol or a vectorised callable.")
MULTI_OUTPUT = ("{what} has {n} output branches; the spectrum needs one kernel. Fix: end the network in a single "
                "branch (e.g. add ka.FanInSum() >> ka.Dense(1.0)).")
BAD_DIM = "dim={dim!r}: the sphere S^(dim-1) needs an integer dim >= 2. Fix: e.g. dim=3."
BAD_KERNEL = ("{obj!r} is not a network, a sympy expression in one symbol, or a callable k(t). Fix: pass e.g. "
              "ka.Dense(1.0) >> ka.Relu() >> ka.Dense(1.0), or sympy.acos(t), or numpy.exp.")


def check_dim(dim: Any) -> int:
    """Validate a sphere dimension (inputs in R^dim, sphere S^(dim-1))."""
    try:
        ok = not isinstance(dim, bool) and int(dim) == dim and int(dim) >= 2
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise E.KernelalgError(BAD_DIM.format(dim=dim))
    return int(dim)


def rationalize(value: float) -> sp.Expr:
    """A float hyperparameter as an exact number where it is one (0.05 -> 1/20, 1.41421356... -> sqrt(2))."""
    v = float(value)
    if v == 0.0:
        return sp.Integer(0)
    guess = sp.nsimplify(v, [sp.pi], tolerance=1e-13 * max(1.0, abs(v)))
    return guess if abs(float(guess) - v) <= 1e-12 * max(1.0, abs(v)) else sp.Float(v, 17)


@dataclass(frozen=True, eq=False)
class DotProductKernel:
    """A kernel k(t) of the cosine t in [-1, 1].

    Attributes:
        expr: The closed form (sympy, in :data:`T`), or None when only a callable is known.
        label: Human-readable name (used in plots).
        fn: Vectorised float64 evaluator t -> k(t).
    """

    expr: sp.Expr | None
    label: str
    fn: Callable[[np.ndarray], np.ndarray]
    _mp: Callable | None = field(default=None, repr=False)

    def __call__(self, t: Any) -> np.ndarray:
        """k(t) elementwise (float64); |t| within 1e-12 of 1 takes the endpoint value k(+-1), which float64
        closed forms can miss (an acos argument rounding to 1 + 1e-16 gives NaN)."""
        t = np.asarray(t, dtype=np.float64)
        out = np.array(self.fn(t), dtype=np.float64, copy=True)
        edge = np.abs(t) >= 1.0 - 1e-12
        if np.any(edge):
            out = np.where(edge & (t > 0), self._endpoint(1), out)
            out = np.where(edge & (t < 0), self._endpoint(-1), out)
        return out

    def _endpoint(self, sign: int) -> float:
        cache = self.__dict__.setdefault("_ends", {})
        if sign not in cache:
            with mpmath.workdps(30):
                cache[sign] = float(self.mp(sign)) if self._mp is not None else float(self.fn(np.array([sign]))[0])
        return cache[sign]

    def mp(self, t: Any) -> mpmath.mpf:
        """k(t) in mpmath at the current precision (real part)."""
        if self._mp is None:
            return mpmath.mpf(float(self.fn(np.array([float(t)]))[0]))
        return mpmath.re(self._mp(mpmath.mpf(t)))

    def at_one(self, dps: int = 30) -> float:
        """k(1) = the kernel's value on the diagonal (exact when a closed form is known)."""
        if self.expr is not None:
            val = sp.N(self.expr.subs(T, 1), dps)
            if val.is_real or val.is_number:
                return float(sp.re(val))
        with mpmath.workdps(dps):
            return float(self.mp(1))


def _snap(x: Any, lo: float, hi: float, tol: float = 1e-9) -> np.ndarray:
    """Pull values within ``tol`` outside [lo, hi] (float64 rounding of nested closed forms) back inside."""
    x = np.asarray(x, dtype=np.float64)
    x = np.where((x > hi) & (x < hi + tol), hi, x)
    return np.where((x < lo) & (x > lo - tol), lo, x)


#: numpy functions that tolerate rounding just outside their domain (a genuine domain error stays NaN).
_SAFE = {"acos": lambda x: np.arccos(_snap(x, -1.0, 1.0)), "asin": lambda x: np.arcsin(_snap(x, -1.0, 1.0)),
         "sqrt": lambda x: np.sqrt(_snap(x, 0.0, np.inf))}


def _lambdify(expr: sp.Expr) -> tuple[Callable, Callable]:
    fn_np = sp.lambdify(T, expr, modules=[_SAFE, "numpy"], cse=True)
    fn_mp = sp.lambdify(T, expr, modules="mpmath", cse=True)

    def vec(t: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            out = fn_np(t)
        return np.broadcast_to(np.asarray(out, dtype=np.float64), np.shape(t))
    return vec, fn_mp


def from_expression(expr: sp.Expr, label: str = "k(t)") -> DotProductKernel:
    """A :class:`DotProductKernel` from a sympy expression in a single symbol (renamed to :data:`T`)."""
    expr = sp.sympify(expr)
    free = sorted(expr.free_symbols, key=str)
    if len(free) > 1:
        raise E.KernelalgError(NOT_DOT_PRODUCT.format(what=label, extra=", ".join(map(str, free))))
    if free:
        expr = expr.subs(free[0], T)
    fn, mp_fn = _lambdify(expr)
    return DotProductKernel(expr, label, fn, mp_fn)


def from_network(net: Any, which: str = "ntk", q: float = 1.0) -> DotProductKernel:
    """The NNGP or NTK of a dense network on inputs with ``|x|^2/d = q``, as a function of the cosine t.

    Hyperparameters are made exact where they are simple numbers (:func:`rationalize`), so the closed form
    admits exact integration and series expansion.

    Raises:
        KernelalgError: ``which`` unknown, several output branches, or a kernel that is not a dot-product
            kernel (depends on the input dimension or is not built from dense inputs).
    """
    if which not in WHICH:
        raise E.KernelalgError(BAD_WHICH.format(which=which))
    what = repr(net)
    sym = symbolic(net, keep_symbols=True)
    expr = getattr(sym, which)
    if isinstance(expr, tuple):
        raise E.KernelalgError(MULTI_OUTPUT.format(what=what, n=len(expr)))
    expr = expr.subs({s: rationalize(v) for s, v in sym.params.items()})
    extra = expr.free_symbols - {Q1, Q2, C}
    if extra:
        raise E.KernelalgError(NOT_DOT_PRODUCT.format(what=what, extra=", ".join(sorted(map(str, extra)))))
    qq = rationalize(q)
    expr = expr.subs({Q1: qq, Q2: qq, C: qq * T})
    fn, mp_fn = _lambdify(expr)
    return DotProductKernel(expr, f"{which.upper()} of {what}", fn, mp_fn)


def as_kernel(obj: Any, which: str = "ntk", q: float = 1.0) -> DotProductKernel:
    """Accept a network, a :class:`DotProductKernel`, a sympy expression in one symbol, or a callable k(t)."""
    if isinstance(obj, DotProductKernel):
        return obj
    if isinstance(obj, Layer):
        return from_network(obj, which, q)
    if isinstance(obj, sp.Basic):
        return from_expression(obj)
    if callable(obj):
        def vec(t: np.ndarray, _f: Callable = obj) -> np.ndarray:
            return np.broadcast_to(np.asarray(_f(t), dtype=np.float64), np.shape(t))
        return DotProductKernel(None, getattr(obj, "__name__", "k(t)"), vec, None)
    raise E.KernelalgError(BAD_KERNEL.format(obj=obj))


# ------------------------------------------------------------------------------------------ harmonics


def multiplicity(dim: int, k: int) -> int:
    """N(d, k): the dimension of the degree-k spherical harmonics on S^{d-1}."""
    if k == 0:
        return 1
    if dim == 2:
        return 2
    return (2 * k + dim - 2) * math.comb(k + dim - 3, dim - 2) // k


def sphere_constant(dim: int) -> float:
    """c_d = Gamma(d/2) / (sqrt(pi) Gamma((d-1)/2)): the density of t = <x, e> for x uniform on S^{d-1}."""
    return math.exp(math.lgamma(dim / 2) - math.lgamma((dim - 1) / 2)) / math.sqrt(math.pi)


def gegenbauer_table(kmax: int, dim: int, t: Any) -> Any:
    """P_0..P_kmax (d; t), the Gegenbauer polynomials C^{(d-2)/2}_k normalised to P_k(1) = 1.

    Works elementwise on float arrays and on object arrays of mpmath numbers (three-term recurrence
    P_{k+1} = [(2k + d - 2) t P_k - k P_{k-1}] / (k + d - 2)).

    Returns:
        A list of kmax + 1 arrays shaped like t.
    """
    out = [t * 0 + 1, t]
    for k in range(1, kmax):
        out.append(((2 * k + dim - 2) * t * out[k] - k * out[k - 1]) / (k + dim - 2))
    return out[:kmax + 1]


def gegenbauer_sympy(k: int, dim: int, x: sp.Expr) -> sp.Expr:
    """P_k(d; x) as an exact sympy polynomial (normalised to 1 at x = 1)."""
    if dim == 2:
        return sp.chebyshevt(k, x)
    lam = sp.Rational(dim - 2, 2)
    return sp.expand(sp.gegenbauer(k, lam, x) / sp.gegenbauer(k, lam, 1))


def sphere_points(n: int, dim: int, seed: int = 0, radius: float | None = None) -> np.ndarray:
    """n points uniform on the sphere of radius ``radius`` in R^dim (default sqrt(dim): |x|^2/d = 1)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((int(n), int(dim)))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x * (math.sqrt(dim) if radius is None else float(radius))


def _angle_form(expr: sp.Expr, th: sp.Symbol) -> sp.Expr:
    """Rewrite k(cos th) using acos(cos th) = th and sqrt(1 - cos^2 th) = sin th (th in [0, pi])."""
    e = expr.subs(T, sp.cos(th))

    def fix_acos(arg: sp.Expr) -> sp.Expr:
        if sp.expand(arg - sp.cos(th)) == 0:
            return th
        return sp.pi - th if sp.expand(arg + sp.cos(th)) == 0 else sp.acos(arg)

    def fix_asin(arg: sp.Expr) -> sp.Expr:
        return sp.pi / 2 - fix_acos(arg)

    def is_sin_sq(base: sp.Expr) -> bool:
        c = sp.Dummy("c")
        return sp.expand(base.subs(sp.cos(th), c) - (1 - c ** 2)) == 0
    e = e.replace(sp.acos, fix_acos).replace(sp.asin, fix_asin)
    e = e.replace(lambda a: a.is_Pow and a.exp == sp.Rational(1, 2) and is_sin_sq(a.base), lambda a: sp.sin(th))
    return e
