"""Generate tests/data/nt_index_reference.npz: neural-tangents 0.6.5 kernels of networks with stax.Index.

    python benchmarks/make_nt_index_reference.py    # runs itself in the NT venv (benchmarks/_env/nt)

Like benchmarks/make_nt_fanin_reference.py: neural-tangents cannot be imported in kernelalg's environment, so
tests/test_index.py reads NT's outputs (Novak et al., "Neural Tangents", ICLR 2020; stax.Index) from this
fixture. For every case the file stores

* ``<case>.spec``: the architecture as JSON: a leaf is [stax layer name, args, kwargs] in NT's signatures
  (NT's first positional width argument becomes kernelalg's ``out_dim`` / ``out_chan``; Index's ``idx`` is the
  string inside ``stax.Slice[...]``, which kernelalg's ``Index`` accepts as it is);
* ``<case>.x1``, ``<case>.x2``: float64 inputs (seeded standard normal);
* ``<case>.<call>.<field>`` for call in {"sym" (x2=None), "cross"} and field in {nngp, ntk}; kernels that keep
  pixel axes are stored in NT's order (N1, N2, H, H', W, W').

The cases: slices with steps before a second conv and GlobalAvgPool; an integer index that turns an image into
a sequence (negative step, Flatten readout on the matching-pixel diagonal); Index as the first layer before
AvgPool; a kernel that keeps pixel axes; 1-D sequences reversed before GlobalSumPool; an integer index
before a pooled readout (the chunked pixel-pair evaluation of an image that becomes a sequence).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "tests" / "data" / "nt_index_reference.npz"

RELU, ERF = ["Relu", [], {}], ["Erf", [], {}]


def _dense(width, w, b):
    return ["Dense", [width], {"W_std": w, "b_std": b}]


def _conv(width, filt, w=1.3, b=0.2, padding="SAME"):
    return ["Conv", [width, list(filt)], {"padding": padding, "W_std": w, "b_std": b}]


def _index(idx):
    return ["Index", [], {"idx": idx}]


CASES = {  # name: (input shape without batch, layers)
    "slices_then_conv_gap": ((5, 4, 2), [_conv(3, (2, 2)), RELU, _index(":, ::2, 1:"), _conv(4, (2, 2), 1.1, 0.1, "VALID"),
                                         RELU, ["GlobalAvgPool", [], {}], _dense(1, 1.5, 0.05)]),
    "int_row_flatten": ((5, 4, 2), [_conv(3, (2, 2)), RELU, _index(":, ::-2, 1"), _conv(4, (2,), 1.2, 0.1), ERF,
                                    ["Flatten", [], {}], _dense(1, 1.4, 0.1)]),
    "first_then_avgpool": ((6, 5, 2), [_index(":, 1:, :3, :"), _conv(3, (3, 3), 1.2, 0.3), RELU,
                                       ["AvgPool", [[2, 2], [1, 1], "VALID"], {}], ["Flatten", [], {}],
                                       _dense(1, 1.1, 0.2)]),
    "keeps_pixels": ((4, 5, 2), [_conv(3, (2, 2)), RELU, _index("..., 1:4, ::2, :"), _conv(3, (2, 2), 1.4, 0.1)]),
    "sequence_reversed_sum": ((7, 3), [_conv(3, (3,), 1.2, 0.1), RELU, _index(":, ::-1"), _conv(3, (2,), 1.1, 0.2, "VALID"),
                                       RELU, _index(":, 1:-1"), ["GlobalSumPool", [], {}], _dense(1, 1.3, 0.1)]),
    "int_column_gap": ((4, 5, 2), [_conv(3, (2, 2)), RELU, _index(":, :, -2"), _conv(3, (2,), 1.2, 0.1, "VALID"),
                                   RELU, ["GlobalAvgPool", [], {}], _dense(1, 1.1, 0.2)]),
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
        if name == "Index":
            return stax.Index(eval(f"stax.Slice[{rest[0]['idx']}]", {"stax": stax}))  # our own constant strings
        return getattr(stax, name)(*map(tup, args), **{k: tup(v) for k, v in rest[0].items()})

    out = {"_versions": np.array(json.dumps({"neural_tangents": nt.__version__, "jax": jax.__version__,
                                             "numpy": np.__version__}))}
    for seed, (name, (shape, layers)) in enumerate(CASES.items()):
        rng = np.random.default_rng(300 + seed)
        x1, x2 = rng.standard_normal((N1,) + shape), rng.standard_normal((N2,) + shape)
        kernel_fn = stax.serial(*map(make, layers))[2]
        out[f"{name}.spec"] = np.array(json.dumps(layers))
        out[f"{name}.x1"], out[f"{name}.x2"] = x1, x2
        for call, b in (("sym", None), ("cross", x2)):
            k = kernel_fn(x1, b, get=None)
            for field in ("nngp", "ntk"):
                out[f"{name}.{call}.{field}"] = np.asarray(getattr(k, field), np.float64)
            print(name, call, np.asarray(k.nngp).shape, file=sys.stderr, flush=True)
    np.savez_compressed(out_path, **out)


def main() -> int:
    sys.path.insert(0, str(HERE))
    from nt_env import generator_main
    return generator_main(_worker, Path(__file__).resolve(), OUT)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
