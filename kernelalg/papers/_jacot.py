"""Jacot, Gabriel & Hongler (NeurIPS 2018): the neural tangent kernel.

Checked: (1) at initialization the empirical NTK of finite networks fluctuates around the exact kernel with a
per-network spread ~ width^-1/2 (the fitted log-log slope's 95% bootstrap interval must contain -1/2 and lie
below 0); (2) during full-batch gradient descent the NTK moves less as width grows: the relative change
|Theta_T - Theta_0|_F / |Theta_0|_F after T steps decreases with width (fitted slope < -1/4; Lee et al. 2019
bound it by width^-1/2, Dyer & Gur-Ari 2020 predict width^-1 for dTheta/dt).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from kernelalg.backends._compile import kernel
from kernelalg.finite._empirical import empirical_ntk
from kernelalg.finite._montecarlo import monte_carlo
from kernelalg.finite._train import descend, mse_loss
from kernelalg.finite._twins import finite
from kernelalg.layers._activations import Relu
from kernelalg.layers._dense import Dense
from kernelalg.papers._common import loglog_slope, pyplot, save, sphere_data
from kernelalg.papers._result import PaperResult

NAME = "jacot2018"
PAPER = "Jacot, Gabriel & Hongler, NeurIPS 2018 (NTK)"
#: What this gallery found (docs/papers.md): the claim reproduces.
REPRODUCES = True
CLAIM = ("The finite-width NTK converges to the exact kernel at initialization (per-network spread ~ "
         "width^-1/2) and stays constant during training as width grows.")


def run(out: Path, quick: bool = False) -> PaperResult:
    n, dim = (8, 6) if quick else (12, 8)
    widths = (64, 128, 256, 512) if quick else (64, 128, 256, 512, 1024)
    samples = 24 if quick else 48
    x = sphere_data(n, dim, seed=0)
    y = np.sin(x[:, 0] + x[:, 1])
    net = Dense(1.5, 0.1) >> Relu() >> Dense(1.5, 0.1) >> Relu() >> Dense(1.5, 0.1)
    exact = np.asarray(kernel(net, x, get="ntk"), np.float64)
    scale = float(np.sqrt(np.mean(exact ** 2)))

    # (1) per-network spread at initialization
    draws = [np.asarray(monte_carlo(net, x, width=w, samples=samples, key=10 + i, get="ntk",
                                    keep_draws=True).draws["ntk"], np.float64) for i, w in enumerate(widths)]
    spread = [float(np.sqrt(np.mean(d.var(0, ddof=1)))) / scale for d in draws]
    bias = [float(np.linalg.norm(d.mean(0) - exact) / np.linalg.norm(exact)) for d in draws]
    fit_init = loglog_slope(widths, [d.reshape(len(d), -1) for d in draws],
                            lambda g: float(np.sqrt(np.mean(g.var(0, ddof=1)))))

    # (2) NTK change during training
    train_widths = widths[::2] if quick else widths[1::2] + (2048,)
    seeds, steps = (3, 60) if quick else (4, 150)
    lr = 0.5 * n / float(np.linalg.eigvalsh(exact)[-1])
    changes = []
    for w in train_widths:
        twin = finite(net, w)
        row = []
        for s in range(seeds):
            params = twin.init(jax.random.PRNGKey(100 * w + s), x.shape[1:])
            th0 = np.asarray(empirical_ntk(twin.apply, params, jnp.asarray(x, jnp.float32)), np.float64)
            params, _ = descend(mse_loss(twin.apply, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)),
                                params, lr, steps)
            th1 = np.asarray(empirical_ntk(twin.apply, params, jnp.asarray(x, jnp.float32)), np.float64)
            row.append(np.linalg.norm(th1 - th0) / np.linalg.norm(th0))
        changes.append(np.array(row))
    fit_train = loglog_slope(train_widths, [c[:, None] for c in changes], lambda g: float(g.mean()))

    ok_init = fit_init.contains(-0.5) and fit_init.hi < 0
    ok_train = fit_train.slope < -0.25 and fit_train.hi < 0
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
    ax[0].loglog(widths, spread, "o-", label=f"spread, slope {fit_init.slope:.2f}")
    ax[0].loglog(widths, bias, "s--", label="|mean - exact| / |exact|")
    ax[0].loglog(widths, spread[0] * (np.array(widths) / widths[0]) ** -0.5, "k:", label="width^-1/2")
    ax[0].set(xlabel="width", ylabel="relative size", title="NTK at initialization")
    ax[0].legend(fontsize=8)
    ax[1].loglog(train_widths, [c.mean() for c in changes], "o-", label=f"slope {fit_train.slope:.2f}")
    ax[1].set(xlabel="width", ylabel="|Theta_T - Theta_0| / |Theta_0|", title=f"NTK change after {steps} GD steps")
    ax[1].legend(fontsize=8)
    plot = save(fig, out, f"{NAME}.png")
    return PaperResult(
        NAME, PAPER, CLAIM,
        measured=(f"spread slope {fit_init}; NTK-change slope {fit_train} over widths {list(train_widths)} "
                  f"(change {changes[0].mean():.3g} -> {changes[-1].mean():.3g})"),
        expected=("spread slope -1/2 within its 95% CI; NTK-change slope < -1/4 (bound -1/2, Lee et al. 2019; "
                  "-1 by Dyer & Gur-Ari 2020)"),
        passed=bool(ok_init and ok_train), plot=plot,
        numbers={"widths": list(widths), "spread": spread, "bias": bias, "spread_slope": fit_init.__dict__,
                 "train_widths": list(train_widths), "ntk_change": [c.tolist() for c in changes],
                 "change_slope": fit_train.__dict__},
        caveats=(f"{samples} networks per width at initialization, {seeds} trained networks per width; "
                 "ReLU net with 2 hidden layers on points of a sphere; float32 networks."))
