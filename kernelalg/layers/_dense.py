"""Affine and structural layers: Dense, Identity, FanOut, FanInSum, FanInConcat, FanInProd.

Conventions follow neural-tangents' stax (Novak et al., ICLR 2020). NTK parametrization:
``y = (W_std / sqrt(n)) W x + b_std b`` with W, b ~ N(0, 1) trainable; standard parametrization:
``y = W x + b`` with W ~ N(0, W_std^2 / n), b ~ N(0, b_std^2) trainable.

Kernel maps (Jacot et al. 2018; Lee et al. 2019), n the fan-in:
    ntk:      K <- W^2 K + b^2,   Theta <- K_new + W^2 Theta
    standard: K <- W^2 K + b^2,   Theta <- n K + [bias] + W^2 Theta

Fan-in of independent branches i with kernels (K_i, Theta_i) and widths n_i (neural-tangents' stax.branching):
    FanInSum:    K = sum K_i,                         Theta = sum Theta_i
    FanInConcat: K = sum n_i K_i / sum n_i,           Theta = sum n_i Theta_i / sum n_i   (channel axis)
    FanInProd:   K = prod K_i,                        Theta = sum_i Theta_i prod_{j != i} K_j
The product rule holds because independent branches give E[prod f_i(x) f_i(x')] = prod K_i and
d(f_1 f_2) = f_2 df_1 + f_1 df_2. Neither a concatenation (a mixture of channel covariances) nor a product
is Gaussian, so a nonlinearity may follow them only after an affine layer, as in neural-tangents.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import sympy as sp

from kernelalg.core import _errors as E
from kernelalg.core._layer import Layer, check_std
from kernelalg.layers._affine import Scales, affine_scales, affine_state, check_parameterization
from kernelalg.core._program import Builder, State, KernelState, flatten_states



def _dense_kernel(b: Builder, st: KernelState, p: Mapping[str, sp.Expr], static: Mapping[str, Any]) -> KernelState:
    def weight_grad() -> sp.Expr:
        if st.width is None:
            raise E.LayerOrderError(E.STANDARD_NEEDS_WIDTH)
        return st.width * st.nngp

    return affine_state(p, static["parameterization"], st.exprs, weight_grad, width=static["out_dim"],
                        after="Dense", layout=st.layout)


def affine_init(key: jax.Array, w_shape: tuple, scales: Scales, bias: bool) -> dict:
    """Parameters of an affine layer (Dense, Conv): W ~ N(0, w_init^2), b ~ N(0, b_init^2) (see
    :func:`kernelalg.layers._affine.affine_scales`: unit Gaussians in the NTK parametrization; std
    W_std/sqrt(fan_in) and b_std in the standard one); no bias when the layer has none."""
    kw, kb = jax.random.split(key)
    w = jax.random.normal(kw, w_shape)
    params = {"W": w if scales.w_init == 1.0 else w * scales.w_init}
    if bias:
        b = jax.random.normal(kb, (w_shape[-1],))
        params["b"] = b if scales.b_init == 1.0 else b * scales.b_init
    return params


def _dense_finite(p: Mapping[str, float], static: Mapping[str, Any], in_shape: tuple, width: int):
    fan_in = in_shape[-1]
    out = static["out_dim"] or width
    sc = affine_scales(static, p["W_std"], p.get("b_std"), fan_in, out)

    def init(key: jax.Array) -> dict:
        return affine_init(key, (fan_in, out), sc, "b_std" in p)

    def apply(params: dict, x: jax.Array) -> jax.Array:
        w = params["W"].astype(x.dtype)
        y = x @ w if sc.w_mult == 1.0 else sc.w_mult * (x @ w)
        if "b" in params:
            bias = params["b"].astype(x.dtype)
            y = y + (bias if sc.b_mult == 1.0 else sc.b_mult * bias)
        return y

    return init, apply, in_shape[:-1] + (out,)


def Dense(W_std: float = 1.0, b_std: float | None = None, parameterization: str = "ntk", *,
          out_dim: int | None = None) -> Layer:
    """Fully connected layer.

    Args:
        W_std: Weight standard deviation (>= 0).
        b_std: Bias standard deviation (>= 0), or None for no bias (as in neural-tangents).
        parameterization: "ntk" (default) or "standard".
        out_dim: Output width. It does not enter the infinite-width kernel in the NTK parametrization;
            it is used by the finite-width twin and, in the standard parametrization, as the fan-in of
            the next layer's NTK.

    Returns:
        The layer.
    """
    check_parameterization("Dense", parameterization)
    params: tuple[tuple[str, float], ...] = (("W_std", check_std("Dense", "W_std", W_std)),)
    if b_std is not None:
        params += (("b_std", check_std("Dense", "b_std", b_std)),)
    if out_dim is not None and (int(out_dim) != out_dim or out_dim < 1):
        raise E.KernelalgError(f"Dense: out_dim must be a positive integer, got {out_dim!r}. "
                               "Fix: e.g. out_dim=512, or leave it None.")
    static = (("parameterization", parameterization), ("out_dim", out_dim))
    return Layer("Dense", _dense_kernel, params, static, _dense_finite, positive=frozenset({"W_std", "b_std"}),
                 role="affine", width_arg="out_dim")


def _identity_kernel(b: Builder, st: KernelState, p: Mapping, static: Mapping) -> KernelState:
    return st


def _identity_finite(p: Mapping, static: Mapping, in_shape: tuple, width: int):
    return (lambda key: {}), (lambda params, x: x), in_shape


def Identity() -> Layer:
    """The identity layer (keeps the kernel, and Gaussianity, unchanged)."""
    return Layer("Identity", _identity_kernel, finite=_identity_finite)


def _fanout_kernel(b: Builder, st: KernelState, p: Mapping, static: Mapping) -> State:
    return (st,) * static["num"]


def _fanout_finite(p: Mapping, static: Mapping, in_shape: tuple, width: int):
    n = static["num"]
    return (lambda key: {}), (lambda params, x: (x,) * n), (in_shape,) * n


#: Most branches of ``FanOut`` (as many as an architecture may have layers).
MAX_BRANCHES = 10_000


def FanOut(num: int) -> Layer:
    """Copy the input into ``num`` branches (to be consumed by ``parallel``; 1..MAX_BRANCHES = 10,000)."""
    try:
        ok = not isinstance(num, (bool, str)) and int(num) == num and 1 <= int(num) <= MAX_BRANCHES
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise E.KernelalgError(f"FanOut: num must be an integer in 1..{MAX_BRANCHES}, got {num!r}. Fix: e.g. "
                               "FanOut(2).")
    return Layer("FanOut", _fanout_kernel, static=(("num", int(num)),), finite=_fanout_finite, role="branch")


def _fanin_combine(builder: Builder, state: State, children: tuple) -> State:
    states = flatten_states(state)
    if not isinstance(state, tuple):
        raise E.LayerOrderError(E.FANIN_NEEDS_BRANCHES)
    widths = {s.width for s in states if s.width is not None}
    if len(widths) > 1:
        raise E.LayerOrderError(f"FanInSum: branches have different widths {sorted(map(str, widths))}. "
                                "Fix: give the last Dense of every branch the same out_dim.")
    summed = KernelState(*(sp.Add(*vals) for vals in zip(*(s.exprs for s in states))),
                   gaussian=all(s.gaussian for s in states), width=next(iter(widths), None),
                   after="FanInSum", layout=states[0].layout)
    return builder.materialize(summed)


def _fanin_finite(p: Mapping, static: Mapping, in_shape: tuple, width: int):
    shapes = set(in_shape)
    if len(shapes) != 1:
        raise E.LayerOrderError(f"FanInSum: branch output shapes differ: {in_shape}. "
                                "Fix: make every branch end with the same width.")
    return (lambda key: {}), (lambda params, xs: sum(xs[1:], xs[0])), in_shape[0]


def FanInSum() -> Layer:
    """Sum the branches (independent in the infinite-width limit: kernels add, as in neural-tangents)."""
    return Layer("FanInSum", finite=_fanin_finite, combine=_fanin_combine, role="combinator")


def _branch_states(state: State, layer: str) -> tuple[KernelState, ...]:
    """The branch states a fan-in layer merges; one layout for all of them."""
    if not isinstance(state, tuple):
        raise E.LayerOrderError(f"{layer}() needs several branches (a tuple of kernels) as input, got a single "
                                f"one. Fix: use FanOut(n) >> parallel(b1, ..., bn) >> {layer}().")
    states = flatten_states(state)
    if any(s.layout != states[0].layout for s in states[1:]):
        raise E.LayerOrderError(f"{layer}: the branches have different input layouts (e.g. one was pooled or "
                                "flattened and another not). Fix: give every branch the same spatial structure.")
    return states


def _channel_axis(layout: Any) -> int | None:
    """Index of the channel axis of the activations (batch first), or None when the layout does not say."""
    if layout == "dense":
        return 1
    ndim = getattr(layout, "ndim", None)
    return None if ndim is None else ndim + 1


def _concat_weights(states: tuple[KernelState, ...]) -> tuple[tuple[sp.Expr, ...], Any]:
    """The weights n_i / sum n_i of the branch kernels, and the width of the concatenation."""
    widths = [s.width for s in states]
    if all(w is None for w in widths):  # every branch takes the twin's width: equal weights, width unknown
        return (sp.Rational(1, len(states)),) * len(states), None
    if len(set(map(str, widths))) == 1:
        return (sp.Rational(1, len(states)),) * len(states), len(states) * widths[0]
    if not all(isinstance(w, int) for w in widths):
        raise E.LayerOrderError(
            f"FanInConcat: the branch widths {[str(w) for w in widths]} are not all known integers, so the "
            "weights n_i / sum n_i of the branch kernels are unknown. Fix: end every branch with a "
            "Dense(out_dim=...) or Conv(out_chan=...), or give all branches the same width.")
    total = sum(widths)
    return tuple(sp.Rational(w, total) for w in widths), total


def _concat_combine(builder: Builder, state: State, children: tuple, axis: int) -> State:
    states = _branch_states(state, "FanInConcat")
    channel = _channel_axis(states[0].layout)
    if axis != -1 and axis != channel:
        where = "" if channel is None else f" (axis {channel} here)"
        raise E.LayerOrderError(
            f"FanInConcat(axis={axis}): only concatenation along the channel axis{where} is implemented; "
            "concatenating along the batch or spatial axes is not. Fix: use FanInConcat() (axis=-1).")
    weights, width = _concat_weights(states)
    merged = KernelState(*(sp.Add(*(w * v for w, v in zip(weights, vals))) for vals in zip(*(s.exprs for s in states))),
                         gaussian=False, width=width, after="FanInConcat", layout=states[0].layout)
    return builder.materialize(merged)


def _concat_finite(p: Mapping, static: Mapping, in_shape: tuple, width: int):
    rest = {s[:-1] for s in in_shape}
    if len(rest) != 1:
        raise E.LayerOrderError(f"FanInConcat: branch output shapes differ outside the channel axis: {in_shape}. "
                                "Fix: give every branch the same spatial shape.")
    out = in_shape[0][:-1] + (sum(s[-1] for s in in_shape),)
    return (lambda key: {}), (lambda params, xs: jnp.concatenate(xs, axis=-1)), out


def FanInConcat(axis: int = -1) -> Layer:
    """Concatenate the branches along the channel axis (neural-tangents' ``stax.FanInConcat``).

    The branches are independent in the infinite-width limit, so the kernel of the concatenation is the
    average of the branch kernels weighted by their widths n_i (the ``out_dim`` / ``out_chan`` of the last
    affine layer of each branch; equal weights when all are equal or all unset). The result is not Gaussian
    (each channel keeps its own covariance): follow it with an affine layer before any nonlinearity.

    Args:
        axis: The concatenation axis: -1 (or its positive index), the channel axis. Batch and spatial
            axes are not supported.

    Returns:
        The layer.
    """
    if isinstance(axis, bool) or int(axis) != axis:
        raise E.KernelalgError(f"FanInConcat: axis must be an integer, got {axis!r}. Fix: FanInConcat(axis=-1).")
    ax = int(axis)
    return Layer("FanInConcat", finite=_concat_finite, static=(("axis", ax),), role="combinator",
                 combine=functools.partial(_concat_combine, axis=ax))


def _prod_combine(builder: Builder, state: State, children: tuple) -> State:
    states = _branch_states(state, "FanInProd")
    widths = {str(s.width) for s in states if s.width is not None}
    if len(widths) > 1:
        raise E.LayerOrderError(f"FanInProd: branches have different widths {sorted(widths)}; the product is "
                                "elementwise. Fix: give the last Dense of every branch the same out_dim.")
    cov1, cov2, nngp, ntk = (sp.Integer(1),) * 3 + (sp.Integer(0),)
    for s in states:
        ntk = ntk * s.nngp + nngp * s.ntk
        cov1, cov2, nngp = cov1 * s.cov1, cov2 * s.cov2, nngp * s.nngp
    width = next((s.width for s in states if s.width is not None), None)
    return builder.materialize(KernelState(cov1, cov2, nngp, ntk, gaussian=False, width=width,
                                           after="FanInProd", layout=states[0].layout))


def _prod_finite(p: Mapping, static: Mapping, in_shape: tuple, width: int):
    if len(set(in_shape)) != 1:
        raise E.LayerOrderError(f"FanInProd: branch output shapes differ: {in_shape}. "
                                "Fix: make every branch end with the same width.")
    return (lambda key: {}), (lambda params, xs: functools.reduce(jnp.multiply, xs)), in_shape[0]


def FanInProd() -> Layer:
    """Multiply the branches elementwise (neural-tangents' ``stax.FanInProd``).

    Independent branches give K = prod K_i and, by the product rule, Theta = sum_i Theta_i prod_{j != i} K_j.
    The product is not Gaussian: follow it with an affine layer before any nonlinearity.
    """
    return Layer("FanInProd", finite=_prod_finite, combine=_prod_combine, role="combinator")
