"""``kernelalg verify``: the checks, their plots and the markdown report.

``verify`` holds the exact kernels of an architecture to finite networks, on built-in or user data:

1. *Convergence in width* (:func:`kernelalg.convergence`): Monte Carlo NNGP/NTK at every width against the
   exact kernel; passes when the error at the largest width is explained by the Monte Carlo noise and the
   fitted O(1/width) bias (``|E_n - K|_F <= 3 |SE_n|_F + |b|_F / n`` + rounding) and the error shrinks with
   width (unless already within that bound at the smallest width).
2. *Per-network spread*: one network's kernel deviates from the limit by O(width^-1/2) (Jacot et al. 2018;
   Hanin & Nica 2020); the fitted exponent of sqrt(mean_s |Theta_s - K|_F^2) / |K|_F against width must
   contain -1/2 in its 3-standard-error interval.
3. *Entrywise test* (:func:`kernelalg.verify`): width-extrapolated Monte Carlo at the two largest widths,
   every entry within 5 standard errors (plus the O(1/n^2) remainder allowance), and the decorrelated
   Hotelling test (the entries share the same networks, so their z are correlated).
4. *Loss curves* (:mod:`kernelalg.cli._loss_report`): gradient descent of finite networks vs the linearized
   infinite-width prediction.
5. *Loss exponent* (:mod:`kernelalg.cli._exponent_report`): the loss slope of finite networks trained by
   gradient descent on up to 400 inputs and a target with a known power-law tail, against the exact linearized
   loss's slope over the same steps (within 5 SE); xi = kappa/nu fitted from the NTK Gram spectrum is reported
   beside it as the asymptote.
6. *Spectra* (:mod:`kernelalg.cli._spectrum_report`): for ``--data sphere`` the Mercer spectrum on the sphere
   (trace identity, decay exponent); for every data set the eigenvalues of the data's NTK Gram matrix vs the
   Monte Carlo NTK along the same eigenvectors.

Exact sign/step surrogate layers (m = None) cannot be checked by Monte Carlo directly (the twins' true
derivative is 0 almost everywhere): checks 1-3 and the Gram spectrum then run at finite sharpness m chosen
from the widths (:func:`kernelalg.verify_sharpness_limit`), the entrywise check over a ladder of m with the
exact distance to the m = None kernel, while the loss curves train the m = None networks themselves.

The report folder gets ``summary.md``, ``results.json`` and the PNGs of the checks.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from kernelalg._version import __version__
from kernelalg.backends._compile import kernel
from kernelalg.cli._checks import NUMERIC_RTOL, REMAINDER, Z_THRESHOLD, Check, _close
from kernelalg.cli._exponent_report import check_loss_exponent
from kernelalg.cli._io import load_data
from kernelalg.cli._loss_report import check_loss
from kernelalg.cli._spectrum_report import check_gram_spectrum, check_spectrum
from kernelalg.core._errors import KernelalgError
from kernelalg.core._inputs import DENSE, layout_of
from kernelalg.finite._convergence import convergence
from kernelalg.finite._sharpness import UNITS_PER_SHARPNESS, sharpness_ladder, verify_sharpness_limit
from kernelalg.finite._verify import verify
from kernelalg.layers._surrogate import exact_jumps, with_sharpness

DEFAULTS = {"n": 24, "widths": (64, 256, 1024, 4096), "samples": 32, "steps": 200}
QUICK = {"n": 8, "widths": (32, 128), "samples": 8, "steps": 30}
#: The per-network spread exponent passes when -1/2 lies within this many standard errors of the fit.
SPREAD_Z = 3.0
#: Most inputs: every check holds n x n kernels per width and network (-n 1024 --quick: ~1.2 GB, minutes).
MAX_N = 1024
BAD_SETTING = "verify: {what} Fix: {fix}"
NOT_VECTOR = ("verify runs on vector data (sphere, scikit-learn sets, 2-D files), but {arch!r} takes {layout} "
              "inputs. Fix: verify a dense network, e.g. \"Dense(1.5, 0.05) >> Relu() >> Dense(1.5, 0.05)\", or "
              "check image/sequence networks from Python with ka.verify(net, x) on arrays of their shape.")
SHARP_NOTE = ("The network has exact sign/step surrogate layers (m = None). Their finite-width twins have a true "
              "derivative 0 almost everywhere, so Monte Carlo of J J~^T would see the readout term only and cannot "
              "test the m = None SG-NTK directly. It is the m -> infinity limit of the finite-sharpness kernels "
              "(forward erf(m x)), each of which is the width limit of its twins (Eilers et al. 2024). So: the "
              "convergence and spread checks run at m = {m_conv:g}, the Gram spectrum at m = {m_top:g}, each against "
              "the exact kernel at that m; the entrywise check runs m = {ladder} against the exact finite-m kernels, "
              "then follows the exact finite-m kernels further out (no Monte Carlo) and extrapolates them to "
              "m = infinity, which must land on the m = None kernel; m <= (smallest width used) / "
              f"{UNITS_PER_SHARPNESS} keeps ~13 hidden units per network inside the derivative's spike. The loss "
              "curves train the m = None networks themselves (exact sign forward, surrogate backward) against the "
              "m = None kernel, and the Mercer spectrum is the m = None kernel's.")


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
        if n > MAX_N:
            raise KernelalgError(BAD_SETTING.format(what=f"-n {n} is too large (limit {MAX_N}; the checks hold "
                                                    "n x n kernels for every width and network).",
                                                    fix=f"use at most {MAX_N} inputs, e.g. -n 24."))
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
    notes: list[str] = field(default_factory=list)

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
               f"Python {platform.python_version()}, {platform.machine()}; {self.seconds:.0f} s", ""]
        out += [note + "\n" for note in self.notes]
        out += ["| check | result | seconds |", "|---|---|---|"]
        out += [f"| {c.name} | **{c.status}** | {c.seconds:.1f} |" for c in self.checks]
        for c in self.checks:
            out += ["", f"## {c.name}: {c.status}", "", c.detail.strip()]
            if c.plot:
                out += ["", f"![{c.name}]({c.plot})"]
        return "\n".join(out) + "\n"


def _timed(fn, *args: Any) -> list[Check]:
    """Run one stage; its time goes to the first check it returns (later ones are verdicts on the same run)."""
    t = time.perf_counter()
    result = fn(*args)
    result = result if isinstance(result, list) else [result]
    result[0].seconds = time.perf_counter() - t
    return result


# ----------------------------------------------------------------------------------------- checks


def check_convergence(net: Any, x: np.ndarray, exact: Any, cfg: VerifyConfig, out: Path,
                      note: str = "") -> list[Check]:
    """Two checks from one ``ka.convergence`` run: the error of the mean against noise floor + fitted bias, and
    the per-network spread's exponent against -1/2."""
    conv = convergence(net, x, widths=cfg.widths, samples=cfg.samples, key=cfg.seed, exact=exact)
    conv.plot(str(out / "convergence.png"), title=f"{cfg.arch}{note and ' (' + note + ')'}: finite-width Monte "
              f"Carlo vs exact kernel, {cfg.samples} networks per width")
    _close()
    n = cfg.widths[-1]
    numeric = NUMERIC_RTOL if x.dtype == np.float32 else 1000 * float(np.finfo(np.float64).eps)
    ok, spread_ok, lines, spread_lines, nums = True, True, [], [], {}
    for name in conv.exact:
        err, noise, coef = conv.rel_error[name], conv.rel_noise[name], conv.bias_coefficient[name]
        bound = 3 * noise[-1] + coef / n + numeric
        good = bool(err[-1] <= bound and (err[-1] < err[0] or err[0] <= bound))
        ok &= good
        lines.append(f"- {name}: relative error |E_n - K|_F/|K|_F = " + ", ".join(
            f"{e:.2e} (n={w})" for e, w in zip(err, cfg.widths)) + f"; at n={n}: {err[-1]:.2e} vs bound "
            f"3 x noise {noise[-1]:.2e} + bias {coef:.3g}/n = {bound:.2e} -> {'ok' if good else 'FAIL'}")
        fit, spread = conv.spread_fit[name], conv.spread[name]
        lo, hi = fit.interval(SPREAD_Z)
        good = bool(lo <= -0.5 <= hi)
        spread_ok &= good
        spread_lines.append(
            f"- {name}: spread = " + ", ".join(f"{v:.3g} (n={w})" for v, w in zip(spread, cfg.widths))
            + f"; fitted exponent {fit.exponent:+.3f} +- {fit.stderr:.3f} (SE; chi2 {fit.chi2:.2f} on {fit.dof} dof), "
            f"{SPREAD_Z:g}-SE interval [{lo:+.3f}, {hi:+.3f}] {'contains' if good else 'EXCLUDES'} -1/2 -> "
            f"{'ok' if good else 'FAIL'}")
        nums[name] = {"rel_error": err.tolist(), "rel_noise": noise.tolist(), "bias_coefficient": coef,
                      "spread": spread.tolist(), "spread_exponent": fit.exponent, "spread_exponent_se": fit.stderr}
    where = f" ({note})" if note else ""
    head = ("the Monte Carlo means converge to the exact kernels" if ok else
            "the Monte Carlo error at the largest width is not explained by noise + O(1/width) bias") + where
    spread_head = (f"one network's kernel deviates from the exact one as width^p with p = -1/2 within {SPREAD_Z:g} SE"
                   if spread_ok else "the per-network spread does not scale as width^-1/2") + where
    spread_body = ("Spread = sqrt(mean over networks of |Theta_s - K|_F^2) / |K|_F at each width (independent "
                   "networks per width); exponent from a weighted least-squares fit of log spread on log width, "
                   "standard errors by the delta method from the networks, inflated by sqrt(chi2/dof) when above 1 "
                   "(right panel of convergence.png). Theory: -1/2 (Jacot et al. 2018; Hanin & Nica 2020). Same "
                   "networks as the convergence check (its seconds include this one).")
    return [Check("Convergence in width", "passed" if ok else "failed", head + "\n\n" + "\n".join(lines),
                  "convergence.png", nums),
            Check("Per-network spread ~ width^-1/2", "passed" if spread_ok else "failed",
                  spread_head + "\n\n" + spread_body + "\n\n" + "\n".join(spread_lines), "convergence.png",
                  {n: {k: v for k, v in d.items() if k.startswith("spread")} for n, d in nums.items()})]


def _entries_text(res: Any) -> str:
    n_entries = int(res.entries.sum())
    return (f"{n_entries} entries per kernel, max |z| = {res.max_abs_z:.2f} (threshold {Z_THRESHOLD:g} standard "
            f"errors + {REMAINDER:g} x |E_n - E_2n|), widths {res.widths}; decorrelated test p = "
            + ", ".join(f"{d.p_value:.2g} ({n})" for n, d in res.decorrelated.items())
            + f" (threshold {res.p_threshold:.1e})")


ENTRIES_NOTE = ("The entries are means over the same {samples} networks per width, so their z-scores are "
                "correlated: a common fluctuation of the networks shifts them together, and the histogram in "
                "verify.png may sit off N(0, 1) without anything being wrong (its mean z is shown with the standard "
                "error from the per-network means). The decorrelated test takes the networks as the independent "
                "samples: Hotelling's T^2 of the kernel along the exact kernel's top singular directions, against "
                "F; it passes when p >= the two-sided normal tail at {z:g} SE.")


def check_entries(net: Any, x: np.ndarray, exact: Any, cfg: VerifyConfig, out: Path) -> Check:
    """Entrywise and decorrelated tests at the two largest widths (``ka.verify``); for exact sign/step layers
    over a ladder of finite sharpness (``ka.verify_sharpness_limit``)."""
    name, note = "Exact vs Monte Carlo, entrywise", ENTRIES_NOTE.format(samples=cfg.samples, z=Z_THRESHOLD)
    widths = cfg.widths[-2:]
    if not exact_jumps(net):
        res = verify(net, x, widths=widths, samples=cfg.samples, key=cfg.seed + 1, exact=exact,
                     z_threshold=Z_THRESHOLD, remainder=REMAINDER)
        res.plot(str(out / "verify.png"))
        _close()
        body = note + "\n\n```\n" + res.summary() + "\n```"
        return Check(name, "passed" if res.passed else "failed", _entries_text(res) + "\n\n" + body, "verify.png",
                     {"max_abs_z": res.max_abs_z, "failures": len(res.failures()),
                      "decorrelated_p": {n: d.p_value for n, d in res.decorrelated.items()}})
    lim = verify_sharpness_limit(net, x, sharpness=sharpness_ladder(widths[0]), widths=widths, samples=cfg.samples,
                                 key=cfg.seed + 1, exact=exact, z_threshold=Z_THRESHOLD, remainder=REMAINDER)
    lim.plot(str(out / "sharpness.png"))
    lim.checks[-1].plot(str(out / "verify.png"))
    _close()
    agree = all(v.passed for v in lim.checks)
    head = (f"m = None through finite sharpness: the Monte Carlo {'agrees' if agree else 'does NOT agree'} with the "
            f"exact kernels at m = {', '.join(f'{m:g}' for m in lim.sharpness)}, and the exact finite-m kernels at m = "
            f"{', '.join(f'{m:g}' for m in lim.limit)} {'extrapolate' if lim.limit_passed else 'do NOT extrapolate'} "
            f"to the m = None kernel (Richardson residual / last distance = "
            + ", ".join(f"{e:.3f} ({n})" for n, e in lim.extrapolated.items()) + f", threshold {lim.remainder:g})")
    body = (note + "\n\n```\n" + lim.summary() + "\n```\n\nLargest m, entry by entry: "
            + _entries_text(lim.checks[-1]) + "\n\n![entrywise at the largest m](verify.png)")
    return Check(name, "passed" if lim.passed else "failed", head + "\n\n" + body, "sharpness.png",
                 {"sharpness": list(lim.sharpness), "limit_sharpness": list(lim.limit),
                  "max_abs_z": [v.max_abs_z for v in lim.checks], "distance": {n: d.tolist() for n, d in
                                                                              lim.distance.items()},
                  "rate": lim.rate, "extrapolated": lim.extrapolated})


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
    conv_net, conv_exact, gram_net, gram_exact, where, gram_note, notes = net, exact, net, exact, "", "", []
    if exact_jumps(net):
        m_conv, ladder = sharpness_ladder(cfg.widths[0], count=1)[0], sharpness_ladder(cfg.widths[-2])
        conv_net, gram_net = with_sharpness(net, m_conv), with_sharpness(net, ladder[-1])
        conv_exact, gram_exact = (kernel(n_, x, None, ("nngp", "ntk")) for n_ in (conv_net, gram_net))
        where, gram_note = f"at sharpness m = {m_conv:g}", f"Run at sharpness m = {ladder[-1]:g} (see the notes)."
        notes.append(SHARP_NOTE.format(m_conv=m_conv, m_top=ladder[-1], ladder=", ".join(f"{m:g}" for m in ladder)))
    stages = [("convergence in width", check_convergence, (conv_net, x32, conv_exact, cfg, out, where)),
              ("entrywise Monte Carlo test", check_entries, (net, x32, exact, cfg, out)),
              ("loss curves", check_loss, (net, x, y, exact, cfg, out)),
              ("loss exponent", check_loss_exponent, (net, cfg, out)),
              ("spectrum", check_spectrum, (net, cfg, out)),
              ("Gram spectrum", check_gram_spectrum, (gram_net, x32, gram_exact, cfg, out, gram_note))]
    checks: list[Check] = []
    bar = tqdm(stages, desc="verify", unit="check", disable=not cfg.progress)
    for label, fn, args in bar:
        bar.set_postfix_str(label)
        checks.extend(_timed(fn, *args))
    bar.close()
    summary = Summary(cfg, desc, checks, time.perf_counter() - t0, notes)
    (out / "summary.md").write_text(summary.markdown())
    (out / "results.json").write_text(json.dumps(
        {"passed": summary.passed, "arch": cfg.arch, "data": desc, "widths": list(cfg.widths),
         "samples": cfg.samples, "seconds": summary.seconds, "notes": notes,
         "checks": [{"name": c.name, "status": c.status, "seconds": c.seconds, "numbers": c.numbers}
                    for c in checks]}, indent=1, default=float))
    return summary
