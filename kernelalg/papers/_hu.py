"""Hu, Xiao, Adlam & Pennington (NeurIPS 2020): the surprising simplicity of the early-time learning dynamics.

Checked: the first-layer NTK of a two-layer network on n = d points of the sphere of radius sqrt(d) is close
in operator norm to the NTK of the linear model [zeta x / sqrt(d); nu] (their Theorem 2.1), and the relative
error |Theta - Theta_lin|_2 / |Theta|_2 shrinks with the input dimension d at n / d fixed. The theorem bounds
it by O~(d^-1/2). Derived here from the Hermite expansion of E[phi'(u) phi'(v)] in rho = x.x'/d ~ d^-1/2: the
linear model keeps the orders 0, 1 and the mean of order 2; what is left is the centred order-2 term (entries
~ d^-1, operator norm ~ sqrt(n)/d = d^-1/2) and, when E[phi''] = 0 (odd phi such as erf), only order 3
(entries ~ d^-3/2, norm ~ d^-1). Checked: the fitted log-log slope over d (three input draws per d) lies in
[-0.75, -0.3] for ReLU (rate -1/2) and in [-1.25, -0.75] for erf (rate -1). Exact kernels from the library's closed forms; constants zeta, nu by exact
Gaussian integrals (kernelalg.analysis.early_time_constants).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kernelalg.analysis._early import early_time_error
from kernelalg.papers._common import loglog_slope, pyplot, save
from kernelalg.papers._result import PaperResult

NAME = "hu2020"
PAPER = "Hu, Xiao, Adlam & Pennington, NeurIPS 2020 (early-time simplicity)"
#: What this gallery found (docs/papers.md): the claim reproduces.
REPRODUCES = True
CLAIM = ("Early in training a two-layer network behaves like a linear model: its NTK is close to the linear "
         "model's, with an error shrinking with the input dimension (n/d fixed).")


def run(out: Path, quick: bool = False) -> PaperResult:
    dims = (32, 64, 128, 256) if quick else (64, 128, 256, 512, 1024)
    seeds = 3
    errors = {act: np.array([[early_time_error(act, [d], ratio=1.0, seed=100 * s + 7)[0] for s in range(seeds)]
                             for d in dims]) for act in ("relu", "erf")}
    fits = {act: loglog_slope(dims, [row[:, None] for row in e], lambda g: float(g.mean()))
            for act, e in errors.items()}
    ranges = {"relu": (-0.75, -0.3), "erf": (-1.25, -0.75)}
    ok = all(ranges[a][0] <= f.slope <= ranges[a][1] for a, f in fits.items())
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for act, e in errors.items():
        ax.loglog(dims, e.mean(1), "o-", label=f"{act}: slope {fits[act].slope:.2f}")
    ax.loglog(dims, errors["relu"].mean(1)[0] * (np.array(dims) / dims[0]) ** -0.5, "k:", label="d^-1/2")
    ax.set(xlabel="input dimension d (n = d)", ylabel="|Theta - Theta_lin| / |Theta|",
           title="First-layer NTK vs linear model")
    ax.legend(fontsize=8)
    plot = save(fig, out, f"{NAME}.png")
    return PaperResult(
        NAME, PAPER, CLAIM,
        measured="; ".join(f"{a}: error {e.mean(1)[0]:.3f} (d={dims[0]}) -> {e.mean(1)[-1]:.3f} (d={dims[-1]}), "
                           f"slope {fits[a]}" for a, e in errors.items()),
        expected=("slopes -1/2 for ReLU (accepted [-0.75, -0.3]) and -1 for erf (odd, accepted [-1.25, -0.75]); "
                  "both within the theorem's O~(d^-1/2) bound"),
        passed=bool(ok), plot=plot,
        numbers={"dims": list(dims), **{a: e.tolist() for a, e in errors.items()},
                 "slopes": {a: f.__dict__ for a, f in fits.items()}},
        caveats=("checks the kernel approximation behind the theorem (first-layer NTK, isotropic inputs on the "
                 "sphere), not training trajectories; GELU is omitted until its early-time constant is fixed."))
