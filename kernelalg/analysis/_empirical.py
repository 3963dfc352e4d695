"""Empirical spectra of any network's kernel on data: Gram eigenvalues, power-law fits, effective dimension,
target alignment.

For n inputs x_i the integral operator (T f)(x) = E_x'[k(x, x') f(x')] of the empirical measure acts as
K / n, so its eigenvalues are lambda_i = eig_i(K) / n (decreasing) and a target y has squared coefficients
c_i^2 = (v_i . y)^2 / n on the unit eigenvectors v_i, with sum_i c_i^2 = |y|^2 / n (the target's mean square).
As n grows lambda_i converge to the operator's eigenvalues (Koltchinskii & Gine 2000).

Routes: ``"dense"`` (numpy ``eigh``, all eigenpairs, n up to a few thousand) and ``"lanczos"``
(scipy's ARPACK ``eigsh``, implicitly restarted Lanczos, for the ``top`` largest pairs; the matrix-vector
product streams the Gram tiles of ``ka.gram``'s zarr store when ``store`` is given, so n in the tens of
thousands needs memory for one tile, not for the matrix).

Effective dimension (Zhang 2005; Caponnetto & De Vito 2007): d_eff(r) = sum_i lambda_i / (lambda_i + r); with
r = None the participation ratio (sum lambda_i)^2 / sum lambda_i^2 (Gao et al. 2017) is returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from scipy.sparse.linalg import LinearOperator, eigsh

from kernelalg.backends._checks import check_inputs
from kernelalg.backends._compile import kernel
from kernelalg.core import _errors as E
from kernelalg.core._inputs import layout_of
from kernelalg.scale import GramStore, gram
from ._fit import SlopeFit, fit_power_law

DENSE_MAX = 6000
BAD_ROUTE = "route={route!r} is not known. Fix: use 'auto', 'dense' or 'lanczos'."
BAD_TARGET = ("target has shape {shape}, the spectrum has n = {n} points. Fix: pass one value per input, in the "
              "order of x.")
NO_STORE = ("empirical_spectrum: {net!r} takes {layout} inputs, which the tiled Gram store does not hold (it tiles "
            "plain arrays). Fix: drop store= (the Gram comes from ka.kernel and Lanczos runs on it), or precompute "
            "the matrix and pass matrix=.")
NEED_VECTORS = "this spectrum was computed without eigenvectors. Fix: call empirical_spectrum(..., vectors=True)."


@dataclass(frozen=True)
class EmpiricalSpectrum:
    """Eigenvalues lambda_i = eig_i(K)/n (decreasing) of a Gram matrix, with eigenvectors when kept.

    Attributes:
        eigenvalues: lambda_1 >= lambda_2 >= ... (all n, or the ``top`` largest).
        vectors: Unit eigenvectors as columns (n, len(eigenvalues)), or None.
        n: Number of points.
        trace: tr(K)/n (= sum of all n eigenvalues, known even when only the top ones were computed).
        route: "dense" or "lanczos".
    """

    eigenvalues: np.ndarray
    vectors: np.ndarray | None
    n: int
    trace: float
    route: str

    @property
    def index(self) -> np.ndarray:
        """Eigenvalue indices 1, 2, ... (the abscissa of the power-law fits)."""
        return np.arange(1, len(self.eigenvalues) + 1)

    def fit(self, imin: int = 10, imax: int | None = None, warn: bool = True) -> SlopeFit:
        """Power-law fit lambda_i ~ i^slope (slope = -nu) over imin <= i <= imax (default n/10)."""
        imax = max(imin + 10, self.n // 10) if imax is None else imax
        return fit_power_law(self.index, self.eigenvalues, imin, imax, what="Gram eigenvalues", warn=warn)

    def effective_dimension(self, ridge: float | None = None) -> float:
        """sum_i lambda_i/(lambda_i + ridge), or the participation ratio (sum lambda)^2/sum lambda^2 (ridge None).

        With only the top eigenvalues the participation ratio uses the trace for sum lambda and is a lower
        bound of sum lambda^2 otherwise; ridge = None is exact only on the dense route.
        """
        lam = np.clip(self.eigenvalues, 0.0, None)
        if ridge is None:
            return float(self.trace ** 2 / np.sum(lam ** 2))
        return float(np.sum(lam / (lam + float(ridge))))

    def coefficients(self, target: Any) -> np.ndarray:
        """c_i^2 = (v_i . y)^2 / n per eigenvector (columns of y are summed)."""
        if self.vectors is None:
            raise E.KernelalgError(NEED_VECTORS)
        y = np.asarray(target, dtype=np.float64).reshape(self.n, -1) if np.size(target) % self.n == 0 else None
        if y is None:
            raise E.KernelalgError(BAD_TARGET.format(shape=np.shape(target), n=self.n))
        return np.sum((self.vectors.T @ y) ** 2, axis=1) / self.n

    def alignment(self, target: Any) -> np.ndarray:
        """Cumulative alignment A(i) = sum_{j <= i} c_j^2 / (|y|^2/n): the target's share on the top i eigenvectors
        (Canatar, Bordelon & Pehlevan 2021 use the same spectral decomposition of the target)."""
        c2 = self.coefficients(target)
        total = float(np.sum(np.asarray(target, dtype=np.float64) ** 2)) / self.n
        return np.cumsum(c2) / max(total, np.finfo(float).tiny)

    def tail_mass(self, target: Any) -> np.ndarray:
        """T(i) = sum_{j >= i} c_j^2 = |y|^2/n - sum_{j < i} c_j^2 (the target mass not yet on the top i - 1)."""
        c2 = self.coefficients(target)
        total = float(np.sum(np.asarray(target, dtype=np.float64) ** 2)) / self.n
        return total - np.concatenate([[0.0], np.cumsum(c2)[:-1]])


def _store_operator(gs: GramStore, name: str) -> tuple[LinearOperator, float]:
    """v -> K v streamed tile by tile from a Gram store (upper tiles mirrored when symmetric), and tr(K).

    Tiles are keyed by their (row, column) offsets."""
    arr = gs.array(name)
    n, tile = gs.shape[0], gs.tile
    blocks = gs.tiles
    diag = sum(float(np.trace(np.asarray(arr[i:i + tile, i:i + tile]))) for i, j in blocks if i == j)

    def matvec(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64).ravel()
        out = np.zeros(n)
        for i, j in blocks:
            ri, rj = slice(i, min(i + tile, n)), slice(j, min(j + tile, n))
            blk = np.asarray(arr[ri, rj], dtype=np.float64)
            out[ri] += blk @ v[rj]
            if gs.symmetric and i != j:
                out[rj] += blk.T @ v[ri]
        return out
    return LinearOperator((n, n), matvec=matvec, dtype=np.float64), diag


def _plain_array(net: Any, x: Any) -> bool:
    """Whether the network's layout takes ``x`` as a plain array (what the tiled ``ka.gram`` holds)."""
    prepared = check_inputs(layout_of(net), x, None)[0]
    return isinstance(prepared, (np.ndarray, jax.Array))


def empirical_spectrum(net: Any, x: Any = None, which: str = "ntk", *, top: int | None = None, route: str = "auto",
                       store: Any = None, vectors: bool = True, matrix: Any = None, seed: int = 0) -> EmpiricalSpectrum:
    """Eigen-decomposition of a network's kernel Gram matrix on data (any architecture: dense, conv, recurrent).

    Args:
        net: Architecture (ignored when ``matrix`` is given).
        x: Inputs (n, ...) in the network's layout (dense: (n, d); images NHWC; sequences NLC). Sequence
            networks take their Gram from ``ka.kernel`` (the tiled ``ka.gram`` holds plain arrays only).
        which: "ntk" or "nngp".
        top: Number of leading eigenpairs (``"lanczos"`` route; default min(n - 1, 200)).
        route: "dense", "lanczos" or "auto" (dense for n <= 6000 without a store, Lanczos otherwise).
        store: Path of a zarr store for the tiled Gram (``ka.gram(..., store=)``: resumable; the Lanczos
            matrix-vector products read it tile by tile).
        vectors: Keep the eigenvectors (needed for target coefficients and alignment).
        matrix: A precomputed Gram matrix (n, n) instead of ``net`` and ``x``.
        seed: Seed of the Lanczos start vector.

    Returns:
        An :class:`EmpiricalSpectrum` (eigenvalues of K / n).
    """
    if route not in ("auto", "dense", "lanczos"):
        raise E.KernelalgError(BAD_ROUTE.format(route=route))
    op, trace = None, 0.0
    own = matrix is None and not _plain_array(net, x)  # a layout with its own container (sequences)
    if own and store is not None:
        raise E.KernelalgError(NO_STORE.format(net=net, layout=layout_of(net).name))
    if matrix is None and store is not None:
        gs = gram(net, x, get=which, store=store, progress=False)
        op, trace = _store_operator(gs, which)
        n = op.shape[0]
    else:
        if own:
            matrix = kernel(net, x, None, which)
        k = np.asarray(gram(net, x, get=which, progress=False) if matrix is None else matrix, dtype=np.float64)
        k = 0.5 * (k + k.T)
        n, trace = k.shape[0], float(np.trace(k))
        op = k
    if route == "auto":
        route = "dense" if (isinstance(op, np.ndarray) and n <= DENSE_MAX) else "lanczos"
    if route == "dense":
        if not isinstance(op, np.ndarray):
            op = op @ np.eye(n)
        ev, vec = np.linalg.eigh(op)
    else:
        count = min(n - 1, 200) if top is None else int(top)
        v0 = np.random.default_rng(seed).standard_normal(n)
        ev, vec = eigsh(op, k=count, which="LA", v0=v0, return_eigenvectors=True)
    order = np.argsort(ev)[::-1]
    return EmpiricalSpectrum(ev[order] / n, vec[:, order] if vectors else None, n, trace / n, route)
