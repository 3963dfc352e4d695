"""Convolution layers: the convolutional NTK (CNTK) and its finite-width twin.

Conventions follow neural-tangents' ``stax.Conv`` (Novak et al., ICLR 2020), images NHWC (NLC, NDHWC for
1-D and 3-D). NTK parametrization: ``y = W_std / sqrt(C_in |F|) conv(x, W) + b_std b`` with W, b ~ N(0, 1)
(|F| = prod(filter_shape), one bias per output channel); standard parametrization:
``y = conv(x, W) + b`` with W ~ N(0, W_std^2 / (C_in |F|)), b ~ N(0, b_std^2).

Kernel map (Arora et al., "On Exact Computation with an Infinitely Wide Neural Net", NeurIPS 2019), with
``A`` the aligned window mean on the pixel-pair grid, ``A[K](p, p') = (1/|F|) sum_{a in F} K(p + a, p' + a)``
(strided, zero-padded for SAME, periodic for CIRCULAR; see :func:`kernelalg.layers.spatial._grid.pair_conv`):

    K     <- W_std^2 A[K] + b_std^2
    ntk:      Theta <- K_new + W_std^2 A[Theta]
    standard: Theta <- C_in |F| A[K] + W_std^2 A[Theta] (+ 1 with a bias)

The per-pixel variances follow the same map restricted to p = p' (a window mean of the diagonal).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import sympy as sp

from kernelalg.backends import Arrays
from kernelalg.core import _errors as E
from kernelalg.layers.spatial import _grid as S
from kernelalg.layers.spatial._inputs import IMAGE_LAYOUTS
from kernelalg.layers.spatial._masks import check_window_padding, finite_window, masked_op, path_after
from kernelalg.layers._affine import affine_scales, affine_state, check_parameterization
from kernelalg.layers._dense import affine_init
from kernelalg.core._layer import Layer, check_std
from kernelalg.core._program import Builder, KernelState


STANDARD_NEEDS_CHANNELS = (
    "Conv(parameterization='standard') after a layer of unknown width: in the standard parametrization the "
    "NTK depends on the fan-in C_in * prod(filter_shape). Fix: give the previous Conv/Dense out_chan/out_dim, "
    "e.g. Conv((3, 3), out_chan=256, parameterization='standard')."
)


def conv_map(lay: S.SpatialState, filt: tuple, strides: tuple, padding: str):
    """The unscaled conv map ``A`` on (var1, var2, cov, ntk) arrays of layout ``lay`` (backend-neutral)."""
    k = lay.ndim
    q = math.prod(filt)
    unprimed, primed = tuple(range(2, 2 + k)), tuple(range(2 + k, 2 + 2 * k))

    def fn(ops: Arrays, v1: Any, v2: Any, cov: Any, ntk: Any, ctx: S.Ctx) -> tuple:
        def diag_box(x: Any, axes: tuple) -> Any:
            return None if x is None else S.box(ops, x, axes, filt, strides, padding, "Conv") / q

        if lay.mode == "diag":
            return ops.isolated(ctx.live, lambda *xs: tuple(diag_box(x, unprimed) for x in xs), v1, v2, cov, ntk)
        grid = (lambda x: None if x is None else S.pair_conv(ops, x, filt, strides, padding, "Conv"))
        return (diag_box(v1, unprimed), diag_box(v2, primed),
                *ops.isolated(ctx.live, lambda a, b: (grid(a), grid(b)), cov, ntk))

    return fn


def _conv_kernel(b: Builder, st: KernelState, p: Mapping[str, sp.Expr], static: Mapping[str, Any]) -> KernelState:
    filt, strides, padding = static["filter_shape"], static["strides"], static["padding"]
    lay = S.require_spatial(st, "Conv", len(filt), "filter_shape", "filter_shape=(3,) * ndim")
    fn, sources, out_lay = conv_map(lay, filt, strides, padding), (), lay
    if lay.masked:  # masked pixels read as zero; an output position has the validity of its window's centre
        check_window_padding(padding, "Conv")
        out_lay = path_after(lay, filt, strides, padding)
        fn, sources = masked_op(fn, lay=lay, out_lay=out_lay), (S.MASK1, S.MASK2)
    mapped = tuple(S.spatial_op(b, st, fn, "conv", key=(lay, filt, strides, padding), sources=sources)[:4])

    def weight_grad() -> sp.Expr:
        if st.width is None:
            raise E.LayerOrderError(STANDARD_NEEDS_CHANNELS)
        return st.width * math.prod(filt) * mapped[2]

    return affine_state(p, static["parameterization"], mapped, weight_grad, width=static["out_chan"], after="Conv",
                        layout=out_lay)


def conv_out_shape(in_shape: tuple, filt: tuple, strides: tuple, padding: str) -> tuple:
    """Spatial output shape of a finite conv (CIRCULAR keeps SAME's shape)."""
    pad = "SAME" if padding == "CIRCULAR" else padding
    return tuple(S.pads(n, f, s, pad)[2] for n, f, s in zip(in_shape, filt, strides))


def _dimension_numbers(k: int) -> tuple[str, str, str]:
    sp_axes = "DHW"[3 - k:]
    return f"N{sp_axes}C", f"{sp_axes}IO", f"N{sp_axes}C"


def circular_pad(x: jax.Array, filt: tuple, strides: tuple) -> jax.Array:
    """Wrap-pad the spatial axes of (B, *S, C) so that a VALID window op gives SAME's output shape."""
    cfg = [(0, 0)] + [S.pads(n, f, s, "SAME")[:2] for n, f, s in zip(x.shape[1:-1], filt, strides)] + [(0, 0)]
    return jnp.pad(x, cfg, mode="wrap")


def _conv_finite(p: Mapping[str, float], static: Mapping[str, Any], in_shape: tuple, width: int):
    filt, strides, padding = static["filter_shape"], static["strides"], static["padding"]
    k = len(filt)
    if len(in_shape) != k + 1:
        raise E.LayerOrderError(S.WRONG_NDIM.format(layer="Conv", what="filter_shape", got=k,
                                                    ndim=len(in_shape) - 1, example=(3,) * (len(in_shape) - 1)))
    c_in, out = in_shape[-1], static["out_chan"] or width
    fan_in = c_in * math.prod(filt)
    sc = affine_scales(static, p["W_std"], p.get("b_std"), fan_in, out)
    dn = _dimension_numbers(k)

    def init(key: jax.Array) -> dict:
        return affine_init(key, tuple(filt) + (c_in, out), sc, "b_std" in p)

    def apply(params: dict, x: jax.Array) -> jax.Array:
        x = finite_window(jnp.asarray(x), filt, strides, padding, "Conv")  # mask_constant: masked pixels read as zero
        if padding == "CIRCULAR":
            x = circular_pad(x, filt, strides)
        w = params["W"].astype(x.dtype)
        y = jax.lax.conv_general_dilated(x, w, strides, "VALID" if padding == "CIRCULAR" else padding,
                                         dimension_numbers=dn, precision=jax.lax.Precision.HIGHEST)
        if sc.w_mult != 1.0:
            y = sc.w_mult * y
        if "b" in params:
            bias = params["b"].astype(x.dtype)
            y = y + (bias if sc.b_mult == 1.0 else sc.b_mult * bias)
        return y

    return init, apply, conv_out_shape(in_shape[:-1], filt, strides, padding) + (out,)



def conv_layer(name: str, kernel_map: Any, finite: Any, filter_shape: Any, strides: Any, padding: str, W_std: float,
               b_std: float | None, parameterization: str, out_chan: int | None, example_stride: int = 1) -> Layer:
    """The checked settings and the Layer record shared by the convolution family (Conv, ConvLocal,
    ConvTranspose): the same arguments, errors, hyperparameters, static settings and declarations."""
    filt = S.check_tuple(name, "filter_shape", filter_shape, "filter_shape=(3, 3)")
    example = f"strides=({example_stride}, {example_stride})"
    strides = (1,) * len(filt) if strides is None else S.check_tuple(name, "strides", strides, example)
    if len(strides) != len(filt):
        raise E.KernelalgError(f"{name}: strides {strides} and filter_shape {filt} have different lengths. "
                               f"Fix: give one stride per spatial axis, e.g. strides={(example_stride,) * len(filt)}.")
    padding = S.check_padding(name, padding)
    check_parameterization(name, parameterization)
    if out_chan is not None and (int(out_chan) != out_chan or out_chan < 1):
        raise E.KernelalgError(f"{name}: out_chan must be a positive integer, got {out_chan!r}. "
                               "Fix: e.g. out_chan=256, or leave it None.")
    params: tuple[tuple[str, float], ...] = (("W_std", check_std(name, "W_std", W_std)),)
    if b_std is not None:
        params += (("b_std", check_std(name, "b_std", b_std)),)
    static = (("filter_shape", filt), ("strides", strides), ("padding", padding),
              ("parameterization", parameterization), ("out_chan", None if out_chan is None else int(out_chan)))
    return Layer(name, kernel_map, params, static, finite, positive=frozenset({"W_std", "b_std"}),
                 input_layout=IMAGE_LAYOUTS[len(filt)], role="affine", width_arg="out_chan")


def Conv(filter_shape: Any, strides: Any = None, padding: str = "VALID", W_std: float = 1.0,
         b_std: float | None = None, parameterization: str = "ntk", *, out_chan: int | None = None) -> Layer:
    """Convolution over the spatial axes of (batch, *spatial, channels) inputs (1-D, 2-D or 3-D).

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
        >>> net = ka.Conv((3, 3), padding="SAME") >> ka.Relu() >> ka.GlobalAvgPool() >> ka.Dense()  # doctest: +SKIP
    """
    return conv_layer("Conv", _conv_kernel, _conv_finite, filter_shape, strides, padding, W_std, b_std,
                      parameterization, out_chan)

