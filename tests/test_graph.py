"""Graph networks: Aggregate and ka.Graphs (issue #18, part 3).

Expected values are independent of the code under test:

* neural-tangents 0.6.5 itself (stax.Aggregate, dense and sparse patterns): its kernels on small fixed graphs are
  stored in tests/data/nt_graph_reference.npz by benchmarks/make_nt_graph_reference.py; agreement to 1e-10
  relative.
* brute force: the kernel of a batch of graphs pairs with itself equals the (i, j) block of the kernel of the
  concatenated batch (the batch computation with x2 given uses the self-grid extension, that of x2 = None the
  batch diagonal: two different code paths);
* the sparse (edge-list) path against the dense path on the same graphs (the dense path itself is held to NT);
* Monte Carlo over finite-width twins with one hidden nonlinearity: the hidden pre-activations are exactly
  Gaussian given the graphs, so E[NNGP] and E[NTK] equal the exact kernels at ANY width; z-scores against the
  standard errors, and a power check that the estimate rejects the kernel of the graphs without aggregation.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

import kernelalg as ka
from kernelalg.core import _errors as E


@pytest.fixture(autouse=True, scope="module")
def _float64():
    """float64 for this module only (a global switch would change every test collected after it)."""
    with jax.enable_x64(True):
        yield


NT = np.load(Path(__file__).resolve().parent / "data" / "nt_graph_reference.npz")
CASES = sorted({k.split(".")[0] for k in NT.files if not k.startswith("_")})
Z_MAX = 5.0


def from_spec(spec: list) -> ka.Layer:
    """kernelalg's layer for an NT spec leaf (NT's first positional width becomes out_dim)."""
    name, args, kw = spec
    kw = dict(kw)
    if name == "Dense":
        kw["out_dim"], args = args[0], args[1:]
    return getattr(ka, name)(*args, **kw)


def net_of(case: str) -> ka.Layer:
    return ka.serial(*map(from_spec, json.loads(str(NT[f"{case}.spec"]))))


def graphs(case: str, which: str) -> ka.Graphs:
    return ka.Graphs(NT[f"{case}.x{which}"], NT[f"{case}.p{which}"])


def to_edges(a: np.ndarray, extra: int = 2) -> np.ndarray:
    """Edge list (B, E, 2) of a 0/1 adjacency (arc i -> j where a[b, i, j] = 1), padded with -1 arcs."""
    e = int(a.sum(axis=(1, 2)).max()) + extra
    out = -np.ones((len(a), e, 2), np.int32)
    for b in range(len(a)):
        t, h = np.nonzero(a[b])
        out[b, :len(t), 0], out[b, :len(t), 1] = t, h
    return out


def random_graphs(seed: int, batch: int, nodes: int = 5, channels: int = 3, p: float = 0.4):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, nodes, channels))
    a = np.maximum((rng.random((batch, nodes, nodes)) < p).astype(float), np.eye(nodes))
    return x, a


def test_nt_reference_covers_every_case() -> None:
    assert set(CASES) == {"binary_relu_gap", "weighted_erf_gsp", "binary_flatten", "standard_gap", "node_level",
                          "sparse_relu_gap"}


@pytest.mark.parametrize("case", CASES)
def test_agrees_with_neural_tangents(case: str) -> None:
    """NNGP, NTK, cov1, cov2 agree with NT to 1e-10 relative (dense and sparse patterns, all readouts)."""
    net = net_of(case)
    g1, g2 = graphs(case, "1"), graphs(case, "2")
    calls = [c for c in ("sym", "cross") if f"{case}.{c}.nngp" in NT.files]
    for call in calls:
        k = ka.kernel(net, g1, None if call == "sym" else g2)
        fields = ("nngp", "ntk") if case == "node_level" else ("nngp", "ntk", "cov1", "cov2")
        for field in fields:
            stored = f"{case}.{call}.{field}" if f"{case}.{call}.{field}" in NT.files else f"{case}.{call}.cov1"
            got, want = np.asarray(getattr(k, field)), NT[stored]  # NT's cov2 is None when x2 is None
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * np.abs(want).max(),
                                       err_msg=f"{case} {call} {field}")


def test_sparse_path_equals_dense_path() -> None:
    """The same graphs as 0/1 adjacency and as edge lists (with padding arcs, unequal counts across batches)."""
    x1, a1 = random_graphs(1, 3)
    x2, a2 = random_graphs(2, 2, p=0.2)
    net = ka.Dense(1.2, 0.1) >> ka.Aggregate() >> ka.Relu() >> ka.Aggregate() >> ka.GlobalSumPool() >> ka.Dense()
    dense = ka.kernel(net, ka.Graphs(x1, a1), ka.Graphs(x2, a2))  # x2 = None: the NT case sparse_relu_gap
    sparse = ka.kernel(net, ka.Graphs(x1, to_edges(a1)), ka.Graphs(x2, to_edges(a2, 5)))
    for field in ("nngp", "ntk", "cov1", "cov2"):
        np.testing.assert_allclose(getattr(sparse, field), getattr(dense, field), rtol=1e-12, err_msg=field)
    ref = ka.compile(net, backend="numpy")(ka.Graphs(x1, to_edges(a1)), ka.Graphs(x2, to_edges(a2, 5)))
    np.testing.assert_allclose(ref.ntk, dense.ntk, rtol=1e-12)  # the NumPy scatter-add (np.add.at)


def test_repeated_arcs_add_up() -> None:
    """An arc listed twice is an arc of weight 2 (NT's convention)."""
    x, a = random_graphs(3, 2)
    e = to_edges(a, 0)
    doubled = np.concatenate([e, e[:, :1]], axis=1)
    a2 = a.copy()
    for b in range(2):
        a2[b, e[b, 0, 0], e[b, 0, 1]] += 1
    net = ka.Aggregate() >> ka.Dense(1.3, 0.1) >> ka.Relu() >> ka.GlobalAvgPool() >> ka.Dense()
    np.testing.assert_allclose(ka.kernel(net, ka.Graphs(x, doubled)).ntk, ka.kernel(net, ka.Graphs(x, a2)).ntk,
                               rtol=1e-12)


def test_cross_kernel_is_block_of_joint_kernel() -> None:
    """x2 given (self-grid extension) against the joint batch with x2 = None (batch diagonal)."""
    x1, a1 = random_graphs(4, 3)
    x2, a2 = random_graphs(5, 2)
    net = ka.Aggregate() >> ka.Dense(1.3, 0.2) >> ka.Relu() >> ka.Aggregate() >> ka.Flatten() >> ka.Dense(1.1, 0.1)
    cross = ka.kernel(net, ka.Graphs(x1, a1), ka.Graphs(x2, a2))
    joint = ka.kernel(net, ka.Graphs(np.concatenate([x1, x2]), np.concatenate([a1, a2])))
    for field in ("nngp", "ntk"):
        np.testing.assert_allclose(getattr(cross, field), getattr(joint, field)[:3, 3:], rtol=1e-12)
    np.testing.assert_allclose(cross.cov2, np.diag(joint.nngp)[3:], rtol=1e-12)


def test_float32() -> None:
    x, a = random_graphs(6, 3)
    net = ka.Aggregate() >> ka.Dense(1.3, 0.2) >> ka.Relu() >> ka.GlobalAvgPool() >> ka.Dense()
    k64 = ka.kernel(net, ka.Graphs(x, a))
    with jax.enable_x64(False):
        k32 = ka.kernel(net, ka.Graphs(x.astype(np.float32), a.astype(np.float32)))
    assert k32.ntk.dtype == np.float32
    np.testing.assert_allclose(k32.ntk, k64.ntk, rtol=1e-5)


def test_monte_carlo() -> None:
    """One hidden Relu between two aggregations, width 16, 512 draws: 2 x 6 z-scores (chance failure < 1e-5;
    measured max |z| 1.6);
    the estimate rejects the kernel without the second aggregation (the check has power)."""
    x1, a1 = random_graphs(7, 3, nodes=4)
    x2, a2 = random_graphs(8, 2, nodes=4)
    g1, g2 = ka.Graphs(x1, a1), ka.Graphs(x2, a2)
    net = ka.Aggregate() >> ka.Dense(1.3, 0.2) >> ka.Relu() >> ka.Aggregate() >> ka.GlobalAvgPool() >> ka.Dense(1.1, 0.1)
    ex = ka.kernel(net, g1, g2)
    mc = ka.monte_carlo(net, g1, g2, width=16, samples=512, key=11)
    for name in ("nngp", "ntk"):
        mean, se = mc.get(name)
        z = (mean - getattr(ex, name)) / se
        assert np.all(np.abs(z) <= Z_MAX), (name, z)
    wrong = ka.kernel(ka.Aggregate() >> ka.Dense(1.3, 0.2) >> ka.Relu() >> ka.GlobalAvgPool() >> ka.Dense(1.1, 0.1),
                      g1, g2).nngp
    assert np.max(np.abs(mc.nngp - wrong) / mc.stderr.nngp) > 2 * Z_MAX


def test_finite_twin_dense_and_sparse_agree() -> None:
    """The finite layer on an edge list equals it on the adjacency (segment sum vs matrix product), which is
    NT's product pattern^T x per graph."""
    x, a = random_graphs(9, 2)
    net = ka.Aggregate() >> ka.Dense(1.3, 0.2) >> ka.Relu() >> ka.Aggregate() >> ka.GlobalSumPool() >> ka.Dense()
    twin = ka.finite(net, 8)
    params = twin.init(0, (5, 3))
    yd, ys = twin.apply(params, ka.Graphs(x, a)), twin.apply(params, ka.Graphs(x, to_edges(a)))
    np.testing.assert_allclose(ys, yd, rtol=1e-12)
    manual = np.einsum("bic,bij->bjc", x, a)  # NT: node j receives sum_i pattern[i, j] x_i
    np.testing.assert_allclose(ka.finite(ka.Aggregate(), 1).apply([{}], ka.Graphs(x, a)), manual, rtol=1e-12)


@pytest.mark.parametrize("make, match", [
    (lambda net, x, a: ka.kernel(net, x), "needs each graph's adjacency"),
    (lambda net, x, a: ka.kernel(net, ka.Graphs(x, a[:, :3])), "pattern of 2 graphs of 5 nodes"),
    (lambda net, x, a: ka.kernel(net, ka.Graphs(x, np.where(a > 0, np.nan, 0.0))), "non-finite"),
    (lambda net, x, a: ka.kernel(net, ka.Graphs(x, np.full((2, 3, 2), 7))), "names node 7"),
    (lambda net, x, a: ka.kernel(net, ka.Graphs(x[..., 0, 0], a)), "node features must be a 3-D array"),
    (lambda net, x, a: ka.kernel(net, ka.Graphs(x, a), ka.Graphs(x[:, :4], a[:, :4, :4])), "nodes per graph"),
    (lambda net, x, a: ka.kernel(net, ka.Graphs(x, a), ka.Graphs(x, to_edges(a))), "pattern kind"),
    (lambda net, x, a: ka.Aggregate(aggregate_axis=2), "default layout"),
    (lambda net, x, a: ka.Aggregate(implementation="COO"), "'DENSE' or 'SPARSE'"),
    (lambda net, x, a: ka.kernel(ka.Aggregate() >> ka.GlobalAvgPool() >> ka.Aggregate(), ka.Graphs(x, a)),
     "put Aggregate before the readout"),
    (lambda net, x, a: ka.finite(net, 4).apply(ka.finite(net, 4).init(0, (5, 3)), x), "without a pattern"),
])
def test_bad_input_raises_clear_errors(make, match: str) -> None:
    x, a = random_graphs(10, 2)
    net = ka.Aggregate() >> ka.Dense(1.3, 0.2) >> ka.Relu() >> ka.GlobalAvgPool() >> ka.Dense()
    with pytest.raises(E.KernelalgError, match=match):
        make(net, x, a)


def test_parse_and_repr() -> None:
    net = ka.parse("Aggregate() >> Dense(1.5, 0.1) >> Relu() >> GlobalAvgPool() >> Dense()")
    x, a = random_graphs(12, 2)
    assert np.all(np.isfinite(ka.kernel(net, ka.Graphs(x, a)).ntk))
    assert "Graphs(shape=(2, 5, 3), dense pattern (2, 5, 5))" == repr(ka.Graphs(x, a))
