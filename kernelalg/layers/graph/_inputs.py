"""Graph inputs: node features plus each graph's adjacency (``ka.Graphs``), and the "graph" input layout.

Conventions are neural-tangents' ``stax.Aggregate`` (Novak et al., ICLR 2020; Du et al., "Graph Neural
Tangent Kernel", NeurIPS 2019):

* node features ``x`` of shape (B, N, C): B graphs of N nodes with C channels (NLC, batch axis 0, channel
  axis -1);
* a *dense* pattern (B, N, N), float: ``pattern[b, i, j] = w`` is an arc i -> j of weight w; Aggregate replaces
  node j by ``sum_i pattern[b, i, j] x[b, i]`` (NT's ``implementation="DENSE"``);
* or a *sparse* pattern (B, E, 2), integer: E arcs (tail, head) of weight 1 per graph (repeats add up); an arc
  with a negative entry is padding (NT's ``implementation="SPARSE"``, K = 1).

Graphs of different sizes share one batch by padding with isolated nodes of zero features (NT's
convention: such nodes take part in readouts, e.g. a bias reaches them), or with padding nodes whose features all
equal a constant c and ``ka.kernel(..., mask_constant=c)``: those nodes are masked (Aggregate reads them as zero,
GlobalAvgPool averages the valid nodes; :mod:`kernelalg.layers.spatial._masks`).

The kernel state is the node-pair grid of a 1-D image in "full" mode with self grids (see
:mod:`kernelalg.layers.spatial._grid`): cov/ntk (B1, B2, N, N'), so Dense and activations act per node pair
and GlobalAvgPool/GlobalSumPool/Flatten read out, unchanged; the patterns enter as the per-pair arrays
:data:`PAT1` (rows) and :data:`PAT2` (columns).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from functools import partial
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from kernelalg.backends import Arrays
from kernelalg.backends._compile import check_input
from kernelalg.core import _errors as E
from kernelalg.core._inputs import InputLayout, sample_ids
from kernelalg.core._program import ID1, ID2, Q1, Q2, C, D, KernelState
from kernelalg.layers.spatial._grid import SpatialState
from kernelalg.layers.spatial._inputs import pixel_pair_env
from kernelalg.layers.spatial._masks import MaskedImages, check_constant, mask_env, masked_net

#: Per-pair patterns of the node-pair grid's batch axes: the pattern of the row graph and of the column graph.
PAT1 = sp.Symbol("pattern1")
PAT2 = sp.Symbol("pattern2")

NEEDS_GRAPHS = (
    "{name} is a plain array, but this network aggregates over graphs (Aggregate) and needs each graph's "
    "adjacency. Fix: pass ka.Graphs(x, pattern) with x of shape (batch, nodes, channels) and pattern (batch, "
    "nodes, nodes) (dense, pattern[b, i, j] = weight of the arc i -> j) or (batch, edges, 2) integer (tail, head)."
)
BAD_FEATURES = ("{name}: node features must be a 3-D array (batch, nodes, channels), got shape {shape}. "
                "Fix: x[..., None] for one channel.")
BAD_PATTERN = (
    "{name}: the pattern of {b} graphs of {n} nodes must be a float array of shape ({b}, {n}, {n}) (dense) or an "
    "integer array ({b}, edges, 2) of (tail, head) pairs (sparse), got {got}. Fix: e.g. "
    "ka.Graphs(x, adjacency) with adjacency.shape == ({b}, {n}, {n})."
)
BAD_EDGE = ("{name}: the sparse pattern names node {node} but the graphs have {n} nodes (0..{last}; negative "
            "entries mark padding arcs). Fix: use node indices below {n}, or pad the features with more nodes.")
NON_FINITE_PATTERN = ("{name}: the pattern has {count} non-finite entries (first at {index}). "
                      "Fix: replace NaN/inf weights, e.g. np.nan_to_num(pattern).")
GRAPH_MISMATCH = (
    "x1 and x2 differ in {what}: {a} vs {b}. Fix: {fix}."
)
GRAPHS_NOT_ARRAY = ("ka.Graphs cannot be converted to a plain array: it carries patterns. Fix: use .x (node "
                    "features) and .pattern explicitly, or pass it to a network that starts with Aggregate.")
NO_PATTERN_BOUND = ("Aggregate's finite twin was called without a pattern. Fix: call the network on "
                    "ka.Graphs(x, pattern) (ka.finite(...).apply(params, ka.Graphs(x, pattern))).")

#: The pattern of the graphs whose features a finite twin is computing (set by :meth:`Graphs.bind_finite`).
FINITE_PATTERN: contextvars.ContextVar = contextvars.ContextVar("kernelalg_graph_pattern", default=None)


@dataclasses.dataclass(frozen=True)
class GraphState(SpatialState):
    """Layout record of a kernel state on node pairs: a 1-D pixel-pair grid ("full", self grids, batch mode)
    whose batch entries carry graph patterns (:data:`PAT1`, :data:`PAT2`)."""

    name: str = "graph"


def _is_tracer(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


class Graphs:
    """A batch of graphs: node features and one adjacency pattern per graph (neural-tangents' ``pattern``).

    Args:
        x: Node features (B, N, C) (or (B, N) for one channel).
        pattern: Dense (B, N, N) float, ``pattern[b, i, j]`` the weight of the arc i -> j (node j receives
            ``sum_i pattern[b, i, j] x[b, i]``), or sparse (B, E, 2) integer arcs (tail, head), weight 1 each,
            negative entries marking padding arcs.
        sparse: Whether ``pattern`` is an edge list; None infers it: a (B, N, N) array is dense, an integer
            (B, E, 2) array otherwise an edge list (give ``sparse=True`` for edge lists of 2-node graphs).
        name: Argument name used in error messages.

    Raises:
        InputError: wrong ranks or shapes, non-finite features or weights, node indices out of range.

    Example:
        >>> g = ka.Graphs(x, adjacency)                                         # doctest: +SKIP
        >>> ka.kernel(ka.Aggregate() >> ka.Dense() >> ka.Relu() >> ka.GlobalAvgPool() >> ka.Dense(), g)
    """

    __slots__ = ("x", "pattern")

    def __init__(self, x: Any, pattern: Any, sparse: bool | None = None, *, name: str = "x"):
        if not _is_tracer(x) and np.ndim(x) == 2:
            x = np.asarray(x)[..., None]
        if not _is_tracer(x) and np.ndim(x) != 3:
            raise E.InputError(BAD_FEATURES.format(name=name, shape=tuple(np.shape(x))))
        x = check_input(name, x, "x[..., None] for one channel", 3)
        self.x, self.pattern = x, _check_pattern(name, pattern, x.shape[0], x.shape[1], x.dtype, sparse)

    @classmethod
    def _raw(cls, x: Any, pattern: Any) -> "Graphs":
        """Wrap already-validated arrays (no checks; pytree unflattening and slicing)."""
        obj = object.__new__(cls)
        obj.x, obj.pattern = x, pattern
        return obj

    @property
    def sparse(self) -> bool:
        """True for an edge-list pattern (B, E, 2), False for a dense one (B, N, N)."""
        return bool(np.issubdtype(np.dtype(self.pattern.dtype), np.integer))

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape (B, N, C) of the node features."""
        return tuple(self.x.shape)

    @property
    def ndim(self) -> int:
        return 3

    @property
    def dtype(self) -> Any:
        return self.x.dtype

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, idx: Any) -> "Graphs":
        """Sub-batch along the batch axis (an int keeps the batch axis)."""
        if isinstance(idx, (int, np.integer)):
            idx = slice(idx, idx + 1 if idx != -1 else None)
        return Graphs._raw(self.x[idx], self.pattern[idx])

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise E.InputError(GRAPHS_NOT_ARRAY)

    def __repr__(self) -> str:
        return f"Graphs(shape={self.shape}, {'sparse' if self.sparse else 'dense'} pattern {tuple(self.pattern.shape)})"

    def as_float64(self) -> "Graphs":
        """A float64 copy (a dense pattern too; an edge list stays integer)."""
        pat = self.pattern if self.sparse else np.asarray(self.pattern, np.float64)
        return Graphs._raw(np.asarray(self.x, np.float64), pat)

    @contextlib.contextmanager
    def bind_finite(self) -> Iterator[Any]:
        """Finite twins: the node features, with the pattern made available to Aggregate while inside."""
        token = FINITE_PATTERN.set(self.pattern)
        try:
            yield self.x
        finally:
            FINITE_PATTERN.reset(token)


jax.tree_util.register_pytree_node(Graphs, lambda g: ((g.x, g.pattern), None), lambda aux, ch: Graphs._raw(*ch))


def _check_pattern(name: str, pattern: Any, b: int, n: int, dtype: Any, sparse: bool | None) -> Any:
    if _is_tracer(pattern):
        return pattern
    host = np.asarray(pattern)
    if sparse is None:
        sparse = host.dtype.kind in "iu" and host.shape != (b, n, n)
    if sparse:
        if host.dtype.kind not in "iu" or host.ndim != 3 or host.shape[0] != b or host.shape[2] != 2:
            raise E.InputError(BAD_PATTERN.format(name=name, b=b, n=n,
                                                  got=f"sparse {host.dtype} array of shape {host.shape}"))
        if host.size and host.max() >= n:
            raise E.InputError(BAD_EDGE.format(name=name, node=int(host.max()), n=n, last=n - 1))
        return np.asarray(host, np.int32)
    if host.dtype.kind not in "fiub" or host.shape != (b, n, n):
        raise E.InputError(BAD_PATTERN.format(name=name, b=b, n=n, got=f"{host.dtype} array of shape {host.shape}"))
    host = host.astype(dtype)
    finite = np.isfinite(host)
    if not finite.all():
        bad = np.argwhere(~finite)
        raise E.InputError(NON_FINITE_PATTERN.format(name=name, count=len(bad), index=tuple(int(i) for i in bad[0])))
    return host


def as_graphs(name: str, x: Any) -> Graphs:
    """An input of a graph network: a :class:`Graphs` (a plain array lacks the pattern)."""
    if isinstance(x, Graphs):
        return x
    raise E.InputError(NEEDS_GRAPHS.format(name=name))


def prepare(x1: Any, x2: Any) -> tuple[Graphs, Graphs | None]:
    """Validate x1, x2 for the "graph" layout: same channels and node count, patterns of the same kind."""
    g1 = as_graphs("x1", x1)
    g2 = None if x2 is None else as_graphs("x2", x2)
    if g2 is not None:
        for what, a, b, fix in (("channels", g1.shape[2], g2.shape[2], "give both batches the same channels"),
                                ("nodes per graph", g1.shape[1], g2.shape[1],
                                 "pad the smaller graphs with isolated nodes of zero features"),
                                ("pattern kind", "sparse" if g1.sparse else "dense", "sparse" if g2.sparse else "dense",
                                 "give both dense patterns or both edge lists")):
            if a != b:
                raise E.InputError(GRAPH_MISMATCH.format(what=what, a=a, b=b, fix=fix))
        if g1.sparse and g1.pattern.shape[1] != g2.pattern.shape[1]:
            e = max(g1.pattern.shape[1], g2.pattern.shape[1])
            g1, g2 = (Graphs._raw(g.x, _pad_edges(g.pattern, e)) for g in (g1, g2))
        if g1.dtype != g2.dtype and not (_is_tracer(g1.x) or _is_tracer(g2.x)):
            dt = np.result_type(g1.dtype, g2.dtype)
            g1, g2 = (Graphs._raw(np.asarray(g.x, dt), g.pattern if g.sparse else np.asarray(g.pattern, dt))
                      for g in (g1, g2))
    return g1, g2


def _pad_edges(p: Any, e: int) -> Any:
    return np.concatenate([p, np.full((p.shape[0], e - p.shape[1], 2), -1, p.dtype)], axis=1)


def pair_patterns(xp: Any, p1: Any, p2: Any, ext: bool) -> tuple[Any, Any]:
    """The row and column patterns of every entry of the grid's batch axes.

    Without the extension (x2 None): (B, 1, ...) and (1, B, ...). With it: entry (i, j) of (N+1, M+1) pairs
    x1[i] with x2[j]; (i, M) is x1[i] with itself and (N, j) x2[j] with itself ((N, M): a placeholder).
    """
    if not ext:
        return p1[:, None], p2[None]
    n, m = p1.shape[0], p2.shape[0]
    fill = -1 if np.issubdtype(np.dtype(p1.dtype), np.integer) else 0
    pad = xp.full((1, 1) + p1.shape[1:], fill, p1.dtype)
    rows = xp.concatenate([xp.broadcast_to(p1[:, None], (n, m + 1) + p1.shape[1:]),
                           xp.concatenate([p2[None], pad], axis=1)], axis=0)
    cols = xp.concatenate([xp.broadcast_to(p2[None], (n + 1, m) + p2.shape[1:]),
                           xp.concatenate([p1[:, None], pad], axis=0)], axis=1)
    return rows, cols


def _stats(lay: GraphState) -> KernelState:
    return KernelState(Q1, Q2, C, sp.Integer(0), gaussian=False, width=D, after="the input", layout=lay)


def _env(lay: GraphState, x1: Graphs, x2: Graphs | None, ops: Arrays) -> dict:
    env = pixel_pair_env(lay, x1.x, None if x2 is None else x2.x, ops)
    ext = x2 is not None and lay.self_grids
    p1 = x1.pattern
    p2 = p1 if x2 is None else x2.pattern
    rows, cols = pair_patterns(ops.xp, ops.xp.asarray(p1), ops.xp.asarray(p2), ext)
    flat = (lambda g: ops.xp.concatenate([g.x.reshape(len(g.x), -1), g.pattern.reshape(len(g.x), -1).astype(g.x.dtype)],
                                         axis=1))
    id1, id2 = sample_ids(ops.xp, flat(x1), None if x2 is None else flat(x2))  # the same graph: features and pattern
    env.update({PAT1: rows, PAT2: cols, ID1: id1[:, None], ID2: id2[None, :]})
    return env


def plan(net: Any) -> GraphState:
    """Every node pair, with self grids (Aggregate needs them); readouts evaluated in batch mode."""
    readouts = sum(leaf.spatial.readout for leaf in net.leaves() if leaf.spatial is not None)
    return GraphState(1, "full", self_grids=True, spatial_out=not readouts, chunked=False)


def _specialize(base: InputLayout, net: Any) -> InputLayout:
    lay = plan(net)
    return dataclasses.replace(base, stats=partial(_stats, lay), env=partial(_env, lay), specialize=None)


# ------------------------------------------------------------------------------- node masks (mask_constant)


def _masked_env(lay: GraphState, x1: MaskedImages, x2: MaskedImages | None, ops: Arrays) -> dict:
    env = _env(lay, x1.x, None if x2 is None else x2.x, ops)
    return mask_env(env, x1.valid, None if x2 is None else x2.valid, ops, 1, "full", x2 is not None)


def _masked_layout(net: Any) -> InputLayout:
    """The graph layout of ``net`` with node masks (neural-tangents' ``mask_constant`` on node features)."""
    lay = dataclasses.replace(plan(net), masked=True)
    return InputLayout("graph", 3, partial(_stats, lay), partial(_masked_env, lay), rank_fix=_RANK_FIX,
                       prepare=lambda x1, x2: (x1, x2))


def masked_graphs(name: str, g: Graphs, c: float) -> MaskedImages:
    """``g`` with nodes whose every feature equals ``c`` masked (features equal to c zeroed)."""
    x = g.x if isinstance(g.x, jax.Array) else np.asarray(g.x)
    m = MaskedImages.from_constant(name, x, c)
    return MaskedImages(Graphs._raw(m.x, g.pattern), m.valid)


def _mask(net: Any, x1: Any, x2: Any, constant: Any) -> tuple:
    """Nodes whose every feature equals ``constant`` are masked: readouts pool over the valid nodes."""
    c = check_constant(constant)
    g1, g2 = prepare(x1, x2)
    m2 = None if g2 is None else masked_graphs("x2", g2, c)
    return masked_net(net, _masked_layout), masked_graphs("x1", g1, c), m2


_RANK_FIX = "pass ka.Graphs(x, pattern) with x of shape (batch, nodes, channels)"


def _base() -> InputLayout:
    lay = GraphState(1, "full", self_grids=True)
    base = InputLayout("graph", 3, partial(_stats, lay), partial(_env, lay), rank_fix=_RANK_FIX, prepare=prepare,
                       mask=_mask)
    return dataclasses.replace(base, specialize=partial(_specialize, base))


#: The input layout of graph networks: :class:`Graphs` (node features (B, N, C) and patterns).
GRAPH_LAYOUT = _base()


def finite_pattern() -> Any:
    """The pattern bound by :meth:`Graphs.bind_finite` (finite twins), or an error naming the fix."""
    pat = FINITE_PATTERN.get()
    if pat is None:
        raise E.InputError(NO_PATTERN_BOUND)
    return jnp.asarray(pat)
