"""Finite-width twins of surrogate-gradient networks and their empirical SG-NTK J(x) J_tilde(x')^T.

Two networks share one parameter set and one forward pass; they differ only in the derivative autodiff
sees at every :func:`kernelalg.SurrogateSign` / :func:`kernelalg.SurrogateStep` layer: the surrogate one
(custom JVP: surrogate-gradient training, J_tilde) and the true one (J). Their mean empirical kernel
converges to ``ka.kernel(net, x1, x2).ntk`` (Eilers, Memmesheimer, Goedeke, NeurIPS 2024).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp

from kernelalg.finite._twins import layer_parts
from kernelalg.core._layer import Layer, as_layer
from kernelalg.layers._surrogate import true_gradient



@dataclass(frozen=True)
class SurrogateTwins:
    """Two finite-width networks sharing parameters: same forward, different backward.

    Attributes:
        init: key -> params (shared by both applies).
        apply_true: (params, x) -> f(x); autodiff gives the true Jacobian J.
        apply_surrogate: (params, x) -> f(x) (same values); autodiff gives the surrogate Jacobian J_tilde.
        out_shape: Output shape without the batch axis.
    """

    init: Callable[[jax.Array], Any]
    apply_true: Callable[[Any, jax.Array], jax.Array]
    apply_surrogate: Callable[[Any, jax.Array], jax.Array]
    out_shape: tuple


def surrogate_twins(net: Layer, input_shape: tuple, width: int) -> SurrogateTwins:
    """Finite-width twins of ``net`` for surrogate-gradient training and its empirical SG-NTK.

    Args:
        net: Architecture (Dense widths default to ``width`` unless ``out_dim`` is given; end with
            ``Dense(..., out_dim=k)`` for k outputs).
        input_shape: Shape of one input, without the batch axis, e.g. (d,).
        width: Hidden width of Dense layers without ``out_dim``.
    """
    net = as_layer(net)
    init, apply_s, out = layer_parts(net, tuple(input_shape), int(width))
    _, apply_t, _ = layer_parts(true_gradient(net, _exact=True), tuple(input_shape), int(width))
    return SurrogateTwins(init, apply_t, apply_s, out)


def empirical_sg_ntk(twins: SurrogateTwins, params: Any, x1: Any, x2: Any = None) -> jax.Array:
    """Empirical SG-NTK ``J(x1) J_tilde(x2)^T``, averaged over the output units (shape (N, M)).

    Row i uses the true Jacobian at x1[i], column j the surrogate Jacobian at x2[j] (x2 None: x1), the
    same convention as ``ka.kernel(net, x1, x2).ntk``.
    """
    x1 = jnp.asarray(x1)
    x2 = x1 if x2 is None else jnp.asarray(x2)
    j1 = jax.jacrev(lambda p: twins.apply_true(p, x1))(params)
    j2 = jax.jacrev(lambda p: twins.apply_surrogate(p, x2))(params)
    k = math.prod(twins.out_shape) if twins.out_shape else 1

    def contract(a: jax.Array, b: jax.Array) -> jax.Array:
        a = a.reshape(a.shape[0], k, -1)
        b = b.reshape(b.shape[0], k, -1)
        return jnp.einsum("nkp,mkp->nm", a, b)

    leaves = zip(jax.tree_util.tree_leaves(j1), jax.tree_util.tree_leaves(j2))
    return sum((contract(a, b) for a, b in leaves), jnp.zeros((x1.shape[0], x2.shape[0]), x1.dtype)) / k
