"""Generate tests/data/nt_fanin_reference.npz: neural-tangents 0.6.5 kernels of FanInConcat / FanInProd networks.

    python benchmarks/make_nt_fanin_reference.py    # runs itself in the NT venv (benchmarks/_env/nt)

Like benchmarks/make_nt_conv_reference.py: neural-tangents cannot be imported in kernelalg's environment, so
tests/test_fanin.py reads NT's outputs (Novak et al., "Neural Tangents", ICLR 2020; stax.branching) from this
fixture. For every case the file stores

* ``<case>.spec``: the architecture as JSON: a leaf is [stax layer name, args, kwargs] in NT's signatures
  (NT's first positional width argument becomes kernelalg's ``out_dim`` / ``out_chan``); ``["serial", [...]]``
  and ``["parallel", [...]]`` nest;
* ``<case>.x1``, ``<case>.x2``: float64 inputs (seeded standard normal);
* ``<case>.<call>.<field>`` for call in {"sym" (x2=None), "cross"} and field in {nngp, ntk, cov1, cov2}.

The cases cover channel concatenation of branches of unequal and equal widths (weighted averages), a
standard-parametrization Dense after a concatenation (its NTK uses the summed width), products of two and
three branches (the NTK product rule), and concatenation of convolutional branches before pooling.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "tests" / "data" / "nt_fanin_reference.npz"

RELU, ERF = ["Relu", [], {}], ["Erf", [], {}]


def _dense(width, w, b, param="ntk"):
    return ["Dense", [width], {"W_std": w, "b_std": b, "parameterization": param}]


def _conv(width, filt, w=1.3, b=0.2):
    return ["Conv", [width, list(filt)], {"padding": "SAME", "W_std": w, "b_std": b}]


def _branches(*branches):
    return [["FanOut", [len(branches)], {}], ["parallel", [["serial", list(br)] for br in branches]]]


CASES = {  # name: (input shape without batch, layers)
    "concat_unequal": ((4,), _branches([_dense(3, 1.2, 0.1), RELU], [_dense(5, 0.9, 0.2), ERF])
                       + [["FanInConcat", [], {}], _dense(1, 1.5, 0.05)]),
    "concat_three_then_relu": ((4,), _branches([_dense(6, 1.4, 0.1), RELU], [_dense(2, 1.1, None)],
                                               [_dense(7, 0.8, 0.3), ERF])
                               + [["FanInConcat", [-1], {}], _dense(5, 1.3, 0.2), RELU, _dense(1, 1.1, 0.1)]),
    "concat_standard": ((4,), _branches([_dense(3, 1.2, 0.1, "standard"), RELU], [_dense(5, 0.9, 0.2, "standard")])
                        + [["FanInConcat", [], {}], _dense(1, 1.3, 0.1, "standard")]),
    "prod_two": ((4,), _branches([_dense(6, 1.3, 0.1), RELU], [_dense(6, 1.1, 0.3)])
                 + [["FanInProd", [], {}], _dense(1, 1.2, 0.1)]),
    "prod_three_no_readout": ((4,), [_dense(5, 1.2, 0.2)] + _branches([RELU], [ERF, _dense(5, 1.5, 0.0)],
                                                                       [_dense(5, 0.7, 0.4)])
                              + [["FanInProd", [], {}]]),
    "concat_conv_gap": ((4, 3, 2), _branches([_conv(3, (2, 2)), RELU], [_conv(5, (3, 3), 1.1, 0.1)])
                        + [["FanInConcat", [], {}], _conv(4, (2, 2), 1.2, 0.1), RELU,
                           ["GlobalAvgPool", [], {}], _dense(1, 1.5, 0.05)]),
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

    def make(spec):
        name, args, *rest = spec
        if name in ("serial", "parallel"):
            return getattr(stax, name)(*map(make, args))
        return getattr(stax, name)(*map(tup, args), **{k: tup(v) for k, v in rest[0].items()})

    out = {"_versions": np.array(json.dumps({"neural_tangents": nt.__version__, "jax": jax.__version__,
                                             "numpy": np.__version__}))}
    for seed, (name, (shape, layers)) in enumerate(CASES.items()):
        rng = np.random.default_rng(200 + seed)
        x1, x2 = rng.standard_normal((N1,) + shape), rng.standard_normal((N2,) + shape)
        kernel_fn = stax.serial(*map(make, layers))[2]
        out[f"{name}.spec"] = np.array(json.dumps(layers))
        out[f"{name}.x1"], out[f"{name}.x2"] = x1, x2
        for call, b in (("sym", None), ("cross", x2)):
            k = kernel_fn(x1, b, get=None)
            for field in ("nngp", "ntk", "cov1", "cov2"):
                v = getattr(k, field)
                if v is not None:
                    out[f"{name}.{call}.{field}"] = np.asarray(v, np.float64)
            print(name, call, np.asarray(k.nngp).shape, file=sys.stderr, flush=True)
    np.savez_compressed(out_path, **out)


def main() -> int:
    sys.path.insert(0, str(HERE))
    from nt_env import generator_main
    return generator_main(_worker, Path(__file__).resolve(), OUT)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
