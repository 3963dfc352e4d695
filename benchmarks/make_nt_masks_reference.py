"""Generate tests/data/nt_masks_reference.npz: neural-tangents 0.6.5 kernels of masked inputs (``mask_constant``).

    python benchmarks/make_nt_masks_reference.py    # runs itself in the NT venv (benchmarks/_env/nt)

Like benchmarks/make_nt_index_reference.py: neural-tangents cannot be imported in kernelalg's environment, so
tests/test_masks.py reads NT's outputs (``kernel_fn(x1, x2, get, mask_constant=c)``) from this fixture. For
every case the file stores

* ``<case>.spec``: the architecture as JSON: a leaf is [stax layer name, args, kwargs] in NT's signatures
  (NT's first positional width argument becomes kernelalg's ``out_dim`` / ``out_chan``);
* ``<case>.x1``, ``<case>.x2``: float64 inputs (seeded standard normal) in which some positions have every
  channel equal to the constant (masked) and some single entries equal it (zeroed, but not masked);
* ``<case>.c``: the mask constant;
* ``<case>.<call>.<field>`` for call in {"sym" (x2=None), "cross"} and field in {nngp, ntk}.

The cases: two SAME convs (odd and even filters) before GlobalAvgPool (images masked by rows, columns, single
pixels); Dense on the channels of 1-D sequences of different lengths before a conv and GlobalSumPool; a
Flatten readout; a NaN mask constant. Masks through layers that change the positions (an output position has
the validity of its window's centre): VALID convs before GlobalAvgPool; a stride-2 SAME conv and a strided
VALID conv before Flatten; AvgPool (window 2, stride 2) and SumPool in a conv net before GlobalAvgPool;
AvgPool with SAME padding and normalize_edges before GlobalSumPool; 1-D sequences through VALID convs (one
strided) before GlobalSumPool; ConvLocal (strided VALID, then SAME) before Flatten; a strided VALID ConvLocal
and a conv before GlobalAvgPool (all pixel pairs); ConvTranspose (an output position is masked when a masked
pixel reaches it) after a strided VALID conv before GlobalAvgPool, and first, VALID, before a conv and Flatten. Graph cases (``graph_*``, stax.Aggregate with dense patterns
``<case>.p1``/``<case>.p2``, called with ``pattern=(p1, p2)``): graphs of different sizes padded with masked
nodes, pooled by GlobalAvgPool over the valid nodes or by GlobalSumPool; in one case arcs to and from padding
nodes stay in the pattern. Both start with Dense: neural-tangents 0.6.5 refuses a mask that still has a channel
axis in Aggregate ("Different channel-wise masks are not supported"), so an Aggregate first is not comparable.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "tests" / "data" / "nt_masks_reference.npz"

RELU, ERF = ["Relu", [], {}], ["Erf", [], {}]


def _dense(width, w, b):
    return ["Dense", [width], {"W_std": w, "b_std": b}]


def _conv(width, filt, w=1.3, b=0.2, padding="SAME", strides=None, name="Conv"):
    kw = {"padding": padding, "W_std": w, "b_std": b}
    if strides is not None:
        kw["strides"] = list(strides)
    return [name, [width, list(filt)], kw]


def _pool(name, window, strides, padding="VALID", **kw):
    return [name, [list(window), list(strides)], {"padding": padding, **kw}]


CASES = {  # name: (input shape without batch, mask constant, layers)
    "conv_gap": ((5, 4, 2), -1.0, [_conv(3, (3, 3)), RELU, _conv(3, (2, 2), 1.1, 0.1), ERF,
                                   ["GlobalAvgPool", [], {}], _dense(1, 1.5, 0.05)]),
    "dense_seq_gsp": ((7, 3), 0.0, [_dense(4, 1.2, 0.3), RELU, _conv(3, (3,), 1.4, 0.1), RELU,
                                    ["GlobalSumPool", [], {}], _dense(1, 1.1, 0.2)]),
    "conv_flatten": ((4, 5, 2), -1.0, [_conv(3, (3, 3), 1.2, 0.3), ERF, ["Flatten", [], {}], _dense(1, 1.3, 0.1)]),
    "nan_gap": ((6, 2), float("nan"), [_conv(3, (2,), 1.3, 0.2), ERF, _conv(3, (3,), 1.1, None), RELU,
                                       ["GlobalAvgPool", [], {}], _dense(1, 1.2, 0.1)]),
    # masks through the layers that change the positions (window centres, issue #17)
    "valid_gap": ((6, 5, 2), -1.0, [_conv(3, (3, 3), 1.3, 0.2, "VALID"), RELU, _conv(3, (2, 2), 1.1, 0.1, "VALID"),
                                    ERF, ["GlobalAvgPool", [], {}], _dense(1, 1.5, 0.05)]),
    "stride_flatten": ((5, 6, 2), -1.0, [_conv(3, (3, 3), 1.2, 0.3, "SAME", (2, 2)), ERF,
                                         _conv(3, (2, 2), 1.1, 0.1, "VALID", (1, 2)), RELU, ["Flatten", [], {}],
                                         _dense(1, 1.3, 0.1)]),
    "pool_gap": ((6, 5, 2), -1.0, [_conv(3, (2, 2), 1.3, 0.2), RELU, _pool("AvgPool", (2, 2), (2, 2)),
                                   _conv(3, (3, 3), 1.1, 0.1), ERF, _pool("SumPool", (2, 2), (1, 1)),
                                   ["GlobalAvgPool", [], {}], _dense(1, 1.2, 0.1)]),
    "edges_gsp": ((5, 5, 2), 0.0, [_conv(3, (2, 2), 1.3, 0.2), RELU,
                                   _pool("AvgPool", (3, 3), (2, 2), "SAME", normalize_edges=True),
                                   _conv(3, (2, 2), 1.1, 0.1), ERF,
                                   _pool("AvgPool", (2, 2), (1, 1), "SAME"), ["GlobalSumPool", [], {}],
                                   _dense(1, 1.1, 0.1)]),
    "seq_valid_gsp": ((9, 3), 0.0, [_dense(4, 1.2, 0.3), RELU, _conv(3, (3,), 1.4, 0.1, "VALID"), RELU,
                                    _conv(3, (2,), 1.1, 0.2, "VALID", (2,)), ERF, ["GlobalSumPool", [], {}],
                                    _dense(1, 1.1, 0.2)]),
    "local_flatten": ((6, 5, 2), -1.0, [_conv(3, (3, 3), 1.3, 0.2, "VALID", (2, 1), "ConvLocal"), RELU,
                                        _conv(3, (2, 2), 1.1, 0.1, "SAME", None, "ConvLocal"), ERF,
                                        ["Flatten", [], {}], _dense(1, 1.3, 0.1)]),
    "local_gap": ((6, 5, 2), -1.0, [_conv(3, (2, 2), 1.3, 0.2, "VALID", (2, 1), "ConvLocal"), RELU,
                                    _conv(3, (2, 2), 1.1, 0.1), ERF, ["GlobalAvgPool", [], {}], _dense(1, 1.2, 0.1)]),
    "tconv_gap": ((6, 5, 2), -1.0, [_conv(3, (2, 2), 1.3, 0.2, "VALID", (2, 2)), RELU,
                                    _conv(3, (3, 3), 1.1, 0.1, "SAME", (2, 2), "ConvTranspose"), ERF,
                                    ["GlobalAvgPool", [], {}], _dense(1, 1.2, 0.1)]),
    # Erf only: with a Relu after a first VALID ConvTranspose, NT and kernelalg differ by up to 8e-10 relative on
    # self pairs also without masks (rounding near correlation 1 met by Relu), above the 1e-10 test tolerance
    "tconv_flatten": ((5, 4, 2), -1.0, [_conv(3, (2, 3), 1.2, 0.3, "VALID", (1, 2), "ConvTranspose"), ERF,
                                        _conv(3, (2, 2), 1.1, 0.1, "VALID"), ERF, ["Flatten", [], {}],
                                        _dense(1, 1.3, 0.1)]),
    # Index (slices): the masks follow the selected positions (NT's mask_fn: mask[idx])
    "index_gap": ((6, 5, 2), -1.0, [_conv(3, (2, 2), 1.3, 0.2), RELU, ["Index", [":, 1:, ::2"], {}],
                                    _conv(3, (2, 2), 1.1, 0.1, "VALID"), ERF, ["GlobalAvgPool", [], {}],
                                    _dense(1, 1.2, 0.1)]),
    # Erf only: with a Relu, NT's self-pair NTK entries were off by 1.1e-9 relative (its Relu dual at a rounded
    # correlation, as noted for tconv_flatten), above the 1e-10 tolerance
    "index_seq_flatten": ((9, 3), 0.0, [_dense(4, 1.2, 0.3), ERF, ["Index", [":, 2::3"], {}], _conv(3, (2,), 1.4, 0.1),
                                        ERF, ["Flatten", [], {}], _dense(1, 1.1, 0.2)]),
    # DotGeneral: an output position reached by no valid position (nonzero weights) is masked (NT's mask_fn);
    # NT's output is (N, W, C, free): its GlobalAvgPool is told the channel axis (kernelalg keeps its own order)
    "dot_free_gap": ((4, 3, 2), -1.0, [_conv(3, (2, 2), 1.3, 0.2), RELU,
                                       ["DotGeneral", [], {"rhs": [[1.0, 0.0, 0.0], [-1.0, 0.5, 0.0], [0.5, 2.0, 0.0],
                                                                   [0.0, 1.0, 1.0]],
                                                           "dimension_numbers": [[[1], [0]], [[], []]]}],
                                       ["GlobalAvgPool", [], {"channel_axis": 2}], _dense(1, 1.2, 0.1)]),
    # LayerNorm over positions and channels: the mean variance is taken over the valid positions (NT)
    "layernorm_gap": ((5, 4, 2), -1.0, [_conv(3, (2, 2), 1.3, 0.2), ["LayerNorm", [], {"axis": [1, 2, 3]}], RELU,
                                        _conv(3, (2, 2), 1.1, 0.1), ERF, ["GlobalAvgPool", [], {}], _dense(1, 1.2, 0.1)]),
    "layernorm_seq_flatten": ((7, 3), 0.0, [_dense(4, 1.2, 0.3), ["LayerNorm", [], {"axis": [1, 2]}], ERF,
                                            _conv(3, (3,), 1.4, 0.1, "VALID"), ["LayerNorm", [], {"axis": [1, 2]}],
                                            ERF, ["Flatten", [], {}], _dense(1, 1.1, 0.2)]),
    # ImageResize: masked when only masked positions contribute (NT's mask_fn); two convs before it (NT 0.6.5 resizes
    # the wrong axes after an odd number of convs, docs/locally_connected.md)
    "resize_gap": ((4, 5, 2), -1.0, [_conv(3, (2, 2), 1.3, 0.2), RELU, _conv(3, (2, 2), 1.1, 0.1),
                                     ["ImageResize", [[-1, 6, 3, -1], "linear"], {}], ERF, ["GlobalAvgPool", [], {}],
                                     _dense(1, 1.2, 0.1)]),
    "index_drop_gsp": ((6, 5, 2), -1.0, [_conv(3, (2, 2), 1.3, 0.2), ERF, ["Index", [":, :, 3"], {}],
                                         _conv(3, (2,), 1.1, 0.1, "VALID"), ERF, ["GlobalSumPool", [], {}],
                                         _dense(1, 1.2, 0.1)]),
}
N1, N2 = 3, 2

AGG, GAP, GSP = ["Aggregate", [], {}], ["GlobalAvgPool", [], {}], ["GlobalSumPool", [], {}]
GRAPH_CASES = {  # name: (nodes, channels, padding arcs kept, layers); graphs of 6, 4, 3 valid nodes padded to 6
    "graph_relu_gap": (6, 3, False, [_dense(5, 1.3, 0.2), AGG, RELU, AGG, GAP, _dense(1, 1.1, 0.1)]),
    "graph_erf_gsp_arcs": (6, 3, True, [_dense(4, 1.2, 0.1), AGG, ERF, _dense(4, 0.9, 0.3), AGG, GSP,
                                        _dense(1, 1.4, 0.05)]),
}


def padded_graphs(rng, batch: int, nodes: int, channels: int, c: float, keep_arcs: bool):
    """Graphs with 6, 4, 3, ... valid nodes padded to ``nodes`` with masked nodes (every feature c); the padding
    nodes are isolated unless ``keep_arcs`` (then arcs touching them stay: a masked node must send nothing)."""
    import numpy as np
    x = rng.standard_normal((batch, nodes, channels))
    a = np.maximum((rng.random((batch, nodes, nodes)) < 0.4).astype(float), np.eye(nodes))
    for i in range(batch):
        n = (nodes, nodes - 2, nodes - 3)[i % 3]
        x[i, n:] = c
        if not keep_arcs:
            a[i, n:, :] = a[i, :, n:] = 0.0
    x[0, 0, 0] = c  # one feature equal to c on a valid node: zeroed, not masked
    return x, a


def masked_inputs(rng, n: int, shape: tuple, c: float):
    """Standard normal inputs with masked positions (every channel c) and single entries equal to c."""
    import numpy as np
    x = rng.standard_normal((n,) + shape)
    s = shape[:-1]
    for i in range(n):
        keep = np.ones(s, bool)
        if i % 3 == 0:  # a tail of the first axis (a shorter image/sequence)
            keep[s[0] - 1 - i % 2:] = False
        elif i % 3 == 1 and len(s) > 1:  # a column
            keep[:, -1] = False
        else:  # a single interior position
            keep[(1,) * len(s)] = False
        x[i][~keep] = c
        x[(i,) + (0,) * len(s) + (0,)] = c  # one entry, not a masked position (its other channels differ)
    return x


def _worker(out_path: str) -> None:
    """Runs inside the NT venv."""
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import neural_tangents as nt
    from neural_tangents import stax

    def tup(v):
        return tuple(tup(e) for e in v) if isinstance(v, list) else v

    def index(text):  # "':, 1:, ::2'" -> (slice(None), slice(1, None), slice(None, None, 2))
        return tuple(slice(*[int(p) if p else None for p in e.split(":")]) if ":" in e else int(e)
                     for e in (t.strip() for t in text.split(",")))

    def make(spec):
        name, args, kw = spec
        if name == "Index":
            return stax.Index(index(args[0]))
        if name == "DotGeneral":
            kw = {k: (np.asarray(v, np.float64) if k in ("lhs", "rhs") else tup(v)) for k, v in kw.items()}
            return stax.DotGeneral(**kw)
        return getattr(stax, name)(*map(tup, args), **{k: tup(v) for k, v in kw.items()})

    out = {"_versions": np.array(json.dumps({"neural_tangents": nt.__version__, "jax": jax.__version__,
                                             "numpy": np.__version__}))}
    for seed, (name, (shape, c, layers)) in enumerate(CASES.items()):
        rng = np.random.default_rng(700 + seed)
        x1, x2 = masked_inputs(rng, N1, shape, c), masked_inputs(rng, N2, shape, c)
        kernel_fn = stax.serial(*map(make, layers))[2]
        out[f"{name}.spec"] = np.array(json.dumps(layers))
        out[f"{name}.x1"], out[f"{name}.x2"], out[f"{name}.c"] = x1, x2, np.float64(c)
        for call, b in (("sym", None), ("cross", x2)):
            k = kernel_fn(x1, b, get=None, mask_constant=c)
            for field in ("nngp", "ntk"):
                out[f"{name}.{call}.{field}"] = np.asarray(getattr(k, field), np.float64)
            print(name, call, np.asarray(k.nngp).ravel()[:3], file=sys.stderr, flush=True)
    for seed, (name, (nodes, channels, keep, layers)) in enumerate(GRAPH_CASES.items()):
        rng, c = np.random.default_rng(800 + seed), -1.0
        (x1, p1), (x2, p2) = (padded_graphs(rng, n, nodes, channels, c, keep) for n in (N1, N2))
        kernel_fn = stax.serial(*map(make, layers))[2]
        out[f"{name}.spec"] = np.array(json.dumps(layers))
        out[f"{name}.x1"], out[f"{name}.x2"], out[f"{name}.c"] = x1, x2, np.float64(c)
        out[f"{name}.p1"], out[f"{name}.p2"] = p1, p2
        for call, b, pat in (("sym", None, (p1, p1)), ("cross", x2, (p1, p2))):
            k = kernel_fn(x1, b, get=None, pattern=pat, mask_constant=c)
            for field in ("nngp", "ntk"):
                out[f"{name}.{call}.{field}"] = np.asarray(getattr(k, field), np.float64)
            print(name, call, np.asarray(k.nngp).ravel()[:3], file=sys.stderr, flush=True)
    np.savez_compressed(out_path, **out)


def main() -> int:
    sys.path.insert(0, str(HERE))
    from nt_env import generator_main
    return generator_main(_worker, Path(__file__).resolve(), OUT)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
