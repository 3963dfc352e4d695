"""Generate tests/data/nt_attention_masks_reference.npz: neural-tangents 0.6.5 kernels of GlobalSelfAttention on
masked sequences (``kernel_fn(x1, x2, get, mask_constant=c)``).

    python benchmarks/make_nt_attention_masks_reference.py    # runs itself in the NT venv (benchmarks/_env/nt)

As benchmarks/make_nt_masks_reference.py (whose file format this follows): tests/test_attention_masks.py reads
NT's outputs from this fixture. For every case the file stores

* ``<case>.spec``: the architecture as JSON, a leaf is [stax layer name, args, kwargs] in NT's signatures (a
  string ``pos_emb_decay_fn`` names one of :data:`DECAYS`, which the test defines with NumPy);
* ``<case>.x1``, ``<case>.x2``: float64 1-D sequences (batch, length, channels), seeded standard normal, of
  different lengths padded to a common length with the constant (every channel equal to it: masked), plus one
  single entry equal to the constant at a valid position (zeroed, not masked);
* ``<case>.c``: the mask constant;
* ``<case>.<call>.<field>`` for call in {"sym" (x2=None), "cross"} and field in {nngp, ntk}.

The cases: linear scaling with softmax (masked keys get logits -inf), identity, abs and relu weights (masked
keys get logits 0), without and with positional embeddings (SUM, CONCAT with val_pos_emb, a distance decay),
1/sqrt(n_key) scaling with identity weights (with and without embeddings), two attention layers in a row, and
readouts GlobalAvgPool and Flatten.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "tests" / "data" / "nt_attention_masks_reference.npz"

#: Names of positional-embedding covariance decays (the test defines the same functions with NumPy).
DECAYS = ("exp_half",)


def _gsa(**kw):
    return ["GlobalSelfAttention", [8, 8, 8, 2], kw]


def _dense(out=8, W_std=1.2, b_std=0.1):
    return ["Dense", [out], {"W_std": W_std, "b_std": b_std}]


RELU, ERF, GAP, FLAT = ["Relu", [], {}], ["Erf", [], {}], ["GlobalAvgPool", [], {}], ["Flatten", [], {}]
OUT1 = _dense(1, 1.1, 0.05)
SQRT_ID = {"linear_scaling": False, "attention_mechanism": "IDENTITY"}

CASES = {  # name: (length, channels, mask constant, layers); sequences of length, length-2, length-3 valid
    "softmax_gap": (6, 3, -1.0, [_dense(), _gsa(W_key_std=1.3, W_query_std=0.8, W_value_std=1.1, W_out_std=0.9,
                                                b_std=0.2), GAP, OUT1]),
    "softmax_sum_pos_flatten": (6, 3, 0.0, [_dense(), _gsa(pos_emb_type="SUM", W_pos_emb_std=0.8, b_std=0.1), RELU,
                                            FLAT, OUT1]),
    "identity_concat_valpos_gap": (6, 3, -1.0, [_dense(), _gsa(attention_mechanism="IDENTITY", W_key_std=0.7,
                                                               pos_emb_type="CONCAT", n_chan_pos_emb=4,
                                                               W_pos_emb_std=1.3, val_pos_emb=True), ERF, GAP, OUT1]),
    "relu_decay_pos_flatten": (5, 2, -1.0, [_dense(), _gsa(attention_mechanism="RELU", W_query_std=1.4,
                                                           pos_emb_type="SUM", pos_emb_decay_fn="exp_half",
                                                           pos_emb_p_norm=1), FLAT, OUT1]),
    "abs_gap": (6, 3, -1.0, [_dense(), _gsa(attention_mechanism="ABS", b_std=0.1), RELU, GAP, OUT1]),
    "sqrt_identity_gap": (6, 3, -1.0, [_dense(), _gsa(W_key_std=0.9, b_std=0.1, **SQRT_ID), RELU, GAP, OUT1]),
    "sqrt_identity_concat_flatten": (5, 3, -1.0, [_dense(), _gsa(pos_emb_type="CONCAT", W_pos_emb_std=1.2,
                                                                 **SQRT_ID), FLAT, OUT1]),
    "sqrt_identity_sum_valpos_gap": (5, 2, -1.0, [_dense(), _gsa(pos_emb_type="SUM", val_pos_emb=True, **SQRT_ID),
                                                  GAP, OUT1]),
    "two_layers_gap": (6, 3, -1.0, [_dense(), _gsa(b_std=0.1), RELU, _dense(8, 1.1, 0.2),
                                    _gsa(attention_mechanism="IDENTITY", pos_emb_type="SUM"), GAP, OUT1]),
}
N1, N2 = 3, 2


def padded_sequences(rng, n: int, length: int, channels: int, c: float):
    """Standard normal sequences of length, length - 2, length - 3, ... valid positions, padded with c; one entry
    of a valid position equal to c (zeroed, not masked)."""
    import numpy as np
    x = rng.standard_normal((n, length, channels))
    for i in range(n):
        x[i, length - (0, 2, 3)[i % 3]:] = c
        x[i, 1, 0] = c
    return x


def _worker(out_path: str) -> None:
    """Runs inside the NT venv."""
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    import neural_tangents as nt
    from neural_tangents import stax

    decays = {"exp_half": lambda d: jnp.exp(-d / 2)}

    def tup(v):
        return tuple(v) if isinstance(v, list) else v

    def make(spec):
        name, args, kw = spec
        kw = {k: (decays[v] if k == "pos_emb_decay_fn" else tup(v)) for k, v in kw.items()}
        return getattr(stax, name)(*map(tup, args), **kw)

    out = {"_versions": np.array(json.dumps({"neural_tangents": nt.__version__, "jax": jax.__version__,
                                             "numpy": np.__version__}))}
    for seed, (name, (length, channels, c, layers)) in enumerate(CASES.items()):
        rng = np.random.default_rng(900 + seed)
        x1, x2 = (padded_sequences(rng, n, length, channels, c) for n in (N1, N2))
        kernel_fn = stax.serial(*map(make, layers))[2]
        out[f"{name}.spec"] = np.array(json.dumps(layers))
        out[f"{name}.x1"], out[f"{name}.x2"], out[f"{name}.c"] = x1, x2, np.float64(c)
        for call, b in (("sym", None), ("cross", x2)):
            k = kernel_fn(x1, b, get=None, mask_constant=c)
            for field in ("nngp", "ntk"):
                v = np.asarray(getattr(k, field), np.float64)
                if not np.all(np.isfinite(v)):
                    raise SystemExit(f"{name} {call} {field}: neural-tangents gave non-finite values")
                out[f"{name}.{call}.{field}"] = v
            print(name, call, np.asarray(k.nngp).ravel()[:3], file=sys.stderr, flush=True)
    np.savez_compressed(out_path, **out)


def main() -> int:
    sys.path.insert(0, str(HERE))
    from nt_env import generator_main
    return generator_main(_worker, Path(__file__).resolve(), OUT)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
