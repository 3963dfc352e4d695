"""DotGeneral: multiplication by a constant along the spatial axes (issue #17, item 2; ``stax.DotGeneral``).

Expected values are independent of the code under test:

* neural-tangents 0.6.5 itself (stax.DotGeneral): its kernels on small fixed inputs are stored in
  tests/data/nt_dotgeneral_reference.npz by benchmarks/make_nt_dotgeneral_reference.py; float64 agreement to
  1e-10 relative, NNGP and NTK (scaling, a contraction of image rows, a constant on the left, a constant with a
  free axis, a kernel that keeps pixel axes, DotGeneral after AvgPool: two layers with per-image records).
* Monte Carlo over the finite-width twin of a one-hidden-layer conv net: its conv outputs are exactly Gaussian, so
  E[NNGP] and E[NTK] equal the exact kernels at ANY width; z-scores against the standard errors (fixed seeds),
  bound |z| <= 5 per entry, and a power check against the kernel of the net without DotGeneral.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

import kernelalg as ka
from kernelalg.core import _errors as E
from kernelalg.layers.spatial import _dotgeneral


@pytest.fixture(autouse=True, scope="module")
def _float64():
    """float64 for this module only (a global switch would change every test collected after it)."""
    with jax.enable_x64(True):
        yield


NT = np.load(Path(__file__).resolve().parent / "data" / "nt_dotgeneral_reference.npz")
CASES = sorted({k.split(".")[0] for k in NT.files if not k.startswith("_")})
WIDTH_ARG = {"Dense": "out_dim", "Conv": "out_chan"}
NT_ONLY = ("batch_axis", "channel_axis")  # where NT's axes went after lax.dot_general (kernelalg keeps its order)
Z_MAX = 5.0
#: Cases of the default run; the others run under -m slow (each compiles two kernels, ~5 s apiece).
FAST = ("after_avgpool",)  # the rows difference is also the Monte Carlo net


def from_spec(spec: list) -> ka.Layer:
    """kernelalg's network for an NT spec (NT's first positional width becomes out_dim / out_chan)."""
    name, args, kw = spec
    kw = {k: v for k, v in kw.items() if k not in NT_ONLY}
    if name in WIDTH_ARG:
        kw[WIDTH_ARG[name]], args = args[0], args[1:]
    return getattr(ka, name)(*args, **kw)


def test_nt_reference_covers_every_case() -> None:
    assert set(CASES) == {"scale_gap", "rows_difference_gap", "lhs_contract_flatten", "free_axes_gap",
                          "keeps_pixels", "after_avgpool"}


@pytest.mark.parametrize("case", [c if c in FAST else pytest.param(c, marks=pytest.mark.slow) for c in CASES])
def test_agrees_with_neural_tangents(case: str) -> None:
    net = ka.serial(*map(from_spec, json.loads(str(NT[f"{case}.spec"]))))
    x1, x2 = NT[f"{case}.x1"], NT[f"{case}.x2"]
    for call, b in (("sym", None), ("cross", x2)):
        if f"{case}.{call}.nngp" not in NT.files:
            continue
        k = ka.kernel(net, x1, b)
        for field in ("nngp", "ntk"):
            got, want = np.asarray(getattr(k, field)), NT[f"{case}.{call}.{field}"]
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * np.abs(want).max(),
                                       err_msg=f"{case} {call} {field}")


IMG1 = np.random.default_rng(21).normal(size=(2, 2, 4, 2))
IMG2 = np.random.default_rng(22).normal(size=(2, 2, 4, 2))


def test_monte_carlo_finite_twin() -> None:
    """Conv >> Relu >> DotGeneral(rows difference) >> GlobalAvgPool >> Dense: 8 z-scores within Z_MAX (chance
    failure < 1e-5); the estimate must reject the kernel of the net without DotGeneral (some |z| > Z_MAX)."""
    head = ka.Conv((1, 2), W_std=1.4, b_std=0.3, padding="SAME") >> ka.Relu()
    tail = ka.GlobalAvgPool() >> ka.Dense(1.2, 0.1)
    net = head >> ka.DotGeneral(rhs=(1.0, -1.0), dimension_numbers=(((1,), (0,)), ((), ()))) >> tail
    ex = ka.kernel(net, IMG1, IMG2)
    mc = ka.monte_carlo(net, IMG1, IMG2, width=8, samples=256, key=6)
    for name in ("nngp", "ntk"):
        mean, err = mc.get(name)
        z = (np.asarray(mean) - np.asarray(getattr(ex, name))) / np.asarray(err)
        assert np.all(np.abs(z) <= Z_MAX), (name, z)
    plain = ka.kernel(head >> tail, IMG1, IMG2)
    assert max(np.max(np.abs(mc.get(n)[0] - getattr(plain, n)) / mc.get(n)[1]) for n in ("nngp", "ntk")) > Z_MAX


def test_twin_is_lax_dot_general_in_house_order() -> None:
    """The finite twin against jax.lax.dot_general itself, axes moved to (batch, kept, free, channels)."""
    a = np.arange(12.0).reshape(4, 3) / 7
    x = np.random.default_rng(3).normal(size=(2, 3, 4, 5))
    dg = ka.DotGeneral(rhs=a, dimension_numbers=(((2,), (0,)), ((), ())))
    init, apply, shape = dg.finite({}, dict(dg.static), x.shape[1:], 1)
    want = np.moveaxis(np.asarray(jax.lax.dot_general(x, a, (((2,), (0,)), ((), ())))), 2, 3)  # (N, H, C, F)
    np.testing.assert_allclose(np.asarray(apply({}, x)), want, rtol=1e-12)
    assert shape == (3, 3, 5)
    lhs = ka.DotGeneral(lhs=np.ones((2, 3)), dimension_numbers=(((1,), (1,)), ((0,), (2,))))
    batch = np.asarray(jax.lax.dot_general(np.ones((2, 3)), x[:, :, :2], (((1,), (1,)), ((0,), (2,)))))  # (H2, N, C)
    got = lhs.finite({}, dict(lhs.static), (3, 2, 5), 1)[1]({}, x[:, :, :2])
    np.testing.assert_allclose(np.asarray(got), np.moveaxis(batch, 0, 1), rtol=1e-12)


def test_float32_and_numpy_reference_agree() -> None:
    net = ka.Conv((1, 2), W_std=1.3, b_std=0.2, padding="SAME") >> ka.Relu() \
        >> ka.DotGeneral(lhs=(0.5, -1.0, 2.0, 0.5), dimension_numbers=(((0,), (2,)), ((), ()))) \
        >> ka.GlobalAvgPool() >> ka.Dense(1.1)
    ref = np.asarray(ka.reference_kernel(net, IMG1, get="ntk"))
    k64 = np.asarray(ka.kernel(net, IMG1).ntk)
    with jax.enable_x64(False):
        k32 = ka.kernel(net, IMG1.astype(np.float32)).ntk
    assert k32.dtype == np.float32
    np.testing.assert_allclose(k64, ref, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(k32), ref, rtol=1e-5)


def test_parse_and_repr_round_trip() -> None:
    net = ka.parse("Conv((1, 2)) >> Relu() >> DotGeneral(rhs=(1.0, -1.0), dimension_numbers=(((1,), (0,)), ((), ())))"
                   " >> GlobalAvgPool() >> Dense()")
    assert repr(ka.parse(repr(net))) == repr(net)
    assert ka.kernel(net, IMG1).nngp.shape == (2, 2)


@pytest.mark.parametrize("kw, match", [
    ({"rhs": (1.0, 1.0), "dimension_numbers": (((0,), (0,)), ((), ()))}, "batch axis"),
    ({"rhs": np.ones(2), "dimension_numbers": (((3,), (0,)), ((), ()))}, "channel axis"),
    ({"rhs": np.ones(2), "dimension_numbers": (((-1,), (0,)), ((), ()))}, "channel axis"),
    ({"rhs": np.ones(4), "dimension_numbers": (((), ()), ((0,), (0,)))}, "batch axis"),
    ({"rhs": np.ones(3), "dimension_numbers": (((1,), (0,)), ((), ()))}, "has size 2"),
    ({"rhs": np.ones(2), "dimension_numbers": (((5,), (0,)), ((), ()))}, "out of range"),
    ({"rhs": np.ones((2, 4)), "dimension_numbers": (((1, 2), (0, 1)), ((), ()))}, "no spatial axis left"),
])
def test_bad_axes_raise_clear_errors(kw: dict, match: str) -> None:
    net = ka.Conv((1, 2), padding="SAME") >> ka.DotGeneral(**kw) >> ka.GlobalAvgPool()
    with pytest.raises(E.KernelalgError, match=match):
        ka.kernel(net, IMG1)


@pytest.mark.parametrize("kw, match", [
    ({"lhs": 1.0, "rhs": 2.0}, "both lhs and rhs"),
    ({"rhs": "x"}, "finite real number"),
    ({"rhs": float("nan")}, "finite real number"),
    ({"rhs": 1.0, "dimension_numbers": ((1,), (0,))}, "dimension_numbers must be"),
    ({"rhs": 1.0, "dimension_numbers": (((1,), ()), ((), ()))}, "dimension_numbers must be"),
])
def test_bad_arguments_raise_clear_errors(kw: dict, match: str) -> None:
    with pytest.raises(E.KernelalgError, match=match):
        ka.DotGeneral(**kw)


def test_geometry_letters() -> None:
    geo = _dotgeneral.geometry(2, 2, False, (((2,), (1,)), ((1,), (0,))))
    assert (geo.x, geo.a, geo.out, geo.k_out) == ("cdef", "de", "cdf", 1)
