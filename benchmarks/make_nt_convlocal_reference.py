"""Generate tests/data/nt_convlocal_reference.npz: neural-tangents 0.6.5 ConvLocal (LCN) kernels on small inputs.

    python benchmarks/make_nt_convlocal_reference.py     # runs itself in the NT venv (benchmarks/_env/nt)

neural-tangents cannot be imported in kernelalg's environment, so tests/test_convlocal.py reads NT's outputs
from this fixture: an independent, published implementation of the locally connected (unshared conv) kernel
(Novak et al., "Bayesian deep convolutional networks with many channels are Gaussian processes", ICLR 2019).
The file layout is the one of benchmarks/make_nt_conv_reference.py: ``<case>.spec`` (NT stax layers as JSON),
``<case>.x1``, ``<case>.x2`` (float64, seeded standard normal) and ``<case>.<call>.<field>`` for call in
{"sym", "cross"} and field in {nngp, ntk, cov1, cov2}, plus ``<case>.<call>.is_reversed``.

The cases cover ConvLocal on 1-D and 2-D images, SAME/VALID/CIRCULAR padding, strides, W_std, b_std (incl.
None), 'ntk' and 'standard' parameterizations, followed by Relu/Erf, Flatten and GlobalAvgPool readouts,
mixed with Conv and AvgPool, and a network without readout. All in float64. Cases are seeded by their
position (200 + index), so new cases go at the end.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "tests" / "data" / "nt_convlocal_reference.npz"

L, C = "ConvLocal", "Conv"


def _conv(width, filt, strides=None, padding="SAME", W_std=1.3, b_std=0.2, param="ntk", kind=L):
    kw = {"strides": strides, "padding": padding, "W_std": W_std, "b_std": b_std, "parameterization": param}
    return [kind, [width, list(filt)], kw]


RELU, ERF = ["Relu", [], {}], ["Erf", [], {}]
FLAT, GAP = ["Flatten", [], {}], ["GlobalAvgPool", [], {}]

CASES = {  # name: (image shape without batch, layers)
    "same_relu_flatten": ((5, 4, 2), [_conv(8, (3, 3)), RELU, _conv(8, (2, 2), W_std=1.5, b_std=0.05), RELU,
                                      FLAT, ["Dense", [1], {"W_std": 1.5, "b_std": 0.05}]]),
    "strided_valid_erf_gap": ((7, 6, 2), [_conv(7, (3, 2), (2, 1), "VALID", W_std=1.4, b_std=0.3), ERF,
                                          _conv(7, (2, 2), padding="SAME", W_std=1.1, b_std=None), RELU,
                                          GAP, ["Dense", [1], {"W_std": 1.2, "b_std": 0.1}]]),
    "circular_1d_gap": ((7, 2), [_conv(6, (3,), padding="CIRCULAR"), RELU,
                                 _conv(6, (2,), (2,), "CIRCULAR", W_std=0.9, b_std=0.4), ERF, GAP]),
    "circular_1d_flatten": ((6, 3), [_conv(6, (3,), (2,), padding="CIRCULAR", W_std=1.2), ERF, FLAT,
                                     ["Dense", [1], {"W_std": 1.0, "b_std": 0.2}]]),
    "standard_flatten": ((4, 5, 2), [_conv(6, (2, 2), padding="VALID", W_std=1.4, b_std=0.1, param="standard"),
                                     RELU, _conv(5, (2, 2), padding="SAME", param="standard"), ERF, FLAT,
                                     ["Dense", [1], {"W_std": 0.8, "b_std": 0.3, "parameterization": "standard"}]]),
    "standard_gap": ((5, 4, 2), [_conv(7, (3, 3), param="standard"), RELU,
                                 _conv(5, (2, 2), param="standard", b_std=None), RELU, GAP,
                                 ["Dense", [1], {"W_std": 1.2, "b_std": 0.0, "parameterization": "standard"}]]),
    # after a shared Conv on the full grid NT stores the spatial axes reversed (is_reversed) and its ConvLocal
    # then applies filter_shape/strides to the wrong axes; symmetric ones here (see tests/test_convlocal.py)
    "mixed_conv_pool_gap": ((6, 5, 2), [_conv(7, (3, 3), kind=C), RELU, _conv(7, (2, 2), (2, 2), "SAME"), ERF,
                                        ["AvgPool", [[2, 2]], {"strides": [1, 1], "padding": "SAME"}],
                                        _conv(7, (2, 2), padding="VALID", kind=C), RELU, GAP,
                                        ["Dense", [1], {"W_std": 1.1, "b_std": 0.1}]]),
    "local_then_conv_gap": ((6, 5, 2), [_conv(5, (3, 2), (1, 2), "SAME"), ERF, _conv(5, (2, 3), kind=C), RELU,
                                        GAP]),
    "cnn_twin_relu_flatten": ((5, 4, 2), [_conv(8, (3, 3), kind=C), RELU, _conv(8, (2, 2), W_std=1.5, b_std=0.05,
                                                                               kind=C), RELU,
                                          FLAT, ["Dense", [1], {"W_std": 1.5, "b_std": 0.05}]]),
    "spatial_out": ((5, 4, 2), [_conv(7, (3, 3), (1, 2), "SAME"), RELU, _conv(7, (2, 2), padding="VALID")]),
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
        rng = np.random.default_rng(200 + seed)
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
