"""The loss-curve check of ``kernelalg verify``: gradient descent of finite networks vs the kernel prediction.

Full-batch gradient descent on L = |f - y|^2 / (2N); the mean training loss over networks against the
infinite-width prediction E L_t = (|A^t y|^2 + tr(A^t K A^t^T)) / (2N), A = I - lr Theta / N (linearized
dynamics, Jacot et al. 2018; Lee et al. 2019; for surrogate-gradient layers Theta is the SG-NTK J J_tilde^T,
Eilers et al. 2024), width-extrapolated over the two largest widths and tested at checkpoints like the kernel
entries. For exact sign/step layers (m = None) it is the one check that uses the m = None networks
themselves: they train with the exact sign forward and the surrogate backward, so their function moves only
through sign flips of hidden units (the true derivative is 0 almost everywhere); whether the mean of those
dynamics follows the m = None SG-NTK prediction is what is tested.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kernelalg.analysis._loss import gd_loss
from kernelalg.analysis._plots import wrap_title
from kernelalg.cli._checks import REMAINDER, Z_THRESHOLD, Check, _pyplot
from kernelalg.finite._montecarlo import extrapolate
from kernelalg.finite._train import descend, mse_loss
from kernelalg.finite._twins import finite


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


def check_loss(net: Any, x: np.ndarray, y: np.ndarray, exact: Any, cfg: Any, out: Path) -> Check:
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
    ax.errorbar(ts + 1, est[ts], yerr=Z_THRESHOLD * se[ts], fmt="o", ms=3, color="k",
                label=f"width-extrapolated (+- {Z_THRESHOLD:g} SE)")
    ax.loglog(t, pred, "k--", lw=1.2, label="kernel prediction (infinite width)")
    ax.set_xlabel("gradient-descent step + 1")
    ax.set_ylabel("training loss |f - y|^2 / (2N)")
    ax.set_title(wrap_title(title, 6), fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
