"""``kernelalg formula --at``: kernels evaluated at given input statistics (q1, q2, c) and hyperparameters.

The values must be those of real inputs (q1, q2 >= 0, c^2 <= q1 q2 by Cauchy-Schwarz) and valid hyperparameters
(the layer constructors' rules); the NumPy reference backend evaluates the straight-line program.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from kernelalg.backends import NUMPY_TABLE, evaluate_program
from kernelalg.backends._checks import check_outputs, check_params, check_requirements
from kernelalg.core._errors import KernelalgError
from kernelalg.core._program import Op
from kernelalg.core._symbolic import trace

NO_SYMBOL = ("--at {name}=...: unknown symbol {name!r}. Fix: use the input symbols q1, q2, c, d or the "
             "hyperparameter symbols printed by 'kernelalg formula ARCH --symbols' ({known}).")
AT_OPS = ("--at evaluates kernels of dense-input networks at (q1, q2, c); this network acts on images or "
          "sequences. Fix: use 'kernelalg kernel ARCH X.npy' to evaluate it on inputs.")
AT_MISSING = "--at needs values for q1, q2 and c; missing: {missing}. Fix: e.g. --at q1=1 q2=1 c=0.5."
BAD_AT = "--at {item!r} is not NAME=NUMBER. Fix: e.g. --at q1=1 q2=1 c=0.5."
BAD_STATS = ("--at q1={q1:g} q2={q2:g} c={c:g} are not the statistics of any inputs: they need finite q1 >= 0, "
             "q2 >= 0 and c^2 <= q1 q2 (Cauchy-Schwarz, |x.x'| <= |x| |x'|). Fix: e.g. --at q1=1 q2=1 c=0.5.")
BAD_D = "--at d={d:g}: the input dimension must be an integer >= 1. Fix: e.g. --at q1=1 q2=1 c=0.5 d=10."


def at_values(items: Sequence[str] | None) -> dict[str, float]:
    """Parse NAME=NUMBER items."""
    out: dict[str, float] = {}
    for item in items or ():
        name, sep, val = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(val)
        except ValueError:
            raise KernelalgError(BAD_AT.format(item=item)) from None
    return out


def _check_at(at: dict[str, float], stds: set[str]) -> None:
    """--at values must be statistics of real inputs and valid hyperparameters (as the constructors demand)."""
    q1, q2, c = at["q1"], at["q2"], at["c"]
    ok = all(np.isfinite(v) for v in (q1, q2, c)) and q1 >= 0 and q2 >= 0 and c * c <= q1 * q2 * (1 + 1e-12)
    if not ok:
        raise KernelalgError(BAD_STATS.format(q1=q1, q2=q2, c=c))
    if "d" in at and not (at["d"] >= 1 and float(at["d"]).is_integer()):
        raise KernelalgError(BAD_D.format(d=at["d"]))
    check_params({k: v for k, v in at.items() if k not in ("q1", "q2", "c", "d")}, stds)


def evaluate_at(net: Any, which: Sequence[str], at: dict[str, float]) -> list[str]:
    """The kernels at given input statistics (and hyperparameter overrides), by the NumPy reference backend."""

    sk = trace(net, keep_symbols=True)
    if any(isinstance(i, Op) for i in sk.program):
        raise KernelalgError(AT_OPS)
    symbols = sk.symbols
    unknown = [n for n in at if n not in symbols]
    if unknown:
        raise KernelalgError(NO_SYMBOL.format(name=unknown[0], known=", ".join(symbols)))
    missing = [n for n in ("q1", "q2", "c") if n not in at]
    if missing:
        raise KernelalgError(AT_MISSING.format(missing=", ".join(missing)))
    _check_at(at, {s.name for s in sk.params if s.is_positive})
    env = {s: v for s, v in sk.params.items()}
    env.update({symbols[n]: np.float64(v) for n, v in at.items()})
    env.setdefault(symbols["d"], np.float64(1.0))
    with np.errstate(all="ignore"):  # divergent duals are reported by the checks below, not as warnings
        minima = evaluate_program(sk.program, [r for r, _ in sk.requires], env, NUMPY_TABLE)
    check_requirements(minima, sk.requires)  # duals that exist only for some variances (Gaussian, b > 0)
    lines = []
    for name in which:
        outs = [st.nngp if name == "nngp" else st.ntk for st in sk.outputs]
        with np.errstate(all="ignore"):
            vals = evaluate_program(sk.program, outs, env, NUMPY_TABLE)
        for b, val in enumerate(vals):
            tag = name if len(vals) == 1 else f"{name}[{b}]"
            check_outputs({tag: np.asarray(val, dtype=np.float64)}, np.float64)
            args = ", ".join(f"{k}={v:g}" for k, v in at.items())
            lines.append(f"{tag}({args}) = {float(np.asarray(val)):.15g}")
    return lines
