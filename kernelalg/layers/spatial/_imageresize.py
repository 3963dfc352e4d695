"""ImageResize: a fixed linear resampling of the spatial axes (neural-tangents' ``stax.ImageResize``, 0.6.5).

**ImageResize** is ``jax.image.resize`` on the spatial axes: one matrix ``R_d`` per axis (:func:`resize_matrix`,
jax's triangle filter for "linear" with optional antialiasing, index selection for "nearest"), so
``K <- R K R^T`` on every pixel pair, the same map on the NNGP and the NTK. It mixes pixels, so like pooling
it needs every pixel pair and each image's own grid (``Spatial(pairs=True)``). On masked inputs an output position
is masked when only masked positions contribute (:class:`ResizeMask`, NT's ``mask_fn``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from kernelalg.backends import JAX_ARRAYS, Arrays
from kernelalg.core import _errors as E
from kernelalg.core._layer import Layer, Spatial
from kernelalg.core._program import Builder, KernelState
from kernelalg.layers.spatial import _grid as S
from kernelalg.layers.spatial._inputs import IMAGE_LAYOUTS
from kernelalg.layers.spatial._masks import FINITE_MASK, finite_move, masked_op, moved

_KEYS = itertools.count(10**6)  # phase-1 record ids of ImageResize ops (distinct from pooling's)

RESIZE_METHODS = {"linear": "linear", "bilinear": "linear", "trilinear": "linear", "triangle": "linear",
                  "nearest": "nearest"}
BAD_METHOD = (
    "ImageResize: method {got!r} has no infinite-width kernel here (neural-tangents' kernel_fn supports only "
    "the linear methods). Fix: use method='linear' (also 'bilinear', 'trilinear', 'triangle') or 'nearest'."
)
BAD_RESIZE_SHAPE = (
    "ImageResize: shape must list every axis of the images (batch, *spatial, channels) with 1 to 3 spatial "
    "axes, each entry a positive size or -1 (keep), got {got!r}. Fix: e.g. shape=(-1, 16, 16, -1)."
)
RESIZE_BATCH = (
    "ImageResize: resizing the batch axis (shape[0] = {got}) mixes different inputs, which a per-input kernel "
    "cannot express. Fix: set shape[0] = -1."
)
RESIZE_CHANNELS = (
    "ImageResize: resizing the channel axis (shape[-1] = {got}) is not defined in the infinite-width limit "
    "(as neural-tangents). Fix: set shape[-1] = -1."
)
BAD_AXES = (
    "ImageResize: kernelalg's images are (batch, *spatial, channels), so batch_axis must be 0 and "
    "channel_axis -1, got batch_axis={b}, channel_axis={c}. Fix: transpose the images to that layout."
)





# --------------------------------------------------------------------------------------------- ImageResize


def resize_matrix(n_in: int, n_out: int, method: str, antialias: bool) -> np.ndarray:
    """R (n_out, n_in) with resize(x) = R x along one axis, float64, as ``jax.image.resize``.

    "linear": the triangle filter at sample points (j + 1/2) n_in / n_out - 1/2, widened by n_in / n_out when
    downsampling with antialias, columns normalised, zero outside the image (jax's ``compute_weight_mat``).
    "nearest": input pixel floor((j + 1/2) n_in / n_out), computed in float32 as jax does.
    """
    if n_in == n_out:
        return np.eye(n_in)
    if method == "nearest":
        pos = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * np.float32(n_in) / np.float32(n_out)
        r = np.zeros((n_out, n_in))
        r[np.arange(n_out), np.floor(pos.astype(np.float32)).astype(np.int64)] = 1.0
        return r
    inv = 1.0 / (n_out / n_in)
    width = max(inv, 1.0) if antialias else 1.0
    sample = (np.arange(n_out) + 0.5) * inv - 0.5
    w = np.maximum(0.0, 1.0 - np.abs(sample[None, :] - np.arange(n_in, dtype=np.float64)[:, None]) / width)
    tot = w.sum(axis=0, keepdims=True)
    w = np.where(np.abs(tot) > 1000.0 * float(np.finfo(np.float32).eps), w / np.where(tot != 0, tot, 1), 0.0)
    w = np.where(((sample >= -0.5) & (sample <= n_in - 0.5))[None, :], w, 0.0)
    return w.T


def _resize_axes(ops: Arrays, x: Any, axes: tuple, sizes: tuple, method: str, antialias: bool) -> Any:
    """x with axis axes[j] resized to sizes[j] (-1: kept) by :func:`resize_matrix`."""
    xp = ops.xp
    for ax, n in zip(axes, sizes):
        if n == -1 or n == x.shape[ax]:
            continue
        r = xp.asarray(resize_matrix(x.shape[ax], n, method, antialias), x.dtype)
        x = xp.moveaxis(ops.matmul(r, xp.moveaxis(x, ax, -2)), -2, ax)
    return x


def _resize_map(lay: S.SpatialState, sizes: tuple, method: str, antialias: bool):
    k = lay.ndim
    axes = tuple(range(2, 2 + 2 * k))

    def grid(ops: Arrays, x: Any) -> Any:
        return None if x is None else _resize_axes(ops, x, axes, sizes + sizes, method, antialias)

    def fn(ops: Arrays, v1: Any, v2: Any, cov: Any, ntk: Any, ctx: S.Ctx) -> tuple:
        g = grid(ops, cov)
        if ctx.phase == 0:  # batch mode: self grids on the batch diagonal or in the extension
            n1, n2 = S.self_pixel_vars(ops, g, ctx.ext, k)
            return n1.astype(g.dtype), n2.astype(g.dtype), g, grid(ops, ntk), None
        if ctx.phase == 1:  # chunked self pairs: the resized grid is the image's own
            d = S.pixel_diag(ops, g, k)
            n1, n2 = S.own_vars(d, k)
            return n1, n2, g, grid(ops, ntk), d
        n1, n2 = S.recorded_vars(ctx.rec[key], k)  # chunked pairs of different images: recorded in phase 1
        return n1.astype(g.dtype), n2.astype(g.dtype), g, grid(ops, ntk), None

    key = next(_KEYS)
    return fn, key


@dataclass(frozen=True)
class ResizeMask:
    """neural-tangents' mask rule of ImageResize (``mask_fn``: ``~resize(~mask)`` cast to bool): an output position
    is valid when some valid input position contributes to it, masked when only masked ones do."""

    sizes: tuple
    method: str
    antialias: bool

    def __call__(self, ops: Arrays, m: Any, first: int) -> Any:
        """Validity ``m`` (spatial axes from ``first`` on) at the output positions."""
        axes = tuple(range(first, first + len(self.sizes)))
        hit = _resize_axes(ops, m, axes, self.sizes, self.method, self.antialias)  # weights >= 0: 0 iff none valid
        return ops.xp.where(hit > 0, 1.0, 0.0).astype(m.dtype)


def _resize_kernel(b: Builder, st: KernelState, p: Mapping[str, sp.Expr], static: Mapping[str, Any]) -> KernelState:
    sizes = static["shape"][1:-1]
    lay = S.require_spatial(st, "ImageResize", len(sizes), "shape", "shape=(-1,) + (16,) * ndim + (-1,)")
    if all(n == -1 for n in sizes):
        return st.replace(after="ImageResize")
    if lay.mode != "full" or not lay.self_grids:  # the planner guarantees this (Spatial(pairs=True))
        raise E.InternalError(f"ImageResize: reached a state without self grids ({lay}). Please report this bug.")
    fn, key = _resize_map(lay, sizes, static["method"], static["antialias"])
    out_lay, sources = lay, ()
    if lay.masked:  # masked pixels read as zero; an output reached only by masked pixels is masked (NT)
        out_lay = moved(lay, ResizeMask(tuple(sizes), static["method"], static["antialias"]))
        fn, sources = masked_op(fn, lay=lay, out_lay=out_lay), (S.MASK1, S.MASK2)
    v1, v2, cov, ntk = S.spatial_op(b, st, fn, "image_resize", n_extra=1, tag=key, sources=sources)[:4]
    return st.replace(cov1=v1, cov2=v2, nngp=cov, ntk=ntk, after="ImageResize", layout=out_lay)


def _resize_finite(p: Mapping[str, float], static: Mapping[str, Any], in_shape: tuple, width: int):
    sizes = static["shape"][1:-1]
    if len(in_shape) != len(sizes) + 1:
        raise E.LayerOrderError(S.WRONG_NDIM.format(layer="ImageResize", what="shape", got=len(sizes),
                                                    ndim=len(in_shape) - 1,
                                                    example=(-1,) + (16,) * (len(in_shape) - 1) + (-1,)))
    out = tuple(n if s == -1 else s for n, s in zip(in_shape[:-1], sizes)) + in_shape[-1:]
    prec = {"highest": jax.lax.Precision.HIGHEST, "high": jax.lax.Precision.HIGH,
            "default": jax.lax.Precision.DEFAULT}[static["precision"]]

    rule = ResizeMask(tuple(sizes), static["method"], static["antialias"])

    def apply(params: dict, x: jax.Array) -> jax.Array:
        if FINITE_MASK.get() is not None:  # masked inputs: zeroed, and the mask follows the kernel's rule
            x = finite_move(jnp.asarray(x), lambda m: rule(JAX_ARRAYS, m, 1), "ImageResize", "VALID")
        x = jnp.asarray(x)
        return jax.image.resize(x, (x.shape[0],) + out, static["method"], antialias=static["antialias"],
                                precision=prec)

    return (lambda key: {}), apply, out


def ImageResize(shape: Any, method: str, antialias: bool = True, precision: str = "highest",
                batch_axis: int = 0, channel_axis: int = -1) -> Layer:
    """Resize the spatial axes like ``jax.image.resize`` (neural-tangents' ``stax.ImageResize``).

    Args:
        shape: The output shape of every axis (batch, *spatial, channels); -1 keeps an axis. The batch and
            channel entries must be -1 (as NT's kernel_fn for the channels; NT's batch resizing is refused).
        method: "linear" (also "bilinear", "trilinear", "triangle") or "nearest"; the other jax methods have
            no kernel (as in NT).
        antialias: With "linear", widen the triangle filter when downsampling (jax's default True).
        precision: Matmul precision of the finite twin ("highest", "high", "default"); the kernel is exact.
        batch_axis: Must be 0 (kernelalg's images are (batch, *spatial, channels)).
        channel_axis: Must be -1.

    Returns:
        The layer.

    Example:
        >>> net = ka.Conv((3, 3), padding="SAME") >> ka.ImageResize((-1, 8, 8, -1), "linear")  # doctest: +SKIP
    """
    if (batch_axis, channel_axis) != (0, -1):
        raise E.KernelalgError(BAD_AXES.format(b=batch_axis, c=channel_axis))
    try:
        shp = tuple(int(v) for v in shape)
        ok = 3 <= len(shp) <= 5 and all(s == v and (s >= 1 or s == -1) for s, v in zip(shp, shape))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise E.KernelalgError(BAD_RESIZE_SHAPE.format(got=shape))
    if shp[0] != -1:
        raise E.KernelalgError(RESIZE_BATCH.format(got=shp[0]))
    if shp[-1] != -1:
        raise E.KernelalgError(RESIZE_CHANNELS.format(got=shp[-1]))
    name = getattr(method, "name", method)
    if not isinstance(name, str) or name.lower() not in RESIZE_METHODS:
        raise E.KernelalgError(BAD_METHOD.format(got=method))
    if precision not in ("highest", "high", "default"):
        raise E.KernelalgError(f"ImageResize: precision must be 'highest', 'high' or 'default', got {precision!r}. "
                               "Fix: precision='highest'.")
    static = (("shape", shp), ("method", RESIZE_METHODS[name.lower()]), ("antialias", bool(antialias)),
              ("precision", precision))
    pairs = any(s != -1 for s in shp[1:-1])
    return Layer("ImageResize", _resize_kernel, static=static, finite=_resize_finite,
                 input_layout=IMAGE_LAYOUTS[len(shp) - 2], role="pooling", spatial=Spatial(pairs=pairs))
