"""Generate tests/data/nt_dotgeneral_reference.npz: neural-tangents 0.6.5 kernels of networks with stax.DotGeneral.

    python benchmarks/make_nt_dotgeneral_reference.py    # runs itself in the NT venv (benchmarks/_env/nt)

Like benchmarks/make_nt_index_reference.py (same file layout: ``<case>.spec``, ``.x1``, ``.x2``,
``<case>.<call>.<field>``). DotGeneral's ``lhs``/``rhs`` are nested lists in the spec; keyword arguments
``batch_axis``/``channel_axis`` of later layers tell NT where lax.dot_general put those axes when the constant
has free axes or the dot has batch axes (kernelalg keeps the house order (batch, *spatial, channels) and ignores
them). The readouts (GlobalAvgPool, Flatten) do not depend on the order of the spatial axes, so the values are
comparable entry by entry; the one case that keeps pixel axes has no free or dot batch axes (NT's order is then
the house order) and is stored for x2 = None only; "after_avgpool" has two layers that record per-image
variances in the chunked evaluation (AvgPool, then DotGeneral), since kernelalg keeps pixel axes after a pixel-mixing layer
only then.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "tests" / "data" / "nt_dotgeneral_reference.npz"

RELU, ERF = ["Relu", [], {}], ["Erf", [], {}]


def _dense(width, w, b):
    return ["Dense", [width], {"W_std": w, "b_std": b}]


def _conv(width, filt, w=1.3, b=0.2, padding="SAME"):
    return ["Conv", [width, list(filt)], {"padding": padding, "W_std": w, "b_std": b}]


def _dot(dims, lhs=None, rhs=None):
    kw = {"dimension_numbers": dims}
    kw.update({"lhs": lhs} if lhs is not None else {"rhs": rhs})
    return ["DotGeneral", [], kw]


NO_DIMS = [[[], []], [[], []]]
GAP, FLAT = ["GlobalAvgPool", [], {}], ["Flatten", [], {}]
CASES = {  # name: (input shape without batch, layers, calls)
    "scale_gap": ((3, 4, 2), [_conv(3, (2, 2)), RELU, _dot(NO_DIMS, rhs=2.0), GAP, _dense(1, 1.5, 0.05)]),
    "rows_difference_gap": ((2, 5, 2), [_conv(3, (1, 2)), RELU, _dot([[[1], [0]], [[], []]], rhs=[1.0, -1.0]),
                                        _conv(3, (2,), 1.1, 0.1), ERF, GAP, _dense(1, 1.2, 0.1)]),
    "lhs_contract_flatten": ((3, 4, 2), [_conv(3, (2, 2)),
                                         _dot([[[0], [2]], [[], []]], lhs=[0.5, -1.5, 2.0, 0.25]),
                                         RELU, FLAT, _dense(1, 1.3, 0.2)]),
    "free_axes_gap": ((4, 3, 2), [_conv(3, (2, 2)), RELU,
                                  _dot([[[1], [0]], [[], []]], rhs=[[1.0, 0.5, -0.5], [0.0, 2.0, 1.0],
                                                                    [-1.0, 0.25, 0.0], [0.5, 0.5, 0.5]]),
                                  ["GlobalAvgPool", [], {"channel_axis": 2}], _dense(1, 1.1, 0.1)]),
    "keeps_pixels": ((3, 4, 2), [_conv(3, (2, 2)), RELU, _dot([[[2], [0]], [[], []]], rhs=[1.0, -2.0, 0.5, 1.5]),
                                 _conv(3, (2,), 1.2, 0.1)]),
    "after_avgpool": ((3, 4, 2), [_conv(3, (2, 2)), RELU, ["AvgPool", [[2, 2], [1, 1], "SAME"], {}],
                                  _dot([[[1], [0]], [[], []]], rhs=[1.0, -1.0, 0.5]),
                                  _conv(3, (2,), 1.2, 0.1), RELU, GAP,
                                  _dense(1, 1.1, 0.1)]),
}
N1, N2 = 3, 2
ONLY_SYM = {"keeps_pixels"}


def _worker(out_path: str) -> None:
    """Runs inside the NT venv."""
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import neural_tangents as nt
    from neural_tangents import stax

    def tup(v):
        return tuple(tup(e) for e in v) if isinstance(v, list) else v

    def make(spec):
        name, args, kw = spec
        if name == "DotGeneral":
            kw = {k: (np.asarray(v, np.float64) if k in ("lhs", "rhs") else tup(v)) for k, v in kw.items()}
            return stax.DotGeneral(**kw)
        return getattr(stax, name)(*map(tup, args), **{k: tup(v) for k, v in kw.items()})

    out = {"_versions": np.array(json.dumps({"neural_tangents": nt.__version__, "jax": jax.__version__,
                                             "numpy": np.__version__}))}
    for seed, (name, (shape, layers)) in enumerate(CASES.items()):
        rng = np.random.default_rng(400 + seed)
        x1, x2 = rng.standard_normal((N1,) + shape), rng.standard_normal((N2,) + shape)
        kernel_fn = stax.serial(*map(make, layers))[2]
        out[f"{name}.spec"] = np.array(json.dumps(layers))
        out[f"{name}.x1"], out[f"{name}.x2"] = x1, x2
        for call, b in (("sym", None), ("cross", x2)):
            if call == "cross" and name in ONLY_SYM:
                continue
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
