"""``kernelalg verify`` and ``kernelalg spectrum``: the checks, their plots and the markdown report.

``verify`` holds the exact kernels of an architecture to finite networks, on built-in or user data:

1. *Convergence in width* (:func:`kernelalg.convergence`): Monte Carlo NNGP/NTK at every width against the
   exact kernel; passes when the error at the largest width is explained by the Monte Carlo noise and the
   fitted O(1/width) bias (``|E_n - K|_F <= 3 |SE_n|_F + |b|_F / n`` + rounding) and the error shrinks with
   width (unless already within that bound at the smallest width).
2. *Entrywise test* (:func:`kernelalg.verify`): width-extrapolated Monte Carlo at the two largest widths,
   every entry within 5 standard errors (plus the O(1/n^2) remainder allowance).
3. *Loss curves*: full-batch gradient descent of finite networks on the MSE; the mean training loss over
   networks against the infinite-width prediction E L_t = (|A^t y|^2 + tr(A^t K A^t^T)) / (2N) with
   A = I - lr Theta / N (linearized dynamics, Jacot et al. 2018; Lee et al. 2019; for surrogate-gradient
   layers Theta is the SG-NTK, Eilers et al. 2024), width-extrapolated and tested like 2.
4. *Spectrum* on the sphere (``kernelalg.analysis``, when available): the Mercer eigenvalues, the trace
   identity sum_k N(d, k) mu_k = k(1), the fitted against the derived decay exponent (Bietti & Mairal 2019).

The report folder gets ``summary.md``, ``results.json`` and one PNG per check.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kernelalg.cli._checks import Check, _close, _pyplot
from kernelalg.core._errors import KernelalgError
import jax
from kernelalg._version import __version__
from kernelalg.finite._montecarlo import convergence
from kernelalg.finite._verify import verify
import jax.numpy as jnp
from kernelalg.finite._train import descend, mse_loss
from kernelalg.finite._twins import finite
from kernelalg.finite._montecarlo import extrapolate
from kernelalg.backends._compile import kernel
from kernelalg.cli._io import load_data
from kernelalg.cli._spectrum_report import check_spectrum
from kernelalg.core._inputs import DENSE, layout_of
from kernelalg.analysis._loss import gd_loss

DEFAULTS = {"n": 24, "widths": (64, 256, 1024, 4096), "samples": 32, "steps": 200}
QUICK = {"n": 8, "widths": (32, 128), "samples": 8, "steps": 30}
Z_THRESHOLD = 5.0
#: Rounding floor of float32 Monte Carlo, relative (1000 machine epsilons, as ka.verify's numeric_rtol).
NUMERIC_RTOL = 1000 * float(np.finfo(np.float32).eps)
REMAINDER = 0.25
BAD_SETTING = "verify: {what} Fix: {fix}"
NOT_VECTOR = ("verify runs on vector data (sphere, scikit-learn sets, 2-D files), but {arch!r} takes {layout} "
              "inputs. Fix: verify a dense network, e.g. \"Dense(1.5, 0.05) >> Relu() >> Dense(1.5, 0.05)\", or "
              "check image/sequence networks from Python with ka.verify(net, x) on arrays of their shape.")


@dataclass(frozen=True)
class VerifyConfig:
    """Settings of one ``kernelalg verify`` run (see ``kernelalg verify --help``)."""

    arch: str
    data: str
    n: int
    dim: int
    widths: tuple[int, ...]
    samples: int
    steps: int
    out: str
    seed: int
    quick: bool = False
    progress: bool = True

    @classmethod
    def make(cls, *, arch: str, data: str, n: int | None, dim: int, widths: Sequence[int] | None,
             samples: int | None, steps: int | None, out: str, seed: int, quick: bool = False,
             progress: bool = True) -> "VerifyConfig":
        """Fill defaults (smaller with ``quick``) and validate, raising errors that name the fix."""
        d = QUICK if quick else DEFAULTS
        n = d["n"] if n is None else n
        widths = tuple(sorted(set(d["widths"] if widths is None else widths)))
        samples = d["samples"] if samples is None else samples
        steps = d["steps"] if steps is None else steps
        if n < 4:
            raise KernelalgError(BAD_SETTING.format(what=f"-n {n} is too small.",
                                                    fix="use at least 4 inputs, e.g. -n 24."))
        if len(widths) < 2 or widths[0] < 1:
            raise KernelalgError(BAD_SETTING.format(what=f"--widths {','.join(map(str, widths))} needs two or more "
                                                    "distinct positive widths.", fix="e.g. --widths 64,256,1024."))
        if samples < 2:
            raise KernelalgError(BAD_SETTING.format(what=f"--samples {samples}: a standard error needs two networks.",
                                                    fix="e.g. --samples 32."))
        if steps < 1:
            raise KernelalgError(BAD_SETTING.format(what=f"--steps {steps} must be >= 1.", fix="e.g. --steps 200."))
        if dim < 2:
            raise KernelalgError(BAD_SETTING.format(what=f"--dim {dim} must be >= 2.", fix="e.g. --dim 3."))
        return cls(arch, data, int(n), int(dim), widths, int(samples), int(steps), out, int(seed), quick, progress)

    def command(self) -> str:
        """The command line that reproduces this run."""
        w = ",".join(map(str, self.widths))
        return (f"kernelalg verify \"{self.arch}\" --data {self.data} -n {self.n} --dim {self.dim} --widths {w} "
                f"--samples {self.samples} --steps {self.steps} --seed {self.seed} --out {self.out}")


@dataclass
class Summary:
    """The outcome of ``kernelalg verify``: ``passed`` iff no check failed and at least one passed."""

    config: VerifyConfig
    description: str
    checks: list[Check]
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return any(c.status == "passed" for c in self.checks) and not any(c.status == "failed" for c in self.checks)

    def text(self) -> str:
        lines = [f"kernelalg verify: {'PASSED' if self.passed else 'FAILED'} ({self.seconds:.0f} s) -- "
                 f"report in {Path(self.config.out) / 'summary.md'}"]
        for c in self.checks:
            first = c.detail.strip().splitlines()[0] if c.detail.strip() else ""
            lines.append(f"  [{c.status.upper():7s}] {c.name}: {first}")
        return "\n".join(lines)

    def markdown(self) -> str:

        cfg = self.config
        out = [f"# kernelalg verify: {'PASSED' if self.passed else 'FAILED'}", "",
               f"- architecture: `{cfg.arch}`", f"- data: {self.description}",
               f"- widths {', '.join(map(str, cfg.widths))}; {cfg.samples} networks per width; "
               f"{cfg.steps} gradient-descent steps; seed {cfg.seed}",
               f"- reproduce: `{cfg.command()}`",
               f"- kernelalg {__version__}, jax {jax.__version__}, numpy {np.__version__}, "
               f"Python {platform.python_version()}, {platform.machine()}; {self.seconds:.0f} s", "",
               "| check | result | seconds |", "|---|---|---|"]
        out += [f"| {c.name} | **{c.status}** | {c.seconds:.1f} |" for c in self.checks]
        for c in self.checks:
            out += ["", f"## {c.name}: {c.status}", "", c.detail.strip()]
            if c.plot:
                out += ["", f"![{c.name}]({c.plot})"]
        return "\n".join(out) + "\n"


def _timed(fn, *args: Any) -> Check:
    t = time.perf_counter()
    check = fn(*args)
    check.seconds = time.perf_counter() - t
    return check


# ----------------------------------------------------------------------------------------- checks


def check_convergence(net: Any, x: np.ndarray, exact: Any, cfg: VerifyConfig, out: Path) -> Check:
    """Monte Carlo error across widths (``ka.convergence``) against noise floor + fitted bias."""
    conv = convergence(net, x, widths=cfg.widths, samples=cfg.samples, key=cfg.seed, exact=exact)
    conv.plot(str(out / "convergence.png"))
    _close()
    n = cfg.widths[-1]
    numeric = NUMERIC_RTOL if x.dtype == np.float32 else 1000 * float(np.finfo(np.float64).eps)
    ok, lines, nums = True, [], {}
    for name in conv.exact:
        err, noise, coef = conv.rel_error[name], conv.rel_noise[name], conv.bias_coefficient[name]
        bound = 3 * noise[-1] + coef / n + numeric
        good = bool(err[-1] <= bound and (err[-1] < err[0] or err[0] <= bound))
        ok &= good
        lines.append(f"- {name}: relative error |E_n - K|_F/|K|_F = " + ", ".join(
            f"{e:.2e} (n={w})" for e, w in zip(err, cfg.widths)) + f"; at n={n}: {err[-1]:.2e} vs bound "
            f"3 x noise {noise[-1]:.2e} + bias {coef:.3g}/n = {bound:.2e} -> {'ok' if good else 'FAIL'}")
        nums[name] = {"rel_error": err.tolist(), "rel_noise": noise.tolist(), "bias_coefficient": coef}
    head = ("the Monte Carlo kernels converge to the exact ones" if ok else
            "the Monte Carlo error at the largest width is not explained by noise + O(1/width) bias")
    return Check("Convergence in width", "passed" if ok else "failed", head + "\n\n" + "\n".join(lines),
                 "convergence.png", nums)


def check_entries(net: Any, x: np.ndarray, exact: Any, cfg: VerifyConfig, out: Path) -> Check:
    """Entrywise test of the width-extrapolated Monte Carlo at the two largest widths (``ka.verify``)."""
    res = verify(net, x, widths=cfg.widths[-2:], samples=cfg.samples, key=cfg.seed + 1, exact=exact,
                 z_threshold=Z_THRESHOLD, remainder=REMAINDER)
    res.plot(str(out / "verify.png"))
    _close()
    n_entries = int(res.entries.sum())
    head = (f"{n_entries} entries per kernel, max |z| = {res.max_abs_z:.2f} (threshold {Z_THRESHOLD:g} standard "
            f"errors + {REMAINDER:g} x |E_n - E_2n|), widths {res.widths}")
    body = "```\n" + res.summary() + "\n```"
    return Check("Exact vs Monte Carlo, entrywise", "passed" if res.passed else "failed", head + "\n\n" + body,
                 "verify.png", {"max_abs_z": res.max_abs_z, "failures": len(res.failures())})


def predicted_loss(ntk: np.ndarray, nngp: np.ndarray, y: np.ndarray, lr: float, steps: int) -> np.ndarray:
    """Infinite-width expected training loss L_t = (|A^t y|^2 + tr(A^t K A^t^T)) / (2N), A = I - lr Theta / N,
    of full-batch gradient descent on L = |f - y|^2 / (2N), t = 0..steps (f_0 ~ GP(0, K), Theta fixed; Theta
    may be asymmetric, e.g. a surrogate-gradient NTK J J~^T, for which the residual obeys the same map)."""
    return gd_loss(ntk, y, lr, steps, nngp=nngp)


def loss_curves(net: Any, x: np.ndarray, y: np.ndarray, width: int, samples: int, steps: int, lr: float,
                seed: int) -> np.ndarray:
    """Training losses (samples, steps + 1) of ``samples`` finite networks (first output channel) under
    full-batch gradient descent with learning rate ``lr`` on L = |f - y|^2 / (2N), in float32."""

    twin = finite(net, width)
    xs, ys = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)

    loss = mse_loss(twin.apply, xs, ys)

    def train(p: Any) -> jax.Array:
        return descend(loss, p, lr, steps)[1]

    shapes = jax.eval_shape(lambda k: twin.init(k, xs.shape), jax.random.PRNGKey(0))
    n_params = sum(math.prod(s.shape) for s in jax.tree_util.tree_leaves(shapes))
    chunk = int(max(1, min(samples, (64 * 2**20) // max(1, 16 * n_params))))
    keys = jax.random.split(jax.random.PRNGKey(seed), samples)
    pad = (-samples) % chunk
    if pad:
        keys = jnp.concatenate([keys, keys[:pad]])
    run = jax.jit(jax.vmap(lambda k: train(twin.init(k, xs.shape))))
    parts = [np.asarray(run(keys[i:i + chunk]), np.float64) for i in range(0, len(keys), chunk)]
    return np.concatenate(parts)[:samples]


def check_loss(net: Any, x: np.ndarray, y: np.ndarray, exact: Any, cfg: VerifyConfig, out: Path) -> Check:
    """Mean training loss of finite networks vs the kernel prediction (two largest widths, extrapolated)."""
    ntk, nngp = np.asarray(exact.ntk, np.float64), np.asarray(exact.nngp, np.float64)
    n, steps = len(y), cfg.steps
    lr = float(n / np.max(np.abs(np.linalg.eigvals(ntk))))
    pred = predicted_loss(ntk, nngp, y, lr, steps)
    widths = cfg.widths[-2:]
    curves = [loss_curves(net, x, y, w, cfg.samples, steps, lr, cfg.seed + 2 + i) for i, w in enumerate(widths)]
    means = [c.mean(0) for c in curves]
    ses = [c.std(0, ddof=1) / math.sqrt(len(c)) for c in curves]
    est, se, _ = extrapolate(means, ses, widths)
    allow = REMAINDER * np.abs(means[0] - means[1])
    ts = np.unique(np.concatenate([[0], np.round(np.geomspace(1, steps, 12)).astype(int)]))
    z = (est[ts] - pred[ts]) / se[ts]
    ok = bool(np.all(np.abs(est[ts] - pred[ts]) <= Z_THRESHOLD * se[ts] + allow[ts]))
    _plot_loss(out / "loss_curve.png", pred, means, ses, widths, est, se, ts, cfg.arch)
    rows = ["| step | predicted | extrapolated MC | SE | z |", "|---|---|---|---|---|"]
    rows += [f"| {t} | {pred[t]:.4g} | {est[t]:.4g} | {se[t]:.2g} | {zz:+.2f} |" for t, zz in zip(ts, z)]
    head = (f"gradient descent (lr = N / lambda_max(Theta) = {lr:.3g}, {steps} steps) on {n} inputs: mean loss "
            f"over {cfg.samples} networks at widths {widths} vs the infinite-width prediction; max |z| = "
            f"{np.max(np.abs(z)):.2f} at {len(ts)} checkpoints (threshold {Z_THRESHOLD:g} SE + {REMAINDER:g} x "
            f"width shift); loss {pred[0]:.3g} -> {pred[-1]:.3g}")
    return Check("Loss curves vs kernel prediction", "passed" if ok else "failed", head + "\n\n" + "\n".join(rows),
                 "loss_curve.png", {"lr": lr, "predicted": pred[ts].tolist(), "estimate": est[ts].tolist(),
                                    "stderr": se[ts].tolist(), "steps": ts.tolist()})


def _plot_loss(path: Path, pred: np.ndarray, means: list, ses: list, widths: Sequence[int], est: np.ndarray,
               se: np.ndarray, ts: np.ndarray, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    t = np.arange(len(pred)) + 1
    for m, s, w in zip(means, ses, widths):
        line, = ax.loglog(t, m, lw=1, label=f"finite width {w} (mean of networks)")
        ax.fill_between(t, np.maximum(m - 2 * s, 1e-12), m + 2 * s, color=line.get_color(), alpha=0.2)
    ax.errorbar(ts + 1, est[ts], yerr=Z_THRESHOLD * se[ts], fmt="o", ms=3, color="k", label="width-extrapolated")
    ax.loglog(t, pred, "k--", lw=1.2, label="kernel prediction (infinite width)")
    ax.set_xlabel("gradient-descent step + 1")
    ax.set_ylabel("training loss |f - y|^2 / (2N)")
    ax.set_title(title[:80], fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------- run


def run_verify(net: Any, cfg: VerifyConfig, out_dir: Path | None = None) -> Summary:
    """Run every check of ``kernelalg verify`` and write the report folder ``cfg.out`` (or ``out_dir``: the
    command line stages the report there and swaps it into ``cfg.out`` when the run ends)."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    layout = layout_of(net)
    if layout is not DENSE:
        raise KernelalgError(NOT_VECTOR.format(arch=cfg.arch, layout=layout.name))
    x, y, desc = load_data(cfg.data, cfg.n, cfg.dim, cfg.seed)
    exact = kernel(net, x, None, ("nngp", "ntk"))
    out = Path(cfg.out if out_dir is None else out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x32 = x.astype(np.float32)
    stages = [("convergence in width", check_convergence, (net, x32, exact, cfg, out)),
              ("entrywise Monte Carlo test", check_entries, (net, x32, exact, cfg, out)),
              ("loss curves", check_loss, (net, x, y, exact, cfg, out)),
              ("spectrum", check_spectrum, (net, cfg, out))]
    checks: list[Check] = []
    bar = tqdm(stages, desc="verify", unit="check", disable=not cfg.progress)
    for label, fn, args in bar:
        bar.set_postfix_str(label)
        checks.append(_timed(fn, *args))
    bar.close()
    summary = Summary(cfg, desc, checks, time.perf_counter() - t0)
    (out / "summary.md").write_text(summary.markdown())
    (out / "results.json").write_text(json.dumps(
        {"passed": summary.passed, "arch": cfg.arch, "data": desc, "widths": list(cfg.widths),
         "samples": cfg.samples, "seconds": summary.seconds,
         "checks": [{"name": c.name, "status": c.status, "seconds": c.seconds, "numbers": c.numbers}
                    for c in checks]}, indent=1, default=float))
    return summary
