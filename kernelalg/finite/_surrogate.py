"""Finite-width twins of surrogate-gradient networks and their empirical SG-NTK J(x) J_tilde(x')^T.

Two networks share one parameter set and one forward pass; they differ only in the derivative autodiff
sees at every :func:`kernelalg.SurrogateSign` / :func:`kernelalg.SurrogateStep` layer: the surrogate one
(custom JVP: surrogate-gradient training, J_tilde) and the true one (J). At finite sharpness ``m`` their
mean empirical kernel converges (in width) to ``ka.kernel(net, x1, x2).ntk`` (Eilers, Memmesheimer, Goedeke,
NeurIPS 2024).

At ``m=None`` (the exact sign/step) it does NOT: the true derivative of a finite-width twin's sign is 0
almost everywhere, so J only has its readout part and the empirical kernel estimates the readout term
alone. The m = None kernel is the m -> infinity limit of the finite-m kernels (Eilers et al. 2024;
``tests/test_surrogate.py`` checks the limit symbolically); it is checked through finite-m twins whose m
grows with the width (:func:`kernelalg.verify_sharpness_limit`) and through the training dynamics of
exact-sign networks with surrogate gradients (``kernelalg verify``'s loss curves).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp

from kernelalg.core._layer import Layer, as_layer
from kernelalg.finite._twins import FiniteNet, finite
from kernelalg.layers._surrogate import true_gradient


def true_gradient_twin(twin: FiniteNet) -> FiniteNet:
    """The same finite network (same parameters and forward) whose surrogate layers backpropagate their true
    derivative (0 almost everywhere for the exact sign/step, m=None)."""
    return dataclasses.replace(twin, chain=tuple(true_gradient(c, _exact=True) for c in twin.chain), _cache={})


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


def surrogate_twins(net: Layer, input_shape: tuple, width: int, out_dim: int | None = None) -> SurrogateTwins:
    """Finite-width twins of ``net`` for surrogate-gradient training and its empirical SG-NTK.

    The widths follow :func:`kernelalg.finite` (the readout rule): hidden layers get ``width``, the readout
    layer ``out_dim`` (default: its own ``out_dim``, else 1).

    Args:
        net: Architecture expression.
        input_shape: Shape of one input, without the batch axis, e.g. (d,).
        width: Hidden width of layers without their own ``out_dim``.
        out_dim: Output width of the readout layer (None: its own ``out_dim``, else 1).
    """
    twin = finite(as_layer(net), int(width), out_dim)
    true_twin = true_gradient_twin(twin)
    in_shape = tuple(input_shape)

    def init(key: jax.Array) -> Any:
        return twin.init(key, in_shape)
    return SurrogateTwins(init, true_twin.apply, twin.apply, twin.output_shape(in_shape))


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
