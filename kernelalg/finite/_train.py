"""The one finite-network trainer: full-batch gradient descent on the MSE, as a ``lax.scan``.

``analysis.train_finite`` (one network, float64, empirical NTKs recorded between segments) and the
verification report's loss curves (many networks at once, ``vmap`` over initialisations) both run
:func:`gd_scan`. Conventions are neural-tangents' ``predict``: L = |f(x) - y|^2 / (2N), N = y.size.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def mse_loss(apply: Callable, x: Any, y: jax.Array) -> Callable[[Any], jax.Array]:
    """``params -> |apply(params, x) - y|^2 / (2 y.size)``; outputs are reshaped to ``y``'s shape
    (for a 1-D ``y`` the first output channel is used)."""
    def loss(params: Any) -> jax.Array:
        f = apply(params, x)
        f = f.reshape(y.shape[0], -1)[:, 0] if y.ndim == 1 else f.reshape(y.shape)
        return 0.5 * jnp.sum((f - y) ** 2) / y.size
    return loss


def gd_scan(loss: Callable[[Any], jax.Array], params: Any, learning_rate: float, steps: int) -> tuple[Any, jax.Array]:
    """``steps`` steps of full-batch gradient descent: (final params, losses at steps 0..steps)."""
    def step(p: Any, _: Any) -> tuple:
        val, g = jax.value_and_grad(loss)(p)
        return jax.tree_util.tree_map(lambda a, b: a - learning_rate * b, p, g), val

    params, vals = jax.lax.scan(step, params, None, length=steps)
    return params, jnp.concatenate([vals, loss(params)[None]])
