"""``ka.repeat`` (neural-tangents' ``stax.repeat``): n identical blocks, their kernel against the arc-cosine
recursion written out in NumPy (Cho & Saul 2009; the NTK recursion of Jacot et al. 2018 / Arora et al. 2019),
and clear errors for a bad count."""

from __future__ import annotations

import numpy as np
import pytest

import kernelalg as ka


def _relu_recursion(x: np.ndarray, depth: int, w: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """[Dense(w, b) >> Relu] x depth >> Dense(w, b), NTK parametrization, by the textbook recursion."""
    k = w**2 * (x @ x.T) / x.shape[1] + b**2
    theta = k.copy()
    for _ in range(depth):
        d = np.sqrt(np.outer(np.diag(k), np.diag(k)))
        rho = np.clip(k / d, -1.0, 1.0)
        t = np.arccos(rho)
        k_new = d * (np.sin(t) + (np.pi - t) * rho) / (2 * np.pi)
        kdot = (np.pi - t) / (2 * np.pi)
        k = w**2 * k_new + b**2
        theta = k + w**2 * kdot * theta
    return k, theta


@pytest.mark.parametrize("depth", [1, 7, 40])
def test_repeat_matches_the_arccos_recursion(depth: int) -> None:
    x = np.random.default_rng(1).normal(size=(5, 6))
    net = ka.repeat(ka.Dense(1.4, 0.1) >> ka.Relu(), depth) >> ka.Dense(1.4, 0.1)
    k = ka.kernel(net, x)
    nngp, ntk = _relu_recursion(x, depth, 1.4, 0.1)
    np.testing.assert_allclose(np.asarray(k.nngp), nngp, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(k.ntk), ntk, rtol=1e-10)
    assert len(net.leaves()) == 2 * depth + 1


def test_repeat_is_the_language_repeat() -> None:
    block = ka.Dense(1.4, 0.1) >> ka.Relu()
    assert repr(ka.repeat(block, 3)) == repr(ka.parse("repeat(Dense(1.4, 0.1) >> Relu(), 3)"))


@pytest.mark.parametrize("n", [0, -2, 2.5, True, "3", None, 10**6])
def test_bad_counts_are_refused(n: object) -> None:
    with pytest.raises(ka.KernelalgError, match="Fix"):
        ka.repeat(ka.Dense() >> ka.Relu(), n)
