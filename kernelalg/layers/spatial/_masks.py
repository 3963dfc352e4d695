"""Masked image inputs: ``ka.kernel(net, x1, x2, mask_constant=c)`` (neural-tangents' ``mask_constant``).

As neural-tangents 0.6.5 (``stax/requirements.py``, ``utils/kernel.py``): every input entry equal to ``c`` is
zeroed, and a pixel is *masked* when all its channels equal ``c`` (variable-size images or sequences padded
with ``c``). Layers then treat masked pixels as absent: a Conv (ConvLocal, AvgPool, SumPool) reads them as zero
(AvgPool still divides by its window, or by its in-image pixels with ``normalize_edges``), a GlobalAvgPool
averages over the n1 n2 valid pixel pairs, a GlobalSumPool sums them, and Flatten sums the valid matching
pixels but still divides by all positions.

Window layers that change the positions (VALID or strided Conv, ConvLocal, AvgPool, SumPool) move the masks as
neural-tangents' ``_pool_mask``: an output position has the validity of its window's centre (start
``-pad_lo + (window - 1) // 2``, step the stride; :func:`centre_slices`). The kernel state records the windows
so far in :attr:`SpatialState.mask_path <kernelalg.layers.spatial._grid.SpatialState>` (:func:`path_after`),
and every Op that reads the masks carries the input masks to its positions (:func:`current_masks`).
ConvTranspose records its own rule instead (:func:`moved`; neural-tangents' ``mask_fn``: an output position
is masked when a masked input pixel reaches it). CIRCULAR padding with masks is refused (neural-tangents 0.6.5
has none); ImageResize, DotGeneral and Index are refused with masks (``MASKED_OP``).

On the pixel-pair grid the masks enter as per-pixel validity arrays (1 valid, 0 masked) of both images of a
pair, :data:`~kernelalg.layers.spatial._grid.MASK1` (beside var1) and ``MASK2`` (beside var2), extended like
the variances when x2 is given (:func:`~kernelalg.layers.spatial._grid.ext_vars`). neural-tangents zeroes every pair with a masked pixel
after each layer; here the pair-local layers (Dense, activations) compute on those pairs unchanged and only the
layers that mix pixels read them as zero (:func:`masked_op`), which gives the same values at every valid
pair. Between such layers a masked entry holds a harmless placeholder (variance 1, covariance 0), so that
no dual meets a zero variance.

A masked kernel is the kernel of the same network whose first layout-declaring leaf declares a layout that
carries the masks (:func:`masked_net`): the planned pixel-pair grid (full with pooling, matching pixels for
Flatten), evaluated in batches (not chunked). Graphs (``ka.Graphs``) padded with nodes whose features all equal
``c`` work the same way on the node-pair grid (Aggregate reads masked nodes as zero). Unlike neural-tangents
0.6.5, which refuses a mask that still has a channel axis in Aggregate or a pooling layer (an NT network must
start with Dense or Conv), the masks here are per position from the input on.

Finite twins read the validity of the images they compute from :data:`FINITE_MASK`; a window layer's twin moves
it to its output positions for the layers after it (:func:`finite_window`, :func:`finite_move`), and the twin
of ``parallel`` runs
each branch in its own copy of the context (:func:`finite_branches`).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kernelalg.backends import Arrays
from kernelalg.core import _errors as E
from kernelalg.core._inputs import InputLayout
from kernelalg.core._layer import Layer
from kernelalg.core._program import C, Q1, Q2
from kernelalg.layers.spatial import _grid as S


MASK_NEEDS_READOUT = (
    "mask_constant needs a network that ends with a readout (Flatten, GlobalAvgPool, GlobalSumPool); this one "
    "keeps pixel axes. Fix: end the network with a readout, or call the kernel without mask_constant."
)
ALL_MASKED = (
    "{name}[{index}] has every position masked (all its entries equal mask_constant={c}), so its kernel is "
    "undefined. Fix: drop that input or give it at least one unmasked position."
)
MASK_CIRCULAR = (
    "{layer}: masked inputs (mask_constant) are supported with padding 'SAME' or 'VALID' (any strides), got "
    "padding='CIRCULAR' (neural-tangents 0.6.5 has no masks with periodic padding either). Fix: use "
    "padding='SAME' or 'VALID', or call the kernel without mask_constant."
)
BRANCH_MASKS = (
    "masked inputs (mask_constant): parallel branches end on different positions (mask shapes {shapes}). "
    "Fix: give every branch the same strides and paddings, or call without mask_constant."
)
BAD_MASK_CONSTANT = "mask_constant must be a real number (or nan), got {got!r}. Fix: e.g. mask_constant=-1.0."


#: The validity (N, *S) of the images a finite twin is computing (set by :meth:`MaskedImages.bind_finite`).
FINITE_MASK: contextvars.ContextVar = contextvars.ContextVar("kernelalg_pixel_mask", default=None)


def finite_mask(x: Any) -> Any:
    """Finite twins: ``x`` (N, *S, C) with masked pixels zeroed when a mask is bound, else ``x``."""
    m = FINITE_MASK.get()
    return x if m is None else x * jnp.asarray(m, x.dtype)[..., None]


def finite_readout(x: Any) -> Any:
    """Finite twins of readouts (Flatten, the global pools), after their own use of the bound mask: the output
    has no positions, so no mask is bound for the layers after it (parallel branches may then meet again)."""
    if FINITE_MASK.get() is not None:
        FINITE_MASK.set(None)
    return x


def finite_pool(x: Any, avg: bool) -> Any:
    """Finite twins: the sum (or mean) of ``x`` (N, *S, C) over its valid pixels (all pixels when none is bound)."""
    m = FINITE_MASK.get()
    axes = tuple(range(1, x.ndim - 1))
    if m is None:
        return (jnp.mean if avg else jnp.sum)(x, axis=axes)
    m = jnp.asarray(m, x.dtype)
    out = jnp.sum(x * m[..., None], axis=axes)
    return out / jnp.sum(m, axis=axes)[:, None] if avg else out


class MaskedImages:
    """A batch of images with masked pixels: zeroed data and per-pixel validity (a JAX pytree).

    Attributes:
        x: (N, *S, C) images, entries equal to the mask constant set to zero.
        valid: (N, *S) 1.0 on pixels with some channel unequal to the constant, 0.0 on masked pixels.
    """

    __slots__ = ("x", "valid")

    def __init__(self, x: Any, valid: Any):
        self.x, self.valid = x, valid

    @classmethod
    def from_constant(cls, name: str, x: Any, constant: float) -> "MaskedImages":
        """Mask ``x`` (an array (N, *S, C)) as neural-tangents does with ``mask_constant=constant``."""
        xp = jnp if _is_jax(x) else np
        hit = xp.isnan(x) if np.isnan(constant) else x == constant
        valid = ~xp.all(hit, axis=-1)
        if xp is np and not valid.reshape(len(x), -1).any(axis=1).all():
            i = int(np.argmin(valid.reshape(len(x), -1).any(axis=1)))
            raise E.InputError(ALL_MASKED.format(name=name, index=i, c=constant))
        return cls(xp.where(hit, xp.zeros((), x.dtype), x), valid.astype(x.dtype))

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape (N, *S, C) of the images."""
        return tuple(self.x.shape)

    @property
    def ndim(self) -> int:
        """Rank of the images."""
        return len(self.x.shape)

    @property
    def dtype(self) -> Any:
        """Dtype of the images."""
        return self.x.dtype

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, idx: Any) -> "MaskedImages":
        """Sub-batch along the batch axis."""
        return MaskedImages(self.x[idx], self.valid[idx])

    @contextlib.contextmanager
    def bind_finite(self) -> Iterator[Any]:
        """Finite twins: the zeroed images, with the validity made available to the layers while inside (as
        neural-tangents' ``apply_fn(..., mask_constant=c)``: Conv reads masked pixels as zero, the global
        pools reduce over valid pixels, Flatten zeroes them)."""
        token = FINITE_MASK.set(self.valid)
        try:
            yield self.x
        finally:
            FINITE_MASK.reset(token)

    def __repr__(self) -> str:
        return f"MaskedImages(shape={self.shape})"


jax.tree_util.register_pytree_node(MaskedImages, lambda m: ((m.x, m.valid), None),
                                   lambda aux, children: MaskedImages(*children))


def _is_jax(x: Any) -> bool:
    """True for a JAX array or tracer (the mask is then computed with jnp)."""
    return isinstance(x, jax.Array)


def check_constant(c: Any) -> float:
    """The mask constant as a float, or an :class:`InputError` naming the fix."""
    try:
        return float(c)
    except (TypeError, ValueError):
        raise E.InputError(BAD_MASK_CONSTANT.format(got=c)) from None


def mask_env(env: dict, m1: Any, m2: Any | None, ops: Arrays, k: int, mode: str, ext: bool) -> dict:
    """Add the validity arrays to a full-mode pixel-pair input ``env`` and put placeholders on masked pairs.

    Args:
        env: The unmasked input env (Q1, Q2, C of the zeroed images).
        m1: (N, *S) validity of x1; ``m2`` of x2 or None (x2 is x1).
        k: Number of spatial axes.
        mode: "full" (all pixel pairs) or "diag" (matching pixels only).
        ext: The batch axes carry the self-grid extension.
    """
    other = m1 if m2 is None else m2
    ones = (1,) * k
    if mode == "diag":
        v1, v2 = m1[:, None], other[None]
    elif ext:
        v1, v2 = S.ext_vars(ops, m1, other, k)
    else:
        v1 = m1.reshape((m1.shape[0], 1) + m1.shape[1:] + ones)
        v2 = other.reshape((1, other.shape[0]) + ones + other.shape[1:])
    env[S.MASK1], env[S.MASK2] = v1, v2
    q1, q2, c = placeholders(ops, env[Q1], env[Q2], env[C], None, v1, v2)[:3]
    env.update({Q1: q1, Q2: q2, C: c})
    return env


def _fill(ops: Arrays, x: Any, m: Any, value: float) -> Any:
    return None if x is None else ops.xp.where(m > 0, x, ops.xp.asarray(value, x.dtype))


def zeroed(ops: Arrays, v1: Any, v2: Any, cov: Any, ntk: Any, m1: Any, m2: Any) -> tuple:
    """The state as neural-tangents holds it: every entry with a masked pixel zero."""
    pair = m1 * m2
    return _fill(ops, v1, m1, 0.0), _fill(ops, v2, m2, 0.0), _fill(ops, cov, pair, 0.0), _fill(ops, ntk, pair, 0.0)


def placeholders(ops: Arrays, v1: Any, v2: Any, cov: Any, ntk: Any, m1: Any, m2: Any) -> tuple:
    """Variance 1, covariance 0 on masked entries (never read; keeps the duals away from zero variances)."""
    pair = m1 * m2
    return _fill(ops, v1, m1, 1.0), _fill(ops, v2, m2, 1.0), _fill(ops, cov, pair, 0.0), _fill(ops, ntk, pair, 0.0)


def centre_slices(shape: tuple, window: tuple, strides: tuple, padding: str) -> tuple:
    """Per spatial axis of ``shape``, the slice of the positions that give the validity of a window layer's
    outputs: each output position takes that of its window's centre (neural-tangents 0.6.5, ``_pool_mask``:
    start ``-pad_lo + (window - 1) // 2``, step the stride; 'CIRCULAR' pads like 'SAME')."""
    out = []
    for n, f, s in zip(shape, window, strides):
        lo, _, size = S.pads(n, f, s, "SAME" if padding == "CIRCULAR" else padding)
        start = (f - 1) // 2 - lo
        out.append(slice(start, start + (size - 1) * s + 1, s))
    return tuple(out)


def path_after(lay: S.SpatialState, window: tuple, strides: tuple, padding: str) -> S.SpatialState:
    """The layout after a window layer (Conv, ConvLocal, AvgPool, SumPool): masked inputs whose positions it
    changes (not SAME with stride 1) append its window to ``mask_path``; otherwise ``lay`` itself."""
    if not lay.masked or (padding == "SAME" and all(s == 1 for s in strides)):
        return lay
    return dataclasses.replace(lay, mask_path=lay.mask_path + ((tuple(window), tuple(strides), padding),))


def moved(lay: S.SpatialState, move: Callable) -> S.SpatialState:
    """The layout after a layer whose own rule ``move(ops, m, first)`` maps a validity ``m`` (spatial axes from
    ``first`` on) to its output positions (e.g. ConvTranspose); ``move`` must be hashable and comparable (a
    frozen dataclass), as the layout is a static key."""
    return dataclasses.replace(lay, mask_path=lay.mask_path + (move,)) if lay.masked else lay


def _carry(ops: Arrays, m: Any, first: int, path: tuple) -> Any:
    """Validity ``m`` whose spatial axes start at ``first``, carried through the entries of ``path``: windows
    (window, strides, padding) or a layer's own rule (see :func:`moved`)."""
    for entry in path:
        if callable(entry):
            m = entry(ops, m, first)
            continue
        window, strides, padding = entry
        k = len(window)
        m = m[(slice(None),) * first + centre_slices(m.shape[first:first + k], window, strides, padding)]
    return m


def current_masks(ops: Arrays, m1: Any, m2: Any, lay: S.SpatialState) -> tuple:
    """The validity of the current positions: the input masks ``m1``, ``m2`` (shaped like var1, var2) carried
    through the windows of ``lay.mask_path`` (the shape-changing layers before; as neural-tangents'
    ``_pool_mask``, an output position has the validity of its window's centre) and the layers' own rules.

    In full mode the rules act on the masks without their singleton axes ((B1, B2, *S): the spatial axes from 2 on),
    which are then restored for the current number of spatial axes, so a rule may change that number (DotGeneral,
    an Index that drops an axis)."""
    path = getattr(lay, "mask_path", ())
    if not path:
        return m1, m2
    if lay.mode == "diag":
        return _carry(ops, m1, 2, path), _carry(ops, m2, 2, path)
    k_in, k = (m1.ndim - 2) // 2, lay.ndim
    c1 = _carry(ops, m1.reshape(m1.shape[:2 + k_in]), 2, path)
    c2 = _carry(ops, m2.reshape(m2.shape[:2] + m2.shape[2 + k_in:]), 2, path)
    return c1.reshape(c1.shape + (1,) * k), c2.reshape(c2.shape[:2] + (1,) * k + c2.shape[2:])


def finite_move(x: Any, move: Callable[[Any], Any], layer: str, padding: str) -> Any:
    """Finite twins of layers with their own mask rule (e.g. ConvTranspose): ``x`` with masked pixels zeroed
    when a mask is bound, and the bound mask (N, *S) replaced by ``move(mask)`` for the layers after it."""
    m = FINITE_MASK.get()
    if m is None:
        return x
    check_window_padding(padding, layer)
    FINITE_MASK.set(move(jnp.asarray(m)))
    return x * jnp.asarray(m, x.dtype)[..., None]


def finite_window(x: Any, window: tuple, strides: tuple, padding: str, layer: str = "Conv") -> Any:
    """Finite twins of window layers (Conv, ConvLocal, AvgPool, SumPool): ``x`` (N, *S, C) with masked pixels
    zeroed when a mask is bound; the bound mask then moves to the layer's output positions (window centres),
    for the layers after it."""
    m = FINITE_MASK.get()
    if m is None:
        return x
    check_window_padding(padding, layer)
    x = x * jnp.asarray(m, x.dtype)[..., None]
    if not (padding == "SAME" and all(s == 1 for s in strides)):
        FINITE_MASK.set(m[(slice(None),) + centre_slices(m.shape[1:], window, strides, padding)])
    return x


def finite_branches(branches: Sequence[Callable[[], Any]]) -> tuple:
    """Finite twins of parallel branches: each runs in its own copy of the context, so that a branch's window
    layers move the bound mask for the rest of that branch only; afterwards the bound mask is the branches'
    (they must agree, as the kernel's fan-in layers require one layout for all branches)."""
    outs, masks = [], []
    for run in branches:
        ctx = contextvars.copy_context()
        outs.append(ctx.run(run))
        masks.append(ctx.get(FINITE_MASK))
    if masks and any(m is not masks[0] for m in masks[1:]):
        shapes = {None if m is None else tuple(m.shape) for m in masks}
        if len(shapes) > 1:
            raise E.KernelalgError(BRANCH_MASKS.format(shapes=sorted(map(str, shapes))))
    if masks and masks[0] is not FINITE_MASK.get():
        FINITE_MASK.set(masks[0])
    return tuple(outs)


def masked_op(fn: Callable, remask: bool = True, lay: S.SpatialState | None = None,
              out_lay: S.SpatialState | None = None) -> Callable:
    """Wrap a spatial Op ``fn`` that mixes pixels: it reads masked entries as zero; with ``remask`` its outputs
    get placeholders on masked entries. The wrapped Op takes the input masks as its last two sources, after
    those of ``fn``, and carries them to the current positions through ``lay.mask_path`` (``lay`` None: the
    input positions); the outputs are re-masked on the positions of ``out_lay`` (a window layer that changes
    the positions, see :func:`path_after`), by default the same as the inputs' (SAME with stride 1; graph
    nodes)."""

    def op(ops: Arrays, v1: Any, v2: Any, cov: Any, ntk: Any, ctx: S.Ctx, *rest: Any) -> tuple:
        m1, m2 = rest[-2:]
        c1, c2 = (m1, m2) if lay is None else current_masks(ops, m1, m2, lay)
        outs = fn(ops, *zeroed(ops, v1, v2, cov, ntk, c1, c2), ctx, *rest[:-2])
        if not remask:
            return outs
        if out_lay is not None and out_lay is not lay:
            c1, c2 = current_masks(ops, m1, m2, out_lay)
        return placeholders(ops, *outs[:4], c1, c2) + tuple(outs[4:])

    return op


def check_window_padding(padding: str, layer: str = "Conv") -> None:
    """Masks pass through window layers with SAME or VALID padding (any strides); CIRCULAR is refused."""
    if padding == "CIRCULAR":
        raise E.KernelalgError(MASK_CIRCULAR.format(layer=layer))


_MASKED_NETS: dict[int, tuple[Any, Layer]] = {}


def _relayout(layer: Layer, layout: InputLayout) -> tuple[Layer, bool]:
    """``layer`` with its first leaf that declares an input layout declaring ``layout`` instead; found or not."""
    if not layer.children:
        if layer.input_layout is None:
            return layer, False
        return dataclasses.replace(layer, input_layout=layout), True
    kids = list(layer.children)
    for i, child in enumerate(kids):
        kids[i], found = _relayout(child, layout)
        if found:
            return dataclasses.replace(layer, children=tuple(kids)), True
    return layer, False


def masked_net(net: Any, layout: Callable[[Any], InputLayout]) -> Layer:
    """``net`` whose input layout is ``layout(net)`` (carrying the masks); one object per network. The first
    leaf that declares a layout declares this one instead, so the layers and their hyperparameter names
    (``sigma_w_1``, ...) stay those of ``net``."""
    hit = _MASKED_NETS.get(id(net))
    if hit is not None and hit[0] is net:
        return hit[1]
    if not any(leaf.spatial is not None and leaf.spatial.readout for leaf in net.leaves()):
        raise E.InputError(MASK_NEEDS_READOUT)
    out = _relayout(net, layout(net))[0]
    _MASKED_NETS[id(net)] = (net, out)
    return out
