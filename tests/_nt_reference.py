"""Reading the stored neural-tangents 0.6.5 outputs of benchmarks/make_nt_attention_reference.py (attention,
LayerNorm, Dropout): the spec translated to kernelalg and NT's arrays in kernelalg's layout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

import kernelalg as ka

NT_ATTENTION = np.load(Path(__file__).resolve().parent / "data" / "nt_attention_reference.npz")

#: The positional-embedding decays named in the fixture (the maker uses the same functions in jax.numpy).
DECAYS = {"exp_half": lambda d: np.exp(-d / 2)}


def _tup(v):
    return tuple(v) if isinstance(v, list) else v


def _layer(name: str, args: list, kw: dict) -> ka.Layer:
    args, kw = [_tup(v) for v in args], {k: _tup(v) for k, v in kw.items()}
    if name == "residual":
        return ka.FanOut(2) >> ka.parallel(_serial(args[0]), ka.Identity()) >> ka.FanInSum()
    if name == "Conv":
        return ka.Conv(args[1], out_chan=args[0], **kw)
    if name == "Dense":
        return ka.Dense(out_dim=args[0], **kw)
    if name == "GlobalSelfAttention":  # NT's leading widths are keyword-only in kernelalg
        out, key, val, heads = args
        if "pos_emb_decay_fn" in kw:
            kw["pos_emb_decay_fn"] = DECAYS[kw["pos_emb_decay_fn"]]
        return ka.GlobalSelfAttention(n_chan_out=out, n_chan_key=key, n_chan_val=val, n_heads=heads, **kw)
    return getattr(ka, name)(*args, **kw)


def _serial(layers: list) -> ka.Layer:
    return ka.serial(*[_layer(*spec) for spec in layers])


def nt_cases() -> list[str]:
    return sorted({k.split(".")[0] for k in NT_ATTENTION.files if not k.startswith("_")})


def nt_calls(name: str) -> list[str]:
    return sorted({k.split(".")[1] for k in NT_ATTENTION.files if k.startswith(name + ".") and k.count(".") == 2})


def nt_net(name: str) -> ka.Layer:
    """The stored stax spec in kernelalg: same layer names and keywords."""
    return _serial(json.loads(str(NT_ATTENTION[f"{name}.spec"])))


def nt_inputs(name: str, call: str) -> tuple[np.ndarray, np.ndarray | None]:
    x1 = NT_ATTENTION[f"{name}.x1"]
    return x1, {"sym": None, "cross": NT_ATTENTION[f"{name}.x2"], "same": x1.copy()}[call]


def nt_expected(name: str, call: str, field: str) -> np.ndarray:
    """NT's array in kernelalg's layout: spatial kernels (N, M, *S, *S'), spatial variances (N, *S)."""
    want = NT_ATTENTION[f"{name}.{call}.{field}"]
    k = want.ndim - (2 if field in ("nngp", "ntk") else 1)
    if k == 0:
        return want
    lead = want.ndim - k  # NT: interleaved (p_1, p'_1, p_2, p'_2, ...), reversed after an odd number of convs
    pairs = [(lead + 2 * i, lead + 2 * i + 1) for i in range(k // 2)]
    if bool(NT_ATTENTION[f"{name}.{call}.is_reversed"]):
        pairs = pairs[::-1]
    want = want.transpose(tuple(range(lead)) + tuple(p[0] for p in pairs) + tuple(p[1] for p in pairs))
    if field.startswith("cov"):  # NT keeps each input's full self grid; kernelalg its per-position variances
        s = want.shape[lead:lead + k // 2]
        want = np.diagonal(want.reshape(want.shape[:lead] + (math.prod(s),) * 2), axis1=-2, axis2=-1).reshape(
            want.shape[:lead] + s)
    return want


def assert_matches_nt(k: ka.Kernel, name: str, call: str, rtol: float = 1e-10) -> None:
    """Every stored field agrees with NT to ``rtol`` (relative; 1e-12 absolute for entries near zero)."""
    checked = 0
    for field in ("nngp", "ntk", "cov1", "cov2"):
        if f"{name}.{call}.{field}" not in NT_ATTENTION.files:
            continue
        want = nt_expected(name, call, field)
        got = np.asarray(getattr(k, field)).reshape(want.shape)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-12, err_msg=f"{name} {call} {field}")
        checked += 1
    assert checked >= 3, (name, call)
