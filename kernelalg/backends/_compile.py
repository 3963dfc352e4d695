"""``ka.compile`` and ``ka.kernel``: one jitted JAX program per architecture.

The Gram matrix x1 x2^T / d is a matmul; everything after it is one fused elementwise program over the
N x M pairs (per-sample variances are computed once per sample and broadcast). The same program runs on the
NumPy float64 reference (``backend="numpy"``: :mod:`kernelalg.backends._reference_kernel`).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from kernelalg.backends._checks import (check_batch_size, check_input, check_inputs,  # noqa: F401 (re-exported)
                                        check_requirements, is_tracer as _is_tracer)
from kernelalg.backends._jax import lower_program
from kernelalg.backends._pairtiles import mirror_square
from kernelalg.backends._kernel import (GETS as _GETS, Kernel, KernelFunction, merge_params,  # noqa: F401
                                        normalize_get, precision_of)
from kernelalg.backends._precision import check as check_precision, describe, not_representable_message
from kernelalg.backends._reference_kernel import ReferenceKernel, reference_kernel  # noqa: F401 (re-exported)
from kernelalg.backends._structural import JAX_ARRAYS
from kernelalg.core import _errors as E
from kernelalg.core._inputs import DENSE
from kernelalg.core._layer import Layer
from kernelalg.core._program import Assign
from kernelalg.core._tiles import run_tiles

MASK_NEEDS_IMAGES = (
    "mask_constant is supported for image and sequence networks (inputs (batch, *spatial, channels) whose "
    "first spatial layer is Conv, a pooling layer or attention) and graph networks (ka.Graphs), but this network "
    "takes '{layout}' inputs. Fix: drop mask_constant, or for sequences of different lengths use ka.Sequences "
    "with a recurrent network."
)


class CompiledKernel(KernelFunction):
    """A jitted kernel function of an architecture: ``f(x1, x2=None, params=None)``.

    Attributes:
        net: The architecture.
        symbolic: Its :class:`SymbolicKernel` with hyperparameters as symbols.
        get: The requested kernels.
        params: Default hyperparameter values by symbol name (override them per call; gradients w.r.t.
            them work through ``jax.grad``).
    """

    def __init__(self, net: Layer, get: Any = _GETS, backend: str = "jax"):
        if backend != "jax":
            raise E.KernelalgError(E.BAD_BACKEND.format(backend=backend))
        super().__init__(net, get)
        outs = self._outputs()
        self._n_out = len(self.symbolic.outputs)
        self._requires = self.symbolic.requires
        count = len(outs)
        run = lower_program(self.symbolic.program, outs + [r for r, _ in self._requires], self.symbolic.blocks,
                            flagged=count)

        # _checked also says whether every entry is finite (reduced tile by tile in the same program) and gives the
        # smallest value met of each existence condition of the duals (Dual.requires); _jitted (the kernels only)
        # serves callers that check on their own
        def kernels(x1: jax.Array, x2: jax.Array | None, p: dict) -> tuple[tuple, jax.Array, list]:
            # a kernel of x1 with itself is exactly symmetric (only its upper triangle is computed), unless it is
            # asymmetric by design (surrogate gradients)
            mirror = x2 is None and not self.symbolic.asymmetric
            vals = run(self._env(x1, x2, p), x1.shape[0] if mirror else None)
            return self._assemble(vals[:count], x1, x2), vals[-1], [jnp.min(jnp.asarray(v)) for v in vals[count:-1]]

        # dense programs on CPU compute the symmetric case from tiles, exactly; elsewhere the in-program mirror can
        # be off by an ulp (XLA recomputes fused producers per triangle), so _evaluate mirrors the outputs again
        # in a separate program, from materialised buffers
        self._exact_symmetric = (self.layout is DENSE and jax.default_backend() == "cpu"
                                 and all(isinstance(i, Assign) for i in self.symbolic.program))

        self._checked = jax.jit(kernels)
        self._jitted = jax.jit(lambda x1, x2, p: kernels(x1, x2, p)[0])
        self._amplification: dict[tuple, float | None] = {}

    def _env(self, x1: jax.Array, x2: jax.Array | None, p: Mapping[str, Any]) -> dict:
        env = self.layout.env(x1, x2, JAX_ARRAYS)
        env.update({self._param_symbols[k]: v for k, v in p.items()})
        return env

    def _assemble(self, vals: list, x1: jax.Array, x2: jax.Array | None) -> tuple:
        """The :class:`Kernel` of each output."""
        n, m = x1.shape[0], (x1 if x2 is None else x2).shape[0]
        dtype = x1.dtype
        per = 2 + len(self.names)
        kernels = []
        for b in range(self._n_out):
            v = vals[b * per:(b + 1) * per]
            fields = {"cov1": _full(v[0], (n, 1), dtype)[:, 0]}
            # the kernel of x with itself: K(x', x') is K(x, x), unless it keeps pixel axes (their layouts differ)
            same = x2 is None and jnp.ndim(v[0]) <= 2 and jnp.ndim(v[1]) <= 2
            fields["cov2"] = fields["cov1"] if same else _full(v[1], (1, m), dtype)[0]
            for name, arr in zip(self.names, v[2:]):
                fields[name] = _full(arr, (n, m), dtype)
            kernels.append(Kernel(**fields))
        return tuple(kernels)

    def __call__(self, x1: Any, x2: Any = None, params: Mapping[str, Any] | None = None,
                 batch_size: int | None = None, mask_constant: float | None = None) -> Any:
        """Evaluate the kernel.

        Args:
            x1: Inputs, shape (N, ...) as the network's input layout expects.
            x2: Second inputs (M, ...), or None for x1: then only the entries on and above the diagonal are
                computed and the kernel is exactly symmetric (unless asymmetric by design: surrogate gradients).
            params: Hyperparameter overrides by name (see ``self.params``).
            batch_size: If given, evaluate in tiles of at most batch_size x batch_size input pairs, so that
                memory stays bounded for any N, M (outputs are NumPy arrays then).
            mask_constant: If given, input positions whose every channel equals it are masked, as in
                neural-tangents (image networks; see :mod:`kernelalg.layers.spatial._masks`).

        Raises:
            NotRepresentableError: Some entry is not finite in the requested precision (the message says whether
                float64 represents the kernel).

        Warns:
            PrecisionWarning: Rounding near correlation 1 is predicted to cost more than 1e-3 relative accuracy
                (deep networks in the chaotic phase; docs/numerics.md).
        """
        if mask_constant is not None:
            if self.layout.mask is None:
                raise E.InputError(MASK_NEEDS_IMAGES.format(layout=self.layout.name))
            net, x1, x2 = self.layout.mask(self.net, x1, x2, mask_constant)
            return compile(net, self.get)(x1, x2, params, batch_size)
        x1, x2 = check_inputs(self.layout, x1, x2)
        self._warn_precision(x1, x2, self._params(params))
        if batch_size is not None:
            batch_size = check_batch_size(batch_size)
        elif self.layout.auto_batch is not None and not _is_tracer(x1):
            batch_size = self.layout.auto_batch(x1, x2)  # e.g. conv nets: bounded pixel-pair tiles
        if batch_size is not None and not _is_tracer(x1) and max(len(x1), len(x1 if x2 is None else x2)) > batch_size:
            return self._tiled(x1, x2, params, batch_size)
        return self._evaluate(x1, x2, params)

    def _evaluate(self, x1: Any, x2: Any, params: Mapping[str, Any] | None) -> Any:
        """One jitted evaluation of checked inputs; non-finite entries raise :class:`NotRepresentableError`."""
        p = self._params(params)
        with precision_of(x1, x2):
            if x2 is not None and x2.dtype != x1.dtype:
                x2 = jnp.asarray(x2, dtype=jnp.result_type(x1, x2))
                x1 = jnp.asarray(x1, dtype=x2.dtype)
            x1 = jax.tree_util.tree_map(jnp.asarray, x1)  # inputs may be pytrees (e.g. ka.Sequences)
            x2 = None if x2 is None else jax.tree_util.tree_map(jnp.asarray, x2)
            p = {k: jnp.asarray(v, dtype=x1.dtype) for k, v in p.items()}
            kernels, finite, minima = self._checked(x1, x2, p)
            if x2 is None and not (self._exact_symmetric or self.symbolic.asymmetric):
                kernels = mirror_square(kernels)
        if not any(map(_is_tracer, [finite, *minima])):  # not under jit/grad: one scalar each read back
            check_requirements(minima, self._requires)  # a divergent dual says why, before any overflow report
            if not bool(finite):
                raise E.NotRepresentableError(self._not_representable(x1, x2, params, kernels))
        out = [getattr(k, self.names[0]) if self.single else k for k in kernels]
        return out[0] if len(out) == 1 else tuple(out)

    def _warn_precision(self, x1: Any, x2: Any, p: Mapping[str, Any]) -> None:
        """Warn (:class:`PrecisionWarning`) when rounding near correlation 1 is predicted to cost more than 1e-3
        relative accuracy (dense networks with concrete inputs; :func:`kernelalg.backends._precision.check`)."""
        if self.layout is DENSE and not any(map(_is_tracer, (x1, x2, *p.values()))):
            params = {self._param_symbols[k]: float(v) for k, v in p.items()}
            check_precision(self.symbolic, x1, x2, params, self._amplification, stacklevel=4)

    def _not_representable(self, x1: Any, x2: Any, params: Mapping[str, Any] | None, kernels: tuple) -> str:
        """The error message for a kernel with non-finite entries: recomputed in float64 when float32 was asked,
        to say whether float64 represents it."""
        arrays = [getattr(k, n) for k in kernels for n in self.names + ("cov1", "cov2")]
        largest = None
        if x1.dtype != jnp.float64:
            try:
                out = self._evaluate(_as_float64(x1), _as_float64(x2), params)
            except E.NotRepresentableError:
                out = None
            if out is not None:
                outs = [out] if self.single else [getattr(k, n) for k in (out if isinstance(out, tuple) else (out,))
                                                  for n in self.names]
                largest = max(float(np.max(np.abs(np.asarray(a)))) for a in outs)
        return not_representable_message(x1.dtype, describe(self.net), arrays, largest)

    def _tiled(self, x1: Any, x2: Any, params: Mapping[str, Any] | None, bs: int) -> Any:
        """Evaluate tile by tile (:func:`kernelalg.core._tiles.run_tiles`); with x2 None only tiles j >= i are
        computed and mirrored (unless the kernel is asymmetric, e.g. a surrogate-gradient NTK: then every
        tile is computed)."""
        sym = x2 is None and not self.symbolic.asymmetric
        other = x1 if x2 is None else x2
        n, m = len(x1), len(other)
        names = (self.names[0],) if self.single else self.names
        results: dict[str, np.ndarray] = {}

        def compute(i: int, j: int) -> dict:
            out = self._evaluate(x1[i:i + bs], None if (sym and i == j) else other[j:j + bs], params)
            outs = out if isinstance(out, tuple) and self._n_out > 1 else (out,)
            blocks = {}
            for k, o in enumerate(outs):
                for name in names:
                    blocks[f"{k}.{name}"] = getattr(o, name) if not self.single else o
                if not self.single:
                    if j == (i if sym else 0):
                        _put(results, f"{k}.cov1", (n,), i, np.asarray(o.cov1))
                    if i == 0 or sym:
                        _put(results, f"{k}.cov2", (m,), j, np.asarray(o.cov2))
            return blocks

        def write(key: str, i: int, j: int, blk: np.ndarray) -> None:
            if key not in results:
                results[key] = np.empty((n, m) + blk.shape[2:], blk.dtype)
            results[key][i:i + blk.shape[0], j:j + blk.shape[1]] = blk

        run_tiles(compute, n, m, bs, sym, write)
        outs = []
        for k in range(self._n_out):
            if self.single:
                outs.append(results[f"{k}.{self.names[0]}"])
            else:
                outs.append(Kernel(**{nm: results[f"{k}.{nm}"] for nm in self.names},
                                   cov1=results[f"{k}.cov1"], cov2=results[f"{k}.cov2"]))
        return outs[0] if len(outs) == 1 else tuple(outs)


def _put(results: dict, key: str, shape: tuple, start: int, vals: np.ndarray) -> None:
    if key not in results:
        results[key] = np.empty(shape, vals.dtype)
    results[key][start:start + len(vals)] = vals


def _as_float64(x: Any) -> Any:
    def cast(a: Any) -> np.ndarray:  # integer leaves (edge lists of ka.Graphs) stay integer
        a = np.asarray(a)
        return a if a.dtype.kind in "iu" else np.asarray(a, np.float64)
    return None if x is None else jax.tree_util.tree_map(cast, x)


def _full(arr: Any, lead: tuple[int, int], dtype: Any) -> jax.Array:
    """Broadcast a program output to its full shape: the batch axes ``lead`` plus its own trailing axes."""
    arr = jnp.asarray(arr, dtype)
    return jnp.broadcast_to(arr, lead + arr.shape[2:] if arr.ndim > 2 else lead)


_CACHE: dict[tuple[int, Any], tuple[Layer, Any]] = {}


def compile(net: Layer, get: Any = _GETS, backend: str = "jax") -> Any:  # noqa: A001
    """Compile ``net``'s kernel to a function ``f(x1, x2=None, params=None)``.

    Args:
        net: Architecture expression.
        get: "nngp", "ntk" (the call returns that array) or a tuple of them (the call returns a
            :class:`Kernel`).
        backend: "jax" (one jitted JAX function, a :class:`CompiledKernel`) or "numpy" (the NumPy float64
            reference, a :class:`ReferenceKernel`: slow, for testing; mpmath lives in :func:`reference_kernel`).
    """
    if backend not in ("jax", "numpy"):
        raise E.KernelalgError(E.BAD_BACKEND.format(backend=backend))
    normalize_get(get)  # a clear error for get=None and other non-iterables, before the cache key
    key = (id(net), get if isinstance(get, str) else tuple(get), backend)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is net:
        return hit[1]
    f = CompiledKernel(net, get, backend) if backend == "jax" else ReferenceKernel(net, get)
    _CACHE[key] = (net, f)
    return f


def kernel(net: Layer, x1: Any, x2: Any = None, get: Any = _GETS, params: Mapping[str, Any] | None = None,
           batch_size: int | None = None, mask_constant: float | None = None) -> Any:
    """Exact infinite-width kernel(s) of ``net`` between the rows of ``x1`` and ``x2`` (x2=None: x1).

    Args:
        net: Architecture expression.
        x1: Inputs (N, ...).
        x2: Inputs (M, ...) or None.
        get: "nngp", "ntk" or a tuple of them.
        params: Hyperparameter overrides by symbol name.
        batch_size: Tile size in input rows for bounded memory (None: one block).
        mask_constant: Mask input positions whose every channel equals it (neural-tangents' ``mask_constant``;
            image networks).

    Returns:
        A :class:`Kernel` (``get`` a tuple) or an array (``get`` a string), of shape (N, M).
    """
    return compile(net, get)(x1, x2, params, batch_size, mask_constant)


