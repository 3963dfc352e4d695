"""Reference backends: NumPy (float64) and mpmath (arbitrary precision, scalar by scalar).

They share the walker and differ from the JAX lowering only in their tables (and, for structural ops, in
their array namespace, see :mod:`._structural`), so comparing the JAX program with the NumPy one checks the
compiled path on any network, and with the mpmath one at 30+ digits checks the lowering of dense networks
(safe primitives, powers, clipping).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import mpmath
import numpy as np
import scipy.special as ssp
import sympy as sp

from kernelalg.core._duals import corr
from kernelalg.core._program import C, D, ID1, ID2, Q1, Q2, Instruction
from ._walker import Table, evaluate, run_program


def _np_power(base: Any, exp: sp.Expr) -> Any:
    if exp.is_Integer:
        return np.power(base, int(exp)) if int(exp) >= 0 else 1.0 / np.power(base, -int(exp))
    if exp.is_Rational and exp.q == 2 and exp.p < 0:
        return np.power(np.sqrt(np.maximum(base, np.finfo(float).tiny)), int(exp.p))
    if exp.is_Rational and exp.q == 2:
        return np.power(np.sqrt(np.maximum(base, 0.0)), int(exp.p))
    return np.power(base, float(exp))


def _np_corr(s11: Any, s12: Any, s22: Any) -> Any:
    rho = np.clip(s12 / np.sqrt(np.maximum(s11 * s22, np.finfo(float).tiny)), -1, 1)
    return np.where(np.abs(rho) > 1 - 512 * np.finfo(float).eps, np.sign(rho), rho)


def _np_reduce(fn: Callable) -> Callable:
    return lambda *a: fn.reduce(np.broadcast_arrays(*a)) if len(a) > 1 else a[0]


NUMPY_TABLE = Table(
    name="numpy",
    functions={
        sp.exp: np.exp, sp.log: np.log, sp.sin: np.sin, sp.cos: np.cos, sp.tan: np.tan, sp.sinh: np.sinh,
        sp.cosh: np.cosh, sp.tanh: np.tanh, sp.asin: lambda x: np.arcsin(np.clip(x, -1, 1)),
        sp.acos: lambda x: np.arccos(np.clip(x, -1, 1)), sp.atan: np.arctan, sp.atan2: np.arctan2,
        sp.erf: ssp.erf, sp.erfc: ssp.erfc, sp.Abs: np.abs, sp.sign: np.sign,
        sp.Max: _np_reduce(np.maximum), sp.Min: _np_reduce(np.minimum),
        sp.Heaviside: lambda x, h0=0.5: np.where(x > 0, 1.0, np.where(x < 0, 0.0, h0)),
        sp.Pow: np.power, corr: _np_corr, sp.KroneckerDelta: lambda a, b: np.where(a == b, 1.0, 0.0),
    },
    const=lambda c: float(c),
    power=_np_power,
)


def _mp_clip(x: Any) -> Any:
    return max(mpmath.mpf(-1), min(mpmath.mpf(1), x))


def _mp_power(base: Any, exp: sp.Expr) -> Any:
    if exp.is_Rational and exp.q == 2:
        return mpmath.sqrt(max(base, mpmath.mpf(0))) ** int(exp.p)
    return mpmath.power(base, mpmath.mpf(sp.Rational(exp).p) / sp.Rational(exp).q if exp.is_Rational
                        else mpmath.mpf(str(exp)))


MPMATH_TABLE = Table(
    name="mpmath",
    functions={
        sp.exp: mpmath.exp, sp.log: mpmath.log, sp.sin: mpmath.sin, sp.cos: mpmath.cos, sp.tan: mpmath.tan,
        sp.sinh: mpmath.sinh, sp.cosh: mpmath.cosh, sp.tanh: mpmath.tanh,
        sp.asin: lambda x: mpmath.asin(_mp_clip(x)), sp.acos: lambda x: mpmath.acos(_mp_clip(x)),
        sp.atan: mpmath.atan, sp.atan2: mpmath.atan2, sp.erf: mpmath.erf, sp.erfc: mpmath.erfc,
        sp.Abs: abs, sp.sign: mpmath.sign, sp.Max: max, sp.Min: min,
        sp.Heaviside: lambda x, h0=mpmath.mpf(0.5): mpmath.mpf(1) if x > 0 else (mpmath.mpf(0) if x < 0 else h0),
        sp.Pow: mpmath.power,
        corr: lambda s11, s12, s22: _mp_clip(s12 / mpmath.sqrt(s11 * s22)) if s11 * s22 > 0 else mpmath.mpf(0),
        sp.KroneckerDelta: lambda a, b: mpmath.mpf(1) if a == b else mpmath.mpf(0),
    },
    const=lambda c: mpmath.mpf(sp.N(c, mpmath.mp.dps + 5).__str__()) if not c.is_Rational
    else mpmath.mpf(int(c.p)) / int(c.q),
    power=_mp_power,
)


def register_numpy_lowering(cls: type, fn: Callable[..., Any]) -> None:
    NUMPY_TABLE.functions[cls] = fn


def register_mpmath_lowering(cls: type, fn: Callable[..., Any]) -> None:
    MPMATH_TABLE.functions[cls] = fn


def evaluate_program(program: Sequence[Instruction], outputs: Sequence[sp.Expr], env: dict,
                     table: Table = NUMPY_TABLE) -> list:
    """Run ``program`` on ``env`` with a reference table and evaluate ``outputs``."""
    env = run_program(program, dict(env), table)
    return [evaluate(o, env, table) for o in outputs]


def mpmath_dense(program: Sequence[Instruction], output: sp.Expr, x1: np.ndarray, x2: np.ndarray,
                 dps: int) -> np.ndarray:
    """Evaluate ``output`` of a dense network's program with mpmath at ``dps`` digits, pair by pair.

    Args:
        program: The program (no structural ops: mpmath has none).
        output: The output expression (in the program's symbols and q1, q2, c, d).
        x1: (N, d) inputs; x2: (M, d) inputs.
        dps: Decimal digits of the working precision.

    Returns:
        (N, M) float64 array (the values rounded once, at the end).
    """
    d = x1.shape[-1]
    same = x1.shape == x2.shape and bool(np.all(x1 == x2))
    out = np.empty((len(x1), len(x2)))
    with mpmath.workdps(dps):
        a = [[mpmath.mpf(float(v)) for v in row] for row in x1]
        b = [[mpmath.mpf(float(v)) for v in row] for row in x2]
        for i, u in enumerate(a):
            for j, v in enumerate(b):
                env = {Q1: mpmath.fsum(t * t for t in u) / d, Q2: mpmath.fsum(t * t for t in v) / d,
                       C: mpmath.fsum(s * t for s, t in zip(u, v)) / d, D: mpmath.mpf(d),
                       ID1: i, ID2: j if same else -1 - j}
                (val,) = evaluate_program(program, [output], env, MPMATH_TABLE)
                out[i, j] = float(val)
    return out
