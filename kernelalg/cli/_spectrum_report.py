"""The spectrum checks of ``kernelalg verify`` and the ``kernelalg spectrum`` command.

* On the sphere (:mod:`kernelalg.analysis`: ``mercer_spectrum``, ``decay_exponent``): the Mercer eigenvalues
  mu_k of the kernel on S^{d-1} (Gegenbauer projection), the trace identity sum_k N(d, k) mu_k = k(1) and the
  decay exponent (Bietti & Mairal 2019; Geifman et al. 2020). One least-squares fit over k = kmax/2..kmax
  gives the reported rate and the plotted line. Where the installed analysis module lacks them, the verify
  check is reported as skipped and the command says so. Only meaningful for ``--data sphere``.
* On the data (:func:`check_gram_spectrum`): the eigenvalues lambda_i of the exact NTK Gram matrix of the data
  against the finite-width Monte Carlo NTK along the same eigenvectors, q_i^T Theta_s q_i per network s. That
  is linear in the networks, so its mean is unbiased for lambda_i with a standard error from the independent
  networks (the eigenvalues of the Monte Carlo mean itself are biased by its noise, most for the small ones:
  they are plotted for comparison, not tested).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

import kernelalg.analysis as analysis
from kernelalg.analysis._plots import wrap_title
from kernelalg.cli._checks import NUMERIC_RTOL, REMAINDER, Z_THRESHOLD, Check, _close, _pyplot
from kernelalg.core._errors import KernelalgError
from kernelalg.core._inputs import DENSE, layout_of
from kernelalg.finite._montecarlo import monte_carlo
from kernelalg.finite._verify import intercept_weights

#: Tolerance of the trace identity (the tail beyond kmax is a fitted power law, good to ~1e-4).
TRACE_RTOL = 1e-3
#: Tolerance |fitted - derived| of the decay rate (the fit over k in [kmax/2, kmax] carries O(1/k) corrections).
RATE_TOL = 0.25
#: Degrees of the verify check: fits over k = 50..100 are within 0.12 of the derived rate for ReLU networks
#: with d = 3 and 5 (small biases make odd and even degrees approach the asymptote from opposite sides).
KMAX = 100

#: Largest degree of ``kernelalg spectrum`` (the quadrature has 4 kmax + 64 nodes; kmax = 1000 takes seconds).
MAX_KMAX = 1000
#: Largest sphere dimension: the multiplicities N(d, k) stay below 1e308 for d <= 256 and k <= MAX_KMAX (and
#: float64 eigenvalues lose all accuracy long before: mu_k falls like d^-k).
MAX_DIM = 256

BAD_KMAX = "--kmax {kmax} must be in 1..{limit}. Fix: e.g. --kmax 60 (the fitted decay uses k = kmax/2..kmax)."
BAD_DIM = ("--dim {dim} must be in 2..{limit} (inputs on S^(dim-1)). Fix: e.g. --dim 3; in high dimension use "
           "kernelalg.analysis.mercer_spectrum(net, dim, kmax, dps=50) from Python.")
NO_ANALYSIS = ("The spectrum needs kernelalg.analysis.mercer_spectrum, which this installation lacks ({err}). "
               "Fix: update kernelalg (pip install -U kernelalg) or use 'kernelalg verify' without the spectrum.")
NOT_DENSE = ("The spectrum on the sphere is defined for networks on vector inputs (dot-product kernels); "
             "{arch!r} takes {layout} inputs. Fix: use a network that starts with Dense, e.g. "
             "\"Dense(1, 0.1) >> Relu() >> Dense(1)\".")


def _analysis() -> tuple[Any, Any]:
    """(mercer_spectrum, decay_exponent or None); raises KernelalgError(NO_ANALYSIS) when unavailable."""
    try:
        ms = analysis.mercer_spectrum
    except (ImportError, AttributeError) as err:
        raise KernelalgError(NO_ANALYSIS.format(err=err)) from None
    return ms, getattr(analysis, "decay_exponent", None)


def _check_dense(net: Any, arch: str) -> None:
    layout = layout_of(net)
    if layout is not DENSE:
        raise KernelalgError(NOT_DENSE.format(arch=arch, layout=layout.name))


def _trace(spec: Any) -> tuple[bool, str]:
    """The trace identity sum_k N(d,k) mu_k + (fitted tail) = k(1), to TRACE_RTOL."""
    tc = spec.trace_check()
    rel = float(tc.relative_residual)
    ok = rel <= TRACE_RTOL
    return ok, (f"trace identity sum_k N(d,k) mu_k = k(1): {tc.partial:.6g} (k <= {int(spec.k[-1])}) + "
                f"{tc.tail:.3g} (tail) vs {tc.target:.6g}, relative residual {rel:.1e} (tolerance "
                f"{TRACE_RTOL:g}) -> {'ok' if ok else 'FAIL'}")


def _rate_fit(spec: Any) -> Any:
    """The one fit of log mu_k vs log k over the upper half of the degrees (vanishing degrees left out), used
    for the reported rate and the plotted line alike; None when too few degrees qualify."""
    return spec.fit(kmin=max(2, int(spec.k[-1]) // 2))


def _derived(decay: Any, net: Any, dim: int, which: str) -> Any:
    """The DecayExponent (``.rate``: mu_k ~ k^-rate, None when analytic), or None when not derivable."""
    if decay is None:
        return None
    try:
        return decay(net, dim, which)
    except KernelalgError:
        return None


def _plot(spec: Any, path: str, derived: Any, fit: Any, title: str) -> None:
    """Log-log plot of mu_k with ``fit`` (the reported one) and, when a power law is derived, the derived slope."""
    kwargs = {"derived": derived} if derived is not None and derived.rate is not None else {}
    try:
        spec.plot(path, fit=fit, title=title, **kwargs)
    finally:
        _close()


def check_spectrum(net: Any, cfg: Any, out: Path) -> Any:
    """The verify check: trace identity and fitted vs derived decay exponent of the NTK spectrum."""
    name = "Mercer spectrum on the sphere"
    if cfg.data != "sphere":
        return Check(name, "skipped", f"--data {cfg.data} is not uniform on the sphere: the Mercer spectrum describes "
                     "the kernel on the uniform sphere S^{d-1}, not on these data (see the data's Gram spectrum).")
    try:
        _check_dense(net, cfg.arch)
        if cfg.dim > MAX_DIM:
            raise KernelalgError(BAD_DIM.format(dim=cfg.dim, limit=MAX_DIM))
        ms, decay = _analysis()
        kmax = KMAX
        spec = ms(net, cfg.dim, kmax, "ntk")  # needs the closed form, which may exceed its limits
    except KernelalgError as err:
        return Check(name, "skipped", str(err).split(" Fix:")[0])
    ok, trace_line = _trace(spec)
    fit = _rate_fit(spec)
    fitted = None if fit is None else -fit.slope
    dec = _derived(decay, net, cfg.dim, "ntk")
    derived = None if dec is None else dec.rate
    lines = [f"- NTK on the uniform sphere S^{cfg.dim - 1} (independent of the data; --dim), k = 0..{kmax}: "
             "mu_0..mu_4 = "
             + ", ".join(f"{m:.4g}" for m in np.asarray(spec.mu)[:5]), f"- {trace_line}"]
    if fitted is not None:
        lines.append(f"- fitted decay rate (mu_k ~ k^-s, least squares over k = {fit.kmin}..{fit.kmax}, the line "
                     f"in the plot): s = {fitted:.3f}")
    if derived is not None and fitted is not None:
        good = abs(fitted - derived) <= RATE_TOL
        lines.append(f"- derived rate (d - 1) + 2 s_sing = {derived:.3f} (Bietti & Mairal 2019): |fitted - derived| "
                     f"= {abs(fitted - derived):.3f} (tolerance {RATE_TOL:g}) -> {'ok' if good else 'FAIL'}")
        ok = ok and good
    elif dec is None:
        lines.append("- no derived decay exponent (it needs the kernel in closed form)")
    elif derived is None:
        lines.append("- no derived power law (the kernel is analytic at t = +-1: faster than any power)")
    plot = None
    try:
        _plot(spec, str(out / "spectrum.png"), dec, fit, f"NTK of {cfg.arch} on S^{cfg.dim - 1}")
        plot = "spectrum.png"
    except Exception as err:  # noqa: BLE001 -- a missing plot is reported, the check stands
        lines.append(f"- (no plot: {type(err).__name__}: {err})")
    head = (f"NTK on S^{cfg.dim - 1}: trace identity residual {float(spec.trace_check().relative_residual):.1e}"
            + (f", decay rate fitted {fitted:.2f} vs derived {derived:.2f}" if fitted is not None and
               derived is not None else ""))
    return Check(name, "passed" if ok else "failed", head + "\n\n" + "\n".join(lines), plot,
                 {"k": np.asarray(spec.k).tolist(), "mu": np.asarray(spec.mu, float).tolist(),
                  "fitted_rate": fitted, "derived_rate": derived})


def check_gram_spectrum(net: Any, x: np.ndarray, exact: Any, cfg: Any, out: Path, note: str = "") -> Check:
    """The data's NTK Gram spectrum: exact eigenvalues vs the Monte Carlo NTK along the exact eigenvectors.

    Args:
        net: The network the Monte Carlo runs (for exact sign/step layers: a finite sharpness, see ``note``).
        x: The data (N, d) (float32 for the Monte Carlo).
        exact: Its exact kernel (``ka.Kernel``, float64).
        cfg: The :class:`~kernelalg.cli._verify_report.VerifyConfig` (two largest widths, samples, seed).
        out: Report folder (writes ``gram_spectrum.png``).
        note: A sentence on what ``net`` is, for the report.
    """
    theta = np.asarray(exact.ntk, np.float64)
    sym = (theta + theta.T) / 2
    lam, q = np.linalg.eigh(sym)
    lam, q = lam[::-1], q[:, ::-1]
    widths = cfg.widths[-2:]
    keys = jax.random.split(jax.random.PRNGKey(cfg.seed + 3), len(widths))
    ests = [monte_carlo(net, x, None, w, cfg.samples, k, get="ntk", keep_draws=True) for w, k in zip(widths, keys)]
    comps = [np.einsum("ik,sij,jk->sk", q, e.draws["ntk"], q) for e in ests]
    c = intercept_weights(widths)
    means = [g.mean(0) for g in comps]
    est = sum(cw * m for cw, m in zip(c, means))
    floor = NUMERIC_RTOL * float(np.max(np.abs(lam)))
    se = np.maximum(np.sqrt(sum(cw**2 * g.var(0, ddof=1) / len(g) for cw, g in zip(c, comps))), floor)
    allow = REMAINDER * np.abs(means[0] - means[-1])
    z = (est - lam) / se
    good = np.abs(est - lam) <= Z_THRESHOLD * se + allow
    mean = sum(cw * e.ntk for cw, e in zip(c, ests))
    mean_eigs = np.linalg.eigvalsh((mean + mean.T) / 2)[::-1]
    _plot_gram(out / "gram_spectrum.png", lam, est, se, mean_eigs, z, good, cfg)
    n = len(lam)
    sym_note = "" if np.allclose(theta, theta.T, rtol=1e-9, atol=0) else " (symmetric part of the asymmetric SG-NTK)"
    head = (f"the {n} eigenvalues of the exact NTK Gram matrix on the data{sym_note} vs the Monte Carlo NTK along "
            f"the same eigenvectors (widths {widths}, {cfg.samples} networks each, width-extrapolated): max |z| = "
            f"{np.max(np.abs(z)):.2f} (threshold {Z_THRESHOLD:g} SE + {REMAINDER:g} x width shift), "
            f"{int(np.sum(~good))} outside")
    rows = ["| i | exact lambda_i | Monte Carlo q_i^T Theta q_i | SE | z |", "|---|---|---|---|---|"]
    rows += [f"| {i + 1} | {lam[i]:.4g} | {est[i]:.4g} | {se[i]:.2g} | {z[i]:+.2f} |" for i in range(n)]
    body = ("All eigen-directions are estimated from the same networks, so their z are correlated like the "
            "kernel entries (see the entrywise check's decorrelated test).")
    text = head + "\n\n" + (note + "\n\n" if note else "") + body + "\n\n" + "\n".join(rows)
    return Check("Spectrum of the data's Gram matrix", "passed" if bool(np.all(good)) else "failed", text,
                 "gram_spectrum.png", {"exact": lam.tolist(), "estimate": est.tolist(), "stderr": se.tolist()})


def _plot_gram(path: Path, lam: np.ndarray, est: np.ndarray, se: np.ndarray, mean_eigs: np.ndarray, z: np.ndarray,
               good: np.ndarray, cfg: Any) -> None:
    """Left: exact eigenvalues, the Monte Carlo along the exact eigenvectors (+- Z_THRESHOLD SE) and the
    eigenvalues of the Monte Carlo mean (log scale). Right: z per eigenvalue."""
    plt = _pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    i = np.arange(1, len(lam) + 1)
    ax.semilogy(i, lam, "k-", lw=1.2, label="exact NTK Gram eigenvalues")
    pos = est > 0
    ax.errorbar(i[pos], est[pos], yerr=np.minimum(Z_THRESHOLD * se[pos], 0.999 * est[pos]), fmt="o", ms=3,
                color="tab:blue", label=f"Monte Carlo q_i^T Theta q_i (+- {Z_THRESHOLD:g} SE, tested)")
    ax.semilogy(i[mean_eigs > 0], mean_eigs[mean_eigs > 0], "x", ms=4, color="tab:gray",
                label="eigenvalues of the Monte Carlo mean (biased by noise; not tested)")
    ax.set_xlabel("rank i")
    ax.set_ylabel("eigenvalue")
    ax.legend(fontsize=7)
    ax.set_title("NTK Gram matrix of the data", fontsize=9)
    bx.axhspan(-Z_THRESHOLD, Z_THRESHOLD, color="tab:green", alpha=0.1, label=f"|z| <= {Z_THRESHOLD:g}")
    bx.plot(i[good], z[good], "o", ms=3, color="tab:blue", label="within tolerance")
    if (~good).any():
        bx.plot(i[~good], z[~good], "o", ms=4, color="tab:red", label="outside")
    bx.set_xlabel("rank i")
    bx.set_ylabel("z = (Monte Carlo - exact) / SE")
    bx.set_title(f"widths {cfg.widths[-2:]}, {cfg.samples} networks each (z correlated across i)", fontsize=9)
    bx.legend(fontsize=7)
    fig.suptitle(wrap_title(f"{cfg.arch} on {cfg.data}", 11, 9), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def spectrum_command(net: Any, arch: str, dim: int, kmax: int, which: str = "ntk", png: str | None = None,
                     csv: str | None = None) -> str:
    """Text of ``kernelalg spectrum``: eigenvalues with multiplicities, trace identity, decay exponents."""
    if not 2 <= dim <= MAX_DIM:
        raise KernelalgError(BAD_DIM.format(dim=dim, limit=MAX_DIM))
    if not 1 <= kmax <= MAX_KMAX:
        raise KernelalgError(BAD_KMAX.format(kmax=kmax, limit=MAX_KMAX))
    _check_dense(net, arch)
    ms, decay = _analysis()
    spec = ms(net, dim, kmax, which)
    k, mu, mult = (np.asarray(spec.k), np.asarray(spec.mu, float), np.asarray(spec.multiplicity))
    lines = [f"# {which} of {arch} on S^{dim - 1}: Mercer eigenvalues mu_k with multiplicity N(d,k)",
             f"{'k':>4} {'N(d,k)':>12} {'mu_k':>14}"]
    lines += [f"{int(a):>4} {int(b):>12} {c:>14.6e}" for a, b, c in zip(k, mult, mu)]
    lines.append(_trace(spec)[1])
    fit = _rate_fit(spec)
    if fit is not None:
        lines.append(f"fitted decay: mu_k ~ k^-{-fit.slope:.3f} (k = {fit.kmin}..{fit.kmax})")
    dec = _derived(decay, net, dim, which)
    derived = None if dec is None else dec.rate
    lines.append("derived decay: " + (f"mu_k ~ k^-{derived:.3f}" if derived is not None else
                                      "none (no closed form)" if dec is None else
                                      "none (analytic kernel: faster than any power)"))
    if csv:
        np.savetxt(csv, np.column_stack([k, mult, mu]), delimiter=",", header="k,multiplicity,mu", comments="",
                   fmt=["%d", "%d", "%.17g"])
        lines.append(f"wrote {csv}")
    if png:
        _plot(spec, png, dec, fit, f"{which} of {arch} on S^{dim - 1}")
        lines.append(f"wrote {png}")
    return "\n".join(lines)
