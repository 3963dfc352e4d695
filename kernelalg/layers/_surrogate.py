"""Surrogate-gradient NTK (SG-NTK) of sign and step networks.

Surrogate gradient learning keeps the forward activation phi (sign, step, or its smooth version at finite
sharpness ``m``) but backpropagates through a surrogate derivative psi'. The function still moves with the
true Jacobian J, so gradient descent with surrogate gradients follows the asymmetric kernel

    Theta_hat(x, x') = J(x) J_tilde(x')^T,   df(x)/dt = -eta Theta_hat(x, X) (f(X) - Y),

where J_tilde is the Jacobian computed with psi' in place of phi'. Through a Dense layer
``Theta_hat <- K + W^2 E[phi'(u) psi'(v)] Theta_hat`` with (u, v) the pre-activations at (x, x').

**Argument order.** ``ka.kernel(net, x1, x2).ntk[i, j] = J(x1[i]) J_tilde(x2[j])^T``: the FIRST argument
carries the true Jacobian, the SECOND the surrogate one. The kernel is never symmetrised (tiling with
``x2=None`` computes every block). The kernel-regression predictor of surrogate-gradient training at a
test point x is ``Theta_hat(x, X) Theta_hat(X, X)^{-1} Y``, i.e. ``ka.kernel(net, x_test, X_train)``.

Closed forms (derived and proven in ``proofs/prove_surrogate.py``), jump J = 2 (sign) or 1 (step),
surrogate psi'(x) = J a g(a x) with g of unit area (erf: exp(-x^2)/sqrt(pi), triangle: max(0, 1 - |x|),
rectangle: 1[|x| < 1/2]), G(v) = E_{z ~ N(0, v)}[a g(a z)], det = s11 s22 - s12^2:

* finite m (phi = erf(m x) for sign, (1 + erf(m x))/2 for step):
  E[phi'(u) psi'(v)] = J^2 m / sqrt(pi (1 + 2 m^2 s11)) G((s22 + 2 m^2 det) / (1 + 2 m^2 s11));
  erf surrogate: J^2 (m a / pi) / sqrt(1 + 2 m^2 s11 + 2 a^2 s22 + 4 m^2 a^2 det).
* m -> infinity (phi' = J delta): E[phi'(u) psi'(v)] = J^2 G(s22 (1 - rho^2)) / sqrt(2 pi s11);
  erf surrogate, sign: (4 a / (pi sqrt 2)) / sqrt(s11 + 2 a^2 det)  (0.569410 at (1, .5, 1), a = 1).
* The naive NTK (psi' = phi', ``surrogate="true"``) grows linearly in m on the diagonal: the NTK of sign
  networks is ill-posed, the SG-NTK is not.

References:
    Eilers, Memmesheimer, Goedeke (2024), A generalized neural tangent kernel for surrogate gradient
    learning, NeurIPS.
    Zenke & Ganguli (2018), SuperSpike (surrogate derivatives); Bellec et al. (2018) (piecewise linear);
    Wu et al. (2018) (rectangular).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import jax.scipy.special as jss
import mpmath
import numpy as np
import scipy.special as ssp
import sympy as sp

from kernelalg.core import _duals
from kernelalg.core import _errors as E
from kernelalg.core._duals import Dual, corr, plain
from kernelalg.core._layer import Layer, as_layer, check_number, require_gaussian
from kernelalg.core._program import Builder, KernelState

Expr = sp.Expr

#: Surrogate derivative shapes; "true" means the true derivative of the forward (the naive NTK).
SURROGATES = ("erf", "triangle", "rectangle", "true")
_JUMP = {"sign": 2, "step": 1}
_NAMES = {"sign": "SurrogateSign", "step": "SurrogateStep"}

BAD_SURROGATE = ("{layer}: surrogate must be one of {choices}, got {got!r}. "
                 "Fix: e.g. {layer}(surrogate='erf', a=1.0).")
BAD_POSITIVE = "{layer}: {name} must be a finite number > 0, got {value!r}. Fix: e.g. {name}=1.0."
TRUE_NEEDS_M = ("{layer}(m=None, surrogate='true'): the true derivative of sign/step is 2 delta(x), whose "
                "NTK diverges (the ill-posedness the SG-NTK resolves). Fix: give a finite sharpness, e.g. "
                "m=10.0 (forward erf(m x)), or use a surrogate, e.g. surrogate='erf'.")


# ------------------------------------------------------------------------------------- closed forms


def _det(s11: Expr, s12: Expr, s22: Expr) -> Expr:
    """s11 s22 - s12^2 >= 0, exactly 0 for parallel inputs (through the snapped correlation node)."""
    return s11 * s22 * (1 - corr(s11, s12, s22) ** 2)


def gauss_average(surrogate: str, var: Expr, a: Expr) -> Expr:
    """G(var) = E_{z ~ N(0, var)}[a g(a z)] for the unit-area surrogate shape g (G(0) = a g(0))."""
    if surrogate == "erf":
        return a / sp.sqrt(sp.pi) / sp.sqrt(1 + 2 * a**2 * var)
    t = a * sp.sqrt(var)  # standard deviation of a z
    if surrogate == "rectangle":
        return a * sp.erf(1 / (2 * sp.sqrt(2) * t))
    if surrogate == "triangle":
        return a * (sp.erf(1 / (sp.sqrt(2) * t)) - t * sp.sqrt(2 / sp.pi) * (1 - sp.exp(-1 / (2 * t**2))))
    raise ValueError(surrogate)


# X = 1/(sqrt(2) a sqrt(var)) beyond which erf(X) = 1 and exp(-X^2) = 0 in every float format.
_X_CUT = 30.0


def _lower_average(xp: Any, erf: Callable, shape: str) -> Callable:
    """G(var, a) on arrays (jnp or np): exact G(0) = a, no 0 * inf in values or gradients near var = 0."""
    def g(var: Any, a: Any) -> Any:
        pos = var > 0
        t = a * xp.sqrt(xp.where(pos, var, 1.0))
        x = 1 / (math.sqrt(2) * t)
        if shape == "rectangle":
            far = x > 2 * _X_CUT
            val = a * xp.where(far, 1.0, erf(xp.where(far, 1.0, x) / 2))
        else:
            far = x > _X_CUT
            xs = xp.where(far, 1.0, x)
            tail = xp.where(far, 1.0, erf(xs) + t * math.sqrt(2 / math.pi) * xp.exp(-xs * xs))
            val = a * (tail - t * math.sqrt(2 / math.pi))
        return xp.where(pos, val, a)
    return g


def _mp_average(shape: str) -> Callable:
    def g(var: Any, a: Any) -> Any:
        if var <= 0:
            return a
        t = a * mpmath.sqrt(var)
        if shape == "rectangle":
            return a * mpmath.erf(1 / (2 * mpmath.sqrt(2) * t))
        tail = t * mpmath.sqrt(2 / mpmath.pi) * (1 - mpmath.exp(-1 / (2 * t * t)))
        return a * (mpmath.erf(1 / (mpmath.sqrt(2) * t)) - tail)
    return g


class _GaussAverage(sp.Function):
    """G(var, a) as an opaque node: its closed form :func:`gauss_average` has a removable 1/sqrt(var) at
    var = 0 (parallel inputs at m = infinity), so the backends evaluate it with G(0) = a g(0) and finite
    gradients. ``explicit()`` (and LaTeX, differentiation, evalf) use the closed form."""

    nargs = 2
    shape = ""

    def explicit(self) -> Expr:
        return gauss_average(self.shape, *self.args)

    def fdiff(self, argindex: int = 1) -> Expr:
        return sp.diff(self.explicit(), self.args[argindex - 1])

    def _eval_evalf(self, prec: int) -> Expr:
        return self.explicit()._eval_evalf(prec)

    def _latex(self, printer: Any) -> str:
        return printer._print(self.explicit())


class TriangleAverage(_GaussAverage):
    """E_{z ~ N(0, var)}[a max(0, 1 - |a z|)]."""

    shape = "triangle"
    lowering = {"jax": _lower_average(jnp, jss.erf, "triangle"), "numpy": _lower_average(np, ssp.erf, "triangle"),
                "mpmath": _mp_average("triangle")}


class RectangleAverage(_GaussAverage):
    """E_{z ~ N(0, var)}[a 1[|a z| < 1/2]]."""

    shape = "rectangle"
    lowering = {"jax": _lower_average(jnp, jss.erf, "rectangle"), "numpy": _lower_average(np, ssp.erf, "rectangle"),
                "mpmath": _mp_average("rectangle")}


_AVERAGES: dict[str, Callable[[Expr, Expr], Expr]] = {
    "erf": lambda var, a: gauss_average("erf", var, a), "triangle": TriangleAverage, "rectangle": RectangleAverage}


def explicit(expr: Expr) -> Expr:
    """``expr`` with every opaque Gaussian-average and correlation node written out (for proofs, limits)."""
    return plain(expr.replace(lambda e: isinstance(e, _GaussAverage), lambda e: e.explicit()))


def sign_forward(s11: Expr, s12: Expr, s22: Expr, m: Expr | None) -> tuple[Expr, Expr]:
    """(T, Tdiag(s11)) of sign (m None) or erf(m x) (Williams 1997)."""
    if m is None:
        d = _duals.sign(s11, s12, s22)
    else:
        d = _duals.erf(s11, s12, s22, sp.Integer(1), m, sp.Integer(0))
    return d.T, d.Tdiag


def sign_mixed_tdot(s11: Expr, s12: Expr, s22: Expr, m: Expr | None, a: Expr | None, surrogate: str) -> Expr:
    """E[phi'(u) psi'(v)] for phi = sign (m None) or erf(m x) and psi' = 2 a g(a x); u belongs to x, v to x'.

    ``surrogate="true"`` gives the naive E[phi'(u) phi'(v)] (finite m only).
    """
    det = _det(s11, s12, s22)
    if surrogate == "true":  # m None: the derivative 0 almost everywhere of a finite-width sign twin
        return sp.Integer(0) if m is None else _duals.erf(s11, s12, s22, sp.Integer(1), m, sp.Integer(0)).Tdot
    if surrogate == "erf":
        if m is None:
            return 4 * a / (sp.pi * sp.sqrt(2)) / sp.sqrt(s11 + 2 * a**2 * det)
        return 4 * m * a / sp.pi / sp.sqrt(1 + 2 * m**2 * s11 + 2 * a**2 * s22 + 4 * m**2 * a**2 * det)
    if m is None:  # var is exactly 0 for parallel inputs, where G(0) = a g(0) (see _GaussAverage)
        pref, var = 2 / sp.sqrt(2 * sp.pi * s11), s22 * (1 - corr(s11, s12, s22) ** 2)
    else:
        p1 = 1 + 2 * m**2 * s11
        pref, var = 2 * m / sp.sqrt(sp.pi * p1), (s22 + 2 * m**2 * det) / p1
    return pref * 2 * _AVERAGES[surrogate](var, a)


def _tdiag(kind: str, s: Expr, m: Expr | None) -> Expr:
    tdiag = sign_forward(s, s, s, m)[1]
    return tdiag if kind == "sign" else (1 + tdiag) / 4


def surrogate_dual(kind: str, s11: Expr, s12: Expr, s22: Expr, m: Expr | None = None, a: Expr | None = None,
                   surrogate: str = "erf") -> Dual:
    """The SG dual of sign/step: T = E[phi(u) phi(v)], Tdot = E[phi'(u) psi'(v)] (NOT symmetric), Tdiag.

    Args:
        kind: "sign" (phi = sign or erf(m x)) or "step" (phi = (1 + sign)/2 or (1 + erf(m x))/2).
        s11, s12, s22: Covariance of (u, v); u is the pre-activation at the true-Jacobian input x.
        m: Forward sharpness, None for the exact sign/step (the m -> infinity limit).
        a: Surrogate scale (larger: sharper surrogate); unused for ``surrogate="true"``.
        surrogate: One of :data:`SURROGATES`.
    """
    t, tdiag = sign_forward(s11, s12, s22, m)
    tdot = sign_mixed_tdot(s11, s12, s22, m, a, surrogate)
    if kind == "step":  # step = (1 + sign)/2, E[sign] = 0: T = (1 + T_sign)/4, both derivatives halved
        return Dual((1 + t) / 4, tdot / 4, (1 + tdiag) / 4)
    return Dual(t, tdot, tdiag)


# ----------------------------------------------------------------------------------------- the layer


def _kernel(kind: str):
    name = _NAMES[kind]

    def kernel(b: Builder, st: KernelState, p: Mapping[str, Expr], static: Mapping[str, Any]) -> KernelState:
        require_gaussian(st, name)
        sur = static["surrogate"]
        m, a = p.get("m"), p.get("a")
        d = surrogate_dual(kind, st.cov1, st.nngp, st.cov2, m, a, sur)
        var2 = d.Tdiag if st.cov2 == st.cov1 else _tdiag(kind, st.cov2, m)
        return KernelState(d.Tdiag, var2, d.T, d.Tdot * st.ntk, gaussian=False, width=st.width, after=name,
                     layout=st.layout)
    return kernel


def forward_fn(kind: str, m: float | None) -> Callable[[jax.Array], jax.Array]:
    """The forward activation as a jnp function (autodiff gives its true derivative)."""
    if m is None:
        base = jnp.sign
    else:
        def base(x: jax.Array) -> jax.Array:
            return jss.erf(m * x)
    if kind == "sign":
        return base
    return lambda x: (1 + base(x)) / 2


def surrogate_derivative(kind: str, surrogate: str, a: float) -> Callable[[jax.Array], jax.Array]:
    """psi'(x) = J a g(a x) as a jnp function (J = 2 for sign, 1 for step)."""
    jump = float(_JUMP[kind])
    if surrogate == "erf":
        return lambda x: jump * a / math.sqrt(math.pi) * jnp.exp(-((a * x) ** 2))
    if surrogate == "triangle":
        return lambda x: jump * a * jnp.maximum(0.0, 1.0 - jnp.abs(a * x))
    if surrogate == "rectangle":
        return lambda x: jump * a * (jnp.abs(a * x) < 0.5).astype(jnp.result_type(x, float))
    raise ValueError(surrogate)


def surrogate_activation(kind: str, m: float | None, surrogate: str, a: float | None) -> Callable:
    """phi with a custom JVP: forward phi, derivative psi' (surrogate="true": plain phi)."""
    fwd = forward_fn(kind, m)
    if surrogate == "true":
        return fwd
    dpsi = surrogate_derivative(kind, surrogate, float(a))

    @jax.custom_jvp
    def phi(x: jax.Array) -> jax.Array:
        return fwd(x)

    @phi.defjvp
    def _phi_jvp(primals: tuple, tangents: tuple) -> tuple:
        (x,), (t,) = primals, tangents
        return phi(x), dpsi(x) * t

    return phi


def _finite(kind: str):
    def finite(p: Mapping[str, float], static: Mapping[str, Any], in_shape: tuple, width: int):
        f = surrogate_activation(kind, p.get("m"), static["surrogate"], p.get("a"))
        return (lambda key: {}), (lambda params, x: f(x)), in_shape
    return finite


def _positive(layer: str, name: str, value: Any) -> float:
    v = check_number(layer, name, value)
    if v <= 0:
        raise E.KernelalgError(BAD_POSITIVE.format(layer=layer, name=name, value=value))
    return v


def _make(kind: str, m: float | None, surrogate: str, a: float, exact_true: bool = False) -> Layer:
    name = _NAMES[kind]
    if surrogate not in SURROGATES:
        raise E.KernelalgError(BAD_SURROGATE.format(layer=name, choices=SURROGATES, got=surrogate))
    if m is None and surrogate == "true" and not exact_true:
        raise E.KernelalgError(TRUE_NEEDS_M.format(layer=name))
    params: tuple[tuple[str, float], ...] = ()
    if m is not None:
        params += (("m", _positive(name, "m", m)),)
    if surrogate != "true":
        params += (("a", _positive(name, "a", a)),)
    # Theta_hat[i, j] = J(x1_i) J_tilde(x2_j)^T is asymmetric unless the surrogate is the true derivative.
    return Layer(name, _kernel(kind), params, (("surrogate", surrogate),), _finite(kind),
                 positive=frozenset({"m", "a"}), role="activation", asymmetric=surrogate != "true")


def SurrogateSign(m: float | None = None, surrogate: str = "erf", a: float = 1.0) -> Layer:
    """sign(x) forward (erf(m x) at finite sharpness m), surrogate derivative backward.

    The kernel's NTK is the SG-NTK ``ntk[i, j] = J(x1[i]) J_tilde(x2[j])^T`` (true Jacobian on the first
    argument, surrogate on the second; not symmetric). The finite-width twin's apply uses a custom JVP, so
    autodiff through it gives J_tilde; :func:`true_gradient` gives the twin with the true derivative.

    Args:
        m: Forward sharpness (phi = erf(m x)); None for the exact sign (the m -> infinity limit).
        surrogate: "erf" (psi' = d/dx erf(a x)), "triangle" (2 a max(0, 1 - |a x|)), "rectangle"
            (2 a 1[|a x| < 1/2]), or "true" (psi' = phi': the naive NTK, needs a finite m).
        a: Surrogate scale (> 0); every surrogate has area 2, the jump of sign.

    Returns:
        The layer (hyperparameter symbols ``m_i`` and ``a_i``).
    """
    return _make("sign", m, surrogate, a)


def SurrogateStep(m: float | None = None, surrogate: str = "erf", a: float = 1.0) -> Layer:
    """Heaviside step forward ((1 + erf(m x))/2 at finite m), surrogate derivative of area 1 backward.

    As :func:`SurrogateSign` with phi = (1 + sign)/2: T = (1 + T_sign)/4 = (pi - theta)/(2 pi) at m = None,
    Tdot = Tdot_sign / 4. Surrogates: "erf" (a exp(-a^2 x^2)/sqrt(pi)), "triangle", "rectangle", "true".
    """
    return _make("step", m, surrogate, a)


def _is_surrogate(layer: Layer) -> bool:
    return layer.name in _NAMES.values() and not layer.children


def true_gradient(net: Layer, _exact: bool = False) -> Layer:
    """The same network with every surrogate layer's backward replaced by its true derivative.

    Its kernel is the naive NTK J J^T and its finite-width twin backpropagates the true derivative; the
    forward (and the NNGP) is unchanged. Needs finite ``m`` in every surrogate layer (the exact sign's
    derivative, 0 almost everywhere, is used only inside :func:`surrogate_twins`).
    """
    net = as_layer(net)
    if _is_surrogate(net):
        kind = "sign" if net.name == _NAMES["sign"] else "step"
        return _make(kind, net.hyperparameters.get("m"), "true", 1.0, exact_true=_exact)
    if net.children:
        return dataclasses.replace(net, children=tuple(true_gradient(c, _exact) for c in net.children))
    return net


def exact_jumps(net: Layer) -> bool:
    """True when ``net`` has a surrogate layer at m = None (exact sign/step): its finite-width twins have a true
    derivative 0 almost everywhere there, so Monte Carlo cannot estimate its NTK (see :func:`with_sharpness`)."""
    return any(_is_surrogate(leaf) and leaf.hyperparameters.get("m") is None for leaf in as_layer(net).leaves())


def with_sharpness(net: Layer, m: float) -> Layer:
    """The same network with every exact sign/step (m = None) replaced by its smooth version at sharpness ``m``
    (forward erf(m x)); surrogate shape and scale kept. The m = None kernel is the m -> infinity limit of these.
    """
    net = as_layer(net)
    if _is_surrogate(net) and net.hyperparameters.get("m") is None:
        kind = "sign" if net.name == _NAMES["sign"] else "step"
        return _make(kind, m, dict(net.static)["surrogate"], net.hyperparameters.get("a", 1.0))
    if net.children:
        return dataclasses.replace(net, children=tuple(with_sharpness(c, m) for c in net.children))
    return net
