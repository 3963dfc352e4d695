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

MASK_NEEDS_LAYOUT = (
    "mask_constant is supported for image networks (inputs (batch, *spatial, channels)) and graph networks "
    "(ka.Graphs), but this network takes '{layout}' inputs. Fix: drop mask_constant, or for sequences of "
    "different lengths use ka.Sequences with a recurrent network."
)
MASK_NO_MPMATH = (
    "reference_kernel(..., dps={dps}, mask_constant=...): masked inputs exist for image and graph networks only, "
    "whose structural ops (convolutions, pooling, readouts, aggregation) have no mpmath implementation. Fix: use "
    "dps=None (the NumPy float64 reference) with mask_constant."
)


class ReferenceKernel(KernelFunction):
    """The kernel of an architecture on the NumPy float64 reference backend: ``f(x1, x2=None, params=None)``.

    Runs the same program as :class:`CompiledKernel` (elementwise sympy through the NumPy table, structural
    ops -- stencils, pooling, readouts, time recursions -- through their NumPy implementations), in float64
    whatever the input dtype, without jit or tiling. Slow; meant for testing the JAX path.

    """

    def __call__(self, x1: Any, x2: Any = None, params: Mapping[str, Any] | None = None,
                 batch_size: int | None = None, mask_constant: float | None = None) -> Any:
        """Evaluate the kernel (``batch_size`` is accepted for symmetry with :class:`CompiledKernel` and ignored:
        the reference evaluates one block).

        ``mask_constant``: as :class:`CompiledKernel`'s (neural-tangents' ``mask_constant``: positions whose every
        channel equals it are masked; image networks and ``ka.Graphs``), evaluated by the same layers' NumPy ops.
        """
        if mask_constant is not None:
            masked, x1, x2 = mask_inputs(self.net, self.layout, x1, x2, mask_constant)
            return _masked_kernel(masked, self.get)(x1, x2, params)
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


def mask_inputs(net: Layer, layout: Any, x1: Any, x2: Any, constant: Any) -> tuple:
    """(masked network, masked x1, masked x2) through the layout's ``mask`` hook, or an error naming the fix
    when the inputs have no positions to mask."""
    if layout.mask is None:
        raise E.InputError(MASK_NEEDS_LAYOUT.format(layout=layout.name))
    return layout.mask(net, x1, x2, constant)


#: Reference kernels of masked networks by (network object, get): the masked network is one object per network.
_MASKED: dict[tuple[int, Any], tuple[Layer, "ReferenceKernel"]] = {}


def _masked_kernel(net: Layer, get: Any) -> "ReferenceKernel":
    key = (id(net), get if isinstance(get, str) else tuple(get))
    hit = _MASKED.get(key)
    if hit is None or hit[0] is not net:
        hit = _MASKED[key] = (net, ReferenceKernel(net, get))
    return hit[1]


def _float64(a: Any) -> np.ndarray:
    """A float leaf of an input in float64; integer leaves (edge lists of ka.Graphs) unchanged."""
    a = np.asarray(a)
    return a if a.dtype.kind in "iu" else np.asarray(a, np.float64)


def _np_full(arr: np.ndarray, lead: tuple[int, int]) -> np.ndarray:
    """A program output broadcast to the batch axes ``lead`` plus its own trailing axes (a copy)."""
    return np.broadcast_to(arr, lead + arr.shape[2:] if arr.ndim > 2 else lead).copy()


def reference_kernel(net: Layer, x1: Any, x2: Any = None, get: Any = "ntk", dps: int | None = None,
                     mask_constant: float | None = None) -> Any:
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
        mask_constant: Mask input positions whose every channel equals it (neural-tangents' ``mask_constant``;
            image networks and ``ka.Graphs``, NumPy float64 only), as ``ka.kernel(..., mask_constant=c)``.

    Returns:
        The (N, M) kernel (with trailing pixel axes for image networks without a readout).

    Raises:
        LoweringError: ``dps`` given for a network with structural ops (conv, pooling, recurrent), or with
            ``mask_constant``.
        InputError: ``mask_constant`` for inputs without positions (dense, sequences).
    """
    if dps is None:
        return ReferenceKernel(net, get)(x1, x2, mask_constant=mask_constant)
    if mask_constant is not None:
        raise E.LoweringError(MASK_NO_MPMATH.format(dps=dps))
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
