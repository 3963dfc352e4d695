"""Activation layers: each is its forward function phi (sympy) and its closed-form dual.

The kernel maps act per input pair: for (u, v) ~ N(0, [[q1, c], [c, q2]]),
``q1 <- T(q1, q1, q1)``, ``c <- T(q1, c, q2)``, ``Theta <- Tdot(q1, c, q2) Theta``.
Names, keywords and defaults follow neural-tangents' stax.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import sympy as sp

from kernelalg.core import _duals
from kernelalg.core import _errors as E
from kernelalg.core._layer import Layer, check_number, require_gaussian
from kernelalg.core._program import Assign, Builder, KernelState
from kernelalg.backends import lower_elementwise  # local import: backends import this package's types
from kernelalg.backends._structural import Arrays, structural
from kernelalg.layers._compose import composable, compose
from kernelalg.layers._generic import MAX_DEGREE, X


PhiFn = Callable[..., sp.Expr]


def _activation_kernel(name: str, dual: Callable[..., _duals.Dual], static_args: Sequence[str],
                       phi: PhiFn | None = None):
    """The kernel map of an activation; with ``phi`` declared, it also composes with an activation before it
    (:mod:`kernelalg.layers._compose`) and lets the next one compose with it."""
    def kernel(b: Builder, st: KernelState, p: Mapping[str, sp.Expr], static: Mapping[str, Any]) -> KernelState:
        kw = dict(p, **{k: static[k] for k in static_args})
        f = None if phi is None else sp.sympify(phi(X, **kw))
        if st.composable is not None and f is not None:
            return keep_shapes(b, st, compose(b, st, f, name))
        require_gaussian(st, name)
        d1 = dual(st.cov1, st.nngp, st.cov2, **kw)
        var2 = d1.Tdiag if st.cov2 == st.cov1 else dual(st.cov2, st.nngp, st.cov1, **kw).Tdiag
        b.require(d1.requires)
        return keep_shapes(b, st, KernelState(d1.Tdiag, var2, d1.T, d1.Tdot * st.ntk, gaussian=False,
                                              width=st.width, after=name, layout=st.layout,
                                              composable=composable(st, f, name)))
    return kernel


def _broadcast_like(ops: Arrays, value: Any, like: Any) -> tuple:
    return (ops.xp.broadcast_to(value, ops.xp.shape(like)).astype(like.dtype),)


def keep_shapes(b: Builder, st: KernelState, out: KernelState) -> KernelState:
    """``out`` with every entry that no longer depends on the input (a constant activation, e.g. Monomial(0):
    phi(x) = 1) broadcast to the shape of the input entry it replaces, on pixel and time grids (their ops
    read shapes; dense kernels are broadcast at the end)."""
    if out.layout == "dense":
        return out
    inputs = set().union(*(e.free_symbols for e in st.exprs))
    exprs = list(out.exprs)
    for i, (new, old) in enumerate(zip(out.exprs, st.exprs)):
        # numbers stay numbers where the ops take them (variances, an NTK of 0); a constant grid does not
        if old.is_Symbol and (i == 2 or not new.is_Number) and not (new.free_symbols & inputs):
            value = b.fresh("const", real=True)
            b.program.append(Assign(value, new))
            b.defined.add(value)
            exprs[i] = b.emit("BroadcastLike", structural(_broadcast_like), [value, old], 1, stem="c")[0]
    return out.replace(cov1=exprs[0], cov2=exprs[1], nngp=exprs[2], ntk=exprs[3])


def _activation_finite(phi: PhiFn, static_args: Sequence[str]):
    def finite(p: Mapping[str, float], static: Mapping[str, Any], in_shape: tuple, width: int):
        kw = dict({k: sp.Float(v, 17) for k, v in p.items()}, **{k: static[k] for k in static_args})
        f = lower_elementwise(phi(X, **kw), X)
        return (lambda key: {}), (lambda params, x: f(x)), in_shape
    return finite


def activation(name: str, dual: Callable[..., _duals.Dual], phi: PhiFn,
               params: Sequence[tuple[str, float]] = (), static: Sequence[tuple[str, Any]] = (),
               static_args: Sequence[str] = (), kernel_phi: PhiFn | None = None) -> Layer:
    """Build an activation layer from its dual and its forward function.

    Args:
        name: Layer name.
        dual: ``dual(s11, s12, s22, **hyperparameters) -> Dual`` (see :mod:`kernelalg.core._duals`).
        phi: ``phi(x, **hyperparameters) -> sympy expression`` (used by the finite-width twin).
        params: Hyperparameters that become symbols.
        static: Structural settings.
        static_args: Names in ``static`` that are passed to ``dual`` and ``phi``.
        kernel_phi: The function whose dual ``dual`` is, where it differs from ``phi`` (Gelu's tanh
            approximation): what a following activation composes with. Default ``phi``.
    """
    params = tuple((k, check_number(name, k, v)) for k, v in params)
    return Layer(name, _activation_kernel(name, dual, tuple(static_args), kernel_phi or phi), params, tuple(static),
                 role="activation", finite=_activation_finite(phi, tuple(static_args)))


def Relu() -> Layer:
    """ReLU, max(x, 0)."""
    return activation("Relu", _duals.relu, lambda x: sp.Max(x, 0))


def ABRelu(a: float, b: float) -> Layer:
    """a min(x, 0) + b max(x, 0)."""
    return activation("ABRelu", _duals.abrelu, lambda x, a, b: a * sp.Min(x, 0) + b * sp.Max(x, 0),
                      params=(("a", a), ("b", b)))


def LeakyRelu(alpha: float) -> Layer:
    """max(x, 0) + alpha min(x, 0)."""
    return activation("LeakyRelu", lambda s11, s12, s22, alpha: _duals.abrelu(s11, s12, s22, alpha, 1),
                      lambda x, alpha: sp.Max(x, 0) + alpha * sp.Min(x, 0), params=(("alpha", alpha),))


def Abs() -> Layer:
    """|x|."""
    return activation("Abs", lambda s11, s12, s22: _duals.abrelu(s11, s12, s22, -1, 1), lambda x: sp.Abs(x))


def Erf(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
    """a erf(b x) + c."""
    return activation("Erf", _duals.erf, lambda x, a, b, c: a * sp.erf(b * x) + c,
                      params=(("a", a), ("b", b), ("c", c)))


def _gelu_phi(x: sp.Expr, approximate: bool) -> sp.Expr:
    if approximate:
        return x / 2 * (1 + sp.tanh(sp.sqrt(2 / sp.pi) * (x + sp.Float("0.044715") * x**3)))
    return x / 2 * (1 + sp.erf(x / sp.sqrt(2)))


def Gelu(approximate: bool = False) -> Layer:
    """GELU x Phi(x). The kernel is always that of the exact GELU; ``approximate=True`` uses the tanh
    approximation in the finite-width twin only (as neural-tangents)."""
    return activation("Gelu", lambda s11, s12, s22, approximate: _duals.gelu(s11, s12, s22), _gelu_phi,
                      static=(("approximate", bool(approximate)),), static_args=("approximate",),
                      kernel_phi=lambda x, approximate: _gelu_phi(x, False))


def Sin(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
    """a sin(b x + c)."""
    return activation("Sin", _duals.sin, lambda x, a, b, c: a * sp.sin(b * x + c),
                      params=(("a", a), ("b", b), ("c", c)))


def Cos(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
    """a cos(b x + c)."""
    return activation("Cos", _duals.cos, lambda x, a, b, c: a * sp.cos(b * x + c),
                      params=(("a", a), ("b", b), ("c", c)))


def Sign() -> Layer:
    """sign(x). Its derivative is 0 almost everywhere, so its NTK factor is 0 (see SG-NTK)."""
    return activation("Sign", _duals.sign, lambda x: sp.sign(x))



BAD_DEGREE = ("{name}: degree must be an integer in 0..{limit}, got {degree!r}. Fix: e.g. {name}(degree=2) "
              "(higher powers have astronomically large kernels and huge closed forms).")
TOO_MANY_COEFFICIENTS = ("Polynomial: {n} coefficients (degree {deg}; limit {limit} coefficients, degree {maxdeg}). "
                         "Fix: use a polynomial of degree at most {maxdeg}, e.g. Polynomial([0., 1., 0.5]).")


def _check_degree(name: str, degree: Any) -> int:
    try:
        ok = not isinstance(degree, (bool, str)) and int(degree) == degree and 0 <= int(degree) <= MAX_DEGREE
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise E.KernelalgError(BAD_DEGREE.format(name=name, degree=degree, limit=MAX_DEGREE))
    return int(degree)


def Monomial(degree: int) -> Layer:
    """x^degree (degree 0..MAX_DEGREE = 16)."""
    return activation("Monomial", _duals.monomial, lambda x, degree: x**degree,
                      static=(("degree", _check_degree("Monomial", degree)),), static_args=("degree",))


def Hermite(degree: int) -> Layer:
    """He_n(x) / sqrt(n!), the normalised probabilists' Hermite polynomial (degree 0..MAX_DEGREE = 16).

    neural-tangents' ``stax.Hermite``. Its kernel there (c^n) assumes unit-variance pre-activations; here the
    dual is exact for any variances (the polynomial dual), and equals c^n where the variances are 1.
    """
    return activation("Hermite", _duals.hermite,
                      lambda x, degree: sum((c * x**i for i, c in enumerate(_duals.hermite_coefficients(degree))),
                                            sp.Integer(0)),
                      static=(("degree", _check_degree("Hermite", degree)),), static_args=("degree",))


def Gabor() -> Layer:
    """exp(-x^2) sin(x), neural-tangents' ``stax.Gabor`` (closed-form dual, finite at every correlation)."""
    return activation("Gabor", _duals.gabor, lambda x: sp.exp(-x**2) * sp.sin(x))


def Sigmoid_like() -> Layer:  # noqa: N802 (neural-tangents' name)
    """0.5 erf(x / 2.4020563531719796) + 0.5, neural-tangents' ``stax.Sigmoid_like``: the erf closest to the
    logistic sigmoid in squared error on [-5, 5] (an ``Erf`` layer with those a, b, c)."""
    return Erf(a=0.5, b=1 / 2.4020563531719796, c=0.5)


def RectifiedMonomial(degree: int) -> Layer:
    """max(x, 0)^degree (arc-cosine kernel of that degree; degree 0..MAX_DEGREE = 16)."""
    return activation("RectifiedMonomial", _duals.rectified_monomial,
                      lambda x, degree: sp.Heaviside(x, 1) if degree == 0 else sp.Max(x, 0) ** degree,
                      static=(("degree", _check_degree("RectifiedMonomial", degree)),),
                      static_args=("degree",))


def Polynomial(coef: Sequence[float]) -> Layer:
    """sum_i coef[i] x^i (at most MAX_DEGREE + 1 = 17 coefficients)."""
    try:
        coef = tuple(coef)
    except TypeError:
        raise E.KernelalgError(f"Polynomial: coef must be a sequence of numbers, got {coef!r}. "
                               "Fix: e.g. Polynomial([0., 1., 0.5]).") from None
    if not coef:
        raise E.KernelalgError("Polynomial: coef is empty. Fix: e.g. Polynomial([0., 1., 0.5]).")
    if len(coef) > MAX_DEGREE + 1:
        raise E.KernelalgError(TOO_MANY_COEFFICIENTS.format(n=len(coef), deg=len(coef) - 1, limit=MAX_DEGREE + 1,
                                                            maxdeg=MAX_DEGREE))
    names = tuple(f"c{i}" for i in range(len(coef)))

    def dual(s11: sp.Expr, s12: sp.Expr, s22: sp.Expr, **kw: sp.Expr) -> _duals.Dual:
        return _duals.polynomial(s11, s12, s22, tuple(kw[n] for n in names))

    def phi(x: sp.Expr, **kw: sp.Expr) -> sp.Expr:
        return sum((kw[n] * x**i for i, n in enumerate(names)), sp.Integer(0))

    return activation("Polynomial", dual, phi, params=tuple(zip(names, coef)))


def Exp(a: float = 1.0, b: float = 1.0) -> Layer:
    """a exp(b x)."""
    return activation("Exp", _duals.exp, lambda x, a, b: a * sp.exp(b * x), params=(("a", a), ("b", b)))


def Gaussian(a: float = 1.0, b: float = -1.0) -> Layer:
    """a exp(b x^2)."""
    return activation("Gaussian", _duals.gaussian, lambda x, a, b: a * sp.exp(b * x**2),
                      params=(("a", a), ("b", b)))


def Rbf(gamma: float = 1.0) -> Layer:
    """sqrt(2) sin(sqrt(2 gamma) x + pi/4): its NNGP dual is exp(-gamma |u - v|^2) (neural-tangents' Rbf)."""
    if float(gamma) < 0:
        raise E.KernelalgError(f"Rbf: gamma must be >= 0, got {gamma!r}. Fix: e.g. Rbf(gamma=1.0).")
    return activation("Rbf", _duals.rbf,
                      lambda x, gamma: sp.sqrt(2) * sp.sin(sp.sqrt(2 * gamma) * x + sp.pi / 4),
                      params=(("gamma", gamma),))
