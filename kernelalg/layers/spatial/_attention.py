"""Global self-attention (neural-tangents' ``stax.GlobalSelfAttention``): its kernel and finite-width twin.

Finite network (NT's ``apply_fn``, NTK parametrization; inputs (batch, *spatial, channels) flattened to P
positions with C channels): per head h, keys k = x W_K, queries q = x W_Q (linear scaling: W_Q = W_K, tied),
values v = x W_V; logits ``QK q k^T / (C n_key)`` (linear scaling) or ``/ (C sqrt(n_key))``; weights
``phi(logits)`` with phi one of softmax (over keys), identity, abs, relu; output ``concat_h(phi v) W_O OV /
sqrt(n_val n_heads C) + b_std b``, with QK = W_query_std W_key_std, OV = W_out_std W_value_std and all weights
unit Gaussians. Optional positional embeddings (unit Gaussians of covariance R over positions, times
W_pos_emb_std) are added to ("SUM") or concatenated with ("CONCAT") the inputs of the keys and queries, and
of the values with ``val_pos_emb``.

Kernel (the limit of infinitely many key, value and input channels; Hron et al. 2020), with A, A_T the maps
of :mod:`._attend`:  K <- OV^2 A + b^2,  Theta <- OV^2 A_T + b^2 -- closed forms given the input kernel on
position pairs. The state must carry every position pair and each input's own grid (``Spatial(pairs=True)``,
like pooling); with one readout the pairs run in chunks (:mod:`._pairs`): the self pairs first record each
input's attention weights, the other pairs read them.

With 1/sqrt(n_key) scaling the logits stay Gaussian: identity weights have neural-tangents' closed form, abs and
relu weights the arc-cosine duals of the logits (neural-tangents refuses these two). Unsupported (a clear
error): 1/sqrt(n_key) scaling with softmax weights (they depend on a whole row of Gaussian logits: no closed
form); attention after ``Recurrent`` (the sequence layout of recurrent nets).

Masked inputs (``mask_constant``, :mod:`._masks`) as neural-tangents 0.6.5: masked keys are excluded (logits
-1e20 before a softmax, 0 for identity, abs and relu weights; the 1/sqrt(n_key) identity form, and abs and relu
beyond neural-tangents, sum over the valid keys only), positional embeddings are zeroed at masked positions
(R on pairs with a masked position), and the output keeps the input's masks.

References:
    Vaswani et al. (2017), Attention is all you need; Hron, Bahri, Sohl-Dickstein, Novak (2020), Infinite
    attention: NNGP and NTK for deep attention networks, ICML; Novak et al. (2020), Neural Tangents.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from kernelalg.backends import Arrays, structural
from kernelalg.core import _errors as E
from kernelalg.core._fingerprint import FingerprintError, callable_fingerprint
from kernelalg.core._layer import Layer, Spatial, check_number, check_std
from kernelalg.core._program import Assign, Builder, KernelState
from kernelalg.layers.recurrent._sequences import SequenceState
from kernelalg.layers.spatial import _grid as S
from kernelalg.layers.spatial._attend import (MECHANISMS, NEG_INF, POS_EMB_TYPES, Setting, attention_map,
                                              positional_covariance)
from kernelalg.layers.spatial._inputs import IMAGE_LAYOUTS
from kernelalg.layers.spatial._masks import FINITE_MASK, current_masks, placeholders, zeroed

NAME = "GlobalSelfAttention"

NOT_POSITIONAL = (
    "GlobalSelfAttention needs inputs with a sequence or spatial axis, but it follows {after}, whose output has "
    "none. Fix: give the network (batch, length, channels) sequences or (batch, height, width, channels) images, "
    "and put attention before the readout (GlobalAvgPool, GlobalSumPool, Flatten)."
)
AFTER_RECURRENT = (
    "GlobalSelfAttention after a recurrent layer: the time-pair states of Recurrent nets are not supported. "
    "Fix: attend over the sequences directly (inputs (batch, length, channels), e.g. Dense() >> "
    "GlobalSelfAttention() >> GlobalAvgPool() >> Dense())."
)
NO_CLOSED_FORM = (
    "GlobalSelfAttention(linear_scaling=False, attention_mechanism='SOFTMAX'): with 1/sqrt(n_key) scaling the "
    "logits stay Gaussian, and the expectation of softmax weights, which depend on a whole row of logits, has no "
    "closed form (neural-tangents refuses it too). Fix: linear_scaling=True (logits scaled by 1/n_key, tied keys "
    "and queries), or attention_mechanism='IDENTITY', 'ABS' or 'RELU'."
)
BAD_CHOICE = "GlobalSelfAttention: {what} must be one of {choices}, got {got!r}. Fix: e.g. {what}={example!r}."
BAD_WIDTH = "GlobalSelfAttention: {name} must be a positive integer or None, got {got!r}. Fix: e.g. {name}=64."
CONCAT_NEEDS_WIDTH = (
    "GlobalSelfAttention(pos_emb_type='CONCAT', n_chan_pos_emb={n}): the weights of inputs and embeddings are "
    "their shares of the channels, but the input width is unknown here. Fix: give the previous layer its width "
    "(e.g. Dense(out_dim=...)), or leave n_chan_pos_emb=None (equal shares)."
)
SUM_WIDTH = ("GlobalSelfAttention(pos_emb_type='SUM'): the embeddings are added to the inputs, so n_chan_pos_emb "
             "({n}) must equal the input channels ({c}). Fix: n_chan_pos_emb=None.")


# ----------------------------------------------------------------------------------------------- kernel


def _scalar_source(b: Builder, expr: sp.Expr, stem: str) -> tuple[sp.Symbol | None, float | None]:
    """A scalar expression of hyperparameters as an op source: (symbol, None), or (None, value) for a number."""
    expr = sp.sympify(expr)
    if expr.is_Number:
        return None, float(expr)
    if expr.is_Symbol:
        return expr, None
    sym = b.fresh(stem, real=True)
    b.program.append(Assign(sym, expr))
    return sym, None


def _pos_weights(p: Mapping[str, sp.Expr], static: Mapping[str, Any], st: KernelState) -> tuple[sp.Expr, sp.Expr]:
    """(weight of the inputs, weight of R) in the keys' input kernel K_int = kw K + pw R (neural-tangents)."""
    pe2 = p["W_pos_emb_std"] ** 2
    if static["pos_emb_type"] == "SUM":
        return sp.Integer(1), pe2
    n_pe = static["n_chan_pos_emb"]
    if n_pe is None:  # as many embedding channels as input channels
        return sp.Rational(1, 2), pe2 / 2
    if st.width is None:
        raise E.LayerOrderError(CONCAT_NEEDS_WIDTH.format(n=n_pe))
    total = st.width + n_pe
    return st.width / total, pe2 * n_pe / total


def _attention_kernel(b: Builder, st: KernelState, p: Mapping[str, sp.Expr], static: Mapping[str, Any]) -> KernelState:
    lay = st.layout
    if isinstance(lay, SequenceState):
        raise E.LayerOrderError(AFTER_RECURRENT)
    if not isinstance(lay, S.SpatialState):
        raise E.LayerOrderError(NOT_POSITIONAL.format(after=st.after))
    if not static["linear_scaling"] and static["attention_mechanism"] == "SOFTMAX":
        raise E.KernelalgError(NO_CLOSED_FORM)
    if lay.mode != "full" or not lay.self_grids:  # the planner guarantees this (Spatial(pairs=True))
        raise E.InternalError(f"{NAME}: reached a state without self grids ({lay}). Please report this bug.")
    pos = static["pos_emb_type"] != "NONE"
    kw, pw = _pos_weights(p, static, st) if pos else (sp.Integer(1), sp.Integer(0))
    setting = Setting(static["linear_scaling"], static["attention_mechanism"], pos, static["pos_emb_p_norm"],
                      static["pos_emb_decay_fn"], static["val_pos_emb"])
    key = next(S.RECORD_KEYS)
    fn = attention_map(lay, setting, key)
    exprs = st.exprs
    if exprs[2].is_Number or (exprs[3].is_Number and exprs[3] != 0):
        raise E.InternalError(f"{NAME}: unmaterialised state {exprs}. Please report this bug.")
    state_in = [i for i, e in enumerate(exprs) if not e.is_Number]  # constant variances, a zero input NTK
    scalars = [_scalar_source(b, e, stem) for e, stem in ((p["W_query_std"] * p["W_key_std"], "qk"), (kw, "kw"),
                                                          (pw, "pw"))]

    def op(ops: Arrays, *arrays: Any) -> tuple:
        it = iter(arrays)
        args: list = [None] * 4
        for i in state_in:
            args[i] = next(it)
        for i in (0, 1):  # a constant variance (e.g. 1 after Sign) becomes a per-position array
            if args[i] is None:
                args[i] = ops.xp.full(S.var_shape(lay, args[2].shape, i), float(exprs[i]), args[2].dtype)
        ctx = next(it)
        scal = [next(it) if sym is not None else c for sym, c in scalars]
        if not lay.masked:
            return fn(ops, *args, ctx, *scal)
        # masked inputs: as masked_op, the masked entries read as zero (variances as placeholders: the 1/sqrt
        # duals divide by them), masked keys are excluded, the outputs get placeholders on masked entries
        m1, m2 = current_masks(ops, next(it), next(it), lay)
        v1, v2 = placeholders(ops, args[0], args[1], None, None, m1, m2)[:2]
        cov, ntk = zeroed(ops, None, None, args[2], args[3], m1, m2)[2:]
        outs = fn(ops, v1, v2, cov, ntk, ctx, *scal, masks=(m1, m2))
        return placeholders(ops, *outs[:4], m1, m2) + tuple(outs[4:])

    sources = [exprs[i] for i in state_in] + [S.CTX] + [sym for sym, _ in scalars if sym is not None]
    if lay.masked:
        sources += [S.MASK1, S.MASK2]
    a1, a2, a, at, _ = b.emit("attention", structural(op), sources, 5, stem="s", tag=key)
    ov2 = (p["W_out_std"] * p["W_value_std"]) ** 2
    b2 = p["b_std"] ** 2 if "b_std" in p else sp.Integer(0)
    return KernelState(ov2 * a1 + b2, ov2 * a2 + b2, ov2 * a + b2, ov2 * at + b2, gaussian=True,
                       width=static["n_chan_out"], after=NAME, layout=lay)


# ------------------------------------------------------------------------------------------ finite twin


def _attention_finite(p: Mapping[str, float], static: Mapping[str, Any], in_shape: tuple, width: int):
    """neural-tangents' ``apply_fn``: one network draw of the layer on (batch, *spatial, C) inputs. With masked
    inputs (:data:`FINITE_MASK` bound) as its ``mask``: positional embeddings zeroed at masked positions, logits
    of masked keys -1e20 (softmax) or 0 (the other mechanisms)."""
    if len(in_shape) < 2:
        raise E.LayerOrderError(NOT_POSITIONAL.format(after="a layer without spatial axes"))
    spatial, c_in = tuple(in_shape[:-1]), in_shape[-1]
    size = math.prod(spatial)
    n_out, n_key, n_val = (static[k] or width for k in ("n_chan_out", "n_chan_key", "n_chan_val"))
    linear, mech, kind = static["linear_scaling"], static["attention_mechanism"], static["pos_emb_type"]
    heads = static["n_heads"] or (1 if linear else width)  # Gaussian logits: Gaussian outputs need many heads
    n_pe = static["n_chan_pos_emb"] or c_in
    if kind == "SUM" and n_pe != c_in:
        raise E.KernelalgError(SUM_WIDTH.format(n=n_pe, c=c_in))
    concat = n_pe if kind == "CONCAT" else 0
    c_keys, c_vals = c_in + concat, c_in + (concat if static["val_pos_emb"] else 0)
    chol = None
    if kind != "NONE" and static["pos_emb_decay_fn"] is not None:
        r = positional_covariance(spatial, static["pos_emb_p_norm"], static["pos_emb_decay_fn"])
        chol = np.linalg.cholesky(r)  # a NumPy constant: this runs once per shape, possibly under a trace
    qk, ov = p["W_query_std"] * p["W_key_std"], p["W_out_std"] * p["W_value_std"]
    norm = c_keys * (n_key if linear else math.sqrt(n_key))
    hi = jax.lax.Precision.HIGHEST

    def init(key: jax.Array) -> dict:
        kq, kk, kv, ko, kb, kp = jax.random.split(key, 6)
        params = {"K": jax.random.normal(kk, (heads, c_keys, n_key)), "V": jax.random.normal(kv, (heads, c_vals, n_val)),
                  "O": jax.random.normal(ko, (n_val * heads, n_out))}
        if not linear:
            params["Q"] = jax.random.normal(kq, (heads, c_keys, n_key))
        if "b_std" in p:
            params["b"] = jax.random.normal(kb, (n_out,))
        if kind != "NONE":
            params["pos_emb"] = jax.random.normal(kp, (size, n_pe))
        return params

    def apply(params: dict, x: jax.Array) -> jax.Array:
        n = x.shape[0]
        xs = x.reshape(n, size, c_in)
        valid = _finite_valid(spatial, n, x.dtype)  # (n, P) or None
        keys_in = vals_in = xs
        if kind != "NONE":
            pe = params["pos_emb"].astype(x.dtype)
            pe = (pe if chol is None else jnp.matmul(jnp.asarray(chol, x.dtype), pe, precision=hi)) * p["W_pos_emb_std"]
            pe = jnp.broadcast_to(pe, (n,) + pe.shape) if valid is None else pe * valid[..., None]
            keys_in = xs + pe if kind == "SUM" else jnp.concatenate([xs, pe], -1)
            vals_in = keys_in if static["val_pos_emb"] else xs
        proj = (lambda a, w: jnp.einsum("npc,hck->hnpk", a, w.astype(x.dtype), precision=hi))
        k = proj(keys_in, params["K"])
        q = k if linear else proj(keys_in, params["Q"])
        logits = jnp.matmul(q, jnp.swapaxes(k, -1, -2), precision=hi) * (qk / norm)
        if valid is not None:  # (heads, n, P queries, P keys): masked keys excluded
            logits = jnp.where(valid[None, :, None, :] > 0, logits,
                               jnp.asarray(NEG_INF if mech == "SOFTMAX" else 0.0, logits.dtype))
        if mech == "SOFTMAX":
            g = jax.nn.softmax(logits, axis=-1)
        else:
            g = {"IDENTITY": logits, "ABS": jnp.abs(logits), "RELU": jnp.maximum(logits, 0)}[mech]
        heads_out = jnp.moveaxis(jnp.matmul(g, proj(vals_in, params["V"]), precision=hi), 0, -1)
        out = jnp.matmul(heads_out.reshape(n, size, -1), params["O"].astype(x.dtype), precision=hi)
        out = out * (ov / math.sqrt(n_val * heads * c_vals))
        if "b" in params:
            out = out + p["b_std"] * params["b"].astype(x.dtype)
        return out.reshape((n,) + spatial + (n_out,))

    return init, apply, spatial + (n_out,)


def _finite_valid(spatial: tuple, n: int, dtype: Any) -> Any:
    """The validity (n, P) of the positions of the images the twin is computing (``FINITE_MASK``), or None."""
    m = FINITE_MASK.get()
    if m is None:
        return None
    if tuple(m.shape) != (n,) + spatial:
        raise E.InternalError(f"{NAME}: a mask of shape {tuple(m.shape)} for inputs of {n} x {spatial} positions. "
                              "Please report this bug.")
    return jnp.asarray(m, dtype).reshape(n, -1)


# -------------------------------------------------------------------------------------------- the layer


def _choice(what: str, value: Any, choices: tuple[str, ...], example: str) -> str:
    v = value.upper() if isinstance(value, str) else value
    if v not in choices:
        raise E.KernelalgError(BAD_CHOICE.format(what=what, choices=choices, got=value, example=example))
    return v


def _width(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise E.KernelalgError(BAD_WIDTH.format(name=name, got=value))
    return int(value)


def GlobalSelfAttention(linear_scaling: bool = True, W_key_std: float = 1.0, W_value_std: float = 1.0,
                        W_query_std: float = 1.0, W_out_std: float = 1.0, b_std: float | None = None,
                        attention_mechanism: str = "SOFTMAX", pos_emb_type: str = "NONE", pos_emb_p_norm: float = 2,
                        pos_emb_decay_fn: Callable[[Any], Any] | None = None, n_chan_pos_emb: int | None = None,
                        W_pos_emb_std: float = 1.0, val_pos_emb: bool = False, *, n_chan_out: int | None = None,
                        n_chan_key: int | None = None, n_chan_val: int | None = None,
                        n_heads: int | None = None) -> Layer:
    """Global scaled dot-product self-attention over all positions (neural-tangents' ``stax.GlobalSelfAttention``).

    Acts on sequences (batch, length, channels) or images (batch, *spatial, channels); as the first layer with a
    layout it declares sequences (for images put a Conv first, or flatten the pixels into a sequence: the same
    kernel unless ``pos_emb_decay_fn`` measures distances on the grid). Keywords, defaults and conventions as
    NT's (its widths are keyword-only here and enter only the finite-width twin). Masked inputs
    (``mask_constant``) as NT's: masked positions are excluded as keys, their embeddings zeroed.

    Args:
        linear_scaling: True: logits scaled by 1/n_key with tied key and query weights (deterministic logits in
            the limit: a closed form for every mechanism); False: 1/sqrt(n_key), independent weights (Gaussian
            logits: closed forms for identity, abs and relu; softmax is refused).
        W_key_std, W_query_std: Key / query weight stds (the kernel depends on their product).
        W_value_std, W_out_std: Value / output weight stds (the kernel depends on their product).
        b_std: Output bias std, or None for no bias.
        attention_mechanism: "SOFTMAX" (over keys), "IDENTITY", "ABS" or "RELU".
        pos_emb_type: "NONE", "SUM" (added to the inputs) or "CONCAT" (concatenated channels).
        pos_emb_p_norm: p of the distance sum_axes |i - j|^p between positions (used with ``pos_emb_decay_fn``).
        pos_emb_decay_fn: Covariance of the embeddings as a function of that distance (NumPy-compatible, giving
            a positive-definite matrix), or None for independent one-hot embeddings (R = identity).
        n_chan_pos_emb: Embedding channels with "CONCAT" (None: as many as the inputs); sets the shares of
            inputs and embeddings in the keys' kernel.
        W_pos_emb_std: Std of the embeddings.
        val_pos_emb: Also add the embeddings to the values' inputs.
        n_chan_out, n_chan_key, n_chan_val, n_heads: Widths of the finite-width twin (None: the twin's width;
            heads: one with linear scaling, the twin's width with 1/sqrt scaling -- there the logits stay random,
            and the outputs are Gaussian only in the limit of many heads). The kernel is their infinite limit.

    Returns:
        The layer (hyperparameter symbols ``W_key_std_<i>``, ..., ``sigma_b_<i>``).

    Raises:
        KernelalgError: an unknown mechanism or embedding type, a bad width, a negative std; at kernel time
            1/sqrt scaling with softmax weights (no closed form), attention without a sequence/spatial axis or
            after Recurrent (each message names the fix).

    Example:
        >>> block = ka.FanOut(2) >> ka.parallel(ka.GlobalSelfAttention(), ka.Identity()) >> ka.FanInSum()  # doctest: +SKIP
        >>> net = ka.Dense(1.0) >> block >> ka.LayerNorm() >> ka.GlobalAvgPool() >> ka.Dense(1.0)  # doctest: +SKIP

    References:
        Hron, Bahri, Sohl-Dickstein, Novak (2020), Infinite attention: NNGP and NTK for deep attention
        networks, ICML.
    """
    mech = _choice("attention_mechanism", attention_mechanism, MECHANISMS, "SOFTMAX")
    kind = _choice("pos_emb_type", pos_emb_type, POS_EMB_TYPES, "NONE")
    stds = [(k, check_std(NAME, k, v)) for k, v in (("W_key_std", W_key_std), ("W_value_std", W_value_std),
                                                     ("W_query_std", W_query_std), ("W_out_std", W_out_std))]
    if b_std is not None:
        stds.append(("b_std", check_std(NAME, "b_std", b_std)))
    if kind != "NONE":
        stds.append(("W_pos_emb_std", check_std(NAME, "W_pos_emb_std", W_pos_emb_std)))
    if pos_emb_decay_fn is not None and not callable(pos_emb_decay_fn):
        raise E.KernelalgError(f"{NAME}: pos_emb_decay_fn must be a callable or None, got {pos_emb_decay_fn!r}. "
                               "Fix: e.g. pos_emb_decay_fn=lambda d: np.exp(-d).")
    identity, unidentified = "", ""
    if pos_emb_decay_fn is not None:
        try:
            identity = "pos_emb_decay_fn:" + callable_fingerprint(pos_emb_decay_fn)
        except FingerprintError as err:
            unidentified = f"{NAME}: pos_emb_decay_fn cannot be fingerprinted ({err})"
    static = (("linear_scaling", bool(linear_scaling)), ("attention_mechanism", mech), ("pos_emb_type", kind),
              ("pos_emb_p_norm", check_number(NAME, "pos_emb_p_norm", pos_emb_p_norm)),
              ("pos_emb_decay_fn", pos_emb_decay_fn), ("n_chan_pos_emb", _width("n_chan_pos_emb", n_chan_pos_emb)),
              ("val_pos_emb", bool(val_pos_emb)), ("n_chan_out", _width("n_chan_out", n_chan_out)),
              ("n_chan_key", _width("n_chan_key", n_chan_key)), ("n_chan_val", _width("n_chan_val", n_chan_val)),
              ("n_heads", _width("n_heads", n_heads)))
    scaling = "1/n_key (tied keys and queries)" if linear_scaling else "1/sqrt(n_key)"
    route = f"closed form: {mech.lower()} weights, logits scaled by {scaling}"
    if not linear_scaling and mech in ("ABS", "RELU"):
        route += " (arc-cosine dual of the Gaussian logits on position quadruples)"
    return Layer(NAME, _attention_kernel, tuple(stds), static, _attention_finite, positive=frozenset(k for k, _ in stds),
                 input_layout=IMAGE_LAYOUTS[1], role="attention", width_arg="n_chan_out", spatial=Spatial(pairs=True),
                 routes=((NAME, route),), identity=identity, unidentified=unidentified)
