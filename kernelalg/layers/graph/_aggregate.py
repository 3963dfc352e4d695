"""Aggregate: message passing over graphs (neural-tangents' ``stax.Aggregate``; Du et al., NeurIPS 2019).

A layer y_j = sum_i A_ij x_i (A the graph's pattern, see :mod:`kernelalg.layers.graph._inputs`) is linear and
parameter-free, so on the node-pair grid of two graphs with patterns A1, A2 every kernel maps alike:

    K'(i, j) = sum_{k, l} A1_ki K(k, l) A2_lj = (A1^T K A2)(i, j)   (NNGP, NTK and the self grids).

Two exact evaluations: *dense* patterns by two matrix products per graph pair (O(N^3)), *sparse* edge lists
(E arcs per graph) by gathering the tails and adding them into the heads (a segment sum on each side, O(N E)
per pair; neural-tangents' own kernel is dense). Which one runs follows the pattern the inputs carry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
import sympy as sp

from kernelalg.backends import Arrays
from kernelalg.core import _errors as E
from kernelalg.core._layer import Layer, Spatial
from kernelalg.core._program import Builder, KernelState
from kernelalg.layers.graph._inputs import GRAPH_LAYOUT, PAT1, PAT2, GraphState, finite_pattern
from kernelalg.layers.spatial import _grid as S
from kernelalg.layers.spatial._masks import finite_mask, masked_op

NOT_GRAPH = ("Aggregate needs node features of graphs, but it follows {after}, whose output has no node axis. "
             "Fix: put Aggregate before the readout (GlobalAvgPool, GlobalSumPool, Flatten) and give the network "
             "ka.Graphs(x, pattern).")
BAD_AXES = ("Aggregate: only NT's default layout is supported (aggregate_axis=None or 1, batch_axis=0, "
            "channel_axis=-1 or 2: inputs (batch, nodes, channels)), got aggregate_axis={agg!r}, "
            "batch_axis={batch!r}, channel_axis={chan!r}. Fix: move the axes, e.g. np.moveaxis(x, 1, -1).")
BAD_IMPLEMENTATION = ("Aggregate: implementation must be 'DENSE' or 'SPARSE', got {got!r}. Fix: the pattern decides "
                      "the kernel's path (float (B, N, N): dense, integer (B, E, 2): sparse); e.g. "
                      "implementation='DENSE'.")


def _is_sparse(p: Any) -> bool:
    return bool(np.issubdtype(np.dtype(p.dtype), np.integer))


def _aggregate_rows(ops: Arrays, k: Any, edges: Any) -> Any:
    """out(.., j, :) = sum over the valid arcs (t -> j) of k(.., t, :): gather the tails, add into the heads."""
    xp = ops.xp
    lead = k.shape[:-2]
    e = edges.shape[-2]
    edges = xp.broadcast_to(edges, lead + (e, 2))
    tails, heads = edges[..., 0], edges[..., 1]
    valid = (tails >= 0) & (heads >= 0)
    gathered = xp.take_along_axis(k, xp.where(valid, tails, 0)[..., None], axis=-2)  # (.., E, N')
    gathered = gathered * valid[..., None].astype(k.dtype)
    index = tuple(xp.arange(d).reshape((d,) + (1,) * (len(lead) - i)) for i, d in enumerate(lead))
    return ops.add_at(xp.zeros_like(k), index + (xp.where(valid, heads, 0),), gathered)


def aggregate_grid(ops: Arrays, k: Any, rows: Any, cols: Any) -> Any:
    """rows^T k cols on the last two axes of the node-pair grid ``k`` (..., N, N'), batch axes broadcast.

    Dense patterns (..., N, N): two matrix products, O(N^3) per pair. Edge lists (..., E, 2) (tail, head):
    gather the tails' rows and add them into the heads (a segment sum), then the same on the columns,
    O(N E) per pair.
    """
    if k is None:
        return None
    xp = ops.xp
    if not _is_sparse(rows):
        t = ops.einsum("...ki,...kl->...il", rows, k)
        return ops.einsum("...il,...lj->...ij", t, cols)
    lead = np.broadcast_shapes(k.shape[:-2], rows.shape[:-2], cols.shape[:-2])
    t = _aggregate_rows(ops, xp.broadcast_to(k, lead + k.shape[-2:]), rows)
    return xp.swapaxes(_aggregate_rows(ops, xp.swapaxes(t, -1, -2), cols), -1, -2)


def _aggregate_fn(ops: Arrays, v1: Any, v2: Any, cov: Any, ntk: Any, ctx: S.Ctx, rows: Any, cols: Any) -> tuple:
    g = aggregate_grid(ops, cov, rows, cols)
    n1, n2 = S.self_pixel_vars(ops, g, ctx.ext, 1)
    return n1.astype(g.dtype), n2.astype(g.dtype), g, aggregate_grid(ops, ntk, rows, cols)


def _aggregate_kernel(b: Builder, st: KernelState, p: Mapping[str, sp.Expr], static: Mapping[str, Any]) -> KernelState:
    lay = st.layout
    if not isinstance(lay, GraphState):
        raise E.LayerOrderError(NOT_GRAPH.format(after=st.after))
    fn, sources = _aggregate_fn, (PAT1, PAT2)
    if lay.masked:  # masked nodes send nothing; the output keeps the node masks (as neural-tangents)
        fn, sources = masked_op(fn, lay=lay), (PAT1, PAT2, S.MASK1, S.MASK2)
    v1, v2, cov, ntk = S.spatial_op(b, st, fn, "aggregate", key=("aggregate", lay.masked), sources=sources)[:4]
    return st.replace(cov1=v1, cov2=v2, nngp=cov, ntk=ntk, after="Aggregate")


def aggregate_features(x: Any, pattern: Any) -> Any:
    """The finite layer: node j receives sum_i pattern[b, i, j] x[b, i] (dense) or the sum of its arcs' tails."""
    if not _is_sparse(pattern):
        return jnp.einsum("bic,bij->bjc", x, pattern.astype(x.dtype), precision="highest")
    tails, heads = pattern[..., 0], pattern[..., 1]
    valid = (tails >= 0) & (heads >= 0)
    src = jnp.take_along_axis(x, jnp.where(valid, tails, 0)[..., None], axis=1) * valid[..., None].astype(x.dtype)
    batch = jnp.broadcast_to(jnp.arange(x.shape[0])[:, None], heads.shape)
    return jnp.zeros_like(x).at[batch, jnp.where(valid, heads, 0)].add(src)


def _aggregate_finite(p: Mapping[str, float], static: Mapping[str, Any], in_shape: tuple, width: int):
    def apply(params: dict, x: Any) -> Any:
        return aggregate_features(finite_mask(x), finite_pattern())  # masked nodes send nothing

    return (lambda key: {}), apply, tuple(in_shape)


def Aggregate(aggregate_axis: Any = None, batch_axis: int = 0, channel_axis: int = -1,
              implementation: str = "DENSE") -> Layer:
    """Message passing: every node becomes the weighted sum of its predecessors (neural-tangents' ``Aggregate``).

    Inputs are :class:`~kernelalg.layers.graph._inputs.Graphs` (node features (B, N, C) plus a pattern). The
    kernel of two graphs is A1^T K A2 on the node-pair grid (NNGP and NTK alike); Dense and activations then act
    per node pair and GlobalAvgPool/GlobalSumPool/Flatten read out, as for 1-D images.

    Args:
        aggregate_axis: The node axis: None or 1 (NT's default layout (batch, nodes, channels)).
        batch_axis: 0.
        channel_axis: -1 (or 2).
        implementation: "DENSE" or "SPARSE" (accepted for NT compatibility; the pattern's format decides the
            path: a float (B, N, N) adjacency is dense, an integer (B, E, 2) edge list sparse).

    Example:
        >>> net = ka.Aggregate() >> ka.Dense(1.5, 0.1) >> ka.Relu() >> ka.Aggregate() >> ka.GlobalAvgPool() >> ka.Dense()
        >>> ka.kernel(net, ka.Graphs(x, adjacency))                                          # doctest: +SKIP
    """
    agg = aggregate_axis[0] if isinstance(aggregate_axis, (tuple, list)) and len(aggregate_axis) == 1 else aggregate_axis
    if agg not in (None, 1) or batch_axis != 0 or channel_axis not in (-1, 2):
        raise E.KernelalgError(BAD_AXES.format(agg=aggregate_axis, batch=batch_axis, chan=channel_axis))
    if not isinstance(implementation, str) or implementation.upper() not in ("DENSE", "SPARSE"):
        raise E.KernelalgError(BAD_IMPLEMENTATION.format(got=implementation))
    return Layer("Aggregate", _aggregate_kernel, static=(("implementation", implementation.upper()),),
                 finite=_aggregate_finite, input_layout=GRAPH_LAYOUT, role="pooling", spatial=Spatial(pairs=True))
