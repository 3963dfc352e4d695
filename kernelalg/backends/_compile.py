"""``ka.compile`` and ``ka.kernel``: one jitted JAX program per architecture.

The Gram matrix x1 x2^T / d is a matmul; everything after it is one fused elementwise program over the
N x M pairs (per-sample variances are computed once per sample and broadcast).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from kernelalg.core import _errors as E
from kernelalg.core._layer import Layer, as_layer
from kernelalg.core._inputs import layout_of
from kernelalg.core._program import C, D, Q1, Q2
from kernelalg.core._symbolic import SymbolicKernel, trace
from kernelalg.backends._jax import lower_program
import mpmath
from kernelalg.backends._reference import MPMATH_TABLE, NUMPY_TABLE, evaluate_program
from kernelalg.backends._checks import (check_batch_size, check_input, check_inputs, check_outputs,
                                        check_params, check_requirements, is_tracer as _is_tracer)

_GETS = ("nngp", "ntk")


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Kernel:
    """Kernel arrays (neural-tangents' field names).

    Attributes:
        nngp: NNGP Gram matrix, shape (N, M), or None if not requested.
        ntk: NTK Gram matrix, shape (N, M), or None if not requested.
        cov1: K(x, x) per row of x1, shape (N,).
        cov2: K(x', x') per row of x2, shape (M,).
    """

    nngp: Any = None
    ntk: Any = None
    cov1: Any = None
    cov2: Any = None


def normalize_get(get: Any) -> tuple[tuple[str, ...], bool]:
    """Return (requested names, whether a single array is returned)."""
    if isinstance(get, str):
        if get not in _GETS:
            raise E.KernelalgError(E.BAD_GET.format(get=get))
        return (get,), True
    try:
        names = tuple(get)
    except TypeError:
        raise E.KernelalgError(E.BAD_GET.format(get=get)) from None
    if not names or any(n not in _GETS for n in names):
        raise E.KernelalgError(E.BAD_GET.format(get=get))
    return names, False


@contextlib.contextmanager
def precision_of(*arrays: Any) -> Iterator[None]:
    """Run in float64 when any input is float64 (JAX's x64 mode, locally), else as configured."""
    wants64 = any(getattr(a, "dtype", None) == np.float64 for a in arrays if a is not None)
    if wants64 and not jax.config.jax_enable_x64:
        enable = getattr(jax, "enable_x64", None)
        if enable is None:  # older JAX
            from jax.experimental import enable_x64 as enable  # type: ignore
        with enable(True):
            yield
    else:
        yield


class CompiledKernel:
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
        self.net = as_layer(net)
        self.names, self.single = normalize_get(get)
        self.get = get
        self.layout = layout_of(self.net)
        self.symbolic: SymbolicKernel = trace(self.net, keep_symbols=True)
        self.params = self.symbolic.param_values
        self._param_symbols = {s.name: s for s in self.symbolic.params}
        self._stds = {s.name for s in self.symbolic.params if s.is_positive}
        outs: list[sp.Expr] = []
        for st in self.symbolic.outputs:
            outs += [st.cov1, st.cov2] + [st.nngp if n == "nngp" else st.ntk for n in self.names]
        self._n_out = len(self.symbolic.outputs)
        self._requires = self.symbolic.requires
        run = lower_program(self.symbolic.program, outs + [r for r, _ in self._requires], self.symbolic.blocks)
        #: (kernels, minima of the conditions, all finite) per call; ``_jitted`` (kernels only) serves the tile
        #: evaluators.
        self._checked = jax.jit(lambda x1, x2, p: self._finish(run(self._env(x1, x2, p)), x1, x2))
        self._jitted = jax.jit(lambda x1, x2, p: self._finish(run(self._env(x1, x2, p)), x1, x2)[0])

    def _env(self, x1: jax.Array, x2: jax.Array | None, p: Mapping[str, Any]) -> dict:
        env = self.layout.env(x1, x2)
        env.update({self._param_symbols[k]: v for k, v in p.items()})
        return env

    def _finish(self, vals: list, x1: jax.Array, x2: jax.Array | None) -> tuple:
        k = len(vals) - len(self._requires)
        kernels = self._assemble(vals[:k], x1, x2)
        finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(kernels)]))
        return kernels, [jnp.min(jnp.asarray(v)) for v in vals[k:]], finite

    def _assemble(self, vals: list, x1: jax.Array, x2: jax.Array | None) -> tuple:
        n, m = x1.shape[0], (x1 if x2 is None else x2).shape[0]
        dtype = x1.dtype
        per = 2 + len(self.names)
        kernels = []
        for b in range(self._n_out):
            v = vals[b * per:(b + 1) * per]
            fields = {"cov1": _full(v[0], (n, 1), dtype)[:, 0], "cov2": _full(v[1], (1, m), dtype)[0]}
            for name, arr in zip(self.names, v[2:]):
                fields[name] = _full(arr, (n, m), dtype)
            kernels.append(Kernel(**fields))
        return tuple(kernels)

    def _params(self, params: Mapping[str, Any] | None) -> dict:
        p = dict(self.params)
        if params:
            unknown = set(params) - set(p)
            if unknown:
                raise E.KernelalgError(E.UNKNOWN_PARAM.format(names=sorted(unknown), known=sorted(p)))
            check_params(params, self._stds)
            p.update(params)
        return p

    def __call__(self, x1: Any, x2: Any = None, params: Mapping[str, Any] | None = None,
                 batch_size: int | None = None) -> Any:
        """Evaluate the kernel.

        Args:
            x1: Inputs, shape (N, ...) as the network's input layout expects.
            x2: Second inputs (M, ...), or None for x1 (then only the upper block triangle is computed
                when tiling).
            params: Hyperparameter overrides by name (see ``self.params``).
            batch_size: If given, evaluate in tiles of at most batch_size x batch_size input pairs, so that
                memory stays bounded for any N, M (outputs are NumPy arrays then).
        """
        x1, x2 = check_inputs(self.layout, x1, x2)
        if batch_size is not None:
            batch_size = check_batch_size(batch_size)
        elif self.layout.auto_batch is not None and not _is_tracer(x1):
            batch_size = self.layout.auto_batch(x1, x2)  # e.g. conv nets: bounded pixel-pair tiles
        if batch_size is not None and not _is_tracer(x1) and max(len(x1), len(x1 if x2 is None else x2)) > batch_size:
            return self._tiled(x1, x2, params, int(batch_size))
        p = self._params(params)
        with precision_of(x1, x2):
            if x2 is not None and x2.dtype != x1.dtype:
                x2 = jnp.asarray(x2, dtype=jnp.result_type(x1, x2))
                x1 = jnp.asarray(x1, dtype=x2.dtype)
            x1 = jax.tree_util.tree_map(jnp.asarray, x1)  # inputs may be pytrees (e.g. ka.Sequences)
            x2 = None if x2 is None else jax.tree_util.tree_map(jnp.asarray, x2)
            p = {k: jnp.asarray(v, dtype=x1.dtype) for k, v in p.items()}
            kernels, minima, finite = self._checked(x1, x2, p)
        if not any(map(_is_tracer, [finite, *minima, *jax.tree_util.tree_leaves(kernels)])):  # not under jit/grad
            # one scalar read back; the arrays only when something failed
            check_requirements(minima, self._requires)
            if not bool(finite):
                for k in kernels:
                    check_outputs({n: getattr(k, n) for n in self.names + ("cov1", "cov2")}, x1.dtype)
        out = [getattr(k, self.names[0]) if self.single else k for k in kernels]
        return out[0] if len(out) == 1 else tuple(out)

    def _tiled(self, x1: Any, x2: Any, params: Mapping[str, Any] | None, bs: int) -> Any:
        """Tile over blocks of rows; with x2 None only blocks j >= i are computed and mirrored
        (unless the kernel is asymmetric, e.g. a surrogate-gradient NTK: then every block is computed)."""
        sym = x2 is None and not self.symbolic.asymmetric
        x2 = x1 if (x2 is None and not sym) else x2
        other = x1 if sym else x2
        n, m = len(x1), len(other)
        results: dict[str, np.ndarray] = {}
        for i in range(0, n, bs):
            for j in range(i if sym else 0, m, bs):
                a, b = x1[i:i + bs], other[j:j + bs]
                out = self(a, None if (sym and i == j) else b, params)
                outs = out if isinstance(out, tuple) and self._n_out > 1 else (out,)
                for k, o in enumerate(outs):
                    for name in (self.names if not self.single else (self.names[0],)):
                        blk = np.asarray(getattr(o, name) if not self.single else o)
                        key = f"{k}.{name}"
                        if key not in results:
                            results[key] = np.empty((n, m) + blk.shape[2:], blk.dtype)
                        results[key][i:i + bs, j:j + bs] = blk
                        if sym and j > i:
                            results[key][j:j + bs, i:i + bs] = np.swapaxes(blk, 0, 1)
                    if not self.single:
                        results.setdefault(f"{k}.cov1", np.empty(n, np.asarray(o.cov1).dtype))
                        results.setdefault(f"{k}.cov2", np.empty(m, np.asarray(o.cov2).dtype))
                        if j == (i if sym else 0):
                            results[f"{k}.cov1"][i:i + bs] = np.asarray(o.cov1)
                        if i == 0 or sym:
                            results[f"{k}.cov2"][j:j + bs] = np.asarray(o.cov2)
        outs = []
        for k in range(self._n_out):
            if self.single:
                outs.append(results[f"{k}.{self.names[0]}"])
            else:
                outs.append(Kernel(**{nm: results[f"{k}.{nm}"] for nm in self.names},
                                   cov1=results[f"{k}.cov1"], cov2=results[f"{k}.cov2"]))
        return outs[0] if len(outs) == 1 else tuple(outs)

    def __repr__(self) -> str:
        return f"CompiledKernel({self.net!r}, get={self.get!r})"


def _full(arr: Any, lead: tuple[int, int], dtype: Any) -> jax.Array:
    """Broadcast a program output to its full shape: the batch axes ``lead`` plus its own trailing axes."""
    arr = jnp.asarray(arr, dtype)
    return jnp.broadcast_to(arr, lead + arr.shape[2:] if arr.ndim > 2 else lead)


_CACHE: dict[tuple[int, Any], tuple[Layer, CompiledKernel]] = {}


def compile(net: Layer, get: Any = _GETS, backend: str = "jax") -> CompiledKernel:  # noqa: A001
    """Compile ``net``'s kernel to one jitted JAX function ``f(x1, x2=None, params=None)``.

    Args:
        net: Architecture expression.
        get: "nngp", "ntk" (the call returns that array) or a tuple of them (the call returns a
            :class:`Kernel`).
        backend: "jax" (the NumPy/mpmath reference lives in :func:`kernelalg.reference_kernel`).
    """
    normalize_get(get)  # a clear error for get=None and other non-iterables, before the cache key
    key = (id(net), get if isinstance(get, str) else tuple(get), backend)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is net:
        return hit[1]
    f = CompiledKernel(net, get, backend)
    _CACHE[key] = (net, f)
    return f


def kernel(net: Layer, x1: Any, x2: Any = None, get: Any = _GETS, params: Mapping[str, Any] | None = None,
           batch_size: int | None = None) -> Any:
    """Exact infinite-width kernel(s) of ``net`` between the rows of ``x1`` and ``x2`` (x2=None: x1).

    Args:
        net: Architecture expression.
        x1: Inputs (N, ...).
        x2: Inputs (M, ...) or None.
        get: "nngp", "ntk" or a tuple of them.
        params: Hyperparameter overrides by symbol name.
        batch_size: Tile size in input rows for bounded memory (None: one block).

    Returns:
        A :class:`Kernel` (``get`` a tuple) or an array (``get`` a string), of shape (N, M).
    """
    return compile(net, get)(x1, x2, params, batch_size)


def reference_kernel(net: Layer, x1: Any, x2: Any = None, get: str = "ntk", dps: int | None = None) -> np.ndarray:
    """Reference evaluation: NumPy float64 (``dps=None``) or mpmath with ``dps`` digits, pair by pair.

    Slow; meant for testing the JAX lowering.
    """

    if not isinstance(get, str) or get not in _GETS:
        raise E.KernelalgError(E.BAD_GET.format(get=get) + " reference_kernel returns one kernel: 'nngp' or 'ntk'.")
    x1 = np.asarray(check_input("x1", x1), dtype=np.float64)
    x2 = x1 if x2 is None else np.asarray(check_input("x2", x2), dtype=np.float64)
    if x1.shape[1:] != x2.shape[1:]:
        raise E.InputError(E.FEATURE_MISMATCH.format(d1=x1.shape[1:], d2=x2.shape[1:]))
    sk = trace(as_layer(net), keep_symbols=False)
    st = sk.outputs[0]
    out_expr = st.nngp if get == "nngp" else st.ntk
    d = x1.shape[-1]
    if dps is None:
        env = {Q1: (x1 * x1).sum(-1)[:, None] / d, Q2: (x2 * x2).sum(-1)[None, :] / d, C: x1 @ x2.T / d, D: float(d)}
        with np.errstate(all="ignore"):  # reported by the checks below
            val, *conds = evaluate_program(sk.program, [out_expr] + [r for r, _ in sk.requires], env, NUMPY_TABLE)
        check_requirements([np.min(c) for c in conds], sk.requires)
        out = np.broadcast_to(np.asarray(val, dtype=np.float64), (len(x1), len(x2))).copy()
        check_outputs({get: out}, np.float64)
        return out
    out = np.empty((len(x1), len(x2)))
    with mpmath.workdps(dps):
        a = [[mpmath.mpf(float(v)) for v in row] for row in x1]
        b = [[mpmath.mpf(float(v)) for v in row] for row in x2]
        for i, u in enumerate(a):
            for j, v in enumerate(b):
                env = {Q1: mpmath.fsum(t * t for t in u) / d, Q2: mpmath.fsum(t * t for t in v) / d,
                       C: mpmath.fsum(s * t for s, t in zip(u, v)) / d, D: mpmath.mpf(d)}
                (val,) = evaluate_program(sk.program, [out_expr], env, MPMATH_TABLE)
                out[i, j] = float(val)
    check_outputs({get: out}, np.float64)
    return out
