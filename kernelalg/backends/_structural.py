"""Array namespaces of the backends for structural (non-elementwise) ops.

Conv stencils, pooling, readouts and time recursions are named :class:`~kernelalg.core._program.Op` nodes whose
maths is written once, against an :class:`Arrays` namespace: ``xp`` (``jax.numpy`` or ``numpy``, used where the
two agree: pad, sum, einsum without precision, reshape, take_along_axis, ...) plus the few primitives whose
JAX and NumPy forms differ (strided slices, loops, in-place updates, fusion barriers). :func:`structural` turns
such a backend-neutral function into the per-backend implementations an Op carries; the walker
(:func:`kernelalg.backends._walker.run_program`) picks the one of the table it runs on and refuses loudly
when there is none (mpmath has no structural ops: scalar-by-scalar arithmetic on pixel-pair grids would be
far too slow, see :func:`kernelalg.reference_kernel`).

References:
    Array API standard (namespaces shared by NumPy and JAX): https://data-apis.org/array-api/latest/
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ._jax import JAX_TABLE
from ._reference import NUMPY_TABLE
from ._walker import Table

_HI = jax.lax.Precision.HIGHEST


@dataclass(frozen=True)
class Arrays:
    """The array namespace of one backend, as seen by structural ops.

    Attributes:
        name: Backend name (the key of :attr:`Op.impls <kernelalg.core._program.Op>`).
        xp: The array module (``jax.numpy`` or ``numpy``).
        table: The elementwise lowering table of the same backend (for programs run inside an op).
        einsum: ``einsum(spec, *operands)`` at full precision.
        matmul: ``matmul(a, b)`` at full precision.
        slice: ``slice(x, start, limit, step)``: strided slice (per axis, Python slicing semantics).
        pad: ``pad(x, cfg)``: zero padding, ``cfg`` one (lo, hi) per axis.
        scan: ``scan(body, init, xs) -> (carry, ys)`` over the leading axis of the pytree ``xs``
            (``jax.lax.scan``; a loop in NumPy). ``ys`` leaves are stacked; None leaves stay None.
        map: ``map(fn, xs)``: ``fn`` over the leading axis of ``xs``, results stacked (``jax.lax.map``; a loop).
        set_at: ``set_at(x, index, values)``: a copy of ``x`` with ``x[index] = values``.
        add_at: ``add_at(x, index, values)``: a copy of ``x`` with ``values`` added at ``index`` (repeated
            indices add up: a scatter-add / segment sum).
        live: ``live(x)``: a runtime-true predicate derived from the array ``x`` that a compiler cannot fold
            (JAX), or None (NumPy: nothing is fused).
        isolated: ``isolated(live, fn, *arrays)``: ``fn(*arrays)`` as a computation of its own (JAX: inside a
            conditional on ``live``, so that XLA fuses nothing across it; with ``live`` None, or in NumPy, a
            plain call).
        scans: Runs of identical layers inside an op are executed as one loop (JAX: ``lax.scan``, see
            :mod:`kernelalg.backends._scan`); False: layer by layer (NumPy, the reference evaluation order).
    """

    name: str
    xp: Any
    table: Table
    einsum: Callable[..., Any]
    matmul: Callable[[Any, Any], Any]
    slice: Callable[[Any, Sequence[int], Sequence[int], Sequence[int]], Any]
    pad: Callable[[Any, Sequence[tuple[int, int]]], Any]
    scan: Callable[[Callable, Any, Any], tuple[Any, Any]]
    map: Callable[[Callable, Any], Any]
    set_at: Callable[[Any, Any, Any], Any]
    live: Callable[[Any], Any]
    isolated: Callable[..., Any]
    scans: bool = False
    add_at: Callable[[Any, Any, Any], Any] | None = None


# ------------------------------------------------------------------------------------------------- JAX


def _jax_pad(x: jax.Array, cfg: Sequence[tuple[int, int]]) -> jax.Array:
    return jax.lax.pad(x, jnp.zeros((), x.dtype), [(lo, hi, 0) for lo, hi in cfg])


def _jax_isolated(live: Any, fn: Callable[..., Any], *arrays: Any) -> Any:
    """XLA's CPU fusion otherwise inlines each layer's producers into every tap of the next stencil (and the
    stencil into each of the activation's fusions), recomputing earlier layers per output entry (|F|^depth
    work); ``optimization_barrier`` does not stop that on CPU, a conditional does. The zero branch is never
    taken (``live`` is true at run time)."""
    if live is None:
        return fn(*arrays)
    shapes = jax.eval_shape(fn, *arrays)
    zeros = (lambda *a: jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes))
    return jax.lax.cond(live, fn, zeros, *arrays)


JAX_ARRAYS = Arrays(
    name="jax", xp=jnp, table=JAX_TABLE,
    einsum=lambda spec, *ops: jnp.einsum(spec, *ops, precision=_HI),
    matmul=lambda a, b: jnp.matmul(a, b, precision=_HI),
    slice=jax.lax.slice, pad=_jax_pad, scan=jax.lax.scan, map=jax.lax.map,
    set_at=lambda x, index, values: x.at[index].set(values),
    live=lambda x: jnp.isfinite(x) | ~jnp.isfinite(x),
    isolated=_jax_isolated, scans=True, add_at=lambda x, index, values: x.at[index].add(values),
)


# ----------------------------------------------------------------------------------------------- NumPy


def _np_slice(x: np.ndarray, start: Sequence[int], limit: Sequence[int], step: Sequence[int]) -> np.ndarray:
    return x[tuple(slice(a, b, s) for a, b, s in zip(start, limit, step))]


def _stack(ys: list) -> Any:
    return jax.tree_util.tree_map(lambda *leaves: np.stack(leaves), *ys)


def _np_scan(body: Callable, init: Any, xs: Any) -> tuple[Any, Any]:
    leaves, tree = jax.tree_util.tree_flatten(xs)
    carry, ys = init, []
    for i in range(len(leaves[0])):
        carry, y = body(carry, jax.tree_util.tree_unflatten(tree, [leaf[i] for leaf in leaves]))
        ys.append(y)
    return carry, _stack(ys)


def _np_set_at(x: np.ndarray, index: Any, values: Any) -> np.ndarray:
    out = np.array(x, copy=True)
    out[index] = values
    return out


def _np_add_at(x: np.ndarray, index: Any, values: Any) -> np.ndarray:
    out = np.array(x, copy=True)
    np.add.at(out, index, values)
    return out


NUMPY_ARRAYS = Arrays(
    name="numpy", xp=np, table=NUMPY_TABLE,
    einsum=lambda spec, *ops: np.einsum(spec, *ops, optimize=True),
    matmul=np.matmul, slice=_np_slice,
    pad=lambda x, cfg: np.pad(x, list(cfg)) if any(c != (0, 0) for c in cfg) else x,
    scan=_np_scan, map=lambda fn, xs: _stack([fn(x) for x in xs]), set_at=_np_set_at,
    live=lambda x: None, isolated=lambda live, fn, *arrays: fn(*arrays), add_at=_np_add_at,
)

#: The backends that implement structural ops, by name.
ARRAYS: dict[str, Arrays] = {a.name: a for a in (JAX_ARRAYS, NUMPY_ARRAYS)}


def structural(fn: Callable[..., tuple]) -> dict[str, Callable[..., tuple]]:
    """Per-backend implementations of a backend-neutral op function ``fn(arrays, *sources)``.

    Returns:
        ``{backend name: fn with its Arrays bound}``: the ``impls`` of an
        :class:`~kernelalg.core._program.Op` (JAX and NumPy).
    """
    return {name: partial(fn, arrays) for name, arrays in ARRAYS.items()}
