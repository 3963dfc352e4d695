"""Training beyond the lazy regime: memory of the recorders, width convergence to the linearized model, and the
sharpness of muP vs NTK networks across widths (super consistency).

    python benchmarks/bench_train.py memory                      # width 4096, 10 outputs, 1000 points
    python benchmarks/bench_train.py width                       # |f - f_lin| and |theta - theta_0| vs width
    python benchmarks/bench_train.py sharpness --param mup --width 1024 --lr 40   # one trajectory (into the JSON)
    python benchmarks/bench_train.py report                      # tables from benchmarks/results/train_*.json

Each measurement runs in a fresh subprocess; peak memory is its ``ru_maxrss`` (JAX import included), time is
wall and CPU seconds (the machine is shared: CPU time is the steadier number).

* memory: ``ka.train`` of Dense(64 -> 4096) >> Relu >> Dense(4096) >> Relu >> Dense(10), float32, 1000
  training and 200 test points (seeded normal inputs, one-hot labels), MSE, 3 full-batch SGD steps, recorders
  loss, outputs, distance, ntk (train x train and test x train, structured route, at steps 0 and 3) and the
  linearized model side by side. A full Jacobian of this network would take 16.9M x 10^4 x 4 B = 680 GB.
* width: Dense(3 -> n) >> Erf >> Dense(1), 8 points on the sphere, GD at half the infinite-width maximal
  rate for 100 steps, 6 seeds per width; RMS |f - f_lin| over 8 training + 4 test points, relative |theta - theta_0|.
* sharpness: Dense(64 -> n) >> Relu >> Dense(n) >> Relu >> Dense(10) on 128 scikit-learn digits (pixels / 16,
  centred; one-hot targets), MSE, full-batch SGD at one learning rate for every width (default 40), 120 steps,
  top Hessian eigenvalue (Lanczos, 20 steps) at steps 0, 10, 20, 40, 60, 80, 100, 120; "mup" (lr_rule "sgd")
  and "ntk"; one initialisation (seed 0) per width.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SHARP_STEPS = [0, 10, 20, 40, 60, 80, 100, 120]
SHARP_LR = 40.0


def _usage(t0: float, c0: float) -> dict:
    return {"wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(time.process_time() - c0, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def memory_worker() -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    import jax
    import numpy as np

    import kernelalg as ka
    rng = np.random.default_rng(0)
    x, xt = rng.standard_normal((1000, 64)).astype(np.float32), rng.standard_normal((200, 64)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 1000)]
    net = ka.Dense(1.4, 0.1) >> ka.Relu() >> ka.Dense(1.4, 0.1) >> ka.Relu() >> ka.Dense(1.0, 0.1)
    twin = ka.finite(net, 4096, out_dim=10)
    params = twin.init(0, (64,))
    n_params = sum(int(a.size) for a in jax.tree_util.tree_leaves(params))
    run = ka.train(twin, params, x, y, 3, 0.5, x_test=xt,
                   record={"loss": 1, "outputs": [0, 3], "distance": [0, 3], "ntk": [0, 3], "linearized": None})
    out = {"n_params": n_params, "ntk_shape": list(run["ntk"]["train"].shape),
           "ntk_test_shape": list(run["ntk"]["test_train"].shape),
           "loss": [float(v) for v in run["loss"]["train"]], "linear_loss": [float(v) for v in run.linear["loss"]["train"]],
           "ntk_kernel_distance_0_3": float(ka.analysis.kernel_distance(run["ntk"]["train"][0], run["ntk"]["train"][1])),
           "full_jacobian_gb": n_params * 10 * 1000 * 4 / 1e9}
    return out | _usage(t0, c0)


def width_worker(width: int) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    import jax
    import jax.numpy as jnp
    import numpy as np

    import kernelalg as ka
    from kernelalg import analysis as A
    jax.config.update("jax_enable_x64", True)
    net = ka.Dense(1.5, 0.1) >> ka.Erf() >> ka.Dense(1.5, 0.1)
    x, xt = A.sphere_points(8, 3, seed=4), A.sphere_points(4, 3, seed=5)
    y = np.sin(2 * x[:, 0])
    lr = 0.5 * A.max_learning_rate(np.asarray(ka.kernel(net, x, get="ntk"), np.float64))
    gaps, moved = [], []
    for seed in range(6):
        twin = ka.finite(net, width)
        p = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), twin.init(seed, (3,)))
        run = ka.train(twin, p, x, y, 100, lr, x_test=xt,
                       record={"outputs": [100], "distance": [100], "linearized": None})
        d = np.concatenate([run["outputs"][k][-1] - run.linear["outputs"][k][-1] for k in ("train", "test")])
        gaps.append(float(np.sqrt(np.mean(d ** 2))))
        moved.append(float(run["distance"]["relative"][-1]))
    return {"width": width, "gap": gaps, "relative_distance": moved} | _usage(t0, c0)


def sharpness_worker(param: str, width: int, lr: float) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    import numpy as np
    from sklearn.datasets import load_digits

    import kernelalg as ka
    digits = load_digits()
    x = digits.data[:128].astype(np.float32) / 16.0
    x = x - x.mean(0)
    y = np.eye(10, dtype=np.float32)[digits.target[:128]]
    net = ka.Dense(1.4, 0.1) >> ka.Relu() >> ka.Dense(1.4, 0.1) >> ka.Relu() >> ka.Dense(1.0, 0.1)
    twin = ka.finite(net, width, out_dim=10, parametrization=param)
    run = ka.train(twin, twin.init(0, (64,)), x, y, SHARP_STEPS[-1], lr,
                   lr_rule="sgd" if param in ("mup", "mean_field") else None,
                   record={"sharpness": SHARP_STEPS, "loss": SHARP_STEPS}, lanczos_iters=20)
    return {"param": param, "width": width, "lr": lr, "steps": SHARP_STEPS,
            "sharpness": [float(v) for v in run["sharpness"]["eigenvalues"][:, 0]],
            "residual": [float(v) for v in run["sharpness"]["residuals"][:, 0]],
            "loss": [float(v) for v in run["loss"]["train"]]} | _usage(t0, c0)


def _spawn(args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(HERE.parent), TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", *args], check=True,
                         capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _store(name: str, entry: dict, key: tuple) -> None:
    path = RESULTS / f"train_{name}.json"
    data = json.loads(path.read_text()) if path.exists() else []
    data = [d for d in data if tuple(d.get(k) for k in ("param", "width", "lr")) != key] + [entry]
    path.write_text(json.dumps(data, indent=1))


def report() -> str:
    import numpy as np
    lines = []
    mem = RESULTS / "train_memory.json"
    if mem.exists():
        m = json.loads(mem.read_text())[-1]
        lines.append(f"memory: {m['n_params'] / 1e6:.1f}M parameters, NTK {m['ntk_shape']} + {m['ntk_test_shape']}: "
                     f"peak RSS {m['peak_rss_mb']:.0f} MB, wall {m['wall_s']} s, CPU {m['cpu_s']} s "
                     f"(full Jacobian: {m['full_jacobian_gb']:.0f} GB)")
    wid = RESULTS / "train_width.json"
    if wid.exists():
        rows = sorted(json.loads(wid.read_text()), key=lambda d: d["width"])
        ws = [r["width"] for r in rows]
        g = [np.mean(r["gap"]) for r in rows]
        d = [np.mean(r["relative_distance"]) for r in rows]
        for r, gi, di in zip(rows, g, d):
            lines.append(f"width {r['width']}: RMS |f - f_lin| = {gi:.3g} +- {np.std(r['gap'], ddof=1) / np.sqrt(6):.2g}, "
                         f"|theta - theta0|/|theta0| = {di:.3g}")
        lines.append(f"slopes: |f - f_lin| {np.polyfit(np.log(ws), np.log(g), 1)[0]:.2f}, "
                     f"parameters {np.polyfit(np.log(ws), np.log(d), 1)[0]:.2f}")
    sh = RESULTS / "train_sharpness.json"
    if sh.exists():
        rows = sorted(json.loads(sh.read_text()), key=lambda d: (d["param"], d["lr"], d["width"]))
        for r in rows:
            s = r["sharpness"]
            lines.append(f"{r['param']:>5} lr {r['lr']:g} width {r['width']:>5}: sharpness "
                         + " ".join(f"{v:.3g}" for v in s)
                         + f" | ratio end/start {s[-1] / s[0]:.2f} | loss {r['loss'][0]:.3g} -> {r['loss'][-1]:.3g}"
                         + f" | CPU {r['cpu_s']} s")
        for param, lr in sorted({(r["param"], r["lr"]) for r in rows}):
            traj = np.array([r["sharpness"] for r in rows if (r["param"], r["lr"]) == (param, lr)])
            spread = (traj.max(0) - traj.min(0)) / traj.mean(0)
            lines.append(f"{param} lr {lr:g}: (max - min) / mean across widths per step "
                         + " ".join(f"{v:.2f}" for v in spread))
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind = sys.argv[2]
        res = (memory_worker() if kind == "memory" else width_worker(int(sys.argv[3])) if kind == "width"
               else sharpness_worker(sys.argv[3], int(sys.argv[4]), float(sys.argv[5])))
        print(json.dumps(res))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["memory", "width", "sharpness", "report"])
    ap.add_argument("--param", default="mup")
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--lr", type=float, default=SHARP_LR)
    a = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    if a.what == "memory":
        _store("memory", _spawn(["memory"]), (None, None, None))
    elif a.what == "width":
        for w in ([a.width] if a.width else [256, 1024, 4096, 16384]):
            _store("width", _spawn(["width", str(w)]), (None, w, None))
    elif a.what == "sharpness":
        for w in ([a.width] if a.width else [256, 512, 1024, 2048, 4096]):
            _store("sharpness", _spawn(["sharpness", a.param, str(w), str(a.lr)]), (a.param, w, a.lr))
    print(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
