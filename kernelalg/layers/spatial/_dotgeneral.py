"""DotGeneral: multiplication by a constant array along the spatial axes (neural-tangents' ``stax.DotGeneral``).

``DotGeneral(rhs=A, dimension_numbers=((in_c, a_c), (in_b, a_b)))`` is ``lax.dot_general(x, A, ...)`` on inputs
x (batch, *spatial, channels); ``lhs=A`` puts the constant on the left (``dimension_numbers`` then lists A's axes
first, as in lax). Contracted axes ``in_c`` of x are summed against A's ``a_c``; "batch" axes ``in_b`` are
multiplied entrywise with A's ``a_b`` and kept; A's other (free) axes become new spatial axes. Only spatial axes
of x may be named: the batch axis is each input's own, and the channels are infinitely many in the kernel (a
contraction over them has no kernel; neural-tangents refuses it too).

Output axes in the house order (batch, *spatial, channels): the spatial axes of x that are not contracted (in
their order), then A's free axes (in their order), then the channels. This is ``lax.dot_general``'s own order
whenever A has no free axes and ``in_b`` is empty (every example of neural-tangents' docstring but the flip);
otherwise lax would put the dot batch axes first and A's free axes before the batch or after the channels, and
the layer moves them to keep the house order (the kernel values are the same numbers, in that order).

Kernel map: y = sum_p A(q, p) x(p) per channel is linear with a constant, so on the pixel-pair grid
K'(q, q') = sum_{p, p'} A(q, p) A(q', p') K(p, p') (one einsum, A on both pixel sides; an entrywise axis shares
its index with A). The NNGP, the NTK and each input's own grid transform alike; the per-pixel variances are the
diagonal of the transformed own grid (as after pooling), so the layer declares that it needs every pixel pair.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, replace
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
from kernelalg.layers.spatial._masks import FINITE_MASK, finite_move, masked_op, moved


BOTH_GIVEN = (
    "DotGeneral: both lhs and rhs are given, but the layer's input is the other factor. Fix: give one of them, "
    "e.g. DotGeneral(rhs=(1.0, -1.0), dimension_numbers=(((1,), (0,)), ((), ())))."
)
BAD_CONSTANT = "DotGeneral: {side} must be a finite real number or array, got {got!r}. Fix: e.g. {side}=(1.0, -1.0)."
BAD_DIMS = (
    "DotGeneral: dimension_numbers must be ((contracting of lhs, contracting of rhs), (batch of lhs, batch of "
    "rhs)), tuples of axis numbers of equal lengths, got {got!r}. Fix: e.g. (((1,), (0,)), ((), ()))."
)
AXIS_RANGE = (
    "DotGeneral: axis {axis} is out of range for the {what} of rank {rank}. Fix: name axes between {lo} and "
    "{hi}."
)
BATCH_AXIS = (
    "DotGeneral: the batch axis (0) of the inputs is {role}. A layer maps each input on its own, so this has no "
    "layer kernel. Fix: name only spatial axes (1 to {k}), and combine inputs outside the network."
)
CHANNEL_AXIS = (
    "DotGeneral: the channel axis ({axis}, the last) of the inputs is {role}; in the infinite-width limit the "
    "channels are infinitely many, so this has no kernel (neural-tangents refuses it too). Fix: name only "
    "spatial axes (1 to {k}); to mix channels, use Conv or Dense, which have weights."
)
SIZE_MISMATCH = (
    "DotGeneral: axis {ia} of the inputs has size {n} but axis {ca} of the constant has size {m}. Fix: give a "
    "constant whose paired axes match the spatial shape."
)
NO_SPATIAL_LEFT = (
    "DotGeneral: the output has no spatial axis left (every one is contracted and the constant has no free "
    "axis). Fix: for a sum over positions use GlobalSumPool() (or GlobalAvgPool()); or keep an axis."
)


@dataclass(frozen=True)
class _Geometry:
    """How one DotGeneral acts on inputs with ``k`` spatial axes: einsum letters of x, A and the output."""

    x: str
    a: str
    out: str
    k_out: int


def _constant(side: str, value: Any) -> tuple[tuple, np.ndarray]:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise E.KernelalgError(BAD_CONSTANT.format(side=side, got=value)) from None
    if not np.all(np.isfinite(arr)):
        raise E.KernelalgError(BAD_CONSTANT.format(side=side, got=value))
    return (arr.tolist() if arr.ndim else float(arr)), arr


def _as_tuple(v: Any) -> Any:
    return tuple(_as_tuple(e) for e in v) if isinstance(v, list) else v


def _dims(dimension_numbers: Any) -> tuple:
    try:
        (lc, rc), (lb, rb) = dimension_numbers
        out = tuple(tuple(tuple(int(i) for i in d) for d in pair) for pair in ((lc, rc), (lb, rb)))
        ok = all(int(i) == i and not isinstance(i, bool) for pair in dimension_numbers for d in pair for i in d)
    except (TypeError, ValueError):
        raise E.KernelalgError(BAD_DIMS.format(got=dimension_numbers)) from None
    if not ok or len(out[0][0]) != len(out[0][1]) or len(out[1][0]) != len(out[1][1]):
        raise E.KernelalgError(BAD_DIMS.format(got=dimension_numbers))
    return out


def _norm(axes: tuple, rank: int, what: str) -> tuple:
    for a in axes:
        if not -rank <= a < rank:
            raise E.KernelalgError(AXIS_RANGE.format(axis=a, what=what, rank=rank, lo=-rank, hi=rank - 1))
    out = tuple(a % rank for a in axes)
    if len(set(out)) != len(out):
        raise E.KernelalgError(BAD_DIMS.format(got=axes))
    return out


def geometry(k: int, a_ndim: int, is_lhs: bool, dims: tuple) -> _Geometry:
    """The einsum letters of DotGeneral on inputs with ``k`` spatial axes (checks the axes it names)."""
    (lc, rc), (lb, rb) = dims
    (a_c, in_c), (a_b, in_b) = ((lc, rc), (lb, rb)) if is_lhs else ((rc, lc), (rb, lb))
    rank = k + 2
    in_c, in_b = _norm(in_c, rank, "inputs"), _norm(in_b, rank, "inputs")
    a_c, a_b = _norm(a_c, a_ndim, "constant"), _norm(a_b, a_ndim, "constant")
    if set(in_c) & set(in_b) or set(a_c) & set(a_b):
        raise E.KernelalgError(BAD_DIMS.format(got=dims))
    for role, axes in (("contracted", in_c), ("a dot batch axis", in_b)):
        if 0 in axes:
            raise E.KernelalgError(BATCH_AXIS.format(role=role, k=k))
        if rank - 1 in axes:
            raise E.KernelalgError(CHANNEL_AXIS.format(axis=rank - 1, role=role, k=k))
    letters = iter(string.ascii_letters[2:])  # a and b are the kernel's batch axes
    xl = [next(letters) for _ in range(rank)]
    al = [""] * a_ndim
    for i, j in zip(in_c + in_b, a_c + a_b):
        al[j] = xl[i]
    free = [j for j in range(a_ndim) if not al[j]]
    for j in free:
        al[j] = next(letters)
    kept = [xl[i] for i in range(1, rank - 1) if i not in in_c]
    out = [xl[0]] + kept + [al[j] for j in free] + [xl[-1]]
    return _Geometry("".join(xl), "".join(al), "".join(out), len(out) - 2)


def _pairs_of(geo: _Geometry, arr_shape: tuple, x_shape: tuple) -> None:
    """Refuse constants whose paired axes do not match the spatial shape ``x_shape`` (with batch and channel)."""
    for ca, letter in enumerate(geo.a):
        if letter in geo.x:
            ia = geo.x.index(letter)
            if x_shape[ia] != arr_shape[ca]:
                raise E.KernelalgError(SIZE_MISMATCH.format(ia=ia, n=x_shape[ia], ca=ca, m=arr_shape[ca]))


def _prime(letters: str) -> str:
    """The primed letters (the pixels of x') of spatial/free letters: upper case (never used unprimed)."""
    return letters.upper()


def _grid_spec(geo: _Geometry) -> str:
    sp_in, sp_out = geo.x[1:-1], geo.out[1:-1]
    a1, a2 = geo.a, _prime(geo.a)
    return f"ab{sp_in}{_prime(sp_in)},{a1},{a2}->ab{sp_out}{_prime(sp_out)}"


def _dot_map(lay: S.SpatialState, geo: _Geometry, arr: np.ndarray):
    spec, k_out = _grid_spec(geo), geo.k_out

    def grid(ops: Arrays, x: Any) -> Any:
        if x is None:
            return None
        a = ops.xp.asarray(arr, x.dtype)
        return ops.einsum(spec, x, a, a)

    def fn(ops: Arrays, v1: Any, v2: Any, cov: Any, ntk: Any, ctx: S.Ctx) -> tuple:
        _pairs_of(geo, arr.shape, (0,) + tuple(cov.shape[2:2 + lay.ndim]) + (0,))
        g = grid(ops, cov)
        if ctx.phase == 0:  # batch mode: self grids on the batch diagonal or in the extension
            n1, n2 = S.self_pixel_vars(ops, g, ctx.ext, k_out)
            return n1.astype(g.dtype), n2.astype(g.dtype), g, grid(ops, ntk), None
        if ctx.phase == 1:  # chunked self pairs: the transformed grid is the image's own
            d = S.pixel_diag(ops, g, k_out)
            n1, n2 = S.own_vars(d, k_out)
            return n1, n2, g, grid(ops, ntk), d
        n1, n2 = S.recorded_vars(ctx.rec[key], k_out)  # chunked pairs of different images: recorded in phase 1
        return n1.astype(g.dtype), n2.astype(g.dtype), g, grid(ops, ntk), None

    key = next(S.RECORD_KEYS)
    return fn, key


@dataclass(frozen=True)
class DotMask:
    """neural-tangents' mask rule of DotGeneral (``mask_fn``: ``~dot_general(~mask)`` with the constant cast to bool):
    an output position is valid when some valid input position reaches it with a nonzero weight. ``spec`` is the
    einsum of a validity (batch axes, then the spatial axes) with the constant's nonzero pattern ``support``."""

    spec: str
    support: tuple

    def __call__(self, ops: Arrays, m: Any, first: int) -> Any:
        """Validity ``m`` (B1, B2, *S) (``first`` = 2) at the output positions."""
        a = ops.xp.asarray(np.asarray(self.support, dtype=np.float64), m.dtype)
        return ops.xp.where(ops.einsum(self.spec, m, a) > 0.5, 1.0, 0.0).astype(m.dtype)


def _mask_rule(geo: _Geometry, arr: np.ndarray, batch: str) -> DotMask:
    """The rule on validities with batch letters ``batch`` ("ab" on the kernel grid, "" reused by the twin)."""
    sp_in, sp_out = geo.x[1:-1], geo.out[1:-1]
    return DotMask(f"{batch}{sp_in},{geo.a}->{batch}{sp_out}", _as_tuple((arr != 0).tolist()))


def _dot_kernel(b: Builder, st: KernelState, p: Mapping[str, sp.Expr], static: Mapping[str, Any]) -> KernelState:
    lay = S.require_spatial(st, "DotGeneral")
    if lay.mode != "full" or not lay.self_grids:  # the pre-pass guarantees this (Spatial(pairs=True))
        raise E.InternalError(f"DotGeneral reached a state without self grids ({lay}). Please report this bug.")
    is_lhs = static["rhs"] is None
    arr = np.asarray(static["lhs"] if is_lhs else static["rhs"], dtype=np.float64)
    geo = geometry(lay.ndim, arr.ndim, is_lhs, static["dimension_numbers"])
    if geo.k_out == 0:
        raise E.KernelalgError(NO_SPATIAL_LEFT)
    fn, key = _dot_map(lay, geo, arr)
    out_lay, sources = replace(lay, ndim=geo.k_out), ()
    if lay.masked:  # masked pixels read as zero; an output position reached by no valid pixel is masked (NT)
        out_lay = moved(out_lay, _mask_rule(geo, arr, "ab"))
        fn, sources = masked_op(fn, lay=lay, out_lay=out_lay), (S.MASK1, S.MASK2)
    v1, v2, cov, ntk = S.spatial_op(b, st, fn, "dot_general", n_extra=1, tag=key, sources=sources)[:4]
    return st.replace(cov1=v1, cov2=v2, nngp=cov, ntk=ntk, after="DotGeneral", layout=out_lay)


def _dot_finite(p: Mapping[str, float], static: Mapping[str, Any], in_shape: tuple, width: int):
    is_lhs = static["rhs"] is None
    arr = np.asarray(static["lhs"] if is_lhs else static["rhs"], dtype=np.float64)
    geo = geometry(len(in_shape) - 1, arr.ndim, is_lhs, static["dimension_numbers"])
    if geo.k_out == 0:
        raise E.KernelalgError(NO_SPATIAL_LEFT)
    _pairs_of(geo, arr.shape, (0,) + tuple(in_shape))
    spec = f"{geo.x},{geo.a}->{geo.out}"
    sizes = dict(zip(geo.x[1:], in_shape)) | dict(zip(geo.a, arr.shape))
    out_shape = tuple(sizes[c] for c in geo.out[1:])

    rule = _mask_rule(geo, arr, geo.x[0])

    def apply(params: dict, x: jax.Array) -> jax.Array:
        if FINITE_MASK.get() is not None:  # masked inputs: zeroed, and the mask follows the rule of the kernel
            x = finite_move(jnp.asarray(x), lambda m: rule(JAX_ARRAYS, m, 1), "DotGeneral", "VALID")
        x = jnp.asarray(x)
        return jnp.einsum(spec, x, jnp.asarray(arr, x.dtype), precision=jax.lax.Precision.HIGHEST)

    return (lambda key: {}), apply, out_shape


def DotGeneral(lhs: Any = None, rhs: Any = None, dimension_numbers: Any = (((), ()), ((), ()))) -> Layer:
    """Multiply by a constant array along spatial axes (neural-tangents' ``stax.DotGeneral``).

    Args:
        lhs: A constant on the left (``lax.dot_general(lhs, x, ...)``), or None.
        rhs: A constant on the right (``lax.dot_general(x, rhs, ...)``), or None. With neither given, the layer
            is the identity.
        dimension_numbers: ``((lhs contracting, rhs contracting), (lhs batch, rhs batch))`` as in
            ``lax.dot_general``; the axes of x named there must be spatial (1 .. ndim).

    Returns:
        The layer; its output axes are (batch, kept spatial axes, the constant's free axes, channels).

    Example:
        >>> diff = ka.DotGeneral(rhs=(1.0, -1.0), dimension_numbers=(((1,), (0,)), ((), ())))  # doctest: +SKIP
        >>> net = ka.Conv((1, 3)) >> ka.Relu() >> diff >> ka.GlobalAvgPool() >> ka.Dense()    # doctest: +SKIP
    """
    if lhs is not None and rhs is not None:
        raise E.KernelalgError(BOTH_GIVEN)
    dims = _dims(dimension_numbers)
    if lhs is None and rhs is None:
        lhs_v, rhs_v = None, 1.0  # the identity: x * 1
        if dims != (((), ()), ((), ())):
            raise E.KernelalgError(BAD_DIMS.format(got=dimension_numbers))
    else:
        lhs_v = None if lhs is None else _as_tuple(_constant("lhs", lhs)[0])
        rhs_v = None if rhs is None else _as_tuple(_constant("rhs", rhs)[0])
    static = (("lhs", lhs_v), ("rhs", rhs_v), ("dimension_numbers", dims))
    return Layer("DotGeneral", _dot_kernel, static=static, finite=_dot_finite, role="reshape",
                 spatial=Spatial(pairs=True))
