"""A check of the verification report, and the plotting backend the report uses (headless Agg)."""

from __future__ import annotations

from dataclasses import dataclass, field


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
