"""Command-line edge cases from the error sweep (issues #16 and #24): a user mistake exits 2 with a one-line
message naming the problem and the fix, never a traceback, a silent header or an empty kernel.

Expected behaviour is the documented contract of ``kernelalg`` (exit codes 0 ok, 2 bad input), and, where a
command still succeeds, the values of ``ka.kernel`` on the same data.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kernelalg as ka
from kernelalg.cli._main import main

ARCH = "Dense(1.5, 0.05) >> Relu() >> Dense(1.5, 0.05)"


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_user_error(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and "Fix:" in err and len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)


@pytest.mark.parametrize("at,words", [
    (("q1=1", "q2=1", "c=2"), ["not the statistics of any inputs", "c^2 <= q1 q2"]),
    (("q1=-1", "q2=1", "c=0"), ["q1 >= 0"]),
    (("q1=1", "q2=1", "c=nan"), ["finite"]),
    (("q1=1", "q2=1", "c=0.5", "d=0"), ["input dimension"]),
    (("q1=1", "q2=1", "c=0.5", "sigma_w_1=-1"), ["sigma_w_1 must be a finite number >= 0"]),
])
def test_formula_at_refuses_impossible_values(capsys, at, words):
    code, out, err = run(capsys, "formula", ARCH, "--symbols", "--at", *at)
    assert_user_error(code, err, *words)
    assert "ntk(" not in out


def test_formula_at_boundary_statistics_are_accepted(capsys):
    """c = sqrt(q1 q2) (x' = x) is a real input pair: the ReLU NNGP there is W^2 q / 2 + b^2 after one layer."""
    code, out, err = run(capsys, "formula", "Dense(1.0, 0.0) >> Relu() >> Dense(2 ** 0.5, 0.0)", "--at", "q1=4",
                         "q2=4", "c=4", "--kernel", "nngp")
    assert code == 0, err
    assert float(out.strip().splitlines()[-1].split("=")[-1]) == pytest.approx(4.0, rel=1e-12)


def test_formula_at_reports_a_divergent_dual(capsys):
    code, _, err = run(capsys, "formula", "Dense(1.0) >> Gaussian(1.0, 1.0) >> Dense(1.0)", "--at", "q1=1", "q2=1",
                       "c=0.5")
    assert_user_error(code, err, "1 - 4 b s > 0")


def test_fanout_overflow_is_a_user_error(capsys):
    code, _, err = run(capsys, "formula", "FanOut(10**300)")
    assert_user_error(code, err, "FanOut: num")


def test_lone_surrogate_is_a_user_error(capsys):
    code, _, err = run(capsys, "formula", "Dense(1.0) >> Relu(\udc80)")
    assert_user_error(code, err, "not a valid Unicode character")
    assert "nested too deeply" not in err


@pytest.mark.parametrize("name,content,words", [
    ("empty.npy", np.zeros((0, 3)), ["holds no data"]),
    ("flat.npy", np.zeros(0), ["holds no data"]),
    ("nofeat.npy", np.zeros((3, 0)), ["no features"]),
    ("header.csv", "a,b,c\n", ["holds no data"]),
    ("ragged.csv", "1,2,3\n4,5\n6,7\n", ["number of columns changed"]),
    ("nan.csv", "1,2\nnan,3\n", ["NaN or infinite"]),
])
def test_kernel_refuses_empty_ragged_or_bad_files(capsys, tmp_path, name, content, words):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    else:
        np.save(path, content)
    out = tmp_path / "K.npy"
    code, _, err = run(capsys, "kernel", ARCH, str(path), "-o", str(out), "--no-progress")
    assert_user_error(code, err, *words)
    assert not out.exists()


def test_csv_header_is_detected_by_content_not_by_failure(capsys, tmp_path):
    """A header line is skipped; a numeric first line is data (not silently dropped)."""
    x = np.array([[1.0, 2.0], [3.0, -4.0], [0.5, 0.25]])
    for name, text in (("h.csv", "a,b\n"), ("n.csv", "")):
        path = tmp_path / name
        path.write_text(text + "\n".join(",".join(repr(float(v)) for v in row) for row in x) + "\n")
        out = tmp_path / f"{name}.npy"
        code, _, err = run(capsys, "kernel", ARCH, str(path), "-o", str(out), "--no-progress")
        assert code == 0, err
        np.testing.assert_allclose(np.load(out), np.asarray(ka.kernel(ka.parse(ARCH), x, get="ntk")), rtol=1e-12)


@pytest.mark.parametrize("argv", [
    ["kernel", ARCH, "{x}", "-o", "{file}/K.npy", "--no-progress"],
    ["formula", ARCH, "-o", "{file}/f.txt"],
    ["verify", "--quick", "--out", "{file}/report", "--no-progress"],
    ["spectrum", "Dense(1.0) >> Relu() >> Dense(1.0)", "--dim", "3", "--kmax", "4", "--csv", "{file}/s.csv"],
])
def test_output_under_a_regular_file_is_a_user_error(capsys, tmp_path, argv):
    plain = tmp_path / "file.txt"
    plain.write_text("x")
    np.save(tmp_path / "x.npy", np.ones((2, 3)))
    argv = [a.format(file=plain, x=tmp_path / "x.npy") for a in argv]
    code, _, err = run(capsys, *argv)
    assert_user_error(code, err, "is a file, not a folder")
    assert plain.read_text() == "x"


def test_closed_pipe_exits_quietly(tmp_path):
    """'kernelalg layers | head': the reader is gone before the first write; no BrokenPipeError traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "kernelalg", "layers"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1])
    proc.stdout.close()
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert code == 141
