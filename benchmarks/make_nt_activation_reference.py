"""Generate tests/data/nt_activation_reference.npz: neural-tangents 0.6.5 kernels of stax.Hermite,
stax.Sigmoid_like, stax.Gabor and stax.ExpNormalized networks.

    python benchmarks/make_nt_activation_reference.py    # runs itself in the NT venv (benchmarks/_env/nt)

neural-tangents cannot be imported in kernelalg's environment, so tests/test_nt_activations.py reads its
outputs from this fixture: ``x1``, ``x2`` (float64 inputs on the sphere of radius sqrt(d), so that the first
Dense(W_std=1, b_std=0) gives unit-variance pre-activations, which NT's Hermite kernel assumes) and
``<case>.nngp``, ``<case>.ntk`` of Dense(W_std=1, b_std=0) >> activation >> Dense(W_std=1, b_std=0), for
case in hermite_0 .. hermite_5, sigmoid_like, gabor, expnormalized_a (gamma 0.7, shift -0.5) and
expnormalized_b (gamma 1, shift -1).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "tests" / "data" / "nt_activation_reference.npz"


def _inputs():
    import numpy as np
    rng = np.random.default_rng(7)
    x1, x2 = rng.normal(size=(5, 6)), rng.normal(size=(3, 6))
    return [x * np.sqrt(6) / np.linalg.norm(x, axis=1, keepdims=True) for x in (x1, x2)]


def _worker(out_path: str) -> None:
    import warnings

    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from neural_tangents import stax

    x1, x2 = _inputs()
    out = {"x1": x1, "x2": x2}
    cases = {f"hermite_{n}": stax.Hermite(n) for n in range(6)}
    cases["sigmoid_like"] = stax.Sigmoid_like()
    cases["gabor"] = stax.Gabor()
    cases["expnormalized_a"] = stax.ExpNormalized(gamma=0.7, shift=-0.5)
    cases["expnormalized_b"] = stax.ExpNormalized(gamma=1.0, shift=-1.0)
    for name, act in cases.items():
        _, _, kernel_fn = stax.serial(stax.Dense(1, W_std=1.0, b_std=0.0), act, stax.Dense(1, W_std=1.0, b_std=0.0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            k = kernel_fn(x1, x2, ("nngp", "ntk"))
        out[f"{name}.nngp"], out[f"{name}.ntk"] = np.asarray(k.nngp), np.asarray(k.ntk)
    np.savez(out_path, **out)


def main() -> int:
    sys.path.insert(0, str(HERE))
    from nt_env import generator_main
    return generator_main(_worker, Path(__file__).resolve(), OUT)


if __name__ == "__main__":
    sys.exit(main())
