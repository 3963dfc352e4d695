"""Index: static indexing and slicing of the spatial axes of images and sequences (neural-tangents' ``stax.Index``).

``Index(idx)`` maps x (batch, *spatial, channels) to ``x[idx]``, where ``idx`` indexes the whole array as numpy
does (``Slice[:, ::2, 1:]``: every batch entry, every other row, columns from 1), or the same written as a string
(``Index(":, ::2, 1:")``, the form the architecture parser and ``repr`` use). Only the spatial axes may be
indexed: the batch axis is indexed on the inputs (``x1[::2]``), not as a layer, and indexing the (infinite)
channel axis has no kernel (neural-tangents refuses it too). An integer index drops its spatial axis (an image
row becomes a sequence); slices may have any step, negative ones included. Index declares no input layout: the
network's first spatial layer (Conv, pooling) does, so an Index that drops axes goes after a layer of the
images' own rank (``Conv((3, 3)) >> Index(":, 0") >> Conv((3,))``, not ``Index(":, 0") >> Conv((3,))``).

Kernel map: indexing is linear and picks entries, so on the pixel-pair grid K(p, p') of
:mod:`kernelalg.layers.spatial._grid` the new kernel is K[idx, idx'] (the same index on the pixels of x and
those of x'), on the matching-pixel diagonal K[idx], and the per-pixel variances are indexed likewise; the NNGP,
the NTK and the variances transform alike and the output stays Gaussian.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import sympy as sp

from kernelalg.backends import Arrays
from kernelalg.core import _errors as E
from kernelalg.core._layer import Layer
from kernelalg.core._program import Builder, KernelState
from kernelalg.layers.spatial import _grid as S
from kernelalg.layers.spatial._masks import FINITE_MASK, finite_move, moved

BAD_INDEX = (
    "Index: {got!r} is not an index of the array (batch, *spatial, channels). Fix: give integers, slices and at "
    "most one '...', as Slice[:, ::2, 1:] or the string ':, ::2, 1:'."
)
BATCH_INDEXED = (
    "Index: the batch axis is indexed ({got}). A layer maps each input on its own, so selecting inputs is not a "
    "layer. Fix: index the inputs instead (x1[::2]) and keep ':' for the batch axis, e.g. Slice[:, ::2, 1:]."
)
CHANNEL_INDEXED = (
    "Index: the channel axis is indexed ({got}); in the infinite-width limit the channels are infinitely many, "
    "so this has no kernel (neural-tangents refuses it too). Fix: keep ':' for the channel axis (the last), or "
    "index channels of the finite network only."
)
TOO_MANY = (
    "Index: {n} indices for an array of rank {rank} (batch, {ndim} spatial axis(es), channels). Fix: give at "
    "most {rank} entries, e.g. Slice[:, 1:]."
)
OUT_OF_RANGE = (
    "Index: the index {got} is out of range for spatial axis {axis} of size {size}. Fix: use an index in "
    "[-{size}, {size})."
)
EMPTY = (
    "Index: the slice {got} selects no position of spatial axis {axis} (size {size}). Fix: choose a slice that "
    "keeps at least one position, e.g. 0:{size}."
)
NO_SPATIAL_LEFT = (
    "Index: the integer indices remove every spatial axis. Fix: keep one position as a slice (e.g. 0:1 instead "
    "of 0) and end with Flatten() or GlobalAvgPool()."
)


class _Slice:
    """Index helper: ``Slice[:, ::2, 1:]`` is ``(slice(None), slice(None, None, 2), slice(1, None))``, for
    ``Index`` (neural-tangents' ``stax.Slice``)."""

    def __getitem__(self, idx: Any) -> Any:
        return idx

    def __repr__(self) -> str:
        return "Slice"


#: Helper to write an index: ``Index(Slice[:, ::2, 1:])`` (neural-tangents' ``stax.Slice``).
Slice = _Slice()


def _text(entry: Any) -> str:
    if entry is Ellipsis:
        return "..."
    if isinstance(entry, slice):
        parts = ["" if v is None else str(v) for v in (entry.start, entry.stop, entry.step)]
        return ":".join(parts[:2]) if entry.step is None else ":".join(parts)
    return str(entry)


def _int(v: Any, got: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or int(v) != v:
        raise E.KernelalgError(BAD_INDEX.format(got=got))
    return int(v)


def _from_text(text: str) -> tuple:
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    out: list = []
    parts = body.split(",")
    if len(parts) > 1 and not parts[-1].strip():  # a trailing comma, as in "1:,"
        parts = parts[:-1]
    for part in parts:
        part = part.strip()
        try:
            if part == "...":
                out.append(Ellipsis)
            elif ":" in part:
                bits = part.split(":")
                if len(bits) > 3:
                    raise ValueError(part)
                bits += [""] * (3 - len(bits))
                out.append(slice(*(int(b) if b.strip() else None for b in bits)))
            else:
                out.append(int(part))
        except ValueError:
            raise E.KernelalgError(BAD_INDEX.format(got=text)) from None
    return tuple(out)


def canonical(idx: Any) -> tuple:
    """The index as a tuple of ints, slices (ints or None inside) and Ellipsis; a string is parsed."""
    if isinstance(idx, str):
        return _from_text(idx)
    entries = idx if isinstance(idx, tuple) else (idx,)
    out: list = []
    for e in entries:
        if e is Ellipsis:
            out.append(e)
        elif isinstance(e, slice):
            out.append(slice(*(_int(v, idx) for v in (e.start, e.stop, e.step))))
            if out[-1].step == 0:
                raise E.KernelalgError(BAD_INDEX.format(got=idx))
        else:
            try:
                out.append(_int(e, idx))
            except (TypeError, ValueError):
                raise E.KernelalgError(BAD_INDEX.format(got=idx)) from None
    if sum(e is Ellipsis for e in out) > 1:
        raise E.KernelalgError(BAD_INDEX.format(got=idx))
    return tuple(out)


def spatial_index(text: str, ndim: int) -> tuple:
    """The entries of the index on the ``ndim`` spatial axes (batch and channel entries checked and dropped)."""
    idx, rank = canonical(text), ndim + 2
    n = sum(e is not Ellipsis for e in idx)
    if n > rank:
        raise E.KernelalgError(TOO_MANY.format(n=n, rank=rank, ndim=ndim))
    if Ellipsis in idx:
        at = idx.index(Ellipsis)
        idx = idx[:at] + (slice(None),) * (rank - n) + idx[at + 1:]
    idx = idx + (slice(None),) * (rank - len(idx))
    full = slice(None)
    if idx[0] != full:
        raise E.KernelalgError(BATCH_INDEXED.format(got=_text(idx[0])))
    if idx[-1] != full:
        raise E.KernelalgError(CHANNEL_INDEXED.format(got=_text(idx[-1])))
    return idx[1:-1]


def check_sizes(sp_idx: tuple, sizes: tuple) -> None:
    """Refuse out-of-range integers and empty slices (``sizes``: the spatial shape being indexed)."""
    for axis, (e, n) in enumerate(zip(sp_idx, sizes)):
        if isinstance(e, slice):
            if len(range(*e.indices(n))) == 0:
                raise E.KernelalgError(EMPTY.format(got=_text(e), axis=axis, size=n))
        elif not -n <= e < n:
            raise E.KernelalgError(OUT_OF_RANGE.format(got=e, axis=axis, size=n))
    if all(not isinstance(e, slice) for e in sp_idx):
        raise E.KernelalgError(NO_SPATIAL_LEFT)


@dataclasses.dataclass(frozen=True)
class IndexMask:
    """The mask rule of Index (neural-tangents' ``mask_fn``: ``mask[idx]``): the validity of the selected positions
    (an integer drops its axis, as for the data). ``entries`` holds an int or (start, stop, step) per spatial axis
    (hashable: the layout is a static key)."""

    entries: tuple

    def index(self) -> tuple:
        return tuple(slice(*e) if isinstance(e, tuple) else e for e in self.entries)

    def __call__(self, ops: Arrays, m: Any, first: int) -> Any:
        """Validity ``m`` (spatial axes from ``first`` on) at the selected positions."""
        return m[(slice(None),) * first + self.index()]


def _mask_rule(sp_idx: tuple) -> IndexMask:
    return IndexMask(tuple((e.start, e.stop, e.step) if isinstance(e, slice) else e for e in sp_idx))


def _index_map(lay: S.SpatialState, sp_idx: tuple):
    k = lay.ndim
    flat = tuple(slice(None) if isinstance(e, slice) else 0 for e in sp_idx)  # on the size-1 axes of variances
    batch = (slice(None), slice(None))

    def fn(ops: Arrays, v1: Any, v2: Any, cov: Any, ntk: Any, ctx: S.Ctx) -> tuple:
        check_sizes(sp_idx, cov.shape[2:2 + k])
        if lay.mode == "diag":
            i1 = i2 = ic = batch + sp_idx
        else:
            i1, i2, ic = batch + sp_idx + flat, batch + flat + sp_idx, batch + sp_idx + sp_idx
        return v1[i1], v2[i2], cov[ic], None if ntk is None else ntk[ic]

    return fn


def _index_kernel(b: Builder, st: KernelState, p: Mapping[str, sp.Expr], static: Mapping[str, Any]) -> KernelState:
    lay = S.require_spatial(st, "Index")
    sp_idx = spatial_index(static["idx"], lay.ndim)
    dropped = sum(not isinstance(e, slice) for e in sp_idx)
    if dropped == lay.ndim:
        raise E.KernelalgError(NO_SPATIAL_LEFT)
    fn, sources, new = _index_map(lay, sp_idx), (), lay
    if lay.masked:  # entries are picked, not mixed: masked stay masked; the masks follow the selected positions
        new, plain = moved(lay, _mask_rule(sp_idx)), fn
        fn, sources = (lambda ops, v1, v2, cov, ntk, ctx, m1, m2: plain(ops, v1, v2, cov, ntk, ctx)), (S.MASK1, S.MASK2)
    v1, v2, cov, ntk = S.spatial_op(b, st, fn, "index", sources=sources)[:4]
    new = dataclasses.replace(new, ndim=new.ndim - dropped) if dropped else new
    return st.replace(cov1=v1, cov2=v2, nngp=cov, ntk=ntk, after="Index", layout=new)


def _index_finite(p: Mapping[str, float], static: Mapping[str, Any], in_shape: tuple, width: int):
    sp_idx = spatial_index(static["idx"], len(in_shape) - 1)
    check_sizes(sp_idx, tuple(in_shape[:-1]))
    full = (slice(None),) + sp_idx + (slice(None),)
    out = tuple(len(range(*e.indices(n))) for e, n in zip(sp_idx, in_shape[:-1]) if isinstance(e, slice))

    def apply(params: dict, x: Any) -> Any:
        rule = _mask_rule(sp_idx) if FINITE_MASK.get() is not None else None
        if rule is not None:  # masked inputs: the bound mask follows the selected positions
            x = finite_move(jnp.asarray(x), lambda m: m[(slice(None),) + rule.index()], "Index", "VALID")
        return jnp.asarray(x)[full]

    return (lambda key: {}), apply, out + tuple(in_shape[-1:])


def Index(idx: Any) -> Layer:
    """Index or slice the spatial axes of (batch, *spatial, channels) inputs (neural-tangents' ``stax.Index``).

    Args:
        idx: An index of the whole array, as ``Slice[:, ::2, 1:]`` (ints, slices, at most one ``...``) or the
            same as a string ``":, ::2, 1:"``. The batch entry and the channel entry must be ``:`` (or left out).

    Returns:
        The layer (its kernel: the pixel-pair covariance indexed on both sides).

    Example:
        >>> net = ka.Conv((3, 3)) >> ka.Relu() >> ka.Index(ka.Slice[:, :4, :4]) >> ka.GlobalAvgPool()  # doctest: +SKIP
    """
    entries = canonical(idx)
    if not entries:
        raise E.KernelalgError(BAD_INDEX.format(got=idx))
    text = ", ".join(_text(e) for e in entries)
    return Layer("Index", _index_kernel, static=(("idx", text),), finite=_index_finite, role="reshape")
