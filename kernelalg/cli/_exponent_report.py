"""The loss-exponent check of ``kernelalg verify``: the loss slope of finite wide networks trained by gradient
descent against the exact linearized (kernel-flow) loss over the same steps, with xi = kappa/nu from the NTK
Gram spectrum beside it as the asymptote (:func:`kernelalg.analysis.finite_loss_exponent`).

The check draws up to :data:`POINTS` inputs of the report's data set (the other checks use ``-n`` of them) and
builds a target with a known power-law tail on the exact NTK's eigenvectors v_i (decreasing eigenvalues):
y = sum_i sign_i i^-1 v_i (random signs, seed of the run), so its tail mass sum_{j >= i} c_j^2 falls as
~ i^-1 (kappa = 1). nu and kappa are then *fitted* (with 95% intervals) like on any data and xi = kappa / nu
is reported; the centred finite networks are trained by full-batch GD with eta = 1/lambda_1. PASS when the
slope of their mean loss over the steps s_i = 1/(2 eta lambda_i), i = imin..imax, lies within
:data:`~kernelalg.cli._checks.Z_THRESHOLD` standard errors (over the networks) of the slope of the exact
linearized loss (``gd_loss`` on the exact NTK: same data, target, learning rate and steps; float64, no
sampling error). xi is the t -> infinity exponent, which the linearized loss has not reached over these steps,
so it is shown, not tested.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kernelalg.analysis._finite_exponent import finite_loss_exponent
from kernelalg.analysis._plots import wrap_title
from kernelalg.backends._compile import kernel
from kernelalg.cli._checks import Z_THRESHOLD, Check, _pyplot
from kernelalg.cli._io import load_data
from kernelalg.layers._surrogate import exact_jumps

#: Inputs of the check (quick runs: half).
POINTS = 400
#: First eigenvalue index of the fits and of the step window (the last is points / 10).
IMIN = 5
#: Most networks trained.
MAX_SAMPLES = 4


def power_law_target(ntk: np.ndarray, seed: int, kappa: float = 1.0) -> np.ndarray:
    """y = sum_i sign_i i^{-(kappa + 1)/2} v_i on the eigenvectors of ``ntk`` (decreasing eigenvalues), scaled
    to mean square 1: the squared coefficients fall as i^{-kappa-1}, the tail mass as ~ i^-kappa."""
    n = ntk.shape[0]
    _, vec = np.linalg.eigh((ntk + ntk.T) / 2)
    i = np.arange(1, n + 1, dtype=np.float64)
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], n)
    y = vec[:, ::-1] @ (signs * i ** (-(kappa + 1) / 2))
    return y * np.sqrt(n / np.sum(y ** 2))


def check_loss_exponent(net: Any, cfg: Any, out: Path) -> Check:
    """The verify check (see the module docstring)."""
    name = "Loss exponent: spectrum vs finite networks"
    if exact_jumps(net):
        return Check(name, "skipped", "exact sign/step layers (m = None): their twins have a true derivative 0 "
                     "almost everywhere, so gradient descent of the centred network does not follow the SG-NTK "
                     "flow this check predicts (see the loss-curve check for their training).")
    points = POINTS // 2 if cfg.quick else POINTS
    x, _, desc = load_data(cfg.data, points, cfg.dim, cfg.seed + 7)
    ntk = np.asarray(kernel(net, x, None, "ntk"), np.float64)
    y = power_law_target(ntk, cfg.seed)
    n = len(y)
    imax = max(IMIN + 10, n // 10)
    if n < 2 * imax:
        return Check(name, "skipped", f"{desc}: {n} inputs are too few for fits over eigenvalue indices "
                     f"{IMIN}..{imax}. Fix: use a data set with at least {2 * imax} samples.")
    samples = int(min(cfg.samples, MAX_SAMPLES))
    res = finite_loss_exponent(net, x, y, cfg.widths[-1], samples=samples, imin=IMIN, imax=imax, seed=cfg.seed + 5)
    le = res.predicted
    _plot(out / "loss_exponent.png", res, cfg.arch)
    z = res.z
    ok = bool(abs(z) <= Z_THRESHOLD)
    verdict = "agrees with" if ok else "DIFFERS FROM"
    head = (f"finite networks' loss slope {res.finite_slope:.3f} +- {res.finite_stderr:.3f} (SE over {samples} "
            f"networks, width {res.width}) {verdict} the exact linearized slope {res.kernel_slope:.3f} over the "
            f"same steps: z = {z:+.2f} (threshold {Z_THRESHOLD:g} SE); asymptote xi = kappa/nu = {le.xi:.3f} "
            f"[{le.xi_ci[0]:.3f}, {le.xi_ci[1]:.3f}] (reported, not tested)")
    lines = [f"- data: {desc}; target y = sum_i sign_i i^-1 v_i on the exact NTK eigenvectors (tail mass ~ i^-1)",
             f"- fitted over eigenvalue indices {IMIN}..{imax}: nu = {le.nu:.3f} [{le.nu_ci[0]:.3f}, "
             f"{le.nu_ci[1]:.3f}], kappa = {le.kappa:.3f} [{le.kappa_ci[0]:.3f}, {le.kappa_ci[1]:.3f}]"
             + (" (a fit drifts with its range: the interval includes the half-range slopes)" if res.drift else ""),
             f"- gradient descent, eta = 1/lambda_1 = {res.learning_rate:.4g}, centred networks f_p - f_p0; slopes "
             f"of log L vs log s over steps {', '.join(map(str, res.steps))} (s_i = 1/(2 eta lambda_i))",
             "- tested: the finite networks' slope against the exact linearized (kernel-flow) loss on the exact NTK "
             "with the same data, target, learning rate and steps (float64: no sampling error; the networks' SE "
             "is the whole uncertainty). Finite width biases the networks' slope too; it shrinks with width.",
             "- theory: L(t) ~ t^-xi, xi = kappa/nu (Velikanov & Yarotsky 2021), an asymptote in t that the "
             f"linearized loss has not reached over these steps (its slope here {res.kernel_slope:.3f} vs xi "
             f"{le.xi:.3f}), hence reported beside the test, not used as its bound"]
    return Check(name, "passed" if ok else "failed", head + "\n\n" + "\n".join(lines), "loss_exponent.png",
                 {"xi": le.xi, "xi_ci": list(le.xi_ci), "nu": le.nu, "nu_ci": list(le.nu_ci), "kappa": le.kappa,
                  "kappa_ci": list(le.kappa_ci), "finite_slope": res.finite_slope,
                  "finite_stderr": res.finite_stderr, "kernel_slope": res.kernel_slope, "z": z,
                  "z_threshold": Z_THRESHOLD, "learning_rate": res.learning_rate, "points": n,
                  "steps": res.steps.tolist(), "width": res.width, "samples": samples})


def _plot(path: Path, res: Any, arch: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    s = np.arange(1, len(res.finite_loss))
    ax.loglog(s, res.finite_loss[1:], color="tab:blue",
              label=f"finite networks (width {res.width}, mean): slope {res.finite_slope:.3f}")
    ax.loglog(s, res.kernel_loss[1:], "k--", lw=1,
              label=f"exact linearized (gd_loss): slope {res.kernel_slope:.3f} (tested)")
    st = res.steps
    ref = res.finite_loss[st[0]] * (st / st[0]) ** (-res.predicted.xi)
    ax.loglog(st, ref, color="tab:red", lw=2, alpha=0.6, label=f"asymptote -xi = -{res.predicted.xi:.3f} (not tested)")
    ax.axvspan(st[0], st[-1], color="tab:gray", alpha=0.1)
    ax.set_xlabel("gradient-descent step s")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    ax.set_title(wrap_title(f"{arch}: loss exponent", 6.4, 9), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
