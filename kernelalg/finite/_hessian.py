"""Sharpness: top eigenvalues of the loss Hessian and of the empirical NTK, matrix-free (Lanczos).

* :func:`hessian_eigenvalues`: the largest eigenvalues of the Hessian of ``loss(params)`` from Hessian-vector
  products (forward-over-reverse, ``jvp`` of ``grad``: one product costs about two gradients), never the
  dense Hessian (Pearlmutter 1994; Ghorbani, Krishnan & Xiao 2019). The top one is the *sharpness* of
  Cohen et al. (2021) and of the super-consistency study of Noci et al. (2024).
* :func:`ntk_eigenvalues`: the largest eigenvalues of the empirical NTK ``J J^T`` as an operator on all
  outputs (n x outputs), from NTK-vector products ``J (J^T v)`` (one VJP and one JVP), never the kernel.
  For MSE ``|f - y|^2/(2N)`` the Gauss-Newton part of the Hessian is ``J^T J / N``: the loss Hessian of the
  linearized model has exactly the nonzero eigenvalues ``eig(J J^T) / N``.

Lanczos with full reorthogonalization (Golub & Van Loan, Sec. 10.1): ``iters`` Krylov vectors of the
parameter (or output) dimension are kept, ``iters * dim`` numbers of memory; the Ritz values converge to the
extreme eigenvalues first. Residual norms ``|beta_m s_mi|`` bound each Ritz value's distance to the spectrum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from kernelalg.core import _errors as E

BAD_K = "{name}: k must be an integer in [1, {dim}] (the operator's dimension), got {k!r}. Fix: e.g. k=1."
BAD_ITERS = "{name}: iters must be an integer >= k = {k}, got {iters!r}. Fix: e.g. iters=max(20, 3 * k)."


@dataclass(frozen=True)
class TopEigen:
    """Largest eigenvalues (descending) and the residual norms that bound their error."""

    values: np.ndarray
    residuals: np.ndarray


def lanczos(matvec: Callable[[jax.Array], jax.Array], dim: int, k: int = 1, iters: int = 20, seed: int = 0,
            dtype: Any = jnp.float32, name: str = "lanczos") -> TopEigen:
    """The ``k`` largest eigenvalues of a symmetric operator given by ``matvec`` on R^dim.

    Args:
        matvec: ``v -> A v`` for v of shape (dim,) (jit it: it is called ``iters`` times).
        dim: Dimension of the operator.
        k: Number of eigenvalues.
        iters: Krylov dimension (capped at ``dim``; ``dim`` iterations give the exact spectrum).
        seed: Seed of the random start vector.
        dtype: Working precision.
        name: Name used in error messages.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= dim:
        raise E.KernelalgError(BAD_K.format(name=name, dim=dim, k=k))
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < k:
        raise E.KernelalgError(BAD_ITERS.format(name=name, k=k, iters=iters))
    m = int(min(iters, dim))
    rng = np.random.default_rng(seed)
    basis = np.zeros((m, dim), dtype=np.dtype(dtype))
    alpha, beta = np.zeros(m), np.zeros(m)
    v = rng.standard_normal(dim)
    basis[0] = v / np.linalg.norm(v)
    for j in range(m):
        w = np.asarray(matvec(jnp.asarray(basis[j])), dtype=basis.dtype)
        alpha[j] = float(np.dot(basis[j], w))
        for _ in range(2):  # full reorthogonalization, twice is enough (Kahan-Parlett)
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta[j] = float(np.linalg.norm(w))
        if j + 1 == m:
            break
        scale = max(float(np.max(np.abs(alpha[: j + 1]))), 1e-300)
        if beta[j] <= 1e-10 * scale:  # invariant subspace found: restart in its complement (beta stays 0)
            beta[j] = 0.0
            w = rng.standard_normal(dim).astype(basis.dtype)
            for _ in range(2):
                w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        basis[j + 1] = w / np.linalg.norm(w)
    tri = np.diag(alpha) + np.diag(beta[: m - 1], 1) + np.diag(beta[: m - 1], -1)
    evals, evecs = np.linalg.eigh(tri)
    order = np.argsort(evals)[::-1][:k]
    return TopEigen(evals[order], np.abs(beta[m - 1] * evecs[-1, order]))


def hessian_eigenvalues(loss: Callable[..., jax.Array], params: Any, *args: Any, k: int = 1, iters: int = 20,
                        seed: int = 0, weights: Any = None) -> TopEigen:
    """Top ``k`` eigenvalues of the Hessian of ``loss`` at ``params`` by Lanczos on Hessian-vector products.

    Args:
        loss: ``loss(params, *args) -> scalar`` (JAX, twice differentiable).
        params: Where to take the Hessian (any pytree; its leaves are flattened into one vector).
        *args: Further arguments of ``loss`` (data: passed as arguments, not baked into the compiled product).
        k: Number of eigenvalues (largest algebraic first: the sharpness is ``values[0]``).
        iters: Lanczos steps (memory ``iters x n_params`` numbers).
        seed: Seed of the start vector.
        weights: Per-leaf learning-rate factors s (pytree like ``params``): the eigenvalues of
            ``S^{1/2} H S^{1/2}``, the Hessian that sets the stability of gradient descent with rates ``eta s``.

    Returns:
        :class:`TopEigen` with ``values`` (descending) and their residual norms.
    """
    flat, unravel = ravel_pytree(params)
    root = None if weights is None else jnp.sqrt(ravel_pytree(_like(params, weights))[0]).astype(flat.dtype)

    def build() -> Callable:
        def hvp(v: jax.Array, z0: jax.Array, extra: tuple, r: jax.Array | None) -> jax.Array:
            grad = lambda z: ravel_pytree(jax.grad(loss)(unravel(z), *extra))[0]  # noqa: E731
            v = v.astype(z0.dtype) if r is None else r * v.astype(z0.dtype)
            hv = jax.jvp(grad, (z0,), (v,))[1]
            return hv if r is None else r * hv
        return jax.jit(hvp)

    hvp = _cached(("hvp", loss, _signature(params)), build)
    return lanczos(lambda v: hvp(v, flat, args, root), flat.size, k, iters, seed, flat.dtype, "hessian_eigenvalues")


def ntk_eigenvalues(fn: Callable, params: Any, x: Any, *args: Any, k: int = 1, iters: int = 20,
                    seed: int = 0, weights: Any = None) -> TopEigen:
    """Top ``k`` eigenvalues of the empirical NTK ``J J^T`` on all outputs of ``fn(params, x, *args)``, matrix-free.

    The operator acts on R^(N x outputs) (no trace over output channels: neural-tangents' ``trace_axes=()``);
    each product is one VJP and one JVP over the batch ``x``. ``weights`` (per-leaf learning-rate factors)
    gives ``J diag(weights) J^T``.
    """
    out = jax.eval_shape(lambda p: fn(p, x, *args), params)
    dim = int(np.prod(out.shape))
    w = None if weights is None else _like(params, weights)

    def build() -> Callable:
        def ntvp(v: jax.Array, p: Any, xb: Any, extra: tuple, wt: Any) -> jax.Array:
            f = lambda q: fn(q, xb, *extra).reshape(-1)  # noqa: E731
            _, vjp = jax.vjp(f, p)
            (g,) = vjp(v.astype(out.dtype))
            if wt is not None:
                g = jax.tree_util.tree_map(lambda a, s: a * s, g, wt)
            return jax.jvp(f, (p,), (g,))[1]
        return jax.jit(ntvp)

    ntvp = _cached(("ntvp", fn, _signature(params)), build)
    return lanczos(lambda v: ntvp(v, params, x, args, w), dim, k, iters, seed, out.dtype, "ntk_eigenvalues")


def _like(params: Any, weights: Any) -> Any:
    """``weights`` as arrays of the parameters' dtype, checked to have their structure."""
    if jax.tree_util.tree_structure(weights) != jax.tree_util.tree_structure(params):
        raise E.KernelalgError("weights must be shaped like the parameters (one number per leaf). Fix: e.g. "
                               "twin.learning_rate_scales(params, 'sgd').")
    return jax.tree_util.tree_map(lambda p, s: jnp.full(p.shape, s, p.dtype), params, weights)


_CACHE: dict = {}


def _signature(params: Any) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(params)
    return treedef, tuple((a.shape, str(a.dtype)) for a in leaves)


def _cached(key: tuple, build: Callable[[], Callable]) -> Callable:
    """One compiled product per (function, parameter structure): recorders call these at many steps."""
    hit = _CACHE.get(key)
    if hit is None:
        if len(_CACHE) > 32:
            _CACHE.clear()
        hit = _CACHE[key] = build()
    return hit
