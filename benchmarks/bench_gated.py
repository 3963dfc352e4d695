"""Gated recurrent kernels (GRU, LSTM with input-driven gates): Monte Carlo agreement up to width 2048, and the
cost per time pair against the Elman kernel.

    python benchmarks/bench_gated.py mc      # widths 128..2048, lengths 1..20, NNGP and NTK (about 30 min, 2 cores)
    python benchmarks/bench_gated.py cost    # seconds per (pair x time pair): Elman vs GRU vs LSTM (a few min)

``mc``: six univariate sequences of lengths 1, 4, 8, 12, 16, 20 (one batch, front padded); the exact kernel in
float64 with 65 points per gate weight and bias (its quadrature error, against 129 points, is reported);
finite-width twins in float32, S independent draws per width; empirical NNGP V^2 r.r'/n (readout integrated
out) and NTK J J^T of one readout unit (per-sequence gradients). Per width: the largest |z| = |mean - exact| / SE
over the 21 distinct pairs, the largest relative error |mean - exact| / exact, and the Richardson estimate
2 E_2n - E_n of the last two widths with its largest |z|. The relative error must shrink with the width until
it reaches the Monte Carlo noise; the Richardson z-scores test the O(1/n) bias model.

``cost``: steady time (median of 3 calls after the first) of ka.kernel for N = M = 8 sequences of length T = 50
(float32 and float64), divided by N M T^2: Elman (Recurrent(Erf)) against GRU/LSTM with 65 points (one gate
weight, no gate bias: 65 nodes) and 17 points with a gate bias (289 nodes). Results: benchmarks/results/gated.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import kernelalg as ka

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "gated.json"
HP = dict(W=1.2, U=0.8, b=0.3, gU=1.1, gb=0.6, V=1.1)
LENGTHS = (1, 4, 8, 12, 16, 20)
WIDTHS = (128, 256, 512, 1024, 2048)
SAMPLES = {128: 800, 256: 600, 512: 400, 1024: 240, 2048: 160}


def layer(cell: str, readout: str, quadrature: int = 65) -> ka.Layer:
    return getattr(ka, cell)(ka.Erf(), HP["W"], HP["U"], HP["b"], gate_U_std=HP["gU"], gate_b_std=HP["gb"],
                             readout=readout, quadrature=quadrature)


def sequences(dtype) -> ka.Sequences:
    rng = np.random.default_rng(0)
    return ka.Sequences.from_list([rng.normal(size=(n, 1)) for n in LENGTHS], dtype=dtype)


def monte_carlo(lay: ka.Layer, x: ka.Sequences, width: int, samples: int, seed: int) -> list[np.ndarray]:
    """Per-draw (NNGP, NTK) of lay >> Dense(V) at one width: arrays (samples, N, N)."""
    init, apply, out_shape = lay.finite(dict(lay.params), dict(lay.static), x.shape[1:], width)
    xs, ms, v = jnp.asarray(x.x), jnp.asarray(x.mask), HP["V"]

    def one(key):
        k1, k2 = jax.random.split(key)
        params = {"rnn": init(k1), "v": jax.random.normal(k2, out_shape[-1:])}
        flat, unravel = ravel_pytree(params)

        def f(fl, xi, mi):
            p = unravel(fl)
            return v * apply(p["rnn"], ka.Sequences._raw(xi[None], mi[None]))[0] @ p["v"] / jnp.sqrt(out_shape[-1])
        jac = jax.vmap(jax.grad(f), (None, 0, 0))(flat, xs, ms)
        r = apply(params["rnn"], x)
        return v**2 * r @ r.T / out_shape[-1], jac @ jac.T

    chunk = max(1, min(64, int(4e8 // (8 * len(LENGTHS) * width * width))))
    run = jax.jit(jax.vmap(one))
    keys = jax.random.split(jax.random.PRNGKey(seed), samples)
    outs = [run(keys[i:i + chunk]) for i in range(0, samples, chunk)]
    return [np.concatenate([np.asarray(o[j], np.float64) for o in outs])[:samples] for j in (0, 1)]


def bench_mc() -> dict:
    x64, x32 = sequences(np.float64), sequences(np.float32)
    iu = np.triu_indices(len(LENGTHS))
    res = {}
    for cell in ("GRU", "LSTM"):
        for readout in ("last", "mean"):
            lay = layer(cell, readout)
            err = ka.gate_quadrature_error(lay >> ka.Dense(HP["V"]), x64)
            exact = {"nngp": np.asarray(err.coarse.nngp), "ntk": np.asarray(err.coarse.ntk)}
            rows, means = [], {}
            for i, n in enumerate(WIDTHS):
                t0 = time.time()
                draws = monte_carlo(lay, x32, n, SAMPLES[n], seed=100 + i)
                row = {"width": n, "samples": SAMPLES[n], "seconds": round(time.time() - t0, 1)}
                for name, d in zip(("nngp", "ntk"), draws):
                    mu, se = d.mean(0), d.std(0, ddof=1) / np.sqrt(len(d))
                    means[name, n] = (mu, se)
                    ex = exact[name]
                    row[name + "_max_abs_z"] = float(np.max(np.abs((mu - ex) / se)[iu]))
                    row[name + "_max_rel_err"] = float(np.max(np.abs(mu - ex)[iu] / np.abs(ex)[iu]))
                    row[name + "_median_rel_se"] = float(np.median(se[iu] / np.abs(ex)[iu]))
                rows.append(row)
                print(cell, readout, row, flush=True)
            rich = {}
            for name in ("nngp", "ntk"):
                (e1, s1), (e2, s2) = means[name, WIDTHS[-2]], means[name, WIDTHS[-1]]
                r, se = 2 * e2 - e1, np.sqrt(4 * s2**2 + s1**2)
                rich[name + "_max_abs_z"] = float(np.max(np.abs((r - exact[name]) / se)[iu]))
                rich[name + "_max_rel_err"] = float(np.max(np.abs(r - exact[name])[iu] / np.abs(exact[name])[iu]))
            res[f"{cell}_{readout}"] = {"widths": rows, "richardson_1024_2048": rich,
                                        "quadrature_rel_err": {"nngp": err.nngp_rel, "ntk": err.ntk_rel}}
            print(cell, readout, "Richardson", rich, "quadrature", res[f"{cell}_{readout}"]["quadrature_rel_err"],
                  flush=True)
    return res


def _steady(fn, x) -> float:
    np.asarray(fn(x).ntk)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        np.asarray(fn(x).ntk)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_cost(n: int = 8, t: int = 50) -> dict:
    rng = np.random.default_rng(0)
    nets = {
        "Elman (Recurrent Erf)": ka.Recurrent(ka.Erf(), HP["W"], HP["U"], HP["b"]),
        "GRU, 65 nodes (no gate bias)": ka.GRU(ka.Erf(), HP["W"], HP["U"], HP["b"], gate_U_std=HP["gU"]),
        "LSTM, 65 nodes (no gate bias)": ka.LSTM(ka.Erf(), HP["W"], HP["U"], HP["b"], gate_U_std=HP["gU"]),
        "GRU, 289 nodes (17 x 17, gate bias)": layer("GRU", "last", 17),
    }
    res = {}
    for dtype in (np.float32, np.float64):
        x = rng.normal(size=(n, t, 1)).astype(dtype)
        for name, lay in nets.items():
            s = _steady(ka.compile(lay >> ka.Dense(HP["V"])), x)
            res[f"{name} [{np.dtype(dtype).name}]"] = {"steady_s": s, "ns_per_pair_time_pair": s / (n * n * t * t) * 1e9}
            print(name, np.dtype(dtype).name, res[f"{name} [{np.dtype(dtype).name}]"], flush=True)
    return res


def main(argv: list[str]) -> None:
    what = argv[1] if len(argv) > 1 else "cost"
    out = json.loads(OUT.read_text()) if OUT.exists() else {}
    meta = {"load_before": os.getloadavg(), "jax": jax.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}
    out[what] = {"meta": meta, "results": bench_mc() if what == "mc" else bench_cost()}
    out[what]["meta"]["load_after"] = os.getloadavg()
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv)
