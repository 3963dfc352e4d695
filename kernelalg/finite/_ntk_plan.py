"""Memory plan of the empirical NTK: the cheapest exact route and the tile size that fits a budget.

A full Jacobian of a wide network does not fit in memory (width 4096, 10 outputs, 1000 points: 17M parameters
x 10^4 outputs x 4 bytes = 680 GB); :func:`plan_ntk` picks the structured route (layer inputs and output
cotangents only, Novak et al. 2022) where it applies, else Jacobian tiles small enough for ``memory`` bytes,
and refuses with a clear error when not even one row fits.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import numpy as np

from kernelalg.core import _errors as E
from kernelalg.finite._twins import FiniteNet

DEFAULT_MEMORY = 2 * 2**30
NTK_TOO_BIG = ("the empirical NTK needs about {need:.2f} GiB even one example at a time on the {method} route "
               "({p} trainable parameters x {k} outputs), over the budget of {budget:.2f} GiB. Fix: raise memory=, "
               "freeze layers (trainable=/freeze=), or use a ka.finite twin of a Dense chain (structured route).")


def batch_len(x: Any) -> int:
    """Number of examples of a batch (an array or a pytree batch such as ``ka.Sequences``)."""
    return int(jax.tree_util.tree_leaves(x)[0].shape[0])


def outputs_2d(y: jax.Array, batch: int) -> jax.Array:
    """(batch, *spatial, k) view of an output (a (batch,) output becomes (batch, 1))."""
    return y.reshape(batch, 1) if y.ndim == 1 else y


def plan_ntk(fn: Callable, params: Any, x1: Any, x2: Any = None, trace: bool = True, trainable: tuple | None = None,
             memory: float = DEFAULT_MEMORY) -> tuple[str, int]:
    """(method, rows per tile) of the cheapest exact route whose working set fits ``memory`` bytes.

    The structured route (Dense chains of ``ka.finite``) holds, per tile of b rows, the layer inputs and the
    output cotangents: about ``itemsize (2 b (sum fan_in + 3 k sum fan_out) + 4 b^2 q)`` bytes (k outputs,
    q = 1 traced, k^2 untraced). The Jacobian route holds two tiles of per-example Jacobians,
    ``itemsize (4 b k P + b^2 q)`` for P trainable parameters. A route that cannot fit one row raises.
    """
    n = batch_len(x1) if x2 is None else max(batch_len(x1), batch_len(x2))
    out = jax.eval_shape(lambda p, xx: outputs_2d(fn(p, xx), batch_len(x1)), params, x1)
    k, item = math.prod(out.shape[1:]), np.dtype(out.dtype).itemsize
    q = 1 if trace else k * k
    leaves = jax.tree_util.tree_leaves(params)
    flags = trainable or (True,) * len(leaves)
    n_par = sum(a.size for a, t in zip(leaves, flags) if t)
    dims = _structured_dims(fn, params, x1, out.shape)
    if dims is not None:
        method, cost = "structured", (lambda b: item * (2 * b * (dims[0] + 3 * k * dims[1]) + 4 * b * b * q))
    else:
        method, cost = "jacobian", (lambda b: item * (4 * b * k * n_par + b * b * q))
    if cost(1) > memory:
        raise E.KernelalgError(NTK_TOO_BIG.format(need=cost(1) / 2**30, budget=memory / 2**30, p=n_par, k=k,
                                                  method=method))
    lo, hi = 1, n
    while lo < hi:  # the largest b <= n with cost(b) <= memory
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if cost(mid) <= memory else (lo, mid - 1)
    return method, lo


def _structured_dims(fn: Callable, params: Any, x: Any, out_shape: tuple) -> tuple[int, int] | None:
    """(sum of fan-ins, sum of fan-outs) of the Dense layers when the structured route applies, else None."""
    twin = getattr(fn, "__self__", None)
    if not isinstance(twin, FiniteNet) or getattr(fn, "__func__", None) is not FiniteNet.apply:
        return None
    if not hasattr(x, "ndim") or x.ndim != 2 or len(out_shape) != 2:
        return None
    if any(not c.is_feature_affine and jax.tree_util.tree_leaves(p) for c, p in zip(twin.chain, params)):
        return None
    dense = [pr["W"].shape for c, pr in zip(twin.chain, params) if c.is_feature_affine]
    return sum(s[0] for s in dense), sum(s[1] for s in dense)
