"""The one training step of kernelalg: losses, frozen parameters, any optax optimizer, ``lax.scan`` loops.

Everything that trains a network in kernelalg runs :func:`make_step`: :func:`descend` (a pure, jittable and
``vmap``-able full-batch loop, used by the verification report for many networks at once) and
:func:`kernelalg.finite.train` (the harness with minibatches, frozen layers, recorders and the linearized
twin run side by side).

Losses (neural-tangents' ``predict`` conventions where the concept exists there):

* ``"mse"``: ``L = |f - y|^2 / (2 N)`` with ``N = y.size`` (of the batch): one half of the mean squared error
  over all outputs, as ``nt.predict.gradient_descent_mse``;
* ``"cross_entropy"``: softmax cross-entropy averaged over examples, ``L = -(1/n) sum_i sum_c y_ic log
  softmax(f_i)_c`` with one-hot (or probability) targets; integer labels (n,) are one-hot encoded;
* any ``loss(f, y) -> scalar`` written in JAX.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from kernelalg.core import _errors as E

LOSSES = ("mse", "cross_entropy")
BAD_LOSS = "loss={loss!r} is not known. Fix: use loss='mse', loss='cross_entropy' or a JAX function loss(f, y)."
BAD_FREEZE = ("freeze={freeze!r} does not name parameters of this model ({why}). Fix: pass indices (or keys) of the "
              "top-level parameter list, e.g. freeze=[0] for the first layer of a ka.finite twin, a pytree of bools "
              "shaped like the parameters (True = frozen), or a function (path, leaf) -> bool.")
ALL_FROZEN = "freeze={freeze!r} freezes every parameter: nothing would train. Fix: leave some layer trainable."
BAD_OPTIMIZER = ("optimizer={opt!r} is neither a learning rate nor an optax GradientTransformation. Fix: pass e.g. "
                 "optimizer=0.5 (plain gradient descent) or optimizer=optax.adam(1e-3).")


def mse(f: jax.Array, y: jax.Array) -> jax.Array:
    """``|f - y|^2 / (2 y.size)`` (neural-tangents' MSE)."""
    return 0.5 * jnp.sum((f - y) ** 2) / y.size


def cross_entropy(f: jax.Array, y: jax.Array) -> jax.Array:
    """Softmax cross-entropy over the last axis, averaged over the examples (first axis)."""
    return -jnp.sum(y * jax.nn.log_softmax(f, axis=-1)) / f.shape[0]


def loss_function(loss: str | Callable) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The output-space loss ``loss(f, y)`` named by ``loss`` (or ``loss`` itself when callable)."""
    if callable(loss):
        return loss
    if loss == "mse":
        return mse
    if loss == "cross_entropy":
        return cross_entropy
    raise E.KernelalgError(BAD_LOSS.format(loss=loss))


def targets(loss: str | Callable, y: Any, outputs: int) -> np.ndarray:
    """Targets as an (n, outputs) array: integer labels one-hot encoded for cross-entropy, (n,) made (n, 1)."""
    y = np.asarray(y)
    if loss == "cross_entropy" and y.ndim == 1:
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= outputs:
            raise E.KernelalgError(f"cross_entropy with 1-D targets needs integer labels in [0, {outputs}), got "
                                   f"{y.dtype} in [{y.min()}, {y.max()}]. Fix: pass labels 0..{outputs - 1} or "
                                   "one-hot targets (n, outputs).")
        return np.eye(outputs)[y]
    y = y.reshape(y.shape[0], -1) if y.ndim != 2 else y
    if y.shape[1] != outputs:
        raise E.KernelalgError(f"the targets have {y.shape[1]} columns but the model has {outputs} outputs. Fix: "
                               f"build the twin with ka.finite(net, width, out_dim={y.shape[1]}), or reshape y.")
    return y


def mse_loss(apply: Callable, x: Any, y: jax.Array) -> Callable[[Any], jax.Array]:
    """``params -> |apply(params, x) - y|^2 / (2 y.size)``; outputs are reshaped to ``y``'s shape
    (for a 1-D ``y`` the first output channel is used)."""
    def loss(params: Any) -> jax.Array:
        f = apply(params, x)
        f = f.reshape(y.shape[0], -1)[:, 0] if y.ndim == 1 else f.reshape(y.shape)
        return mse(f, y)
    return loss


def as_optimizer(optimizer: Any) -> optax.GradientTransformation:
    """An optax transformation: a number is plain gradient descent with that learning rate."""
    if isinstance(optimizer, (int, float, np.floating, np.integer)) and not isinstance(optimizer, bool):
        return optax.sgd(float(optimizer))
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    raise E.KernelalgError(BAD_OPTIMIZER.format(opt=optimizer))


def scale_updates(scales: Any) -> optax.GradientTransformation:
    """Multiply each update leaf by a fixed factor (per-layer learning rates, e.g. muP's n^{-c})."""
    def update(updates: Any, state: Any, params: Any = None) -> tuple:
        return jax.tree_util.tree_map(lambda u, s: u * s, updates, scales), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


@dataclass(frozen=True)
class Partition:
    """Trainable / frozen split of a parameter pytree (leaf order of ``jax.tree_util.tree_flatten``)."""

    treedef: Any
    frozen: tuple[bool, ...]

    def split(self, params: Any) -> tuple[list, list]:
        leaves = jax.tree_util.tree_leaves(params)
        return ([a for a, f in zip(leaves, self.frozen) if not f], [a for a, f in zip(leaves, self.frozen) if f])

    def merge(self, trainable: list, frozen: list) -> Any:
        it, fz = iter(trainable), iter(frozen)
        return jax.tree_util.tree_unflatten(self.treedef, [next(fz) if f else next(it) for f in self.frozen])

    def trainable_mask(self) -> Any:
        """A pytree like the parameters, True where a leaf trains."""
        return jax.tree_util.tree_unflatten(self.treedef, [not f for f in self.frozen])


def partition(params: Any, freeze: Any = None) -> Partition:
    """Which leaves of ``params`` are frozen: ``freeze`` is None, indices/keys of the top-level container,
    a pytree of bools like ``params`` (True = frozen) or a function ``(path, leaf) -> bool``."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    if freeze is None:
        flags = [False] * len(paths)
    elif callable(freeze):
        flags = [bool(freeze(path, leaf)) for path, leaf in paths]
    elif _is_bool_tree(freeze, params):
        flags = [bool(v) for v in jax.tree_util.tree_leaves(freeze)]
    else:
        names = _top_keys(params, freeze)
        flags = [_top_key(path) in names for path, _ in paths]
    if flags and all(flags):
        raise E.KernelalgError(ALL_FROZEN.format(freeze=freeze))
    return Partition(treedef, tuple(flags))


def _is_bool_tree(freeze: Any, params: Any) -> bool:
    try:
        same = jax.tree_util.tree_structure(freeze) == jax.tree_util.tree_structure(params)
    except TypeError:
        return False
    return same and all(isinstance(v, (bool, np.bool_)) for v in jax.tree_util.tree_leaves(freeze))


def _top_key(path: tuple) -> Any:
    first = path[0]
    return getattr(first, "idx", getattr(first, "key", getattr(first, "name", None)))


def _top_keys(params: Any, freeze: Any) -> set:
    items = [freeze] if isinstance(freeze, (int, str)) else list(freeze) if isinstance(freeze, Iterable) else None
    if items is None:
        raise E.KernelalgError(BAD_FREEZE.format(freeze=freeze, why="not a list of indices"))
    if isinstance(params, (list, tuple)):
        n = len(params)
        bad = [i for i in items if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -n <= i < n]
        if bad:
            raise E.KernelalgError(BAD_FREEZE.format(freeze=freeze, why=f"{bad} not in range({n})"))
        return {int(i) % n for i in items}
    if isinstance(params, dict):
        bad = [k for k in items if k not in params]
        if bad:
            raise E.KernelalgError(BAD_FREEZE.format(freeze=freeze, why=f"keys {bad} not in {sorted(params)}"))
        return set(items)
    raise E.KernelalgError(BAD_FREEZE.format(freeze=freeze, why=f"parameters of type {type(params).__name__}"))


def make_step(loss: Callable[..., jax.Array], optimizer: optax.GradientTransformation) -> Callable:
    """``step(theta, opt_state, *batch) -> (theta, opt_state, loss before the update)`` for ``loss(theta,
    *batch)`` and an optax ``optimizer``: the one update rule of every kernelalg trainer."""
    def step(theta: Any, opt_state: Any, *batch: Any) -> tuple:
        value, grads = jax.value_and_grad(loss)(theta, *batch)
        updates, opt_state = optimizer.update(grads, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state, value
    return step


def descend(loss: Callable[[Any], jax.Array], params: Any, optimizer: Any, steps: int) -> tuple[Any, jax.Array]:
    """``steps`` full-batch optimizer steps on ``loss(params)``: (final params, losses at steps 0..steps).

    Pure and traceable (``jit``/``vmap`` over initialisations); ``optimizer`` is an optax transformation or a
    learning rate (plain gradient descent). Use ``jax.jit(descend, static_argnums=(0, 2, 3))``.
    """
    tx = as_optimizer(optimizer)
    step = make_step(lambda p: loss(p), tx)

    def body(carry: tuple, _: Any) -> tuple:
        p, s = carry
        p, s, value = step(p, s)
        return (p, s), value

    (params, _), values = jax.lax.scan(body, (params, tx.init(params)), None, length=steps)
    return params, jnp.concatenate([values, loss(params)[None]])


def batch_schedule(n: int, batch_size: int | None, steps: int, seed: int) -> np.ndarray | None:
    """(steps, batch_size) example indices: a fresh permutation every epoch, the last partial batch of an epoch
    dropped (None: full batch)."""
    if batch_size is None or batch_size >= n:
        return None
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise E.KernelalgError(f"batch_size must be a positive integer, got {batch_size!r}. Fix: e.g. batch_size=32, "
                               "or None for full-batch training.")
    rng = np.random.default_rng(seed)
    per_epoch = n // batch_size
    epochs = -(-steps // per_epoch)
    rows = [rng.permutation(n)[: per_epoch * batch_size].reshape(per_epoch, batch_size) for _ in range(epochs)]
    return np.concatenate(rows)[:steps] if rows else np.zeros((0, batch_size), np.int64)
