"""Run neural-tangents workloads in their own venv and collect the timings.

    from benchmarks.nt_run import run_nt
    res = run_nt({"workload": "dense", "x_path": "x.npy", "depth": 3, "activation": "relu"})
    res["steady_s"], res["peak_rss_mb"]          # + res["arrays"] if "out" was given

    python benchmarks/nt_run.py --baseline        # the fixed suite -> benchmarks/nt_baseline.json
    python benchmarks/nt_run.py --baseline --quick    # small sizes, a smoke test

Each workload runs in a fresh subprocess (so peak RSS is per workload and compile caches do
not leak between them). Inputs are written by this module as .npy under benchmarks/out/data
(seeded), so the kernelalg side can load exactly the same arrays.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # allow running as a script
    sys.path.insert(0, str(HERE))
from nt_env import DEFAULT_ENV_DIR, _clean_env, ensure_nt_env, venv_python, versions  # noqa: E402

WORKER = HERE / "_nt_worker.py"
OUT_DIR = HERE / "out"
DATA_DIR = OUT_DIR / "data"
BASELINE_JSON = HERE / "nt_baseline.json"


class NTWorkerError(RuntimeError):
    pass


def make_inputs(kind: str, N: int, *, d: int = 64, image_shape=(16, 16, 3), seed: int = 0,
                data_dir: Path | str = DATA_DIR):
    """Write (once) and return the path of a seeded standard-normal input array.

    kind="dense": shape (N, d); kind="image": shape (N, H, W, C) (NHWC)."""
    import numpy as np
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if kind == "dense":
        shape = (N, d)
    elif kind == "image":
        shape = (N, *image_shape)
    else:
        raise ValueError(kind)
    path = data_dir / f"{kind}_{'x'.join(map(str, shape))}_seed{seed}.npy"
    if not path.exists():
        x = np.random.default_rng(seed).standard_normal(shape)
        np.save(path, x)
    return path


def run_nt(spec: dict, *, python: str | Path | None = None, timeout: float | None = None,
           load_arrays: bool = True) -> dict:
    """Run one workload through ``_nt_worker.py`` in the NT venv; return its result dict.

    If ``spec["out"]`` is set and ``load_arrays``, the kernel arrays are returned under
    ``"arrays"`` (a dict of numpy arrays)."""
    py = Path(python) if python else ensure_nt_env(quiet=True)
    env = _clean_env()
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    t0 = time.perf_counter()
    try:
        p = subprocess.run([str(py), str(WORKER), json.dumps(spec)], capture_output=True,
                           text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise NTWorkerError(f"neural-tangents worker timed out after {timeout}s: {spec}") from e
    wall = time.perf_counter() - t0
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("NT_RESULT ")]
    if p.returncode != 0 or not lines:
        tail = "\n".join((p.stdout + "\n" + p.stderr).splitlines()[-30:])
        raise NTWorkerError(f"worker failed (rc={p.returncode}) for {spec}:\n{tail}")
    res = json.loads(lines[-1][len("NT_RESULT "):])
    res["subprocess_wall_s"] = wall
    if spec.get("out") and load_arrays:
        import numpy as np
        with np.load(spec["out"]) as z:
            res["arrays"] = {k: z[k] for k in z.files}
    return res


def machine_info() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    mem_gb = round(int(line.split()[1]) / 2**20, 2)
    except OSError:
        pass
    return dict(cpu_model=cpu, logical_cores=os.cpu_count(),
                affinity_cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                ram_gb=mem_gb, platform=platform.platform(),
                host_python=platform.python_version())


def baseline_suite(quick: bool = False) -> list[dict]:
    """The fixed neural-tangents workloads of issue 10 (NTK parameterization, float64)."""
    n_dense, n_big, n_cnn, n_emp = (200, 400, 4, 50) if quick else (2000, 8000, 64, 500)
    suite = []
    for depth in (3, 20):
        for act in ("relu", "erf", "gelu"):
            suite.append(dict(name=f"dense_N{n_dense}_L{depth}_{act}", workload="dense",
                              data=("dense", n_dense), depth=depth, activation=act, repeats=3))
    suite.append(dict(name=f"dense_N{n_big}_L3_relu", workload="dense", data=("dense", n_big),
                      depth=3, activation="relu", repeats=2))
    suite.append(dict(name=f"cnn_gap_N{n_cnn}_16x16x3_3conv", workload="cnn_gap",
                      data=("image", n_cnn), depth=3, repeats=1, batch_size=0))
    # the same with nt.batch blocks of 16x16 images: NT's own memory/time trade-off
    suite.append(dict(name=f"cnn_gap_N{n_cnn}_16x16x3_3conv_bs{n_cnn // 4}", workload="cnn_gap",
                      data=("image", n_cnn), depth=3, repeats=1, batch_size=n_cnn // 4))
    for impl in (1, 2):  # 3 (structured derivatives) fails on jax 0.4.26 (ad.source_info_util)
        suite.append(dict(name=f"empirical_ntk_N{n_emp}_L3_w512_impl{impl}",
                          workload="empirical_ntk", data=("dense", n_emp), depth=3, width=512,
                          implementation=impl, repeats=3))
    return suite


def run_baseline(quick: bool = False, out_json: Path | str = BASELINE_JSON,
                 only: list[str] | None = None, timeout: float = 3000,
                 keep_arrays: bool = False) -> dict:
    py = ensure_nt_env(quiet=True)
    out_json = Path(out_json)
    doc = json.loads(out_json.read_text()) if (only and out_json.exists()) else {}
    doc.update(
        description=("neural-tangents 0.6.5 reference timings (kernel_fn via nt.batch, jitted, "
                     "float64, NTK parameterization, W_std=1.5, b_std=0.05, x2=None). "
                     "first_call_s = compile + first evaluation; steady_s = median of repeats; "
                     "peak_rss_mb = ru_maxrss of the worker process (includes ~550 MB of "
                     "JAX+TensorFlow imports, see rss_before_call_mb). Inputs: seeded standard normal "
                     "(numpy default_rng(0)), dense d=64, images NHWC 16x16x3; regenerate with "
                     "nt_run.make_inputs. Dense/empirical nets use width 512, CNN 256 channels "
                     "(irrelevant for the infinite-width kernel)."),
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        machine=machine_info(),
        nt_versions=versions(DEFAULT_ENV_DIR),
        quick=quick,
    )
    results = doc.setdefault("results", {})
    for w in baseline_suite(quick):
        if only and w["name"] not in only:
            continue
        kind, n = w.pop("data")
        name = w.pop("name")
        x_path = make_inputs(kind, n)
        spec = dict(w, x_path=str(x_path), seed=0, W_std=1.5, b_std=0.05)
        if keep_arrays:
            spec["out"] = str(OUT_DIR / f"nt_{name}.npz")
        print(f"[nt] {name} ...", file=sys.stderr, flush=True)
        try:
            r = run_nt(spec, python=py, timeout=timeout, load_arrays=False)
            r["x_file"] = x_path.name  # no machine-specific absolute paths in the JSON
            r["status"] = "ok"
        except NTWorkerError as e:
            r = dict(status="failed", error=str(e)[-2000:], x_file=x_path.name)
        results[name] = r
        print(f"[nt]   -> {r.get('status')} first={r.get('first_call_s')} "
              f"steady={r.get('steady_s')} peak_rss_mb={r.get('peak_rss_mb')}",
              file=sys.stderr, flush=True)
        out_json.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    return doc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", action="store_true", help="run the fixed suite")
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--only", nargs="*", help="names of suite entries to (re)run")
    ap.add_argument("--out", default=None, help="output JSON (default benchmarks/nt_baseline.json,"
                    " or benchmarks/out/nt_baseline_quick.json with --quick)")
    ap.add_argument("--keep-arrays", action="store_true", help="write kernels to benchmarks/out")
    ap.add_argument("--spec", help="run one JSON spec and print the result")
    a = ap.parse_args(argv)
    if a.spec:
        r = run_nt(json.loads(a.spec), load_arrays=False)
        print(json.dumps(r, indent=1))
        return 0
    if a.baseline:
        out = a.out or (OUT_DIR / "nt_baseline_quick.json" if a.quick else BASELINE_JSON)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        run_baseline(quick=a.quick, out_json=out, only=a.only, keep_arrays=a.keep_arrays)
        print(out)
        return 0
    ap.print_help()
    return 1


if __name__ == "__main__":
    sys.exit(main())
