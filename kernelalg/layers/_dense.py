"""Affine and structural layers: Dense, Identity, FanOut, FanInSum.

Conventions follow neural-tangents' stax (Novak et al., ICLR 2020). NTK parametrization:
``y = (W_std / sqrt(n)) W x + b_std b`` with W, b ~ N(0, 1) trainable; standard parametrization:
``y = W x + b`` with W ~ N(0, W_std^2 / n), b ~ N(0, b_std^2) trainable.

Kernel maps (Jacot et al. 2018; Lee et al. 2019), n the fan-in:
    ntk:      K <- W^2 K + b^2,   Theta <- K_new + W^2 Theta
    standard: K <- W^2 K + b^2,   Theta <- n K + [bias] + W^2 Theta
"""

from __future__ import annotations

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


def FanOut(num: int) -> Layer:
    """Copy the input into ``num`` branches (to be consumed by ``parallel``)."""
    if int(num) != num or num < 1:
        raise E.KernelalgError(f"FanOut: num must be a positive integer, got {num!r}. Fix: e.g. FanOut(2).")
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
