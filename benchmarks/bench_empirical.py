"""Empirical NTK benchmark: ``ka.empirical_ntk`` against neural-tangents 0.6.5's ``empirical_ntk_fn``.

    python benchmarks/bench_empirical.py              # kernelalg timings; NT from benchmarks/nt_baseline.json
    python benchmarks/bench_empirical.py --run-nt     # also rerun NT now (same machine state, its own venv)
    python benchmarks/bench_empirical.py --quick      # 50 inputs: a smoke test

Workload (``empirical_ntk_N500_L3_w512_impl{1,2}`` in benchmarks/nt_run.py): 500 inputs of dimension 64
(seeded standard normal, ``nt_run.make_inputs``), three [Dense(512, W_std=1.5, b_std=0.05) + ReLU],
Dense(1, W_std=1.5, b_std=0.05), NTK parametrization, float64, x2 = None; the kernel J J^T over all
~560k parameters. kernelalg runs ``method="jacobian"`` (NT's implementation 1), ``method="structured"``
(per-layer (h.h') (g.g') products, NT's implementation 3, which fails on NT's jax 0.4.26, so it is compared
with NT's default implementation 1) and optionally ``method="ntvp"`` (NT's implementation 2), each in a fresh
subprocess (peak RSS = its ru_maxrss, JAX import included, as
NT's numbers): first call = trace + compile + evaluation, steady = median of ``--repeats`` further calls,
with the CPU time of each call (the machine is shared; CPU time is less sensitive to other processes).
Results go to benchmarks/results/empirical.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from nt_run import BASELINE_JSON, machine_info, make_inputs, run_nt  # noqa: E402

RESULTS = HERE / "results" / "empirical.json"
W_STD, B_STD, DEPTH, WIDTH = 1.5, 0.05, 3, 512


def worker(spec: dict) -> dict:
    """kernelalg side (runs in its own process)."""
    t = time.perf_counter()
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np

    import kernelalg as ka
    import_s = time.perf_counter() - t
    x = np.load(spec["x_path"]).astype(np.float64)[: spec["n"]]
    layers = []
    for _ in range(DEPTH):
        layers += [ka.Dense(W_STD, B_STD), ka.Relu()]
    net = ka.serial(*layers, ka.Dense(W_STD, B_STD))
    twin = ka.finite(net, width=WIDTH)
    params = twin.init(0, x.shape[1:])
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(params))
    fn = ka.empirical_ntk_fn(twin.apply, method=spec["method"])

    def call():
        return jax.block_until_ready(fn(x, None, params))

    t0, c0 = time.perf_counter(), time.process_time()
    k = np.asarray(call())
    first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    times, cpus = [], []
    for _ in range(spec["repeats"]):
        t0, c0 = time.perf_counter(), time.process_time()
        call()
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return dict(method=spec["method"], N=int(x.shape[0]), d=int(x.shape[1]), n_params=n_params,
                first_call_s=first, first_call_cpu_s=first_cpu, steady_s=statistics.median(times),
                steady_all_s=times, steady_cpu_s=statistics.median(cpus), import_s=import_s,
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                all_finite=bool(np.all(np.isfinite(k))),
                symmetric=bool(np.allclose(k, k.T, rtol=1e-10, atol=0)),
                diag_sample=[float(v) for v in np.diag(k)[:3]], dtype=str(k.dtype))


def run_worker(spec: dict, timeout: float = 1800) -> dict:
    p = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True,
                       text=True, timeout=timeout)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("KA_RESULT ")]
    if p.returncode != 0 or not lines:
        return dict(status="failed", error=(p.stdout + p.stderr)[-2000:])
    return dict(json.loads(lines[-1][len("KA_RESULT "):]), status="ok")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="50 inputs (smoke test)")
    ap.add_argument("--run-nt", action="store_true", help="rerun neural-tangents now as well")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", nargs="*", default=["jacobian", "structured"],
                    help="kernelalg methods (ntvp: minutes at N=500, its columns are whole-batch products)")
    a = ap.parse_args(argv)
    if a.worker:
        print("KA_RESULT " + json.dumps(worker(json.loads(a.worker))), flush=True)
        return 0
    n = 50 if a.quick else 500
    x_path = make_inputs("dense", 500)
    # NT's structured derivatives (implementation 3) fail on its jax 0.4.26: "structured" is compared with
    # NT's default, implementation 1
    impl = {"jacobian": 1, "ntvp": 2, "structured": 1}
    baseline = json.loads(BASELINE_JSON.read_text())["results"] if BASELINE_JSON.exists() else {}
    out: dict = dict(
        description=__doc__.split("\n\n")[2].replace("\n", " "),
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        machine=machine_info(), quick=a.quick, results={})
    for method in a.methods:
        print(f"[ka] empirical NTK, method={method}, N={n} ...", file=sys.stderr, flush=True)
        ka_res = run_worker(dict(x_path=str(x_path), n=n, method=method, repeats=a.repeats))
        name = f"empirical_ntk_N500_L3_w512_impl{impl[method]}"
        if a.run_nt and method == "structured" and "jacobian" in out["results"]:  # same NT workload as jacobian
            nt_res = dict(out["results"]["jacobian"]["neural_tangents"])
            entry = dict(kernelalg=ka_res, neural_tangents=nt_res, nt_source="rerun now (with jacobian)")
            if ka_res.get("status") == "ok" and nt_res.get("steady_s"):
                entry["speedup_steady"] = nt_res["steady_s"] / ka_res["steady_s"]
                entry["speedup_first_call"] = nt_res["first_call_s"] / ka_res["first_call_s"]
            out["results"][method] = entry
            print(f"[ka]   -> {json.dumps({k: v for k, v in entry.items() if k != 'kernelalg'})}", file=sys.stderr)
            continue
        nt_res = baseline.get(name, {})
        nt_source = "nt_baseline.json"
        if a.run_nt:
            spec = dict(workload="empirical_ntk", x_path=str(x_path), depth=DEPTH, width=WIDTH,
                        implementation=impl[method], repeats=a.repeats, seed=0, W_std=W_STD, b_std=B_STD)
            if a.quick:
                spec.pop("x_path")
                spec.update(N=n, d=64)
            nt_res = run_nt(spec, load_arrays=False)
            nt_source = "rerun now"
        entry = dict(kernelalg=ka_res, neural_tangents={k: nt_res.get(k) for k in (
            "first_call_s", "steady_s", "peak_rss_mb", "N", "implementation")}, nt_source=nt_source)
        if ka_res.get("status") == "ok" and nt_res.get("steady_s") and (not a.quick or a.run_nt):
            entry["speedup_steady"] = nt_res["steady_s"] / ka_res["steady_s"]
            entry["speedup_first_call"] = nt_res["first_call_s"] / ka_res["first_call_s"]
        out["results"][method] = entry
        print(f"[ka]   -> {json.dumps({k: v for k, v in entry.items() if k != 'kernelalg'})}; kernelalg "
              f"first {ka_res.get('first_call_s')} steady {ka_res.get('steady_s')} "
              f"rss {ka_res.get('peak_rss_mb')}", file=sys.stderr, flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(RESULTS)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
