"""Throughput of ka.gram (kernel entries per second) vs tile size, devices and Dask workers; CNN-GAP per tile.

Writes benchmarks/results/scale.json. Sections:
    tiles     dense 3-layer ReLU NTK, N x N (x2 None: symmetric half), in-process, one device: entries/s vs tile.
    devices   the same at one tile size with the CPU split into k XLA host devices (fresh subprocess each).
    workers   the same to a zarr store: in-process vs Dask LocalCluster (threads; processes with 1, 2 workers),
              cluster start-up reported separately; first run (worker compiles) and a second, warm run.
    cnn_gap   CNN-GAP NTK on 32x32x3 images (the CIFAR shape): seconds per tile from the store's records
              and seconds per kernel entry, the input of the CIFAR-scale plan in docs/scale.md.

Usage: python benchmarks/bench_scale.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import kernelalg as ka  # noqa: E402


def dense_net():
    return ka.Dense(1.5, 0.05) >> ka.Relu() >> ka.Dense(1.5, 0.05) >> ka.Relu() >> ka.Dense(1.5, 0.05)


def cnn_gap(depth: int):
    layers = []
    for _ in range(depth):
        layers += [ka.Conv((3, 3), padding="SAME", W_std=1.5, b_std=0.05), ka.Relu()]
    return ka.serial(*layers, ka.GlobalAvgPool(), ka.Dense(1.5, 0.05))


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def best(fn, repeats: int = 3) -> float:
    """Fastest of ``repeats`` wall times (the machine is shared: the minimum is the least disturbed)."""
    return min(timed(lambda r=r: fn(r))[1] for r in range(repeats))


def bench_tiles(n: int, tiles: list[int], dtype) -> list[dict]:
    x = np.random.default_rng(0).standard_normal((n, 64)).astype(dtype)
    net, rows = dense_net(), []
    _, first = timed(lambda: np.asarray(ka.kernel(net, x, get="ntk")))
    steady = best(lambda r: np.asarray(ka.kernel(net, x, get="ntk")))
    rows.append({"tile": "untiled ka.kernel", "first_s": first, "steady_s": steady, "entries_per_s": n * n / steady})
    for t in tiles:
        _, first = timed(lambda: ka.gram(net, x, tile=t, progress=False))
        steady = best(lambda r: ka.gram(net, x, tile=t, progress=False))
        plan = ka.plan_gram(net, x, tile=t)
        rows.append({"tile": t, "tiles": len(plan.tiles), "first_s": first, "steady_s": steady,
                     "entries_per_s": n * n / steady, "computed_entries_per_s": plan.entries / steady})
        print(f"tile {t}: {n * n / steady:.3g} entries/s", flush=True)
    return rows


_DEVICE_CODE = """
import json, sys, time, jax, numpy as np
sys.path.insert(0, sys.argv[3])
import kernelalg as ka
from bench_scale import dense_net
n, t = int(sys.argv[1]), int(sys.argv[2])
x = np.random.default_rng(0).standard_normal((n, 64)).astype(np.float32)
net = dense_net()
t0 = time.perf_counter(); ka.gram(net, x, tile=t, progress=False); first = time.perf_counter() - t0
steady = float("inf")
for _ in range(3):
    t0 = time.perf_counter(); ka.gram(net, x, tile=t, progress=False); steady = min(steady, time.perf_counter() - t0)
print(json.dumps({"devices": len(jax.devices()), "first_s": first, "steady_s": steady,
                  "entries_per_s": n * n / steady}))
"""


def bench_devices(n: int, tile: int, counts: list[int]) -> list[dict]:
    rows = []
    for k in counts:
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={k}")
        env["PYTHONPATH"] = str(HERE.parent) + os.pathsep + env.get("PYTHONPATH", "")
        out = subprocess.run([sys.executable, "-c", _DEVICE_CODE, str(n), str(tile), str(HERE), str(HERE.parent)],
                             env=env, capture_output=True, text=True, timeout=1200)
        if out.returncode:
            raise RuntimeError(out.stderr)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(dict(row, tile=tile))
        print(f"{k} devices: {row['entries_per_s']:.3g} entries/s", flush=True)
    return rows


def bench_workers(n: int, tile: int, configs: list[tuple[str, int]], dtype) -> list[dict]:
    from distributed import Client, LocalCluster
    x = np.random.default_rng(0).standard_normal((n, 64)).astype(dtype)
    net, rows = dense_net(), []
    with tempfile.TemporaryDirectory() as tmp:
        for mode, workers in configs:
            if mode == "in-process":
                _, first = timed(lambda: ka.gram(net, x, tile=tile, store=f"{tmp}/a", progress=False))
                steady = best(lambda r: ka.gram(net, x, tile=tile, store=f"{tmp}/b{r}", progress=False))
                rows.append({"mode": mode, "workers": 0, "startup_s": 0.0, "first_s": first, "steady_s": steady,
                             "entries_per_s": n * n / steady})
            else:
                (cluster, startup) = timed(lambda: LocalCluster(n_workers=workers, threads_per_worker=1,
                                                                processes=mode == "processes",
                                                                dashboard_address=None, silence_logs=40))
                with cluster, Client(cluster) as c:
                    tag = f"{mode}{workers}"
                    _, first = timed(lambda: ka.gram(net, x, tile=tile, store=f"{tmp}/{tag}a", client=c,
                                                     tiles_per_task=1, progress=False))
                    steady = best(lambda r: ka.gram(net, x, tile=tile, store=f"{tmp}/{tag}b{r}", client=c,
                                                    tiles_per_task=1, progress=False))
                rows.append({"mode": f"dask {mode}", "workers": workers, "startup_s": startup, "first_s": first,
                             "steady_s": steady, "entries_per_s": n * n / steady})
            print(rows[-1], flush=True)
    return rows


def bench_cnn(depth: int, n: int, tile: int) -> dict:
    net = cnn_gap(depth)
    x = np.random.default_rng(0).standard_normal((n, 32, 32, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        _, first = timed(lambda: ka.gram(net, x, tile=tile, store=f"{tmp}/a", progress=False))
        cpu0 = time.process_time()
        st, steady = timed(lambda: ka.gram(net, x, tile=tile, store=f"{tmp}/b", progress=False))
        cpu = time.process_time() - cpu0  # CPU seconds of all threads: robust to other jobs on the machine
        per_tile = [r["seconds"] for r in st.records().values()]
    pairs_per_tile = tile * tile
    from kernelalg.scale._tiles import evaluator  # XLA's peak bytes per device of one tile call
    import jax
    f = ka.compile(net, ("ntk",))
    ev = evaluator(f, 1, np.float32, None, jax.devices()[:1])
    tile_bytes = {t: ev.tile_bytes(x, t) for t in (tile, 2 * tile, 64, 256)}  # compile only, no evaluation
    row = {"tile_bytes": tile_bytes, "depth": depth, "images": n, "tile": tile, "tiles": len(per_tile),
           "first_run_s": first,
           "steady_run_s": steady, "steady_run_cpu_s": cpu,
           "cpu_s_per_entry": cpu / (len(per_tile) * pairs_per_tile),
           "per_tile_s_median": float(np.median(per_tile)),
           "per_tile_s_all": per_tile, "per_entry_s": float(np.median(per_tile)) / pairs_per_tile,
           "dtype": "float32"}
    print(f"CNN-GAP depth {depth}: {row['per_tile_s_median']:.3g} s per {tile}x{tile} tile", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--out", default=str(HERE / "results" / "scale.json"))
    ap.add_argument("--only", choices=("tiles", "devices", "workers", "cnn_gap"),
                    help="rerun one section and update it in an existing --out file")
    args = ap.parse_args()
    n = 512 if args.quick else 4096
    tiles = [128, 512] if args.quick else [256, 512, 1024, 2048, 4096]
    import jax
    import dask
    import zarr
    res = {"description": "ka.gram throughput (kernel entries of the full N x N matrix per second, wall clock; "
                          "x2=None so only the upper tile triangle is computed). Dense: 3-layer ReLU NTK, d=64, "
                          "float32, get='ntk'. CPU only. steady_s: fastest of 3 runs after the first (compiling) one.",
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {"cpu": platform.processor() or platform.machine(), "logical_cores": os.cpu_count(),
                       "affinity_cores": len(os.sched_getaffinity(0)), "platform": platform.platform(),
                       "note": "2-core AMD EPYC VM shared with other jobs: absolute numbers are noisy"},
           "versions": {"jax": jax.__version__, "dask": dask.__version__, "zarr": zarr.__version__,
                        "numpy": np.__version__, "python": platform.python_version()},
           "quick": args.quick, "N": n}
    out = Path(args.out)
    if args.only:
        res = dict(json.loads(out.read_text()), **{k: res[k] for k in ("date", "machine", "versions")})
    sections = {
        "tiles": lambda: bench_tiles(n, tiles, np.float32),
        "devices": lambda: bench_devices(n, 512 if not args.quick else 128, [1, 2]),
        "workers": lambda: bench_workers(n, 1024 if not args.quick else 128,
                                         [("in-process", 0), ("threads", 1), ("processes", 1), ("processes", 2)],
                                         np.float32),
        "cnn_gap": lambda: [bench_cnn(3, 4 if args.quick else 8, 2 if args.quick else 4)],
    }
    for name, fn in sections.items():
        if args.only in (None, name):
            res[name] = fn()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
