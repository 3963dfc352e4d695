"""PNG plots (matplotlib, Agg backend): log-log spectra and loss curves. Titles are wrapped, never cut."""

from __future__ import annotations

import os
import textwrap
from typing import Any, Mapping

import numpy as np


def _pyplot() -> Any:
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def wrap_title(title: str, inches: float, fontsize: float = 8.0) -> str:
    """``title`` broken into lines that fit ``inches`` of figure width at ``fontsize`` points (an average
    glyph is about 0.55 em wide)."""
    return textwrap.fill(title, max(20, int(inches * 72 / (0.55 * fontsize))))


def _save(fig: Any, path: Any) -> str:
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_spectrum(spectrum: Any, path: Any, derived: Any = None, fit: Any = "auto", title: str | None = None) -> str:
    """Log-log plot of mu_k against k with the fitted slope and, if given, the derived one.

    Args:
        spectrum: A :class:`~kernelalg.analysis.Spectrum`.
        path: Output PNG path.
        derived: A :class:`~kernelalg.analysis.DecayExponent` (or a slope number) to draw through the tail.
        fit: "auto" (fit k >= max(5, kmax/4)), a :class:`~kernelalg.analysis.PowerFit`, or None.
        title: Plot title (default: the kernel's label and d).

    Returns:
        The path written.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    k, mu = spectrum.k, spectrum.mu
    nz = (k >= 1) & (mu > 1e-12 * np.max(np.abs(mu)))
    ax.loglog(k[nz], mu[nz], "o", ms=3.5, label=r"$\mu_k$ (Funk-Hecke)")
    if fit == "auto":
        fit = spectrum.fit(kmin=max(5, int(k[-1]) // 4))
    if fit is not None:
        kk = np.arange(fit.kmin, fit.kmax + 1)
        ax.loglog(kk, fit(kk), "-", lw=1.5, label=f"fit k = {fit.kmin}..{fit.kmax}: slope {fit.slope:.3f}")
    slope = getattr(derived, "slope", derived)
    if slope is not None and np.any(nz):
        slope = float(slope)
        kref = k[nz][-1]
        kk = np.arange(max(1, int(kref) // 4), int(kref) + 1)
        ax.loglog(kk, mu[nz][-1] * (kk / kref) ** slope, "--", lw=1.5, label=f"derived: slope {slope:g}")
    ax.set_xlabel("degree k")
    ax.set_ylabel(r"$\mu_k$")
    ax.set_title(wrap_title(title or f"{spectrum.label}, d = {spectrum.dim}", 6.0), fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def plot_gram_spectrum(spectrum: Any, gram: Any, path: Any, count: int | None = None, title: str | None = None) -> str:
    """Rank plot: the i-th largest operator eigenvalue (Mercer mu_k repeated N(d, k) times) against the i-th
    largest Gram eigenvalue / n (:func:`~kernelalg.analysis.gram_spectrum`), log-log; returns the path."""
    plt = _pyplot()
    gram = np.asarray(gram, dtype=np.float64)
    count = int(count or min(len(gram), int(np.sum(spectrum.multiplicity))))
    ref = spectrum.eigenvalues(count)
    i = np.arange(1, count + 1)
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    pos = ref > 1e-12 * ref[0]
    ax.loglog(i[pos], ref[pos], "-", lw=1.5, label="Mercer eigenvalues (with multiplicity)")
    g = gram[:count]
    ax.loglog(i[g > 0], g[g > 0], ".", ms=3, label=f"Gram eigenvalues / n (n = {len(gram)})")
    ax.set_xlabel("rank i")
    ax.set_ylabel("eigenvalue")
    ax.set_title(wrap_title(title or f"{spectrum.label}, d = {spectrum.dim}", 6.0), fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def plot_loss_curves(t: np.ndarray, curves: Mapping[str, np.ndarray], path: Any, title: str = "",
                     xlabel: str = "t", loglog: bool = True) -> str:
    """Loss curves (label -> values over ``t``) on one log-log (or linear) plot; returns the path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    styles = ["-", "--", ":", "-.", "o", "x"]
    for i, (label, y) in enumerate(curves.items()):
        y = np.asarray(y, dtype=np.float64)
        tt = np.asarray(t, dtype=np.float64) if len(y) == len(t) else np.arange(len(y))
        st = styles[i % len(styles)]
        kw = {"ms": 3} if st in ("o", "x") else {"lw": 1.5}
        (ax.loglog if loglog else ax.plot)(tt, y, st, label=label, **kw)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    if title:
        ax.set_title(wrap_title(title, 6.0), fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)
