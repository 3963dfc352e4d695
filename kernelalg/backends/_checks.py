"""Validation shared by the kernel entry points: inputs, hyperparameter overrides, tile sizes, outputs.

Bad input gets a :class:`~kernelalg.core._errors.KernelalgError` naming the problem and the fix, never a NaN
or a plausible wrong number: inputs must be finite, non-empty and small enough that their statistics
|x|^2/d fit the floating-point type; hyperparameters follow the layer constructors' rules; a computed
kernel that is not finite (a dual evaluated where it diverges, an overflow) is reported with its reason.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np
import sympy as sp

from kernelalg.core import _errors as E
from kernelalg.core._inputs import InputLayout
from kernelalg.core._layer import check_number, check_std


def is_tracer(x: Any) -> bool:
    """True for an abstract JAX value (inside jit/grad), whose contents cannot be checked."""
    return isinstance(x, jax.core.Tracer)


def check_input(name: str, x: Any, feature_fix: str = "reshape to (batch, features), e.g. x.reshape(len(x), -1)",
                ndim: int = 2) -> Any:
    """Validate an input array: rank, dtype, non-empty, finite, representable statistics.

    Integer data is converted to float64.
    """
    if is_tracer(x):
        if x.ndim != ndim:
            raise E.InputError(E.BAD_RANK.format(name=name, ndim=ndim, shape=x.shape, fix=feature_fix))
        return x
    if not isinstance(x, jax.Array):
        try:
            x = np.asarray(x)
        except ValueError:  # ragged nested lists
            raise E.InputError(E.RAGGED_INPUT.format(name=name)) from None
    if x.dtype.kind in "iub":
        x = np.asarray(x, dtype=np.float64)
    if x.dtype not in (np.float32, np.float64):
        raise E.InputError(E.BAD_DTYPE.format(name=name, dtype=x.dtype))
    if x.ndim != ndim:
        fix = feature_fix if x.ndim != 1 or ndim != 2 else f"{name}[None, :] for one sample or {name}[:, None]"
        raise E.InputError(E.BAD_RANK.format(name=name, ndim=ndim, shape=tuple(x.shape), fix=fix))
    if x.shape[0] == 0:
        raise E.InputError(E.EMPTY_INPUT.format(name=name, shape=tuple(x.shape)))
    if 0 in x.shape[1:]:
        raise E.InputError(E.NO_FEATURES.format(name=name, shape=tuple(x.shape)))
    host = np.asarray(x)
    finite = np.isfinite(host)
    if not finite.all():
        bad = np.argwhere(~finite)
        raise E.InputError(E.NON_FINITE.format(name=name, count=len(bad), index=tuple(int(i) for i in bad[0])))
    check_magnitude(name, host)
    return x


def check_inputs(layout: InputLayout, x1: Any, x2: Any) -> tuple[Any, Any]:
    """Validate a pair of inputs for a network of input ``layout`` (its own ``prepare``, else
    :func:`check_input` of each and equal trailing shapes)."""
    if layout.prepare is not None:  # layout-specific validation (e.g. ka.Sequences containers)
        return layout.prepare(x1, x2)
    x1 = check_input("x1", x1, layout.rank_fix, layout.rank)
    if x2 is not None:
        x2 = check_input("x2", x2, layout.rank_fix, layout.rank)
        if x1.shape[1:] != x2.shape[1:]:
            raise E.InputError(E.FEATURE_MISMATCH.format(d1=x1.shape[1:], d2=x2.shape[1:]))
    return x1, x2


def check_count(name: str, value: Any, example: int) -> int:
    """A count (units, draws per chunk, ...): an integer >= 1."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1
    if not ok:
        raise E.KernelalgError(E.BAD_COUNT.format(name=name, value=value, example=example))
    return int(value)


def check_magnitude(name: str, x: np.ndarray) -> None:
    """Raise when |x|^2 (the sum the input kernel x.x'/d is made of) overflows x's floating-point type."""
    big = np.finfo(x.dtype).max
    rows = x.reshape(len(x), -1)
    with np.errstate(over="ignore", invalid="ignore"):
        sq = np.einsum("ij,ij->i", rows, rows)  # in x's own dtype, as the kernel computes it; no copy of x
    bad = ~np.isfinite(sq)
    if bad.any():
        row = int(np.argmax(bad))
        fix = ("pass float64 data (its range reaches 1.8e308), or rescale" if x.dtype == np.float32
               else "rescale")
        raise E.InputError(E.INPUT_OVERFLOW.format(name=name, row=row, dtype=x.dtype.name, max=float(big),
                                                   peak=float(np.max(np.abs(x[row]))), fix=fix))


def check_params(values: Mapping[str, Any], stds: set[str]) -> None:
    """Hyperparameter overrides follow the constructors' rules: stds finite and >= 0, the others finite."""
    for k, v in values.items():
        if is_tracer(v):
            continue
        arr = np.asarray(v)
        if arr.size != 1:
            check_number("params", k, v)  # raises: a hyperparameter is one number
        (check_std if k in stds else check_number)("params", k, arr.reshape(()).item())


def check_batch_size(batch_size: Any) -> int:
    """A tile size: an integer >= 1."""
    return check_count("batch_size", batch_size, 256)


def check_requirements(minima: Sequence[Any], requires: Sequence[tuple[sp.Expr, str]]) -> None:
    """Raise the reason of the first condition (expr > 0) whose smallest value met is not positive."""
    for value, (_, reason) in zip(minima, requires):
        v = float(np.asarray(value))
        if not v > 0:
            problem, _, fix = reason.partition(" Fix: ")  # reasons read "<problem>. Fix: <fix>"
            raise E.DivergentKernelError(E.CONDITION_FAILED.format(problem=problem.rstrip(". "), value=v,
                                                                   fix=fix.rstrip(". ") or "rescale the inputs"))


def check_outputs(arrays: Mapping[str, Any], dtype: Any) -> None:
    """Raise when a computed kernel is not finite (inputs and conditions were valid: an overflow)."""
    for name, arr in arrays.items():
        if arr is None or is_tracer(arr):
            continue
        host = np.asarray(arr)
        finite = np.isfinite(host)
        if not finite.all():
            bad = np.argwhere(~finite)
            raise E.DivergentKernelError(E.KERNEL_OVERFLOW.format(
                which=name, count=len(bad), total=host.size, index=tuple(int(i) for i in bad[0]),
                dtype=np.dtype(dtype).name, max=float(np.finfo(dtype).max)))
