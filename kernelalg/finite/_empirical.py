"""Empirical NTK (and NNGP) of any JAX function ``f(params, x)``: Jacobian contraction or NTK-vector products.

The empirical NTK of a network with parameters theta is ``Theta(x, x') = J(x) J(x')^T`` with
``J = d f / d theta`` (Jacot et al. 2018). Two exact routes, as in neural-tangents (Novak et al. 2022,
"Fast Finite Width Neural Tangent Kernel"):

* ``method="jacobian"``: per-example Jacobians (``vmap`` of ``jacrev`` over the batch: examples must not
  interact, as in any network without batch statistics), contracted leaf by leaf over the parameters.
* ``method="ntvp"``: NTK-vector products ``J(x1) (J(x2)^T v)`` (one VJP then one JVP) for the basis vectors
  v of the outputs of x2 (memory O(params) per vector).
* ``method="auto"``: the structured route where it applies, else the Jacobian route, in tiles sized to a
  memory budget (:func:`kernelalg.finite._ntk_plan.plan_ntk`).
* ``method="structured"`` (``ka.finite`` twins of Dense/activation chains only): a Dense layer's weight
  Jacobian is the outer product of its input h and the output cotangent g, so its block of J J^T is
  ``(c_W h(x).h(x') + c_b) * g(x).g(x')`` (c_W = W_std^2/fan_in, c_b = b_std^2 in the NTK
  parametrization; 1 and 1 in the standard one). Cost O(N M (fan_in + fan_out)) per layer instead of
  O(N M fan_in fan_out): the "structured derivatives" of Novak et al. (2022).

Output layout: ``f`` returns (batch, *spatial, channels) (a (batch,) output counts as one channel).
With ``trace=True`` (default, neural-tangents' ``trace_axes=(-1,)``) the kernel is averaged over the
channel axis and has shape (N, M, *spatial, *spatial) -- the layout of ``ka.kernel``; ``trace=False``
gives the full (N, M, *out, *out).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from kernelalg.core import _errors as E
from kernelalg.backends._compile import precision_of
from kernelalg.core._tiles import check_tile, run_tiles
from kernelalg.layers._affine import affine_scales
from kernelalg.finite._ntk_plan import DEFAULT_MEMORY, batch_len as _batch_len, outputs_2d as _outputs_2d, plan_ntk
from kernelalg.finite._twins import FiniteNet, masked_batches
from kernelalg.backends._checks import check_batch_size, check_input, check_inputs, is_tracer
from kernelalg.core._inputs import layout_of

METHODS = ("jacobian", "ntvp", "structured")
BAD_METHOD = ("method={method!r} is not known. Fix: use method='jacobian' (default), method='ntvp', "
              "method='structured' or method='auto'.")

MASK_NEEDS_TWIN = ("empirical_ntk(..., mask_constant=...) needs fn = ka.finite(net, width).apply (the twin masks "
                   "its inputs as ka.kernel does); got {fn!r}. Fix: pass the twin's apply, or mask inside fn, e.g. "
                   "lambda p, x: twin.apply(p, x, mask_constant=c).")
STRUCTURED_NEEDS = ("method='structured' needs fn = ka.finite(net, width).apply of a network whose top-level chain "
                    "is Dense layers and parameter-free layers (activations, Identity) on (N, features) inputs; "
                    "got {why}. Fix: use method='jacobian'.")


def _expand(x: Any) -> Any:
    return jax.tree_util.tree_map(lambda a: a[None], x)


def _take(x: Any, sl: slice) -> Any:
    return jax.tree_util.tree_map(lambda a: a[sl], x)


def jacobians(fn: Callable, params: Any, x: Any, vmap_examples: bool = True) -> Any:
    """Per-example Jacobians of ``fn(params, x)``: a pytree like ``params`` with leaves (N, *out, *leaf)."""
    if vmap_examples:
        def one(xi: Any) -> Any:
            return jax.jacrev(lambda p: _outputs_2d(fn(p, _expand(xi)), 1)[0])(params)
        return jax.vmap(one)(x)
    return jax.jacrev(lambda p: _outputs_2d(fn(p, x), _batch_len(x)))(params)


def _contract(j1: Any, j2: Any, n: int, m: int, out_shape: tuple, trace: bool,
              weights: tuple | None = None) -> jax.Array:
    """Sum over parameter leaves of (weight x) J1 J2^T, in the final layout (see :func:`_layout`)."""
    s = math.prod(out_shape[:-1])
    ch = out_shape[-1]
    total = None
    leaves1, leaves2 = jax.tree_util.tree_leaves(j1), jax.tree_util.tree_leaves(j2)
    for a, b, w in zip(leaves1, leaves2, weights or (1.0,) * len(leaves1)):
        if trace:  # only matching channels: (n s, k, p) x (m t, k, p) -> (n s, m t)
            a = jnp.moveaxis(a.reshape(n * s, ch, -1), 1, 0)
            b = jnp.moveaxis(b.reshape(m * s, ch, -1), 1, 0)
            t = jnp.einsum("kap,kbp->ab", a, b, precision=jax.lax.Precision.HIGHEST)
        else:
            t = jnp.matmul(a.reshape(n * s * ch, -1), b.reshape(m * s * ch, -1).T,
                           precision=jax.lax.Precision.HIGHEST)
        t = t if w == 1.0 else w * t
        total = t if total is None else total + t
    if total is None:
        total = jnp.zeros((n * s * (1 if trace else ch), m * s * (1 if trace else ch)))
    return _layout(total, n, m, out_shape, trace)


def _layout(k: jax.Array, n: int, m: int, out_shape: tuple, trace: bool) -> jax.Array:
    """(N A, M A) -> (N, M, *A, *A) with A = spatial axes (trace: channel mean) or all output axes."""
    axes = out_shape[:-1] if trace else out_shape
    if trace:
        k = k / out_shape[-1]
    k = k.reshape((n,) + axes + (m,) + axes)
    return jnp.moveaxis(k, 1 + len(axes), 1)


def restrict(fn: Callable, params: Any, trainable: tuple | None) -> tuple[Callable, Any]:
    """(g, theta): ``g(theta, x) = fn(params with the trainable leaves replaced by theta, x)`` and theta, the list
    of trainable leaves (``trainable``: one bool per leaf of ``params`` in flattening order; None: all)."""
    if trainable is None:
        return fn, params
    leaves, treedef = jax.tree_util.tree_flatten(params)
    if len(leaves) != len(trainable):
        raise E.KernelalgError(f"trainable has {len(trainable)} flags for {len(leaves)} parameter leaves. Fix: pass "
                               "a pytree of bools shaped like the parameters.")
    frozen = [a for a, t in zip(leaves, trainable) if not t]

    def g(theta: list, x: Any) -> Any:
        it, fz = iter(theta), iter(frozen)
        return fn(jax.tree_util.tree_unflatten(treedef, [next(it) if t else next(fz) for t in trainable]), x)
    return g, [a for a, t in zip(leaves, trainable) if t]


def trainable_flags(params: Any, trainable: Any) -> tuple | None:
    """One bool per leaf of ``params`` (hashable, for compiled-function caches) from a pytree of bools."""
    if trainable is None:
        return None
    if jax.tree_util.tree_structure(trainable) != jax.tree_util.tree_structure(params):
        raise E.KernelalgError("trainable must be a pytree of bools shaped like the parameters (True = the leaf "
                               "trains). Fix: e.g. jax.tree_util.tree_map(lambda a: True, params), set False "
                               "where frozen.")
    return tuple(bool(v) for v in jax.tree_util.tree_leaves(trainable))


def ntk_block(fn: Callable, params: Any, x1: Any, x2: Any = None, method: str = "jacobian", trace: bool = True,
              vmap_examples: bool = True, fn2: Callable | None = None, trainable: tuple | None = None,
              weights: tuple | None = None) -> jax.Array:
    """One untiled block of the empirical NTK (traceable: use it inside jit / vmap over parameter samples).

    With ``fn2`` (same parameters, e.g. a surrogate-gradient twin) the kernel is the asymmetric
    ``J_fn(x1) J_fn2(x2)^T`` (Jacobian method only). ``trainable`` (one bool per parameter leaf) restricts
    the Jacobian to the trainable leaves; ``weights`` (one number per leaf) weights each leaf's term, the
    kernel ``J diag(w) J^T`` of gradient descent with per-layer learning rates ``eta w``."""
    if method == "structured":
        if fn2 is not None:
            raise E.KernelalgError("ntk_block(fn2=...): the asymmetric kernel needs method='jacobian'. "
                                   "Fix: pass method='jacobian'.")
        n = _batch_len(x1)
        y1 = jax.eval_shape(lambda p: _outputs_2d(fn(p, x1), n), params)
        return _structured(fn, params, x1, x2, tuple(y1.shape[1:]), trace, trainable, weights)
    if trainable is not None:
        full = params
        fn, params = restrict(fn, full, trainable)
        fn2 = None if fn2 is None else restrict(fn2, full, trainable)[0]
        weights = None if weights is None else tuple(w for w, t in zip(weights, trainable) if t)
    n = _batch_len(x1)
    y1 = jax.eval_shape(lambda p: _outputs_2d(fn(p, x1), n), params)
    out_shape = tuple(y1.shape[1:])
    q = math.prod(out_shape)
    m = n if x2 is None else _batch_len(x2)
    if method == "jacobian":
        j1 = jacobians(fn, params, x1, vmap_examples)
        if fn2 is not None:
            j2 = jacobians(fn2, params, x1 if x2 is None else x2, vmap_examples)
        else:
            j2 = j1 if x2 is None else jacobians(fn, params, x2, vmap_examples)
        return _contract(j1, j2, n, m, out_shape, trace, weights)
    elif method == "ntvp":
        if fn2 is not None:
            raise E.KernelalgError("ntk_block(fn2=...): the asymmetric kernel needs method='jacobian'. "
                                   "Fix: pass method='jacobian'.")
        xb = x1 if x2 is None else x2
        f1 = (lambda p: _outputs_2d(fn(p, x1), n))
        _, vjp2 = jax.vjp(lambda p: _outputs_2d(fn(p, xb), m), params)

        treedef = jax.tree_util.tree_structure(params)

        def column(ct: jax.Array) -> jax.Array:
            (g,) = vjp2(ct)
            if weights is not None:
                g = jax.tree_util.tree_unflatten(treedef, [w * a for w, a in zip(weights, jax.tree_util.tree_leaves(g))])
            return jax.jvp(f1, (params,), (g,))[1]
        basis = jnp.eye(m * q, dtype=y1.dtype).reshape((m * q, m) + out_shape)
        cols = jax.vmap(column)(basis).reshape(m * q, n * q)  # row (j, b): J1 J2^T e_(j, b)
        full = cols.T
        if not trace:
            return _layout(full, n, m, out_shape, False)
        s, ch = q // out_shape[-1], out_shape[-1]
        full = full.reshape(n * s, ch, m * s, ch)
        return _layout(jnp.trace(full, axis1=1, axis2=3), n, m, out_shape, True)
    raise E.KernelalgError(BAD_METHOD.format(method=method))


def _structured(fn: Callable, params: Any, x1: Any, x2: Any, out_shape: tuple, trace: bool,
                trainable: tuple | None = None, weights: tuple | None = None) -> jax.Array:
    """J J^T of a Dense/activation chain from layer inputs h and output cotangents g (see the module doc);
    ``trainable`` (one bool per parameter leaf) drops the terms of frozen weights and biases, ``weights``
    (one number per leaf) weights them."""
    twin = getattr(fn, "__self__", None)
    if not isinstance(twin, FiniteNet) or getattr(fn, "__func__", None) is not FiniteNet.apply:
        raise E.KernelalgError(STRUCTURED_NEEDS.format(why=f"fn={fn!r}"))
    x1 = jnp.asarray(x1)
    if x1.ndim != 2 or len(out_shape) != 1:
        raise E.KernelalgError(STRUCTURED_NEEDS.format(why=f"inputs of shape {x1.shape}"))
    for layer, pr in zip(twin.chain, params):
        if not layer.is_feature_affine and jax.tree_util.tree_leaves(pr):
            raise E.KernelalgError(STRUCTURED_NEEDS.format(why=f"a {layer.name} layer with parameters"))
    parts = twin._parts(tuple(x1.shape[1:]))
    dense = [layer.is_feature_affine for layer in twin.chain]
    k = out_shape[-1]

    def features(x: jax.Array) -> tuple[list, list]:
        n = x.shape[0]
        eps0 = [jnp.zeros((n,) + tuple(p[2]), x.dtype) if d else None for p, d in zip(parts, dense)]

        def run(eps: list) -> tuple:
            hs, y = [], x
            for (_, ap, _), d, pr, e in zip(parts, dense, params, eps):
                if d:
                    hs.append(y)
                    y = ap(pr, y) + e
                else:
                    y = ap(pr, y)
            return _outputs_2d(y, n), hs

        y, vjp, hs = jax.vjp(run, eps0, has_aux=True)
        basis = jnp.broadcast_to(jnp.eye(k, dtype=y.dtype)[:, None, :], (k,) + y.shape)
        (gs,) = jax.vmap(vjp)(basis)  # per Dense layer: (k, n, out)
        return hs, [g for g, d in zip(gs, dense) if d]

    h1, g1 = features(x1)
    h2, g2 = (h1, g1) if x2 is None else features(jnp.asarray(x2))
    treedef, count = jax.tree_util.tree_structure(params), len(jax.tree_util.tree_leaves(params))
    weight = [w if t else 0.0 for w, t in zip(weights or (1.0,) * count, trainable or (True,) * count)]
    weight = jax.tree_util.tree_unflatten(treedef, weight)
    hi = jax.lax.Precision.HIGHEST
    total = 0.0
    for layer, wt, a, b, ga, gb in zip([c for c, d in zip(twin.chain, dense) if d],
                                       [t for t, d in zip(weight, dense) if d], h1, h2, g1, g2):
        p = dict(layer.params)
        sc = affine_scales(dict(layer.static), p["W_std"], p.get("b_std"), a.shape[-1], ga.shape[-1])
        cw = sc.w_mult ** 2 * wt["W"]
        cb = sc.b_mult ** 2 * wt["b"] if "b" in wt else 0.0
        if cw == 0.0 and cb == 0.0:
            continue
        hh = cw * jnp.matmul(a, b.T, precision=hi) + cb
        if trace:
            gg = jnp.einsum("cni,cmi->nm", ga, gb, precision=hi) / k
            total = total + hh * gg
        else:
            gg = jnp.einsum("cni,dmi->nmcd", ga, gb, precision=hi)
            total = total + hh[:, :, None, None] * gg
    return total


def empirical_ntk_fn(fn: Callable, method: str = "jacobian", trace: bool = True,
                     vmap_examples: bool = True, trainable: tuple | None = None,
                     weights: tuple | None = None) -> Callable:
    """A jitted ``ntk(x1, x2, params)`` of ``fn`` (argument order as neural-tangents' ``empirical_ntk_fn``).

    Args:
        fn: ``fn(params, x) -> outputs`` with the batch axis first.
        method: "jacobian" (Jacobian contraction), "ntvp" (NTK-vector products) or "structured"
            (``ka.finite(...).apply`` of Dense/activation chains; see the module docstring).
        trace: Average over the output channel axis (neural-tangents' default ``trace_axes=(-1,)``).
        vmap_examples: Per-example Jacobians (assumes examples do not interact, true for every ``ka.finite``
            network); False differentiates the whole batch at once.
        trainable: One bool per parameter leaf (flattening order): the NTK of the trainable leaves only
            (None: all leaves).
        weights: One number per parameter leaf: the kernel ``J diag(weights) J^T`` (None: all 1).
    """
    if method not in METHODS:
        raise E.KernelalgError(BAD_METHOD.format(method=method))
    return jax.jit(lambda x1, x2, params: ntk_block(fn, params, x1, x2, method, trace, vmap_examples,
                                                    trainable=trainable, weights=weights))


def empirical_ntk(fn: Callable, params: Any, x1: Any, x2: Any = None, *, method: str = "jacobian",
                  trace: bool = True, batch_size: int | None = None, vmap_examples: bool = True,
                  trainable: Any = None, weights: Any = None, memory: float = DEFAULT_MEMORY,
                  mask_constant: float | None = None) -> jax.Array:
    """Empirical NTK ``J(x1) J(x2)^T`` of ``fn`` at ``params`` (x2=None: x1), optionally in tiles.

    Args:
        fn: ``fn(params, x) -> outputs`` (batch first), e.g. ``ka.finite(net, 512).apply``.
        params: Parameters (any pytree).
        x1: Inputs (N, ...) (or a pytree batch such as ``ka.Sequences``).
        x2: Inputs (M, ...) or None.
        method: "jacobian", "ntvp", "structured" (see the module docstring) or "auto": the structured route
            where it applies, else the Jacobian route, in tiles chosen to fit ``memory`` (see :func:`plan_ntk`).
        trace: Average over the output channels (shape (N, M, *spatial, *spatial)); False: full kernel.
        batch_size: Tile size in rows (bounded memory for large N, M); with x2=None only the upper
            triangle of tiles is computed and mirrored. None: one block ("auto": planned).
        vmap_examples: See :func:`empirical_ntk_fn`.
        trainable: Pytree of bools shaped like ``params`` (True = the leaf trains): the NTK of the trainable
            parameters only. None: all.
        weights: Pytree of numbers shaped like ``params``: the kernel ``J diag(weights) J^T`` of gradient descent
            with per-layer learning rates (e.g. ``twin.learning_rate_scales(params, "sgd")``). None: all 1.
        memory: Working-memory budget in bytes of ``method="auto"``.
        mask_constant: Mask input positions whose every channel equals it, as ``ka.kernel(..., mask_constant=c)``
            (neural-tangents' ``mask_constant``; image networks and ``ka.Graphs``); ``fn`` must be a twin's apply.

    Returns:
        The kernel array.
    """
    twin = getattr(fn, "__self__", None)
    if mask_constant is not None:
        if not isinstance(twin, FiniteNet):
            raise E.InputError(MASK_NEEDS_TWIN.format(fn=fn))
        x1, x2 = masked_batches(twin.net, x1, x2, mask_constant)  # zeroed inputs with validities, checked
    elif isinstance(twin, FiniteNet):  # a twin's apply: the inputs its network takes, checked as by ka.kernel
        x1, x2 = check_inputs(layout_of(twin.net), x1, x2)
    else:
        x1, x2 = _check_any(x1, "x1"), None if x2 is None else _check_any(x2, "x2")
    flags = trainable_flags(params, trainable)
    wts = None if weights is None else tuple(float(w) for w in jax.tree_util.tree_leaves(weights))
    if wts is not None and len(wts) != len(jax.tree_util.tree_leaves(params)):
        raise E.KernelalgError("weights must be a pytree of numbers shaped like the parameters. Fix: e.g. "
                               "twin.learning_rate_scales(params, 'sgd').")
    if method == "auto":
        method, planned = plan_ntk(fn, params, x1, x2, trace, flags, memory)
        batch_size = planned if batch_size is None else batch_size
    f = _cached_fn(fn, method, trace, vmap_examples, flags, wts)
    if batch_size is not None:
        batch_size = check_batch_size(batch_size)
    n = _batch_len(x1)
    sym = x2 is None
    xb = x1 if sym else x2
    m = _batch_len(xb)
    if batch_size is None or batch_size >= max(n, m):
        return f(x1, x2, params)
    bs = batch_size
    out: dict[str, np.ndarray] = {}

    def compute(i: int, j: int) -> dict:
        a = _take(x1, slice(i, i + bs))
        return {"ntk": f(a, None, params) if sym and i == j else f(a, _take(xb, slice(j, j + bs)), params)}

    def write(name: str, i: int, j: int, blk: np.ndarray) -> None:
        if name not in out:
            out[name] = np.empty((n, m) + blk.shape[2:], blk.dtype)
        out[name][i:i + blk.shape[0], j:j + blk.shape[1]] = blk

    # blocks (N, M, *A, *A) without trace: the mirror swaps the two groups of trailing axes as well
    run_tiles(compute, n, m, bs, sym, write, pair_axes=True)
    with precision_of(out["ntk"]):  # a float64 result stays float64
        return jnp.asarray(out["ntk"])


def _check_any(x: Any, name: str) -> Any:
    """Inputs of an arbitrary ``fn``: array leaves batch-first (ndim >= 1), non-empty and finite."""
    for leaf in jax.tree_util.tree_leaves(x):
        if isinstance(leaf, (np.ndarray, jax.Array)) and not is_tracer(leaf):
            check_input(name, leaf, "pass a batch-first array, e.g. x[None] for one sample", max(leaf.ndim, 1))
    return x


_FN_CACHE: dict = {}


def _cached_fn(fn: Callable, method: str, trace: bool, vmap_examples: bool, trainable: tuple | None,
               weights: tuple | None) -> Callable:
    key = (fn, method, trace, vmap_examples, trainable, weights)
    hit = _FN_CACHE.get(key)
    if hit is None:
        if len(_FN_CACHE) > 64:
            _FN_CACHE.clear()
        hit = _FN_CACHE[key] = empirical_ntk_fn(fn, method, trace, vmap_examples, trainable, weights)
    return hit


def empirical_nngp(fn: Callable, params: Any, x1: Any, x2: Any = None, trace: bool = True) -> jax.Array:
    """Empirical output covariance ``f(x1) f(x2)^T`` of one network, averaged over the output channels
    (trace=True; shape (N, M, *spatial, *spatial)), the one-sample estimate of the NNGP kernel."""
    y1 = _outputs_2d(fn(params, x1), _batch_len(x1))
    y2 = y1 if x2 is None else _outputs_2d(fn(params, x2), _batch_len(x2))
    return output_covariance(y1, y2, trace)


def output_covariance(y1: jax.Array, y2: jax.Array, trace: bool = True) -> jax.Array:
    """(N, *out) x (M, *out) -> (N, M, *S, *S) channel-averaged products (or (N, M, *out, *out))."""
    n, m = y1.shape[0], y2.shape[0]
    out_shape = tuple(y1.shape[1:])
    if trace:
        s, ch = math.prod(out_shape[:-1]), out_shape[-1]
        k = jnp.matmul(y1.reshape(n * s, ch), y2.reshape(m * s, ch).T, precision=jax.lax.Precision.HIGHEST)
    else:
        k = jnp.outer(y1.reshape(-1), y2.reshape(-1))
    return _layout(k, n, m, out_shape, trace)
