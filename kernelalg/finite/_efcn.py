"""The equivalent fully connected network (eFCN) of a convolutional network.

d'Ascoli, Sagun, Bruna & Biroli, "Finding the Needle in the Haystack with Convolutions: on the Benefits of
Architectural Bias" (NeurIPS 2019): a CNN's weights placed into a fully connected network that computes the same
function; the eFCN then trains without the convolutional constraint.

:func:`efcn` takes a finite CNN (``ka.finite(net, width)``, built from ``Conv``, activations, linear pooling,
``Flatten`` and ``Dense``) and its network parameters, and returns an :class:`EquivalentFCN`: a chain of ``Dense``
layers and the same activations acting on the flattened image (NHWC flattened row-major, as ``Flatten``), its
finite twin and its parameters. The outputs are those of the CNN up to float rounding.

Embedding (one affine layer at a time, in the layer's own parametrization):

* ``Conv`` (any of VALID / SAME / CIRCULAR padding, strides, 1-D to 3-D): the matrix ``M`` of shape
  ``(H W C_in, H' W' C_out)`` with ``M[(i, c), (o, c')] = sum_{a: i = s o + a - pad} W[a, c, c']`` (zeros off the
  stencil, tied entries repeated; the sum only matters for CIRCULAR filters wider than the image), and the bias
  repeated at every output position. A ``Dense`` on an image is the 1x1 conv.
* Linear parameter-free layers (``AvgPool``, ``SumPool``, ``GlobalAvgPool``, ``GlobalSumPool``, ``Flatten``,
  ``Identity``: the roles "pooling", "reshape", "identity") are linear maps ``P`` (read off the layer's own finite
  apply on the unit basis, so they are exact); ``P`` is folded into the neighbouring affine layer: into the previous
  one (``M P``, ``b P``) when no activation lies between them, else into the next one (``P M``).
* Activations (role "activation") act entrywise, so they carry over unchanged.

Parametrization (stated): each eFCN ``Dense`` keeps the conv layer's ``W_std``, ``b_std`` and parametrization
("ntk" or "standard") with its *own* fan-in ``n = H W C_in`` (the pre-pooling size when a pooling was folded into
it). In the NTK parametrization the conv computes ``(W_std / sqrt(C_in |F|)) conv(x, W)`` and the Dense computes
``(W_std / sqrt(n)) x V``, so the stored dense entries are ``V = sqrt(n / (C_in |F|)) W`` on the stencil: larger
than unit Gaussians, and zero off the stencil. In the standard parametrization the stored entries are the conv's
own weights (multiplier 1). Biases keep their multiplier, so they are the conv's biases repeated. The function is
identical; gradients (hence the NTK and the training dynamics) are those of the eFCN's own parametrization.

Refused (error constants name the fix): branches (``parallel``/``FanOut``), normalization, dropout, attention and
recurrent layers, abc-parametrized twins (``parametrization=`` of ``ka.finite``), and a pooling that follows the
last activation with no affine layer after it (it has no dense layer to fold into).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kernelalg.core import _errors as E
from kernelalg.core._layer import TRANSPARENT_ROLES, Layer, serial
from kernelalg.finite._twins import FiniteNet, finite, layer_parts
from kernelalg.layers._affine import affine_scales
from kernelalg.layers._dense import Dense
from kernelalg.layers.spatial._grid import pads

NOT_A_TWIN = ("efcn needs the finite twin of the CNN (ka.finite(net, width)), got {got}. "
              "Fix: twin = ka.finite(net, width=64); efcn(twin, twin.init(key, input_shape), input_shape).")
NOT_EMBEDDABLE = ("efcn: {layer} (role {role!r}) cannot be embedded into a fully connected network: only Conv, Dense, "
                  "activations and linear pooling/Flatten/Identity can. Fix: build the CNN from those layers "
                  "(e.g. Conv >> Relu >> AvgPool >> Conv >> Relu >> Flatten >> Dense).")
BRANCHES = ("efcn: {layer} has branches (parallel/FanOut/FanIn); the eFCN of a branched network is not built. "
            "Fix: use a single chain Conv >> activation >> ... >> Flatten >> Dense.")
ABC_PARAMETRIZATION = ("efcn: the twin has an abc-parametrization ({name}); the eFCN keeps each layer's own 'ntk' or "
                       "'standard' parametrization. Fix: build the twin with ka.finite(net, width) (no "
                       "parametrization=), or give the layers parameterization='standard'.")
TRAILING_LINEAR = ("efcn: {layer} follows the last activation with no affine layer after it, so there is no dense "
                   "layer to fold its linear map into. Fix: end the CNN with a readout, e.g. "
                   ">> ka.Flatten() >> ka.Dense(1.0, out_dim=10), or >> ka.Conv(..., out_chan=10) "
                   ">> ka.GlobalAvgPool().")
NO_AFFINE = ("efcn: the network has no Conv or Dense layer, so it has no fully connected equivalent to build. "
             "Fix: pass the twin of a CNN such as Conv >> Relu >> Flatten >> Dense.")
LINEAR_BETWEEN_ACTIVATIONS = ("efcn: {layer} comes between two activations with no affine layer to fold its linear map "
                              "into. Fix: put the pooling right after a Conv (Conv >> AvgPool >> Relu) or right "
                              "before one (Relu >> AvgPool >> Conv).")
PARAMS_MISMATCH = ("efcn: the parameters do not fit the twin (layer {index}, {layer}: {why}). Fix: pass the "
                   "parameters of this twin, twin.init(key, input_shape) or a trained copy of them.")


@dataclass(frozen=True, eq=False)
class EquivalentFCN:
    """The eFCN of a CNN: Dense layers and activations on the flattened image.

    Attributes:
        net: The eFCN's architecture (``Dense(..., out_dim=n) >> activation >> ...``) on flattened inputs;
            ``ka.kernel(net, x.reshape(len(x), -1))`` is the exact kernel of a fully connected net of that shape.
        twin: Its finite twin ``ka.finite(net, 1)`` (every width is set by ``out_dim``).
        params: The eFCN's network parameters, embedding the CNN's (one entry per layer of ``twin.chain``).
        support: Per layer, ``{"W": bool array}`` where the CNN has a weight (the stencil; ``{}`` elsewhere).
        input_shape: Shape of one image (no batch axis).
    """

    net: Layer
    twin: FiniteNet
    params: list
    support: list
    input_shape: tuple

    def flatten(self, x: Any) -> jax.Array:
        """Images (N, *input_shape) -> (N, prod(input_shape)), the order of ``Flatten``."""
        x = jnp.asarray(x)
        return x.reshape(x.shape[0], -1)

    def apply(self, params: list, x: Any) -> jax.Array:
        """The eFCN's outputs on images (N, *input_shape) with parameters ``params``."""
        return self.twin.apply(params, self.flatten(x))

    def __call__(self, x: Any) -> jax.Array:
        """The outputs with the embedded parameters (equal to the CNN's)."""
        return self.apply(self.params, x)


@dataclass
class _Affine:
    """One eFCN dense layer in the making: effective matrix ``w_scale M`` and bias ``b_scale b``."""

    m: np.ndarray
    w_scale: float
    b: np.ndarray | None
    b_scale: float
    mask: np.ndarray
    hyper: dict


def _leaves(layer: Layer, params: Any, shape: tuple, width: int) -> list:
    """(leaf, its params, input shape) along the chain, nested serials opened."""
    if layer.is_serial:
        if not isinstance(params, (list, tuple)) or len(params) != len(layer.children):
            raise E.KernelalgError(PARAMS_MISMATCH.format(index="-", layer="serial", why="not one entry per child"))
        out = []
        for child, pr in zip(layer.children, params):
            out += _leaves(child, pr, shape, width)
            shape = layer_parts(child, shape, width)[2]
        return out
    if layer.children or layer.role in ("branch", "combinator"):
        raise E.KernelalgError(BRANCHES.format(layer=layer.name))
    return [(layer, params, shape)]


def _stencil(in_sp: tuple, filt: tuple, strides: tuple, padding: str) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                               tuple]:
    """Flat (input position, output position, filter offset) triples of a conv's stencil."""
    pad = "SAME" if padding == "CIRCULAR" else padding
    geo = [pads(n, f, s, pad) for n, f, s in zip(in_sp, filt, strides)]
    out_sp = tuple(g[2] for g in geo)
    rows, cols, offs = [], [], []
    for o in itertools.product(*(range(n) for n in out_sp)):
        for a in itertools.product(*(range(f) for f in filt)):
            i = [oo * s + aa - g[0] for oo, aa, s, g in zip(o, a, strides, geo)]
            if padding == "CIRCULAR":
                i = [ii % n for ii, n in zip(i, in_sp)]
            elif any(ii < 0 or ii >= n for ii, n in zip(i, in_sp)):
                continue  # a zero of SAME's padding
            rows.append(np.ravel_multi_index(tuple(i), in_sp))
            cols.append(np.ravel_multi_index(o, out_sp))
            offs.append(np.ravel_multi_index(a, filt))
    return np.asarray(rows, int), np.asarray(cols, int), np.asarray(offs, int), out_sp


def _embed_affine(layer: Layer, pr: dict, in_shape: tuple, width: int, index: int) -> _Affine:
    static = dict(layer.static)
    hyper = {k: v for k, v in layer.params if v is not None}
    if static.get("scaling") is not None:
        raise E.KernelalgError(ABC_PARAMETRIZATION.format(name=static["scaling"]))
    if not isinstance(pr, dict) or "W" not in pr:
        raise E.KernelalgError(PARAMS_MISMATCH.format(index=index, layer=layer.name, why="no weight 'W'"))
    k = len(in_shape) - 1
    filt = tuple(static.get("filter_shape") or (1,) * k)
    strides = tuple(static.get("strides") or (1,) * k)
    padding = static.get("padding", "VALID")
    c_in = in_shape[-1]
    w = np.asarray(pr["W"])
    c_out = w.shape[-1]
    if "filter_shape" not in static and w.ndim == 2:  # a Dense on an image: the 1x1 conv
        w = w.reshape(filt + tuple(w.shape))
    if len(filt) != k or tuple(w.shape) != filt + (c_in, c_out):
        raise E.KernelalgError(PARAMS_MISMATCH.format(index=index, layer=layer.name,
                                                      why=f"weight shape {tuple(w.shape)}, expected "
                                                          f"{filt + (c_in, c_out)}"))
    sc = affine_scales(static, hyper["W_std"], hyper.get("b_std"), c_in * math.prod(filt), c_out)
    if k == 0:
        m, mask = w, np.ones(w.shape, bool)
        bias = None if "b" not in pr else np.asarray(pr["b"])
    else:
        in_sp = tuple(in_shape[:-1])
        rows, cols, offs, out_sp = _stencil(in_sp, filt, strides, padding)
        n_in, n_out = math.prod(in_sp), math.prod(out_sp)
        wf = w.reshape(math.prod(filt), c_in, c_out)
        m = np.zeros((n_in, c_in, n_out, c_out), w.dtype)
        np.add.at(m, (rows, slice(None), cols, slice(None)), wf[offs])
        m = m.reshape(n_in * c_in, n_out * c_out)
        hit = np.zeros((n_in, n_out), bool)
        hit[rows, cols] = True
        mask = np.repeat(np.repeat(hit, c_in, axis=0), c_out, axis=1)
        bias = None if "b" not in pr else np.tile(np.asarray(pr["b"]), n_out)
    return _Affine(m, sc.w_mult, bias, sc.b_mult, mask, {**hyper, "parameterization": static["parameterization"]})


def _linear_map(layer: Layer, pr: Any, in_shape: tuple, width: int, dtype: Any) -> np.ndarray | None:
    """The matrix of a linear parameter-free layer on flattened inputs (None for a pure reshape)."""
    _, apply, out_shape = layer_parts(layer, in_shape, width)
    n = math.prod(in_shape)
    basis = jnp.eye(n, dtype=dtype).reshape((n,) + tuple(in_shape))
    p = np.asarray(apply(pr, basis)).reshape(n, -1)
    if p.shape[1] == n and np.array_equal(p, np.eye(n)):
        return None
    return p


def efcn(twin: FiniteNet, params: list, input_shape: Any) -> EquivalentFCN:
    """The equivalent fully connected network of a finite CNN, with the CNN's weights embedded.

    Args:
        twin: The CNN's finite twin, ``ka.finite(net, width)`` (Conv, Dense, activations, linear pooling,
            Flatten, Identity in one chain).
        params: Its network parameters (``twin.init(key, input_shape)`` or trained ones).
        input_shape: Shape of one image (a leading batch axis is accepted and ignored).

    Returns:
        An :class:`EquivalentFCN` whose ``apply(params, x)`` on images equals ``twin.apply(params, x)`` up to
        float rounding (see the module docstring for the parametrization).

    Example:
        >>> net = ka.Conv((3, 3), padding="SAME") >> ka.Relu() >> ka.Flatten() >> ka.Dense()  # doctest: +SKIP
        >>> cnn = ka.finite(net, 16)  # doctest: +SKIP
        >>> p = cnn.init(0, (8, 8, 1)); fc = efcn(cnn, p, (8, 8, 1))  # doctest: +SKIP
        >>> fc(x) - cnn.apply(p, x)  # ~ 1e-16 relative in float64  # doctest: +SKIP
    """
    if not isinstance(twin, FiniteNet):
        raise E.KernelalgError(NOT_A_TWIN.format(got=type(twin).__name__))
    if twin.parametrization is not None:
        raise E.KernelalgError(ABC_PARAMETRIZATION.format(name=twin.parametrization))
    in_shape = twin.item_shape(input_shape)
    if not isinstance(params, (list, tuple)) or len(params) != len(twin.chain):
        raise E.KernelalgError(PARAMS_MISMATCH.format(index="-", layer="the chain", why="not one entry per layer"))
    dtype = jax.tree_util.tree_leaves(params)[0].dtype if jax.tree_util.tree_leaves(params) else jnp.float32
    leaves, shape = [], in_shape
    for layer, pr in zip(twin.chain, params):
        leaves += _leaves(layer, pr, shape, twin.width)
        shape = layer_parts(layer, shape, twin.width)[2]

    stages: list = []          # _Affine or an activation Layer
    pending, pending_name = None, ""  # a linear map waiting for the next affine layer
    for index, (layer, pr, shp) in enumerate(leaves):
        if layer.role == "affine" and layer.width_arg is not None:
            aff = _embed_affine(layer, pr, shp, twin.width, index)
            if pending is not None:
                aff.m = pending.astype(aff.m.dtype) @ aff.m
                aff.mask = (pending != 0).astype(np.int64) @ aff.mask.astype(np.int64) > 0
                pending = None
            stages.append(aff)
        elif layer.role == "activation":
            if pending is not None:  # an entrywise map does not commute with a linear one
                raise E.KernelalgError(LINEAR_BETWEEN_ACTIVATIONS.format(layer=pending_name))
            stages.append(layer)
        elif layer.role in TRANSPARENT_ROLES:
            p = _linear_map(layer, pr, shp, twin.width, dtype)
            if p is None:
                continue
            if stages and isinstance(stages[-1], _Affine) and pending is None:
                last = stages[-1]
                last.m = last.m @ p.astype(last.m.dtype)
                last.b = None if last.b is None else last.b @ p.astype(last.b.dtype)
                last.mask = last.mask.astype(np.int64) @ (p != 0).astype(np.int64) > 0
            else:
                pending = p if pending is None else pending @ p
                pending_name = layer.name
        else:
            raise E.KernelalgError(NOT_EMBEDDABLE.format(layer=layer.name, role=layer.role))
    if pending is not None:
        raise E.KernelalgError(TRAILING_LINEAR.format(layer=pending_name))
    if not any(isinstance(s, _Affine) for s in stages):
        raise E.KernelalgError(NO_AFFINE)
    return _assemble(stages, leaves, in_shape)


def _assemble(stages: list, leaves: list, in_shape: tuple) -> EquivalentFCN:
    """The eFCN's Dense chain and its parameters from the embedded stages."""
    layers, params, support = [], [], []
    act_params = iter(pr for layer, pr, _ in leaves if layer.role == "activation")
    for st in stages:
        if not isinstance(st, _Affine):
            layers.append(st)
            params.append(next(act_params))
            support.append({})
            continue
        n_in, n_out = st.m.shape
        h = st.hyper
        layers.append(Dense(h["W_std"], h.get("b_std"), h["parameterization"], out_dim=int(n_out)))
        sc = affine_scales({"parameterization": h["parameterization"]}, h["W_std"], h.get("b_std"), n_in, n_out)
        w = st.m * st.m.dtype.type(st.w_scale / sc.w_mult) if sc.w_mult != 0 else np.zeros_like(st.m)
        entry = {"W": jnp.asarray(w)}
        if st.b is not None:
            b = st.b if st.b_scale == sc.b_mult else (
                st.b * st.b.dtype.type(st.b_scale / sc.b_mult) if sc.b_mult != 0 else np.zeros_like(st.b))
            entry["b"] = jnp.asarray(b)
        params.append(entry)
        support.append({"W": st.mask})
    net = serial(*layers) if len(layers) > 1 else layers[0]
    fc = finite(net, 1)
    return EquivalentFCN(net, fc, params, support, tuple(in_shape))


__all__ = ["EquivalentFCN", "efcn"]
