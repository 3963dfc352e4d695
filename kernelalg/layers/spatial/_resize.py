"""Upsampling by ConvTranspose (transposed convolution); ImageResize is in :mod:`._imageresize`.

Conventions follow neural-tangents' ``stax.ConvTranspose`` (0.6.5), images NHWC.

**ConvTranspose** is ``jax.lax.conv_transpose`` (no kernel flip): per spatial axis the input is dilated by
the stride (s - 1 zeros between pixels), zero-padded by lax's transposed-conv rule and correlated with the
filter at stride 1 (output n s for SAME, n s + max(f - s, 0) for VALID). CIRCULAR computes VALID and folds
it onto n s pixels periodically (neural-tangents' ``_same_pad_for_filter_shape_transpose``); that equals
the dilated input (n s pixels, trailing zeros) padded periodically by (f - 1 - c, c), c = max(f - s, 0) // 2.
With ``T`` that aligned window mean on the dilated grid (:func:`pair_tconv`), the kernel map is Conv's with
``A`` replaced by ``T``: ``K <- W_std^2 T[K] + b_std^2``, ``Theta <- K_new + W_std^2 T[Theta]`` (ntk;
standard adds ``C_in |F| T[K]``), fan-in ``C_in |F|`` as neural-tangents. ``T`` is aligned (the same filter
tap for both pixels), so the matching-pixel layout suffices, as for Conv.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import sympy as sp

from kernelalg.backends import Arrays
from kernelalg.core import _errors as E
from kernelalg.core._layer import Layer
from kernelalg.core._program import Builder, KernelState
from kernelalg.layers._affine import affine_scales, affine_state
from kernelalg.layers._dense import affine_init
from kernelalg.layers.spatial import _grid as S
from kernelalg.layers.spatial._masks import check_window_padding, finite_move, masked_op, moved
from kernelalg.layers.spatial._conv import _dimension_numbers, conv_layer

TRANSPOSE_STANDARD_NEEDS_CHANNELS = (
    "ConvTranspose(parameterization='standard') after a layer of unknown width: in the standard parametrization "
    "the NTK depends on the fan-in C_in * prod(filter_shape). Fix: give the previous Conv/Dense out_chan/out_dim, "
    "e.g. Conv((3, 3), out_chan=256) before ConvTranspose((3, 3), (2, 2), parameterization='standard')."
)

# ------------------------------------------------------------------------------------- ConvTranspose maths


def tconv_axis(n: int, f: int, s: int, padding: str) -> tuple[int, int, int, int]:
    """(dilated length, pad_lo, pad_hi, out) of one axis of a transposed conv (lax's padding rule)."""
    if padding == "CIRCULAR":
        c = max(f - s, 0) // 2
        return n * s, f - 1 - c, c, n * s
    if padding == "SAME":
        total = f + s - 2
        lo = f - 1 if s > f - 1 else -(-total // 2)
    else:
        total = f + s - 2 + max(f - s, 0)
        lo = f - 1
    dil = (n - 1) * s + 1
    return dil, lo, total - lo, dil + total - f + 1


def _dilate(ops: Arrays, x: Any, ax: int, s: int, length: int) -> Any:
    """x with s - 1 zeros after every entry of axis ``ax``, cut to ``length`` entries."""
    n = x.shape[ax]
    if s == 1 and length == n:
        return x
    y = ops.xp.expand_dims(x, ax + 1)
    cfg = [(0, 0)] * y.ndim
    cfg[ax + 1] = (0, s - 1)
    y = ops.pad(y, cfg).reshape(x.shape[:ax] + (n * s,) + x.shape[ax + 1:])
    limit = list(y.shape)
    limit[ax] = length
    return ops.slice(y, [0] * y.ndim, limit, [1] * y.ndim)


def _tconv(ops: Arrays, x: Any, groups: list, filt: tuple, strides: tuple, padding: str) -> Any:
    """Sum over taps a of the dilated, padded x at (o + a) on every axis of each group; group j of axes uses
    filt[j], strides[j] (aligned taps within a group, as the pixel pair (p, p') of one spatial axis)."""
    axes, amounts, outs = [], [], []
    for grp, f, s in zip(groups, filt, strides):
        for ax in grp:
            dil, lo, hi, out = tconv_axis(x.shape[ax], f, s, padding)
            x = _dilate(ops, x, ax, s, dil)
            axes.append(ax), amounts.append((lo, hi)), outs.append(out)
    offsets = [tuple(o for o, grp in zip(offs, groups) for _ in grp)
               for offs in itertools.product(*(range(f) for f in filt))]
    return S._window_sum(ops, x, axes, offsets, amounts, (1,) * len(axes), outs, padding == "CIRCULAR")


def pair_tconv(ops: Arrays, x: Any, filt: tuple, strides: tuple, padding: str) -> Any:
    """The aligned transposed-conv window mean on the full pixel-pair grid (B1, B2, *S, *S')."""
    k = len(filt)
    return _tconv(ops, x, [(2 + d, 2 + k + d) for d in range(k)], filt, strides, padding) / math.prod(filt)


def tbox(ops: Arrays, x: Any, axes: tuple, filt: tuple, strides: tuple, padding: str) -> Any:
    """The transposed-conv window mean of per-pixel arrays on ``axes`` (separable: one axis at a time)."""
    for ax, f, s in zip(axes, filt, strides):
        x = _tconv(ops, x, [(ax,)], (f,), (s,), padding)
    return x / math.prod(filt)


def tconv_map(lay: S.SpatialState, filt: tuple, strides: tuple, padding: str):
    """The unscaled transposed-conv map ``T`` on (var1, var2, cov, ntk) arrays of layout ``lay``."""
    k = lay.ndim
    unprimed, primed = tuple(range(2, 2 + k)), tuple(range(2 + k, 2 + 2 * k))

    def fn(ops: Arrays, v1: Any, v2: Any, cov: Any, ntk: Any, ctx: S.Ctx) -> tuple:
        def diag(x: Any, axes: tuple) -> Any:
            return None if x is None else tbox(ops, x, axes, filt, strides, padding)

        if lay.mode == "diag":
            return ops.isolated(ctx.live, lambda *xs: tuple(diag(x, unprimed) for x in xs), v1, v2, cov, ntk)
        grid = (lambda x: None if x is None else pair_tconv(ops, x, filt, strides, padding))
        return (diag(v1, unprimed), diag(v2, primed),
                *ops.isolated(ctx.live, lambda a, b: (grid(a), grid(b)), cov, ntk))

    return fn


@dataclass(frozen=True)
class TconvMask:
    """neural-tangents' mask rule of ConvTranspose (``mask_fn``: the transposed conv of the mask with a filter of
    ones): an output position is masked when any input pixel that reaches it is masked."""

    filt: tuple
    strides: tuple
    padding: str

    def __call__(self, ops: Arrays, m: Any, first: int) -> Any:
        """Validity ``m`` (spatial axes from ``first`` on) at the output positions."""
        axes = tuple(range(first, first + len(self.filt)))
        hit = tbox(ops, 1.0 - m, axes, self.filt, self.strides, self.padding)  # mean of masked inputs reached
        return ops.xp.where(hit > 0.5 / math.prod(self.filt), 0.0, 1.0).astype(m.dtype)

    def finite(self, m: jax.Array) -> jax.Array:
        """The same rule on a finite twin's validity (N, *S)."""
        k = len(self.filt)
        ones = jnp.ones(tuple(self.filt) + (1, 1), m.dtype)
        hit = jax.lax.conv_transpose((1.0 - m)[..., None], ones, self.strides, self.padding,
                                     dimension_numbers=_dimension_numbers(k))
        return jnp.where(hit[..., 0] > 0.5, 0.0, 1.0).astype(m.dtype)


def _tconv_kernel(b: Builder, st: KernelState, p: Mapping[str, sp.Expr], static: Mapping[str, Any]) -> KernelState:
    filt, strides, padding = static["filter_shape"], static["strides"], static["padding"]
    lay = S.require_spatial(st, "ConvTranspose", len(filt), "filter_shape", "filter_shape=(3,) * ndim")
    fn, sources, out_lay = tconv_map(lay, filt, strides, padding), (), lay
    if lay.masked:  # masked pixels read as zero; an output position reached by a masked pixel is masked (NT)
        check_window_padding(padding, "ConvTranspose")
        out_lay = moved(lay, TconvMask(tuple(filt), tuple(strides), padding))
        fn, sources = masked_op(fn, lay=lay, out_lay=out_lay), (S.MASK1, S.MASK2)
    mapped = tuple(S.spatial_op(b, st, fn, "conv_transpose", key=(lay, filt, strides, padding),
                                sources=sources)[:4])

    def weight_grad() -> sp.Expr:
        if st.width is None:
            raise E.LayerOrderError(TRANSPOSE_STANDARD_NEEDS_CHANNELS)
        return st.width * math.prod(filt) * mapped[2]

    return affine_state(p, static["parameterization"], mapped, weight_grad, width=static["out_chan"],
                        after="ConvTranspose", layout=out_lay)


def fold(y: jax.Array, ax: int, length: int, offset: int) -> jax.Array:
    """out[j] = sum_m y[j + offset + m length] along ``ax`` (the CIRCULAR fold of neural-tangents)."""
    n = y.shape[ax]
    out = None
    for m in range(-(offset // length) - 1, n // length + 2):
        lo, hi = offset + m * length, offset + (m + 1) * length
        a, z = max(lo, 0), min(hi, n)
        if a >= z:
            continue
        piece = jax.lax.slice_in_dim(y, a, z, axis=ax)
        cfg = [(0, 0)] * y.ndim
        cfg[ax] = (a - lo, hi - z)
        piece = jnp.pad(piece, cfg)
        out = piece if out is None else out + piece
    return out


def _tconv_finite(p: Mapping[str, float], static: Mapping[str, Any], in_shape: tuple, width: int):
    filt, strides, padding = static["filter_shape"], static["strides"], static["padding"]
    k = len(filt)
    if len(in_shape) != k + 1:
        raise E.LayerOrderError(S.WRONG_NDIM.format(layer="ConvTranspose", what="filter_shape", got=k,
                                                    ndim=len(in_shape) - 1, example=(3,) * (len(in_shape) - 1)))
    c_in, out = in_shape[-1], static["out_chan"] or width
    sc = affine_scales(static, p["W_std"], p.get("b_std"), c_in * math.prod(filt), out)
    dn = _dimension_numbers(k)
    sizes = [tconv_axis(n, f, s, padding) for n, f, s in zip(in_shape[:-1], filt, strides)]

    def init(key: jax.Array) -> dict:
        return affine_init(key, tuple(filt) + (c_in, out), sc, "b_std" in p)

    def apply(params: dict, x: jax.Array) -> jax.Array:
        x = finite_move(jnp.asarray(x), TconvMask(tuple(filt), tuple(strides), padding).finite, "ConvTranspose",
                        padding)  # mask_constant: masked pixels read as zero, the mask moves as neural-tangents'
        w = params["W"].astype(x.dtype)
        y = jax.lax.conv_transpose(x, w, strides, "VALID" if padding == "CIRCULAR" else padding,
                                   dimension_numbers=dn, precision=jax.lax.Precision.HIGHEST)
        if padding == "CIRCULAR":
            for d, (f, s) in enumerate(zip(filt, strides)):
                y = fold(y, 1 + d, sizes[d][3], max(f - s, 0) // 2)
        if sc.w_mult != 1.0:
            y = sc.w_mult * y
        if "b" in params:
            bias = params["b"].astype(x.dtype)
            y = y + (bias if sc.b_mult == 1.0 else sc.b_mult * bias)
        return y

    return init, apply, tuple(sz[3] for sz in sizes) + (out,)


def ConvTranspose(filter_shape: Any, strides: Any = None, padding: str = "VALID", W_std: float = 1.0,
                  b_std: float | None = None, parameterization: str = "ntk", *,
                  out_chan: int | None = None) -> Layer:
    """Transposed convolution (neural-tangents' ``stax.ConvTranspose``; ``jax.lax.conv_transpose``).

    Args:
        filter_shape: Filter size per spatial axis, e.g. (3, 3).
        strides: Stride per spatial axis (default all 1): the upsampling factor.
        padding: "VALID" (default; output n s + max(f - s, 0)), "SAME" (output n s) or "CIRCULAR"
            (periodic, output n s).
        W_std: Weight standard deviation (>= 0).
        b_std: Bias standard deviation, or None for no bias.
        parameterization: "ntk" (default) or "standard" (fan-in C_in * prod(filter_shape), as NT).
        out_chan: Output channels (the finite twin; the fan-in of a following standard-parametrized layer).

    Returns:
        The layer.

    Example:
        >>> net = ka.ConvTranspose((3, 3), (2, 2), "SAME") >> ka.Relu() >> ka.Flatten()  # doctest: +SKIP
    """
    return conv_layer("ConvTranspose", _tconv_kernel, _tconv_finite, filter_shape, strides, padding, W_std, b_std,
                      parameterization, out_chan, example_stride=2)
