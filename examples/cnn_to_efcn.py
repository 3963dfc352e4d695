"""CNN -> eFCN on scikit-learn digits (d'Ascoli, Sagun, Bruna & Biroli, NeurIPS 2019).

Trains a small CNN (Conv 3x3 SAME >> Relu >> Conv 3x3 SAME >> Relu >> Flatten >> Dense(10)) for t_w of a budget of
T SGD steps, embeds it into its equivalent fully connected network (``kernelalg.finite.efcn``: the same function,
each conv a sparse dense matrix) and trains the eFCN for the rest of the budget without the convolutional
constraint. Compared on held-out digits with the CNN trained for the whole budget and with an FCN of the eFCN's
architecture trained from scratch. Also printed: how much of the eFCN's weight leaves the conv stencil, and the
kernel distances between the empirical NTKs (CNN and eFCN) and the exact CNN / dense kernels.

    python examples/cnn_to_efcn.py            # a few minutes on 2 CPU cores
    python examples/cnn_to_efcn.py --quick    # seconds (the test runs this)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kernelalg.papers._dascoli import digits_images, needle


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tiny run (for the test)")
    ap.add_argument("--seeds", type=int, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        channels, steps, t_w, n_train, seeds, lr = 4, 60, 20, 200, 1, 0.5
    else:
        channels, steps, t_w, n_train, seeds, lr = 8, 600, 150, 1000, 3, 0.5
    seeds = args.seeds or seeds
    data = digits_images(n_train, 500)
    t0 = time.perf_counter()
    runs = [needle(channels, steps, t_w, lr, data, seed=s, ntk_points=0 if (s or args.quick) else 16)
            for s in range(seeds)]
    rows = {"CNN, whole budget": "cnn", f"CNN at t_w = {t_w}": "cnn_tw", "eFCN (CNN at t_w, then FC)": "efcn",
            "FCN from scratch": "fcn"}
    print(f"digits: {n_train} train / 500 test images, {channels}-channel CNN, T = {steps} SGD steps "
          f"(lr {lr}, momentum 0.9, batch 64), {seeds} seed(s)")
    out = {}
    for label, f in rows.items():
        v = np.array([getattr(r, f) for r in runs])
        out[f] = float(v.mean())
        print(f"  {label:<30} test accuracy {v.mean():.3f}  (per seed {', '.join(f'{a:.3f}' for a in v)})")
    off = np.mean([r.off_stencil for r in runs])
    print(f"  eFCN weight off the stencil after training: {off:.2e} of the squared norm")
    for name, value in runs[0].ntk.items():
        print(f"  {name:<32} {value:.4f}")
    print(f"[{time.perf_counter() - t0:.0f} s]")
    return out


if __name__ == "__main__":
    main()
