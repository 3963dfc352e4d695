"""The result of one paper's check, and the gallery table.

Every check states the paper's claim precisely, what was measured (numbers), what the claim predicts, and
a verdict computed from them: a check that fails is reported as failing, with its numbers.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class PaperResult:
    """One row of the gallery.

    Attributes:
        name: Short name of the check (the ``kernelalg papers NAME`` argument).
        paper: The paper (authors, year, venue).
        claim: The central checkable claim, as checked here.
        measured: What was measured, with numbers.
        expected: What the claim predicts.
        passed: The verdict.
        seconds: Wall time of the check.
        plot: File name of its PNG (in the output folder), or None.
        numbers: The figures behind the verdict (for results.json).
        caveats: What the check does not show, stated.
    """

    name: str
    paper: str
    claim: str
    measured: str
    expected: str
    passed: bool
    seconds: float = 0.0
    plot: str | None = None
    numbers: dict = field(default_factory=dict)
    caveats: str = ""

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def line(self) -> str:
        """The one-line PASS/FAIL summary a script prints."""
        return f"{self.verdict} {self.name}: {self.measured} (expected: {self.expected}) [{self.seconds:.1f} s]"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def table(results: Sequence[PaperResult], quick: bool) -> str:
    """The gallery table in markdown: claim | measured | expected | verdict | time."""
    head = ["# Verified claims: the paper gallery", "",
            f"`kernelalg papers{' --quick' if quick else ''}` on {platform.machine()} "
            f"({platform.python_version()}); {sum(r.passed for r in results)} of {len(results)} checks pass.",
            "Each row runs `examples/papers/<name>.py`; a failing check is shown as failing.", "",
            "| paper | claim | measured | expected | verdict | time |", "|---|---|---|---|---|---|"]
    rows = [f"| {_cell(r.paper)} | {_cell(r.claim)} | {_cell(r.measured)} | {_cell(r.expected)} | "
            f"**{r.verdict}** | {r.seconds:.0f} s |" for r in results]
    notes = ["", "## Caveats", ""] + [f"* **{r.name}**: {_cell(r.caveats)}" for r in results if r.caveats]
    plots = ["", "## Plots", ""] + [f"![{r.name}]({r.plot})" for r in results if r.plot]
    return "\n".join(head + rows + (notes if len(notes) > 3 else []) + (plots if len(plots) > 3 else [])) + "\n"


def write_results(results: Sequence[PaperResult], out: Path, quick: bool) -> Path:
    """Write ``papers.md`` and ``results.json`` into ``out``; return the markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=1, default=_plain))
    path = out / "papers.md"
    path.write_text(table(results, quick))
    return path


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)
