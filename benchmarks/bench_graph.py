"""Aggregate's two kernel paths: dense patterns (O(N^3) per graph pair) vs edge lists (O(N E) per pair).

    python benchmarks/bench_graph.py [--nodes 64 128 256] [--degree 4] [--batch 4]

Random graphs of N nodes with about ``degree`` arcs per node (self loops included), the same graphs as 0/1
adjacency and as edge lists; network Aggregate >> Dense >> Relu >> Aggregate >> GlobalAvgPool >> Dense in float64,
kernel of a batch with itself. Reports the steady time (median of 3 after a compiling call) of each path and
the largest relative difference between them. Figures depend on the machine; none of them is asserted by a test.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import kernelalg as ka


def graphs(n: int, degree: int, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, n, 4))
    a = np.maximum((rng.random((batch, n, n)) < (degree - 1) / n).astype(float), np.eye(n))
    e = int(a.sum(axis=(1, 2)).max())
    edges = -np.ones((batch, e, 2), np.int32)
    for b in range(batch):
        t, h = np.nonzero(a[b])
        edges[b, :len(t), 0], edges[b, :len(t), 1] = t, h
    return x, a, edges


def steady(f) -> float:
    jax.block_until_ready(f())
    times = []
    for _ in range(3):
        t = time.perf_counter()
        jax.block_until_ready(f())
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--degree", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    a = ap.parse_args()
    jax.config.update("jax_enable_x64", True)
    net = ka.Aggregate() >> ka.Dense(1.5, 0.1) >> ka.Relu() >> ka.Aggregate() >> ka.GlobalAvgPool() >> ka.Dense()
    f = ka.compile(net, "ntk")
    print(f"{'nodes':>6} {'arcs':>6} {'dense s':>9} {'sparse s':>9} {'max rel diff':>12}")
    for n in a.nodes:
        x, adj, edges = graphs(n, a.degree, a.batch)
        gd, gs = ka.Graphs(x, adj), ka.Graphs(x, edges)
        td, ts = steady(lambda: f(gd)), steady(lambda: f(gs))
        kd, ks = np.asarray(f(gd)), np.asarray(f(gs))
        print(f"{n:>6} {edges.shape[1]:>6} {td:>9.4f} {ts:>9.4f} {np.max(np.abs(kd - ks)) / np.max(np.abs(kd)):>12.1e}")


if __name__ == "__main__":
    main()
