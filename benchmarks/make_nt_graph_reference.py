"""Generate tests/data/nt_graph_reference.npz: neural-tangents 0.6.5 kernels of graph networks (stax.Aggregate).

    python benchmarks/make_nt_graph_reference.py    # runs itself in the NT venv (benchmarks/_env/nt)

Like benchmarks/make_nt_fanin_reference.py: neural-tangents cannot be imported in kernelalg's environment, so
tests/test_graph.py reads NT's outputs (Novak et al., "Neural Tangents", ICLR 2020; stax.Aggregate, after Du et
al., "Graph Neural Tangent Kernel", NeurIPS 2019) from this fixture. For every case the file stores

* ``<case>.spec``: the architecture as JSON: a leaf is [stax layer name, args, kwargs] in NT's signatures;
* ``<case>.x1``, ``<case>.x2``: float64 node features (seeded standard normal), (batch, nodes, channels);
* ``<case>.p1``, ``<case>.p2``: their patterns: dense (batch, nodes, nodes) float (NT's ``implementation="DENSE"``)
  or integer edge lists (batch, edges, 2) of (tail, head), -1 marking padding arcs ("SPARSE");
* ``<case>.<call>.<field>`` for call in {"sym" (x2=None, pattern=(p1, p1)), "cross" (pattern=(p1, p2))} and field
  in {nngp, ntk, cov1, cov2}; cases whose kernel keeps the node axes (no readout) store "sym" only.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "tests" / "data" / "nt_graph_reference.npz"

RELU, ERF = ["Relu", [], {}], ["Erf", [], {}]
AGG, AGG_SPARSE = ["Aggregate", [], {}], ["Aggregate", [], {"implementation": "SPARSE"}]
GAP, GSP, FLAT = ["GlobalAvgPool", [], {}], ["GlobalSumPool", [], {}], ["Flatten", [], {}]


def _dense(width, w, b, param="ntk"):
    return ["Dense", [width], {"W_std": w, "b_std": b, "parameterization": param}]


CASES = {  # name: (pattern kind, layers)
    "binary_relu_gap": ("binary", [AGG, _dense(8, 1.3, 0.2), RELU, AGG, GAP, _dense(1, 1.1, 0.1)]),
    "weighted_erf_gsp": ("weighted", [_dense(6, 1.2, 0.1), AGG, ERF, _dense(5, 0.9, 0.3), AGG, GSP,
                                      _dense(1, 1.4, 0.05)]),
    "binary_flatten": ("binary", [AGG, _dense(8, 1.5, 0.1), RELU, AGG, _dense(4, 1.1, 0.2), RELU, FLAT,
                                  _dense(1, 1.2, 0.1)]),
    "standard_gap": ("weighted", [AGG, _dense(7, 1.4, 0.2, "standard"), RELU, AGG, GAP,
                                  _dense(1, 1.1, 0.1, "standard")]),
    "node_level": ("binary", [AGG, _dense(8, 1.3, 0.2), RELU, AGG, _dense(1, 1.2, 0.1)]),
    "sparse_relu_gap": ("edges", [AGG_SPARSE, _dense(8, 1.3, 0.2), RELU, AGG_SPARSE, _dense(6, 1.2, 0.1), ERF,
                                  GAP, _dense(1, 1.1, 0.1)]),
}
N1, N2, NODES, CHANNELS, EDGES = 3, 2, 6, 3, 9


def patterns(kind, rng, batch):
    """Seeded patterns of ``batch`` graphs of NODES nodes: 0/1 adjacency (with self loops), weighted
    adjacency, or edge lists (EDGES arcs, the last two of each graph padding)."""
    import numpy as np
    if kind == "edges":
        e = rng.integers(0, NODES, size=(batch, EDGES, 2))
        e[:, -2:] = -1
        return e.astype(np.int32)
    a = (rng.random((batch, NODES, NODES)) < 0.35).astype(float)
    a = np.maximum(a, np.eye(NODES))
    return a if kind == "binary" else a * rng.uniform(0.3, 1.2, size=a.shape)


def _worker(out_path: str) -> None:
    """Runs inside the NT venv."""
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import neural_tangents as nt
    from neural_tangents import stax

    def make(spec):
        name, args, kw = spec
        return getattr(stax, name)(*args, **kw)

    out = {"_versions": np.array(json.dumps({"neural_tangents": nt.__version__, "jax": jax.__version__,
                                             "numpy": np.__version__}))}
    for seed, (name, (kind, layers)) in enumerate(CASES.items()):
        rng = np.random.default_rng(300 + seed)
        x1 = rng.standard_normal((N1, NODES, CHANNELS))
        x2 = rng.standard_normal((N2, NODES, CHANNELS))
        p1, p2 = patterns(kind, rng, N1), patterns(kind, rng, N2)
        kernel_fn = stax.serial(*map(make, layers))[2]
        out[f"{name}.spec"] = np.array(json.dumps(layers))
        out[f"{name}.x1"], out[f"{name}.x2"], out[f"{name}.p1"], out[f"{name}.p2"] = x1, x2, p1, p2
        calls = (("sym", None, (p1, p1)),) if name == "node_level" else (("sym", None, (p1, p1)), ("cross", x2, (p1, p2)))
        for call, b, pat in calls:
            k = kernel_fn(x1, b, get=None, pattern=pat)
            for field in ("nngp", "ntk", "cov1", "cov2"):
                v = getattr(k, field)
                if v is not None:
                    out[f"{name}.{call}.{field}"] = np.asarray(v, np.float64)
            print(name, call, np.asarray(k.nngp).shape, np.asarray(k.cov1).shape, file=sys.stderr, flush=True)
    np.savez_compressed(out_path, **out)


def main() -> int:
    sys.path.insert(0, str(HERE))
    from nt_env import generator_main
    return generator_main(_worker, Path(__file__).resolve(), OUT)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
