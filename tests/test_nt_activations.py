"""neural-tangents' Hermite, Sigmoid_like, Gabor and ExpNormalized: kernels against neural-tangents 0.6.5's own outputs (stored in
tests/data/nt_activation_reference.npz by benchmarks/make_nt_activation_reference.py, float64), and Hermite off
unit variance, where neural-tangents' formula (c^n, which assumes unit-variance pre-activations) does not hold,
against Monte Carlo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import kernelalg as ka

NT = np.load(Path(__file__).resolve().parent / "data" / "nt_activation_reference.npz")


def _net(name: str) -> ka.Layer:
    if name in ("sigmoid_like", "gabor"):
        act = ka.Sigmoid_like() if name == "sigmoid_like" else ka.Gabor()
    elif name.startswith("expnormalized"):
        act = ka.ExpNormalized(0.7, -0.5) if name.endswith("_a") else ka.ExpNormalized(1.0, -1.0)
    else:
        act = ka.Hermite(int(name.split("_")[1]))
    return ka.Dense(1.0, 0.0) >> act >> ka.Dense(1.0, 0.0)


@pytest.mark.parametrize("name", sorted({k.split(".")[0] for k in NT.files if not k.startswith("x")}))
def test_matches_neural_tangents(name: str) -> None:
    k = ka.kernel(_net(name), NT["x1"], NT["x2"])
    for part in ("nngp", "ntk"):
        ref = NT[f"{name}.{part}"]
        np.testing.assert_allclose(np.asarray(getattr(k, part)), ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())


def test_hermite_off_unit_variance_matches_monte_carlo() -> None:
    """Inputs of variance 2.25: the exact polynomial dual, not c^n, within 5 standard errors of the Monte Carlo
    mean of 64 networks of width 256 (one hidden layer on the inputs: unbiased at any width)."""
    x = np.random.default_rng(3).normal(size=(3, 6))
    x *= 1.5 / np.linalg.norm(x, axis=1, keepdims=True) * np.sqrt(6)
    net = ka.Dense(1.0, 0.0) >> ka.Hermite(3) >> ka.Dense(1.0, 0.0)
    exact = np.asarray(ka.kernel(net, x, get="nngp"))
    mc = ka.monte_carlo(net, x, width=256, samples=64, key=0, get="nngp")
    z = (exact - np.asarray(mc.nngp)) / np.asarray(mc.stderr.nngp)
    assert np.abs(z).max() < 5, z
    c = x @ x.T / 6
    assert np.abs(exact - c**3).max() > 0.2 * np.abs(exact).max()  # the unit-variance formula is 30% off here


@pytest.mark.parametrize("gamma, shift", [(0.7, -0.5), (1.3, -1.0)])
def test_expnormalized_twin_matches_monte_carlo(gamma: float, shift: float) -> None:
    """neural-tangents has no finite network for ExpNormalized; the twin here (normalize, sqrt(2) sin(sqrt(gamma) u
    + pi/4), rescale) must reproduce the kernel: within 5 standard errors of 64 networks of width 1024. (Not in
    the property suite, which runs width 16 and needs estimates unbiased at any width: the normalization's
    Jacobian adds an O(1/n) bias to the twin's NTK, 6% at width 16, 0.08% at width 4096.)"""
    x = np.random.default_rng(0).normal(size=(4, 6))
    net = ka.Dense(1.2, 0.1) >> ka.ExpNormalized(gamma, shift) >> ka.Dense(1.0, 0.1)
    k = ka.kernel(net, x)
    mc = ka.monte_carlo(net, x, width=1024, samples=64, key=1)
    for part in ("nngp", "ntk"):
        z = (np.asarray(getattr(k, part)) - getattr(mc, part)) / getattr(mc.stderr, part)
        assert np.abs(z).max() < 5, (part, z)
