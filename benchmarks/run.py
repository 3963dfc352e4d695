"""kernelalg vs neural-tangents, side by side, in one command.

    python benchmarks/run.py                    # everything: dense, compile, conv, empirical, deepcnn
    python benchmarks/run.py --quick            # smoke run (N = 500, shallow compile sweep)
    python benchmarks/run.py --only dense       # one section (dense | compile | conv | empirical | deepcnn)
    python benchmarks/run.py --device gpu       # kernelalg on the GPU (NT stays on the CPU), + bandwidth

Both libraries run the same workloads on the same seeded inputs, each workload in a fresh process
(neural-tangents 0.6.5 in its own venv through ``nt_run.run_nt``, kernelalg through ``_ka_worker.py``),
so peak RSS is per workload and no compile cache leaks between runs. Workloads of one kind run back to
back in both libraries, so they see the same machine load (recorded per workload).

Settings (NT-compatible): float64, NTK parameterization, depth x [Dense(W_std=1.5, b_std=0.05),
activation] + Dense(W_std=1.5, b_std=0.05), inputs x ~ N(0, 1) of shape (N, 64) (numpy
default_rng(0)), x2 = None (the full N x N kernel), get = ("nngp", "ntk"); NT's Gelu(approximate=False).
first_call = trace + compile + first evaluation; steady = median of the repeats after it.
The numbers must agree: |ka - nt| <= rtol * max(|nt|, 1e-3 max|nt|) elementwise (rtol 1e-6).

Outputs: benchmarks/results/<section>.json (latest run of that section) and benchmarks/RESULTS.md
(rendered from all section files). ``--quick`` writes to benchmarks/out/quick/ instead.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
from nt_run import OUT_DIR, NTWorkerError, machine_info, make_inputs, run_nt  # noqa: E402
from nt_env import DEFAULT_ENV_DIR, is_ready, versions  # noqa: E402

KA_WORKER = HERE / "_ka_worker.py"
RESULTS_DIR = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"
SETTINGS = dict(W_std=1.5, b_std=0.05, d=64, seed=0, get=["nngp", "ntk"], dtype="float64",
                parameterization="ntk", x2=None)
ACTS = ("relu", "erf", "gelu")
SECTIONS = ("dense", "compile", "conv", "empirical", "deepcnn")
HOOKS = {"conv": "bench_conv.py", "empirical": "bench_empirical.py", "deepcnn": "bench_deepcnn.py"}
HOOK_TIMEOUTS = {"conv": 1200.0, "empirical": 1200.0, "deepcnn": 3600.0}  # seconds (NT's deep GAP: ~15 min)


class KAWorkerError(RuntimeError):
    pass


def run_ka(spec: dict, timeout: float | None = None) -> dict:
    """Run one workload through ``_ka_worker.py`` in this interpreter's environment."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, str(KA_WORKER), json.dumps(spec)], capture_output=True,
                           text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise KAWorkerError(f"kernelalg worker timed out after {timeout}s: {spec}") from e
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("KA_RESULT ")]
    if p.returncode != 0 or not lines:
        tail = "\n".join((p.stdout + "\n" + p.stderr).splitlines()[-30:])
        raise KAWorkerError(f"kernelalg worker failed (rc={p.returncode}) for {spec}:\n{tail}")
    res = json.loads(lines[-1][len("KA_RESULT "):])
    res["subprocess_wall_s"] = time.perf_counter() - t0
    return res


def compare(ka_npz: Path, nt_npz: Path, rtol: float) -> dict:
    """Elementwise agreement |a - b| <= rtol * max(|b|, 1e-3 max|b|) of every array in both files."""
    import numpy as np
    out = {}
    with np.load(ka_npz) as a, np.load(nt_npz) as b:
        for k in sorted(set(a.files) & set(b.files)):
            x, y = a[k], b[k]
            if x.shape != y.shape:
                out[k] = dict(ok=False, error=f"shape {x.shape} vs {y.shape}")
                continue
            scale = float(np.abs(y).max())
            rel = np.abs(x - y) / np.maximum(np.abs(y), 1e-3 * scale)
            out[k] = dict(ok=bool(np.all(rel <= rtol)), max_rel_err=float(rel.max()),
                          max_abs_err=float(np.abs(x - y).max()), max_abs_value=scale)
            if x.ndim == 2 and x.shape[0] == x.shape[1]:  # x2 = None: K(x_i, x_i) separately
                diag = np.diagonal(rel).copy()
                np.fill_diagonal(rel, 0)
                out[k].update(max_rel_err_diagonal=float(diag.max()), max_rel_err_off_diagonal=float(rel.max()))
    return out


def relu_diagonal_errors(x_path: Path, depth: int, paths: dict) -> dict:
    """Max relative error of each library's ReLU NTK diagonal ntk(x, x) against its closed form.

    At correlation 1 the ReLU dual is linear: nngp <- W^2 nngp / 2 + b^2 and ntk <- nngp + W^2 ntk / 2
    after each [Dense, Relu] block, starting from nngp = ntk = W^2 |x|^2 / d + b^2.
    """
    import numpy as np
    x = np.load(x_path)
    w2, b2 = SETTINGS["W_std"] ** 2, SETTINGS["b_std"] ** 2
    s = w2 * (x * x).sum(1) / x.shape[1] + b2
    t = s.copy()
    for _ in range(depth):
        s = w2 * s / 2 + b2
        t = s + w2 * t / 2
    out = {}
    for side, p in paths.items():
        if p.exists():
            with np.load(p) as z:
                out[side] = float(np.max(np.abs(np.diagonal(z["ntk"]) - t) / t))
    return out


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _side(runner, spec: dict, timeout: float) -> dict:
    try:
        r = runner(spec, timeout=timeout) if runner is run_ka else runner(spec, timeout=timeout, load_arrays=False)
        r["status"] = "ok"
    except (NTWorkerError, KAWorkerError) as e:
        r = dict(status="failed", error=str(e)[-1500:])
    r.pop("x_path", None)
    return r


# ----------------------------------------------------------------------------- sections


def dense_suite(quick: bool, full: bool) -> list[dict]:
    """(N, depth, activation, repeats) of the dense section."""
    if quick:
        return [dict(N=500, depth=L, activation=a, repeats=3) for L in (3, 20) for a in ACTS]
    suite = [dict(N=2000, depth=L, activation=a, repeats=3) for L in (3, 20) for a in ACTS]
    suite += [dict(N=8000, depth=3, activation=a, repeats=1) for a in ACTS]
    # At N = 8000, depth 20 NT's peak RSS passed 19.6 GB (of 23.5 GB) and kept growing: kernelalg only,
    # ReLU only, unless --full (which runs NT there too: needs a machine with > 32 GB of RAM).
    suite += [dict(N=8000, depth=20, activation=a, repeats=1, nt=full) for a in (ACTS if full else ("relu",))]
    return suite


def run_dense(args, work: Path) -> dict:
    results = {}
    for w in dense_suite(args.quick, args.full):
        name = f"dense_N{w['N']}_L{w['depth']}_{w['activation']}"
        if args.workloads and name not in args.workloads:
            continue
        x_path = make_inputs("dense", w["N"], d=SETTINGS["d"], seed=SETTINGS["seed"])
        base = dict(workload="dense", x_path=str(x_path), depth=w["depth"], activation=w["activation"],
                    W_std=SETTINGS["W_std"], b_std=SETTINGS["b_std"], get=SETTINGS["get"],
                    repeats=w["repeats"], seed=SETTINGS["seed"])
        rec = dict(N=w["N"], depth=w["depth"], activation=w["activation"], load_before=_load())
        paths = {s: work / f"{name}_{s}.npz" for s in ("ka", "nt")}
        print(f"[dense] {name}", file=sys.stderr, flush=True)
        if not args.no_nt and w.get("nt", True):
            rec["nt"] = _side(run_nt, dict(base, out=str(paths["nt"])), args.timeout)
        elif not args.no_nt:
            rec["nt"] = dict(status="skipped", note="NT not run without --full: at this size its RSS passed 19.6 GB "
                             "of 23.5 GB (2026-11-30) before it finished")
        rec["ka"] = _side(run_ka, dict(base, out=str(paths["ka"]), device=args.device), args.timeout)
        rec["load_after"] = _load()
        ka, nt = rec["ka"], rec.get("nt", {})
        if ka.get("status") == "ok" and nt.get("status") == "ok":
            rec["agreement"] = compare(paths["ka"], paths["nt"], args.rtol)
            rec["agree"] = all(v["ok"] for v in rec["agreement"].values())
            rec["speedup_steady"] = nt["steady_s"] / ka["steady_s"]
            rec["speedup_first_call"] = nt["first_call_s"] / (ka["first_call_s"] + ka["build_s"])
            rec["rss_ratio"] = nt["peak_rss_mb"] / ka["peak_rss_mb"]
        if w["activation"] == "relu":
            rec["relu_ntk_diagonal_rel_err"] = relu_diagonal_errors(x_path, w["depth"], paths)
        if args.device == "gpu" and ka.get("status") == "ok":
            nbytes = len(SETTINGS["get"]) * w["N"] ** 2 * 8  # the N x N outputs written once
            traffic = 2 * (w["depth"] + 1) * nbytes  # + each layer reading and writing its (nngp, ntk) state
            rec["gpu_bandwidth"] = dict(
                output_bytes=nbytes, effective_gbs=nbytes / ka["steady_s"] / 1e9,
                fraction_of_card=nbytes / ka["steady_s"] / 1e9 / args.gpu_bandwidth_gbs,
                layer_traffic_bytes=traffic, layer_traffic_gbs=traffic / ka["steady_s"] / 1e9,
                layer_traffic_fraction_of_card=traffic / ka["steady_s"] / 1e9 / args.gpu_bandwidth_gbs,
                card_gbs=args.gpu_bandwidth_gbs)
        if not args.keep_arrays:
            for p in paths.values():
                p.unlink(missing_ok=True)
        results[name] = rec
        print(f"[dense]   nt={nt.get('steady_s')} ka={ka.get('steady_s')} agree={rec.get('agree')} "
              f"load={rec['load_after']}", file=sys.stderr, flush=True)
    return results


def run_compile(args, work: Path) -> dict:
    """Build + compile time vs depth (N = 64, ReLU): kernelalg's symbolic build, its jit compile
    (first call - steady), the same without the scan of repeated blocks, and NT's kernel_fn first call."""
    depths = (1, 2, 5, 10, 20) if args.quick else (1, 2, 5, 10, 20, 50, 100)
    unrolled_max = 10 if args.quick else 20
    x_path = make_inputs("dense", 64, d=SETTINGS["d"], seed=SETTINGS["seed"])
    results, nt_dead, unr_dead = {}, False, False
    for depth in depths:
        base = dict(workload="dense", x_path=str(x_path), depth=depth, activation="relu",
                    W_std=SETTINGS["W_std"], b_std=SETTINGS["b_std"], get=SETTINGS["get"], repeats=3)
        rec = dict(depth=depth, load_before=_load())
        print(f"[compile] depth {depth}", file=sys.stderr, flush=True)
        timeout = min(args.timeout, args.compile_timeout)
        rec["ka"] = _side(run_ka, dict(base, device=args.device), timeout)
        if depth <= unrolled_max and not unr_dead:
            rec["ka_unrolled"] = _side(run_ka, dict(base, scan=False, device=args.device), timeout)
            unr_dead = rec["ka_unrolled"]["status"] != "ok"
        if not args.no_nt and not nt_dead:
            rec["nt"] = _side(run_nt, base, timeout)
            nt_dead = rec["nt"]["status"] != "ok"  # a timeout at one depth: deeper ones are slower
        for side in ("ka", "ka_unrolled", "nt"):
            r = rec.get(side, {})
            if r.get("status") == "ok":
                r["compile_s"] = r["first_call_s"] - r["steady_s"]
        rec["load_after"] = _load()
        results[f"compile_L{depth}"] = rec
    return results


def run_hook(section: str, args) -> dict:
    """Run another helper's benchmark script (if present) as a subprocess and record its outcome."""
    script = HERE / HOOKS[section]
    if not script.exists():
        return dict(status="absent", script=script.name)
    cmd = [sys.executable, str(script)] + (["--quick"] if args.quick else []) + ([] if args.no_nt else ["--run-nt"])
    before = {p: p.stat().st_mtime for p in RESULTS_DIR.glob("*.json")} if RESULTS_DIR.exists() else {}
    t0, load = time.perf_counter(), _load()
    try:
        timeout = args.hook_timeout or HOOK_TIMEOUTS[section]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent)
        rc, tail = p.returncode, "\n".join((p.stdout + "\n" + p.stderr).strip().splitlines()[-40:])
    except subprocess.TimeoutExpired:
        rc, tail = None, f"timed out after {timeout}s"
    own = {f"{s}.json" for s in ("dense", "compile", "dense_gpu", "compile_gpu")}
    written = sorted(str(q.relative_to(HERE)) for q in RESULTS_DIR.glob("*.json")
                     if before.get(q) != q.stat().st_mtime and q.name not in own
                     and not q.name.startswith("hook_")) if RESULTS_DIR.exists() else []
    return dict(status="ok" if rc == 0 else "failed", script=script.name,
                command=" ".join(["python", f"benchmarks/{script.name}"] + cmd[2:]), returncode=rc,
                wall_s=time.perf_counter() - t0, load_before=load, load_after=_load(),
                results_written=written, output_tail=tail)


# ----------------------------------------------------------------------------- driver


def header(args, argv) -> dict:
    import jax
    import numpy
    import kernelalg
    return dict(
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        command="python benchmarks/run.py" + ("" if not argv else " " + " ".join(argv)),
        machine=machine_info(), load_avg_start=_load(), device=args.device, settings=SETTINGS,
        rtol=args.rtol,
        kernelalg_versions=dict(kernelalg=getattr(kernelalg, "__version__", None), jax=jax.__version__,
                                jaxlib=_dist_version("jaxlib"), numpy=numpy.__version__),
        nt_versions=versions(DEFAULT_ENV_DIR) if not args.no_nt else None,
    )


def _dist_version(name: str) -> str | None:
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N = 500 only, shallow compile sweep (smoke run)")
    ap.add_argument("--only", choices=SECTIONS, action="append", help="run only this section (repeatable)")
    ap.add_argument("--full", action="store_true",
                    help="N = 8000 depth 20 for all activations and in NT too (NT needs > 20 GB of RAM there)")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="kernelalg's device (NT: CPU)")
    ap.add_argument("--gpu-bandwidth-gbs", type=float, default=4800.0,
                    help="card memory bandwidth for --device gpu (default: H200, 4800 GB/s)")
    ap.add_argument("--no-nt", action="store_true", help="kernelalg only")
    ap.add_argument("--workloads", nargs="*", help="dense: rerun only these workloads (names as in the "
                    "results) and merge them into the existing results/dense.json")
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per workload and library")
    ap.add_argument("--compile-timeout", type=float, default=300.0,
                    help="seconds per compile-section workload; a timeout skips deeper NT depths")
    ap.add_argument("--hook-timeout", type=float, default=None,
                    help="seconds per conv/empirical/deepcnn script (default: 1200, 1200, 3600)")
    ap.add_argument("--keep-arrays", action="store_true", help="keep the kernels in benchmarks/out/cmp")
    args = ap.parse_args(argv)
    if not args.no_nt and not is_ready(DEFAULT_ENV_DIR):
        print("neural-tangents venv missing: run `python benchmarks/nt_env.py` first (or pass --no-nt)",
              file=sys.stderr)
        return 2
    sections = args.only or list(SECTIONS)
    res_dir = OUT_DIR / "quick" if args.quick else RESULTS_DIR
    res_dir.mkdir(parents=True, exist_ok=True)
    work = OUT_DIR / "cmp"
    work.mkdir(parents=True, exist_ok=True)
    head = header(args, argv)
    status = 0
    for sec in sections:
        t0 = time.perf_counter()
        if sec == "dense":
            body = run_dense(args, work)
            if not all(r.get("agree", True) for r in body.values()):
                status = 1
        elif sec == "compile":
            body = run_compile(args, work)
        else:
            body = run_hook(sec, args)
        doc = dict(head, section=sec, quick=args.quick, wall_s=time.perf_counter() - t0,
                   load_avg_end=_load(), results=body)
        stem = f"hook_{sec}" if sec in HOOKS else sec  # the hooked scripts own results/<name>.json
        path = res_dir / f"{stem}{'_gpu' if args.device == 'gpu' else ''}.json"
        if sec == "dense" and args.workloads and path.exists():  # rerun of some workloads: merge
            old = json.loads(path.read_text())
            old["results"].update(body)
            old.setdefault("reruns", []).append(dict(head, workloads=sorted(body)))
            doc = old
        # repository-relative paths only (no machine paths in committed results)
        path.write_text(json.dumps(doc, indent=1).replace(str(HERE.parent) + os.sep, "") + "\n")
        print(f"[{sec}] -> {path}", file=sys.stderr, flush=True)
    from _report import render
    md = render(res_dir)
    if not args.quick:
        RESULTS_MD.write_text(md)
        print(f"-> {RESULTS_MD}", file=sys.stderr)
    print(md)
    return status


if __name__ == "__main__":
    sys.exit(main())
