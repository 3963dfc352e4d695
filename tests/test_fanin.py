"""FanInConcat and FanInProd (issue #17, part B).

Expected values are independent of the code under test:

* neural-tangents 0.6.5 itself (stax.FanInConcat / stax.FanInProd): its kernels on small fixed inputs are stored
  in tests/data/nt_fanin_reference.npz by benchmarks/make_nt_fanin_reference.py; agreement to 1e-10 relative.
* Monte Carlo over finite-width twins with one hidden layer per branch: the branch pre-activations are exactly
  Gaussian and the branches independent, so E[NNGP] and E[NTK] equal the exact kernels at ANY width; z-scores
  against the standard errors, and a power check that the estimate tells the width-weighted concatenation
  from the unweighted one.
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

NT = np.load(Path(__file__).resolve().parent / "data" / "nt_fanin_reference.npz")
CASES = sorted({k.split(".")[0] for k in NT.files if not k.startswith("_")})
WIDTH_ARG = {"Dense": "out_dim", "Conv": "out_chan"}
Z_MAX = 5.0


def from_spec(spec: list) -> ka.Layer:
    """kernelalg's network for an NT spec (NT's first positional width becomes out_dim / out_chan)."""
    name, args, *rest = spec
    if name in ("serial", "parallel"):
        return getattr(ka, name)(*map(from_spec, args))
    kw = dict(rest[0])
    if name in WIDTH_ARG:
        kw[WIDTH_ARG[name]], args = args[0], args[1:]
    return getattr(ka, name)(*args, **kw)


def test_nt_reference_covers_every_case() -> None:
    assert set(CASES) == {"concat_unequal", "concat_three_then_relu", "concat_standard", "prod_two",
                          "prod_three_no_readout", "concat_conv_gap"}


@pytest.mark.parametrize("case", CASES)
def test_agrees_with_neural_tangents(case: str) -> None:
    """NNGP and NTK agree with NT to 1e-10 relative, except NT's own diagonal (x with itself) of the NTK, which
    NT rounds by up to ~1e-9 relative (float64 angle near rho = 1): there, mpmath at 40 digits sides with
    kernelalg (test_diagonal_against_mpmath), and NT is still held to 1e-8."""
    net = ka.serial(*map(from_spec, json.loads(str(NT[f"{case}.spec"]))))
    x1, x2 = NT[f"{case}.x1"], NT[f"{case}.x2"]
    for call, b in (("sym", None), ("cross", x2)):
        k = ka.kernel(net, x1, b)
        for field in ("nngp", "ntk"):
            got, want = np.array(getattr(k, field)), NT[f"{case}.{call}.{field}"]
            if call == "sym":
                np.testing.assert_allclose(np.diag(got), np.diag(want), rtol=1e-8, err_msg=f"{case} {field} diag")
                np.fill_diagonal(got, 0.0)
                want = want - np.diag(np.diag(want))
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * np.abs(want).max(),
                                       err_msg=f"{case} {call} {field}")


@pytest.mark.parametrize("case", [c for c in CASES if "conv" not in c])
def test_diagonal_against_mpmath(case: str) -> None:
    """The diagonal entries against the mpmath evaluation (40 digits) of the same program, to 1e-13."""
    net = ka.serial(*map(from_spec, json.loads(str(NT[f"{case}.spec"]))))
    x1 = NT[f"{case}.x1"]
    k = ka.kernel(net, x1)
    for i in range(len(x1)):
        ref = float(ka.reference_kernel(net, x1[i:i + 1], get="ntk", dps=40)[0, 0])
        assert abs(float(k.ntk[i, i]) - ref) <= 1e-13 * abs(ref), (case, i)


X = np.random.default_rng(7).normal(size=(3, 4))
X2 = np.random.default_rng(8).normal(size=(2, 4))


def _z(net: ka.Layer, width: int, samples: int, key: int) -> tuple[dict, ka.Kernel, object]:
    ex = ka.kernel(net, X, X2)
    mc = ka.monte_carlo(net, X, X2, width=width, samples=samples, key=key)
    z = {name: (mc.get(name)[0] - getattr(ex, name)) / mc.get(name)[1] for name in ("nngp", "ntk")}
    return z, ex, mc


def test_concat_monte_carlo_weights_by_width() -> None:
    """Branches of widths 2 and 10: 12 z-scores (6 entries x 2 kernels), chance failure < 1e-5. The estimate
    must also reject the unweighted average (what a concatenation of equal widths would give)."""
    branches = ka.parallel(ka.Dense(1.2, 0.1, out_dim=2) >> ka.Relu(), ka.Dense(0.9, 0.6, out_dim=10) >> ka.Erf())
    net = ka.FanOut(2) >> branches >> ka.FanInConcat() >> ka.Dense(1.5, 0.05)
    z, ex, mc = _z(net, width=8, samples=1024, key=3)
    for name, zs in z.items():
        assert np.all(np.abs(zs) <= Z_MAX), (name, zs)
    equal = ka.FanOut(2) >> ka.parallel(ka.Dense(1.2, 0.1) >> ka.Relu(), ka.Dense(0.9, 0.6) >> ka.Erf()) \
        >> ka.FanInConcat() >> ka.Dense(1.5, 0.05)
    wrong = ka.kernel(equal, X, X2).nngp
    assert np.max(np.abs(mc.nngp - wrong) / mc.stderr.nngp) > 2 * Z_MAX  # the check has power


def test_prod_monte_carlo_product_rule() -> None:
    """Relu branch times linear branch, then a readout: 12 z-scores; the NTK product rule is checked against
    the empirical NTK of the finite product network."""
    branches = ka.parallel(ka.Dense(1.3, 0.4) >> ka.Relu(), ka.Dense(1.1, 0.3))
    net = ka.FanOut(2) >> branches >> ka.FanInProd() >> ka.Dense(1.2, 0.1)
    z, ex, mc = _z(net, width=8, samples=1024, key=4)
    for name, zs in z.items():
        assert np.all(np.abs(zs) <= Z_MAX), (name, zs)
    assert np.max(mc.stderr.ntk) < 0.1 * np.max(np.abs(ex.ntk))  # the check has power


def test_twin_shapes() -> None:
    net = ka.FanOut(2) >> ka.parallel(ka.Dense(out_dim=3), ka.Dense(out_dim=5)) >> ka.FanInConcat()
    twin = ka.finite(net, width=7)
    assert twin.output_shape((4,)) == (8,)
    prod = ka.FanOut(2) >> ka.parallel(ka.Dense(), ka.Dense()) >> ka.FanInProd()
    assert ka.finite(prod, width=7).output_shape((4,)) == (7,)


@pytest.mark.parametrize("net, match", [
    (lambda: ka.Dense() >> ka.FanInConcat(), "needs several branches"),
    (lambda: ka.Dense() >> ka.FanInProd(), "needs several branches"),
    (lambda: ka.FanOut(2) >> ka.parallel(ka.Dense(), ka.Dense()) >> ka.FanInConcat(axis=0), "channel axis"),
    (lambda: ka.FanOut(2) >> ka.parallel(ka.Dense(out_dim=3), ka.Dense()) >> ka.FanInConcat(), "not all known"),
    (lambda: ka.FanOut(2) >> ka.parallel(ka.Dense(out_dim=3), ka.Dense(out_dim=4)) >> ka.FanInProd(), "widths"),
    (lambda: ka.FanOut(2) >> ka.parallel(ka.Dense(), ka.Dense()) >> ka.FanInConcat() >> ka.Relu(), "not Gaussian"),
    (lambda: ka.FanOut(2) >> ka.parallel(ka.Dense(), ka.Dense()) >> ka.FanInProd() >> ka.Erf(), "not Gaussian"),
])
def test_bad_networks_raise_clear_errors(net, match: str) -> None:
    with pytest.raises(E.KernelalgError, match=match):
        ka.kernel(net(), X)


def test_bad_axis() -> None:
    with pytest.raises(E.KernelalgError, match="integer"):
        ka.FanInConcat(axis=0.5)


def test_parse_round_trip() -> None:
    net = ka.parse("FanOut(2) >> parallel(Dense(1.2, out_dim=3), Dense(out_dim=5)) >> FanInConcat(axis=-1) >> Dense()")
    assert ka.kernel(net, X).nngp.shape == (3, 3)
    assert repr(ka.parse(repr(net))) == repr(net)
