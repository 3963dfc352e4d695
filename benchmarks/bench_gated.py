"""Gated recurrent kernels (GRU, LSTM with input-driven gates): Monte Carlo agreement up to width 2048, and the
cost per time pair against the Elman kernel.

    python benchmarks/bench_gated.py mc      # widths 128..2048, lengths 1..20, NNGP and NTK (about 30 min, 2 cores)
    python benchmarks/bench_gated.py cost    # seconds per (pair x time pair): Elman vs GRU vs LSTM (a few min)
    python benchmarks/bench_gated.py obstruction   # textbook GRU (gates read h) at T = 2: exact 4-D integral,
                                                   # the factorized time-pair value, Monte Carlo (about 10 min)

``mc``: six univariate sequences of lengths 1, 4, 8, 12, 16, 20 (one batch, front padded); the exact kernel in
float64 with 65 points per gate weight and bias (its quadrature error, against 129 points, is reported);
finite-width twins in float32, S independent draws per width; empirical NNGP V^2 r.r'/n (readout integrated
out) and NTK J J^T of one readout unit (per-sequence gradients). Per width: the largest |z| = |mean - exact| / SE
over the 21 distinct pairs, the largest relative error |mean - exact| / exact, and the Richardson estimate
2 E_2n - E_n of the last two widths with its largest |z|. The relative error must shrink with the width until
it reaches the Monte Carlo noise; the Richardson z-scores test the O(1/n) bias model.

``cost``: steady time (median of 3 calls after the first) of ka.kernel for N = M = 8 sequences of length T = 50
(float32 and float64), divided by N M T^2: Elman (Recurrent(Erf)) against GRU/LSTM with 65 points (one gate
weight, no gate bias: 65 nodes) and 17 points with a gate bias (289 nodes).

``obstruction``: the textbook GRU (gate_W_std = 1: gates read h_(t-1)) on three univariate sequences of length
2. Its exact NNGP needs E[(1 - z_2) z_1 (1 - z'_2) z'_1] over the 4-D Gaussian (a_1, a_2, a'_1, a'_2) (docs/
recurrent.md), computed here by a 4-D Gauss-Hermite rule (40 points per dimension, checked against 32); the
"factorized" value treats the gate at t as independent of the state it multiplies (what a time-pair recursion
of 2-D expectations would give). Both against Monte Carlo of the finite twin (widths 512, 1024, 2048, Richardson
over the last two). Results: benchmarks/results/gated.json.
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
from scipy.special import erf

import kernelalg as ka

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "gated.json"
HP = dict(W=1.2, U=0.8, b=0.3, gU=1.1, gb=0.6, V=1.1)
LENGTHS = (1, 4, 8, 12, 16, 20)
WIDTHS = (128, 256, 512, 1024, 2048)
SAMPLES = {128: 800, 256: 600, 512: 400, 1024: 160, 2048: 100}
CONFIGS = ("GRU_last", "GRU_mean", "LSTM_last", "LSTM_mean")


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


def bench_mc(configs: tuple[str, ...] = CONFIGS, save=lambda res: None) -> dict:
    x64, x32 = sequences(np.float64), sequences(np.float32)
    iu = np.triu_indices(len(LENGTHS))
    res = {}
    for config in configs:
        cell, readout = config.split("_")
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
                row[name + "_max_err_over_max"] = float(np.max(np.abs(mu - ex)[iu]) / np.max(np.abs(ex)))
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
        save(res)
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


def _gauss(cov: np.ndarray, fn, points: int) -> float:
    """E[fn(a)] for a ~ N(0, cov) (d x d) by a Gauss-Hermite product rule through the Cholesky factor."""
    z, w = np.polynomial.hermite_e.hermegauss(points)
    w = w / w.sum()
    d = len(cov)
    grids = np.meshgrid(*([z] * d), indexing="ij")
    lam, vec = np.linalg.eigh(cov)                  # a symmetric square root (cov may be singular: x' = x)
    pts = np.stack([g.ravel() for g in grids], 1) @ (vec * np.sqrt(np.maximum(lam, 0))).T
    wts = np.prod(np.meshgrid(*([w] * d), indexing="ij"), 0).ravel()
    return float(wts @ fn(pts))


def _textbook_gru_t2(x: np.ndarray, y: np.ndarray, points: int) -> tuple[float, float]:
    """(exact, factorized) NNGP of GRU(gate_W_std=1, reset) >> Dense(V) for two length-2 univariate sequences."""
    g = lambda a: 0.5 * (1 + erf(a))  # noqa: E731
    h, gw = HP, 1.0

    def erf_t(c11, c12, c22):
        return 2 / np.pi * np.arcsin(2 * c12 / np.sqrt((1 + 2 * c11) * (1 + 2 * c22)))

    def gate_t(c11, c12, c22):
        return 0.25 + erf_t(c11, c12, c22) / 4

    seqs = {0: x, 1: y}
    cg = lambda i, j, s, t: h["gU"] ** 2 * seqs[i][s] * seqs[j][t] + h["gb"] ** 2  # noqa: E731 (0-based steps)
    cc1 = lambda i, j, s, t: h["U"] ** 2 * seqs[i][s] * seqs[j][t] + h["b"] ** 2  # noqa: E731 (no W term: h_0 = 0)
    # step 1: h_1 = z_1 phi(c_1), z_1 = g(a_1) with a_1 the input part only
    k1 = {(i, j): gate_t(cg(i, i, 0, 0), cg(i, j, 0, 0), cg(j, j, 0, 0))
          * erf_t(cc1(i, i, 0, 0), cc1(i, j, 0, 0), cc1(j, j, 0, 0)) for i in (0, 1) for j in (0, 1)}
    ca2 = lambda i, j: gw**2 * k1[i, j] + cg(i, j, 1, 1)  # noqa: E731  gate pre-activation at t = 2
    cc2 = lambda i, j: (h["W"] ** 2 * gate_t(ca2(i, i), ca2(i, j), ca2(j, j)) * k1[i, j]  # noqa: E731
                        + cc1(i, j, 1, 1))

    def cc(s, t, i=0, j=1):
        return cc2(i, j) if (s, t) == (1, 1) else cc1(i, j, s, t)

    def p(s, t):
        return erf_t(cc(s, s, 0, 0), cc(s, t), cc(t, t, 1, 1))

    cov = np.array([[cg(0, 0, 0, 0), cg(0, 0, 0, 1), cg(0, 1, 0, 0), cg(0, 1, 0, 1)],
                    [cg(0, 0, 1, 0), ca2(0, 0), cg(0, 1, 1, 0), ca2(0, 1)],
                    [cg(1, 0, 0, 0), cg(1, 0, 0, 1), cg(1, 1, 0, 0), cg(1, 1, 0, 1)],
                    [cg(1, 0, 1, 0), ca2(1, 0), cg(1, 1, 1, 0), ca2(1, 1)]])   # (a_1, a_2, a'_1, a'_2)

    def e(fn):
        return _gauss(cov, lambda a: fn(*(g(a[:, k]) for k in range(4))), points)

    exact = (e(lambda z1, z2, y1, y2: (1 - z2) * z1 * (1 - y2) * y1) * p(0, 0)
             + e(lambda z1, z2, y1, y2: (1 - z2) * z1 * y2) * p(0, 1)
             + e(lambda z1, z2, y1, y2: z2 * (1 - y2) * y1) * p(1, 0) + e(lambda z1, z2, y1, y2: z2 * y2) * p(1, 1))
    fact = (e(lambda z1, z2, y1, y2: (1 - z2) * (1 - y2)) * e(lambda z1, z2, y1, y2: z1 * y1) * p(0, 0)
            + e(lambda z1, z2, y1, y2: (1 - z2) * y2) * e(lambda z1, z2, y1, y2: z1) * p(0, 1)
            + e(lambda z1, z2, y1, y2: z2 * (1 - y2)) * e(lambda z1, z2, y1, y2: y1) * p(1, 0)
            + e(lambda z1, z2, y1, y2: z2 * y2) * p(1, 1))
    return h["V"] ** 2 * exact, h["V"] ** 2 * fact


def bench_obstruction() -> dict:
    rng = np.random.default_rng(7)
    xs = rng.normal(size=(3, 2))
    iu = np.triu_indices(3)
    exact, fact, check = (np.zeros((3, 3)) for _ in range(3))
    for i in range(3):
        for j in range(3):
            exact[i, j], fact[i, j] = _textbook_gru_t2(xs[i], xs[j], 40)
            check[i, j] = _textbook_gru_t2(xs[i], xs[j], 32)[0]
    lay = ka.GRU(ka.Erf(), HP["W"], HP["U"], HP["b"], gate_U_std=HP["gU"], gate_b_std=HP["gb"], gate_W_std=1.0)
    net = lay >> ka.Dense(HP["V"])
    res = {"exact": exact.tolist(), "factorized": fact.tolist(), "quadrature_40_vs_32": float(np.abs(exact - check).max()),
           "widths": []}
    means = {}
    for i, n in enumerate((512, 1024, 2048)):
        est = ka.monte_carlo(net, xs[:, :, None].astype(np.float32), width=n, samples=SAMPLES[n] * 4, key=200 + i,
                             get="nngp")
        means[n] = (est.nngp, est.stderr.nngp)
        row = {"width": n, "samples": est.samples,
               "max_abs_z_exact": float(np.max(np.abs((est.nngp - exact) / est.stderr.nngp)[iu])),
               "max_abs_z_factorized": float(np.max(np.abs((est.nngp - fact) / est.stderr.nngp)[iu]))}
        res["widths"].append(row)
        print(row, flush=True)
    (e1, s1), (e2, s2) = means[1024], means[2048]
    r, se = 2 * e2 - e1, np.sqrt(4 * s2**2 + s1**2)
    res["richardson"] = {"max_abs_z_exact": float(np.max(np.abs((r - exact) / se)[iu])),
                         "max_abs_z_factorized": float(np.max(np.abs((r - fact) / se)[iu])),
                         "max_rel_gap_factorized_vs_exact": float(np.max(np.abs(fact - exact)[iu] / np.abs(exact)[iu]))}
    print(res["richardson"], res["quadrature_40_vs_32"], flush=True)
    return res


def main(argv: list[str]) -> None:
    """``bench_gated.py mc [GRU_last ...]`` runs the named Monte Carlo configurations (default: all) and merges
    them into results/gated.json after each one; ``cost`` and ``obstruction`` replace their section."""
    what = argv[1] if len(argv) > 1 else "cost"
    meta = {"load_before": os.getloadavg(), "jax": jax.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}

    def save(results: dict) -> None:
        out = json.loads(OUT.read_text()) if OUT.exists() else {}
        sec = out.get(what, {"meta": {}, "results": {}}) if what == "mc" else {"meta": {}, "results": {}}
        sec["meta"] = dict(meta, load_after=os.getloadavg())
        sec["results"].update(results)
        out[what] = sec
        OUT.parent.mkdir(exist_ok=True)
        OUT.write_text(json.dumps(out, indent=1))

    if what == "mc":
        bench_mc(tuple(argv[2:]) or CONFIGS, save)
    else:
        save({"cost": bench_cost, "obstruction": bench_obstruction}[what]())


if __name__ == "__main__":
    main(sys.argv)
