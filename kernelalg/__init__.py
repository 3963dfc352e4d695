"""kernelalg: exact infinite-width kernels (NNGP and NTK) of neural networks.

Define an architecture as an expression, get its kernel as a closed form (sympy), evaluate it fast
(JAX), and verify the theory numerically.

Example:
    >>> import kernelalg as ka
    >>> net = ka.Dense(1.5, 0.05) >> ka.Relu() >> ka.Dense(1.5, 0.05)
    >>> ka.symbolic(net).nngp  # doctest: +SKIP
"""

from kernelalg.layers._activations import (ABRelu, Abs, Cos, Erf, Exp, Gaussian, Gelu, LeakyRelu, Monomial, Polynomial,
                           Rbf, RectifiedMonomial, Relu, Sign, Sin, activation)
from kernelalg.backends._compile import CompiledKernel, compile, kernel
from kernelalg.backends._kernel import Kernel
from kernelalg.backends._reference_kernel import ReferenceKernel, reference_kernel
from kernelalg.layers._dense import Dense, FanInConcat, FanInProd, FanInSum, FanOut, Identity
from kernelalg.layers._elementwise import Elementwise
from kernelalg.core._errors import (DivergentKernelError, InputError, KernelalgError, LayerOrderError, LoweringError,
                                   NotRepresentableError, PrecisionWarning)
from kernelalg.core._layer import Layer, parallel, repeat, serial
from kernelalg.core._program import C, D, ID1, ID2, Q1, Q2
from kernelalg.core._symbolic import SymbolicKernel, symbolic
from kernelalg.layers.recurrent._recurrent import Recurrent, recurrent_step_map
from kernelalg.layers.recurrent._sequences import Sequences
from kernelalg.layers.recurrent._gated import GRU, LSTM, gate_quadrature_error
from kernelalg.layers.spatial._conv import Conv
from kernelalg.layers.spatial._local import ConvLocal
from kernelalg.layers.spatial._pooling import AvgPool, Flatten, GlobalAvgPool, GlobalSumPool, SumPool
from kernelalg.layers.spatial._attention import GlobalSelfAttention
from kernelalg.layers.graph._aggregate import Aggregate
from kernelalg.layers.graph._inputs import Graphs
from kernelalg.layers.spatial._index import Index, Slice
from kernelalg.layers.spatial._dotgeneral import DotGeneral
from kernelalg.layers.spatial._imageresize import ImageResize
from kernelalg.layers.spatial._resize import ConvTranspose
from kernelalg.layers._normalization import Dropout, ExpNormalized, LayerNorm
from kernelalg.layers._surrogate import SurrogateSign, SurrogateStep, true_gradient, with_sharpness
from kernelalg.finite._surrogate import SurrogateTwins, empirical_sg_ntk, surrogate_twins
from kernelalg.finite._twins import FiniteNet, finite
from kernelalg.finite._empirical import empirical_nngp, empirical_ntk, empirical_ntk_fn
from kernelalg.finite._montecarlo import MonteCarlo, monte_carlo
from kernelalg.finite._convergence import Convergence, SpreadFit, convergence
from kernelalg.finite._verify import Decorrelated, Verification, verify
from kernelalg.finite._sharpness import SharpnessLimit, verify_sharpness_limit
from kernelalg.finite._hessian import TopEigen, hessian_eigenvalues, ntk_eigenvalues
from kernelalg.finite._linearize import linearize, taylor_expand
from kernelalg.finite._trainer import Trace, TrainRun, train
from kernelalg.finite._efcn import EquivalentFCN, efcn
from kernelalg.finite._parametrize import FeatureLearningError, Parametrization, Regime, limit_kernel, regime
from kernelalg import analysis  # ka.analysis: spectra, decay, loss asymptotics, dynamics
from kernelalg.scale._gram import GramPlan, gram, plan_gram
from kernelalg.scale._store import GramStore, open_gram
from kernelalg.layers._parse import parse

from kernelalg._version import __version__
from kernelalg.layers._catalogue import constructors as _constructors

__all__ = [
    # layers
    "ABRelu", "Abs", "Cos", "Dense", "Elementwise", "Erf", "Exp", "FanInConcat", "FanInProd", "FanInSum", "FanOut", "Gaussian", "Gelu", "Identity",
    "LeakyRelu", "Monomial", "Polynomial", "Rbf", "RectifiedMonomial", "Relu", "Sign", "Sin", "activation",
    "parallel", "repeat", "serial", "Layer",
    # convolutional
    "Conv", "ConvLocal", "AvgPool", "SumPool", "GlobalAvgPool", "GlobalSumPool", "Flatten", "Index", "Slice",
    "DotGeneral", "ConvTranspose", "ImageResize",
    # attention, normalization, dropout
    "GlobalSelfAttention", "LayerNorm", "Dropout",
    # graphs
    "Aggregate", "Graphs",
    # recurrent
    "Recurrent", "Sequences", "recurrent_step_map", "GRU", "LSTM", "gate_quadrature_error",
    # surrogate gradients
    "SurrogateSign", "SurrogateStep", "SurrogateTwins", "surrogate_twins", "empirical_sg_ntk", "true_gradient",
    "with_sharpness", "verify_sharpness_limit", "SharpnessLimit",
    # finite width and verification
    "finite", "FiniteNet", "empirical_ntk", "empirical_ntk_fn", "empirical_nngp", "monte_carlo", "MonteCarlo",
    "convergence", "Convergence", "SpreadFit", "verify", "Verification", "Decorrelated",
    # training beyond the lazy regime
    "linearize", "taylor_expand", "train", "TrainRun", "Trace", "hessian_eigenvalues", "ntk_eigenvalues", "TopEigen",
    "Parametrization", "regime", "Regime", "limit_kernel", "efcn", "EquivalentFCN",
    # kernels
    "symbolic", "SymbolicKernel", "parse", "compile", "CompiledKernel", "ReferenceKernel", "kernel", "Kernel",
    "reference_kernel",
    "Q1", "Q2", "C", "D", "ID1", "ID2",
    # scale: tiled / multi-device / Dask Gram matrices, resumable zarr stores
    "gram", "plan_gram", "GramPlan", "GramStore", "open_gram",
    # errors
    "KernelalgError", "InputError", "LayerOrderError", "LoweringError", "NotRepresentableError", "PrecisionWarning",
    "DivergentKernelError", "FeatureLearningError",
]

# Every layer constructor of the catalogue is public: a constructor added to a family module needs no edit
# here (the explicit imports above are for readers and IDEs).
globals().update(_constructors())
__all__ += sorted(set(_constructors()) - set(__all__))
