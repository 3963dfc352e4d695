"""Pooling and readout layers on images: AvgPool, SumPool, GlobalAvgPool, GlobalSumPool, Flatten.

Names, defaults and normalisations follow neural-tangents' stax (Novak et al., ICLR 2020). On the
pixel-pair grid (see :mod:`kernelalg.layers.spatial._grid`), with windows W(i) of output pixel i:

* SumPool:  K(i, i') <- sum_{a in W(i), a' in W(i')} K(a, a')  (windows on p and p' independently);
  AvgPool divides by |W|^2, or with ``normalize_edges=True`` and SAME padding by the number of in-image
  pixels of W(i) times that of W(i').
* GlobalSumPool: K <- sum over all pixel pairs; GlobalAvgPool: the mean over all (HW)^2 pixel pairs.
* Flatten: K <- mean over matching pixels p = p' (the kernel of the flattened (H W C)-vector, per unit),
  and its output is not Gaussian-by-position (an activation may not follow it directly, as in NT).

All are linear maps without parameters, so they act identically on the NNGP, the NTK and the variances.
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
from kernelalg.layers.spatial import _grid as S
from kernelalg.layers.spatial._conv import circular_pad, conv_out_shape
from kernelalg.core._layer import Layer, Spatial
from kernelalg.layers.spatial._inputs import IMAGE_LAYOUTS
from kernelalg.layers.spatial._masks import (
    check_window_padding,
    current_masks,
    finite_mask,
    finite_pool,
    finite_readout,
    finite_window,
    masked_op,
    path_after,
    zeroed,
)
from kernelalg.core._program import Builder, KernelState
from kernelalg.layers.spatial._pairs import wrap_readout



NO_VALID_POSITION = (
    "{layer}: an input has no unmasked position left after the layers that move the masks to their window "
    "centres (windows, strides, paddings: {path}), so its mean is undefined (neural-tangents gives NaN). Fix: give "
    "every input an unmasked pixel at a window centre (e.g. padding='SAME', stride 1), or use GlobalSumPool."
)


def _need_full(lay: S.SpatialState, layer: str) -> None:
    if lay.mode != "full" or not lay.self_grids:  # the pre-pass (kernelalg.layers.spatial._inputs.plan) guarantees this
        raise E.InternalError(f"{layer}: pooling reached a state without self grids ({lay}). Please report this bug.")


# ------------------------------------------------------------------------------------------ AvgPool/SumPool


def _pool_map(lay: S.SpatialState, window: tuple, strides: tuple, padding: str, avg: bool, normalize_edges: bool):
    k = lay.ndim
    axes = tuple(range(2, 2 + 2 * k))

    def grid(ops: Arrays, x: Any) -> Any:
        if x is None:
            return None
        out = S.box(ops, x, axes, window + window, strides + strides, padding, "Pool")
        if not avg:
            return out
        if normalize_edges and padding == "SAME":
            counts = [S.window_counts(n, f, s, padding) for n, f, s in zip(x.shape[2:], window + window, strides + strides)]
            norm = counts[0]
            for c in counts[1:]:
                norm = np.multiply.outer(norm, c)
            return out / ops.xp.asarray(norm, out.dtype)
        return out / math.prod(window) ** 2

    def fn(ops: Arrays, v1: Any, v2: Any, cov: Any, ntk: Any, ctx: S.Ctx) -> tuple:
        g = grid(ops, cov)
        if ctx.phase == 0:  # batch mode: self grids on the batch diagonal or in the extension
            n1, n2 = S.self_pixel_vars(ops, g, ctx.ext, k)
            return n1.astype(g.dtype), n2.astype(g.dtype), g, grid(ops, ntk), None
        if ctx.phase == 1:  # chunked self pairs: the pooled grid is the image's own
            d = S.pixel_diag(ops, g, k)
            n1, n2 = S.own_vars(d, k)
            return n1, n2, g, grid(ops, ntk), d
        n1, n2 = S.recorded_vars(ctx.rec[key], k)  # chunked pairs of different images: recorded in phase 1
        return n1.astype(g.dtype), n2.astype(g.dtype), g, grid(ops, ntk), None

    key = next(S.RECORD_KEYS)
    return fn, key


def _pool_kernel(name: str, avg: bool):
    def kernel(b: Builder, st: KernelState, p: Mapping[str, sp.Expr], static: Mapping[str, Any]) -> KernelState:
        window, strides, padding = static["window_shape"], static["strides"], static["padding"]
        lay = S.require_spatial(st, name, len(window), "window_shape", "window_shape=(2,) * ndim")
        _need_full(lay, name)
        fn, key = _pool_map(lay, window, strides, padding, avg, static.get("normalize_edges", False))
        sources, out_lay = (), lay
        if lay.masked:  # masked pixels count as zero (AvgPool still divides by the window); centre validity
            check_window_padding(padding, name)
            out_lay = path_after(lay, window, strides, padding)
            fn, sources = masked_op(fn, lay=lay, out_lay=out_lay), (S.MASK1, S.MASK2)
        v1, v2, cov, ntk = S.spatial_op(b, st, fn, name.lower(), n_extra=1, tag=key, sources=sources)[:4]
        return st.replace(cov1=v1, cov2=v2, nngp=cov, ntk=ntk, after=name, layout=out_lay)
    return kernel


def _pool_finite(avg: bool, name: str):
    def finite(p: Mapping[str, float], static: Mapping[str, Any], in_shape: tuple, width: int):
        window, strides, padding = static["window_shape"], static["strides"], static["padding"]
        edges = static.get("normalize_edges", False)
        dims, wstr = (1,) + window + (1,), (1,) + strides + (1,)

        def apply(params: dict, x: jax.Array) -> jax.Array:
            x, pad = finite_window(jnp.asarray(x), window, strides, padding, name), padding
            if padding == "CIRCULAR":
                x, pad = circular_pad(x, window, strides), "VALID"
            y = jax.lax.reduce_window(x, np.zeros((), x.dtype), jax.lax.add, dims, wstr, pad)
            if not avg:
                return y
            if edges and pad == "SAME":
                ones = jnp.ones((1,) + x.shape[1:-1] + (1,), x.dtype)
                return y / jax.lax.reduce_window(ones, np.zeros((), x.dtype), jax.lax.add, dims, wstr, pad)
            return y / math.prod(window)

        return (lambda key: {}), apply, conv_out_shape(in_shape[:-1], window, strides, padding) + in_shape[-1:]
    return finite


def _pool_layer(name: str, avg: bool, window_shape: Any, strides: Any, padding: str, normalize_edges: bool) -> Layer:
    window = S.check_tuple(name, "window_shape", window_shape, "window_shape=(2, 2)")
    strides = (1,) * len(window) if strides is None else S.check_tuple(name, "strides", strides, "strides=(2, 2)")
    if len(strides) != len(window):
        raise E.KernelalgError(f"{name}: strides {strides} and window_shape {window} have different lengths. "
                               f"Fix: give one stride per spatial axis, e.g. strides={window}.")
    static: tuple = (("window_shape", window), ("strides", strides), ("padding", S.check_padding(name, padding)))
    if avg:
        static += (("normalize_edges", bool(normalize_edges)),)
    return Layer(name, _pool_kernel(name, avg), static=static, finite=_pool_finite(avg, name),
                 input_layout=IMAGE_LAYOUTS[len(window)], role="pooling", spatial=Spatial(pairs=True))


def AvgPool(window_shape: Any, strides: Any = None, padding: str = "VALID", normalize_edges: bool = False) -> Layer:
    """Average pooling over windows of the spatial axes (neural-tangents' ``stax.AvgPool``).

    Args:
        window_shape: Window size per spatial axis, e.g. (2, 2).
        strides: Stride per spatial axis; None means all 1 (as NT, not the window shape).
        padding: "VALID" (default), "SAME" (zero padding) or "CIRCULAR" (periodic).
        normalize_edges: With SAME padding, divide by the number of in-image pixels of each window
            instead of the window size.
    """
    return _pool_layer("AvgPool", True, window_shape, strides, padding, normalize_edges)


def SumPool(window_shape: Any, strides: Any = None, padding: str = "VALID") -> Layer:
    """Sum pooling over windows of the spatial axes (neural-tangents' ``stax.SumPool``)."""
    return _pool_layer("SumPool", False, window_shape, strides, padding, False)


# ---------------------------------------------------------------------------------------- global readouts


def _global_kernel(name: str, avg: bool):
    def kernel(b: Builder, st: KernelState, p: Mapping[str, sp.Expr], static: Mapping[str, Any]) -> KernelState:
        lay = S.require_spatial(st, name)
        _need_full(lay, name)
        axes = tuple(range(2, 2 + 2 * lay.ndim))
        if lay.chunked:
            reduce = (lambda ops, x: (ops.xp.mean if avg else ops.xp.sum)(x, axis=(1,) + axes))
            v1, v2, cov, ntk = wrap_readout(b, st, lay, reduce, name.lower())
            return st.replace(cov1=v1, cov2=v2, nngp=cov, ntk=ntk, after=name, layout="dense")

        # masks moved by window layers may leave an image without a valid position: its mean is undefined
        counted = bool(avg and lay.masked and lay.mask_path)

        def fn(ops: Arrays, v1: Any, v2: Any, cov: Any, ntk: Any, ctx: S.Ctx, *masks: Any) -> tuple:
            red = (lambda x: None if x is None else (ops.xp.mean if avg else ops.xp.sum)(x, axis=axes))
            count = None
            if masks:  # sums over the valid pixel pairs; the mean divides by their number n1 n2
                masks = current_masks(ops, *masks, lay)
                _, _, cov, ntk = zeroed(ops, None, None, cov, ntk, *masks)
                count = ops.xp.sum(masks[0] * masks[1], axis=axes) if avg else 1.0
                red = (lambda x: None if x is None else ops.xp.sum(x, axis=axes) / count)
            g, t = red(cov), red(ntk)
            extra = (count,) if counted else ()
            if ctx.ext:
                n, m = g.shape[0] - 1, g.shape[1] - 1
                return (g[:n, m:], g[n:, :m], g[:n, :m], None if t is None else t[:n, :m]) + extra
            d = ops.xp.diagonal(g)
            return (d[:, None], d[None, :], g, t) + extra

        sources = (S.MASK1, S.MASK2) if lay.masked else ()
        out = S.spatial_op(b, st, fn, name.lower(), n_extra=int(counted), sources=sources)
        if counted:  # n1 n2 > 0 for every pair: a clear error instead of 0/0 (neural-tangents gives NaN)
            b.require([(out[4], NO_VALID_POSITION.format(layer=name, path=lay.mask_path))])
        v1, v2, cov, ntk = out[:4]
        return st.replace(cov1=v1, cov2=v2, nngp=cov, ntk=ntk, after=name, layout="dense")
    return kernel


def _global_finite(avg: bool):
    def finite(p: Mapping[str, float], static: Mapping[str, Any], in_shape: tuple, width: int):
        return (lambda key: {}), (lambda params, x: finite_readout(finite_pool(x, avg))), in_shape[-1:]
    return finite


def GlobalAvgPool() -> Layer:
    """Average over all spatial positions (readout): the kernel is the mean over all pixel pairs."""
    return Layer("GlobalAvgPool", _global_kernel("GlobalAvgPool", True), finite=_global_finite(True),
                 role="pooling", spatial=Spatial(pairs=True, readout=True))


def GlobalSumPool() -> Layer:
    """Sum over all spatial positions (readout): the kernel is the sum over all pixel pairs."""
    return Layer("GlobalSumPool", _global_kernel("GlobalSumPool", False), finite=_global_finite(False),
                 role="pooling", spatial=Spatial(pairs=True, readout=True))


# ------------------------------------------------------------------------------------------------ Flatten


def _flatten_kernel(b: Builder, st: KernelState, p: Mapping[str, sp.Expr], static: Mapping[str, Any]) -> KernelState:
    lay = S.require_spatial(st, "Flatten")
    k = lay.ndim
    if lay.chunked:
        if lay.mode == "diag":
            reduce = (lambda ops, x: ops.xp.mean(x, axis=tuple(range(1, x.ndim))))
        else:
            reduce = (lambda ops, x: ops.xp.mean(S.pixel_diag(ops, x, k), axis=tuple(range(1, 2 + k))))
        v1, v2, cov, ntk, npix = wrap_readout(b, st, lay, reduce, "flatten", npix=True)
        width = None if st.width is None else st.width * npix
        return KernelState(v1, v2, cov, ntk, gaussian=False, width=width, after="Flatten", layout="dense")

    def fn(ops: Arrays, v1: Any, v2: Any, cov: Any, ntk: Any, ctx: S.Ctx, *masks: Any) -> tuple:
        ext, xp = ctx.ext, ops.xp
        if masks:  # masked pixels count as zero; the mean still divides by all positions (as neural-tangents)
            v1, v2, cov, ntk = zeroed(ops, v1, v2, cov, ntk, *current_masks(ops, *masks, lay))
        if lay.mode == "diag":
            red = (lambda x: None if x is None else xp.mean(x, axis=tuple(range(2, x.ndim))))
            npix = math.prod(cov.shape[2:])
            return red(v1), red(v2), red(cov), red(ntk), xp.asarray(npix, cov.dtype)
        grid = (lambda x: None if x is None else S.strip(xp.mean(S.pixel_diag(ops, x, k), axis=tuple(range(2, 2 + k))),
                                                         ext))
        m1, m2 = (xp.mean(v, axis=tuple(range(2, v.ndim))) for v in (v1, v2))
        if ext:
            m1, m2 = m1[:-1, :1], m2[:1, :-1]
        npix = math.prod(cov.shape[2:2 + k])
        return m1, m2, grid(cov), grid(ntk), xp.asarray(npix, cov.dtype)

    sources = (S.MASK1, S.MASK2) if lay.masked else ()
    v1, v2, cov, ntk, npix = S.spatial_op(b, st, fn, "flatten", n_extra=1, sources=sources)
    width = None if st.width is None else st.width * npix
    return KernelState(v1, v2, cov, ntk, gaussian=False, width=width, after="Flatten", layout="dense")


def _flatten_finite(p: Mapping[str, float], static: Mapping[str, Any], in_shape: tuple, width: int):
    return ((lambda key: {}), (lambda params, x: finite_readout(finite_mask(x).reshape(x.shape[0], -1))),
            (int(np.prod(in_shape)),))


def Flatten() -> Layer:
    """Flatten (batch, *spatial, channels) to (batch, features) (readout): the kernel is the mean over
    matching pixels p = p', so ``Flatten() >> Dense()`` is a dense layer with fan-in H W C."""
    return Layer("Flatten", _flatten_kernel, finite=_flatten_finite, role="reshape", spatial=Spatial(readout=True))
