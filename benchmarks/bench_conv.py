"""Convolutional NTK benchmark: kernelalg against neural-tangents 0.6.5 on the same images.

    python benchmarks/bench_conv.py                 # kernelalg timings; NT from benchmarks/nt_baseline.json
    python benchmarks/bench_conv.py --run-nt        # also (re)compute NT's kernel (nt.batch, batch_size 16)
    python benchmarks/bench_conv.py --quick         # 8 images: a smoke test

Workload (issue 4, as ``cnn_gap`` in benchmarks/nt_run.py): 64 images 16x16x3 (seeded standard normal,
``nt_run.make_inputs``), three [Conv(3x3, SAME, W_std=1.5, b_std=0.05) + ReLU], GlobalAvgPool,
Dense(W_std=1.5, b_std=0.05); NNGP and NTK, float64, x2 = None. GlobalAvgPool needs the covariance of every
pixel pair, (HW)^2 = 65536 entries per image pair.

kernelalg runs in a fresh subprocess (peak RSS = its ``ru_maxrss``, JAX import included, as NT's numbers):
first call = symbolic build (ka.compile) + trace + XLA compile + evaluation, steady = median of ``--repeats``
further calls, plus the CPU time of each call (the machine is shared; CPU time is less sensitive to other
processes than wall time). NT's timings come from benchmarks/nt_baseline.json (measured by
``nt_run.py --baseline``); NT's kernel arrays (needed to compare the numbers) from ``--run-nt``, stored in
benchmarks/out/. Results go to benchmarks/results/conv.json.
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
from nt_run import BASELINE_JSON, OUT_DIR, machine_info, make_inputs, run_nt  # noqa: E402

RESULTS = HERE / "results" / "conv.json"
W_STD, B_STD, DEPTH = 1.5, 0.05, 3


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(spec: dict) -> dict:
    """kernelalg side (runs in its own process)."""
    t = time.perf_counter()
    import jax
    import numpy as np

    import kernelalg as ka
    import_s = time.perf_counter() - t
    x = np.load(spec["x_path"]).astype(np.float64)[: spec["n"]]
    layers = []
    for _ in range(DEPTH):
        layers += [ka.Conv((3, 3), padding="SAME", W_std=W_STD, b_std=B_STD), ka.Relu()]
    net = ka.serial(*layers, ka.GlobalAvgPool(), ka.Dense(W_STD, B_STD))
    rss_before = _current_rss_mb()

    def call(f):
        w, c = time.perf_counter(), time.process_time()
        k = f(x)
        jax.block_until_ready((k.nngp, k.ntk))
        return k, time.perf_counter() - w, time.process_time() - c

    w, c = time.perf_counter(), time.process_time()
    f = ka.compile(net)  # symbolic build (sympy); counted in the first call
    build_s, build_cpu = time.perf_counter() - w, time.process_time() - c
    k, first, first_cpu = call(f)
    first, first_cpu = first + build_s, first_cpu + build_cpu
    steady, steady_cpu = [], []
    for _ in range(spec["repeats"]):
        _, w, c = call(f)
        steady.append(w), steady_cpu.append(c)
    np.savez(spec["out"], nngp=np.asarray(k.nngp), ntk=np.asarray(k.ntk))
    med = (lambda v: statistics.median(v) if v else None)
    return dict(first_call_s=first, first_call_cpu_s=first_cpu, symbolic_build_s=build_s, steady_s=med(steady),
                steady_all_s=steady, steady_cpu_s=med(steady_cpu), peak_rss_mb=_rss_mb(),
                rss_before_call_mb=rss_before, import_s=import_s, jax=jax.__version__,
                devices=[str(d) for d in jax.devices()])


def run_kernelalg(n: int, repeats: int, x_path: Path) -> tuple[dict, dict]:
    out = OUT_DIR / f"ka_cnn_gap_N{n}.npz"
    spec = dict(n=n, repeats=repeats, x_path=str(x_path), out=str(out))
    load0 = os.getloadavg()[0]
    p = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-3000:])
    res = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("KA_RESULT ")][-1][10:])
    res["load_avg_1min_before_after"] = [load0, os.getloadavg()[0]]
    import numpy as np
    with np.load(out) as z:
        return res, {k: z[k] for k in z.files}


def compare(ka_arrays: dict, nt_arrays: dict) -> dict:
    import numpy as np
    out = {}
    for f in ("nngp", "ntk"):
        a, b = ka_arrays[f], nt_arrays[f]
        out[f] = dict(max_abs_diff=float(np.abs(a - b).max()),
                      max_rel_diff=float((np.abs(a - b) / np.abs(b).max()).max()))
    out["agree_1e-6"] = all(v["max_rel_diff"] <= 1e-6 for v in out.values() if isinstance(v, dict))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="8 images (smoke test)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--run-nt", action="store_true", help="compute NT's kernel now (nt.batch, batch_size 16)")
    ap.add_argument("--scaling", type=int, nargs="*", default=[],
                    help="also run kernelalg alone at these N (peak memory stays flat: tiles of image pairs)")
    ap.add_argument("--out", default=None, help="default benchmarks/results/conv.json (--quick: benchmarks/out/)")
    a = ap.parse_args(argv)
    if a.worker:
        print("KA_RESULT " + json.dumps(worker(json.loads(a.worker))), flush=True)
        return 0
    import numpy as np
    n = 8 if a.quick else 64
    x_path = make_inputs("image", 64)  # the baseline's file; --quick uses its first 8 images
    ka_res, ka_arrays = run_kernelalg(n, a.repeats, x_path)
    print(f"[kernelalg] N={n}: first {ka_res['first_call_s']:.2f} s, steady {ka_res['steady_s']:.2f} s, "
          f"peak RSS {ka_res['peak_rss_mb']:.0f} MB", file=sys.stderr)
    nt_file = OUT_DIR / f"nt_cnn_gap_N{n}_bs{n // 4}.npz"
    nt_run_res = None
    if a.run_nt or not nt_file.exists():
        spec = dict(workload="cnn_gap", x_path=str(x_path), depth=DEPTH, W_std=W_STD, b_std=B_STD,
                    batch_size=n // 4, repeats=0, out=str(nt_file))
        if a.quick:  # the worker takes its images from x_path; write the first n to their own file
            small = OUT_DIR / "data" / f"image_{n}_of_64x16x16x3_seed0.npy"
            np.save(small, np.load(x_path)[:n])
            spec["x_path"] = str(small)
        nt_run_res = run_nt(spec, timeout=3600, load_arrays=False)
    with np.load(nt_file) as z:
        nt_arrays = {k: z[k] for k in z.files}
    agreement = compare(ka_arrays, nt_arrays)
    base = json.loads(BASELINE_JSON.read_text())["results"]
    nt_full, nt_b16 = base["cnn_gap_N64_16x16x3_3conv"], base["cnn_gap_N64_16x16x3_3conv_bs16"]
    doc = dict(
        description=("CNN-GAP kernel (64 images 16x16x3, 3x [Conv 3x3 SAME W_std=1.5 b_std=0.05 + ReLU], "
                     "GlobalAvgPool, Dense), NNGP+NTK, float64, x2=None; kernelalg vs neural-tangents 0.6.5. "
                     "NT timings: benchmarks/nt_baseline.json; numbers compared with NT's nt.batch(16) output."),
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), machine=machine_info(), n=n,
        kernelalg=ka_res,
        neural_tangents=dict(
            unbatched=dict((k, nt_full[k]) for k in ("first_call_s", "steady_s", "peak_rss_mb")),
            batch16=dict((k, nt_b16[k]) for k in ("first_call_s", "steady_s", "peak_rss_mb")),
            this_run=None if nt_run_res is None else
            dict((k, nt_run_res.get(k)) for k in ("first_call_s", "peak_rss_mb", "batch_size"))),
        agreement_with_nt=agreement,
    )
    for m in a.scaling:
        res, _ = run_kernelalg(m, 0, make_inputs("image", m))
        doc.setdefault("kernelalg_scaling", {})[str(m)] = {k: res[k] for k in (
            "first_call_s", "first_call_cpu_s", "peak_rss_mb", "rss_before_call_mb", "load_avg_1min_before_after")}
        print(f"[kernelalg] N={m}: first {res['first_call_s']:.2f} s, peak RSS {res['peak_rss_mb']:.0f} MB",
              file=sys.stderr)
    if n == 64:
        doc["ratios"] = dict(
            first_call_speedup_vs_nt_unbatched=nt_full["first_call_s"] / ka_res["first_call_s"],
            first_call_speedup_vs_nt_batch16=nt_b16["first_call_s"] / ka_res["first_call_s"],
            steady_speedup_vs_nt_unbatched=nt_full["steady_s"] / ka_res["steady_s"],
            steady_speedup_vs_nt_batch16=nt_b16["steady_s"] / ka_res["steady_s"],
            peak_rss_fraction_of_nt_unbatched=ka_res["peak_rss_mb"] / nt_full["peak_rss_mb"],
            peak_rss_fraction_of_nt_batch16=ka_res["peak_rss_mb"] / nt_b16["peak_rss_mb"],
        )
    out = Path(a.out or (OUT_DIR / "conv_quick.json" if a.quick else RESULTS))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: doc[k] for k in ("ratios", "agreement_with_nt") if k in doc}, indent=1))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
