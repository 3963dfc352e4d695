"""Ortiz-Jimenez, Moosavi-Dezfooli & Frossard (NeurIPS 2021): what linearized networks say about generalization.

"What can linearized neural networks actually say about generalization?": the linearized model learns a
target well when the target is aligned with the top eigenfunctions of its NTK, and badly otherwise; trained
networks differ from their linearization because their NTK moves during training, towards the target.

Checked on scikit-learn digits (400 images, 200 for training and 200 held out; quick mode 200 = 100 + 100),
with the exact NTK of a two-hidden-layer ReLU net (kernelalg) on all the images and targets y_k = sign(v_k),
v_k its k-th eigenvector (k = 1, 2, 4, ..., 128; k = 0 is the near-constant top one), as in the paper:
(1) the exact linearized model (kernel regression, the infinitely wide net trained to convergence) has a test
accuracy that falls with the index: Spearman rank correlation of accuracy and k <= -0.8; (2) its convergence
slows with the index: the train loss after T = 30 gradient steps (learning rate N / lambda_max) relative to
the initial one rises with k (Spearman >= 0.8); (3) finite networks (centred: f - f_0) and its
linearization (``ka.linearize``) trained on the same targets for 300 steps at the same rate: the empirical NTK
of the trained network is more aligned with the target than the initial one (alignment y^T Theta y /
(|Theta|_F |y|^2) grows) for every k checked, at widths 32 and 512, and grows less at width 512 (lazier).
Reported, not part of the verdict: where the network beats or trails its linearization (test accuracy and
train loss per k).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import spearmanr

from kernelalg.analysis._dynamics import gradient_descent_mse
from kernelalg.backends._compile import kernel
from kernelalg.finite._empirical import empirical_ntk
from kernelalg.finite._linearize import linearize
from kernelalg.finite._train import descend, mse_loss
from kernelalg.finite._twins import finite
from kernelalg.layers._activations import Relu
from kernelalg.layers._dense import Dense
from kernelalg.papers._common import pyplot, save
from kernelalg.papers._result import PaperResult

NAME = "ortizjimenez2021"
PAPER = "Ortiz-Jimenez, Moosavi-Dezfooli & Frossard, NeurIPS 2021 (linearized networks and generalization)"
#: What this gallery found (docs/papers.md): the claim reproduces.
REPRODUCES = True
CLAIM = ("The linearized model generalizes and converges worse on targets aligned with NTK eigenfunctions of "
         "higher index; a trained network differs from its linearization because its NTK moves towards the target.")
NET = Dense(1.4, 0.1) >> Relu() >> Dense(1.4, 0.1) >> Relu() >> Dense(1.4, 0.1)
#: Tolerances of the verdict (see the module docstring).
RANK_CORR = 0.8
#: Steps of the convergence measure (exact NTK) and of the finite networks' training; their width.
T_LOSS, STEPS, WIDTHS = 30, 300, (32, 512)


def _data(n: int) -> np.ndarray:
    from sklearn.datasets import load_digits
    x = load_digits().data.astype(np.float64)
    x = (x - x.mean(0)) / 4.0
    x = x / np.linalg.norm(x, axis=1, keepdims=True) * np.sqrt(x.shape[1])
    return x[np.random.default_rng(0).permutation(len(x))[:n]]


def _alignment(k: np.ndarray, y: np.ndarray) -> float:
    return float(y @ k @ y / (np.linalg.norm(k) * (y @ y)))


def run(out: Path, quick: bool = False) -> PaperResult:
    n_all = 200 if quick else 400
    n = n_all // 2
    indices = (1, 2, 4, 8, 16, 32, 64) if quick else (1, 2, 4, 8, 16, 32, 64, 128)
    net_indices = (1, 8, 64) if quick else (1, 4, 16, 64)
    x = _data(n_all)
    theta = np.asarray(kernel(NET, x, get="ntk"), np.float64)
    vecs = np.linalg.eigh(theta)[1][:, ::-1]
    targets = {k: np.where(vecs[:, k] >= 0, 1.0, -1.0) for k in indices}
    k_tr, k_te = theta[:n, :n], theta[n:, :n]
    lr = n / float(np.linalg.eigvalsh(k_tr)[-1])

    acc_exact, loss_exact = {}, {}
    for k, y in targets.items():
        predict = gradient_descent_mse(k_tr, y[:n], lr, diag_reg=1e-8)
        acc_exact[k] = float(np.mean(np.sign(predict(None, 0.0, 0.0, k_te)[1]) == y[n:]))
        loss_exact[k] = float(np.sum((predict(T_LOSS, 0.0) - y[:n]) ** 2) / np.sum(y[:n] ** 2))
    rho_acc = float(spearmanr(indices, [acc_exact[k] for k in indices])[0])
    rho_loss = float(spearmanr(indices, [loss_exact[k] for k in indices])[0])

    xs, xt = jnp.asarray(x[:n], jnp.float32), jnp.asarray(x[n:], jnp.float32)
    ys = jnp.asarray(np.stack([targets[k][:n] for k in net_indices]), jnp.float32)
    acc_net, loss_net, align0, align_t = {}, {}, {}, {}
    for width in WIDTHS:
        twin = finite(NET, width, out_dim=1)
        p0 = twin.init(jax.random.PRNGKey(0), x.shape[1:])
        centred = lambda p, z, twin=twin, p0=p0: twin.apply(p, z) - twin.apply(p0, z)  # noqa: E731
        lin = linearize(centred, p0)
        for name, f in (("net", centred), ("linearized", lin)):
            fit = jax.vmap(lambda y, f=f, p0=p0: descend(mse_loss(f, xs, y), p0, lr, STEPS))
            params, losses = jax.jit(fit)(ys)
            for j, k in enumerate(net_indices):
                p = jax.tree_util.tree_map(lambda a, j=j: a[j], params)
                acc_net[(width, name, k)] = float(np.mean(np.sign(np.asarray(f(p, xt))[:, 0]) == targets[k][n:]))
                loss_net[(width, name, k)] = float(losses[j, -1] / losses[j, 0])
                if name == "net":
                    ntk = np.asarray(empirical_ntk(twin.apply, p, xs, method="structured"), np.float64)
                    align_t[(width, k)] = _alignment(ntk, targets[k][:n])
        ntk0 = np.asarray(empirical_ntk(twin.apply, p0, xs, method="structured"), np.float64)
        align0.update({(width, k): _alignment(ntk0, targets[k][:n]) for k in net_indices})
    growth = {w: np.array([align_t[(w, k)] / align0[(w, k)] - 1 for k in net_indices]) for w in WIDTHS}
    grows = all(bool(np.all(g > 0)) for g in growth.values())
    lazier = bool(growth[WIDTHS[-1]].mean() < growth[WIDTHS[0]].mean())
    ok = rho_acc <= -RANK_CORR and rho_loss >= RANK_CORR and grows and lazier

    plt = pyplot()
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.5))
    ax[0].semilogx(indices, [acc_exact[k] for k in indices], "o-", label="exact NTK (t = inf)")
    for w, c in zip(WIDTHS, ("C1", "C2")):
        for name, mark in (("linearized", "s"), ("net", "^")):
            ax[0].semilogx(net_indices, [acc_net[(w, name, k)] for k in net_indices], mark, color=c,
                           mfc="none" if name == "net" else c, label=f"width {w} {name}")
    ax[0].set(xlabel="eigenvector index k", ylabel="test accuracy", title="target sign(v_k)")
    ax[0].legend(fontsize=7)
    ax[1].loglog(indices, [loss_exact[k] for k in indices], "o-")
    ax[1].set(xlabel="eigenvector index k", ylabel="train loss / initial", title=f"exact NTK after {T_LOSS} steps")
    for w, c in zip(WIDTHS, ("C1", "C2")):
        ax[2].semilogx(net_indices, [align0[(w, k)] for k in net_indices], "o:", color=c, label=f"width {w} initial")
        ax[2].semilogx(net_indices, [align_t[(w, k)] for k in net_indices], "s-", color=c, label=f"width {w} trained")
    ax[2].set(xlabel="eigenvector index k", ylabel="alignment y.Theta.y / |Theta| |y|^2", title="empirical NTK")
    ax[2].legend(fontsize=7)
    plot = save(fig, out, f"{NAME}.png")
    fmt = lambda d, ks: ", ".join(f"{k}: {d[k]:.3g}" for k in ks)  # noqa: E731
    moved = "; ".join(f"width {w}: " + ", ".join(f"{k}: {g:+.0%}" for k, g in zip(net_indices, growth[w]))
                      for w in WIDTHS)
    diff = "; ".join(f"width {w}: " + ", ".join(
        f"{k}: {acc_net[(w, 'net', k)] - acc_net[(w, 'linearized', k)]:+.3f} (train loss x "
        f"{loss_net[(w, 'net', k)] / loss_net[(w, 'linearized', k)]:.2f})" for k in net_indices) for w in WIDTHS)
    return PaperResult(
        NAME, PAPER, CLAIM,
        measured=(f"exact NTK test accuracy by k {fmt(acc_exact, indices)} (Spearman {rho_acc:.2f}); train loss "
                  f"after {T_LOSS} steps {fmt(loss_exact, indices)} (Spearman {rho_loss:.2f}); alignment change in "
                  f"training by k: {moved}; net minus linearized test accuracy by k (net / linearized train loss): "
                  f"{diff}"),
        expected=(f"Spearman(accuracy, k) <= -{RANK_CORR:g}; Spearman(loss, k) >= {RANK_CORR:g}; alignment grows "
                  "during training for every k and width, less at the larger width"),
        passed=bool(ok), plot=plot,
        numbers={"indices": list(indices), "acc_exact": acc_exact, "loss_exact": loss_exact, "rho_acc": rho_acc,
                 "rho_loss": rho_loss, "net_indices": list(net_indices),
                 "widths": list(WIDTHS),
                 "acc_finite": {f"{w} {a} {k}": v for (w, a, k), v in acc_net.items()},
                 "loss_finite": {f"{w} {a} {k}": v for (w, a, k), v in loss_net.items()},
                 "alignment_initial": {f"{w} {k}": v for (w, k), v in align0.items()},
                 "alignment_trained": {f"{w} {k}": v for (w, k), v in align_t.items()}, "lr": lr},
        caveats=("eigenvectors of the exact NTK Gram on the 400 (quick: 200) images stand for its eigenfunctions; "
                 "one network per width (one initialisation), full-batch gradient descent on the MSE, NTK "
                 "parametrization, learning rate n / lambda_max of the exact NTK; the paper uses CIFAR-10 and "
                 "convolutional nets."))
