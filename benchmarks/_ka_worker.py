"""kernelalg side of the benchmark harness: the same spec as ``_nt_worker.py``, run in this venv.

    python benchmarks/_ka_worker.py '<json spec>'

Prints one line ``KA_RESULT <json>`` with the timings (fields as in ``_nt_worker.py``) and, when
``spec["out"]`` is set, writes the kernels to that .npz (``nngp``/``ntk``). Each workload runs in a
fresh process, so ``peak_rss_mb`` is the peak of this workload alone (plus the JAX import).

Spec fields (besides those of ``_nt_worker.py``: workload "dense" or "cnn_deep", x_path, depth, activation,
readout, W_std, b_std, get, dtype, repeats, out):

  build         also report ``build_s``: the symbolic trace + lowering (``ka.compile``), separate from
                the first call (jit trace + XLA compile + first evaluation)
  scan          false: lower every layer separately (no ``lax.scan`` of repeated blocks), to measure
                what the scan buys
  batch_size    ``ka.kernel`` tile size (default None: one block)
  device        "cpu" (default) or "gpu" (JAX's default GPU platform)
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time


def _peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / 2**20


def _current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover - non-Linux
        return float("nan")


def _dist_version(name: str) -> str | None:
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def build_net(ka, depth: int, activation: str, W_std: float, b_std: float | None):
    """depth x [Dense, activation] + Dense: the network of ``_nt_worker.py`` (NTK parameterization)."""
    acts = {"relu": ka.Relu, "erf": ka.Erf, "gelu": lambda: ka.Gelu(approximate=False),
            "gelu_tanh": lambda: ka.Gelu(approximate=True)}
    layers = []
    for _ in range(depth):
        layers += [ka.Dense(W_std=W_std, b_std=b_std), acts[activation]()]
    layers.append(ka.Dense(W_std=W_std, b_std=b_std))
    return ka.serial(*layers)


def build_cnn(ka, depth: int, readout: str, W_std: float, b_std: float | None):
    """neural-tangents' README "Performance" CNN: depth x [Conv((3, 3), (1, 1), 'SAME'), Relu] + readout
    (GlobalAvgPool for "gap", Flatten for "flatten"), as in ``_nt_worker.py``."""
    layers = []
    for _ in range(depth):
        layers += [ka.Conv((3, 3), (1, 1), "SAME", W_std=W_std, b_std=b_std), ka.Relu()]
    layers.append(ka.GlobalAvgPool() if readout == "gap" else ka.Flatten())
    return ka.serial(*layers)


def main(argv=None) -> int:
    argv = sys.argv if argv is None else argv
    spec = json.loads(argv[1]) if argv[1].lstrip().startswith("{") else json.load(open(argv[1]))
    if spec.get("device", "cpu") == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    rss_start = _current_rss_mb()
    t_import = time.perf_counter()
    import numpy as np
    import jax
    dtype = spec.get("dtype", "float64")
    jax.config.update("jax_enable_x64", dtype == "float64")
    import kernelalg as ka
    t_import = time.perf_counter() - t_import
    if spec.get("device", "cpu") == "gpu" and jax.default_backend() == "cpu":
        raise SystemExit("device 'gpu' requested but JAX has no GPU backend here (install jax[cuda12])")
    if spec.get("scan", True) is False:
        from kernelalg.backends import _scan
        _scan.MIN_REPEATS = 10**9

    workload = spec["workload"]
    if workload not in ("dense", "cnn_deep"):
        raise SystemExit(f"unknown workload {workload!r}")
    x = np.load(spec["x_path"]) if spec.get("x_path") else \
        np.random.default_rng(int(spec.get("seed", 0))).standard_normal((int(spec.get("N", 2000)),
                                                                         int(spec.get("d", 64))))
    x = x.astype(dtype)
    depth, act = int(spec.get("depth", 3)), spec.get("activation", "relu")
    W_std = float(spec.get("W_std", 1.5))
    b_std = spec.get("b_std", 0.05)
    b_std = None if b_std is None else float(b_std)
    get = tuple(spec.get("get", ["nngp", "ntk"]))
    repeats = int(spec.get("repeats", 3))
    batch_size = spec.get("batch_size")
    net = (build_net(ka, depth, act, W_std, b_std) if workload == "dense"
           else build_cnn(ka, depth, spec["readout"], W_std, b_std))
    device = jax.devices()[0]
    xj = jax.device_put(x, device)

    t0 = time.perf_counter()
    f = ka.compile(net, get=get)
    build = time.perf_counter() - t0

    def call():
        k = f(xj, None, None, batch_size)
        return {g: getattr(k, g) for g in get} if isinstance(get, tuple) else {get: k}

    rss_before = _current_rss_mb()
    t0 = time.perf_counter()
    res = call()
    jax.block_until_ready(res)
    first = time.perf_counter() - t0
    times, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        r = call()
        jax.block_until_ready(r)
        times.append(time.perf_counter() - t0)
        c1 = time.process_time()
        cpu.append(c1 - c0)
        del r
    peak = _peak_rss_mb()

    out = {k: np.asarray(v) for k, v in res.items()}
    if spec.get("out"):
        np.savez(spec["out"], **out)
    result = dict(
        workload=workload, N=x.shape[0], input_shape=list(x.shape[1:]), depth=depth,
        activation=act if workload == "dense" else "relu", readout=spec.get("readout"), W_std=W_std,
        b_std=b_std, get=list(get), batch_size=batch_size, scan=spec.get("scan", True),
        build_s=build, first_call_s=first,
        steady_s=statistics.median(times) if times else None, steady_all_s=times,
        steady_cpu_s=statistics.median(cpu) if cpu else None,
        repeats=repeats, peak_rss_mb=peak, rss_before_call_mb=rss_before, rss_at_start_mb=rss_start,
        import_s=t_import, all_finite=all(bool(np.isfinite(v).all()) for v in out.values()),
        shapes={k: list(v.shape) for k, v in out.items()},
        diag_sample={k: [float(t) for t in np.diagonal(v)[:3]] for k, v in out.items()},
        versions=dict(kernelalg=getattr(ka, "__version__", None), jax=jax.__version__,
                      jaxlib=_dist_version("jaxlib"),
                      numpy=np.__version__, python=platform.python_version()),
        jax_devices=[str(d) for d in jax.devices()], dtype=str(next(iter(out.values())).dtype),
    )
    print("KA_RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
