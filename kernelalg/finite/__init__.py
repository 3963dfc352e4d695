"""kernelalg.finite: the finite-width networks behind every architecture, and the checks built on them.

* :func:`finite` -> :class:`FiniteNet`: the real JAX network with the kernel's parametrization.
* :func:`empirical_ntk`, :func:`empirical_ntk_fn`, :func:`empirical_nngp`: kernels of finite networks.
* :func:`monte_carlo`, :func:`convergence`, :func:`verify`: exact kernels against finite-width estimates
  with standard errors.
* :func:`surrogate_twins`, :func:`empirical_sg_ntk`: surrogate-gradient networks (true forward, surrogate
  backward).
* :func:`gd_scan`, :func:`mse_loss`: the one trainer of finite networks (full-batch gradient descent).
"""

from kernelalg.finite._empirical import empirical_nngp, empirical_ntk, empirical_ntk_fn
from kernelalg.finite._montecarlo import Convergence, MonteCarlo, convergence, monte_carlo
from kernelalg.finite._surrogate import SurrogateTwins, empirical_sg_ntk, surrogate_twins
from kernelalg.finite._train import descend, mse_loss
from kernelalg.finite._twins import FiniteNet, finite
from kernelalg.finite._verify import Verification, verify

__all__ = [
    "Convergence", "FiniteNet", "MonteCarlo", "SurrogateTwins", "Verification", "convergence",
    "empirical_nngp", "empirical_ntk", "empirical_ntk_fn", "empirical_sg_ntk", "finite", "descend",
    "monte_carlo", "mse_loss", "surrogate_twins", "verify",
]
