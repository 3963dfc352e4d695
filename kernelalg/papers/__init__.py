"""kernelalg.papers: the papers kernelalg serves, each central claim checked numerically.

``kernelalg papers [NAME ...] --out DIR [--quick]`` runs the checks and writes a markdown table
(claim | measured | expected | verdict) with a PNG per check; ``examples/papers/<name>.py`` runs one.
A check that does not reproduce is reported as failing, with its numbers.
"""

from kernelalg.papers._gallery import CHECKS, expected_verdicts, names, run_paper, run_papers
from kernelalg.papers._result import PaperResult

__all__ = ["CHECKS", "PaperResult", "expected_verdicts", "names", "run_paper", "run_papers"]
