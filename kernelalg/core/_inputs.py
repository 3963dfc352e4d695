"""Input layouts: how raw input arrays become the symbolic input state and its arrays.

Dense networks take (batch, features) (:data:`DENSE`); spatial and recurrent layers declare their own
layouts (images NHWC, sequences NLC) in their ``input_layout`` field. The first leaf layer that declares one
decides; there is no registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import sympy as sp

from kernelalg.core._program import C, D, ID1, ID2, Q1, Q2, KernelState


@dataclass(frozen=True)
class InputLayout:
    """How one kind of input enters the kernel program.

    Attributes:
        name: Layout name ("dense", ...).
        rank: Expected ``x.ndim`` including the batch axis.
        stats: () -> the symbolic :class:`KernelState` of the raw input.
        env: (x1, x2 or None, arrays) -> {symbol: array} for the input symbols, computed with the backend's
            array namespace ``arrays`` (a :class:`kernelalg.backends.Arrays`: JAX for the compiled kernel,
            NumPy for the reference); batch axes first: per-sample arrays of shape (N, 1, ...) / (1, M, ...),
            per-pair arrays (N, M, ...).
        rank_fix: Advice shown when the rank is wrong.
        prepare: Optional (x1, x2 or None) -> (x1, x2): validates raw inputs and converts them to what
            ``env`` takes (arrays or JAX pytrees that support ``len``, row slicing, ``.shape`` and
            ``.dtype``); it must accept its own outputs unchanged (tiles are re-prepared). None: the
            default check of a (batch, ...) array of rank ``rank``.
        specialize: Optional net -> InputLayout: a pre-pass over the whole network that returns the
            layout to use for it (e.g. images: full pixel-pair covariances when a pooling layer needs
            them, matching-pixel diagonals otherwise). Applied by :func:`layout_of`.
        auto_batch: Optional (x1, x2 or None) -> tile size or None: the batch_size used when the caller
            gives none (bounds memory for layouts whose per-pair arrays are large).
        mask: Optional (net, x1, x2 or None, constant) -> (net', x1', x2'): the network and inputs whose kernel
            is the kernel of ``net`` with entries equal to ``constant`` masked (neural-tangents'
            ``mask_constant``); None where the layout has no masks.
    """

    name: str
    rank: int
    stats: Callable[[], KernelState]
    env: Callable[[Any, Any, Any], dict]
    rank_fix: str = "reshape to (batch, features), e.g. x.reshape(len(x), -1)"
    prepare: Callable[[Any, Any], tuple[Any, Any]] | None = None
    specialize: Callable[[Any], "InputLayout"] | None = None
    auto_batch: Callable[[Any, Any], int | None] | None = None
    mask: Callable[[Any, Any, Any, float], tuple] | None = None


def layout_of(net: Any) -> InputLayout:
    """The input layout a network expects (its first leaf's ``input_layout``, else :data:`DENSE`)."""
    for leaf in net.leaves():
        layout = leaf.input_layout
        if layout is not None:
            return layout if layout.specialize is None else layout.specialize(net)
    return DENSE


def _dense_stats() -> KernelState:
    return KernelState(Q1, Q2, C, sp.Integer(0), gaussian=False, width=D, after="the input", layout="dense")


def _dense_env(x1: Any, x2: Any, arrays: Any) -> dict:
    xp, d = arrays.xp, x1.shape[-1]
    q1 = xp.sum(x1 * x1, axis=-1, keepdims=True) / d
    other = x1 if x2 is None else x2
    c = arrays.matmul(x1, other.T) / d
    q2 = q1.T if x2 is None else (xp.sum(x2 * x2, axis=-1, keepdims=True) / d).T
    id1, id2 = sample_ids(xp, x1, x2)
    return {Q1: q1, Q2: q2, C: c, D: float(d), ID1: id1[:, None], ID2: id2[None, :]}


def sample_ids(xp: Any, x1: Any, x2: Any) -> tuple[Any, Any]:
    """Sample identities (:data:`~kernelalg.core._program.ID1`, ``ID2``) of a pair of input batches: 0..N-1 for
    x1; the same for x2 when it is None or equal to x1 (as neural-tangents' ``x1_is_x2``), else negative."""
    n = len(x1)
    ids = xp.arange(n, dtype=x1.dtype)
    if x2 is None:
        return ids, ids
    m = len(x2)
    other = -1 - xp.arange(m, dtype=x1.dtype)
    if tuple(x1.shape) != tuple(x2.shape):
        return ids, other
    return ids, xp.where(xp.all(x1 == x2), ids, other)


#: The input layout of dense networks: (batch, features), input kernel x.x'/d.
DENSE = InputLayout("dense", 2, _dense_stats, _dense_env)
