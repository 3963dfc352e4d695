"""kernelalg.core: the ground floor -- what every other package builds on, importing nothing above it.

* Kernel state and program: :class:`KernelState` (cov1, cov2, nngp, ntk of one branch, per input pair),
  :class:`Builder` (the straight-line program with per-layer CSE), instructions :class:`Assign` / :class:`Op`,
  input symbols :data:`Q1`, :data:`Q2`, :data:`C`, :data:`D`.
* The layer record :class:`Layer` (a small record of pure functions plus its declared role, width argument,
  spatial needs, asymmetry and input layout), :func:`serial`, :func:`parallel`, :func:`build`.
* Closed-form duals (:mod:`kernelalg.core._duals`, each proven in ``proofs/``), symbolic kernels
  (:func:`symbolic`), input layouts, the one tiler (:func:`run_tiles`), and the error types.
"""

from kernelalg.core._errors import InputError, InternalError, KernelalgError, LayerOrderError, LoweringError
from kernelalg.core._inputs import DENSE, InputLayout, layout_of
from kernelalg.core._layer import ROLES, Layer, Spatial, as_layer, build, parallel, serial
from kernelalg.core._program import C, D, Q1, Q2, Assign, Builder, KernelState, Op
from kernelalg.core._symbolic import SymbolicKernel, symbolic, trace
from kernelalg.core._tiles import mirror_block, run_tiles, tile_offsets

__all__ = [
    "Assign", "Builder", "C", "D", "DENSE", "InputError", "InputLayout", "InternalError", "KernelState",
    "KernelalgError", "Layer", "LayerOrderError", "LoweringError", "Op", "Q1", "Q2", "ROLES", "Spatial",
    "SymbolicKernel", "as_layer", "build", "layout_of", "mirror_block", "parallel", "run_tiles", "serial",
    "symbolic", "tile_offsets", "trace",
]
