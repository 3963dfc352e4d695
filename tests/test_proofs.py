"""Runs every machine-checked proof in proofs/ and checks that every closed form the library uses has one.

* test_proof: each proof (one per closed-form family, plus theory.md's reference numbers and the surrogate
  NTK) must hold; the proofs print which route established each claim (``python -m proofs.run_all``).
* test_every_dual_has_a_proof / test_every_activation_has_a_proof: adding a dual to kernelalg.core._duals or an
  activation layer to kernelalg without registering a proof in proofs/run_all.py fails here.
* test_layer_wiring: each activation layer's kernel map uses the proven dual with the right parameters, and
  its finite-width twin computes the phi that the proof assumed.
* Negative controls: the zero test rejects wrong identities, and a proof fails on a mutated closed form.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the proofs/ package sits next to tests/

import kernelalg as ka  # noqa: E402
from kernelalg.core import _duals  # noqa: E402
from kernelalg.core._program import Builder, KernelState  # noqa: E402
from proofs import _common, prove_arccos as pa, prove_gelu as pg, prove_smooth as ps  # noqa: E402
from proofs._algebra import radical_zero  # noqa: E402
from proofs._common import PD, S11, S12, S22, Proof  # noqa: E402
from proofs.run_all import DUAL_PROOFS, LAYER_PROOFS, NOT_ACTIVATIONS, proof_functions  # noqa: E402

PROOFS = proof_functions()


@pytest.mark.parametrize("key", sorted(PROOFS))
def test_proof(key: str) -> None:
    result = PROOFS[key]()
    proofs = [] if result is None else (result if isinstance(result, list) else [result])
    for p in proofs:
        assert isinstance(p, Proof) and p.steps, key
    covered = {d for p in proofs for d in p.covers}
    claimed = {d for d, k in DUAL_PROOFS.items() if k == key}
    assert claimed <= covered, f"{key} is registered for {claimed - covered} but does not prove them"


def _dual_functions() -> set[str]:
    out = set()
    for name, fn in inspect.getmembers(_duals, inspect.isfunction):
        if fn.__module__ == _duals.__name__ and not name.startswith("_"):
            if inspect.signature(fn).return_annotation in ("Dual", _duals.Dual) or name == "gaussian_moment":
                out.add(name)
    return out


def test_every_dual_has_a_proof() -> None:
    duals = _dual_functions()
    assert {"relu", "erf", "gelu", "polynomial"} <= duals  # the scan finds the duals
    assert duals - set(DUAL_PROOFS) == set(), "closed forms in kernelalg.core._duals without a proof in proofs/"
    assert set(DUAL_PROOFS.values()) <= set(PROOFS)


ACTIVATION_MODULES = ("kernelalg.layers._activations", "kernelalg.layers._surrogate", "kernelalg.layers._elementwise",
                      "kernelalg.layers._sigmoidal")


def test_every_activation_has_a_proof() -> None:
    acts = {n for n in ka.__all__ if getattr(getattr(ka, n), "__module__", None) in ACTIVATION_MODULES}
    acts -= set(NOT_ACTIVATIONS)
    assert {"Relu", "Gelu", "SurrogateSign", "Elementwise"} <= acts
    assert acts - set(LAYER_PROOFS) == set(), "activation layers without a proof in proofs/"
    assert set(LAYER_PROOFS.values()) <= set(PROOFS)


# layer -> (constructor kwargs, proven dual at the layer's parameters, the proof's phi or None)
_R = sp.Rational
WIRING = {
    "Relu": ({}, lambda p: _duals.relu(S11, S12, S22), lambda x, p: pa.relu_phi(x)),
    "ABRelu": ({"a": -0.3, "b": 1.7}, lambda p: _duals.abrelu(S11, S12, S22, p["a"], p["b"]),
               lambda x, p: pa.abrelu_phi(x, p["a"], p["b"])),
    "LeakyRelu": ({"alpha": 0.2}, lambda p: _duals.abrelu(S11, S12, S22, p["alpha"], 1),
                  lambda x, p: pa.abrelu_phi(x, p["alpha"], 1)),
    "Abs": ({}, lambda p: _duals.abrelu(S11, S12, S22, -1, 1), lambda x, p: pa.abrelu_phi(x, -1, 1)),
    "Sign": ({}, lambda p: _duals.sign(S11, S12, S22), lambda x, p: sp.sign(x)),
    "RectifiedMonomial": ({"degree": 2}, lambda p: _duals.rectified_monomial(S11, S12, S22, 2),
                          lambda x, p: sp.Max(x, 0) ** 2),
    "Erf": ({"a": 1.3, "b": 0.7, "c": 0.2}, lambda p: _duals.erf(S11, S12, S22, p["a"], p["b"], p["c"]),
            lambda x, p: ps.erf_phi(x, p["a"], p["b"], p["c"])),
    "Sin": ({"a": 1.2, "b": 0.8, "c": 0.3}, lambda p: _duals.sin(S11, S12, S22, p["a"], p["b"], p["c"]),
            lambda x, p: ps.sin_phi(x, p["a"], p["b"], p["c"])),
    "Cos": ({"a": 1.2, "b": 0.8, "c": 0.3}, lambda p: _duals.cos(S11, S12, S22, p["a"], p["b"], p["c"]),
            lambda x, p: ps.cos_phi(x, p["a"], p["b"], p["c"])),
    "Rbf": ({"gamma": 0.7}, lambda p: _duals.rbf(S11, S12, S22, p["gamma"]), lambda x, p: ps.rbf_phi(x, p["gamma"])),
    "Exp": ({"a": 0.9, "b": 0.4}, lambda p: _duals.exp(S11, S12, S22, p["a"], p["b"]),
            lambda x, p: ps.exp_phi(x, p["a"], p["b"])),
    "Gaussian": ({"a": 1.1, "b": -0.6}, lambda p: _duals.gaussian(S11, S12, S22, p["a"], p["b"]),
                 lambda x, p: ps.gaussian_phi(x, p["a"], p["b"])),
    "Gelu": ({"approximate": False}, lambda p: _duals.gelu(S11, S12, S22), lambda x, p: pg.gelu_phi(x)),
    # the tanh approximation is used by the twin only; the kernel is the exact GELU's
    "Gelu(approximate)": ({"approximate": True}, lambda p: _duals.gelu(S11, S12, S22), None),
    "Polynomial": ({"coef": [0.1, 0.5, -0.3]},
                   lambda p: _duals.polynomial(S11, S12, S22, (p["c0"], p["c1"], p["c2"])),
                   lambda x, p: p["c0"] + p["c1"] * x + p["c2"] * x**2),
    "Monomial": ({"degree": 3}, lambda p: _duals.monomial(S11, S12, S22, 3), lambda x, p: x**3),
    "Hermite": ({"degree": 3}, lambda p: _duals.hermite(S11, S12, S22, 3), lambda x, p: (x**3 - 3 * x) / sp.sqrt(6)),
    "Gabor": ({}, lambda p: _duals.gabor(S11, S12, S22), lambda x, p: sp.exp(-x**2) * sp.sin(x)),
    # not elementwise (its twin normalizes over channels): the kernel wiring only
    "ExpNormalized": ({"gamma": 0.7, "shift": -0.5},
                      lambda p: _duals.exp_normalized(S11, S12, S22, p["gamma"], p["shift"]), None),
    # neural-tangents' constant, written independently of the layer
    "Sigmoid_like": ({}, lambda p: _duals.erf(S11, S12, S22, p["a"], p["b"], p["c"]),
                     lambda x, p: sp.erf(x / sp.Float("2.4020563531719796")) / 2 + sp.Rational(1, 2)),
}


def _same(a: sp.Expr, b: sp.Expr) -> bool:
    d = _duals.plain(sp.sympify(a)) - _duals.plain(sp.sympify(b))
    return d == 0 or radical_zero(d) or radical_zero(d.subs(PD, simultaneous=True)) or sp.simplify(d) == 0


def test_wiring_covers_all_closed_form_layers() -> None:
    names = {k.split("(")[0] for k in WIRING}
    assert names == set(LAYER_PROOFS) - {"Elementwise", "SurrogateSign", "SurrogateStep"}


@pytest.mark.parametrize("name", sorted(WIRING))
def test_layer_wiring(name: str) -> None:
    kwargs, dual, phi = WIRING[name]
    layer = getattr(ka, name.split("(")[0])(**kwargs)
    p = {k: sp.nsimplify(v) for k, v in layer.params}
    static = dict(layer.static)
    theta = sp.Symbol("theta_in", positive=True)
    out = layer.kernel(Builder(), KernelState(S11, S22, S12, theta), p, static)
    d = dual(p)
    assert _same(out.nngp, d.T), "cov must be the proven T"
    assert _same(out.ntk, d.Tdot * theta), "ntk must be Tdot * Theta"
    assert _same(out.cov1, d.Tdiag), "var1 must be the proven Tdiag"
    assert _same(out.cov2, d.Tdiag.subs(S11, S22)), "var2 must be Tdiag at s22"
    if phi is None:
        return
    xs = np.array([-2.3, -1.0, -0.4, 0.3, 0.9, 1.7, 2.5])
    _, apply, _ = layer.finite({k: float(v) for k, v in layer.params}, static, (xs.size,), 1)
    got = np.asarray(apply({}, xs), dtype=np.float64)
    want = np.array([float(sp.N(phi(sp.Float(x), p))) for x in xs])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# -- negative controls: the checker can fail -----------------------------------------------------

WRONG = {
    "relu T, wrong slope": (_duals.relu(S11, S12, S22).T, _duals.abrelu(S11, S12, S22, 0, _R(1001, 1000)).T),
    "relu Price against sign's kernel": (sp.diff(_duals.plain(_duals.relu(S11, S12, S22).T), S12),
                                         _duals.sign(S11, S12, S22).T),
    "sin T with cos(c) for cos(2c)": (_duals.sin(S11, S12, S22, 1, 1, sp.Symbol("c0", real=True)).T,
                                      _duals.sin(S11, S12, S22, 1, 1, sp.Symbol("c0", real=True) / 2 + sp.pi / 4).T),
    "gelu Tdot perturbed": (_duals.gelu(S11, S12, S22).Tdot, _duals.gelu(S11, S12, S22).Tdot + S12**3 / 1000),
    "erf T, b^2 -> b": (_duals.erf(S11, S12, S22, 1, sp.Symbol("b", positive=True), 0).T,
                        _duals.erf(S11, S12, S22, 1, sp.sqrt(sp.Symbol("b", positive=True)), 0).T),
}


@pytest.mark.parametrize("name", sorted(WRONG))
def test_checker_rejects_wrong_identity(name: str) -> None:
    lhs, rhs = WRONG[name]
    d = _duals.plain(lhs) - _duals.plain(rhs)
    assert not radical_zero(d)
    pd = d.subs(PD, simultaneous=True)
    assert not radical_zero(pd)
    assert not _common._numeric_zero(pd, _duals.plain(lhs).subs(PD, simultaneous=True), {})


def test_proof_fails_on_mutated_closed_form(monkeypatch: pytest.MonkeyPatch) -> None:
    true_relu = _duals.relu

    def wrong_relu(s11: sp.Expr, s12: sp.Expr, s22: sp.Expr) -> _duals.Dual:
        d = true_relu(s11, s12, s22)  # T off by the sqrt(1 - rho^2) term's factor
        rho = s12 / sp.sqrt(s11 * s22)
        return _duals.Dual(d.T + sp.sqrt(s11 * s22) * sp.sqrt(1 - rho**2) / (4 * sp.pi), d.Tdot, d.Tdiag)

    monkeypatch.setattr(_common, "SIMPLIFY_SECONDS", 2)
    monkeypatch.setattr(_duals, "relu", wrong_relu)
    with pytest.raises(AssertionError, match="not proven"):
        pa.prove_relu()
