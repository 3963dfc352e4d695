"""Locally connected layers (LCN, "unshared convolution"): ``ConvLocal`` and its finite-width twin.

Conventions follow neural-tangents' ``stax.ConvLocal`` (Novak et al., ICLR 2019/2020): a convolution whose
filter (and bias) is a separate weight tensor at every output position. Images NHWC (NLC, NDHWC). NTK
parametrization: ``y(i) = W_std / sqrt(C_in |F|) <patch_i(x), W_i> + b_std b_i`` with W_i, b_i ~ N(0, 1) for
each output position i; standard parametrization: ``y(i) = <patch_i(x), W_i> + b_i`` with
W_i ~ N(0, W_std^2 / (C_in |F|)), b_i ~ N(0, b_std^2).

Kernel map (Novak et al. 2019, "Bayesian deep convolutional networks with many channels are Gaussian
processes", Sec. 3 and App. D): untied weights are independent across output positions, so the output
covariance of positions i != i' is zero; on matching positions it is the conv stencil of
:mod:`kernelalg.layers.spatial._conv` applied to the matching-pixel (diagonal) entries only. With ``A_d`` the
window mean of the diagonal ``K(p, p)`` and ``delta(i, i')`` the matching-position indicator:

    K(i, i')     <- delta(i, i') (W_std^2 A_d[K](i) + b_std^2)
    ntk:      Theta(i, i') <- K_new(i, i') + W_std^2 delta(i, i') A_d[Theta](i)
    standard: Theta(i, i') <- delta(i, i') (C_in |F| A_d[K](i) + [bias] + W_std^2 A_d[Theta](i))

On the matching-pixel layout ("diag", a Flatten readout without pooling) this is exactly the map of ``Conv``:
the CNN and the LCN without pooling have the same NNGP and NTK (see docs/locally_connected.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from kernelalg.backends import Arrays
from kernelalg.core import _errors as E
from kernelalg.core._layer import Layer
from kernelalg.core._program import Builder, KernelState
from kernelalg.layers._affine import affine_scales, weight_bias
from kernelalg.layers.spatial import _grid as S
from kernelalg.layers.spatial._conv import _dimension_numbers, circular_pad, conv_layer, conv_out_shape
from kernelalg.layers.spatial._masks import check_window_padding, finite_window, masked_op, path_after

STANDARD_NEEDS_CHANNELS = (
    "ConvLocal(parameterization='standard') after a layer of unknown width: in the standard parametrization the "
    "NTK depends on the fan-in C_in * prod(filter_shape). Fix: give the previous Conv/ConvLocal/Dense "
    "out_chan/out_dim, e.g. ConvLocal((3, 3), out_chan=256, parameterization='standard')."
)
def position_delta(shape: tuple) -> np.ndarray:
    """The matching-position indicator delta(i, i') on the grid ``shape`` x ``shape``, shaped (1, 1, *S, *S)."""
    k = len(shape)
    out = np.ones((1, 1) + shape + shape)
    for d, n in enumerate(shape):
        idx = [1] * (2 + 2 * k)
        idx[2 + d], idx[2 + k + d] = n, n
        out = out * np.eye(n).reshape(idx)
    return out


def local_map(lay: S.SpatialState, filt: tuple, strides: tuple, padding: str):
    """The unscaled map ``delta A_d`` on (var1, var2, cov, ntk) arrays of layout ``lay`` (backend-neutral).

    In the full layout it has one extra output: the indicator delta(i, i') of the output grid (the
    positions a per-position bias reaches).
    """
    k = lay.ndim
    unprimed, primed = tuple(range(2, 2 + k)), tuple(range(2 + k, 2 + 2 * k))

    def box(ops: Arrays, x: Any, axes: tuple) -> Any:
        return None if x is None else S.box(ops, x, axes, filt, strides, padding, "ConvLocal") / math.prod(filt)

    def fn(ops: Arrays, v1: Any, v2: Any, cov: Any, ntk: Any, ctx: S.Ctx) -> tuple:
        if lay.mode == "diag":  # matching pixels only: identical to Conv
            return ops.isolated(ctx.live, lambda *xs: tuple(box(ops, x, unprimed) for x in xs), v1, v2, cov, ntk)

        def embed(x: Any) -> Any:
            if x is None:
                return None
            d = box(ops, S.pixel_diag(ops, x, k), unprimed)  # (B1, B2, *S_out): conv of the diagonal
            delta = ops.xp.asarray(position_delta(d.shape[2:]), d.dtype)
            return d.reshape(d.shape + (1,) * k) * delta

        acov, antk = ops.isolated(ctx.live, lambda a, b: (embed(a), embed(b)), cov, ntk)
        delta = ops.xp.asarray(position_delta(acov.shape[2:2 + k]), acov.dtype)
        return box(ops, v1, unprimed), box(ops, v2, primed), acov, antk, delta

    return fn


def _local_kernel(b: Builder, st: KernelState, p: Mapping[str, sp.Expr], static: Mapping[str, Any]) -> KernelState:
    filt, strides, padding = static["filter_shape"], static["strides"], static["padding"]
    lay = S.require_spatial(st, "ConvLocal", len(filt), "filter_shape", "filter_shape=(3,) * ndim")
    full = lay.mode == "full"
    fn, sources, out_lay = local_map(lay, filt, strides, padding), (), lay
    if lay.masked:  # as Conv: masked pixels read as zero, an output position has its window centre's validity
        check_window_padding(padding, "ConvLocal")
        out_lay = path_after(lay, filt, strides, padding)
        fn, sources = masked_op(fn, lay=lay, out_lay=out_lay), (S.MASK1, S.MASK2)
    out = S.spatial_op(b, st, fn, "conv_local", n_extra=int(full), key=(lay, filt, strides, padding),
                       sources=sources)
    a1, a2, acov, antk = out[:4]
    delta = out[4] if full else sp.Integer(1)
    w2, b2, bias = weight_bias(p)
    cov1, cov2 = w2 * a1 + b2, w2 * a2 + b2
    nngp = w2 * acov + b2 * delta
    if static["parameterization"] == "ntk":
        ntk = nngp + w2 * antk
    else:
        if st.width is None:
            raise E.LayerOrderError(STANDARD_NEEDS_CHANNELS)
        ntk = st.width * math.prod(filt) * acov + bias * delta + w2 * antk
    return KernelState(cov1, cov2, nngp, ntk, gaussian=True, width=static["out_chan"], after="ConvLocal", layout=out_lay)


def _local_finite(p: Mapping[str, float], static: Mapping[str, Any], in_shape: tuple, width: int):
    filt, strides, padding = static["filter_shape"], static["strides"], static["padding"]
    k = len(filt)
    if len(in_shape) != k + 1:
        raise E.LayerOrderError(S.WRONG_NDIM.format(layer="ConvLocal", what="filter_shape", got=k,
                                                    ndim=len(in_shape) - 1, example=(3,) * (len(in_shape) - 1)))
    c_in, out = in_shape[-1], static["out_chan"] or width
    fan_in = c_in * math.prod(filt)
    sc = affine_scales(static, p["W_std"], p.get("b_std"), fan_in, out)
    out_sp = conv_out_shape(in_shape[:-1], filt, strides, padding)
    dn = _dimension_numbers(k)

    def init(key: jax.Array) -> dict:
        kw, kb = jax.random.split(key)
        w = jax.random.normal(kw, out_sp + (fan_in, out))  # one (C_in |F|, out) matrix per output position
        params = {"W": w if sc.w_init == 1.0 else w * sc.w_init}
        if "b_std" in p:
            bias = jax.random.normal(kb, out_sp + (out,))  # one bias per output position and channel
            params["b"] = bias if sc.b_init == 1.0 else bias * sc.b_init
        return params

    def apply(params: dict, x: jax.Array) -> jax.Array:
        x = finite_window(jnp.asarray(x), filt, strides, padding, "ConvLocal")  # mask_constant: masked pixels read as 0
        if padding == "CIRCULAR":
            x = circular_pad(x, filt, strides)
        w = params["W"].astype(x.dtype)
        y = jax.lax.conv_general_dilated_local(x, w, strides, "VALID" if padding == "CIRCULAR" else padding,
                                               filter_shape=filt, dimension_numbers=dn,
                                               precision=jax.lax.Precision.HIGHEST)
        if sc.w_mult != 1.0:
            y = sc.w_mult * y
        if "b" in params:
            bias = params["b"].astype(x.dtype)
            y = y + (bias if sc.b_mult == 1.0 else sc.b_mult * bias)
        return y

    return init, apply, out_sp + (out,)


def ConvLocal(filter_shape: Any, strides: Any = None, padding: str = "VALID", W_std: float = 1.0,
              b_std: float | None = None, parameterization: str = "ntk", *, out_chan: int | None = None) -> Layer:
    """Locally connected layer: a convolution with separate (untied) weights and biases at every output position.

    Same arguments and defaults as :func:`Conv` (and neural-tangents' ``stax.ConvLocal``).

    Args:
        filter_shape: Filter size per spatial axis, e.g. (3, 3).
        strides: Stride per spatial axis (default all 1).
        padding: "VALID" (default, as neural-tangents), "SAME" (zero padding) or "CIRCULAR" (periodic).
        W_std: Weight standard deviation (>= 0).
        b_std: Bias standard deviation, or None for no bias.
        parameterization: "ntk" (default) or "standard".
        out_chan: Output channels: used by the finite-width twin and, in the standard parametrization,
            as the fan-in of the next layer. It does not enter the NTK-parametrized kernel.

    Returns:
        The layer.

    Example:
        >>> net = ka.ConvLocal((3, 3), padding="SAME") >> ka.Relu() >> ka.Flatten() >> ka.Dense()  # doctest: +SKIP
    """
    return conv_layer("ConvLocal", _local_kernel, _local_finite, filter_shape, strides, padding, W_std, b_std,
                      parameterization, out_chan)

