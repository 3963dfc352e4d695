"""Sequence inputs (batch, time, features) for recurrent layers, and variable lengths.

Layout "sequence" (NLC, as neural-tangents): ``x`` has shape (N, T, m). A batch whose sequences have
different lengths is a :class:`Sequences` container: the data padded to a common T plus the lengths.

Semantics of unequal lengths (Alemohammad et al., ICLR 2021): sequences are aligned at their LAST step.
Sequence i occupies ``x[i, T - L_i:]`` ("front" padding); the recurrent state is h = 0 on the padded steps,
so every sequence starts from h_0 = 0 at its own first step and a "last" readout reads each sequence at its
own last step. Padding values are ignored (replaced by 0). In the kernel, the time-pair recursion runs
along diagonals that end at (T, T'), which is exactly this alignment; x1 and x2 may even have different T.

The input state of the kernel program in this layout (per-sample arrays (N, 1, ...)/(1, M, ...), per-pair
arrays (N, M, ...)): ``q1`` = |x_t|^2/m of shape (N, 1, T, 1), ``q2`` (1, M, 1, T'), ``c`` = x_t.x'_t'/m of
shape (N, M, T, T') -- so elementwise layers (a time-distributed Dense, activations) act per time pair --
plus the masks, each sequence's own time-pair Gram grid and the raw (masked) sequences, which the
recurrent layer uses (see :class:`SequenceState`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence as Seq

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from kernelalg.backends import Arrays
from kernelalg.core import _errors as E
from kernelalg.core._inputs import InputLayout, sample_ids
from kernelalg.core._program import C, D, ID1, ID2, Q1, Q2, KernelState

#: Validity masks (1 on a sequence's own steps, 0 on padding): (N, 1, T, 1) and (1, M, 1, T').
MASK1 = sp.Symbol("mask1", nonnegative=True)
MASK2 = sp.Symbol("mask2", nonnegative=True)
#: Each sequence's own time-pair Gram grid x_t.x_s/m: (N, 1, T, T) and (1, M, T', T').
GRAM1 = sp.Symbol("g1", real=True)
GRAM2 = sp.Symbol("g2", real=True)
#: The raw sequences with padding zeroed: (N, T, m) and (M, T', m).
SEQ1 = sp.Symbol("x1", real=True)
SEQ2 = sp.Symbol("x2", real=True)

BAD_SEQ_RANK = (
    "{name} must be a 3-D array (batch, time, features) for a recurrent network, got shape {shape}. "
    "Fix: {fix}."
)
BAD_LENGTHS = (
    "{name}: lengths must be {n} integers between 1 and T = {t} (one per sequence), got {got}. "
    "Fix: pass the number of valid steps of each sequence, e.g. ka.Sequences(x, lengths=[{t}] * {n}), "
    "or build the batch with ka.Sequences.from_list(list_of_arrays)."
)
BAD_PADDING = "padding must be 'front' or 'back', got {got!r}. Fix: padding='front' (x[i, T-L:] holds sequence i)."
SEQ_FEATURE_MISMATCH = (
    "x1 has {m1} features per time step but x2 has {m2}. Fix: pass sequences with the same feature "
    "dimension (their lengths T may differ)."
)
SEQ_NOT_ARRAY = (
    "ka.Sequences cannot be converted to a plain array: it carries lengths. Fix: use it as the input of a "
    "network that starts with ka.Recurrent, or use .x (the padded data) and .lengths explicitly."
)
EMPTY_LIST = "Sequences.from_list got no sequences. Fix: pass a non-empty list of (L_i, m) arrays."


def _is_tracer(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


class Sequences:
    """A batch of sequences of possibly different lengths, aligned at their last step.

    Args:
        x: Padded data, shape (N, T, m) (or (N, T) for one feature). Sequence i is ``x[i, T - L_i:]``
            (``padding="front"``) or ``x[i, :L_i]`` (``padding="back"``, re-packed to the front here).
            Padding values are ignored; valid steps must be finite.
        lengths: (N,) integers in [1, T]; None means every sequence has length T.
        padding: "front" (default) or "back".
        name: Argument name used in error messages.

    Raises:
        InputError: wrong rank, empty, non-float dtype, lengths not integers in [1, T], non-finite valid steps,
            or an unknown ``padding``.

    Attributes:
        x: (N, T, m) front-padded data with zeros on padded steps.
        mask: (N, T) float array, 1 on valid steps, 0 on padding.

    Example:
        >>> seqs = ka.Sequences.from_list([np.ones((3, 2)), np.ones((5, 2))])  # doctest: +SKIP
        >>> ka.kernel(ka.Recurrent(ka.Relu()) >> ka.Dense(), seqs)             # doctest: +SKIP
    """

    __slots__ = ("x", "mask")

    def __init__(self, x: Any, lengths: Any = None, padding: str = "front", *, name: str = "x"):
        if padding not in ("front", "back"):
            raise E.InputError(BAD_PADDING.format(got=padding))
        if _is_tracer(x):
            arr, xp = x, jnp
        else:
            arr, xp = np.asarray(x), np
            if arr.dtype.kind in "iub":
                arr = arr.astype(np.float64)
            if arr.dtype not in (np.float32, np.float64):
                raise E.InputError(E.BAD_DTYPE.format(name=name, dtype=arr.dtype))
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3:
            fix = "x[None] for a single sequence" if arr.ndim == 1 else "reshape to (batch, time, features)"
            raise E.InputError(BAD_SEQ_RANK.format(name=name, shape=tuple(arr.shape), fix=fix))
        n, t = arr.shape[0], arr.shape[1]
        if n == 0 or t == 0 or arr.shape[2] == 0:
            raise E.InputError(E.EMPTY_INPUT.format(name=name, shape=tuple(arr.shape)))
        lens = _check_lengths(name, lengths, n, t)
        steps = np.arange(t)[None, :]
        valid = steps >= (t - lens)[:, None]
        if padding == "back" and (lens < t).any():  # re-pack x[i, :L] to x[i, T-L:]
            src = (steps - (t - lens)[:, None]) % t
            arr = xp.take_along_axis(arr, xp.asarray(src)[:, :, None], axis=1)
        mask = valid.astype(arr.dtype)
        arr = xp.where(xp.asarray(valid)[:, :, None], arr, 0).astype(arr.dtype)
        if xp is np:
            finite = np.isfinite(arr)
            if not finite.all():
                bad = np.argwhere(~finite)
                raise E.InputError(E.NON_FINITE.format(name=name, count=len(bad),
                                                       index=tuple(int(i) for i in bad[0])))
        self.x, self.mask = arr, (jnp.asarray(mask) if xp is jnp else mask)

    @classmethod
    def from_list(cls, seqs: Seq[Any], length: int | None = None, dtype: Any = None) -> "Sequences":
        """Front-pad a list of (L_i, m) (or (L_i,)) arrays into one batch.

        Args:
            seqs: The sequences.
            length: Common padded length T (default: the longest).
            dtype: Output dtype (default: NumPy's promotion of the inputs, at least float32).

        Returns:
            The batch, sequence i in ``x[i, T - L_i:]``.

        Raises:
            InputError: an empty list, sequences with different feature counts, or one longer than ``length``.
        """
        if len(seqs) == 0:
            raise E.InputError(EMPTY_LIST)
        arrs = [np.asarray(s) for s in seqs]
        arrs = [a[:, None] if a.ndim == 1 else a for a in arrs]
        lens = [len(a) for a in arrs]
        t = max(lens) if length is None else int(length)
        dt = np.result_type(np.float32, *arrs) if dtype is None else dtype
        out = np.zeros((len(arrs), t, arrs[0].shape[-1]), dt)
        for i, a in enumerate(arrs):
            if a.ndim != 2 or a.shape[-1] != out.shape[-1] or not 1 <= len(a) <= t:
                raise E.InputError(f"Sequences.from_list: sequence {i} has shape {a.shape}; expected (L, "
                                   f"{out.shape[-1]}) with 1 <= L <= {t}. Fix: give every sequence the same "
                                   "number of features, at least one step, and length <= the padded length.")
            out[i, t - len(a):] = a
        return cls(out, lens)

    @classmethod
    def _raw(cls, x: Any, mask: Any) -> "Sequences":
        """Wrap already-validated arrays (no checks; used by JAX pytree unflattening and slicing)."""
        obj = object.__new__(cls)
        obj.x, obj.mask = x, mask
        return obj

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape (N, T, m) of the padded data."""
        return tuple(self.x.shape)

    @property
    def ndim(self) -> int:
        """Always 3 (batch, time, features)."""
        return 3

    @property
    def dtype(self) -> Any:
        """Dtype of the padded data."""
        return self.x.dtype

    @property
    def lengths(self) -> np.ndarray:
        """Number of valid steps of each sequence, shape (N,)."""
        return np.asarray(self.mask).sum(axis=1).round().astype(int)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, idx: Any) -> "Sequences":
        """Sub-batch along the batch axis (an int keeps the batch axis); lengths and padding are kept."""
        if isinstance(idx, tuple):
            raise E.InputError("Sequences can only be indexed along the batch axis, e.g. seqs[2:5].")
        if isinstance(idx, (int, np.integer)):
            idx = slice(idx, idx + 1 if idx != -1 else None)
        return Sequences._raw(self.x[idx], self.mask[idx])

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise E.InputError(SEQ_NOT_ARRAY)

    def __repr__(self) -> str:
        lens = self.lengths if not _is_tracer(self.mask) else "traced"
        return f"Sequences(shape={self.shape}, lengths={lens})"


jax.tree_util.register_pytree_node(Sequences, lambda s: ((s.x, s.mask), None),
                                   lambda aux, children: Sequences._raw(*children))


def _check_lengths(name: str, lengths: Any, n: int, t: int) -> np.ndarray:
    if lengths is None:
        return np.full(n, t)
    try:
        raw = np.asarray(lengths)
        lens = raw.astype(np.int64)
        ok = raw.shape == (n,) and np.array_equal(lens, raw) and lens.min() >= 1 and lens.max() <= t
    except (TypeError, ValueError):
        ok = False
    if not ok:
        got = lengths if np.size(lengths) <= 8 else f"array of shape {np.shape(lengths)}"
        raise E.InputError(BAD_LENGTHS.format(name=name, n=n, t=t, got=got))
    return lens


def as_sequences(name: str, x: Any) -> Sequences:
    """Validate one input of a recurrent network: a :class:`Sequences` or an (N, T, m) array (full length)."""
    return x if isinstance(x, Sequences) else Sequences(x, name=name)


def prepare(x1: Any, x2: Any) -> tuple[Sequences, Sequences | None]:
    """Validate x1, x2 for the "sequence" layout (same features; lengths T may differ; common dtype)."""
    s1 = as_sequences("x1", x1)
    s2 = None if x2 is None else as_sequences("x2", x2)
    if s2 is not None:
        if s1.shape[2] != s2.shape[2]:
            raise E.InputError(SEQ_FEATURE_MISMATCH.format(m1=s1.shape[2], m2=s2.shape[2]))
        if s1.dtype != s2.dtype and not (_is_tracer(s1.x) or _is_tracer(s2.x)):
            dt = np.result_type(s1.dtype, s2.dtype)
            s1 = Sequences._raw(np.asarray(s1.x, dt), np.asarray(s1.mask, dt))
            s2 = Sequences._raw(np.asarray(s2.x, dt), np.asarray(s2.mask, dt))
    return s1, s2


@dataclass(frozen=True)
class SequenceState:
    """Layout record of a kernel state over time pairs (the ``layout`` field of :class:`KernelState`).

    Attributes:
        mask1: Symbol of the (N, 1, T, 1) validity mask of x1; ``mask2`` (1, M, 1, T') of x2.
        self1: Symbol of each x1 sequence's own time-pair NNGP grid (N, 1, T, T), or None; ``self2``
            (1, M, T', T'). Needed by average-over-time readouts (their K(x, x)).
        key: The (var1, var2, cov, ntk) entries the self grids and ``raw`` belong to. Elementwise layers pass
            the layout on unchanged but create new entries, so a mismatch means "stale": not usable.
        raw: (SEQ1, SEQ2) when the state is still the raw input (the recurrent layer then forms the
            input products x_t.x'_t'/m row by row instead of reading the (N, M, T, T') grid).
    """

    mask1: sp.Symbol
    mask2: sp.Symbol
    self1: sp.Symbol | None = None
    self2: sp.Symbol | None = None
    key: tuple = ()
    raw: tuple | None = None
    name: str = "sequence"

    def current(self, st: KernelState) -> bool:
        """Whether the self grids (and raw sequences) describe the state ``st``."""
        return self.key == st.exprs


def _seq_stats() -> KernelState:
    zero = sp.Integer(0)
    state = SequenceState(MASK1, MASK2, GRAM1, GRAM2, key=(Q1, Q2, C, zero), raw=(SEQ1, SEQ2))
    return KernelState(Q1, Q2, C, zero, gaussian=False, width=D, after="the input", layout=state)


def _seq_env(x1: Sequences, x2: Sequences | None, ops: Arrays) -> dict:
    m = x1.x.shape[-1]
    s2 = x1 if x2 is None else x2
    a, b = x1.x, s2.x
    q1 = ops.xp.sum(a * a, axis=-1) / m
    q2 = q1 if x2 is None else ops.xp.sum(b * b, axis=-1) / m
    g1 = ops.einsum("ntd,nsd->nts", a, a) / m
    g2 = g1 if x2 is None else ops.einsum("ntd,nsd->nts", b, b) / m
    c = ops.einsum("ntd,msd->nmts", a, b) / m
    with_mask = (lambda s: ops.xp.concatenate([s.x, s.mask[..., None].astype(s.x.dtype)], axis=-1))
    id1, id2 = sample_ids(ops.xp, with_mask(x1), None if x2 is None else with_mask(x2))
    return {Q1: q1[:, None, :, None], Q2: q2[None, :, None, :], C: c, D: float(m), ID1: id1[:, None], ID2: id2[None, :],
            MASK1: x1.mask[:, None, :, None], MASK2: s2.mask[None, :, None, :],
            GRAM1: g1[:, None], GRAM2: g2[None], SEQ1: a, SEQ2: b}


#: The input layout of recurrent layers: (batch, time, features) arrays or :class:`Sequences`.
SEQUENCE_LAYOUT = InputLayout("sequence", 3, _seq_stats, _seq_env, rank_fix="reshape to (batch, time, features)",
                              prepare=prepare)
