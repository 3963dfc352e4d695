"""Generate tests/data/nt_tanh_reference.npz: neural-tangents 0.6.5 kernels of tanh and logistic-sigmoid networks
by its ``stax.ElementwiseNumerical`` (bivariate Gauss-Hermite quadrature of ``deg`` points per axis).

    python benchmarks/make_nt_tanh_reference.py    # runs itself in the NT venv (benchmarks/_env/nt)

neural-tangents has no closed form for tanh or the sigmoid; its numerical layer is an independent computation
(a product rule on the 2x2 covariance, derivative by the analytic ``df``) of the same integrals that kernelalg's
``Tanh``/``Sigmoid`` evaluate by a one-dimensional rule per correlation with a stated bound. Stored: ``x1``
(5, 6), ``x2`` (3, 6) on the sphere of radius sqrt(6), and for each case ``<case>.nngp``, ``<case>.ntk`` at
``deg`` = 256 and, as a measure of NT's own quadrature error, ``<case>.nngp_coarse``/``.ntk_coarse`` at deg 192.
Cases (pre-activation variances stay <= 1 for tanh, <= 4 for the sigmoid, kernelalg's default ranges):
``tanh``: Dense(0.9, 0.2) >> tanh >> Dense(1.0, 0.1) >> tanh >> Dense(1.0, 0.0);
``sigmoid``: Dense(1.8, 0.3) >> sigmoid >> Dense(1.5, 0.2) >> sigmoid >> Dense(1.0, 0.0).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "tests" / "data" / "nt_tanh_reference.npz"
CASES = {"tanh": ((0.9, 0.2), (1.0, 0.1), (1.0, 0.0)), "sigmoid": ((1.8, 0.3), (1.5, 0.2), (1.0, 0.0))}
DEG, COARSE = 256, 192


def _inputs():
    import numpy as np
    rng = np.random.default_rng(11)
    x1, x2 = rng.normal(size=(5, 6)), rng.normal(size=(3, 6))
    return [x * np.sqrt(6) / np.linalg.norm(x, axis=1, keepdims=True) for x in (x1, x2)]


def _worker(out_path: str) -> None:
    import warnings

    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    from neural_tangents import stax

    fns = {"tanh": (jnp.tanh, lambda u: 1 - jnp.tanh(u) ** 2),
           "sigmoid": (jax.nn.sigmoid, lambda u: jax.nn.sigmoid(u) * (1 - jax.nn.sigmoid(u)))}
    x1, x2 = _inputs()
    out = {"x1": x1, "x2": x2}
    for name, (d1, d2, d3) in CASES.items():
        fn, df = fns[name]
        for deg, suffix in ((DEG, ""), (COARSE, "_coarse")):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                act = stax.ElementwiseNumerical(fn, deg, df)
                _, _, kernel_fn = stax.serial(stax.Dense(1, *d1), act, stax.Dense(1, *d2), act, stax.Dense(1, *d3))
                k = kernel_fn(x1, x2, ("nngp", "ntk"))
            out[f"{name}.nngp{suffix}"], out[f"{name}.ntk{suffix}"] = np.asarray(k.nngp), np.asarray(k.ntk)
    np.savez(out_path, **out)


def main() -> int:
    sys.path.insert(0, str(HERE))
    from nt_env import generator_main
    return generator_main(_worker, Path(__file__).resolve(), OUT)


if __name__ == "__main__":
    sys.exit(main())
