"""Generate tests/data/nt_attention_reference.npz: neural-tangents 0.6.5 kernels with GlobalSelfAttention,
LayerNorm and Dropout on small inputs.

    python benchmarks/make_nt_attention_reference.py [--python PATH]   # runs itself in the NT venv

As benchmarks/make_nt_conv_reference.py (whose file format this follows): NT cannot be imported in
kernelalg's environment, so tests/test_attention.py and tests/test_normalization.py read NT's outputs from
this fixture. For every case the file stores ``<case>.spec`` (JSON list of [stax layer name, args, kwargs] in
NT's own signatures; a string ``pos_emb_decay_fn`` names one of :data:`DECAYS`; ``FanOut``/``parallel``/
``FanInSum`` nest as in stax), the float64 inputs ``<case>.x1``, ``<case>.x2``, and
``<case>.<call>.<field>`` for call in {"sym" (x2=None), "cross" (x2 given), "same" (x2 = a copy of x1)} and
field in {nngp, ntk, cov1, cov2}, plus ``<case>.<call>.is_reversed``. All in float64 (jax_enable_x64).

The cases cover LayerNorm (channels; channels + spatial axes; eps), Dropout (train on dense, 1-D and 2-D
conv states with pooling and with Flatten; test mode; x2 equal to x1), GlobalSelfAttention with linear
scaling (softmax, identity, abs, relu; biases; positional embeddings SUM / CONCAT with and without
n_chan_pos_emb / a distance decay / val_pos_emb), 1/sqrt scaling with the identity mechanism (with and
without embeddings), attention on 2-D images after a Conv, a network without readout, and a small
transformer (attention + residual, LayerNorm, MLP + residual, twice, then GlobalAvgPool and Dense).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "tests" / "data" / "nt_attention_reference.npz"

#: Names of positional-embedding covariance decays (the test defines the same functions with NumPy).
DECAYS = ("exp_half",)


def _gsa(out=8, key=8, val=8, heads=2, **kw):
    return ["GlobalSelfAttention", [out, key, val, heads], kw]


def _dense(out=8, W_std=1.2, b_std=0.1):
    return ["Dense", [out], {"W_std": W_std, "b_std": b_std}]


def _conv(out, filt, padding="SAME", W_std=1.3, b_std=0.2):
    return ["Conv", [out, list(filt)], {"padding": padding, "W_std": W_std, "b_std": b_std}]


RELU, ERF, GAP, FLAT = ["Relu", [], {}], ["Erf", [], {}], ["GlobalAvgPool", [], {}], ["Flatten", [], {}]
IDENT = ["Identity", [], {}]
OUT1 = _dense(1, 1.1, 0.05)


def _residual(*branch):
    return ["residual", [list(branch)], {}]


_BLOCK = [_residual(_gsa(8, 8, 8, 2, W_key_std=1.1, W_query_std=0.9, W_value_std=1.2, W_out_std=0.8, b_std=0.1)),
          ["LayerNorm", [], {}],
          _residual(_dense(8, 1.3, 0.1), RELU, _dense(8, 1.1, 0.1)),
          ["LayerNorm", [], {}]]

CASES = {  # name: (input shape without batch, layers, calls)
    "layernorm_dense": ((5,), [_dense(), ["LayerNorm", [], {"eps": 0.1}], ERF, OUT1], ("sym", "cross")),
    "layernorm_conv_spatial": ((4, 3, 2), [_conv(6, (2, 2)), ["LayerNorm", [[1, 2, 3]], {"eps": 1e-3}], ERF,
                                           _conv(6, (2, 2)), ["LayerNorm", [[-1, 1]], {}], RELU, GAP, OUT1],
                               ("sym", "cross")),
    "layernorm_flatten": ((5, 2), [_conv(6, (2,)), ["LayerNorm", [[1, 2]], {}], RELU, FLAT, OUT1], ("sym", "cross")),
    "dropout_dense": ((5,), [_dense(), RELU, ["Dropout", [0.7], {}], _dense(8, 1.4, 0.1), ERF, OUT1],
                      ("sym", "cross", "same")),
    "dropout_test": ((5,), [_dense(), RELU, ["Dropout", [0.7], {"mode": "test"}], OUT1], ("sym",)),
    "dropout_conv_gap": ((4, 3, 2), [_conv(6, (2, 2)), RELU, ["Dropout", [0.6], {}], _conv(6, (2, 2)), RELU,
                                     ["AvgPool", [[2, 2]], {"padding": "SAME"}], GAP, OUT1], ("sym", "cross", "same")),
    "dropout_conv_flatten": ((5, 2), [_conv(6, (2,)), ERF, ["Dropout", [0.8], {}], FLAT, OUT1], ("sym", "cross")),
    "gsa_softmax": ((4, 3), [_dense(), _gsa(W_key_std=1.3, W_query_std=0.8, W_value_std=1.1, W_out_std=0.9,
                                            b_std=0.2), GAP, OUT1], ("sym", "cross")),
    "gsa_softmax_first": ((4, 3), [_gsa(W_key_std=1.5, W_value_std=1.2), RELU, GAP, OUT1], ("sym", "cross")),
    "gsa_identity": ((4, 3), [_dense(), _gsa(attention_mechanism="IDENTITY", W_key_std=0.7), ERF, GAP, OUT1],
                     ("sym", "cross")),
    "gsa_abs": ((4, 3), [_dense(), _gsa(attention_mechanism="ABS", b_std=0.1), GAP, OUT1], ("sym", "cross")),
    "gsa_relu": ((4, 3), [_dense(), _gsa(attention_mechanism="RELU", W_query_std=1.4), RELU, FLAT, OUT1],
                 ("sym", "cross")),
    "gsa_sum_pos": ((4, 3), [_dense(), _gsa(pos_emb_type="SUM", W_pos_emb_std=0.8, b_std=0.1), GAP, OUT1],
                    ("sym", "cross")),
    "gsa_concat_pos_val": ((5, 3), [_dense(), _gsa(pos_emb_type="CONCAT", n_chan_pos_emb=4, W_pos_emb_std=1.3,
                                                   val_pos_emb=True), GAP, OUT1], ("sym", "cross")),
    "gsa_decay_pos": ((5, 2), [_dense(), _gsa(pos_emb_type="SUM", pos_emb_decay_fn="exp_half", pos_emb_p_norm=1,
                                              attention_mechanism="RELU"), GAP, OUT1], ("sym", "cross")),
    "gsa_sqrt_identity": ((4, 3), [_dense(), _gsa(linear_scaling=False, attention_mechanism="IDENTITY",
                                                  W_key_std=0.9, b_std=0.1), RELU, GAP, OUT1], ("sym", "cross")),
    "gsa_sqrt_identity_pos": ((4, 3), [_dense(), _gsa(linear_scaling=False, attention_mechanism="IDENTITY",
                                                      pos_emb_type="CONCAT", W_pos_emb_std=1.2), GAP, OUT1],
                              ("sym", "cross")),
    "gsa_sqrt_identity_valpos": ((4, 2), [_dense(), _gsa(linear_scaling=False, attention_mechanism="IDENTITY",
                                                         pos_emb_type="SUM", val_pos_emb=True), FLAT, OUT1],
                                 ("sym", "cross")),
    "gsa_image": ((3, 3, 2), [_conv(6, (2, 2)), RELU, _gsa(pos_emb_type="SUM", pos_emb_decay_fn="exp_half"),
                              ["LayerNorm", [[1, 2, 3]], {}], GAP, OUT1], ("sym", "cross")),
    "gsa_spatial_out": ((4, 3), [_dense(), _gsa(b_std=0.1)], ("sym",)),
    "transformer": ((4, 3), [_dense(8, 1.0, 0.0)] + _BLOCK + _BLOCK + [GAP, OUT1], ("sym", "cross")),
}
N1, N2 = 3, 2


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

    def build(layers):
        out = []
        for name, args, kw in layers:
            if name == "residual":
                out.append(stax.serial(stax.FanOut(2), stax.parallel(build(args[0]), stax.Identity()),
                                       stax.FanInSum()))
                continue
            kw = {k: (decays[v] if k == "pos_emb_decay_fn" else tup(v)) for k, v in kw.items()}
            out.append(getattr(stax, name)(*map(tup, args), **kw))
        return stax.serial(*out)

    out = {"_versions": np.array(json.dumps({"neural_tangents": nt.__version__, "jax": jax.__version__,
                                             "numpy": np.__version__}))}
    for seed, (name, (shape, layers, calls)) in enumerate(CASES.items()):
        rng = np.random.default_rng(200 + seed)
        x1, x2 = rng.standard_normal((N1,) + shape), rng.standard_normal((N2,) + shape)
        kernel_fn = build(layers)[2]
        out[f"{name}.spec"] = np.array(json.dumps(layers))
        out[f"{name}.x1"], out[f"{name}.x2"] = x1, x2
        for call in calls:
            b = {"sym": None, "cross": x2, "same": np.array(x1)}[call]
            k = kernel_fn(x1, b, get=None)
            for field in ("nngp", "ntk", "cov1", "cov2"):
                v = getattr(k, field)
                if v is not None:
                    out[f"{name}.{call}.{field}"] = np.asarray(v, np.float64)
            out[f"{name}.{call}.is_reversed"] = np.array(bool(k.is_reversed))
            print(name, call, np.asarray(k.nngp).shape, file=sys.stderr, flush=True)
    np.savez_compressed(out_path, **out)


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        _worker(sys.argv[2])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", help="python of a venv with neural-tangents 0.6.5 (default: benchmarks/_env/nt)")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from nt_env import run_worker
    run_worker(Path(__file__).resolve(), OUT, args.python)
    print(OUT)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
