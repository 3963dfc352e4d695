"""Finite-width twins: the real JAX network behind every architecture expression.

``ka.finite(net, width)`` walks the layer tree and composes each leaf's ``finite`` record (its sampler:
``(hyperparameters, static, input shape, width) -> (init, apply, output shape)``), with the same
parametrization as the kernel (NTK parametrization: unit Gaussian trainable W, b; standard: W, b drawn
with the layer's variances). Combinators are generic: ``serial`` chains, ``parallel`` maps branch i to
child i, ``FanOut``/``FanInSum`` have their own samplers (tuples of shapes in, one shape out), so any new
layer (convolutional, recurrent, ...) plugs in by providing ``finite``.

Output width (the readout rule). The *readout layer* is the last affine leaf of the top-level serial chain
(``role == "affine"``: ``Dense`` -> ``out_dim``, ``Conv`` -> ``out_chan``, the layer's ``width_arg``) provided
every leaf after it is linear and parameter-free (``layer.transparent``: ``Identity``, pooling, ``Flatten``). Its
output width is, in order: its own ``out_dim``/``out_chan`` if set (an explicit layer setting is kept; a
conflicting ``out_dim`` argument raises), else the ``out_dim`` argument, else 1 (a scalar-output network,
the setting of the kernel formulas). Every other width-carrying layer uses its own ``out_dim``/``out_chan``
if set, else ``width``. A network without a readout layer (ending in an activation, a branch sum, a
recurrent layer) keeps its own output width and refuses an ``out_dim`` argument.

References:
    Novak et al. (2020), Neural Tangents (stax init_fn/apply_fn conventions); Jacot et al. (2018).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from kernelalg.backends._reference_kernel import mask_inputs
from kernelalg.core import _errors as E
from kernelalg.core._layer import Layer, as_layer
from kernelalg.core._inputs import layout_of
from kernelalg.core._symbolic import trace
from kernelalg.finite._parametrize import Parametrization, apply_parametrization, as_parametrization
from kernelalg.layers.graph._inputs import Graphs, masked_graphs
from kernelalg.layers.spatial._masks import MaskedImages, check_constant, finite_branches

NO_FINITE = ("{layer} has no finite-width twin (its `finite` record is None). Fix: give the layer a finite "
             "sampler (see kernelalg.core._layer.Layer.finite), or build the network from layers that have one.")
NO_READOUT = ("ka.finite(..., out_dim={out_dim}): the network has no readout layer (its top-level chain does not "
              "end in an affine layer such as Dense/Conv, followed only by pooling/Flatten/Identity), so there is "
              "no layer whose width out_dim could set. Fix: end the network with a readout, e.g. "
              "net >> ka.Dense(1.0, out_dim={out_dim}), or pass out_dim=None to keep its own output width.")
OUT_DIM_CONFLICT = ("ka.finite(..., out_dim={out_dim}) conflicts with the readout layer's own {key}={own}. "
                    "Fix: drop one of them (the layer's {key} is used when out_dim=None).")
BAD_WIDTH = "{name} must be a positive integer, got {value!r}. Fix: e.g. {name}=512."
BAD_SHAPE = ("input_shape {shape} does not fit this network (expected {rank} axes without the batch axis, or "
             "{rank_b} with it). Fix: pass the shape of one input, e.g. {example}.")


def _positive_int(name: str, value: Any, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    try:
        ok = not isinstance(value, bool) and int(value) == value and int(value) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise E.KernelalgError(BAD_WIDTH.format(name=name, value=value))
    return int(value)


def layer_parts(layer: Layer, in_shape: Any, width: int) -> tuple[Callable, Callable, Any]:
    """(init, apply, out_shape) of any layer: serial / parallel generically, leaves through ``finite``."""
    if layer.is_serial:
        parts, shape = [], in_shape
        for child in layer.children:
            init, apply, shape = layer_parts(child, shape, width)
            parts.append((init, apply))
        return _serial_init([p[0] for p in parts]), _serial_apply([p[1] for p in parts]), shape
    if layer.is_parallel:
        if not isinstance(in_shape, tuple) or not in_shape or not isinstance(in_shape[0], tuple):
            raise E.LayerOrderError(E.FANOUT_MISMATCH.format(got=len(layer.children), expected=1))
        if len(in_shape) != len(layer.children):
            raise E.LayerOrderError(E.FANOUT_MISMATCH.format(got=len(layer.children), expected=len(in_shape)))
        return parallel_parts([layer_parts(c, s, width) for c, s in zip(layer.children, in_shape)])
    if layer.finite is None:
        raise E.KernelalgError(NO_FINITE.format(layer=layer.name))
    p = {k: v for k, v in layer.params if v is not None}
    return layer.finite(p, dict(layer.static), in_shape, width)


def parallel_parts(parts: list) -> tuple[Callable, Callable, tuple]:
    """The (init, apply, output shapes) of ``parallel``: branch i gets input i and its own parameters."""
    def init_p(key: jax.Array) -> list:
        return [p[0](k) for p, k in zip(parts, jax.random.split(key, len(parts)))]

    def apply_p(params: list, xs: Any) -> tuple:  # each branch sees only its own moves of a bound pixel mask
        return finite_branches([partial(p[1], pr, x) for p, pr, x in zip(parts, params, xs)])
    return init_p, apply_p, tuple(p[2] for p in parts)


def _serial_init(inits: list[Callable]) -> Callable:
    def init(key: jax.Array) -> list:
        return [i(k) for i, k in zip(inits, jax.random.split(key, max(len(inits), 1)))]
    return init


def _serial_apply(applies: list[Callable]) -> Callable:
    def apply(params: list, x: Any) -> Any:
        for ap, pr in zip(applies, params):
            x = ap(pr, x)
        return x
    return apply


def readout_index(chain: tuple[Layer, ...]) -> int | None:
    """Index of the readout layer in a top-level chain (see the module docstring), or None."""
    for i in range(len(chain) - 1, -1, -1):
        leaf = chain[i]
        if leaf.children:
            return None
        if leaf.role == "affine" and leaf.width_arg is not None:
            return i
        if not leaf.transparent:
            return None
    return None


def input_shape_of(x: Any) -> tuple:
    """Shape of one input (no batch axis) of an array or of a pytree input such as ``ka.Sequences``."""
    if hasattr(x, "shape") and not hasattr(x, "mask"):
        return tuple(x.shape[1:])
    inner = getattr(x, "x", None)
    if inner is not None:
        return tuple(inner.shape[1:])
    leaves = jax.tree_util.tree_leaves(x)
    return tuple(leaves[0].shape[1:])


@dataclass(frozen=True, eq=False)
class FiniteNet:
    """A finite-width network with the architecture and parametrization of a kernel expression.

    Attributes:
        net: The architecture expression.
        width: Width of the hidden layers without their own ``out_dim``/``out_chan``.
        out_dim: Output width of the readout layer (None when the network has none).
        readout: Index of the readout layer in the top-level chain, or None.
        chain: The top-level chain with the readout width filled in.
        parametrization: The abc-parametrization overriding the layers' own ("mup", ...), or None.

    Example:
        >>> twin = ka.finite(ka.Dense(1.5, 0.1) >> ka.Relu() >> ka.Dense(1.5, 0.1), width=512)  # doctest: +SKIP
        >>> params = twin.init(jax.random.PRNGKey(0), (8,))       # input shape without the batch axis
        >>> y = twin.apply(params, x)                             # (N, 1)
    """

    net: Layer
    width: int
    out_dim: int | None
    readout: int | None
    chain: tuple[Layer, ...]
    parametrization: Parametrization | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def _parts(self, in_shape: tuple) -> list:
        hit = self._cache.get(in_shape)
        if hit is None:
            hit, shape = [], in_shape
            for layer in self.chain:
                init, apply, shape = layer_parts(layer, shape, self.width)
                hit.append((init, apply, shape))
            self._cache[in_shape] = hit
        return hit

    def item_shape(self, input_shape: Any) -> tuple:
        """Shape of one input (no batch axis) from ``input_shape`` with or without its batch axis; an
        :class:`InputError` naming the fix for a shape of the wrong rank."""
        shape = tuple(int(s) for s in input_shape)
        rank = layout_of(self.net).rank - 1
        if len(shape) == rank + 1:
            return shape[1:]
        if len(shape) != rank:
            ex = (8,) if rank == 1 else (16, 16, 3)[-rank:] if rank <= 3 else (8,) * rank
            raise E.InputError(BAD_SHAPE.format(shape=shape, rank=rank, rank_b=rank + 1, example=ex))
        return shape

    def init(self, key: Any, input_shape: Any) -> list:
        """Sample parameters: ``key`` (PRNG key or int seed), ``input_shape`` of one input (a leading batch
        axis, as in neural-tangents' ``init_fn(key, (-1, d))``, is accepted and ignored)."""
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            key = jax.random.PRNGKey(int(key))
        parts = self._parts(self.item_shape(input_shape))
        keys = jax.random.split(key, max(len(parts), 1))
        return [p[0](k) for p, k in zip(parts, keys)]

    def apply(self, params: list, x: Any, mask_constant: float | None = None) -> Any:
        """The network's output for the batch ``x`` (array (N, ...) or a pytree input such as ``ka.Sequences``).

        ``mask_constant``: as neural-tangents' ``apply_fn(..., mask_constant=c)`` for images and ``ka.Graphs``:
        entries equal to c are zeroed, pixels (nodes) with every channel equal to c are masked (Conv and
        Aggregate read them as zero, GlobalSelfAttention excludes them as keys, the global pools reduce over the
        valid ones, Flatten zeroes them).
        """
        if mask_constant is not None and isinstance(x, Graphs):  # padding nodes
            x = masked_graphs("x", x, check_constant(mask_constant))
        elif mask_constant is not None:
            x = MaskedImages.from_constant("x", x if isinstance(x, jax.Array) else np.asarray(x),
                                           check_constant(mask_constant))
        # JAX arrays in the enabled precision (a NumPy float64 batch becomes float32 unless x64 is on)
        x = jax.tree_util.tree_map(jnp.asarray, x)
        bind = getattr(x, "bind_finite", None)  # inputs with side data for some layers (ka.Graphs: patterns)
        if bind is not None:
            with bind() as feats:
                return self.apply(params, feats)
        for (_, ap, _), pr in zip(self._parts(input_shape_of(x)), params):
            x = ap(pr, x)
        return x

    def output_shape(self, input_shape: Any) -> tuple:
        """Shape of one output (no batch axis)."""
        parts = self._parts(self.item_shape(input_shape))
        return parts[-1][2] if parts else self.item_shape(input_shape)

    def features(self, params: list, x: Any) -> Any:
        """The readout layer's input (the last hidden representation). Requires a readout layer."""
        if self.readout is None:
            raise E.KernelalgError(NO_READOUT.format(out_dim=1))
        bind = getattr(x, "bind_finite", None)
        if bind is not None:
            with bind() as feats:
                return self.features(params, feats)
        for (_, ap, _), pr in zip(self._parts(input_shape_of(x))[:self.readout], params[:self.readout]):
            x = ap(pr, x)
        return x

    def learning_rate_scales(self, params: list, rule: str | None) -> list | None:
        """Per-leaf learning-rate factors ``n^{-c}`` of the abc-parametrization for the update ``rule``
        ("sgd" or "adam"), shaped like ``params``; None when every factor is 1 (see
        :class:`kernelalg.finite._parametrize.Parametrization`)."""
        c = None if self.parametrization is None else self.parametrization.lr_exponents(rule)
        if c is None:
            return None
        kinds = ("input", "hidden", "output")
        out = []
        for layer, pr in zip(self.chain, params):
            sc = dict(layer.static).get("scaling")
            if sc is None:
                out.append(jax.tree_util.tree_map(lambda a: 1.0, pr))
                continue
            fan_in, fan_out = int(np.prod(pr["W"].shape[:-1])), int(pr["W"].shape[-1])
            n = fan_out if sc.kind == "input" else fan_in
            entry = {"W": float(n ** -c[kinds.index(sc.kind)])}
            if "b" in pr:
                entry["b"] = 1.0 if sc.kind == "output" else float(fan_out ** -c[0])
            out.append(entry)
        return out

    @property
    def readout_layer(self) -> Layer | None:
        return None if self.readout is None else self.chain[self.readout]

    def readout_is_last(self) -> bool:
        """True when the readout layer is the network's last layer and a Dense (its conditional NNGP given the
        features is then exact: W_std^2 h.h'/fan_in + b_std^2)."""
        return self.readout is not None and self.readout == len(self.chain) - 1 and self.chain[-1].is_feature_affine


def masked_batches(net: Layer, x1: Any, x2: Any, constant: Any) -> tuple[Any, Any]:
    """x1, x2 as ``ka.kernel(net, x1, x2, mask_constant=constant)`` masks them (``MaskedImages``: zeroed entries
    and validities; a twin's ``apply`` takes them as they are), checked as there. The network is traced with
    its masks, so that a layer that cannot mask refuses here as it does in ``ka.kernel``."""
    masked, m1, m2 = mask_inputs(net, layout_of(net), x1, x2, constant)
    trace(masked, keep_symbols=True)
    return m1, m2


def finite(net: Layer, width: int, out_dim: int | None = None,
           parametrization: str | Parametrization | None = None) -> FiniteNet:
    """The finite-width twin of ``net``: a real JAX network with the kernel's parametrization.

    Args:
        net: Architecture expression.
        width: Width (channels, hidden units) of every layer without its own ``out_dim``/``out_chan``.
        out_dim: Output width of the readout layer (the last affine layer of the top-level chain, followed
            only by pooling/Flatten/Identity). None: the layer's own ``out_dim``/``out_chan`` if set, else 1.
            An explicit layer setting wins; a different ``out_dim`` here raises. Networks without a readout
            layer keep their own output width and need ``out_dim=None``.
        parametrization: None (each layer's own "ntk"/"standard"), or an abc-parametrization of the whole
            network: "standard", "ntk", "mup", "mean_field" or a ``Parametrization`` (width exponents of the
            input, hidden and output layers' multipliers, initialisations and learning rates; Yang & Hu 2021).
            Training then applies the learning-rate exponents (``ka.train(..., lr_rule="sgd" | "adam")``).

    Returns:
        A :class:`FiniteNet` with ``init(key, input_shape)`` and ``apply(params, x)``.

    References:
        Jacot et al. (2018); Lee et al. (2019); Novak et al. (2020) for the parametrizations.
    """
    net = as_layer(net)
    width = _positive_int("width", width)
    out_dim = _positive_int("out_dim", out_dim, allow_none=True)
    chain = net.children if net.is_serial else (net,)
    idx = readout_index(chain)
    if idx is None:
        if out_dim is not None:
            raise E.KernelalgError(NO_READOUT.format(out_dim=out_dim))
        if parametrization is not None:  # raises: an abc-parametrization needs a readout
            apply_parametrization(tuple(chain), as_parametrization(parametrization))
        return FiniteNet(net, width, None, None, tuple(chain))
    leaf = chain[idx]
    key = leaf.width_arg
    static = dict(leaf.static)
    own = static.get(key)
    if own is not None and out_dim is not None and int(own) != out_dim:
        raise E.KernelalgError(OUT_DIM_CONFLICT.format(out_dim=out_dim, key=key, own=own))
    out = int(own) if own is not None else (out_dim or 1)
    new_leaf = dataclasses.replace(leaf, static=tuple((k, out if k == key else v) for k, v in leaf.static))
    chain = tuple(chain[:idx]) + (new_leaf,) + tuple(chain[idx + 1:])
    if parametrization is None:
        return FiniteNet(net, width, out, idx, chain)
    p = as_parametrization(parametrization)
    return FiniteNet(net, width, out, idx, apply_parametrization(chain, p), p)
