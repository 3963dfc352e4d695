"""Noci et al. (2024), super consistency: under muP the sharpness follows one width-independent trajectory.

"Super Consistency of Neural Network Landscapes and Learning Rate Transfer" (Noci, Meterez, Hofmann & Orvieto,
NeurIPS 2024): under muP the largest Hessian eigenvalue of the training loss evolves in the same way at every
width and progressively sharpens to the edge of stability 2/lr (Cohen et al. 2021), while under the NTK
parametrization training is lazy and the sharpness stays at its initial value lambda_max(Theta)/N.

Checked, on the digits (MSE, full-batch SGD, one initialisation per width, top eigenvalue by Lanczos on
Hessian-vector products, ``ka.train(record={"sharpness": ...})``): (1) muP: the relative spread
(max - min) / mean of the sharpness across widths stays below 25 % at every recorded step; (2) muP: the
sharpness at the end is at least twice its initial value and within 0.5 - 1.2 x 2/lr; (3) NTK parametrization,
same networks and rate: end / start within 0.9 - 1.1 (no progressive sharpening).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kernelalg.finite._trainer import train
from kernelalg.finite._twins import finite
from kernelalg.layers._activations import Relu
from kernelalg.layers._dense import Dense
from kernelalg.papers._common import pyplot, save
from kernelalg.papers._result import PaperResult

NAME = "noci2024"
PAPER = "Noci, Meterez, Hofmann & Orvieto, NeurIPS 2024 (super consistency)"
#: What this gallery found (docs/papers.md): the claim reproduces.
REPRODUCES = True
CLAIM = ("Under muP the top Hessian eigenvalue follows one width-independent trajectory that sharpens to the "
         "edge of stability 2/lr; under the NTK parametrization training is lazy and the sharpness stays at its "
         "initial value.")
#: Learning rate (muP's per-layer rates scale it by width; NTK parametrization: the same rate for every layer).
LR = 40.0
#: Tolerances of the verdict (see the module docstring).
SPREAD, SHARPEN, EOS, FLAT = 0.25, 2.0, (0.5, 1.2), (0.9, 1.1)


def _digits(n: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    d = load_digits()
    x = d.data[:n].astype(np.float32) / 16.0
    return x - x.mean(0), np.eye(10, dtype=np.float32)[d.target[:n]]


def _trajectory(param: str, width: int, x: np.ndarray, y: np.ndarray, steps: list[int]) -> np.ndarray:
    net = Dense(1.4, 0.1) >> Relu() >> Dense(1.4, 0.1) >> Relu() >> Dense(1.0, 0.1)
    twin = finite(net, width, out_dim=10, parametrization=param)
    run = train(twin, twin.init(0, x.shape[1:]), x, y, steps[-1], LR, lr_rule="sgd" if param == "mup" else None,
                record={"sharpness": steps}, lanczos_iters=20)
    return np.asarray(run["sharpness"]["eigenvalues"][:, 0], np.float64)


def run(out: Path, quick: bool = False) -> PaperResult:
    n, widths = (64, (128, 512)) if quick else (128, (256, 1024, 4096))
    steps = [0, 10, 20, 30, 40] if quick else [0, 10, 20, 40, 60, 80, 100, 120]
    x, y = _digits(n)
    curves = {p: np.array([_trajectory(p, w, x, y, steps) for w in widths]) for p in ("mup", "ntk")}
    mup, ntk = curves["mup"], curves["ntk"]
    spread = (mup.max(0) - mup.min(0)) / mup.mean(0)
    sharpen = mup[:, -1] / mup[:, 0]
    eos = mup[:, -1] / (2 / LR)
    flat = ntk[:, -1] / ntk[:, 0]
    ok = (spread.max() < SPREAD and (sharpen >= SHARPEN).all() and ((eos >= EOS[0]) & (eos <= EOS[1])).all()
          and ((flat >= FLAT[0]) & (flat <= FLAT[1])).all())

    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for k, (p, c) in enumerate(curves.items()):
        for w, row in zip(widths, c):
            ax[k].plot(steps, row, "o-", label=f"width {w}")
        ax[k].axhline(2 / LR, color="k", ls=":", label="2 / lr")
        ax[k].set(xlabel="SGD step", title=f"{p}: top Hessian eigenvalue", yscale="log")
        ax[k].legend(fontsize=8)
    plot = save(fig, out, f"{NAME}.png")
    fmt = lambda a: ", ".join(f"{v:.2f}" for v in a)  # noqa: E731
    return PaperResult(
        NAME, PAPER, CLAIM,
        measured=(f"muP: spread across widths {widths} at most {spread.max():.0%} (step "
                  f"{steps[int(spread.argmax())]}), end / start {fmt(sharpen)}, end x lr / 2 {fmt(eos)}; "
                  f"NTK: end / start {fmt(flat)}"),
        expected=(f"muP spread < {SPREAD:.0%} at every step, end / start >= {SHARPEN:g}, end x lr / 2 in "
                  f"[{EOS[0]:g}, {EOS[1]:g}]; NTK end / start in [{FLAT[0]:g}, {FLAT[1]:g}]"),
        passed=bool(ok), plot=plot,
        numbers={"widths": list(widths), "steps": steps, "lr": LR, "mup": mup.tolist(), "ntk": ntk.tolist(),
                 "mup_spread": spread.tolist()},
        caveats=(f"one initialisation per width, {n} digits, MSE, full-batch SGD at lr {LR:g}; two-hidden-layer ReLU "
                 "nets; under NTK the sharpness also agrees across widths (on the flat lazy curve), so the "
                 "check separates the parametrizations by sharpening, not by consistency."))
