"""Generate tests/data/nt_resize_reference.npz: neural-tangents 0.6.5 kernels of ConvTranspose / ImageResize nets.

    python benchmarks/make_nt_resize_reference.py    # runs itself in the NT venv (benchmarks/_env/nt)

Like benchmarks/make_nt_conv_reference.py: neural-tangents cannot be imported in kernelalg's environment, so
tests/test_resize.py reads NT's outputs (Novak et al., "Neural Tangents", ICLR 2020; stax.ConvTranspose,
stax.ImageResize) from this fixture. For every case the file stores

* ``<case>.spec``: the architecture as JSON, a list of [stax layer name, args, kwargs] in NT's signatures
  (NT's first positional width argument of Conv/ConvTranspose/Dense becomes ``out_chan`` / ``out_dim``);
* ``<case>.x1``, ``<case>.x2``: float64 inputs (seeded standard normal);
* ``<case>.<call>.<field>`` for call in {"sym" (x2=None), "cross" (x2 given)} and field in
  {nngp, ntk, cov1, cov2}. Every case ends in a readout (Flatten, GlobalAvgPool, GlobalSumPool), so the
  arrays have no pixel axes.

The cases cover ConvTranspose in 1-D and 2-D (SAME, VALID, CIRCULAR with filter wider and narrower than the
stride, strides 1-3, with and without bias, 'ntk' and 'standard'), ImageResize up and down ('linear' with and
without antialias, 'nearest', -1 axes, directly on the input, a no-op), followed by Relu/Erf (after an affine layer: a resized activation is not Gaussian), Conv and
Flatten/GlobalAvgPool/GlobalSumPool readouts. All in float64 (jax_enable_x64); cases are seeded by their
position (300 + index), so new cases go at the end.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "tests" / "data" / "nt_resize_reference.npz"

RELU, ERF = ["Relu", [], {}], ["Erf", [], {}]
FLAT, GAP, GSP = ["Flatten", [], {}], ["GlobalAvgPool", [], {}], ["GlobalSumPool", [], {}]


def _ct(width, filt, strides=None, padding="SAME", W_std=1.3, b_std=0.2, param="ntk"):
    kw = {"strides": strides, "padding": padding, "W_std": W_std, "b_std": b_std, "parameterization": param}
    return ["ConvTranspose", [width, list(filt)], kw]


def _conv(width, filt, padding="SAME", W_std=1.2, b_std=0.1, param="ntk"):
    kw = {"padding": padding, "W_std": W_std, "b_std": b_std, "parameterization": param}
    return ["Conv", [width, list(filt)], kw]


def _resize(shape, method, **kw):
    return ["ImageResize", [list(shape), method], kw]


def _dense(width=1, W_std=1.1, b_std=0.1):
    return ["Dense", [width], {"W_std": W_std, "b_std": b_std}]


CASES = {  # name: (image shape without batch, layers)
    "ct2d_same_flatten": ((4, 3, 2), [_ct(6, (3, 3), (2, 2), "SAME"), RELU, FLAT, _dense()]),
    "ct2d_valid_gap": ((3, 4, 2), [_ct(6, (2, 3), (1, 2), "VALID", W_std=1.5, b_std=None), ERF,
                                   _conv(5, (2, 2)), RELU, GAP]),
    "ct2d_circular_gap": ((3, 4, 2), [_ct(5, (3, 2), (2, 2), "CIRCULAR"), RELU, GAP, _dense()]),
    "ct2d_circular_flatten": ((3, 3, 2), [_ct(5, (4, 3), (2, 1), "CIRCULAR", W_std=1.1), ERF, FLAT]),
    "ct1d_wide_circular_gsp": ((3, 2), [_ct(5, (7,), (2,), "CIRCULAR"), RELU, GSP]),
    "ct1d_valid_stride3_gap": ((4, 3), [_ct(5, (2,), (3,), "VALID", b_std=0.3), RELU,
                                        _ct(5, (4,), (1,), "SAME"), ERF, GAP]),
    "ct1d_same_even_flatten": ((5, 2), [_ct(5, (4,), (2,), "SAME"), RELU, _ct(5, (2,), (3,), "CIRCULAR"), RELU,
                                        FLAT, _dense()]),
    "ct_standard_gap": ((3, 3, 2), [_conv(4, (2, 2), param="standard"), RELU,
                                    _ct(6, (3, 3), (2, 2), "SAME", param="standard"), RELU,
                                    _ct(3, (2, 2), (1, 1), "VALID", b_std=None, param="standard"), ERF, GAP]),
    "resize2d_linear_up_gap": ((3, 4, 2), [_conv(5, (3, 3)), _conv(5, (2, 2)), _resize((-1, 7, 6, -1), "linear"), RELU,
                                           _conv(5, (2, 2)), ERF, GAP, _dense()]),
    "resize2d_bilinear_down_flatten": ((7, 6, 2), [_conv(5, (3, 3)), ERF, _conv(4, (2, 2)),
                                                   _resize((-1, 3, 4, -1), "bilinear"), RELU, FLAT, _dense()]),
    "resize2d_noalias_down_gap": ((7, 5, 2), [_conv(5, (2, 2)), RELU, _conv(5, (2, 2)),
                                              _resize((-1, 3, -1, -1), "linear", antialias=False), ERF, GAP]),
    "resize2d_nearest_mixed_flatten": ((5, 4, 2), [_conv(5, (3, 3)), RELU, _conv(5, (2, 2)),
                                                   _resize((-1, 8, 3, -1), "nearest"), RELU, FLAT]),
    "resize1d_input_linear_gsp": ((5, 2), [_resize((-1, 9, -1), "linear"), _conv(5, (3,)), RELU, GSP]),
    "resize1d_nearest_down_gap": ((7, 2), [_conv(5, (2,)), ERF, _resize((-1, 3, -1), "nearest"), GAP]),
    "resize_noop_flatten": ((4, 3, 2), [_conv(5, (3, 3)), _resize((-1, -1, -1, -1), "linear"), ERF, FLAT]),
    "ct_then_resize_gap": ((3, 3, 2), [_conv(5, (2, 2)), _ct(5, (3, 3), (2, 2), "SAME"), _resize((-1, 4, 5, -1), "linear"),
                                       ERF, GAP, _dense()]),
}
N1, N2 = 3, 2

#: neural-tangents 0.6.5's ImageResize ignores its own reversed spatial axes (``Kernel.is_reversed``, set after
#: an odd number of full-spatial Conv/ConvTranspose layers): it then resizes height by the width target and
#: vice versa (with (-1, 8, 3, -1) on 3x8 images it resizes nothing). The CASES above therefore resize only
#: the input or after an even number of convolutions. For the odd case this network's NNGP (linear in the
#: weights, so its empirical NNGP is unbiased at any width) is stored from NT's own Monte Carlo
#: (``<name>.mc_mean``, ``<name>.mc_se``: MC_BATCHES batches of MC_SAMPLES networks of width 256) next
#: to NT's analytic value (``<name>.nt_nngp``, which equals the kernel without the resize).
MC_CASE = ("resize_after_one_conv_mc", (3, 8, 2), [_conv(256, (3, 3)), _resize((-1, 8, 3, -1), "linear"), GSP])
MC_BATCHES, MC_SAMPLES = 10, 40


def _worker(out_path: str) -> None:
    """Runs inside the NT venv."""
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import neural_tangents as nt
    from neural_tangents import stax

    def tup(v):
        return tuple(v) if isinstance(v, list) else v

    out = {"_versions": np.array(json.dumps({"neural_tangents": nt.__version__, "jax": jax.__version__,
                                             "numpy": np.__version__}))}
    for seed, (name, (shape, layers)) in enumerate(CASES.items()):
        rng = np.random.default_rng(300 + seed)
        x1, x2 = rng.standard_normal((N1,) + shape), rng.standard_normal((N2,) + shape)
        kernel_fn = stax.serial(*[getattr(stax, n)(*map(tup, a), **{k: tup(v) for k, v in kw.items()})
                                  for n, a, kw in layers])[2]
        out[f"{name}.spec"] = np.array(json.dumps(layers))
        out[f"{name}.x1"], out[f"{name}.x2"] = x1, x2
        for call, b in (("sym", None), ("cross", x2)):
            k = kernel_fn(x1, b, get=None)
            for field in ("nngp", "ntk", "cov1", "cov2"):
                v = getattr(k, field)
                if v is not None:
                    out[f"{name}.{call}.{field}"] = np.asarray(v, np.float64)
            print(name, call, np.asarray(k.nngp).shape, file=sys.stderr, flush=True)
    name, shape, layers = MC_CASE
    x = np.random.default_rng(299).standard_normal((N1,) + shape)
    init_fn, apply_fn, kernel_fn = stax.serial(*[getattr(stax, n)(*map(tup, a), **{k: tup(v) for k, v in kw.items()})
                                                 for n, a, kw in layers])
    est = np.array([np.asarray(nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.PRNGKey(i), n_samples=MC_SAMPLES,
                                                        trace_axes=(-1,))(x, None, "nngp")) for i in range(MC_BATCHES)])
    out[f"{name}.spec"], out[f"{name}.x1"] = np.array(json.dumps(layers)), x
    out[f"{name}.mc_mean"], out[f"{name}.mc_se"] = est.mean(0), est.std(0, ddof=1) / np.sqrt(MC_BATCHES)
    out[f"{name}.nt_nngp"] = np.asarray(kernel_fn(x, None, "nngp"))
    np.savez_compressed(out_path, **out)


def main() -> int:
    sys.path.insert(0, str(HERE))
    from nt_env import generator_main
    return generator_main(_worker, Path(__file__).resolve(), OUT)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
