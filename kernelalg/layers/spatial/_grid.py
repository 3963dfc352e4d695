"""Pixel-pair kernel states of image networks and the linear maps behind Conv and pooling.

A conv net's kernel lives on pixel pairs (Arora et al., "On Exact Computation with an Infinitely Wide
Neural Net", NeurIPS 2019; Novak et al., ICLR 2019): with S the spatial shape, the state of a pair of
images is an array over (p, p') in S x S. Nonlinearities act per pixel pair (elementwise, so the
activation layers apply unchanged); convolutions and pooling are linear maps on the grid, emitted as named
:class:`~kernelalg.core._program.Op` s written once against a backend's array namespace
(:class:`kernelalg.backends.Arrays`: JAX for the compiled kernel, NumPy for the reference). Two storage
modes, chosen once per network by a pre-pass (:func:`kernelalg.layers.spatial._inputs.plan`, as
neural-tangents' ``diagonal_spatial``):

* ``"diag"``: only matching pixels p = p' (enough when the readout is Flatten and nothing pools):
  cov/ntk (B1, B2, *S), var1 (B1, 1 or B2, *S), var2 likewise.
* ``"full"``: all pixel pairs: cov/ntk (B1, B2, *S, *S') (the pixels of x1 first, then those of x2),
  var1 (.., *S, 1..1), var2 (.., 1..1, *S') -- per-pixel variances broadcast against the grid.

Batch axes (B1, B2): in the usual *chunked* evaluation (one readout; :mod:`kernelalg.layers.spatial._pairs`)
they are (pairs in the chunk, 1). Otherwise ("batch" evaluation: kernels that keep pixel axes, several
readouts) they are (N, M). Pooling mixes pixels, so after it the per-pixel variance of x needs x's own
pixel-pair grid ("self grid"): chunked, it is recorded from the pair (x, x) first; batched with
x2 = None, it is the batch diagonal; batched with x2 given, the batch axes are *extended* by one:
entry (i, M) holds the self grid of x1[i] and (N, j) that of x2[j] (entry (N, M) is a placeholder).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy as sp

from kernelalg.backends import Arrays, structural
from kernelalg.core import _errors as E
from kernelalg.core._program import Builder, KernelState

#: Bound to a :class:`Ctx` at evaluation time (how the batch axes of the arrays are organised).
CTX = sp.Symbol("spatial_ctx")
#: Chunked mode: bound to the raw images x1 (N, *S, C) and x2 (M, *S, C) or None.
IMG1 = sp.Symbol("img1")
IMG2 = sp.Symbol("img2")
#: Per image pair of the grid's batch axes (B1, B2): 1 for an image with itself (the same input; see
#: :data:`kernelalg.core._program.ID1`), else 0. Read by layers that draw fresh randomness per input (Dropout).
SAME_GRID = sp.Symbol("same_grid", nonnegative=True)
#: Masked inputs (see :mod:`kernelalg.layers.spatial._masks`): per-pixel validity (1 valid, 0 masked) of the
#: first image of each pair, shaped like var1, and of the second, shaped like var2.
MASK1 = sp.Symbol("pixel_mask1", nonnegative=True)
MASK2 = sp.Symbol("pixel_mask2", nonnegative=True)
PADDINGS = ("SAME", "VALID", "CIRCULAR")
#: Tags of the ops that leave a phase-1 record (pooling, DotGeneral, attention): one counter for all of them, so
#: that two such layers of one network never share a tag (``Ctx.rec`` is keyed by it).
RECORD_KEYS = itertools.count()

NOT_SPATIAL = (
    "{layer} needs inputs with spatial axes, but it follows {after}, whose output has none. "
    "Fix: put {layer} before the readout (Flatten, GlobalAvgPool, GlobalSumPool), and give the network "
    "images (batch, *spatial, channels)."
)
WRONG_NDIM = (
    "{layer}: {what} has {got} spatial dimension(s) but the input images have {ndim}. "
    "Fix: give one entry per spatial axis, e.g. {example}."
)
TOO_SMALL = (
    "{layer}: the window {window} does not fit the {size} pixels of spatial axis {axis} with padding "
    "'VALID'. Fix: use padding='SAME', a smaller window, or larger images."
)
BAD_PADDING = "{layer}: padding must be one of {choices}, got {got!r}. Fix: e.g. padding='SAME'."
MASKED_OP = (
    "{op}: this layer does not support masked inputs (mask_constant) yet; supported are Dense, activations, "
    "Conv, ConvLocal, ConvTranspose, AvgPool and SumPool (padding 'SAME' or 'VALID', any strides), ImageResize, "
    "Index, DotGeneral, GlobalSelfAttention, Aggregate, GlobalAvgPool, GlobalSumPool and Flatten. Fix: call the "
    "kernel without mask_constant, or build the network from the supported layers."
)
BAD_SHAPE = "{layer}: {what} must be a non-empty sequence of positive integers, got {got!r}. Fix: e.g. {example}."

_LAYOUT_NAMES = {1: "spatial1d", 2: "spatial2d", 3: "spatial3d"}


@dataclass(frozen=True)
class Ctx:
    """Evaluation context of the spatial Ops (a static Python value bound to :data:`CTX`).

    Attributes:
        ext: Batch mode: the batch axes carry the self-grid extension (N+1, M+1).
        phase: 0 batch mode; 1 chunked self pairs (each pair is an image with itself); 2 chunked pairs of
            different images, whose per-pixel variances after pooling come from ``rec``.
        rec: Phase 2: {op tag: (record of the row images, record of the column images)}, gathered from the
            phase-1 outputs of the tagged ops (pooling: per-pixel variances (B, *S)).
        live: A runtime-true predicate for :attr:`Arrays.isolated <kernelalg.backends.Arrays>` (each layer's
            map as a computation of its own), or None.
    """

    ext: bool = False
    phase: int = 0
    rec: Any = None
    live: Any = None


@dataclass(frozen=True)
class SpatialState:
    """Layout record of a kernel state on pixel pairs (the ``layout`` field of :class:`KernelState`).

    Attributes:
        ndim: Number of spatial axes (1, 2, 3).
        mode: "diag" (matching pixels only) or "full" (all pixel pairs).
        self_grids: Full mode with pooling: self grids are carried (batch diagonal or extension).
        spatial_out: The network ends without a readout (its kernel keeps pixel axes).
        chunked: One readout: everything before it runs pair by pair in chunks (see
            :mod:`kernelalg.layers.spatial._pairs`); the per-pair arrays then have batch axes (b, 1).
        masked: The inputs carry pixel masks (:mod:`kernelalg.layers.spatial._masks`): full mode, batch evaluation.
        mask_path: Masked inputs: the windows ((window, strides, padding), ...) of the shape-changing layers
            before this state (VALID or strided Conv, ConvLocal, AvgPool, SumPool; appended by
            :func:`kernelalg.layers.spatial._masks.path_after`) or their own mask rules (ConvTranspose;
            :func:`kernelalg.layers.spatial._masks.moved`), through which the input masks are carried to
            the current positions (:func:`kernelalg.layers.spatial._masks.current_masks`).
    """

    ndim: int
    mode: str
    self_grids: bool = False
    spatial_out: bool = False
    chunked: bool = False
    name: str = "spatial"
    masked: bool = False
    mask_path: tuple = ()


def layout_name(ndim: int) -> str:
    """Name of the input layout of images with ``ndim`` spatial axes."""
    return _LAYOUT_NAMES[ndim]


def check_tuple(layer: str, what: str, value: Any, example: str) -> tuple[int, ...]:
    """Validate a filter/window/stride shape: a non-empty tuple of positive integers (1 to 3 entries)."""
    try:
        out = tuple(int(v) for v in value)
        ok = 1 <= len(out) <= 3 and all(o == v and o >= 1 for o, v in zip(out, value))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise E.KernelalgError(BAD_SHAPE.format(layer=layer, what=what, got=value, example=example))
    return out


def check_padding(layer: str, padding: Any) -> str:
    if not isinstance(padding, str) or padding.upper() not in PADDINGS:
        raise E.KernelalgError(BAD_PADDING.format(layer=layer, choices=PADDINGS, got=padding))
    return padding.upper()


def require_spatial(st: KernelState, layer: str, ndim: int | None = None, what: str = "", example: str = "") -> SpatialState:
    """The state's :class:`SpatialState`, or a :class:`LayerOrderError` naming the fix."""
    lay = st.layout
    if not isinstance(lay, SpatialState):
        raise E.LayerOrderError(NOT_SPATIAL.format(layer=layer, after=st.after))
    if ndim is not None and ndim != lay.ndim:
        raise E.LayerOrderError(WRONG_NDIM.format(layer=layer, what=what, got=ndim, ndim=lay.ndim,
                                                  example=example))
    return lay


def refuse_masked(st: KernelState, op: str) -> None:
    """A clear error when the pixel-mixing op ``op`` meets masked inputs it does not support."""
    if isinstance(st.layout, SpatialState) and st.layout.masked:
        raise E.KernelalgError(MASKED_OP.format(op=op))


def spatial_op(b: Builder, st: KernelState, fn: Any, name: str, n_extra: int = 0, tag: Any = None,
               key: Any = None, sources: Sequence[sp.Symbol] = ()) -> list:
    """Emit the Op ``name``: ``fn(arrays, var1, var2, cov, ntk, ctx) -> (var1', var2', cov', ntk', *extra)``.

    ``fn`` is backend-neutral (``arrays`` is the backend's :class:`~kernelalg.backends.Arrays`). Entries that are
    the number 0 (the NTK of the input) are passed as None and must come back as None (they stay 0: every map
    here is linear). ``ctx`` is the :class:`Ctx` bound to :data:`CTX`. Returns the four new entries followed by
    ``n_extra`` further symbols. ``tag`` is the Op's tag (pooling ops whose last output is a phase-1 record);
    ``key``, if given, the static settings that determine ``fn`` (the Op may then be scanned with its equals).
    ``sources``: further input symbols, whose arrays are passed to ``fn`` after ``ctx`` (e.g. graph patterns).
    """
    if MASK1 not in sources:
        refuse_masked(st, name)
    exprs = st.exprs
    live = [i for i, e in enumerate(exprs) if not (e.is_Number and e == 0)]
    # a constant variance (e.g. 1 after Sign, whose output is +-1 everywhere) becomes a per-pixel array
    consts = {i: float(exprs[i]) for i in live if exprs[i].is_Number and i in (0, 1)}
    arrays_in = [i for i in live if i not in consts]
    if 2 not in arrays_in or any(not exprs[i].is_Symbol for i in arrays_in):
        raise E.InternalError(f"{name}: unmaterialised state {exprs}. Please report this bug.")

    def op(ops: Arrays, *arrays: Any) -> tuple:
        args: list = [None] * 4
        for i, a in zip(arrays_in, arrays):
            args[i] = a
        for i, c in consts.items():
            args[i] = ops.xp.full(var_shape(st.layout, args[2].shape, i), c, args[2].dtype)
        outs = fn(ops, *args, *arrays[len(arrays_in):])
        return tuple(outs[i] for i in live) + tuple(outs[4:])

    op_key = None if key is None else (name, key, tuple(live), tuple(sorted(consts.items())), n_extra)
    syms = b.emit(name, structural(op), [exprs[i] for i in arrays_in] + [CTX, *sources], len(live) + n_extra, stem="s",
                  tag=tag, key=op_key)
    out: list = list(exprs)
    for i, sym in zip(live, syms):
        out[i] = sym
    return out + list(syms[len(live):])


def var_shape(lay: SpatialState, cov_shape: tuple, i: int) -> tuple:
    """Shape of var1 (i = 0) or var2 (i = 1) next to a cov array of ``cov_shape`` (see the module docstring)."""
    if lay.mode == "diag":
        return cov_shape
    k = lay.ndim
    ones = (1,) * k
    return cov_shape[:2] + (cov_shape[2:2 + k] + ones if i == 0 else ones + cov_shape[2 + k:2 + 2 * k])


# ----------------------------------------------------------------------------------- window arithmetic


def pads(n: int, f: int, s: int, padding: str, layer: str = "Conv", axis: int = 0) -> tuple[int, int, int]:
    """(pad_lo, pad_hi, out_size) of one axis, lax's rules ('CIRCULAR' pads like 'SAME')."""
    if padding == "VALID":
        lo = hi = 0
        if n < f:
            raise E.KernelalgError(TOO_SMALL.format(layer=layer, window=f, size=n, axis=axis))
    else:
        out = -(-n // s)
        total = max((out - 1) * s + f - n, 0)
        lo, hi = total // 2, total - total // 2
    return lo, hi, (n + lo + hi - f) // s + 1


def _pad(ops: Arrays, x: Any, axes: Sequence[int], amounts: Sequence[tuple[int, int]], circular: bool) -> Any:
    """x padded by ``amounts`` on ``axes``: periodically (CIRCULAR, numpy's 'wrap') or with zeros."""
    cfg = [(0, 0)] * x.ndim
    for a, p in zip(axes, amounts):
        cfg[a] = p
    if all(p == (0, 0) for p in cfg):
        return x
    return ops.xp.pad(x, cfg, mode="wrap") if circular else ops.pad(x, cfg)


def _window_sum(ops: Arrays, x: Any, axes: Sequence[int], offsets: Any, padding: Sequence[tuple[int, int]],
                strides: Sequence[int], outs: Sequence[int], circular: bool) -> Any:
    """sum over offset tuples o (one entry per axis) of x(s i + o - pad_lo) on ``axes``; zero outside x
    (SAME/VALID) or periodic (CIRCULAR, as neural-tangents).

    x is padded once, then every offset is a plain strided slice of the padded array: the sum is one loop
    without bounds tests (measured 3x faster on CPU than zero-padding each shifted slice separately).
    """
    p = _pad(ops, x, axes, padding, circular)
    acc = None
    for offs in offsets:
        start, limit, step = [0] * p.ndim, list(p.shape), [1] * p.ndim
        for ax, o, s, out in zip(axes, offs, strides, outs):
            start[ax], limit[ax], step[ax] = o, o + s * (out - 1) + 1, s
        w = ops.slice(p, start, limit, step)
        acc = w if acc is None else acc + w
    return acc


def pair_conv(ops: Arrays, x: Any, filt: Sequence[int], strides: Sequence[int], padding: str,
              layer: str = "Conv") -> Any:
    """Aligned window mean on the full pixel-pair grid: the conv stencil of Arora et al. (2019).

    out(i, i') = (1/|F|) sum_{a in F} x(s i + a - lo, s i' + a - lo) (zero outside the image for SAME,
    periodic for CIRCULAR): one pass summing |F| shifted slices.

    Args:
        x: (B1, B2, *S, *S') array.
    """
    k = len(filt)
    axes, amounts, outs, st = [], [], [], []
    for d in range(k):
        for ax in (2 + d, 2 + k + d):
            lo, hi, out = pads(x.shape[ax], filt[d], strides[d], padding, layer, d)
            axes.append(ax), amounts.append((lo, hi)), outs.append(out), st.append(strides[d])
    offsets = [tuple(o for o in offs for _ in (0, 1)) for offs in itertools.product(*(range(f) for f in filt))]
    return _window_sum(ops, x, axes, offsets, amounts, st, outs, padding == "CIRCULAR") / math.prod(filt)


def box(ops: Arrays, x: Any, axes: Sequence[int], window: Sequence[int], strides: Sequence[int], padding: str,
        layer: str = "Conv") -> Any:
    """Window sums along ``axes`` (axis ``axes[j]`` uses ``window[j]``, ``strides[j]``), one axis at a time
    (separable: sum_j f_j taps instead of prod_j f_j)."""
    for a, f, s in zip(axes, window, strides):
        if f == 1 and s == 1:
            continue
        lo, hi, out = pads(x.shape[a], f, s, padding, layer, a)
        x = _window_sum(ops, x, (a,), [(o,) for o in range(f)], [(lo, hi)], (s,), (out,), padding == "CIRCULAR")
    return x


def window_counts(n: int, f: int, s: int, padding: str) -> np.ndarray:
    """Number of in-image pixels in each output window of one axis (for normalize_edges)."""
    lo, hi, out = pads(n, f, s, padding)
    if padding != "SAME":
        return np.full(out, float(f))
    inside = np.r_[np.zeros(lo), np.ones(n), np.zeros(hi)]
    return np.array([inside[i * s:i * s + f].sum() for i in range(out)])


def pixel_diag(ops: Arrays, g: Any, k: int) -> Any:
    """(..., *S, *S) -> (..., *S): the matching-pixel entries p = p'."""
    s = g.shape[g.ndim - 2 * k:g.ndim - k]
    p = math.prod(s)
    flat = g.reshape(g.shape[:g.ndim - 2 * k] + (p, p))
    return ops.xp.diagonal(flat, axis1=-2, axis2=-1).reshape(g.shape[:g.ndim - 2 * k] + s)


def ext_vars(ops: Arrays, d1: Any, d2: Any, k: int) -> tuple[Any, Any]:
    """Per-pair variance arrays of the extended batch from per-pixel variances d1 (N, *S), d2 (M, *S)."""
    xp = ops.xp
    n, m, s = d1.shape[0], d2.shape[0], d1.shape[1:]
    one = xp.ones((1, 1) + s, d1.dtype)
    top = xp.broadcast_to(d1[:, None], (n, m + 1) + s)
    v1 = xp.concatenate([top, xp.concatenate([d2[None], one], axis=1)], axis=0)
    left = xp.broadcast_to(d2[None], (n + 1, m) + d2.shape[1:])
    v2 = xp.concatenate([left, xp.concatenate([d1[:, None], one], axis=0)], axis=1)
    ones = (1,) * k
    return v1.reshape(v1.shape + ones), v2.reshape(v2.shape[:2] + ones + v2.shape[2:])


def own_vars(d: Any, k: int) -> tuple[Any, Any]:
    """var1 (B, 1, *S, 1..1) and var2 (B, 1, 1..1, *S) from per-pixel variances d (B, 1, *S)."""
    s, ones = d.shape[2:], (1,) * k
    return d.reshape(d.shape[:2] + s + ones), d.reshape(d.shape[:2] + ones + s)


def recorded_vars(rec: tuple[Any, Any], k: int) -> tuple[Any, Any]:
    """var1 (B, 1, *S, 1..1) and var2 (B, 1, 1..1, *S) from the phase-1 records (B, *S) of the two images."""
    return own_vars(rec[0][:, None], k)[0], own_vars(rec[1][:, None], k)[1]


def self_pixel_vars(ops: Arrays, g: Any, ext: bool, k: int) -> tuple[Any, Any]:
    """var1/var2 of a batch-mode full state from its (pooled) grid ``g`` that holds the self grids."""
    if ext:
        n, m = g.shape[0] - 1, g.shape[1] - 1
        return ext_vars(ops, pixel_diag(ops, g[:n, m], k), pixel_diag(ops, g[n, :m], k), k)
    xp = ops.xp
    d = pixel_diag(ops, xp.moveaxis(xp.diagonal(g, axis1=0, axis2=1), -1, 0), k)  # (N, *S): the batch diagonal
    ones = (1,) * k
    return d[:, None].reshape((d.shape[0], 1) + d.shape[1:] + ones), d[None].reshape((1, d.shape[0]) + ones + d.shape[1:])


def strip(g: Any, ext: bool) -> Any:
    """Drop the self-grid extension of the batch axes."""
    return g[:-1, :-1] if ext else g
