"""Tsilivis & Kempe (NeurIPS 2022): adversarial perturbations from the NTK transfer to trained wide networks.

"What can the neural tangent kernel tell us about adversarial robustness?": the NTK predictor (kernel
regression with the network's NTK, the infinitely wide network trained to convergence) is a model whose
input gradients are available in closed form, and perturbations crafted against it transfer to the finite
networks it describes.

Checked on scikit-learn digits (10 classes, one-hot targets; 300 training and 300 test images, centred and put
on the sphere of radius 8): the NTK predictor f(x) = Theta(x, X) Theta(X, X)^-1 Y of a two-hidden-layer ReLU net
is differentiated in x through kernelalg's JAX kernel; FGSM (x + eps sign grad_x |f(x) - y|^2) and PGD (10
steps of eps / 4, projected on the L-inf ball of radius eps) are computed on it, never on the networks. Three
centred networks f(theta, x) - f(theta_0, x) of width 1024 (NTK parametrization; centring removes the random
initial function, so that the NTK predictor is their infinite-width limit; quick mode: two of width 512) are
trained by full-batch gradient descent on the MSE (400 steps at learning rate N / lambda_max of the exact NTK).
Verdict: averaged over the networks and eps in {0.3, 0.6}, the test accuracy drop under the NTK-crafted PGD
perturbation is at least 3 times the drop under random sign perturbations of the same L-inf and L2 norm, and at
least half the drop under white-box FGSM on each network itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from kernelalg.backends._compile import compile as compile_kernel
from kernelalg.finite._train import descend, mse_loss
from kernelalg.finite._twins import finite
from kernelalg.layers._activations import Relu
from kernelalg.layers._dense import Dense
from kernelalg.papers._common import pyplot, save
from kernelalg.papers._result import PaperResult

NAME = "tsilivis2022"
PAPER = "Tsilivis & Kempe, NeurIPS 2022 (NTK and adversarial robustness)"
#: What this gallery found (docs/papers.md): the claim reproduces.
REPRODUCES = True
CLAIM = ("Adversarial perturbations computed from the NTK predictor (no access to the network) transfer to "
         "trained wide networks: they lower the networks' accuracy far more than random perturbations of the "
         "same norm, and comparably to white-box attacks on the networks themselves.")
NET = Dense(1.4, 0.1) >> Relu() >> Dense(1.4, 0.1) >> Relu() >> Dense(1.4, 0.1)
#: Tolerances of the verdict (see the module docstring).
OVER_RANDOM, OF_WHITEBOX = 3.0, 0.5


def _data(quick: bool) -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits
    d = load_digits()
    x = d.data.astype(np.float64)
    x = (x - x.mean(0)) / 4.0
    x = x / np.linalg.norm(x, axis=1, keepdims=True) * np.sqrt(x.shape[1])
    idx = np.random.default_rng(0).permutation(len(x))
    n = 150 if quick else 300
    tr, te = idx[:n], idx[n:2 * n]
    return x[tr], d.target[tr], x[te], d.target[te]


def _attacks(predict: Callable, x: np.ndarray, y: np.ndarray, eps: float, pgd_steps: int = 10
             ) -> dict[str, np.ndarray]:
    """FGSM and PGD (L-inf) on ``predict`` with the squared error to the one-hot labels; random signs."""
    t = jnp.asarray(np.eye(10)[y], jnp.float32)
    grad = jax.jit(jax.grad(lambda z: jnp.sum((predict(z) - t) ** 2)))
    x0 = jnp.asarray(x, jnp.float32)
    fgsm = x0 + eps * jnp.sign(grad(x0))
    z = x0
    for _ in range(pgd_steps):
        z = jnp.clip(z + eps / 4 * jnp.sign(grad(z)), x0 - eps, x0 + eps)
    rand = x0 + eps * jnp.asarray(np.random.default_rng(7).choice([-1.0, 1.0], size=x.shape), jnp.float32)
    return {"fgsm": np.asarray(fgsm), "pgd": np.asarray(z), "random": np.asarray(rand)}


def run(out: Path, quick: bool = False) -> PaperResult:
    x_tr, y_tr, x_te, y_te = _data(quick)
    width, seeds, steps = (512, 2, 300) if quick else (1024, 3, 400)
    epsilons = (0.3, 0.6)
    ntk = compile_kernel(NET, "ntk")
    k_tr = np.asarray(ntk(x_tr), np.float64)
    onehot = np.eye(10)[y_tr]
    alpha = np.linalg.solve(k_tr + 1e-8 * np.trace(k_tr) / len(k_tr) * np.eye(len(k_tr)), onehot)
    xk, ak = jnp.asarray(x_tr, jnp.float32), jnp.asarray(alpha, jnp.float32)

    def kernel_predict(z: jax.Array) -> jax.Array:
        return ntk(z, xk) @ ak

    perturbed = {eps: _attacks(kernel_predict, x_te, y_te, eps) for eps in epsilons}

    twin = finite(NET, width, out_dim=10)
    lr = len(x_tr) * 10 / float(np.linalg.eigvalsh(k_tr)[-1])
    xs, ys = jnp.asarray(x_tr, jnp.float32), jnp.asarray(onehot, jnp.float32)
    inits = jax.vmap(lambda k: twin.init(k, x_tr.shape[1:]))(jax.random.split(jax.random.PRNGKey(0), seeds))

    def centred(p0: list) -> Callable:
        return lambda p, z: twin.apply(p, z) - twin.apply(p0, z)

    # training the centred net on y is training the net on y + f_0(X): f_0 is evaluated once
    train = jax.jit(jax.vmap(lambda p0: descend(mse_loss(twin.apply, xs, ys + twin.apply(p0, xs)), p0, lr, steps)))
    params, losses = train(inits)
    pick = lambda tree, i: jax.tree_util.tree_map(lambda a: a[i], tree)  # noqa: E731
    nets = [(pick(params, i), pick(inits, i)) for i in range(seeds)]

    def accuracy(fn: Callable, z: np.ndarray) -> float:
        return float((np.asarray(fn(jnp.asarray(z, jnp.float32))).argmax(1) == y_te).mean())

    acc = {"kernel": {"clean": accuracy(kernel_predict, x_te)}}
    for eps, pert in perturbed.items():
        acc["kernel"].update({f"{a} {eps}": accuracy(kernel_predict, z) for a, z in pert.items()})
    for i, (p, p0) in enumerate(nets):
        apply = jax.jit(lambda z, p=p, f=centred(p0): f(p, z))
        row = {"clean": accuracy(apply, x_te)}
        for eps, pert in perturbed.items():
            row.update({f"{a} {eps}": accuracy(apply, z) for a, z in pert.items()})
            row[f"white-box {eps}"] = accuracy(apply, _attacks(apply, x_te, y_te, eps, pgd_steps=0)["fgsm"])
        acc[f"net {i}"] = row
    drop = {kind: np.mean([[acc[f"net {i}"]["clean"] - acc[f"net {i}"][f"{kind} {eps}"] for eps in epsilons]
                           for i in range(seeds)]) for kind in ("fgsm", "pgd", "random", "white-box")}
    ok = drop["pgd"] >= OVER_RANDOM * max(drop["random"], 0.0) and drop["pgd"] >= OF_WHITEBOX * drop["white-box"]

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    kinds = ("random", "fgsm", "pgd", "white-box")
    for j, eps in enumerate(epsilons):
        vals = [np.mean([acc[f"net {i}"][f"{k} {eps}"] for i in range(seeds)]) for k in kinds]
        ax.bar(np.arange(len(kinds)) + 0.38 * j, vals, width=0.36, label=f"eps = {eps}")
    clean = np.mean([acc[f"net {i}"]["clean"] for i in range(seeds)])
    ax.axhline(clean, color="k", ls=":", label=f"clean {clean:.3f}")
    ax.set_xticks(np.arange(len(kinds)) + 0.19)
    ax.set_xticklabels(["random signs", "NTK FGSM", "NTK PGD", "white-box FGSM"])
    ax.set(ylabel="test accuracy of the trained nets", title=f"Transfer from the NTK predictor, width {width}")
    ax.legend(fontsize=8)
    plot = save(fig, out, f"{NAME}.png")
    mean_of = lambda key: np.mean([acc[f"net {i}"][key] for i in range(seeds)])  # noqa: E731
    detail = "; ".join(f"eps {eps}: random {mean_of(f'random {eps}'):.3f}, NTK FGSM {mean_of(f'fgsm {eps}'):.3f}, "
                       f"NTK PGD {mean_of(f'pgd {eps}'):.3f}, white-box FGSM {mean_of(f'white-box {eps}'):.3f}"
                       for eps in epsilons)
    return PaperResult(
        NAME, PAPER, CLAIM,
        measured=(f"nets (width {width}, {seeds} seeds, final train loss {float(losses[:, -1].mean()):.2g}): clean "
                  f"{clean:.3f}; {detail}; mean drops: random {drop['random']:.3f}, NTK FGSM {drop['fgsm']:.3f}, "
                  f"NTK PGD {drop['pgd']:.3f}, white-box {drop['white-box']:.3f}; kernel predictor clean "
                  f"{acc['kernel']['clean']:.3f}, under its own PGD {acc['kernel'][f'pgd {epsilons[-1]}']:.3f} "
                  f"(eps {epsilons[-1]})"),
        expected=(f"NTK-PGD drop >= {OVER_RANDOM:g} x random drop and >= {OF_WHITEBOX:g} x white-box FGSM drop "
                  f"(means over nets and eps {epsilons})"),
        passed=bool(ok), plot=plot,
        numbers={"width": width, "seeds": seeds, "steps": steps, "lr": lr, "epsilons": list(epsilons),
                 "accuracy": acc, "drops": {k: float(v) for k, v in drop.items()},
                 "final_train_loss": np.asarray(losses[:, -1]).tolist()},
        caveats=("centred networks (f_theta - f_theta0), digits, MSE training, full-batch gradient descent, NTK "
                 "parametrization (the lazy regime, where "
                 "the NTK describes the net: a transfer from the NTK to feature-learning nets is not tested); the "
                 "white-box reference is one-step FGSM on each net; eps in units of the normalized pixels (each "
                 "image has norm 8, per-pixel standard deviation about 1)."))
