"""``ka.compile`` and ``ka.kernel``: one jitted JAX program per architecture; ``ka.reference_kernel``.

The Gram matrix x1 x2^T / d is a matmul; everything after it is one fused elementwise program over the
N x M pairs (per-sample variances are computed once per sample and broadcast). The same program runs on the
NumPy float64 reference (``backend="numpy"``, :func:`reference_kernel`) for any network, and on mpmath for
dense networks.
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
from kernelalg.core._inputs import DENSE, layout_of
from kernelalg.core._program import Op
from kernelalg.core._symbolic import SymbolicKernel, trace
from kernelalg.core._tiles import run_tiles
from kernelalg.backends._jax import lower_program
from kernelalg.backends._reference import NUMPY_TABLE, evaluate_program, mpmath_dense
from kernelalg.backends._structural import JAX_ARRAYS, NUMPY_ARRAYS
from kernelalg.backends._precision import check as check_precision, describe, not_representable_message
from kernelalg.backends._checks import (check_batch_size, check_input, check_inputs, check_params,
                                        check_requirements, is_tracer as _is_tracer)

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


def merge_params(defaults: Mapping[str, float], params: Mapping[str, Any] | None) -> dict:
    """The hyperparameter values of one call: ``defaults`` overridden by ``params`` (names must exist)."""
    p = dict(defaults)
    if params:
        unknown = set(params) - set(p)
        if unknown:
            raise E.KernelalgError(E.UNKNOWN_PARAM.format(names=sorted(unknown), known=sorted(p)))
        p.update(params)
    return p


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
        count = len(outs)

        # _checked also says whether every entry is finite (a reduction in the same program) and gives the
        # smallest value met of each existence condition of the duals (Dual.requires); _jitted (the kernels only)
        # serves callers that check on their own
        def kernels(x1: jax.Array, x2: jax.Array | None, p: dict) -> tuple[tuple, jax.Array, list]:
            # a kernel of x1 with itself is exactly symmetric (only its upper triangle is computed), unless it is
            # asymmetric by design (surrogate gradients)
            mirror = x2 is None and not self.symbolic.asymmetric
            vals = run(self._env(x1, x2, p), x1.shape[0] if mirror else None)
            out, finite = self._assemble(vals[:count], x1, x2)
            return out, finite, [jnp.min(jnp.asarray(v)) for v in vals[count:]]

        self._checked = jax.jit(kernels)
        self._jitted = jax.jit(lambda x1, x2, p: kernels(x1, x2, p)[0])
        self._amplification: dict[tuple, float | None] = {}

    def _env(self, x1: jax.Array, x2: jax.Array | None, p: Mapping[str, Any]) -> dict:
        env = self.layout.env(x1, x2, JAX_ARRAYS)
        env.update({self._param_symbols[k]: v for k, v in p.items()})
        return env

    def _assemble(self, vals: list, x1: jax.Array, x2: jax.Array | None) -> tuple[tuple, jax.Array]:
        """The :class:`Kernel` of each output, and whether every entry is finite."""
        n, m = x1.shape[0], (x1 if x2 is None else x2).shape[0]
        dtype = x1.dtype
        per = 2 + len(self.names)
        kernels, finite = [], []
        for b in range(self._n_out):
            v = vals[b * per:(b + 1) * per]
            fields = {"cov1": _full(v[0], (n, 1), dtype)[:, 0]}
            # the kernel of x with itself: K(x', x') is K(x, x), unless it keeps pixel axes (their layouts differ)
            same = x2 is None and jnp.ndim(v[0]) <= 2 and jnp.ndim(v[1]) <= 2
            fields["cov2"] = fields["cov1"] if same else _full(v[1], (1, m), dtype)[0]
            for name, arr in zip(self.names, v[2:]):
                fields[name] = _full(arr, (n, m), dtype)
            kernels.append(Kernel(**fields))
            finite += [jnp.all(jnp.isfinite(a)) for a in fields.values()]
        return tuple(kernels), jnp.all(jnp.stack(finite))

    def _params(self, params: Mapping[str, Any] | None) -> dict:
        if params:
            check_params(params, self._stds)
        return merge_params(self.params, params)

    def __call__(self, x1: Any, x2: Any = None, params: Mapping[str, Any] | None = None,
                 batch_size: int | None = None) -> Any:
        """Evaluate the kernel.

        Args:
            x1: Inputs, shape (N, ...) as the network's input layout expects.
            x2: Second inputs (M, ...), or None for x1: then only the entries on and above the diagonal are
                computed and the kernel is exactly symmetric (unless asymmetric by design: surrogate gradients).
            params: Hyperparameter overrides by name (see ``self.params``).
            batch_size: If given, evaluate in tiles of at most batch_size x batch_size input pairs, so that
                memory stays bounded for any N, M (outputs are NumPy arrays then).

        Raises:
            NotRepresentableError: Some entry is not finite in the requested precision (the message says whether
                float64 represents the kernel).

        Warns:
            PrecisionWarning: Rounding near correlation 1 is predicted to cost more than 1e-3 relative accuracy
                (deep networks in the chaotic phase; docs/numerics.md).
        """
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

    def __repr__(self) -> str:
        return f"CompiledKernel({self.net!r}, get={self.get!r})"


def _put(results: dict, key: str, shape: tuple, start: int, vals: np.ndarray) -> None:
    if key not in results:
        results[key] = np.empty(shape, vals.dtype)
    results[key][start:start + len(vals)] = vals


def _as_float64(x: Any) -> Any:
    return None if x is None else jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), x)


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


class ReferenceKernel:
    """The kernel of an architecture on the NumPy float64 reference backend: ``f(x1, x2=None, params=None)``.

    Runs the same program as :class:`CompiledKernel` (elementwise sympy through the NumPy table, structural
    ops -- stencils, pooling, readouts, time recursions -- through their NumPy implementations), in float64
    whatever the input dtype, without jit or tiling. Slow; meant for testing the JAX path.

    Attributes:
        net: The architecture.
        symbolic: Its :class:`SymbolicKernel` with hyperparameters as symbols.
        get: The requested kernels.
        params: Default hyperparameter values by symbol name.
    """

    def __init__(self, net: Layer, get: Any = _GETS):
        self.net = as_layer(net)
        self.names, self.single = normalize_get(get)
        self.get = get
        self.layout = layout_of(self.net)
        self.symbolic: SymbolicKernel = trace(self.net, keep_symbols=True)
        self.params = self.symbolic.param_values
        self._param_symbols = {s.name: s for s in self.symbolic.params}

    def __call__(self, x1: Any, x2: Any = None, params: Mapping[str, Any] | None = None,
                 batch_size: int | None = None) -> Any:
        """Evaluate the kernel (``batch_size`` is accepted for symmetry with :class:`CompiledKernel` and ignored:
        the reference evaluates one block)."""
        x1, x2 = check_inputs(self.layout, x1, x2)
        x1, x2 = (None if x is None else jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), x)
                  for x in (x1, x2))
        p = merge_params(self.params, params)
        env = self.layout.env(x1, x2, NUMPY_ARRAYS)
        env.update({self._param_symbols[k]: float(v) for k, v in p.items()})
        outs: list = []
        for st in self.symbolic.outputs:
            outs += [st.cov1, st.cov2] + [st.nngp if n == "nngp" else st.ntk for n in self.names]
        vals = evaluate_program(self.symbolic.program, outs, env, NUMPY_TABLE)
        n, m = len(x1), len(x1 if x2 is None else x2)
        per, kernels = 2 + len(self.names), []
        for b in range(len(self.symbolic.outputs)):
            v = [np.asarray(a, np.float64) for a in vals[b * per:(b + 1) * per]]
            fields = {"cov1": _np_full(v[0], (n, 1))[:, 0], "cov2": _np_full(v[1], (1, m))[0]}
            fields.update({name: _np_full(arr, (n, m)) for name, arr in zip(self.names, v[2:])})
            kernels.append(getattr(Kernel(**fields), self.names[0]) if self.single else Kernel(**fields))
        return kernels[0] if len(kernels) == 1 else tuple(kernels)

    def __repr__(self) -> str:
        return f"ReferenceKernel({self.net!r}, get={self.get!r})"


def _np_full(arr: np.ndarray, lead: tuple[int, int]) -> np.ndarray:
    """A program output broadcast to the batch axes ``lead`` plus its own trailing axes (a copy)."""
    return np.broadcast_to(arr, lead + arr.shape[2:] if arr.ndim > 2 else lead).copy()


def reference_kernel(net: Layer, x1: Any, x2: Any = None, get: Any = "ntk", dps: int | None = None) -> Any:
    """Reference evaluation of ``net``'s kernel: NumPy float64 (``dps=None``) or mpmath with ``dps`` digits.

    NumPy evaluates any network (dense, conv/pooling/readouts, recurrent; :class:`ReferenceKernel`); mpmath
    evaluates dense networks pair by pair and refuses others (their structural ops have no mpmath
    implementation). Slow; meant for testing the JAX path.

    Args:
        net: Architecture expression.
        x1: Inputs (N, ...) as the network's input layout expects.
        x2: Inputs (M, ...) or None (x1).
        get: "nngp", "ntk" (an array) or, with ``dps=None``, a tuple of them (a :class:`Kernel`).
        dps: None for NumPy float64, else the mpmath working precision in decimal digits.

    Returns:
        The (N, M) kernel (with trailing pixel axes for image networks without a readout).

    Raises:
        LoweringError: ``dps`` given for a network with structural ops (conv, pooling, recurrent).
    """
    if dps is None:
        return compile(net, get, backend="numpy")(x1, x2)
    net = as_layer(net)
    names, single = normalize_get(get)
    if not single:
        raise E.KernelalgError(E.BAD_GET.format(get=get) + " With dps=..., get must be 'nngp' or 'ntk'.")
    sk = trace(net, keep_symbols=False)
    layout = layout_of(net)
    ops = sorted({ins.name for ins in sk.program if isinstance(ins, Op) and "mpmath" not in ins.impls})
    if ops or layout is not DENSE:
        raise E.LoweringError(E.MPMATH_DENSE_ONLY.format(dps=dps, layout=layout.name, ops=ops or "none"))
    x1 = np.asarray(check_input("x1", x1), dtype=np.float64)
    x2 = x1 if x2 is None else np.asarray(check_input("x2", x2), dtype=np.float64)
    st = sk.outputs[0]
    return mpmath_dense(sk.program, st.nngp if names[0] == "nngp" else st.ntk, x1, x2, dps)
