"""Image input layouts (NLC, NHWC, NDHWC): the pre-pass over the network and the input arrays.

Defines the input layouts "spatial1d", "spatial2d", "spatial3d" (:data:`IMAGE_LAYOUTS`; inputs
(batch, *spatial, channels), input kernel x(p).x'(p')/C as neural-tangents) that Conv and pooling layers
declare. ``plan`` decides, once per network, how its kernel is
stored and evaluated (see :mod:`kernelalg.layers.spatial._grid`).
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any

import jax
import numpy as np
import sympy as sp

from kernelalg.backends import Arrays
from kernelalg.core import _errors as E
from kernelalg.backends._compile import check_input
from kernelalg.core._inputs import InputLayout, sample_ids
from kernelalg.core._program import ID1, ID2, Q1, Q2, C, D, KernelState
from kernelalg.layers.spatial._masks import MaskedImages, check_constant, mask_env, masked_net
from kernelalg.layers.spatial._grid import (
    CTX,
    IMG1,
    IMG2,
    SAME_GRID,
    Ctx,
    SpatialState,
    ext_vars,
    layout_name,
    own_vars,
)

#: Batch evaluation: automatic tiles keep one per-pair array of the pixel-pair grid below this many bytes.
TILE_BYTES = 2**27

BAD_IMAGE_RANK = (
    "{name} must be a {rank}-D array (batch, {axes}, channels) for this network, got shape {shape}. "
    "Fix: {fix}."
)
SPATIAL_OUT_NEEDS_SYMMETRIC = (
    "This network pools (AvgPool/SumPool) but ends without a readout, so its kernel keeps pixel axes; with "
    "x2 given that case is not supported (tiles with x2 included). Fix: end the network with Flatten(), "
    "GlobalAvgPool() or GlobalSumPool(), or call the kernel with x2=None and batch_size=None."
)

_AXES = {1: "length", 2: "height, width", 3: "depth, height, width"}


def _stats(lay: SpatialState) -> KernelState:
    return KernelState(Q1, Q2, C, sp.Integer(0), gaussian=False, width=D, after="the input", layout=lay)


def _env(lay: SpatialState, x1: Any, x2: Any, ops: Arrays) -> dict:
    ch = x1.shape[-1]
    id1, id2 = sample_ids(ops.xp, x1, x2)
    ids = {ID1: id1[:, None], ID2: id2[None, :]}  # for the dense arrays after a readout
    if lay.chunked:  # the readout's Op builds the pixel-pair arrays chunk by chunk from the images
        return {D: float(ch), IMG1: x1, IMG2: x2, **ids}
    xp, k, s = ops.xp, lay.ndim, x1.shape[1:-1]
    other = x1 if x2 is None else x2
    d1 = xp.sum(x1 * x1, axis=-1) / ch
    d2 = d1 if x2 is None else xp.sum(other * other, axis=-1) / ch
    same = xp.where(id1[:, None] == id2[None, :], 1.0, 0.0).astype(x1.dtype)
    env = {D: float(ch), CTX: Ctx(live=ops.live(x1.reshape(-1)[0])), SAME_GRID: same, **ids}  # live: true, not foldable
    if lay.mode == "diag":
        c = ops.einsum("n...c,m...c->nm...", x1, other) / ch
        env.update({Q1: d1[:, None], Q2: d2[None], C: c})
        return env
    a, bb = x1.reshape(len(x1), -1, ch), other.reshape(len(other), -1, ch)
    c = ops.einsum("npc,mqc->nmpq", a, bb) / ch
    ones = (1,) * k
    if lay.self_grids and x2 is not None:
        if lay.spatial_out:
            raise E.InputError(SPATIAL_OUT_NEEDS_SYMMETRIC)
        p = a.shape[1]
        g1 = ops.einsum("npc,nqc->npq", a, a) / ch
        g2 = ops.einsum("npc,nqc->npq", bb, bb) / ch
        top = xp.concatenate([c, g1[:, None]], axis=1)
        bottom = xp.concatenate([g2[None], xp.zeros((1, 1, p, p), c.dtype)], axis=1)
        c = xp.concatenate([top, bottom], axis=0)
        v1, v2 = ext_vars(ops, d1, d2, k)
        n, m = same.shape  # the extension holds self pairs: (i, M) and (N, j)
        same = xp.concatenate([xp.concatenate([same, xp.ones((n, 1), same.dtype)], axis=1),
                               xp.ones((1, m + 1), same.dtype)], axis=0)
        env.update({Q1: v1, Q2: v2, C: c.reshape(c.shape[:2] + s + s), CTX: Ctx(ext=True, live=env[CTX].live),
                    SAME_GRID: same})
        return env
    env.update({Q1: d1.reshape((len(x1), 1) + s + ones), Q2: d2.reshape((1, len(other)) + ones + s),
                C: c.reshape(c.shape[:2] + s + s)})
    return env


#: The input arrays of a pixel-pair state in batch mode (not chunked): ``pixel_pair_env(lay, x1, x2, arrays)``.
pixel_pair_env = _env


def pair_inputs(ops: Arrays, lay: SpatialState, a: Any, b: Any) -> dict:
    """Input arrays of a chunk of image pairs a[i], b[i] (each (B, *S, C)): batch axes (B, 1)."""
    xp = ops.xp
    ch, s, k = a.shape[-1], a.shape[1:-1], a.ndim - 2  # the images' own axes (layers may change lay.ndim later)
    d1 = (xp.sum(a * a, axis=-1) / ch)[:, None]
    d2 = (xp.sum(b * b, axis=-1) / ch)[:, None]
    if lay.mode == "diag":
        c = xp.sum(a * b, axis=-1)[:, None] / ch
        return {Q1: d1, Q2: d2, C: c}
    fa, fb = a.reshape(len(a), -1, ch), b.reshape(len(b), -1, ch)
    c = ops.einsum("npc,nqc->npq", fa, fb) / ch
    v1, v2 = own_vars(d1, k)[0], own_vars(d2, k)[1]
    return {Q1: v1, Q2: v2, C: c.reshape((len(a), 1) + s + s)}


def _prepare(ndim: int, x1: Any, x2: Any) -> tuple[Any, Any]:
    rank = ndim + 2
    fix = {1: "x[..., None] for one channel", 2: "x[..., None] for grey images (NHWC)",
           3: "x[..., None] for one channel (NDHWC)"}[ndim]
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None and np.ndim(x) != rank:
            raise E.InputError(BAD_IMAGE_RANK.format(name=name, rank=rank, axes=_AXES[ndim],
                                                     shape=tuple(np.shape(x)), fix=fix))
    x1 = check_input("x1", x1, fix, rank)
    if x2 is not None:
        x2 = check_input("x2", x2, fix, rank)
        if x1.shape[1:] != x2.shape[1:]:
            raise E.InputError(E.FEATURE_MISMATCH.format(d1=x1.shape[1:], d2=x2.shape[1:]))
    return x1, x2


def _auto_batch(lay: SpatialState, x1: Any, x2: Any) -> int | None:
    if lay.spatial_out or lay.chunked:  # chunked: memory is bounded inside the jitted program
        return None
    p = math.prod(x1.shape[1:-1])
    pair = (p * p if lay.mode == "full" else p) * np.dtype(x1.dtype).itemsize
    return max(1, math.isqrt(max(1, TILE_BYTES // pair)))


def plan(net: Any, ndim: int) -> SpatialState:
    """Pre-pass over the network (as neural-tangents' ``diagonal_spatial`` requirements).

    Full pixel-pair grids iff some layer pools (or the kernel keeps pixel axes), the matching-pixel
    diagonal otherwise (Flatten readout). With exactly one readout, everything before it is evaluated
    pair by pair in chunks (bounded memory, symmetric half when x2 is None).
    """
    needs = [leaf.spatial for leaf in net.leaves() if leaf.spatial is not None]
    pooled = any(s.pairs for s in needs)
    readouts = sum(s.readout for s in needs)
    mode = "full" if pooled or not readouts else "diag"
    return SpatialState(ndim, mode, self_grids=pooled, spatial_out=not readouts, chunked=readouts == 1)


def _specialize(base: InputLayout, ndim: int, net: Any) -> InputLayout:
    lay = plan(net, ndim)
    return dataclasses.replace(base, stats=partial(_stats, lay), env=partial(_env, lay),
                               auto_batch=partial(_auto_batch, lay), specialize=None)


def _image_layout(k: int) -> InputLayout:
    base = InputLayout(layout_name(k), k + 2, partial(_stats, SpatialState(k, "full")),
                       partial(_env, SpatialState(k, "full")),
                       rank_fix=f"reshape to (batch, {_AXES[k]}, channels)", prepare=partial(_prepare, k),
                       mask=partial(_mask, k))
    return dataclasses.replace(base, specialize=partial(_specialize, base, k))


# ------------------------------------------------------------------------------------ masked images


def _masked_env(lay: SpatialState, x1: MaskedImages, x2: MaskedImages | None, ops: Arrays) -> dict:
    env = _env(lay, x1.x, None if x2 is None else x2.x, ops)
    return mask_env(env, x1.valid, None if x2 is None else x2.valid, ops, lay.ndim, lay.mode, env[CTX].ext)


def _masked_prepare(ndim: int, x1: Any, x2: Any) -> tuple[Any, Any]:
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None and not isinstance(x, MaskedImages):
            raise E.InternalError(f"{name}: a masked image network got {type(x).__name__}. Please report this bug.")
    return x1, x2


def _masked_layout(net: Any, k: int) -> InputLayout:
    """The image layout of ``net`` with pixel masks: the planned grid, evaluated in batches (not chunked)."""
    lay = dataclasses.replace(plan(net, k), chunked=False, masked=True)  # batch evaluation: masks are per image
    return InputLayout(layout_name(k), k + 2, partial(_stats, lay), partial(_masked_env, lay),
                       rank_fix=f"reshape to (batch, {_AXES[k]}, channels)", prepare=partial(_masked_prepare, k))


def _mask(k: int, net: Any, x1: Any, x2: Any, constant: Any) -> tuple:
    c = check_constant(constant)
    m1 = MaskedImages.from_constant("x1", x1 if isinstance(x1, jax.Array) else np.asarray(x1), c)
    m2 = None if x2 is None else MaskedImages.from_constant("x2", x2 if isinstance(x2, jax.Array) else np.asarray(x2), c)
    z1, z2 = _prepare(k, m1.x, None if m2 is None else m2.x)  # ranks, dtypes, finiteness of the zeroed images
    m1 = MaskedImages(z1, m1.valid.astype(z1.dtype))
    m2 = None if m2 is None else MaskedImages(z2, m2.valid.astype(z2.dtype))
    return masked_net(net, partial(_masked_layout, k=k)), m1, m2


#: Input layouts of images with 1, 2, 3 spatial axes (NLC, NHWC, NDHWC), by number of spatial axes.
IMAGE_LAYOUTS: dict[int, InputLayout] = {k: _image_layout(k) for k in (1, 2, 3)}
