"""Precision of deep kernels: the predicted amplification of rounding near correlation 1, and the diagnosis
of kernels that are not representable in the requested precision.

Amplification. A pair of inputs with correlation rho = 1 - gamma (gamma small) keeps 1 - rho ~ chi gamma per
layer, chi the slope of the correlation map at rho = 1: chi_1 = W^2 E[phi'(u)^2] at the variance fixed point
q* (Poole et al. 2016; Schoenholz et al. 2017). In the chaotic phase (chi_1 > 1) a rounding perturbation of
relative size eps is amplified like any other, so the entries of nearly parallel inputs carry a relative
error of about eps * A, A the product of the slopes through the network (measured: depth-100 erf net, W_std
1.5, b_std 0.05: A = 3.3e9, chi_1^100 = 2.5e9 with chi_1 = 1.2416; float64 error 2.0e-7 against eps * A = 7.2e-7;
docs/numerics.md). The slopes are taken layer by layer along the variance recursion (the diagonal of the
program, where the kernel map is evaluated at x = x'): each layer block is evaluated at the correlation
1 - gamma with gamma = 1e-7 (float64) and its output gap divided by gamma.

References:
    Poole, Lahiri, Raghu, Sohl-Dickstein, Ganguli (2016), Exponential expressivity in deep neural networks
    through transient chaos, NeurIPS.
    Schoenholz, Gilmer, Ganguli, Sohl-Dickstein (2017), Deep information propagation, ICLR.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import sympy as sp

from kernelalg.core import _errors as E
from kernelalg.core._program import C, D, ID1, ID2, Q1, Q2, Assign, Block, Instruction, KernelState
from ._reference import NUMPY_TABLE
from ._walker import evaluate, run_program

#: Correlation gap at which each layer's slope is measured (float64: rounding of the gap is ~1e-9 relative).
GAP = 1e-7
#: Relative error above which a :class:`~kernelalg.core._errors.PrecisionWarning` is issued.
TOLERANCE = 1e-3
#: The backends snap |rho| to 1 within this many ulps (``snapped_corr``): closer pairs count as parallel.
SNAP_ULPS = 512


def _chain(program: Sequence[Instruction], blocks: Sequence[Block], outputs: Sequence[KernelState]) -> bool:
    """Whether the program is one elementwise chain of layer blocks from the dense input to the one output."""
    if len(outputs) != 1 or not blocks or not all(isinstance(i, Assign) for i in program):
        return False
    if tuple(blocks[0].inputs[:3]) != (Q1, Q2, C) or tuple(blocks[-1].outputs) != tuple(outputs[0].exprs):
        return False
    return all(b.inputs == a.outputs for a, b in zip(blocks, blocks[1:]))


def layer_slopes(program: Sequence[Instruction], blocks: Sequence[Block], outputs: Sequence[KernelState],
                 params: Mapping[sp.Symbol, float], q: np.ndarray, d: int) -> np.ndarray | None:
    """Slopes of the correlation map at rho = 1 of every layer block, shape (blocks, len(q)), for inputs of
    |x|^2/d = q; None when the program is not a chain of elementwise blocks (branches, spatial Ops)."""
    if not _chain(program, blocks, outputs):
        return None
    q = np.asarray(q, dtype=np.float64)
    # one input with itself (same sample identity: a Dropout block keeps its smooth diagonal branch)
    env: dict[Any, Any] = {Q1: q, Q2: q, C: q, D: float(d), ID1: 0, ID2: 0}
    env.update({s: float(v) for s, v in params.items()})
    with np.errstate(all="ignore"):
        diag = run_program(program, dict(env), NUMPY_TABLE)
        slopes = []
        for b in blocks:
            v1, v2, k, _ = b.inputs
            local = dict(diag)
            local[k] = np.sqrt(evaluate(v1, diag, NUMPY_TABLE) * evaluate(v2, diag, NUMPY_TABLE)) * (1 - GAP)
            run_program(program[b.start:b.stop], local, NUMPY_TABLE)
            o1, o2, ko = (evaluate(e, local, NUMPY_TABLE) for e in b.outputs[:3])
            slopes.append((1 - ko / np.sqrt(o1 * o2)) / GAP * np.ones_like(q))
    return np.asarray(slopes)


def amplification(slopes: np.ndarray) -> float:
    """The largest product of the slopes of consecutive blocks up to the output (rounding at block l is
    amplified by the slopes after it), over all inputs; at least 1."""
    s = np.where(np.isfinite(slopes) & (slopes > 0), slopes, 1.0)
    suffix = np.cumprod(s[::-1], axis=0)
    return float(max(1.0, np.max(suffix)))


def precision_message(amp: float, dtype: Any, net: str) -> str | None:
    """The :data:`~kernelalg.core._errors.PRECISION_LOSS` warning for amplification ``amp`` in ``dtype``, or
    None when the predicted relative error eps * amp is below :data:`TOLERANCE`."""
    eps = float(np.finfo(dtype).eps)
    err = eps * amp
    if err <= TOLERANCE:
        return None
    err64 = float(np.finfo(np.float64).eps) * amp
    if np.dtype(dtype) != np.float64 and err64 <= TOLERANCE:
        fix = f"pass float64 inputs (predicted error {err64:.1g})"
    else:
        fix = "use fewer layers, or a W_std / b_std in the ordered phase (chi_1 <= 1)"
    return E.PRECISION_LOSS.format(
        dtype=np.dtype(dtype).name, digits=min(np.log10(amp), -np.log10(eps)), total=-np.log10(eps),
        net=net, amp=amp, err=min(err, 1.0), gap=max(SNAP_ULPS * eps, 10 / amp), fix=fix)


def describe(net: Any) -> str:
    """The architecture's repr, or its first and last layers and depth when that is long (for messages)."""
    text = repr(net)
    if len(text) <= 160:
        return text
    leaves = net.leaves()
    return f"{leaves[0]!r} >> ... >> {leaves[-1]!r} ({len(leaves)} layers)"


def check(symbolic: Any, x1: Any, x2: Any, params: Mapping[sp.Symbol, float], cache: dict,
          stacklevel: int = 2) -> None:
    """Issue a :class:`~kernelalg.core._errors.PrecisionWarning` when the amplification of ``symbolic``'s dense
    program, at the smallest and largest |x|^2/d of the inputs, predicts a relative error above
    :data:`TOLERANCE` in the inputs' precision. Amplifications are kept in ``cache`` per hyperparameters,
    input dimension and input scale (to 0.1 in log2). ``stacklevel`` as in :func:`warnings.warn`, from here."""
    dtype = x1.dtype if x2 is None else np.result_type(x1.dtype, x2.dtype)
    rows = [np.asarray(x, np.float64) for x in (x1, x2) if x is not None]
    q = np.concatenate([np.mean(r * r, axis=1) for r in rows])
    q = q[q > 0]
    if not len(q):
        return
    q, d = np.array([q.min(), q.max()]), x1.shape[-1]
    key = (tuple(sorted((s.name, v) for s, v in params.items())), d, tuple(np.round(np.log2(q), 1)))
    if key not in cache:
        slopes = layer_slopes(symbolic.program, symbolic.blocks, symbolic.outputs, params, q, d)
        cache[key] = None if slopes is None else amplification(slopes)
    msg = None if cache[key] is None else precision_message(cache[key], dtype, describe(symbolic.net))
    if msg is not None:
        warnings.warn(msg, E.PrecisionWarning, stacklevel=stacklevel)


def not_representable_message(dtype: Any, net: str, arrays: Sequence[Any], largest64: float | None) -> str:
    """The :data:`~kernelalg.core._errors.NOT_REPRESENTABLE` message for kernel arrays with non-finite entries.

    Args:
        dtype: The requested precision.
        net: The architecture (its repr).
        arrays: The computed kernel arrays.
        largest64: The largest |entry| of the float64 kernel when ``dtype`` is float32 and float64 computes it,
            None when float64 fails too (or was the requested precision).
    """
    bad = [np.argwhere(~np.isfinite(np.asarray(a))) for a in arrays]
    count = sum(len(b) for b in bad)
    index = next(tuple(int(i) for i in b[0]) for b in bad if len(b))
    name, big = np.dtype(dtype).name, float(np.finfo(dtype).max)
    if largest64 is None:
        reason = (f"the kernel or an intermediate exceeds {name}'s range ({big:.3g}), or an expectation "
                  "diverges (e.g. Exp or Gaussian(b > 0) at large variances), and float64 does not compute it.")
        fix = "use fewer layers, a smaller W_std, or smaller inputs (the variance grows with each layer)"
    elif largest64 > big:
        reason = f"the kernel reaches {largest64:.3g} (computed in float64), beyond {name}'s largest {big:.3g}."
        fix = "pass float64 inputs, e.g. x.astype(numpy.float64)"
    else:
        reason = (f"an intermediate overflowed {name} although the kernel is representable (largest entry "
                  f"{largest64:.3g} in float64).")
        fix = "pass float64 inputs, e.g. x.astype(numpy.float64)"
    return E.NOT_REPRESENTABLE.format(dtype=name, net=net, count=count, ies="y" if count == 1 else "ies",
                                      index=index, reason=reason, fix=fix)
