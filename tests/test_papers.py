"""The paper gallery in quick mode: every check runs, produces its row and its plot, and its verdict is the
one documented in docs/papers.md (``REPRODUCES``: a claim that did not reproduce stays reported as failing).

The expected values live in each check (published exponents and claims, see kernelalg/papers/); this test
makes sure no verdict changes silently.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kernelalg.cli import main
from kernelalg.papers import expected_verdicts, names, run_paper


@pytest.mark.parametrize("name", names())
def test_paper_check_runs_with_its_documented_verdict(name: str, tmp_path: Path) -> None:
    res = run_paper(name, tmp_path, quick=True)
    assert res.name == name and res.claim and res.measured and res.expected
    assert res.plot is None or (tmp_path / res.plot).stat().st_size > 1000
    assert res.passed == expected_verdicts()[name], res.line()


def test_papers_command_writes_the_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The command runs one check (the quickest: hu2020) and writes its row into the markdown table."""
    code = main(["papers", "hu2020", "--quick", "--out", str(tmp_path / "g")])
    out = capsys.readouterr().out
    table = (tmp_path / "g" / "papers.md").read_text()
    assert code == 0 and "PASS" in out
    assert "| paper | claim | measured | expected | verdict | time |" in table
    rows = [line for line in table.splitlines() if line.startswith("| Hu, Xiao")]
    assert len(rows) == 1 and "**PASS**" in rows[0] and "![hu2020](hu2020.png)" in table


def test_unknown_paper_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["papers", "nosuchpaper", "--out", str(tmp_path / "g")]) == 2
    assert "Unknown paper check 'nosuchpaper'" in capsys.readouterr().err


def test_every_check_has_its_example_script() -> None:
    """examples/papers/<name>.py exists for every check and runs that check (the table says so)."""
    root = Path(__file__).resolve().parent.parent / "examples" / "papers"
    for name in names():
        text = (root / f"{name}.py").read_text()
        assert f'"papers", "{name}"' in text, name
