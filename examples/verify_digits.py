"""Finite-width corrections on real data: the O(1/width) bias of a deep ReLU network on scikit-learn digits.

For networks with two or more hidden nonlinear layers the Monte Carlo mean of the NNGP/NTK over random
networks of width n differs from the infinite-width kernel by b/n + O(1/n^2) (Dyer & Gur-Ari 2020; Hanin &
Nica 2020). This script measures that on 16 digits images (64 pixels, centred, |x|^2/d = 1):

1. ``ka.convergence`` of a ReLU network with 4 hidden layers at widths 8..64 (2048 networks each): the
   relative error |E_n - K|_F / |K|_F, its Monte Carlo noise floor |SE_n|_F / |K|_F, and the bias with the
   noise removed in quadrature;
2. the log-log slope of that bias against the width (theory: -1 asymptotically; printed, not tested, since
   at these widths the O(1/n^2) term still bends the curve: measured about -1.15 (NNGP) and -0.7 (NTK));
3. the check: ``ka.verify`` at widths 32 and 64, the width-extrapolated estimate 2 E_64 - E_32 (Richardson)
   entry by entry within 5 standard errors of the exact kernel (the raw NNGP mean at width 32 is off by
   3.2%, above its 1.9% noise floor).

Plots go to report/verify_digits/ (gitignored). Needs scikit-learn (pip install -e ".[data]").
Run: python examples/verify_digits.py   (about 30 s on 2 CPU cores; exits 0 iff the check passes)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import kernelalg as ka

WIDTHS = (8, 16, 32, 64)
SAMPLES = 2048
DEPTH = 4  # hidden layers: the bias grows with depth (about depth / width), which makes it measurable


def digits(n: int = 16, seed: int = 0) -> np.ndarray:
    from sklearn.datasets import load_digits
    data = load_digits().data
    x = data[np.random.default_rng(seed).choice(len(data), n, replace=False)].astype(np.float64)
    x -= data.mean(0)
    return x / np.linalg.norm(x, axis=1, keepdims=True) * np.sqrt(x.shape[1])


def main() -> int:
    t0 = time.perf_counter()
    out = Path("report") / "verify_digits"
    out.mkdir(parents=True, exist_ok=True)
    net = ka.serial(*[ka.Dense(1.5, 0.05), ka.Relu()] * DEPTH, ka.Dense(1.5, 0.05))
    x = digits()
    exact = ka.kernel(net, x)
    conv = ka.convergence(net, x.astype(np.float32), widths=WIDTHS, samples=SAMPLES, key=0, exact=exact)
    conv.plot(str(out / "convergence.png"))
    inv = 1.0 / np.asarray(WIDTHS, dtype=float)
    for name in ("nngp", "ntk"):
        err, noise = conv.rel_error[name], conv.rel_noise[name]
        # E |E_n - K|_F^2 = |bias|_F^2 + |SE|_F^2: the bias with the Monte Carlo noise removed in quadrature
        bias = np.sqrt(np.maximum(err ** 2 - noise ** 2, 0.0))
        print(f"{name}: width  relative error  noise floor  bias (noise removed)")
        for w, e, s, b in zip(WIDTHS, err, noise, bias):
            print(f"{name}: {w:5d}  {e:14.4f}  {s:11.4f}  {b:20.4f}")
        biased = err > 1.5 * noise  # widths where the bias stands out of the Monte Carlo noise
        if biased.sum() >= 2:  # shown, not tested: at widths 8-32 the O(1/n^2) term still bends the curve
            slope = np.polyfit(np.log(inv[biased]), np.log(bias[biased]), 1)[0]
            print(f"{name}: bias ~ width^-{slope:.2f} over widths {np.asarray(WIDTHS)[biased].tolist()} "
                  f"(theory: -> 1 as the width grows); fitted bias {conv.bias_coefficient[name]:.2f}/n")
        else:
            print(f"{name}: the bias is within the noise at all but {int(biased.sum())} widths (no slope fitted)")
    res = ka.verify(net, x.astype(np.float32), widths=WIDTHS[-2:], samples=SAMPLES, key=1, exact=exact)
    res.plot(str(out / "verify.png"))
    print(res.summary())
    ok = res.passed
    print(f"{'PASSED' if ok else 'FAILED'} in {time.perf_counter() - t0:.0f} s; plots in {out}/")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
