"""Before/after timing of the restructuring (public API only, so it runs on any kernelalg version).

    python benchmarks/bench_restructure.py            # prints one JSON line

Workloads (float32, NNGP + NTK, x2 = None, as in benchmarks/RESULTS.md): dense depth 20, ReLU, N = 2000,
d = 64; CNN-GAP: 64 images 16x16x3, 3x [Conv 3x3 SAME + ReLU], GlobalAvgPool, Dense. Reports the first
call (build + compile + run) and the median of 3 steady calls of each.
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np

import kernelalg as ka


def timed(fn) -> float:
    t0 = time.perf_counter()
    out = fn()
    np.asarray(out.ntk).sum()
    return time.perf_counter() - t0


def main() -> None:
    rng = np.random.default_rng(0)
    dense = ka.serial(*[ka.Dense(1.5, 0.05), ka.Relu()] * 20, ka.Dense(1.5, 0.05))
    x = rng.standard_normal((2000, 64)).astype(np.float32)
    conv = ka.serial(*[ka.Conv((3, 3), W_std=1.5, b_std=0.05, padding="SAME"), ka.Relu()] * 3, ka.GlobalAvgPool(),
                     ka.Dense(1.5, 0.05))
    imgs = rng.standard_normal((64, 16, 16, 3)).astype(np.float32)
    res = {}
    for name, net, data in (("dense_depth20_n2000", dense, x), ("cnn_gap_64x16x16", conv, imgs)):
        f = ka.compile(net, ("nngp", "ntk"))
        first = timed(lambda: f(data))
        res[name] = {"first_s": first, "steady_s": statistics.median(timed(lambda: f(data)) for _ in range(3))}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
