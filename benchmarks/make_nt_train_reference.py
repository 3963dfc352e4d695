"""Generate tests/data/nt_train_reference.npz: neural-tangents 0.6.5 linearization and training predictions.

    python benchmarks/make_nt_train_reference.py          # runs itself in the NT venv (benchmarks/_env/nt)

neural-tangents cannot be imported in kernelalg's environment (it pins jax 0.4.26 and numpy<2), so
tests/test_linearize.py and tests/test_predict.py read NT's outputs from this fixture. All in float64.

* ``net.<case>.*``: a stax network (``spec``: [layer name, args, kwargs] in NT's signatures), its inputs
  ``x``, NT's initial parameters ``p0.<i>`` and perturbed parameters ``p1.<i>`` (leaves in NT's order: per
  layer W then b, none for activations), and NT's outputs ``f0 = f(p0, x)``, ``f1 = f(p1, x)``,
  ``lin = nt.linearize(f, p0)(p1, x)``, ``taylor<d> = nt.taylor_expand(f, p0, d)(p1, x)`` for d = 0..3.
* ``gd.*``: kernels ``k_train_train`` (n, n), ``k_test_train`` (m, n), their untraced versions
  ``k_full_train_train`` (n, n, k, k) and ``k_full_test_train`` (m, n, k, k) (NT's zip layout for
  ``trace_axes=()``), one-hot ``y``, initial outputs ``fx_train_0``, ``fx_test_0``, times ``t``,
  ``learning_rate``; and for each run ``<run>.train``, ``<run>.test`` (T, n, k) / (T, m, k) from
  ``nt.predict.gradient_descent``: runs ``ce`` (softmax cross-entropy averaged over examples), ``ce_momentum``
  (momentum 0.9), ``mse_momentum`` (0.5 mean squared error, momentum 0.9), ``ce_full`` (untraced kernel,
  ``trace_axes=()``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "tests" / "data" / "nt_train_reference.npz"

NETS = {  # name: (input dim, layers)
    "smooth": (4, [["Dense", [12], {"W_std": 1.3, "b_std": 0.2}], ["Erf", [], {}],
                   ["Dense", [12], {"W_std": 1.1, "b_std": 0.1}], ["Sin", [], {}],
                   ["Dense", [3], {"W_std": 1.0, "b_std": 0.1}]]),
    "standard": (3, [["Dense", [10], {"W_std": 1.2, "b_std": 0.3, "parameterization": "standard"}],
                     ["Gelu", [], {"approximate": False}],
                     ["Dense", [2], {"W_std": 0.9, "b_std": 0.2, "parameterization": "standard"}]]),
}
N, M, K = 6, 4, 3
LEARNING_RATE = 0.7
TIMES = [0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0]


def _worker(out_path: str) -> None:
    """Runs inside the NT venv."""
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    import neural_tangents as nt
    from neural_tangents import stax

    out = {"_versions": np.array(json.dumps({"neural_tangents": nt.__version__, "jax": jax.__version__,
                                             "numpy": np.__version__}))}
    for seed, (name, (dim, layers)) in enumerate(NETS.items()):
        rng = np.random.default_rng(200 + seed)
        init_fn, apply_fn, _ = stax.serial(*[getattr(stax, n)(*a, **kw) for n, a, kw in layers])
        _, p0 = init_fn(jax.random.PRNGKey(seed), (-1, dim))
        p0 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), p0)
        leaves, tree = jax.tree_util.tree_flatten(p0)
        p1 = jax.tree_util.tree_unflatten(tree, [a + 0.2 * rng.standard_normal(a.shape) for a in leaves])
        x = rng.standard_normal((5, dim))
        pre = f"net.{name}."
        out[pre + "spec"] = np.array(json.dumps(layers))
        out[pre + "x"] = x
        for i, (a, b) in enumerate(zip(leaves, jax.tree_util.tree_leaves(p1))):
            out[pre + f"p0.{i}"], out[pre + f"p1.{i}"] = np.asarray(a), np.asarray(b)
        out[pre + "f0"], out[pre + "f1"] = np.asarray(apply_fn(p0, x)), np.asarray(apply_fn(p1, x))
        out[pre + "lin"] = np.asarray(nt.linearize(apply_fn, p0)(p1, x))
        for d in range(4):
            out[pre + f"taylor{d}"] = np.asarray(nt.taylor_expand(apply_fn, p0, d)(p1, x))

    rng = np.random.default_rng(300)
    feats = rng.standard_normal((N + M, 20))
    k_all = feats @ feats.T / 20
    full_feats = rng.standard_normal((N + M, K, 40))
    k_full = np.einsum("iap,jbp->ijab", full_feats, full_feats) / 40  # (N+M, N+M, K, K), zip layout
    y = np.eye(K)[rng.integers(0, K, N)]
    fx0, ft0 = 0.3 * rng.standard_normal((N, K)), 0.3 * rng.standard_normal((M, K))
    t = np.array(TIMES)
    g = {"k_train_train": k_all[:N, :N], "k_test_train": k_all[N:, :N], "k_full_train_train": k_full[:N, :N],
         "k_full_test_train": k_full[N:, :N], "y": y, "fx_train_0": fx0, "fx_test_0": ft0, "t": t,
         "learning_rate": np.array(LEARNING_RATE)}
    for key, val in g.items():
        out["gd." + key] = val
    ce = lambda fx, yy: -jnp.sum(yy * jax.nn.log_softmax(fx, axis=-1)) / fx.shape[0]  # noqa: E731
    mse = lambda fx, yy: 0.5 * jnp.mean((fx - yy) ** 2)  # noqa: E731
    runs = {"ce": (ce, None, False), "ce_momentum": (ce, 0.9, False), "mse_momentum": (mse, 0.9, False),
            "ce_full": (ce, None, True)}
    for run, (loss, momentum, full) in runs.items():
        ktt = g["k_full_train_train"] if full else g["k_train_train"]
        ktx = g["k_full_test_train"] if full else g["k_test_train"]
        predict = nt.predict.gradient_descent(loss, jnp.asarray(ktt), jnp.asarray(y), LEARNING_RATE, momentum,
                                              trace_axes=() if full else (-1,))
        ftr, fte = predict(jnp.asarray(t), jnp.asarray(fx0), jnp.asarray(ft0), jnp.asarray(ktx))
        out[f"gd.{run}.train"], out[f"gd.{run}.test"] = np.asarray(ftr), np.asarray(fte)
        print(run, np.asarray(ftr).shape, file=sys.stderr, flush=True)
    np.savez_compressed(out_path, **out)


def main() -> int:
    sys.path.insert(0, str(HERE))
    from nt_env import generator_main
    return generator_main(_worker, Path(__file__).resolve(), OUT)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
