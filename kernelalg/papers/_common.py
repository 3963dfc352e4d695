"""Shared pieces of the paper checks: data, power-law fits with confidence intervals, plotting, timing."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from kernelalg.analysis._sphere import sphere_points as sphere_data  # noqa: F401 (the one sphere sampler)
from kernelalg.papers._result import PaperResult


@dataclass(frozen=True)
class Slope:
    """A fitted log-log slope with a bootstrap 95% confidence interval."""

    slope: float
    lo: float
    hi: float

    def contains(self, value: float) -> bool:
        return self.lo <= value <= self.hi

    def __str__(self) -> str:
        return f"{self.slope:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


def loglog_slope(x: Sequence[float], samples: Sequence[np.ndarray], stat: Callable[[np.ndarray], float],
                 reps: int = 400, seed: int = 0) -> Slope:
    """Slope of log stat(samples[i]) against log x[i], with a bootstrap CI that resamples each group's
    samples (rows: independent replicates, e.g. independent networks)."""
    lx = np.log(np.asarray(x, dtype=np.float64))

    def fit(groups: Sequence[np.ndarray]) -> float:
        ly = np.log([max(stat(g), 1e-300) for g in groups])
        return float(np.polyfit(lx, ly, 1)[0])

    rng = np.random.default_rng(seed)
    boot = [fit([g[rng.integers(0, len(g), len(g))] for g in samples]) for _ in range(reps)]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return Slope(fit(samples), float(lo), float(hi))


def pyplot() -> Any:
    """matplotlib's pyplot on the headless Agg backend."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def timed(fn: Callable[[], PaperResult]) -> PaperResult:
    """Run a check and record its wall time in the result."""
    t0 = time.perf_counter()
    res = fn()
    return PaperResult(**{**res.__dict__, "seconds": time.perf_counter() - t0})


def save(fig: Any, out: Path, name: str) -> str:
    """Save a figure as ``out/name`` (tight layout: titles are not cut off) and close it."""
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    pyplot().close(fig)
    return name
