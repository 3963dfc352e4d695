"""The gallery: every paper check, run one by one or all together (``kernelalg papers``)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Sequence

from kernelalg.core._errors import KernelalgError
from kernelalg.papers import (_adversarial, _dascoli, _eilers, _flntk, _fort, _hu, _jacot, _laplace, _noci, _ortiz,
                              _rntk, _velikanov)
from kernelalg.papers._common import timed
from kernelalg.papers._result import PaperResult, write_results

#: The paper checks, in the order of the table. Each module has NAME, PAPER, CLAIM, REPRODUCES (what the gallery
#: found) and run(out, quick).
CHECKS: tuple[ModuleType, ...] = (_jacot, _hu, _eilers, _rntk, _fort, _velikanov, _noci,
                                  _laplace, _flntk, _adversarial, _ortiz, _dascoli)

UNKNOWN_PAPER = "Unknown paper check {name!r}. Fix: use one of {names} (or none for all)."


def expected_verdicts() -> dict[str, bool]:
    """Name -> whether the check's claim reproduced when the gallery was last run (``REPRODUCES``)."""
    return {m.NAME: bool(m.REPRODUCES) for m in CHECKS}


def names() -> list[str]:
    """The names of the paper checks."""
    return [m.NAME for m in CHECKS]


def run_paper(name: str, out: Path, quick: bool = False) -> PaperResult:
    """Run one check, writing its PNG into ``out``."""
    by_name = {m.NAME: m for m in CHECKS}
    if name not in by_name:
        raise KernelalgError(UNKNOWN_PAPER.format(name=name, names=", ".join(by_name)))
    out.mkdir(parents=True, exist_ok=True)
    return timed(lambda: by_name[name].run(out, quick))


def run_papers(selected: Sequence[str] | None, out: Path, quick: bool = False, echo: bool = True) -> list[PaperResult]:
    """Run the selected checks (None: all), write ``papers.md`` and ``results.json`` into ``out``."""
    chosen = list(selected) if selected else names()
    for name in chosen:
        if name not in names():
            raise KernelalgError(UNKNOWN_PAPER.format(name=name, names=", ".join(names())))
    results = []
    for name in chosen:
        try:
            res = run_paper(name, out, quick)
        except Exception as err:  # one check that cannot run is a failing row, not a lost gallery
            mod = {m.NAME: m for m in CHECKS}[name]
            res = PaperResult(name, mod.PAPER, mod.CLAIM, measured=f"the check did not run: {type(err).__name__}: "
                              f"{str(err).splitlines()[0][:300]}", expected="(see the claim)", passed=False)
        if echo:
            print(res.line(), flush=True)
        results.append(res)
    write_results(results, out, quick)
    return results
