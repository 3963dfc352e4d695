"""The training harness: any optax optimizer, minibatches, frozen layers, recorders, and the linearized twin.

:func:`train` trains a ``ka.finite`` twin (or any ``apply(params, x)``) with :func:`kernelalg.finite._train.make_step`
in jitted ``lax.scan`` segments between the steps at which recorders run. Recorders are switched on by
name, each at its own steps:

* ``"loss"``: the loss on all training points (and on the test points when ``y_test`` is given);
* ``"outputs"``: the outputs on the training (and test) points;
* ``"ntk"``: the empirical NTK of the trainable parameters, train x train and test x train
  (``ka.empirical_ntk(method="auto")``: the structured route for Dense chains, else Jacobian tiles sized to
  ``memory`` bytes; never a Jacobian that does not fit);
* ``"distance"``: ``|theta - theta_0|`` over the trainable parameters, and relative to ``|theta_0|``;
* ``"sharpness"``: the top Hessian eigenvalues of the training loss (Lanczos on Hessian-vector products);
  with per-layer learning rates ``eta s`` (abc-parametrizations) those of ``S^{1/2} H S^{1/2}``, and the NTK
  recorders give ``J diag(s) J^T``: the matrices that govern gradient descent;
* ``"ntk_eigenvalues"``: the top eigenvalues of the untraced empirical NTK on the training points (Lanczos on
  NTK-vector products);
* ``"linearized"``: train ``ka.linearize(model, theta_0)`` side by side (same optimizer, batches and frozen
  layers) and apply every other recorder to it (its NTK is constant, the one at step 0, and is not repeated).

Every step's minibatch loss is kept as well (``TrainRun.step_loss``), at no cost.

References:
    Lee et al. (2019) (linearized training); Fort et al. (2020) (kernel evolution); Cohen et al. (2021) and
    Noci et al. (2024) (sharpness); Yang & Hu (2021) (per-layer learning rates of abc-parametrizations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from kernelalg.core import _errors as E
from kernelalg.finite._empirical import DEFAULT_MEMORY, empirical_ntk
from kernelalg.finite._hessian import hessian_eigenvalues, ntk_eigenvalues
from kernelalg.finite._linearize import linearize
from kernelalg.finite._train import (as_optimizer, batch_schedule, loss_function, make_step, partition,
                                     scale_updates, targets)
from kernelalg.finite._twins import FiniteNet

RECORDERS = ("loss", "outputs", "ntk", "distance", "sharpness", "ntk_eigenvalues", "linearized")
BAD_RECORDER = "record: {name!r} is not a recorder. Fix: choose from {known}."
BAD_STEPS = ("record: the steps of {name!r} must be an interval (int >= 1) or a list of steps in [0, {steps}], got "
             "{value!r}. Fix: e.g. {{'{name}': 10}} or {{'{name}': [0, 100, {steps}]}}.")
BAD_OUTPUTS = ("train needs outputs of shape (N,) or (N, k), got {shape}. Fix: end the network with a readout "
               "(e.g. >> ka.GlobalAvgPool() >> ka.Dense(1.0, out_dim=k)).")


@dataclass(frozen=True)
class Trace:
    """Values of one recorder at its steps: ``values[key]`` has a leading axis over ``steps``."""

    steps: np.ndarray
    values: dict

    def __getitem__(self, key: str) -> np.ndarray:
        return self.values[key]


@dataclass(frozen=True)
class TrainRun:
    """The result of :func:`train`.

    Attributes:
        step_loss: (steps,) loss of the minibatch used at each step, before the update.
        net: Recorder name -> :class:`Trace` of the trained network (``run["ntk"]`` is ``run.net["ntk"]``).
        linear: The same for the linearized model (None unless "linearized" was recorded).
        linear_step_loss: (steps,) minibatch losses of the linearized model, or None.
        params: Final parameters of the network (all leaves, frozen ones unchanged).
        params0: Initial parameters.
        linear_params: Final parameters of the linearized model, or None.
    """

    step_loss: np.ndarray
    net: dict
    linear: dict | None
    linear_step_loss: np.ndarray | None
    params: Any
    params0: Any
    linear_params: Any | None

    def __getitem__(self, name: str) -> Trace:
        return self.net[name]


def _schedule(record: Sequence[str] | Mapping[str, Any], every: int | None, steps: int) -> tuple[dict, bool]:
    """Recorder -> sorted steps, and whether the linearized model runs."""
    items = dict(record) if isinstance(record, Mapping) else {name: every for name in record}
    for name in items:
        if name not in RECORDERS:
            raise E.KernelalgError(BAD_RECORDER.format(name=name, known=", ".join(RECORDERS)))
    lin = "linearized" in items
    items.pop("linearized", None)
    out = {}
    for name, value in items.items():
        if value is None:
            grid = [0, steps]
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            if value < 1:
                raise E.KernelalgError(BAD_STEPS.format(name=name, steps=steps, value=value))
            grid = list(range(0, steps + 1, int(value))) + [steps]
        else:
            grid = list(value)
            if any(not isinstance(s, (int, np.integer)) or isinstance(s, bool) or not 0 <= s <= steps for s in grid):
                raise E.KernelalgError(BAD_STEPS.format(name=name, steps=steps, value=value))
        out[name] = sorted({int(s) for s in grid})
    return out, lin


def _norm(tree: Any) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(a ** 2) for a in jax.tree_util.tree_leaves(tree)))


def train(model: FiniteNet | Callable, params: Any, x: Any, y: Any, steps: int, optimizer: Any, *,
          loss: str | Callable = "mse", batch_size: int | None = None, seed: int = 0, freeze: Any = None,
          x_test: Any = None, y_test: Any = None, record: Sequence[str] | Mapping[str, Any] = ("loss",),
          every: int | None = None, ntk_trace: bool = True, memory: float = DEFAULT_MEMORY, top_k: int = 1,
          lanczos_iters: int = 20, lr_rule: str | None = None) -> TrainRun:
    """Train a finite network (or any JAX function) and record what is asked for.

    Args:
        model: A ``ka.finite`` twin or a function ``apply(params, x) -> (N, k)`` outputs.
        params: Initial parameters (``twin.init(key, input_shape)``).
        x: Training inputs (N, ...).
        y: Targets (N, k), (N,), or integer labels (N,) for ``loss="cross_entropy"``.
        steps: Number of optimizer steps.
        optimizer: An optax ``GradientTransformation`` (``optax.sgd(lr, momentum)``, ``optax.adam(lr)``, ...) or
            a learning rate (plain gradient descent).
        loss: "mse" (``|f - y|^2/(2 N)``, N = batch y.size), "cross_entropy" or a JAX ``loss(f, y)``.
        batch_size: Minibatch size (a new permutation every epoch, seeded by ``seed``); None: full batch.
        seed: Seed of the minibatch order and of the Lanczos start vectors.
        freeze: Frozen parameters: indices of the twin's layers (``[0]``: the first), keys of a parameter
            dict, a pytree of bools (True = frozen) or ``(path, leaf) -> bool``.
        x_test, y_test: Test points for the "outputs", "loss" and "ntk" (test x train) recorders.
        record: Recorder names (all at the steps of ``every``), or a mapping name -> interval or list of
            steps, e.g. ``{"loss": 1, "ntk": [0, 100, 1000], "linearized": None}``.
        every: Default interval of the recorders named in a sequence (None: at step 0 and at the end).
        ntk_trace: Average the recorded NTK over output channels (neural-tangents' ``trace_axes=(-1,)``).
        memory: Working-memory budget (bytes) of the NTK recorder.
        top_k: Number of eigenvalues of the "sharpness" and "ntk_eigenvalues" recorders.
        lanczos_iters: Lanczos steps of those recorders.
        lr_rule: "sgd" or "adam": which per-layer learning-rate exponents of the twin's abc-parametrization
            to apply (``ka.finite(..., parametrization="mup")``); None for twins without one.

    Returns:
        A :class:`TrainRun`.
    """
    steps = int(steps)
    plan, lin_on = _schedule(record, every, steps)
    apply = model.apply if isinstance(model, FiniteNet) else model
    fn = loss_function(loss)
    params = jax.tree_util.tree_map(jnp.asarray, params)  # the enabled precision (float64 only under x64)
    x = jax.tree_util.tree_map(jnp.asarray, x)
    n = jax.tree_util.tree_leaves(x)[0].shape[0]
    out_shape = jax.eval_shape(apply, params, x).shape
    if len(out_shape) not in (1, 2):
        raise E.KernelalgError(BAD_OUTPUTS.format(shape=out_shape))
    k = 1 if len(out_shape) == 1 else out_shape[1]
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    yy = jnp.asarray(targets(loss, y, k), dtype)
    has_test = x_test is not None
    xt = jax.tree_util.tree_map(jnp.asarray, x_test) if has_test else None
    yt = jnp.asarray(targets(loss, y_test, k), dtype) if has_test and y_test is not None else None

    part = partition(params, freeze)
    theta0, frozen = part.split(params)
    tx = as_optimizer(optimizer)
    scales = _lr_scales(model, params, lr_rule)
    if scales is not None:
        tx = optax.chain(tx, scale_updates(part.split(scales)[0]))

    def net(theta: list, xb: Any, fz: list) -> jax.Array:
        return apply(part.merge(theta, fz), xb).reshape(-1, k)

    def lin(theta: list, xb: Any, fz: list, th0: list) -> jax.Array:
        return linearize(lambda t, xx: net(t, xx, fz), th0)(theta, xb)

    def net_loss(theta: list, xb: Any, yb: jax.Array, fz: list) -> jax.Array:
        return fn(net(theta, xb, fz), yb)

    def lin_loss(theta: list, xb: Any, yb: jax.Array, fz: list, th0: list) -> jax.Array:
        return fn(lin(theta, xb, fz, th0), yb)

    step, step_lin = make_step(net_loss, tx), make_step(lin_loss, tx)

    def segment(carry: tuple, fz: list, th0: list, xs: Any, ys: jax.Array, idx: jax.Array | None, length: int):
        def body(c: tuple, rows: Any) -> tuple:
            xb, yb = (xs, ys) if rows is None else (jax.tree_util.tree_map(lambda a: a[rows], xs), ys[rows])
            th, st, thl, stl = c
            th, st, v = step(th, st, xb, yb, fz)
            vl = v
            if lin_on:
                thl, stl, vl = step_lin(thl, stl, xb, yb, fz, th0)
            return (th, st, thl, stl), (v, vl)
        return jax.lax.scan(body, carry, idx, length=length)

    run_segment = jax.jit(segment, static_argnums=(6,))
    batches = batch_schedule(n, batch_size, steps, seed)
    carry = (theta0, tx.init(theta0), theta0 if lin_on else None, tx.init(theta0) if lin_on else None)
    models = {"net": (jax.jit(net), jax.jit(net_loss), ())}
    if lin_on:
        models["linear"] = (jax.jit(lin), jax.jit(lin_loss), (theta0,))
    traces: dict = {name: {} for name in models}
    ctx = _Context(apply, part, frozen, theta0, x, yy, xt, yt, fn, ntk_trace, memory, top_k, lanczos_iters, seed,
                   scales)
    checkpoints = sorted({s for grid in plan.values() for s in grid} | {0, steps})
    losses, lin_losses, done = [], [], 0
    for s in checkpoints:
        if s > done:
            idx = None if batches is None else jnp.asarray(batches[done:s])
            carry, (v, vl) = run_segment(carry, frozen, theta0, x, yy, idx, s - done)
            losses.append(np.asarray(v))
            lin_losses.append(np.asarray(vl))
            done = s
        for which, (f, lf, extra) in models.items():
            theta = carry[0] if which == "net" else carry[2]
            for name, grid in plan.items():
                if s in grid and not (which == "linear" and name == "ntk"):
                    for key, val in ctx.measure(name, theta, f, lf, extra).items():
                        traces[which].setdefault(name, {}).setdefault(key, []).append(val)
    cat = (lambda parts: np.concatenate(parts) if parts else np.zeros(0))
    packed = {which: {name: Trace(np.array(plan[name]), {key: np.stack(v) for key, v in vals.items()})
                      for name, vals in tr.items()} for which, tr in traces.items()}
    return TrainRun(cat(losses), packed["net"], packed.get("linear"), cat(lin_losses) if lin_on else None,
                    part.merge(carry[0], frozen), params, part.merge(carry[2], frozen) if lin_on else None)


def _lr_scales(model: Any, params: Any, rule: str | None) -> Any:
    """Per-leaf learning-rate factors n^{-c} of the twin's abc-parametrization (None when all are 1)."""
    if isinstance(model, FiniteNet) and model.parametrization is not None:
        return model.learning_rate_scales(params, rule)
    if rule is not None:
        raise E.KernelalgError(f"lr_rule={rule!r} needs a twin with an abc-parametrization. Fix: build it with "
                               "ka.finite(net, width, parametrization='mup'), or drop lr_rule.")
    return None


@dataclass(frozen=True)
class _Context:
    """What the recorders need besides the parameters being measured."""

    apply: Callable
    part: Any
    frozen: list
    theta0: list
    x: Any
    y: jax.Array
    x_test: Any
    y_test: Any
    loss: Callable
    ntk_trace: bool
    memory: float
    top_k: int
    iters: int
    seed: int
    scales: Any

    def measure(self, name: str, theta: list, f: Callable, lf: Callable, extra: tuple) -> dict:
        fz = self.frozen
        if name == "loss":
            out = {"train": lf(theta, self.x, self.y, fz, *extra)}
            if self.y_test is not None:
                out["test"] = lf(theta, self.x_test, self.y_test, fz, *extra)
        elif name == "outputs":
            out = {"train": f(theta, self.x, fz, *extra)}
            if self.x_test is not None:
                out["test"] = f(theta, self.x_test, fz, *extra)
        elif name == "distance":
            d = _norm(jax.tree_util.tree_map(lambda a, b: a - b, theta, self.theta0))
            out = {"distance": d, "relative": d / _norm(self.theta0)}
        elif name == "ntk":
            full = self.part.merge(theta, fz)
            mask = self.part.trainable_mask()
            kw = dict(method="auto", trace=self.ntk_trace, trainable=mask, weights=self.scales, memory=self.memory)
            out = {"train": empirical_ntk(self.apply, full, self.x, **kw)}
            if self.x_test is not None:
                out["test_train"] = empirical_ntk(self.apply, full, self.x_test, self.x, **kw)
        elif name == "sharpness":
            top = hessian_eigenvalues(lf, theta, self.x, self.y, fz, *extra, k=self.top_k, iters=self.iters,
                                      seed=self.seed, weights=self._theta_scales())
            out = {"eigenvalues": top.values, "residuals": top.residuals}
        else:  # ntk_eigenvalues
            top = ntk_eigenvalues(f, theta, self.x, fz, *extra, k=self.top_k, iters=self.iters, seed=self.seed,
                                  weights=self._theta_scales())
            out = {"eigenvalues": top.values, "residuals": top.residuals}
        return {key: np.asarray(v) for key, v in out.items()}

    def _theta_scales(self) -> list | None:
        return None if self.scales is None else self.part.split(self.scales)[0]
