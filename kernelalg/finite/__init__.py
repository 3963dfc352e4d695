"""kernelalg.finite: the finite-width networks behind every architecture, and the checks built on them.

* :func:`finite` -> :class:`FiniteNet`: the real JAX network with the kernel's parametrization.
* :func:`empirical_ntk`, :func:`empirical_ntk_fn`, :func:`empirical_nngp`: kernels of finite networks.
* :func:`monte_carlo`, :func:`convergence`, :func:`verify`: exact kernels against finite-width estimates
  with standard errors.
* :func:`surrogate_twins`, :func:`empirical_sg_ntk`: surrogate-gradient networks (true forward, surrogate
  backward).
* :func:`train` -> :class:`TrainRun`: the training harness (optax optimizers, minibatches, frozen layers,
  recorders of loss, outputs, NTK, parameter distance, sharpness, and the linearized model side by side);
  :func:`descend`, :func:`mse_loss`: its pure full-batch loop (``vmap``-able over initialisations).
* :func:`efcn` -> :class:`EquivalentFCN`: the equivalent fully connected network of a CNN (d'Ascoli et al. 2019),
  the CNN's weights embedded into Dense layers on the flattened image.
* :func:`linearize`, :func:`taylor_expand`: Taylor models of any ``f(params, x)`` (neural-tangents' semantics).
* :func:`hessian_eigenvalues`, :func:`ntk_eigenvalues` -> :class:`TopEigen`: sharpness by Lanczos, matrix-free.
* :class:`Parametrization` (``ka.finite(net, width, parametrization="mup")``: standard, NTK, muP, mean-field),
  :func:`regime` (Yang & Hu's classification), :func:`limit_kernel` (the infinite-width kernel where one exists;
  :class:`FeatureLearningError` where training is not a kernel's).
"""

from kernelalg.finite._empirical import empirical_nngp, empirical_ntk, empirical_ntk_fn
from kernelalg.finite._efcn import EquivalentFCN, efcn
from kernelalg.finite._convergence import Convergence, SpreadFit, convergence
from kernelalg.finite._montecarlo import MonteCarlo, monte_carlo
from kernelalg.finite._sharpness import SharpnessLimit, verify_sharpness_limit
from kernelalg.finite._ntk_plan import plan_ntk
from kernelalg.finite._parametrize import (PARAMETRIZATIONS, FeatureLearningError, Parametrization, Regime,
                                           limit_kernel, regime)
from kernelalg.finite._hessian import TopEigen, hessian_eigenvalues, lanczos, ntk_eigenvalues
from kernelalg.finite._linearize import linearize, taylor_expand
from kernelalg.finite._surrogate import SurrogateTwins, empirical_sg_ntk, surrogate_twins
from kernelalg.finite._train import descend, mse_loss
from kernelalg.finite._trainer import Trace, TrainRun, train
from kernelalg.finite._twins import FiniteNet, finite
from kernelalg.finite._verify import Verification, verify

__all__ = [
    "Convergence", "EquivalentFCN", "FeatureLearningError", "FiniteNet", "MonteCarlo", "PARAMETRIZATIONS", "Parametrization",
    "Regime", "SharpnessLimit", "SpreadFit", "SurrogateTwins", "TopEigen", "Trace", "TrainRun", "Verification",
    "convergence", "descend", "efcn", "empirical_nngp", "empirical_ntk", "empirical_ntk_fn", "empirical_sg_ntk", "finite",
    "hessian_eigenvalues", "lanczos", "limit_kernel", "linearize", "monte_carlo", "mse_loss", "ntk_eigenvalues",
    "plan_ntk", "regime", "surrogate_twins", "taylor_expand", "train", "verify", "verify_sharpness_limit",
]
