"""Eilers, Memmesheimer & Goedeke (NeurIPS 2024): a generalized NTK for surrogate-gradient learning.

Checked with f = Dense(1, 0.1) >> sign >> Dense(1, 0.1) on points of a sphere, sign approximated by
erf(m x): (1) the naive NTK (the true derivative m erf'(m x) in the backward pass) degenerates: its diagonal
grows linearly in m (fitted log-log slope in [0.9, 1.1] over m = 4..256); (2) the surrogate-gradient NTK
(erf(a x) surrogate, a = 1) stays finite and converges to its m -> infinity closed form: the relative
difference falls with m (slope < 0) and is below 2e-2 at m = 256; (3) training the network (exact sign forward, erf
surrogate backward, width 2048) by full-batch gradient descent follows the SG-NTK prediction: the mean
training loss of 16 networks stays within 4 standard errors, or within 5% relative, of the expected loss
of the linearized dynamics with the asymmetric SG-NTK (``analysis.gd_loss``), at every recorded step.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from kernelalg.analysis._loss import gd_loss
from kernelalg.backends._compile import kernel
from kernelalg.finite._surrogate import surrogate_twins
from kernelalg.finite._train import descend, mse_loss
from kernelalg.layers._dense import Dense
from kernelalg.layers._surrogate import SurrogateSign
from kernelalg.papers._common import pyplot, save, sphere_data
from kernelalg.papers._result import PaperResult

NAME = "eilers2024"
PAPER = "Eilers, Memmesheimer & Goedeke, NeurIPS 2024 (surrogate-gradient NTK)"
#: What this gallery found (docs/papers.md): the claim reproduces.
REPRODUCES = True
CLAIM = ("The SG-NTK is well defined for sign networks while the true-gradient NTK degenerates; surrogate-"
         "gradient training of wide sign networks follows the SG-NTK prediction.")


def _net(m: float | None, surrogate: str) -> object:
    return Dense(1.0, 0.1) >> SurrogateSign(m, surrogate=surrogate, a=1.0) >> Dense(1.0, 0.1)


def run(out: Path, quick: bool = False) -> PaperResult:
    x = sphere_data(8 if quick else 12, 4, seed=3)
    y = np.cos(x[:, 0]) - x[:, 1] / 2
    ms = np.array([4.0, 16.0, 64.0, 256.0])
    naive = np.array([np.diag(np.asarray(kernel(_net(m, "true"), x, get="ntk"))).mean() for m in ms])
    slope_naive = float(np.polyfit(np.log(ms), np.log(naive), 1)[0])
    sg_inf = np.asarray(kernel(_net(None, "erf"), x, get="ntk"), np.float64)
    rel = np.array([np.linalg.norm(np.asarray(kernel(_net(m, "erf"), x, get="ntk")) - sg_inf)
                    / np.linalg.norm(sg_inf) for m in ms])
    slope_conv = float(np.polyfit(np.log(ms), np.log(rel), 1)[0])

    exact = kernel(_net(None, "erf"), x)
    ntk, nngp = np.asarray(exact.ntk, np.float64), np.asarray(exact.nngp, np.float64)
    n, steps = len(x), (30 if quick else 60)
    lr = 0.5 * n / float(np.max(np.abs(np.linalg.eigvals(ntk))))
    pred = gd_loss(ntk, y, lr, steps, nngp=nngp)
    twins = surrogate_twins(_net(None, "erf"), (x.shape[1],), 1024 if quick else 2048)
    xs, ys = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    train = jax.jit(lambda p: descend(mse_loss(twins.apply_surrogate, xs, ys), p, lr, steps)[1])
    nets = 16
    curves = np.stack([np.asarray(train(twins.init(jax.random.PRNGKey(s))), np.float64) for s in range(nets)])
    mean, se = curves.mean(0), curves.std(0, ddof=1) / math.sqrt(nets)
    z = (mean - pred) / np.maximum(se, 1e-12)
    close = (np.abs(z) <= 4) | (np.abs(mean - pred) <= 0.05 * pred)
    ok = 0.9 <= slope_naive <= 1.1 and slope_conv < 0 and rel[-1] < 2e-2 and bool(close.all())
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].loglog(ms, naive / naive[0], "o-", label=f"naive NTK diagonal (slope {slope_naive:.2f})")
    ax[0].loglog(ms, rel, "s-", label=f"SG-NTK(m) vs m=inf (slope {slope_conv:.2f})")
    ax[0].set(xlabel="sharpness m", title="Naive NTK vs SG-NTK")
    ax[0].legend(fontsize=8)
    ax[1].plot(pred, "k-", label="SG-NTK prediction")
    ax[1].errorbar(np.arange(steps + 1), mean, yerr=2 * se, fmt=".", label=f"{nets} sign nets (+-2 se)")
    ax[1].set(xlabel="GD step", ylabel="training loss", title="Surrogate-gradient training")
    ax[1].legend(fontsize=8)
    plot = save(fig, out, f"{NAME}.png")
    return PaperResult(
        NAME, PAPER, CLAIM,
        measured=(f"naive NTK diagonal slope in m {slope_naive:.3f}; SG-NTK(m) -> m=inf: rel. diff {rel[0]:.2g} "
                  f"(m=4) -> {rel[-1]:.2g} (m=256), slope {slope_conv:.2f}; training: max |z| {np.abs(z).max():.2f}, "
                  f"max rel. gap {np.max(np.abs(mean - pred) / pred):.3f} over {steps} steps"),
        expected="slope 1; SG-NTK converges; training loss within 4 se or 5% of the prediction at every step",
        passed=bool(ok), plot=plot,
        numbers={"m": ms.tolist(), "naive_diag": naive.tolist(), "sg_rel_diff": rel.tolist(),
                 "pred": pred.tolist(), "mean": mean.tolist(), "se": se.tolist()},
        caveats=(f"{nets} networks of width {'1024' if quick else '2048'} (float32), one hidden layer, learning rate "
                 "0.5 N / |lambda|_max of the SG-NTK; the prediction averages over the Gaussian initial outputs."))
