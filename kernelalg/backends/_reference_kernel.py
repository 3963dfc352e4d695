"""The NumPy float64 (and, for dense networks, mpmath) reference evaluation of any network's kernel."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from kernelalg.backends._checks import check_input, check_inputs
from kernelalg.backends._kernel import Kernel, KernelFunction, normalize_get
from kernelalg.backends._reference import NUMPY_TABLE, evaluate_program, mpmath_dense
from kernelalg.backends._structural import NUMPY_ARRAYS
from kernelalg.core import _errors as E
from kernelalg.core._inputs import DENSE, layout_of
from kernelalg.core._layer import Layer, as_layer
from kernelalg.core._program import Op
from kernelalg.core._symbolic import trace


class ReferenceKernel(KernelFunction):
    """The kernel of an architecture on the NumPy float64 reference backend: ``f(x1, x2=None, params=None)``.

    Runs the same program as :class:`CompiledKernel` (elementwise sympy through the NumPy table, structural
    ops -- stencils, pooling, readouts, time recursions -- through their NumPy implementations), in float64
    whatever the input dtype, without jit or tiling. Slow; meant for testing the JAX path.

    """

    def __call__(self, x1: Any, x2: Any = None, params: Mapping[str, Any] | None = None,
                 batch_size: int | None = None) -> Any:
        """Evaluate the kernel (``batch_size`` is accepted for symmetry with :class:`CompiledKernel` and ignored:
        the reference evaluates one block)."""
        x1, x2 = check_inputs(self.layout, x1, x2)
        x1, x2 = (None if x is None else jax.tree_util.tree_map(_float64, x) for x in (x1, x2))
        p = self._params(params)
        env = self.layout.env(x1, x2, NUMPY_ARRAYS)
        env.update({self._param_symbols[k]: float(v) for k, v in p.items()})
        vals = evaluate_program(self.symbolic.program, self._outputs(), env, NUMPY_TABLE)
        n, m = len(x1), len(x1 if x2 is None else x2)
        per, kernels = 2 + len(self.names), []
        for b in range(len(self.symbolic.outputs)):
            v = [np.asarray(a, np.float64) for a in vals[b * per:(b + 1) * per]]
            fields = {"cov1": _np_full(v[0], (n, 1))[:, 0], "cov2": _np_full(v[1], (1, m))[0]}
            fields.update({name: _np_full(arr, (n, m)) for name, arr in zip(self.names, v[2:])})
            kernels.append(getattr(Kernel(**fields), self.names[0]) if self.single else Kernel(**fields))
        return kernels[0] if len(kernels) == 1 else tuple(kernels)


def _float64(a: Any) -> np.ndarray:
    """A float leaf of an input in float64; integer leaves (edge lists of ka.Graphs) unchanged."""
    a = np.asarray(a)
    return a if a.dtype.kind in "iu" else np.asarray(a, np.float64)


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
        return ReferenceKernel(net, get)(x1, x2)
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
