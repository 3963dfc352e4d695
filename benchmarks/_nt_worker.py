"""neural-tangents side of the benchmark harness (run with the NT venv's python).

Not importable from kernelalg's environment: it needs neural-tangents 0.6.5, which lives in
``benchmarks/_env/nt`` (see ``benchmarks/nt_env.py``).  The harness calls it as::

    <nt-python> benchmarks/_nt_worker.py '<json spec>'      # or a path to a .json file
    <nt-python> benchmarks/_nt_worker.py - < spec.json        # spec on stdin

and reads the last stdout line starting with ``NT_RESULT `` (a JSON object with the timings).
Kernel arrays go to ``spec["out"]`` (.npz with ``nngp``/``ntk``) when given.

Spec fields (all optional except ``workload``):

  workload      "dense" | "cnn_gap" | "cnn_deep" | "empirical_ntk"
  x_path        .npy with the inputs (preferred: the harness writes the data so both libraries
                see the same numbers); otherwise inputs are drawn from ``seed``
  seed          numpy seed for generated inputs (default 0): standard normal, shape (N, d) for
                dense / empirical_ntk, (N, H, W, C_in) for cnn_gap
  N, d          dense / empirical_ntk inputs (default 2000, 64)
  depth         number of hidden [Dense/Conv + activation] blocks (dense default 3, cnn 3)
  activation    "relu" | "erf" | "gelu" | "gelu_tanh" (dense; cnn uses relu)
  W_std, b_std  weight / bias std (defaults 1.5, 0.05); b_std null means no bias
  width         finite width used in the layer definitions (512; irrelevant for the
                infinite-width kernel in NTK parameterization) / the empirical net's width
  channels      cnn channels (default 256; irrelevant for the kernel)
  image_shape   cnn [H, W, C_in] (default [16, 16, 3])
  get           ["nngp", "ntk"] (default both)
  batch_size    nt.batch batch size (0 = whole kernel in one jitted call, the default)
  readout       cnn_deep: "gap" (GlobalAvgPool) or "flatten" (Flatten); the network is neural-tangents'
                README "Performance" CNN: depth x [Conv(channels, (3, 3), (1, 1), 'SAME', W_std, b_std), Relu]
                + readout, no Dense (defaults there: W_std 1, b_std null, channels 1, images 32x32x3)
  dtype         "float64" (default; jax_enable_x64) or "float32" (x64 off, inputs cast to float32)
  repeats       steady-state repeats, median reported (default 3)
  out           .npz path for the kernel outputs (omit to skip writing)
  implementation  empirical NTK implementation (1 = Jacobian contraction, NT's default;
                2 = NTK-vector products; 3 = structured derivatives, which fails with
                jax 0.4.26: AttributeError jax.interpreters.ad.source_info_util)
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time


def _rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / 2**20


def _current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover - non-Linux
        return float("nan")


def _load_spec(argv) -> dict:
    if len(argv) < 2 or argv[1] == "-":
        return json.loads(sys.stdin.read())
    arg = argv[1]
    if arg.lstrip().startswith("{"):
        return json.loads(arg)
    with open(arg) as f:
        return json.load(f)


def main(argv=None) -> int:
    argv = sys.argv if argv is None else argv
    spec = _load_spec(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # NT imports TensorFlow (tf2jax): quiet it

    rss_start = _current_rss_mb()
    t_import = time.perf_counter()
    import numpy as np
    import jax
    dtype = spec.get("dtype", "float64")
    jax.config.update("jax_enable_x64", dtype == "float64")
    import jax.numpy as jnp
    import neural_tangents as nt
    from neural_tangents import stax
    t_import = time.perf_counter() - t_import

    workload = spec["workload"]
    seed = int(spec.get("seed", 0))
    get = tuple(spec.get("get", ["nngp", "ntk"]))
    repeats = int(spec.get("repeats", 3))
    batch_size = int(spec.get("batch_size", 0))
    W_std = float(spec.get("W_std", 1.5))
    b_std = spec.get("b_std", 0.05)
    b_std = None if b_std is None else float(b_std)
    rng = np.random.default_rng(seed)

    acts = {
        "relu": stax.Relu,
        "erf": stax.Erf,
        "gelu": lambda: stax.Gelu(approximate=False),
        "gelu_tanh": lambda: stax.Gelu(approximate=True),
    }

    info = {"workload": workload}
    if workload in ("dense", "empirical_ntk"):
        if spec.get("x_path"):
            x = np.load(spec["x_path"]).astype(np.float64)
        else:
            x = rng.standard_normal((int(spec.get("N", 2000)), int(spec.get("d", 64))))
        depth = int(spec.get("depth", 3))
        width = int(spec.get("width", 512))
        act_name = spec.get("activation", "relu")
        info.update(N=x.shape[0], d=x.shape[1], depth=depth, activation=act_name,
                    W_std=W_std, b_std=b_std, width=width)
        layers = []
        for _ in range(depth):
            layers += [stax.Dense(width, W_std=W_std, b_std=b_std), acts[act_name]()]
        layers += [stax.Dense(1, W_std=W_std, b_std=b_std)]
        init_fn, apply_fn, kernel_fn = stax.serial(*layers)
    elif workload == "cnn_gap":
        H, W, C_in = spec.get("image_shape", [16, 16, 3])
        if spec.get("x_path"):
            x = np.load(spec["x_path"]).astype(np.float64)
        else:
            x = rng.standard_normal((int(spec.get("N", 64)), H, W, C_in))
        depth = int(spec.get("depth", 3))
        channels = int(spec.get("channels", 256))
        info.update(N=x.shape[0], image_shape=list(x.shape[1:]), depth=depth, channels=channels,
                    W_std=W_std, b_std=b_std, padding="SAME", filter_shape=[3, 3],
                    layout="NHWC")
        layers = []
        for _ in range(depth):
            layers += [stax.Conv(channels, (3, 3), padding="SAME", W_std=W_std, b_std=b_std),
                       stax.Relu()]
        layers += [stax.GlobalAvgPool(), stax.Dense(1, W_std=W_std, b_std=b_std)]
        init_fn, apply_fn, kernel_fn = stax.serial(*layers)
    elif workload == "cnn_deep":
        x = np.load(spec["x_path"])
        depth, channels, readout = int(spec.get("depth", 21)), int(spec.get("channels", 1)), spec["readout"]
        info.update(N=x.shape[0], image_shape=list(x.shape[1:]), depth=depth, channels=channels, W_std=W_std,
                    b_std=b_std, padding="SAME", filter_shape=[3, 3], layout="NHWC", readout=readout)
        layers = []
        for _ in range(depth):
            layers += [stax.Conv(channels, (3, 3), (1, 1), "SAME", W_std=W_std, b_std=b_std), stax.Relu()]
        layers.append(stax.GlobalAvgPool() if readout == "gap" else stax.Flatten())
        init_fn, apply_fn, kernel_fn = stax.serial(*layers)
    else:
        raise SystemExit(f"unknown workload {workload!r}")

    xj = jnp.asarray(x.astype(dtype))
    info["dtype_requested"] = dtype

    if workload == "empirical_ntk":
        impl = int(spec.get("implementation", 1))
        info.update(implementation=impl, get=["ntk"])
        _, params = init_fn(jax.random.PRNGKey(seed), x.shape)
        ntk_fn = jax.jit(nt.empirical_ntk_fn(apply_fn, vmap_axes=0, implementation=impl))
        call = lambda: {"ntk": ntk_fn(xj, None, params)}
    else:
        info.update(get=list(get), batch_size=batch_size)
        # nt.batch jits internally; batch_size=0 -> a single jitted call on the whole kernel.
        kfn = nt.batch(kernel_fn, batch_size=batch_size, store_on_device=False)
        def call():
            k = kfn(xj, None, get)
            return dict(zip(get, k)) if isinstance(k, tuple) else {get[0]: k}

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
    peak = _rss_mb()

    out_arrays = {k: np.asarray(v) for k, v in res.items()}
    finite = all(bool(np.all(np.isfinite(v))) for v in out_arrays.values())
    if spec.get("out"):
        np.savez(spec["out"], **out_arrays)

    result = dict(
        info,
        first_call_s=first,
        steady_s=statistics.median(times) if times else None,
        steady_all_s=times,
        steady_cpu_s=statistics.median(cpu) if cpu else None,
        repeats=repeats,
        peak_rss_mb=peak,
        rss_before_call_mb=rss_before,
        rss_at_start_mb=rss_start,
        import_s=t_import,
        all_finite=finite,
        shapes={k: list(v.shape) for k, v in out_arrays.items()},
        diag_sample={k: [float(t) for t in np.diagonal(v)[:3]] if v.ndim == 2 else None
                     for k, v in out_arrays.items()},
        versions=dict(neural_tangents=nt.__version__, jax=jax.__version__,
                      jaxlib=jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
                      numpy=np.__version__, python=platform.python_version()),
        jax_devices=[str(d) for d in jax.devices()],
        dtype=str(next(iter(out_arrays.values())).dtype),
    )
    print("NT_RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
