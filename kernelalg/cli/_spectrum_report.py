"""The spectrum part of ``kernelalg verify`` and the ``kernelalg spectrum`` command.

Both use :mod:`kernelalg.analysis` (``mercer_spectrum``, ``decay_exponent``): the Mercer eigenvalues mu_k of
the kernel on the unit sphere S^{d-1} (Gegenbauer projection), the trace identity
sum_k N(d, k) mu_k = k(1) and the decay exponent (Bietti & Mairal 2019; Geifman et al. 2020). Where the
installed analysis module lacks them, the verify check is reported as skipped and the command says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kernelalg.cli._checks import Check, _close
from kernelalg.core._errors import KernelalgError
import kernelalg.analysis as analysis
from kernelalg.core._inputs import layout_of

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
    if layout.name != "dense":
        raise KernelalgError(NOT_DENSE.format(arch=arch, layout=layout.name))


def _trace(spec: Any) -> tuple[bool, str]:
    """The trace identity sum_k N(d,k) mu_k + (fitted tail) = k(1), to TRACE_RTOL."""
    tc = spec.trace_check()
    rel = float(tc.relative_residual)
    ok = rel <= TRACE_RTOL
    return ok, (f"trace identity sum_k N(d,k) mu_k = k(1): {tc.partial:.6g} (k <= {int(spec.k[-1])}) + "
                f"{tc.tail:.3g} (tail) vs {tc.target:.6g}, relative residual {rel:.1e} (tolerance "
                f"{TRACE_RTOL:g}) -> {'ok' if ok else 'FAIL'}")


def _fitted_rate(spec: Any) -> float | None:
    """-slope of log mu_k vs log k over the upper half of the degrees (vanishing degrees left out)."""
    fit = spec.fit(kmin=max(2, int(spec.k[-1]) // 2))
    return None if fit is None else -float(fit.slope)


def _derived(decay: Any, net: Any, dim: int, which: str) -> Any:
    """The DecayExponent (``.rate``: mu_k ~ k^-rate, None when analytic), or None when not derivable."""
    if decay is None:
        return None
    try:
        return decay(net, dim, which)
    except KernelalgError:
        return None


def _plot(spec: Any, path: str, derived: Any) -> None:
    """Log-log plot of mu_k with the fitted and (when a power law is derived) the derived slope."""
    kwargs = {"derived": derived} if derived is not None and derived.rate is not None else {}
    try:
        spec.plot(path, **kwargs)
    finally:
        _close()


def check_spectrum(net: Any, cfg: Any, out: Path) -> Any:
    """The verify check: trace identity and fitted vs derived decay exponent of the NTK spectrum."""
    name = "Mercer spectrum on the sphere"
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
    fitted = _fitted_rate(spec)
    dec = _derived(decay, net, cfg.dim, "ntk")
    derived = None if dec is None else dec.rate
    lines = [f"- NTK on the uniform sphere S^{cfg.dim - 1} (independent of the data; --dim), k = 0..{kmax}: "
             "mu_0..mu_4 = "
             + ", ".join(f"{m:.4g}" for m in np.asarray(spec.mu)[:5]), f"- {trace_line}"]
    if fitted is not None:
        lines.append(f"- fitted decay rate (mu_k ~ k^-s over k = {kmax // 2}..{kmax}): s = {fitted:.3f}")
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
        _plot(spec, str(out / "spectrum.png"), dec)
        plot = "spectrum.png"
    except Exception as err:  # noqa: BLE001 -- a missing plot is reported, the check stands
        lines.append(f"- (no plot: {type(err).__name__}: {err})")
    head = (f"NTK on S^{cfg.dim - 1}: trace identity residual {float(spec.trace_check().relative_residual):.1e}"
            + (f", decay rate fitted {fitted:.2f} vs derived {derived:.2f}" if fitted is not None and
               derived is not None else ""))
    return Check(name, "passed" if ok else "failed", head + "\n\n" + "\n".join(lines), plot,
                 {"k": np.asarray(spec.k).tolist(), "mu": np.asarray(spec.mu, float).tolist(),
                  "fitted_rate": fitted, "derived_rate": derived})


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
    fitted = _fitted_rate(spec)
    if fitted is not None:
        lines.append(f"fitted decay: mu_k ~ k^-{fitted:.3f} (k = {kmax // 2}..{kmax})")
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
        _plot(spec, png, dec)
        lines.append(f"wrote {png}")
    return "\n".join(lines)
