"""A check of the verification report, its shared tolerances, and the plotting backend it uses (headless Agg)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Entrywise tolerance of the report's Monte Carlo tests, in standard errors.
Z_THRESHOLD = 5.0
#: Allowance for the O(1/n^2) remainder of the width extrapolation, as a fraction of |E_n - E_2n|.
REMAINDER = 0.25
#: Rounding floor of float32 Monte Carlo, relative (1000 machine epsilons, as ka.verify's numeric_rtol).
NUMERIC_RTOL = 1000 * float(np.finfo(np.float32).eps)


@dataclass
class Check:
    """One check of the report: status is "passed", "failed" or "skipped"."""

    name: str
    status: str
    detail: str
    plot: str | None = None
    numbers: dict = field(default_factory=dict)
    seconds: float = 0.0


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _close() -> None:
    _pyplot().close("all")

