"""The command line, in-process through ``main([...])`` on tiny inputs: outputs and exit codes.

Exit codes: 0 ok, 1 a verification check failed, 2 bad input. Expected values: theory.md's published
numbers (deep ReLU kernels, sphere eigenvalues) and, for the ``kernel`` command's file plumbing, ka.kernel.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kernelalg as ka
from kernelalg.cli._main import main

RELU2 = "Dense(2 ** 0.5) >> Relu() >> Dense(2 ** 0.5)"
ARCH = "Dense(1.5, 0.05) >> Relu() >> Dense(1.5, 0.05)"


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# ----------------------------------------------------------------------------------------- formula


def test_formula_values_match_theory(capsys: pytest.CaptureFixture) -> None:
    """theory.md: deep ReLU, W^2 = 2, b = 0, |x|^2/d = 1, rho = 0.5, L = 2: NNGP 1.217996, NTK 1.884662."""
    code, out, _ = run(capsys, "formula", RELU2, "--at", "q1=1", "q2=1", "c=0.5")
    assert code == 0
    assert "nngp =" in out and "ntk =" in out and "acos" in out
    vals = dict(re.findall(r"^(nngp|ntk)\(q1=1, q2=1, c=0.5\) = ([-0-9.e]+)$", out, re.M))
    assert abs(float(vals["nngp"]) - 1.217996) < 1e-6
    assert abs(float(vals["ntk"]) - 1.884662) < 1e-6


def test_formula_latex_program_and_file(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "formula", ARCH, "--format", "latex", "--kernel", "ntk")
    assert code == 0 and "\\operatorname{acos}" in out and "\\pi" in out and "nngp =" not in out
    code, out, _ = run(capsys, "formula", ARCH, "--program", "--symbols")
    assert code == 0 and "straight-line program" in out and "sigma_w_1=1.5" in out and "ntk = " in out
    path = tmp_path / "f.txt"
    code, out, _ = run(capsys, "formula", ARCH, "-o", str(path))
    assert code == 0 and "ntk =" in path.read_text()


@pytest.mark.parametrize("argv, words", [
    (["formula", "Dens(1.5) >> Relu()"], ["Unknown name 'Dens'", "Did you mean 'Dense'"]),
    (["formula", "__import__('os').system('x')"], ["not allowed"]),
    (["formula", RELU2, "--at", "q1=1", "c=0.5"], ["missing: q2"]),
    (["formula", RELU2, "--at", "q1=1", "q2=1", "c=0.5", "zz=3"], ["unknown symbol 'zz'"]),
    (["formula", RELU2, "--at", "q1"], ["NAME=NUMBER"]),
])
def test_formula_bad_input(capsys: pytest.CaptureFixture, argv: list[str], words: list[str]) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    for w in words:
        assert w in err
    assert "Fix" in err


# ----------------------------------------------------------------------------------------- kernel


@pytest.fixture(scope="module")
def xs() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((7, 3))


def test_kernel_npy_tiled_equals_api(capsys: pytest.CaptureFixture, tmp_path: Path, xs: np.ndarray) -> None:
    np.save(tmp_path / "x.npy", xs)
    out = tmp_path / "K.npy"
    code, stdout, _ = run(capsys, "kernel", ARCH, str(tmp_path / "x.npy"), "-o", str(out), "--batch-size", "3",
                          "--no-progress")
    assert code == 0 and "7 x 7" in stdout
    want = np.asarray(ka.kernel(ka.Dense(1.5, 0.05) >> ka.Relu() >> ka.Dense(1.5, 0.05), xs, get="ntk"))
    np.testing.assert_allclose(np.load(out), want, rtol=1e-12, atol=1e-14)
    code, _, err = run(capsys, "kernel", ARCH, str(tmp_path / "x.npy"), "-o", str(out))
    assert code == 2 and "--overwrite" in err


def test_kernel_csv_x2_both(capsys: pytest.CaptureFixture, tmp_path: Path, xs: np.ndarray) -> None:
    (tmp_path / "a.csv").write_text("f1,f2,f3\n" + "\n".join(",".join(repr(float(v)) for v in r) for r in xs[:4]))
    np.savetxt(tmp_path / "b.csv", xs[4:], delimiter=",")
    code, _, _ = run(capsys, "kernel", ARCH, str(tmp_path / "a.csv"), "--x2", str(tmp_path / "b.csv"),
                     "-o", str(tmp_path / "K.npy"), "--get", "both", "--batch-size", "2", "--no-progress")
    assert code == 0
    want = ka.kernel(ka.Dense(1.5, 0.05) >> ka.Relu() >> ka.Dense(1.5, 0.05), xs[:4], xs[4:])
    np.testing.assert_allclose(np.load(tmp_path / "K.nngp.npy"), np.asarray(want.nngp), rtol=1e-12)
    np.testing.assert_allclose(np.load(tmp_path / "K.ntk.npy"), np.asarray(want.ntk), rtol=1e-12)


def test_kernel_zarr_resume_computes_only_missing_tiles(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                        xs: np.ndarray) -> None:
    pytest.importorskip("zarr")
    np.save(tmp_path / "x.npy", xs)
    store = tmp_path / "K.zarr"
    argv = ["kernel", ARCH, str(tmp_path / "x.npy"), "-o", str(store), "--batch-size", "3", "--get", "both",
            "--no-progress"]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "open_gram" in out
    want = ka.kernel(ka.Dense(1.5, 0.05) >> ka.Relu() >> ka.Dense(1.5, 0.05), xs)
    gs = ka.open_gram(store)
    got = gs.load()
    np.testing.assert_allclose(got["nngp"], np.asarray(want.nngp), rtol=1e-12)
    np.testing.assert_allclose(got["ntk"], np.asarray(want.ntk), rtol=1e-12)
    assert sorted(gs.tiles) == [(0, 0), (0, 3), (0, 6), (3, 3), (3, 6), (6, 6)]  # upper tile triangle
    first = {t for _, t in gs.compute_log()}
    assert first == set(gs.tiles)
    # Simulate an interruption: tiles (0, 3) and (6, 6) never finished. A finished tile's chunk file and
    # record are kept to check that the resume leaves them untouched (a marker written into its data would
    # now be caught by its checksum and recomputed, as documented).
    gs.invalidate([(0, 3), (6, 6)])
    gs.array("ntk")[0:3, 3:6] = np.nan
    finished = store / "ntk" / "c" / "1" / "2"  # tile (3, 6) of tile size 3
    kept = finished.read_bytes(), gs.records()[(3, 6)]
    code, _, err = run(capsys, *argv)
    assert code == 0 and "4 of 6 tiles were already done" in err
    gs = ka.open_gram(store)
    runs = {}
    for run_id, t in gs.compute_log():
        runs.setdefault(run_id, set()).add(t)
    assert sorted(map(sorted, runs.values())) == sorted([sorted(first), [(0, 3), (6, 6)]])  # only the missing
    got = gs.load("ntk")
    assert (finished.read_bytes(), gs.records()[(3, 6)]) == kept  # finished tile: not recomputed
    np.testing.assert_allclose(got[0:3, 3:6], np.asarray(want.ntk)[0:3, 3:6], rtol=1e-12)  # recomputed
    np.testing.assert_allclose(got[3:6, 0:3], np.asarray(want.ntk)[3:6, 0:3], rtol=1e-12)  # mirrored
    # Another architecture into the same store is refused.
    code, _, err = run(capsys, "kernel", "Dense() >> Erf() >> Dense()", *argv[2:])
    assert code == 2 and "different computation" in err and "Fix" in err


def test_kernel_zarr_dask(capsys: pytest.CaptureFixture, tmp_path: Path, xs: np.ndarray) -> None:
    pytest.importorskip("zarr")
    pytest.importorskip("dask.distributed")
    np.save(tmp_path / "x.npy", xs)
    code, _, err = run(capsys, "kernel", ARCH, str(tmp_path / "x.npy"), "-o", str(tmp_path / "K.zarr"),
                       "--batch-size", "4", "--dask", "--workers", "1", "--no-progress")
    assert code == 0, err
    want = ka.kernel(ka.Dense(1.5, 0.05) >> ka.Relu() >> ka.Dense(1.5, 0.05), xs, get="ntk")
    np.testing.assert_allclose(ka.open_gram(tmp_path / "K.zarr").load(), np.asarray(want), rtol=1e-12)


@pytest.mark.parametrize("make, argv_tail, words", [
    (lambda p: np.save(p / "x.npy", np.zeros((3, 2))), ["x.npy", "-o", "K.txt"], [".npy or .zarr"]),
    (lambda p: None, ["missing.npy"], ["not found"]),
    (lambda p: np.save(p / "x.npy", np.array([{"a": 1}], dtype=object)), ["x.npy"], ["pickle"]),
    (lambda p: (p / "x.csv").write_text("1,2\n3,abc\n"), ["x.csv"], ["Cannot read", "CSV"]),
    (lambda p: (p / "x.json").write_text("[]"), ["x.json"], ["unknown file type"]),
    (lambda p: np.save(p / "x.npy", np.array([[1.0, np.nan]])), ["x.npy"], ["NaN"]),
    (lambda p: np.save(p / "x.npy", np.zeros((3, 2))), ["x.npy", "--batch-size", "0"], ["batch-size"]),
    (lambda p: np.save(p / "x.npy", np.zeros((3, 2))), ["x.npy", "--dask"], ["--dask needs a .zarr"]),
])
def test_kernel_bad_input(capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          make, argv_tail: list[str], words: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    make(tmp_path)
    code, _, err = run(capsys, "kernel", ARCH, *argv_tail, "--no-progress")
    assert code == 2, err
    for w in words:
        assert w in err, err
    assert "Fix" in err


# ----------------------------------------------------------------------------------------- verify

TINY = ["--quick", "-n", "6", "--widths", "128,512", "--samples", "16", "--steps", "8", "--no-progress"]


def test_verify_passes_and_writes_report(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "verify", "--out", str(tmp_path / "r"), *TINY)
    assert code == 0, out
    summary = (tmp_path / "r" / "summary.md").read_text()
    assert summary.startswith("# kernelalg verify: PASSED")
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    statuses = {c["name"]: c["status"] for c in results["checks"]}
    assert statuses["Exact vs Monte Carlo, entrywise"] == "passed"
    assert statuses["Loss curves vs kernel prediction"] == "passed"
    assert statuses["Per-network spread ~ width^-1/2"] == "passed"
    assert statuses["Spectrum of the data's Gram matrix"] == "passed"
    for png in ("convergence.png", "verify.png", "loss_curve.png", "gram_spectrum.png"):
        assert (tmp_path / "r" / png).read_bytes()[:4] == b"\x89PNG" and f"]({png})" in summary
    import kernelalg.analysis as an
    if hasattr(an, "mercer_spectrum"):
        assert statuses["Mercer spectrum on the sphere"] == "passed"
        assert (tmp_path / "r" / "spectrum.png").read_bytes()[:4] == b"\x89PNG"


def test_predicted_loss_is_the_mean_over_gaussian_initial_functions() -> None:
    """E over f0 ~ N(0, K) of the linearized GD loss (simulated, 20000 draws) matches the closed form."""
    from kernelalg.cli._loss_report import predicted_loss
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 6, 6))
    ntk, nngp = a @ a.T + 0.1 * np.eye(6), b @ b.T / 6
    y = rng.standard_normal(6)
    lr, steps = 6 / np.linalg.eigvalsh(ntk)[-1], 25
    step = np.eye(6) - lr * ntk / 6
    f0 = rng.multivariate_normal(np.zeros(6), nngp, size=20000)
    r, losses = f0 - y, []
    for _ in range(steps + 1):
        losses.append(0.5 * np.mean(r ** 2, axis=1))
        r = r @ step.T
    losses = np.array(losses)
    mean, se = losses.mean(1), losses.std(1, ddof=1) / np.sqrt(losses.shape[1])
    pred = predicted_loss(ntk, nngp, y, lr, steps)
    assert np.all(np.abs(pred - mean) <= 5 * se), np.max(np.abs(pred - mean) / se)


def test_verify_fails_with_a_wrong_kernel(capsys: pytest.CaptureFixture, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel 30% off must be caught: exit 1 and FAILED in the report."""
    import kernelalg.cli._verify_report as report
    true_kernel = report.kernel

    def wrong(*args, **kwargs):
        k = true_kernel(*args, **kwargs)
        return ka.Kernel(np.asarray(k.nngp) * 1.3, np.asarray(k.ntk) * 1.3, k.cov1, k.cov2)
    monkeypatch.setattr(report, "kernel", wrong)
    code, out, _ = run(capsys, "verify", "--out", str(tmp_path / "r"), *TINY)
    assert code == 1 and "FAILED" in out
    assert (tmp_path / "r" / "summary.md").read_text().startswith("# kernelalg verify: FAILED")
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    statuses = {c["name"]: c["status"] for c in results["checks"]}
    assert statuses["Exact vs Monte Carlo, entrywise"] == "failed"
    assert statuses["Convergence in width"] == "failed"
    # the new checks catch it too, and show as failing
    assert statuses["Spectrum of the data's Gram matrix"] == "failed"
    entries = next(c for c in results["checks"] if c["name"] == "Exact vs Monte Carlo, entrywise")
    assert max(entries["numbers"]["decorrelated_p"].values()) < 5.7e-7
    assert "## Spectrum of the data's Gram matrix: failed" in (tmp_path / "r" / "summary.md").read_text()


@pytest.mark.parametrize("argv, words", [
    (["--widths", "64"], ["two or more distinct"]),
    (["--samples", "1"], ["two networks"]),
    (["--data", "nosuchdata"], ["Unknown data set"]),
    (["-n", "2"], ["too small"]),
    (["Dense() >> Relu() >>"], ["not valid syntax"]),
    (["Conv((3, 3)) >> Relu() >> GlobalAvgPool() >> Dense()"], ["vector data"]),
])
def test_verify_bad_input(capsys: pytest.CaptureFixture, tmp_path: Path, argv: list[str],
                          words: list[str]) -> None:
    code, _, err = run(capsys, "verify", "--out", str(tmp_path / "r"), "--no-progress", *argv)
    assert code == 2
    for w in words:
        assert w in err
    assert "Fix" in err


# ----------------------------------------------------------------------------------------- spectrum


def test_spectrum_sphere_eigenvalues(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """theory.md: d = 3, kappa(t) = (sqrt(1-t^2) + (pi - arccos t) t)/pi (the NNGP of Dense(1) >> Relu() >>
    Dense(sqrt 2) on the sphere): mu_0 = 3/8, mu_1 = 1/6, mu_2 = 3/128, mu_4 = 1/1536."""
    import kernelalg.analysis as an
    csv = tmp_path / "s.csv"
    code, out, err = run(capsys, "spectrum", "Dense(1) >> Relu() >> Dense(2 ** 0.5)", "--dim", "3", "--kmax", "8",
                         "--kernel", "nngp", "--csv", str(csv), "-o", str(tmp_path / "s.png"))
    if not hasattr(an, "mercer_spectrum"):
        assert code == 2 and "mercer_spectrum" in err and "Fix" in err
        return
    assert code == 0, err
    table = np.loadtxt(csv, delimiter=",", skiprows=1)
    mu = dict(zip(table[:, 0].astype(int), table[:, 2]))
    mult = dict(zip(table[:, 0].astype(int), table[:, 1].astype(int)))
    for k, ref in {0: 3 / 8, 1: 1 / 6, 2: 3 / 128, 4: 1 / 1536}.items():
        assert abs(mu[k] - ref) < 1e-6 * max(ref, 1e-3), (k, mu[k], ref)
        assert mult[k] == 2 * k + 1  # N(3, k)
    assert abs(mu[3]) < 1e-8  # no bias: odd k >= 3 vanish
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_spectrum_needs_dense_input(capsys: pytest.CaptureFixture) -> None:
    code, _, err = run(capsys, "spectrum", "Conv((3, 3)) >> Relu() >> GlobalAvgPool() >> Dense()")
    assert code == 2 and "Fix" in err


# ----------------------------------------------------------------------------------------- misc


def test_layers_and_usage(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(capsys, "layers")
    assert code == 0 and "Dense(W_std=1.0" in out and "repeat(layer, n)" in out and "tanh" in out
    code, out, _ = run(capsys)
    assert code == 2 and "formula" in out and "verify" in out
    with pytest.raises(SystemExit) as ex:
        main(["--version"])
    assert ex.value.code == 0
    with pytest.raises(SystemExit) as ex:
        main(["kernel"])  # argparse: missing arguments
    assert ex.value.code == 2


def test_python_dash_m_entry_point() -> None:
    res = subprocess.run([sys.executable, "-m", "kernelalg", "formula", RELU2, "--kernel", "nngp", "--at", "q1=1",
                          "q2=1", "c=0.5"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert math.isclose(float(res.stdout.strip().splitlines()[-1].split("=")[-1]), 1.217996, abs_tol=1e-6)
