"""Normalization and dropout: LayerNorm and Dropout (neural-tangents' ``stax.LayerNorm``, ``stax.Dropout``).

**LayerNorm** ``y = (x - mean) / sqrt(eps + var)``, mean and variance over ``axis`` (the channel axis and,
on images or sequences of the image layout, any spatial axes). For Gaussian inputs of infinite width the
mean over channels vanishes and the variance becomes the per-position variance K(x, x)(p, p) (averaged
over the normalized spatial axes), so the layer rescales the kernel (Xiong et al. 2020; Novak et al. 2020):

    K(x, x')  <- K(x, x') / sqrt((eps + v(x)) (eps + v(x'))),    v = mean over the spatial axes of K(x, x)
    Theta     <- Theta / sqrt((eps + v(x)) (eps + v(x')))

(the Jacobian of the normalization, ``(I - 1 1^T/n - y y^T/n) / sqrt(eps + var)``, differs from the
rescaling by a rank-2 term whose share of the NTK vanishes as 1/n; see ``proofs/prove_transformer.py``).

**Dropout** with keep probability ``rate`` (as NT: ``rate=1`` keeps every unit), mode "train": a fresh
mask per input, ``y = m x / rate`` with m ~ Bernoulli(rate). The masks of two different inputs are
independent, so E[m m'] / rate^2 = 1 and only the pairs of an input with itself (same position) change,
by E[m^2] / rate^2 = 1 / rate:

    K(x, x')(p, p')  <- K(x, x')(p, p') (1 + (1/rate - 1) delta(x, x') delta(p, p')),   the same for Theta

with delta(x, x') = ``KroneckerDelta(i1, i2)`` of the sample identities (1 for an input with itself: x2 None
or equal to x1, as neural-tangents' ``x1_is_x2``). Mode "test" is the identity. The output is no longer
Gaussian (as NT, an activation may not follow it directly).

References:
    Ba, Kiros, Hinton (2016), Layer normalization; Xiong et al. (2020), On layer normalization in the
    transformer architecture; Srivastava et al. (2014), Dropout; Novak et al. (2020), Neural Tangents.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from kernelalg.backends import Arrays, structural
from kernelalg.core import _errors as E
from kernelalg.core import _duals
from kernelalg.core._layer import Layer, check_number, check_std, require_gaussian
from kernelalg.layers._activations import _activation_kernel
from kernelalg.core._program import ID1, ID2, Builder, KernelState
from kernelalg.layers.recurrent._sequences import SequenceState
from kernelalg.layers.spatial._grid import MASK1, MASK2, SAME_GRID, SpatialState
from kernelalg.layers.spatial._masks import FINITE_MASK, current_masks

BAD_AXIS = "LayerNorm: axis must be an int or a tuple of ints, got {got!r}. Fix: e.g. axis=-1 (the channels)."
BATCH_AXIS = (
    "LayerNorm(axis={axis}) normalizes over the batch axis 0: the kernel of a pair of inputs would depend on the "
    "rest of the batch. Fix: normalize over channels (axis=-1) and, for images, spatial axes, e.g. axis=(1, 2, 3)."
)
NO_CHANNELS = (
    "LayerNorm(axis={axis}) does not normalize over the channel axis {channel}: without it the variance does not "
    "converge as the width grows, and there is no infinite-width kernel (as in neural-tangents). Fix: include the "
    "channel axis, e.g. axis=-1 or axis={fix}."
)
AXIS_RANGE = "LayerNorm: axis {axis} is out of range for {what} inputs of rank {rank} (batch axis included). Fix: {fix}."
TIME_AXIS = (
    "LayerNorm(axis={axis}) normalizes over the time axis of a recurrent sequence; only channels are supported "
    "there. Fix: axis=-1, or attend over (batch, length, channels) arrays with the image layout (Conv, "
    "GlobalSelfAttention), where spatial axes may be normalized."
)
BAD_MODE = "Dropout: mode must be 'train' or 'test', got {got!r}. Fix: mode='train' (or 'test': the identity)."
BAD_RATE = ("Dropout: rate is the keep probability (as neural-tangents) and must be in (0, 1], got {got!r}. "
            "Fix: e.g. Dropout(0.9) keeps 90% of the units.")
ON_INPUT = (
    "Dropout(mode='train') on the network input: the kernel of the raw input has finitely many features, so "
    "dropping them is no infinite-width limit (neural-tangents refuses it too). Fix: put Dropout after a "
    "hidden layer, e.g. Dense() >> Relu() >> Dropout(0.9) >> Dense()."
)


# ------------------------------------------------------------------------------------------- LayerNorm


def _check_axis(axis: Any) -> int | tuple[int, ...]:
    """An int or a non-empty tuple of ints (kept as given: -1 stays -1)."""
    items = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    if not items or any(isinstance(a, bool) or not isinstance(a, (int, np.integer)) for a in items):
        raise E.KernelalgError(BAD_AXIS.format(got=axis))
    return int(axis) if np.ndim(axis) == 0 else tuple(int(a) for a in items)


def _canonical(axis: int | tuple[int, ...], rank: int, what: str) -> set[int]:
    """The set of normalized axes of a rank-``rank`` input (batch axis 0, channels rank - 1)."""
    axis = (axis,) if isinstance(axis, int) else axis
    if any(not -rank <= a < rank for a in axis):
        fix = "axis=-1 for the channels" + (f", axis={tuple(range(1, rank))} for all but the batch" if rank > 2 else "")
        raise E.KernelalgError(AXIS_RANGE.format(axis=axis, what=what, rank=rank, fix=fix))
    axes = {a % rank for a in axis}
    if 0 in axes:
        raise E.KernelalgError(BATCH_AXIS.format(axis=axis))
    if rank - 1 not in axes:
        raise E.KernelalgError(NO_CHANNELS.format(axis=axis, channel=rank - 1, fix=tuple(sorted(axes | {rank - 1}))))
    return axes


def _spatial_means(b: Builder, st: KernelState, lay: SpatialState, spatial: tuple[int, ...]) -> tuple[Any, Any]:
    """Emit the means of the per-position variances over the spatial axes ``spatial`` (0-based); with masked
    inputs over the valid positions only (as neural-tangents' LayerNorm with masks)."""
    k = lay.ndim
    axes1 = tuple(2 + j for j in spatial)
    axes2 = axes1 if lay.mode == "diag" else tuple(2 + k + j for j in spatial)
    live = [(i, v, axes) for i, (v, axes) in enumerate(((st.cov1, axes1), (st.cov2, axes2))) if not v.is_Number]
    masks = (MASK1, MASK2) if lay.masked else ()

    def op(ops: Arrays, *arrays: Any) -> tuple:
        if not masks:
            return tuple(ops.xp.mean(a, axis=axes, keepdims=True) for a, (_, _, axes) in zip(arrays, live))
        valid = current_masks(ops, *arrays[-2:], lay)
        return tuple(ops.xp.sum(a * valid[i], axis=axes, keepdims=True) / ops.xp.sum(valid[i], axis=axes, keepdims=True)
                     for a, (i, _, axes) in zip(arrays, live))

    args = [v for _, v, _ in live] + list(masks)
    outs = iter(b.emit("layernorm_mean", structural(op), args, len(live), stem="m")) if live else iter(())
    return tuple(v if v.is_Number else next(outs) for v in (st.cov1, st.cov2))


def _layernorm_kernel(b: Builder, st: KernelState, p: Mapping[str, sp.Expr], static: Mapping[str, Any]) -> KernelState:
    require_gaussian(st, "LayerNorm")
    axis, lay = static["axis"], st.layout
    if isinstance(lay, SpatialState):
        axes = _canonical(axis, lay.ndim + 2, f"{lay.ndim}-D spatial")
        spatial = tuple(sorted(a - 1 for a in axes if a != lay.ndim + 1))
    elif isinstance(lay, SequenceState):
        axes = _canonical(axis, 3, "sequence")
        if axes != {2}:
            raise E.KernelalgError(TIME_AXIS.format(axis=axis))
        spatial = ()
    else:
        _canonical(axis, 2, "dense")
        spatial = ()
    v1, v2 = _spatial_means(b, st, lay, spatial) if spatial else (st.cov1, st.cov2)
    e1, e2 = p["eps"] + v1, p["eps"] + v2
    scale = 1 / sp.sqrt(e1 * e2)
    return st.replace(cov1=st.cov1 / e1, cov2=st.cov2 / e2, nngp=st.nngp * scale, ntk=st.ntk * scale,
                      after="LayerNorm")


def _layernorm_finite(p: Mapping[str, float], static: Mapping[str, Any], in_shape: tuple, width: int):
    eps = p["eps"]
    axes = tuple(sorted(_canonical(static["axis"], len(in_shape) + 1, f"rank-{len(in_shape) + 1}")))

    def apply(params: dict, x: jax.Array) -> jax.Array:
        m = FINITE_MASK.get()
        if m is not None and len(axes) > 1:  # masked inputs: mean and variance over the valid positions (NT)
            w = jnp.broadcast_to(jnp.asarray(m, x.dtype)[..., None], x.shape)
            n = jnp.sum(w, axis=axes, keepdims=True)
            mean = jnp.sum(x * w, axis=axes, keepdims=True) / n
            var = jnp.sum((x - mean) ** 2 * w, axis=axes, keepdims=True) / n
            return (x - mean) / jnp.sqrt(eps + var)
        mean = jnp.mean(x, axis=axes, keepdims=True)
        var = jnp.mean((x - mean) ** 2, axis=axes, keepdims=True)
        return (x - mean) / jnp.sqrt(eps + var)

    return (lambda key: {}), apply, in_shape


def LayerNorm(axis: Any = -1, eps: float = 1e-12) -> Layer:
    """Layer normalization (neural-tangents' ``stax.LayerNorm``): ``(x - mean) / sqrt(eps + var)`` over ``axis``.

    Its kernel is the input kernel divided by sqrt((eps + v(x)) (eps + v(x'))), v the per-position variance
    averaged over the normalized spatial axes (a closed form; see the module docstring).

    Args:
        axis: Axes to normalize over, counted on the input array (batch axis 0 excluded): the channel axis
            (-1, the default) must be among them; on images or sequences of the image layout (after Conv or
            GlobalSelfAttention) spatial axes may be added, e.g. (1, 2, 3) for NHWC.
        eps: Constant added to the variance (>= 0), as NT (default 1e-12).

    Returns:
        The layer (hyperparameter symbol ``eps_<i>``).

    Raises:
        KernelalgError: ``axis`` not integers or ``eps`` negative; at kernel time, the batch axis among the axes,
            the channel axis missing, or axes out of range (each message names the fix).
        LayerOrderError: LayerNorm on inputs that are not Gaussian (after an activation: the mean over channels
            would not vanish; as NT). Put it after Dense, Conv, attention or a residual sum of those.

    Example:
        >>> net = ka.Dense(1.0) >> ka.LayerNorm() >> ka.Relu() >> ka.Dense(1.0)  # doctest: +SKIP
    """
    return Layer("LayerNorm", _layernorm_kernel, (("eps", check_std("LayerNorm", "eps", eps)),),
                 (("axis", _check_axis(axis)),), _layernorm_finite,
                 role="normalization")


# --------------------------------------------------------------------------------------- ExpNormalized


def _expnorm_finite(p: Mapping[str, float], static: Mapping[str, Any], in_shape: tuple, width: int):
    gamma, shift = p["gamma"], p["shift"]

    def apply(params: dict, x: jax.Array) -> jax.Array:
        q = jnp.mean(x * x, axis=-1, keepdims=True)  # each position's variance over the channels
        r = jnp.sqrt(q)
        u = x / jnp.where(r > 0, r, 1.0)
        return r * np.exp(gamma * (1 + shift) / 2) * np.sqrt(2) * jnp.sin(np.sqrt(gamma) * u + np.pi / 4)

    return (lambda key: {}), apply, in_shape


def ExpNormalized(gamma: float = 1.0, shift: float = -1.0) -> Layer:
    """The "Gaussian normalized kernel" (neural-tangents' ``stax.ExpNormalized``, Shankar et al. 2020):
    K <- sqrt(K(x, x) K(x', x')) exp(gamma (rho + shift)), Theta <- gamma exp(gamma (rho + shift)) Theta.

    neural-tangents has no finite network for it; here the twin normalizes each position's pre-activations
    over the channels, applies sqrt(2) sin(sqrt(gamma) u + pi/4) (whose dual at unit variances is
    exp(gamma (rho - 1))) and rescales by the norm and exp(gamma (1 + shift) / 2), so Monte Carlo checks it.
    (NT's ``do_clip`` is not needed: rho is computed clipped.)

    Args:
        gamma: Exponent scale (>= 0).
        shift: Shift of the normalized covariance.
    """
    params = (("gamma", check_std("ExpNormalized", "gamma", gamma)), ("shift", check_number("ExpNormalized", "shift",
                                                                                             shift)))
    return Layer("ExpNormalized", _activation_kernel("ExpNormalized", _duals.exp_normalized, ()), params,
                 finite=_expnorm_finite, role="activation")


# --------------------------------------------------------------------------------------------- Dropout


def _grid_indicator(ops: Arrays, same: Any, cov: Any, k: int, mode: str) -> tuple:
    """delta(x, x') delta(p, p') on a pixel-pair (full) or matching-pixel (diag) grid ``cov``."""
    lead = same.reshape(same.shape[:2] + (1,) * (cov.ndim - 2))
    if mode == "diag":
        return (lead,)
    s1, s2 = cov.shape[2:2 + k], cov.shape[2 + k:]
    eye = ops.xp.eye(int(np.prod(s1)), int(np.prod(s2)), dtype=cov.dtype).reshape(s1 + s2)
    return (lead * eye,)


def _indicator(b: Builder, st: KernelState) -> sp.Expr:
    """The array delta(x, x') delta(p, p') in the state's layout."""
    lay = st.layout
    if isinstance(lay, SpatialState):
        def op(ops: Arrays, same: Any, cov: Any) -> tuple:
            return _grid_indicator(ops, same, cov, lay.ndim, lay.mode)
        return b.emit("same_input_position", structural(op), [SAME_GRID, st.nngp], 1, stem="e")[0]
    if isinstance(lay, SequenceState):  # (N, M, T, T'), sequences aligned at their last step
        def op(ops: Arrays, i1: Any, i2: Any, cov: Any) -> tuple:
            same = ops.xp.where(i1 == i2, 1.0, 0.0).astype(cov.dtype)
            return _grid_indicator(ops, same, cov, 1, "full")
        return b.emit("same_input_position", structural(op), [ID1, ID2, st.nngp], 1, stem="e")[0]
    return sp.KroneckerDelta(ID1, ID2)


def _dropout_kernel(b: Builder, st: KernelState, p: Mapping[str, sp.Expr], static: Mapping[str, Any]) -> KernelState:
    if static["mode"] == "test":
        return st
    if st.after == "the input":
        raise E.LayerOrderError(ON_INPUT)
    f = 1 / p["rate"]
    boost = 1 + (f - 1) * _indicator(b, st)
    return st.replace(cov1=f * st.cov1, cov2=f * st.cov2, nngp=st.nngp * boost, ntk=st.ntk * boost,
                      gaussian=False, after="Dropout")


def _fmix32(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finalizer (avalanche mixing of uint32 words)."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def input_hash(x: jax.Array) -> jax.Array:
    """(N,) uint32 hash of each row of ``x`` (its bits): equal rows hash equally, different rows almost never."""
    flat = jax.lax.stop_gradient(x).reshape(len(x), -1)
    words = jax.lax.bitcast_convert_type(flat, jnp.uint32).reshape(len(x), -1)
    salt = jnp.arange(words.shape[1], dtype=jnp.uint32) * jnp.uint32(0x9E3779B9)
    return _fmix32(jnp.sum(_fmix32(words ^ salt), axis=1, dtype=jnp.uint32))


def _dropout_finite(p: Mapping[str, float], static: Mapping[str, Any], in_shape: tuple, width: int):
    """Train mode: each input gets its own mask, a function of the network's seed and of the input itself
    (its hash), so the same input gets the same mask and different inputs independent ones -- the kernel's
    delta(x, x') -- also when examples are evaluated one at a time (per-example Jacobians). The mask bits are
    a counter-based hash of (seed, input hash, unit index): integer arithmetic that compiles fast, unlike a
    per-input PRNG key inside vmapped Jacobians."""
    rate = p["rate"]
    if static["mode"] == "test":
        return (lambda key: {}), (lambda params, x: x), in_shape
    units = int(np.prod(in_shape))
    threshold = rate * 2.0**24

    def init(key: jax.Array) -> dict:
        # the seed as exact small integers in a float array: a parameter leaf with zero gradient
        return {"seed": jax.random.randint(key, (2,), 0, 2**24).astype(jnp.float32)}

    def apply(params: dict, x: jax.Array) -> jax.Array:
        seed = jax.lax.stop_gradient(params["seed"]).astype(jnp.uint32)
        row = _fmix32(input_hash(x) ^ _fmix32(seed[0] + jnp.uint32(0x632BE5AB)))[:, None]
        unit = jnp.arange(units, dtype=jnp.uint32)[None] * jnp.uint32(0x9E3779B9)
        bits = _fmix32(_fmix32(row + unit) ^ (seed[1] * jnp.uint32(0x85EBCA77)))
        keep = ((bits >> 8).astype(jnp.float32) < threshold).reshape(x.shape)
        return jnp.where(keep, x / rate, 0.0)

    return init, apply, in_shape


def Dropout(rate: float, mode: str = "train") -> Layer:
    """Dropout (neural-tangents' ``stax.Dropout``): keep each unit with probability ``rate``, scaled by 1/rate.

    In mode "train" the kernel of an input with itself (same position) is multiplied by 1/rate, every other
    entry is unchanged (a closed form; see the module docstring); mode "test" is the identity.

    Args:
        rate: Keep probability in (0, 1] (as NT: ``rate=1`` keeps everything).
        mode: "train" (default) or "test".

    Returns:
        The layer (hyperparameter symbol ``rate_<i>``).

    Raises:
        KernelalgError: ``rate`` outside (0, 1] or an unknown ``mode``.
        LayerOrderError: at kernel time, Dropout in train mode applied to the raw network input.

    Example:
        >>> net = ka.Dense(1.0) >> ka.Relu() >> ka.Dropout(0.8) >> ka.Dense(1.0)  # doctest: +SKIP
    """
    if mode not in ("train", "test"):
        raise E.KernelalgError(BAD_MODE.format(got=mode))
    r = check_number("Dropout", "rate", rate)
    if not 0.0 < r <= 1.0:
        raise E.KernelalgError(BAD_RATE.format(got=rate))
    return Layer("Dropout", _dropout_kernel, (("rate", r),), (("mode", mode),), _dropout_finite,
                 positive=frozenset({"rate"}), role="dropout")
