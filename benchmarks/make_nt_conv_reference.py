"""Generate tests/data/nt_conv_reference.npz: neural-tangents 0.6.5 conv/pooling kernels on small inputs.

    python benchmarks/make_nt_conv_reference.py          # runs itself in the NT venv (benchmarks/_env/nt)

neural-tangents cannot be imported in kernelalg's environment (it pins jax 0.4.26 and numpy<2), so the
conv tests (tests/test_conv.py) read NT's outputs from this fixture: an independent, published
implementation of the CNTK (Novak et al., "Neural Tangents", ICLR 2020). For every case the file stores

* ``<case>.spec``: the architecture as JSON, a list of [stax layer name, args, kwargs] in NT's own
  signatures (the test translates it to kernelalg: same layer names, NT's first positional width argument
  becomes ``out_chan`` / ``out_dim``);
* ``<case>.x1``, ``<case>.x2``: the float64 inputs (seeded standard normal);
* ``<case>.<call>.<field>`` for call in {"sym" (x2=None), "cross" (x2 given)} and field in
  {nngp, ntk, cov1, cov2}, plus ``<case>.<call>.is_reversed`` (NT stores spatial axis pairs reversed after an
  odd number of full-spatial convs; the test undoes it).

The architectures cover Conv in 1-D/2-D/3-D (filter shapes, strides, SAME/VALID/CIRCULAR, W_std, b_std
incl. None, 'ntk' and 'standard' parameterizations), AvgPool (default stride 1, normalize_edges), SumPool,
GlobalAvgPool, GlobalSumPool, Flatten, a network without readout, a small version of the benchmark
network of benchmarks/bench_conv.py, and deep stacks of repeated [Conv, activation] blocks (small versions of
benchmarks/bench_deepcnn.py's networks). All in float64 (jax_enable_x64). Cases are seeded by their position
(100 + index), so new cases go at the end and leave the stored ones unchanged.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "tests" / "data" / "nt_conv_reference.npz"

C = "Conv"


def _conv(width, filt, strides=None, padding="SAME", W_std=1.3, b_std=0.2, param="ntk"):
    kw = {"strides": strides, "padding": padding, "W_std": W_std, "b_std": b_std, "parameterization": param}
    return [C, [width, list(filt)], kw]


RELU, ERF = ["Relu", [], {}], ["Erf", [], {}]

CASES = {  # name: (image shape without batch, layers)
    "bench_small": ((6, 5, 3), [_conv(8, (3, 3), W_std=1.5, b_std=0.05), RELU,
                                _conv(8, (3, 3), W_std=1.5, b_std=0.05), RELU,
                                _conv(8, (3, 3), W_std=1.5, b_std=0.05), RELU,
                                ["GlobalAvgPool", [], {}], ["Dense", [1], {"W_std": 1.5, "b_std": 0.05}]]),
    "mixed_2d_gap": ((7, 6, 2), [_conv(7, (3, 2), (2, 1), "SAME"), RELU,
                                 ["AvgPool", [[2, 2]], {"strides": [1, 2], "padding": "SAME", "normalize_edges": True}],
                                 _conv(7, (2, 2), padding="CIRCULAR"), ERF,
                                 ["SumPool", [[2, 1]], {"strides": [2, 1], "padding": "VALID"}],
                                 _conv(7, (1, 2), padding="VALID"), RELU,
                                 ["GlobalAvgPool", [], {}], ["Dense", [7], {"W_std": 1.1, "b_std": 0.1}]]),
    "pool_defaults_flatten": ((5, 6, 2), [_conv(6, (2, 3), padding="SAME", W_std=0.9, b_std=None), ERF,
                                          ["AvgPool", [[2, 2]], {}],  # default: strides 1, VALID
                                          _conv(6, (2, 2), (2, 1), "VALID", W_std=1.7, b_std=0.3), RELU,
                                          ["Flatten", [], {}], ["Dense", [1], {"W_std": 2.0, "b_std": None}]]),
    "conv3d_flatten": ((3, 2, 4, 2), [_conv(7, (2, 1, 2), (1, 1, 2), "SAME"), RELU,
                                      _conv(7, (1, 2, 2), padding="CIRCULAR"), ERF,
                                      ["Flatten", [], {}], ["Dense", [7], {"W_std": 1.1, "b_std": 0.1}]]),
    "conv3d_pool_gsp": ((3, 3, 3, 1), [_conv(5, (2, 2, 2), padding="CIRCULAR", W_std=1.2, b_std=0.1), RELU,
                                       ["AvgPool", [[2, 1, 2]], {"strides": [1, 1, 2], "padding": "CIRCULAR"}],
                                       ["GlobalSumPool", [], {}]]),
    "conv1d_gsp": ((7, 2), [_conv(7, (3,)), RELU, ["AvgPool", [[2]], {"padding": "CIRCULAR"}],
                            _conv(7, (2,), (2,), "VALID"), ERF, ["GlobalSumPool", [], {}]]),
    "standard_gap": ((5, 4, 2), [_conv(7, (3, 3), param="standard"), RELU,
                                 _conv(5, (2, 2), param="standard", b_std=None), RELU,
                                 ["GlobalAvgPool", [], {}],
                                 ["Dense", [1], {"W_std": 1.2, "b_std": 0.0, "parameterization": "standard"}]]),
    "standard_flatten": ((4, 3, 2), [_conv(6, (2, 2), padding="VALID", W_std=1.4, b_std=0.0, param="standard"),
                                     ERF, ["Flatten", [], {}],
                                     ["Dense", [1], {"W_std": 0.8, "b_std": 0.3, "parameterization": "standard"}]]),
    "spatial_out_one_conv": ((5, 4, 2), [_conv(7, (3, 3), (1, 2), "SAME")]),  # NT returns reversed axes
    "spatial_out_two_convs": ((5, 4, 2), [_conv(7, (3, 3)), RELU, _conv(7, (2, 2), padding="VALID")]),
    # deep networks of repeated [Conv, activation] blocks (kernelalg runs them as one loop): the matching-pixel
    # layout (Flatten), the full pixel-pair grid (GlobalAvgPool), NT's README "Performance" CNN in small
    # (W_std = 1, no bias, no Dense), and repeats whose state shrinks (VALID), which cannot be one loop
    "deep_flatten": ((6, 5, 2), [_conv(4, (3, 3), W_std=1.4, b_std=0.1), RELU] * 6
                     + [["Flatten", [], {}], ["Dense", [1], {"W_std": 1.2, "b_std": 0.05}]]),
    "deep_gap": ((5, 4, 2), [_conv(4, (3, 3), W_std=1.3, b_std=0.1), ERF] * 5 + [["GlobalAvgPool", [], {}]]),
    "deep_readme_flatten": ((5, 5, 3), [_conv(1, (3, 3), (1, 1), "SAME", W_std=1.0, b_std=None), RELU] * 8
                            + [["Flatten", [], {}]]),
    "deep_valid_flatten": ((7, 6, 2), [_conv(3, (2, 2), padding="VALID", W_std=1.5, b_std=0.1), RELU] * 4
                           + [["Flatten", [], {}]]),
}
N1, N2 = 3, 2


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
        rng = np.random.default_rng(100 + seed)
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
            out[f"{name}.{call}.is_reversed"] = np.array(bool(k.is_reversed))
            print(name, call, np.asarray(k.nngp).shape, file=sys.stderr, flush=True)
    np.savez_compressed(out_path, **out)


def main() -> int:
    sys.path.insert(0, str(HERE))
    from nt_env import generator_main
    return generator_main(_worker, Path(__file__).resolve(), OUT)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
