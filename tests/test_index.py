"""Index: static indexing/slicing of the spatial axes (issue #17, item 1; neural-tangents' ``stax.Index``).

Expected values are independent of the code under test:

* neural-tangents 0.6.5 itself (stax.Index): its kernels on small fixed inputs are stored in
  tests/data/nt_index_reference.npz by benchmarks/make_nt_index_reference.py; float64 agreement to 1e-10
  relative, NNGP and NTK, x2 = None and x2 given.
* Monte Carlo over the finite-width twins of one-hidden-layer conv nets: the conv outputs are exactly Gaussian,
  so E[NNGP] and E[NTK] of the twin equal the exact kernels at ANY width; z-scores against the standard errors
  (fixed seeds), bound |z| <= 5 per entry, and a power check that the estimate rejects the unindexed kernel.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

import kernelalg as ka
from kernelalg.core import _errors as E
from kernelalg.layers.spatial import _index


@pytest.fixture(autouse=True, scope="module")
def _float64():
    """float64 for this module only (a global switch would change every test collected after it)."""
    with jax.enable_x64(True):
        yield


NT = np.load(Path(__file__).resolve().parent / "data" / "nt_index_reference.npz")
CASES = sorted({k.split(".")[0] for k in NT.files if not k.startswith("_")})
WIDTH_ARG = {"Dense": "out_dim", "Conv": "out_chan"}
Z_MAX = 5.0


def from_spec(spec: list) -> ka.Layer:
    """kernelalg's network for an NT spec (NT's first positional width becomes out_dim / out_chan)."""
    name, args, *rest = spec
    kw = dict(rest[0])
    if name in WIDTH_ARG:
        kw[WIDTH_ARG[name]], args = args[0], args[1:]
    return getattr(ka, name)(*args, **kw)


def _nt_order(k: np.ndarray) -> np.ndarray:
    """kernelalg's (N1, N2, *S, *S') as neural-tangents' (N1, N2, S_1, S'_1, S_2, S'_2, ...)."""
    d = (k.ndim - 2) // 2
    return k.transpose((0, 1) + tuple(a for i in range(d) for a in (2 + i, 2 + d + i)))


def test_nt_reference_covers_every_case() -> None:
    assert set(CASES) == {"slices_then_conv_gap", "int_row_flatten", "first_then_avgpool", "keeps_pixels",
                          "sequence_reversed_sum", "int_column_gap"}


#: Cases of the default run (a dropped axis before a pooled readout, and before Flatten on the matching-pixel
#: diagonal); the other four run under -m slow (each compiles two kernels, ~5 s apiece on an idle core).
FAST = ("int_column_gap", "int_row_flatten")


@pytest.mark.parametrize("case", [c if c in FAST else pytest.param(c, marks=pytest.mark.slow) for c in CASES])
def test_agrees_with_neural_tangents(case: str) -> None:
    net = ka.serial(*map(from_spec, json.loads(str(NT[f"{case}.spec"]))))
    x1, x2 = NT[f"{case}.x1"], NT[f"{case}.x2"]
    for call, b in (("sym", None), ("cross", x2)):
        k = ka.kernel(net, x1, b)
        for field in ("nngp", "ntk"):
            got, want = _nt_order(np.asarray(getattr(k, field))), NT[f"{case}.{call}.{field}"]
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * np.abs(want).max(),
                                       err_msg=f"{case} {call} {field}")


IMG1 = np.random.default_rng(11).normal(size=(2, 4, 3, 2))
IMG2 = np.random.default_rng(12).normal(size=(2, 4, 3, 2))


@pytest.mark.parametrize("idx, readout", [(":, ::2, 1:", ka.GlobalAvgPool()),
                                          pytest.param(":, -1", ka.Flatten(), marks=pytest.mark.slow)])
def test_monte_carlo_finite_twin(idx: str, readout: ka.Layer) -> None:
    """Conv >> Relu >> Index >> readout >> Dense: 8 z-scores (4 entries x 2 kernels) per case within Z_MAX (chance
    failure < 1e-5); the estimate must reject the kernel of the same network without Index (power: some
    |z| > Z_MAX against it)."""
    head = ka.Conv((2, 2), W_std=1.4, b_std=0.3, padding="SAME") >> ka.Relu()
    net = head >> ka.Index(idx) >> readout >> ka.Dense(1.2, 0.1)
    ex = ka.kernel(net, IMG1, IMG2)
    mc = ka.monte_carlo(net, IMG1, IMG2, width=8, samples=256, key=5)
    for name in ("nngp", "ntk"):
        mean, err = mc.get(name)
        z = (np.asarray(mean) - np.asarray(getattr(ex, name))) / np.asarray(err)
        assert np.all(np.abs(z) <= Z_MAX), (idx, name, z)
    plain = ka.kernel(head >> readout >> ka.Dense(1.2, 0.1), IMG1, IMG2)
    assert max(np.max(np.abs(mc.get(n)[0] - getattr(plain, n)) / mc.get(n)[1]) for n in ("nngp", "ntk")) > Z_MAX


def test_twin_shapes_and_values() -> None:
    twin = ka.finite(ka.Conv((2, 2), padding="SAME") >> ka.Relu() >> ka.Index(ka.Slice[:, ::-2, 1]), width=5)
    assert twin.output_shape((4, 3, 2)) == (2, 5)
    x = np.arange(2 * 4 * 3 * 1, dtype=float).reshape(2, 4, 3, 1)
    f = ka.finite(ka.Index(ka.Slice[..., 1:, :]) >> ka.Conv((1, 1)), width=1)
    assert f.output_shape((4, 3, 1)) == (4, 2, 1)
    idx_only = _index._index_finite({}, {"idx": ":, ::-2, 1"}, (4, 3, 1), 1)[1]
    np.testing.assert_array_equal(idx_only({}, x), x[:, ::-2, 1])


def test_float32_and_numpy_reference_agree() -> None:
    net = ka.Conv((2, 2), W_std=1.3, b_std=0.2, padding="SAME") >> ka.Relu() >> ka.Index(":, 1:, ::-1") \
        >> ka.GlobalAvgPool() >> ka.Dense(1.1)
    ref = np.asarray(ka.reference_kernel(net, IMG1, get="ntk"))
    k64 = np.asarray(ka.kernel(net, IMG1).ntk)
    with jax.enable_x64(False):
        k32 = ka.kernel(net, IMG1.astype(np.float32)).ntk
    assert k32.dtype == np.float32
    np.testing.assert_allclose(k64, ref, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(k32), ref, rtol=1e-5)


def test_parse_and_repr_round_trip() -> None:
    net = ka.parse("Conv((2, 2)) >> Relu() >> Index(':, ::2, 1:') >> GlobalAvgPool() >> Dense()")
    assert repr(ka.parse(repr(net))) == repr(net)
    assert repr(ka.Index(ka.Slice[:, ::2, 1:])) == repr(ka.Index("[:, ::2, 1:]")) == "Index(idx=':, ::2, 1:')"
    assert _index.spatial_index("..., 0, :", 2) == (slice(None), 0)


@pytest.mark.parametrize("idx, match", [
    (ka.Slice[::2, 1:], "batch axis is indexed"),
    (ka.Slice[0], "batch axis is indexed"),
    (ka.Slice[..., :1], "channel axis is indexed"),
    (ka.Slice[:, 1:, :, 0], "channel axis is indexed"),
    (ka.Slice[:, 4], "out of range"),
    (ka.Slice[:, 3:1], "selects no position"),
    (ka.Slice[:, 0, 1], "remove every spatial axis"),
    (ka.Slice[:, :, :, :, :], "5 indices"),
])
def test_bad_indices_raise_clear_errors(idx, match: str) -> None:
    net = ka.Conv((2, 2), padding="SAME") >> ka.Index(idx) >> ka.Flatten()
    with pytest.raises(E.KernelalgError, match=match):
        ka.kernel(net, IMG1)


@pytest.mark.parametrize("idx", ["1:2:3:4", ":, a", (slice(0, 2, 0),), (slice(0.5, 2),), (..., ...), ([0, 1],), ()])
def test_malformed_indices_are_refused(idx) -> None:
    with pytest.raises(E.KernelalgError, match="is not an index"):
        ka.Index(idx)


def test_index_after_readout_is_refused() -> None:
    with pytest.raises(E.LayerOrderError, match="Index needs inputs with spatial axes"):
        ka.kernel(ka.Conv((2, 2)) >> ka.Flatten() >> ka.Index(":, 0"), IMG1)
