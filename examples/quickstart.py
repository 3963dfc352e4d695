"""Quickstart: closed form, fast evaluation and a Monte Carlo check of one architecture.

1. Build a network (Python API, or the same expression as a string, as the command line reads it).
2. Print its NNGP and NTK in closed form (sympy) and evaluate them at theory.md's reference point.
3. Evaluate the Gram matrices on data (jitted JAX).
4. Check them against 64 random finite networks per width (Monte Carlo with standard errors).

Run: python examples/quickstart.py   (about 20 s on 2 CPU cores; prints PASSED at the end)
"""

from __future__ import annotations

import math
import time

import numpy as np
import sympy as sp

import kernelalg as ka


def main() -> int:
    t0 = time.perf_counter()
    # 1. The same network from Python and from a string (the command line's safe parser; never eval).
    net = ka.Dense(2 ** 0.5) >> ka.Relu() >> ka.Dense(2 ** 0.5) >> ka.Relu() >> ka.Dense(2 ** 0.5)
    same = ka.parse("repeat(Dense(2 ** 0.5) >> Relu(), 2) >> Dense(2 ** 0.5)")
    assert repr(net) == repr(same)

    # 2. Closed form: inputs enter through q1 = |x|^2/d, q2 = |x'|^2/d, c = x.x'/d.
    sym = ka.symbolic(ka.Dense(1.0) >> ka.Relu() >> ka.Dense(1.0))
    print("two-layer ReLU NNGP:", sp.simplify(sym.nngp))
    deep = ka.symbolic(net)
    at = {ka.Q1: 1, ka.Q2: 1, ka.C: sp.Rational(1, 2)}
    nngp, ntk = float(deep.nngp.subs(at)), float(deep.ntk.subs(at))
    print(f"3-layer ReLU at |x|^2/d = 1, x.x'/d = 0.5: NNGP {nngp:.6f} (published 1.367811), "
          f"NTK {ntk:.6f} (published 2.702959)")
    assert abs(nngp - 1.367811) < 1e-6 and abs(ntk - 2.702959) < 1e-6

    # 3. Gram matrices on 8 points of the sphere of radius sqrt(d) in R^5 (so |x|^2/d = 1).
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 5))
    x *= math.sqrt(5) / np.linalg.norm(x, axis=1, keepdims=True)
    k = ka.kernel(net, x)
    print("NTK Gram matrix, first row:", np.round(np.asarray(k.ntk)[0], 4))
    print("NTK diagonal = L W^2 |x|^2/d = 6:", np.round(np.diag(np.asarray(k.ntk)), 6))

    # 4. Monte Carlo over finite networks (widths 256 and 512, width-extrapolated), every entry within
    #    5 standard errors. Two hidden layers: the mean at width n has an O(1/n) bias, hence two widths.
    res = ka.verify(net, x.astype(np.float32), width=256, samples=64, key=0)
    print(res.summary())
    print(f"{'PASSED' if res.passed else 'FAILED'} in {time.perf_counter() - t0:.0f} s")
    return 0 if res.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
