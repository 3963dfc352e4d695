"""Throw bad and unusual inputs at the Python API and the command line; count how each one ends.

Outcomes: ``clear`` (a KernelalgError whose message has a "Fix:"; for the CLI: exit 2 with a one-line
message), ``nan`` (a result containing NaN/inf returned silently), ``traceback`` (any other exception, or a
CLI traceback), ``ok`` (a finite result). Every case states whether it is bad input (should be ``clear``) or
unusual but valid (should be ``ok``); the script prints the table and the cases that ended otherwise.

Usage: ``python benchmarks/sweep_errors.py [--root DIR]`` (a few minutes on two cores); ``--root`` tests the
kernelalg package under DIR (e.g. an older checkout, for a before/after comparison) instead of this one.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

_ARGS = argparse.ArgumentParser(description=__doc__.splitlines()[0])
_ARGS.add_argument("--root", default=str(Path(__file__).resolve().parents[1]), help="folder holding kernelalg/")
ROOT = Path(_ARGS.parse_args().root).resolve()
sys.path.insert(0, str(ROOT))

import kernelalg as ka  # noqa: E402  (the package under ROOT)
from kernelalg import analysis as A  # noqa: E402
from kernelalg.cli._main import main as cli_main  # noqa: E402
from kernelalg.core._errors import KernelalgError  # noqa: E402

RNG = np.random.default_rng(0)
X = RNG.standard_normal((4, 3))
NET = ka.Dense(1.2, 0.1) >> ka.Relu() >> ka.Dense(1.2, 0.1)
T = sp.Symbol("t")


def _finite(obj: Any) -> bool:
    leaves = [obj] if not hasattr(obj, "__dict__") or isinstance(obj, (np.ndarray, jax.Array)) else \
        [v for v in vars(obj).values() if isinstance(v, (np.ndarray, jax.Array, float))]
    return all(np.all(np.isfinite(np.asarray(v, dtype=np.float64))) for v in leaves if v is not None)


def outcome(fn: Callable[[], Any]) -> tuple[str, str]:
    try:
        res = fn()
    except KernelalgError as err:
        return ("clear" if "Fix:" in str(err) else "unclear"), str(err)[:100]
    except Exception as err:  # noqa: BLE001 -- counting exactly these is the point
        return "traceback", f"{type(err).__name__}: {str(err)[:90]}"
    try:
        return ("ok" if _finite(res) else "nan"), ""
    except (TypeError, ValueError):
        return "ok", ""


def api_cases() -> list[tuple[str, bool, Callable[[], Any]]]:
    """(label, is_bad_input, thunk)."""
    k = ka.kernel
    bad: list[tuple[str, Callable[[], Any]]] = [
        ("x NaN", lambda: k(NET, np.array([[np.nan, 1.0, 2.0]]))),
        ("x inf", lambda: k(NET, np.array([[np.inf, 1.0, 2.0]]))),
        ("x 1e30 float32", lambda: k(NET, np.full((2, 3), 1e30, np.float32))),
        ("x 1e200 float64", lambda: k(NET, np.full((2, 3), 1e200))),
        ("x (3, 0)", lambda: k(NET, np.zeros((3, 0)))),
        ("x (0, 3)", lambda: k(NET, np.zeros((0, 3)))),
        ("x 1-D", lambda: k(NET, np.ones(3))),
        ("x 3-D", lambda: k(NET, np.ones((2, 3, 1)))),
        ("x strings", lambda: k(NET, np.array([["a", "b"]]))),
        ("x complex", lambda: k(NET, np.ones((2, 3), complex))),
        ("x ragged list", lambda: k(NET, [[1.0, 2.0], [3.0]])),
        ("x2 feature mismatch", lambda: k(NET, X, np.ones((2, 4)))),
        ("x2 NaN", lambda: k(NET, X, np.full((2, 3), np.nan))),
        ("get None", lambda: k(NET, X, get=None)),
        ("get bogus", lambda: k(NET, X, get="bogus")),
        ("get empty tuple", lambda: k(NET, X, get=())),
        ("get 3", lambda: k(NET, X, get=3)),
        ("batch_size 0", lambda: k(NET, X, batch_size=0)),
        ("batch_size -1", lambda: k(NET, X, batch_size=-1)),
        ("batch_size 2.5", lambda: k(NET, X, batch_size=2.5)),
        ("batch_size '2'", lambda: k(NET, X, batch_size="2")),
        ("params W<0", lambda: k(NET, X, params={"sigma_w_1": -1.0})),
        ("params W nan", lambda: k(NET, X, params={"sigma_w_1": np.nan})),
        ("params b inf", lambda: k(NET, X, params={"sigma_b_3": np.inf})),
        ("params unknown", lambda: k(NET, X, params={"zz": 1.0})),
        ("params string", lambda: k(NET, X, params={"sigma_w_1": "a"})),
        ("net not a layer", lambda: k("Dense()", X)),
        ("reference get bogus", lambda: ka.reference_kernel(NET, X, get="bogus")),
        ("reference x2 mismatch", lambda: ka.reference_kernel(NET, X, np.ones((2, 4)))),
        ("Dense W -1", lambda: ka.Dense(-1.0)),
        ("Dense W nan", lambda: ka.Dense(np.nan)),
        ("Dense b inf", lambda: ka.Dense(1.0, np.inf)),
        ("Dense parameterization", lambda: ka.Dense(1.0, parameterization="x")),
        ("Erf a nan", lambda: ka.Erf(np.nan)),
        ("Rbf gamma<0", lambda: ka.Rbf(-1.0)),
        ("Monomial -1", lambda: ka.Monomial(-1)),
        ("Monomial 2.5", lambda: ka.Monomial(2.5)),
        ("Polynomial []", lambda: ka.Polynomial([])),
        ("FanOut 0", lambda: ka.FanOut(0)),
        ("FanOut 10**300", lambda: ka.FanOut(10 ** 300)),
        ("FanOut inf", lambda: ka.FanOut(float("inf"))),
        ("FanInSum alone", lambda: k(ka.Dense(1.0) >> ka.FanInSum(), X)),
        ("Relu first", lambda: k(ka.Relu() >> ka.Dense(1.0), X)),
        ("Relu twice", lambda: k(ka.Dense(1.0) >> ka.Relu() >> ka.Relu(), X)),
        ("parallel mismatch", lambda: k(ka.Dense(1.0) >> ka.FanOut(2) >> ka.parallel(ka.Relu()), X)),
        ("Elementwise 1/x", lambda: ka.Elementwise(lambda t: 1 / t)),
        ("Elementwise log", lambda: ka.Elementwise(sp.log)),
        ("Elementwise sqrt", lambda: ka.Elementwise(sp.sqrt)),
        ("Elementwise tan", lambda: ka.Elementwise(sp.tan)),
        ("Elementwise exp(x^3)", lambda: ka.Elementwise(lambda t: sp.exp(t ** 3))),
        ("Elementwise sign", lambda: ka.Elementwise(sp.sign)),
        ("Elementwise jnp 1/x", lambda: ka.Elementwise(lambda t: 1 / jnp.asarray(t))),
        ("Elementwise jnp log", lambda: ka.Elementwise(lambda t: jnp.log(jnp.asarray(t)))),
        ("Elementwise np.tanh", lambda: ka.Elementwise(np.tanh)),
        ("Elementwise not elementwise", lambda: ka.Elementwise(lambda t: jnp.sum(jnp.asarray(t)))),
        ("Elementwise bad formula", lambda: ka.Elementwise("x +* 2")),
        ("Gaussian b=1 large x", lambda: k(ka.Dense(1.0) >> ka.Gaussian(1.0, 1.0) >> ka.Dense(1.0), 3 * X)),
        ("Exp b=30", lambda: k(ka.Dense(1.0) >> ka.Exp(1.0, 30.0) >> ka.Dense(1.0), X)),
        ("exp(x^2) tanh, large x", lambda: k(ka.Dense(1.0) >> ka.Elementwise(lambda t: sp.exp(t ** 2) * sp.tanh(t))
                                             >> ka.Dense(1.0), X)),
        ("latex foo", lambda: ka.symbolic(NET).latex("foo")),
        ("parse lone surrogate", lambda: ka.parse("Dense(1.0) >> Relu(\udc80)")),
        ("parse unknown", lambda: ka.parse("Dens()")),
        ("parse eval", lambda: ka.parse("__import__('os')")),
        ("mc NaN", lambda: ka.monte_carlo(NET, np.array([[np.nan, 1.0, 2.0]]), width=8, samples=2)),
        ("mc x2 mismatch", lambda: ka.monte_carlo(NET, X, np.ones((2, 4)), width=8, samples=2)),
        ("mc empty", lambda: ka.monte_carlo(NET, np.ones((0, 3)), width=8, samples=2)),
        ("mc ntk_units 0", lambda: ka.monte_carlo(NET, X, width=8, samples=2, ntk_units=0)),
        ("mc chunk 0", lambda: ka.monte_carlo(NET, X, width=8, samples=2, chunk=0)),
        ("mc samples 1", lambda: ka.monte_carlo(NET, X, width=8, samples=1)),
        ("convergence inf", lambda: ka.convergence(NET, np.array([[np.inf, 1.0, 2.0]]), widths=(8, 16), samples=2)),
        ("convergence one width", lambda: ka.convergence(NET, X, widths=(8, 8), samples=2)),
        ("empirical 1-D", lambda: _empirical(np.ones(3))),
        ("empirical NaN", lambda: _empirical(np.full((2, 3), np.nan))),
        ("empirical batch 0", lambda: _empirical(X, batch_size=0)),
        ("early 1/x", lambda: A.early_time_constants(1 / T)),
        ("early exp(x^2)", lambda: A.early_time_constants(sp.exp(T ** 2))),
        ("early unknown name", lambda: A.early_time_constants("swish")),
        ("spectrum dim 1", lambda: A.mercer_spectrum(NET, 1)),
        ("spectrum kmax 0", lambda: A.mercer_spectrum(NET, 3, kmax=0)),
    ]
    good: list[tuple[str, Callable[[], Any]]] = [
        ("x ints", lambda: k(NET, np.arange(6).reshape(2, 3))),
        ("x float32", lambda: k(NET, X.astype(np.float32))),
        ("x 1e18 float32", lambda: k(NET, np.full((2, 3), 1e18, np.float32))),
        ("x zeros", lambda: k(NET, np.zeros((2, 3)))),
        ("x one row", lambda: k(NET, X[:1])),
        ("batch_size 1", lambda: k(NET, X, batch_size=1)),
        ("batch_size np.int64", lambda: k(NET, X, batch_size=np.int64(2))),
        ("params W 0", lambda: k(NET, X, params={"sigma_w_1": 0.0})),
        ("Gaussian b=1 small x", lambda: k(ka.Dense(1.0) >> ka.Gaussian(1.0, 1.0) >> ka.Dense(1.0), 0.1 * X)),
        ("Elementwise sin(x)/x", lambda: k(ka.Dense(1.0) >> ka.Elementwise(lambda t: sp.sin(t) / t), X)),
        ("Elementwise string", lambda: k(ka.Dense(1.0) >> ka.Elementwise("x*tanh(x)"), X)),
        ("Elementwise exp(x^2/8)", lambda: k(ka.Dense(1.0) >> ka.Elementwise(lambda t: sp.exp(t ** 2 / 8)), 0.5 * X)),
        ("Elementwise jnp tanh", lambda: k(ka.Dense(1.0) >> ka.Elementwise(jnp.tanh), X)),
        ("latex cov1", lambda: ka.symbolic(NET).latex("cov1")),
        ("reference dps", lambda: ka.reference_kernel(NET, X[:2], dps=20)),
        ("early gelu", lambda: [float(v) for v in vars(A.early_time_constants("gelu")).values()
                                if isinstance(v, sp.Expr) and v.is_number]),
        ("early tanh", lambda: float(A.early_time_constants(sp.tanh(T)).mean_dphi_sq)),
        ("spectrum dps", lambda: A.mercer_spectrum(NET, 10, kmax=12, dps=30).mu),
    ]
    return [(lbl, True, f) for lbl, f in bad] + [(lbl, False, f) for lbl, f in good]


def _empirical(x: Any, **kw: Any) -> Any:
    twin = ka.finite(NET, 8)
    return ka.empirical_ntk(twin.apply, twin.init(jax.random.PRNGKey(0), (3,)), x, **kw)


def cli_cases(tmp: Path) -> list[tuple[str, bool, list[str]]]:
    np.save(tmp / "x.npy", X)
    np.save(tmp / "empty.npy", np.zeros((0, 3)))
    np.save(tmp / "nofeat.npy", np.zeros((3, 0)))
    np.save(tmp / "nan.npy", np.full((2, 3), np.nan))
    (tmp / "hdr.csv").write_text("a,b,c\n")
    (tmp / "ragged.csv").write_text("1,2,3\n4,5\n6,7\n")
    (tmp / "ok.csv").write_text("a,b\n1,2\n3,4\n")
    (tmp / "file.txt").write_text("x")
    arch = "Dense(1.5, 0.05) >> Relu() >> Dense(1.5, 0.05)"
    x, f = str(tmp / "x.npy"), str(tmp / "file.txt")
    bad = [
        ("at c > sqrt(q1 q2)", ["formula", arch, "--at", "q1=1", "q2=1", "c=2"]),
        ("at q1 < 0", ["formula", arch, "--at", "q1=-1", "q2=1", "c=0"]),
        ("at W < 0", ["formula", arch, "--symbols", "--at", "q1=1", "q2=1", "c=0", "sigma_w_1=-1"]),
        ("at nan", ["formula", arch, "--at", "q1=1", "q2=1", "c=nan"]),
        ("at missing", ["formula", arch, "--at", "q1=1"]),
        ("FanOut 10**300", ["formula", "FanOut(10**300)"]),
        ("lone surrogate", ["formula", "Dense(1.0) >> Relu(\udc80)"]),
        ("formula -o under file", ["formula", arch, "-o", f + "/f.txt"]),
        ("kernel empty npy", ["kernel", arch, str(tmp / "empty.npy"), "-o", str(tmp / "k1.npy")]),
        ("kernel no features", ["kernel", arch, str(tmp / "nofeat.npy"), "-o", str(tmp / "k2.npy")]),
        ("kernel NaN npy", ["kernel", arch, str(tmp / "nan.npy"), "-o", str(tmp / "k3.npy")]),
        ("kernel header-only csv", ["kernel", arch, str(tmp / "hdr.csv"), "-o", str(tmp / "k4.npy")]),
        ("kernel ragged csv", ["kernel", arch, str(tmp / "ragged.csv"), "-o", str(tmp / "k5.npy")]),
        ("kernel -o under file", ["kernel", arch, x, "-o", f + "/K.npy"]),
        ("kernel -o missing dir", ["kernel", arch, x, "-o", str(tmp / "no/K.npy")]),
        ("kernel bad suffix", ["kernel", arch, x, "-o", str(tmp / "K.txt")]),
        ("kernel missing file", ["kernel", arch, str(tmp / "none.npy")]),
        ("kernel batch 0", ["kernel", arch, x, "--batch-size", "0", "-o", str(tmp / "k6.npy")]),
        ("verify --out under file", ["verify", "--quick", "--out", f + "/rep"]),
        ("spectrum --csv under file", ["spectrum", arch, "--csv", f + "/s.csv"]),
        ("spectrum dim 1", ["spectrum", arch, "--dim", "1"]),
    ]
    good = [
        ("kernel csv with header", ["kernel", arch, str(tmp / "ok.csv"), "-o", str(tmp / "ok.npy"), "--no-progress"]),
        ("formula at boundary", ["formula", arch, "--at", "q1=1", "q2=1", "c=1"]),
    ]
    return [(lbl, True, a) for lbl, a in bad] + [(lbl, False, a) for lbl, a in good]


def run_cli(argv: list[str]) -> tuple[str, str]:
    """The command in-process (as the console script runs it); an exception escaping main is a traceback."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main(argv)
    except SystemExit as exc:  # argparse usage errors exit 2 with a usage line
        code = exc.code
    except Exception as exc:  # noqa: BLE001
        return "traceback", f"{type(exc).__name__}: {str(exc)[:90]}"
    text = err.getvalue().strip()
    if code == 2:
        return ("clear" if "Fix:" in text and len(text.splitlines()) == 1 else "unclear"), text[:100]
    return ("ok" if code == 0 else f"exit {code}"), ""


def main() -> int:
    rows = [(lbl, bad, *outcome(f)) for lbl, bad, f in api_cases()]
    with tempfile.TemporaryDirectory() as tmp:
        rows += [(f"cli: {lbl}", bad, *run_cli(a)) for lbl, bad, a in cli_cases(Path(tmp))]
        pipe = subprocess.Popen([sys.executable, "-m", "kernelalg", "layers"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=ROOT)
        pipe.stdout.close()
        err = pipe.stderr.read().decode()
        pipe.wait()
        rows.append(("cli: layers | (closed pipe)", False, "traceback" if "Traceback" in err else "ok", ""))
    tally = Counter((bad, res) for _, bad, res, _ in rows)
    print(f"{len(rows)} cases ({sum(b for _, b, _, _ in rows)} bad input, {sum(not b for _, b, _, _ in rows)} valid)")
    for bad in (True, False):
        print(("bad input:  " if bad else "valid input:"), ", ".join(f"{r} {n}" for (b, r), n in sorted(tally.items())
                                                                    if b == bad))
    wrong = [(lbl, res, msg) for lbl, bad, res, msg in rows if res != ("clear" if bad else "ok")]
    for lbl, res, msg in wrong:
        print(f"  UNEXPECTED {lbl}: {res} {msg}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
