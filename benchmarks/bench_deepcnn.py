"""Deep CNN kernels, neural-tangents' own "Performance" workloads: kernelalg against neural-tangents 0.6.5.

    python benchmarks/bench_deepcnn.py                      # every workload + the depth sweep, both libraries
    python benchmarks/bench_deepcnn.py --only flatten       # one workload (merged into results/deepcnn.json)
    python benchmarks/bench_deepcnn.py --only gap.f32       # one part of a workload (f32 timings / f64 checks)
    python benchmarks/bench_deepcnn.py --only sweep         # kernelalg's first call at depth 21, 50, 100
    python benchmarks/bench_deepcnn.py --quick              # 16x16 images, depth 6, small N: a smoke run
    python benchmarks/bench_deepcnn.py --device gpu         # kernelalg on the GPU (neural-tangents on the CPU)
    python benchmarks/bench_deepcnn.py --no-nt              # kernelalg only

Workloads. neural-tangents' README ("Performance") times a 21-layer CNN, 21 x [Conv(1, (3, 3), (1, 1), 'SAME'),
Relu] on 32x32x3 images, NT's defaults W_std = 1 and no bias, with either readout:

* ``gap``: + GlobalAvgPool (every pixel pair: (HW)^2 = 1M entries per image pair and layer), N = 4;
* ``flatten``: + Flatten (same-position pixel pairs only: HW = 1024 entries per image pair and layer), N = 16;
* ``dense``: for scale, depth 20 x [Dense(W_std=1.5, b_std=0.05), Relu] + Dense on N = 2000 inputs of dimension 64.

All float32, NTK only, x2 = None (the N x N kernel), seeded standard-normal inputs written once to
benchmarks/out/data (``nt_run.make_inputs``) and read by both libraries. Each (library, workload, precision)
runs in a fresh process (``_ka_worker.py``; ``_nt_worker.py`` in NT's own venv, see ``nt_env.py``), the two
libraries back to back, so that they see the same machine load (recorded). Reported per workload:

* steady: median wall time of the calls after the first (and their CPU time); first call: kernelalg's
  ``ka.compile`` (symbolic build) + its first call, NT's first ``kernel_fn`` call (jit + evaluation);
* ms per NTK entry: steady / N^2 (both return the whole N x N kernel), next to the figures NT publishes
  for a >56-core CPU (README, float32: 112.90 ms with GlobalAvgPool, 0.12013 ms with Flatten);
* peak RSS of the worker process (``ru_maxrss``, imports included);
* agreement: both libraries in float64 on the first ``n_small`` inputs, max |ka - nt| / max |nt|;
* float32 error: each library's float32 kernel (its n_small x n_small corner: x2 = None, so it is the kernel
  of the first n_small inputs) against its own float64 kernel, max |K32 - K64| / max |K64| and elementwise.

The depth sweep runs kernelalg (and NT with ``--sweep-nt``) at depth 21, 50, 100 of both CNNs: first call,
steady, and their difference (symbolic build + trace + compile), which does not grow with depth because
repeated [Conv, Relu] blocks are one ``lax.scan``. Results: benchmarks/results/deepcnn.json (parts merge),
rendered into benchmarks/RESULTS.md. No GPU run so far: ``--device gpu`` runs kernelalg on JAX's GPU backend
(the worker refuses to fall back to the CPU) for a later session.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from nt_env import DEFAULT_ENV_DIR, is_ready, versions  # noqa: E402
from nt_run import OUT_DIR, NTWorkerError, machine_info, make_inputs, run_nt  # noqa: E402
from run import KAWorkerError, header, run_ka  # noqa: E402

RESULTS = HERE / "results" / "deepcnn.json"
WORK = OUT_DIR / "deepcnn"
CNN = dict(depth=21, hw=32, W_std=1.0, b_std=None)  # NT README: Conv(1, (3, 3), (1, 1), 'SAME'), defaults
WORKLOADS = {
    "gap": dict(kind="cnn", readout="gap", N=4, n_small=2, repeats=2, **CNN),
    "flatten": dict(kind="cnn", readout="flatten", N=16, n_small=16, repeats=5, **CNN),
    "dense": dict(kind="dense", N=2000, n_small=500, depth=20, repeats=3, W_std=1.5, b_std=0.05),
}
QUICK = {"gap": dict(hw=16, depth=6, N=4, n_small=2), "flatten": dict(hw=16, depth=6, N=8, n_small=8),
         "dense": dict(N=500, n_small=200)}
#: neural-tangents' README, "Performance" (CPU, >56 cores, >700 GB RAM, float32), ms per NTK entry.
NT_PUBLISHED_MS = {"gap": 112.90, "flatten": 0.12013}
SWEEP_DEPTHS = (21, 50, 100)
DESCRIPTION = (
    "neural-tangents' README 'Performance' CNN: 21 x [Conv(1, (3, 3), (1, 1), 'SAME'), Relu] on 32x32x3 images "
    "(NT's defaults W_std = 1, no bias), + GlobalAvgPool (gap, N = 4) or + Flatten (flatten, N = 16); for scale "
    "20 x [Dense(W_std=1.5, b_std=0.05), Relu] + Dense on N = 2000 inputs of dimension 64 (dense). float32, NTK "
    "only, x2 = None; seeded standard-normal inputs shared by both libraries; each library and workload in a fresh "
    "process, the two libraries back to back. Steady = median wall time of the calls after the first (CPU time in "
    "brackets: the machine is shared); first call = kernelalg's ka.compile + first call, NT's first kernel_fn "
    "call; ms / entry = steady / N^2 (both return the N x N kernel); peak RSS = ru_maxrss of the worker, imports "
    "included.")


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _spec(w: dict, n: int, dtype: str, repeats: int, out: Path | None, device: str = "cpu") -> dict:
    if w["kind"] == "dense":
        x = make_inputs("dense", n, d=64)
        spec = dict(workload="dense", activation="relu")
    else:
        x = make_inputs("image", n, image_shape=(w["hw"], w["hw"], 3))
        spec = dict(workload="cnn_deep", readout=w["readout"], channels=1)
    spec.update(x_path=str(x), depth=w["depth"], W_std=w["W_std"], b_std=w["b_std"], get=["ntk"], dtype=dtype,
                repeats=repeats, build=True)
    if out is not None:
        spec["out"] = str(out)
    return spec


def _side(lib: str, spec: dict, timeout: float) -> dict:
    try:
        if lib == "ka":
            r = run_ka(spec, timeout=timeout)
        else:
            r = run_nt({k: v for k, v in spec.items() if k != "device"}, timeout=timeout, load_arrays=False)
        r["status"] = "ok"
    except (NTWorkerError, KAWorkerError) as e:
        r = dict(status="failed", error=str(e)[-1500:])
    r.pop("x_path", None)
    if lib == "ka" and r["status"] == "ok":
        r["first_call_total_s"] = r["build_s"] + r["first_call_s"]
    elif r["status"] == "ok":
        r["first_call_total_s"] = r["first_call_s"]
    return r


def run_part(name: str, part: str, w: dict, args) -> dict:
    """One part of a workload: "f32" (timings at N) or "f64" (float64 at n_small, for the checks)."""
    libs = ["ka"] if args.no_nt else ["nt", "ka"]
    rec = dict(load_before=_load())
    for lib in libs:
        out = WORK / f"{lib}_{name}_{part}.npz"
        if part == "f32":
            spec = _spec(w, w["N"], "float32", w["repeats"], out, args.device)
        else:
            spec = _spec(w, w["n_small"], "float64", 0, out, "cpu")
        if lib == "ka":
            spec["device"] = args.device if part == "f32" else "cpu"
        print(f"[deepcnn] {name}.{part} {lib} ...", file=sys.stderr, flush=True)
        rec[lib] = _side(lib, spec, args.timeout)
        print(f"[deepcnn]   {rec[lib].get('status')} first {rec[lib].get('first_call_total_s')} "
              f"steady {rec[lib].get('steady_s')} rss {rec[lib].get('peak_rss_mb')}", file=sys.stderr, flush=True)
    rec["load_after"] = _load()
    return rec


def _ntk(path: Path):
    import numpy as np
    with np.load(path) as z:
        return z["ntk"].astype(np.float64)


def derive(name: str, w: dict, parts: dict) -> dict:
    """Ratios, ms per entry, agreement and float32 errors from the stored parts and kernels."""
    import numpy as np
    out: dict = {}
    f32, f64 = parts.get("f32", {}), parts.get("f64", {})
    for lib in ("ka", "nt"):
        r = f32.get(lib, {})
        if r.get("status") == "ok" and r.get("steady_s"):
            out[f"{lib}_ms_per_entry"] = 1e3 * r["steady_s"] / w["N"] ** 2
    ka, nt = f32.get("ka", {}), f32.get("nt", {})
    if ka.get("status") == "ok" and nt.get("status") == "ok":
        out["speedup_steady"] = nt["steady_s"] / ka["steady_s"]
        out["speedup_first_call"] = nt["first_call_total_s"] / ka["first_call_total_s"]
        out["rss_fraction_of_nt"] = ka["peak_rss_mb"] / nt["peak_rss_mb"]
        if ka.get("steady_cpu_s") and nt.get("steady_cpu_s"):
            out["speedup_steady_cpu"] = nt["steady_cpu_s"] / ka["steady_cpu_s"]
    files = {(lib, p): WORK / f"{lib}_{name}_{p}.npz" for lib in ("ka", "nt") for p in ("f32", "f64")}
    have = {k: v for k, v in files.items() if v.exists()}
    n = w["n_small"]
    if ("ka", "f64") in have and ("nt", "f64") in have:
        a, b = _ntk(have["ka", "f64"]), _ntk(have["nt", "f64"])
        rel = np.abs(a - b) / np.abs(b).max()
        out["f64_agreement_max_rel"] = float(rel.max())
        out["f64_agreement_max_elementwise_rel"] = float((np.abs(a - b) / np.abs(b)).max())
        off = ~np.eye(len(a), dtype=bool)  # pairs of different inputs / an input with itself (correlation 1)
        out["f64_agreement_max_rel_off_diagonal"] = float(rel[off].max()) if off.any() else None
        out["f64_agreement_max_rel_diagonal"] = float(np.diagonal(rel).max())
    for lib in ("ka", "nt"):
        if (lib, "f32") in have and (lib, "f64") in have:
            k32, k64 = _ntk(have[lib, "f32"])[:n, :n], _ntk(have[lib, "f64"])
            out[f"{lib}_f32_error_max_rel"] = float(np.abs(k32 - k64).max() / np.abs(k64).max())
            out[f"{lib}_f32_error_max_elementwise_rel"] = float((np.abs(k32 - k64) / np.abs(k64)).max())
    if ("ka", "f32") in have and ("nt", "f32") in have:
        a, b = _ntk(have["ka", "f32"]), _ntk(have["nt", "f32"])
        out["f32_agreement_max_rel"] = float(np.abs(a - b).max() / np.abs(b).max())
    return out


def run_sweep(args, quick: bool) -> dict:
    """First call vs depth, kernelalg (NT too with --sweep-nt), at each CNN workload's N."""
    res = {}
    for name in ("gap", "flatten"):
        w = dict(WORKLOADS[name], **(QUICK[name] if quick else {}))
        for depth in ((6, 12, 24) if quick else SWEEP_DEPTHS):
            wd = dict(w, depth=depth)
            rec = dict(depth=depth, N=w["N"], load_before=_load())
            for lib in (["ka", "nt"] if args.sweep_nt and not args.no_nt else ["ka"]):
                spec = _spec(wd, w["N"], "float32", 1, None)
                if lib == "ka":
                    spec["device"] = args.device
                print(f"[deepcnn] sweep {name} depth {depth} {lib} ...", file=sys.stderr, flush=True)
                r = _side(lib, spec, args.timeout)
                if r["status"] == "ok":
                    r["build_and_compile_s"] = r["first_call_total_s"] - r["steady_s"]
                rec[lib] = r
            rec["load_after"] = _load()
            res[f"{name}_L{depth}"] = rec
    return res


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", help="workload (gap, flatten, dense), workload.f32 / "
                    "workload.f64, or sweep; repeatable (default: everything)")
    ap.add_argument("--quick", action="store_true", help="16x16 images, depth 6, small N (smoke run)")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="kernelalg's device (NT: CPU)")
    ap.add_argument("--no-nt", action="store_true", help="kernelalg only")
    ap.add_argument("--run-nt", action="store_true", help="accepted for run.py's hook (NT runs by default)")
    ap.add_argument("--sweep-nt", action="store_true", help="also time NT in the depth sweep (slow)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per library and part")
    ap.add_argument("--out", default=None, help="results JSON (default benchmarks/results/deepcnn.json; "
                    "--quick: benchmarks/out/deepcnn_quick.json)")
    args = ap.parse_args(argv)
    if not args.no_nt and not is_ready(DEFAULT_ENV_DIR):
        print("neural-tangents venv missing: run `python benchmarks/nt_env.py` (or pass --no-nt)", file=sys.stderr)
        return 2
    WORK.mkdir(parents=True, exist_ok=True)
    path = Path(args.out or (OUT_DIR / "deepcnn_quick.json" if args.quick else RESULTS))
    doc = json.loads(path.read_text()) if path.exists() else {}
    if doc.get("quick", args.quick) != args.quick or doc.get("device", args.device) != args.device:
        doc = {}
    head = header(argparse.Namespace(device=args.device, rtol=None, no_nt=args.no_nt), argv)
    head["command"] = "python benchmarks/bench_deepcnn.py" + (" " + " ".join(argv) if argv else "")
    doc.update(description=DESCRIPTION, machine=machine_info(), device=args.device, quick=args.quick,
               kernelalg_versions=head["kernelalg_versions"], nt_versions=head["nt_versions"],
               nt_published_ms_per_entry=NT_PUBLISHED_MS)
    runs = doc.setdefault("runs", [])
    results = doc.setdefault("workloads", {})
    todo = args.only or ["gap", "flatten", "dense", "sweep"]
    t0 = time.perf_counter()
    for item in todo:
        name, _, part = item.partition(".")
        if name == "sweep":
            doc["sweep"] = dict(date=head["date"], command=head["command"], results=run_sweep(args, args.quick))
        else:
            w = dict(WORKLOADS[name], **(QUICK[name] if args.quick else {}))
            entry = results.setdefault(name, {})
            entry["settings"] = w
            for p in ([part] if part else ["f32", "f64"]):
                entry[p] = dict(run_part(name, p, w, args), date=head["date"], command=head["command"])
            entry["derived"] = derive(name, w, entry)
        runs.append(dict(item=item, date=head["date"], command=head["command"], load_start=head["load_avg_start"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1).replace(str(HERE.parent) + os.sep, "") + "\n")
    print(json.dumps({k: v.get("derived") for k, v in results.items()}, indent=1))
    print(f"{path} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    if not args.quick:
        from _report import render
        (HERE / "RESULTS.md").write_text(render(HERE / "results"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
