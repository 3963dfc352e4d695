"""``ka.verify_sharpness_limit``: the SG-NTK of exact sign/step networks (m = None) as a limit of checkable ones.

At m = None the finite-width twin's sign has a true derivative 0 almost everywhere, so Monte Carlo over
finite networks estimates only the readout part of J J_tilde^T: the m = None SG-NTK is not the width limit of
those twins but the limit m -> infinity of the finite-sharpness kernels (forward erf(m x)), each of which IS the
width limit of its twins (Eilers, Memmesheimer, Goedeke, NeurIPS 2024). The check follows that order of limits:

1. for each m of a ladder, ``ka.verify`` of the network at sharpness m against its exact finite-m kernel
   (entrywise and decorrelated tests at the given widths);
2. the exact finite-m kernels approach the m = None kernel: the relative distance |K_m - K_inf|_F / |K_inf|_F
   must shrink along the ladder (its fitted rate is reported: O(1/m), led by the NNGP diagonal
   (2/pi) arcsin(2 m^2 s / (1 + 2 m^2 s)) = 1 - (2/pi) / (m sqrt(s)) + ...; that the limit is the m = None
   closed form is checked symbolically in tests/test_surrogate.py).

The m-dependence is controlled by the width: the true derivative of erf(m x) is a spike of width ~1/m, so a
layer of n units has about 0.8 n / (m sqrt(s)) units inside it per input (pre-activation variance s); m <= n / :data:`UNITS_PER_SHARPNESS` keeps at
least ~13 of them, so every network's kernel is an average over many units and the standard errors hold.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from typing import Any, Sequence

import jax
import numpy as np

from kernelalg.backends._compile import kernel, normalize_get
from kernelalg.core._layer import Layer, as_layer
from kernelalg.finite._montecarlo import _key, _to64
from kernelalg.finite._verify import Verification, verify
from kernelalg.layers._surrogate import with_sharpness

#: The largest sharpness checked at smallest width n is n / UNITS_PER_SHARPNESS.
UNITS_PER_SHARPNESS = 16


def sharpness_ladder(width: int, count: int = 3, factor: float = 4.0) -> tuple[float, ...]:
    """``count`` sharpness values up to width / UNITS_PER_SHARPNESS, a factor ``factor`` apart, increasing."""
    top = width / UNITS_PER_SHARPNESS
    return tuple(top / factor**i for i in reversed(range(count)))


@dataclass(frozen=True)
class SharpnessLimit:
    """Finite-sharpness verifications and the distance of their exact kernels to the m = None kernel.

    Attributes:
        net: repr of the m = None architecture.
        sharpness: The ladder of m, increasing.
        checks: One :class:`Verification` per m (the network at sharpness m vs its exact kernel).
        distance: {name: (len(sharpness),) |K_m - K_inf|_F / |K_inf|_F} (exact kernels, float64).
        resolution: {name: (len(sharpness),) Monte Carlo noise |SE_m|_F / |K_inf|_F at each m}.
        rate: {name: p of the least-squares fit distance ~ C m^-p}.
        passed: Every verification passed and every distance shrinks along the ladder.
    """

    net: str
    sharpness: tuple[float, ...]
    checks: tuple[Verification, ...]
    distance: dict
    resolution: dict
    rate: dict
    passed: bool

    def summary(self) -> str:
        lines = [f"verify_sharpness_limit {self.net}: {'PASSED' if self.passed else 'FAILED'} (m = "
                 + ", ".join(f"{m:g}" for m in self.sharpness) + ")"]
        for m, v in zip(self.sharpness, self.checks):
            lines.append(f"  m = {m:g}: Monte Carlo vs exact finite-m kernel {'passed' if v.passed else 'FAILED'}, "
                         f"max |z| = {v.max_abs_z:.2f}, decorrelated p = "
                         + ", ".join(f"{d.p_value:.2g}" for d in v.decorrelated.values()))
        for n, dist in self.distance.items():
            lines.append(f"  {n}: |K_m - K_inf| / |K_inf| = " + ", ".join(f"{d:.2e}" for d in dist)
                         + f" (fitted ~ m^-{self.rate[n]:.2f}); Monte Carlo noise |SE|_F / |K_inf|_F at the "
                         f"largest m: {self.resolution[n][-1]:.2e}"
                         + (" (the distance is below it: at this resolution K_m and K_inf coincide)"
                            if dist[-1] < self.resolution[n][-1] else ""))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def plot(self, path: str | None = None):
        """Left: exact distance to the m = None kernel and the Monte Carlo noise vs m. Right: max |z| of each
        finite-m verification against the threshold. Saves a PNG when ``path`` is given; returns the figure."""
        import matplotlib
        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
        m = np.asarray(self.sharpness)
        for n in self.distance:
            line, = ax.loglog(m, self.distance[n], "o-", label=f"{n}: |K_m - K_inf| / |K_inf| (~ m^-{self.rate[n]:.2f})")
            ax.loglog(m, self.resolution[n], ":", color=line.get_color(), label=f"{n}: Monte Carlo noise at m")
            bx.plot(m, [float(np.max(np.abs(v.z[n][v._mask(n)]))) for v in self.checks], "o-", color=line.get_color(),
                    label=f"{n}: max |z| vs exact K_m")
        thr = self.checks[0].z_threshold
        bx.axhline(thr, color="k", lw=0.8, ls="--", label=f"threshold {thr:g} SE (+ allowance)")
        bx.set_xscale("log")
        for a in (ax, bx):
            a.set_xticks(m, [f"{v:g}" for v in m])
            a.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("sharpness m (forward erf(m x))")
        ax.set_ylabel("relative distance")
        ax.set_title("exact finite-m kernels approach the m = None kernel", fontsize=9)
        bx.set_xlabel("sharpness m")
        bx.set_ylabel("max |z|")
        bx.set_title("finite-width Monte Carlo vs the exact finite-m kernel", fontsize=9)
        ax.legend(fontsize=7)
        bx.legend(fontsize=7)
        fig.suptitle(textwrap.fill(f"{'PASSED' if self.passed else 'FAILED'}: {self.net}", 130), fontsize=9)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig


def verify_sharpness_limit(net: Layer, x1: Any, x2: Any = None, *, sharpness: Sequence[float] | None = None,
                           width: int = 256, widths: Sequence[int] | None = None, samples: int = 256, key: Any = 0,
                           get: Any = ("nngp", "ntk"), exact: Any = None, **verify_kwargs: Any) -> SharpnessLimit:
    """Verify a network with exact sign/step surrogate layers (m = None) through finite sharpness m -> infinity.

    Args:
        net: Architecture with ``SurrogateSign()``/``SurrogateStep()`` at m = None (others are left alone).
        x1, x2: Inputs, as for :func:`kernelalg.verify`.
        sharpness: The ladder of m (None: :func:`sharpness_ladder` of the smallest width).
        width, widths, samples, key, get: As for :func:`kernelalg.verify` (each m gets its own subkey).
        exact: Precomputed exact m = None kernel (``ka.Kernel``); None: ``ka.kernel`` in float64.
        **verify_kwargs: Passed to :func:`kernelalg.verify` (``z_threshold``, ``remainder``, ...).

    Returns:
        A :class:`SharpnessLimit` (``.passed``, ``.checks``, ``.distance``, ``.summary()``, ``.plot(path)``).
    """
    net = as_layer(net)
    names, _ = normalize_get(get)
    widths = tuple(sorted(int(w) for w in widths)) if widths is not None else (int(width), 2 * int(width))
    ladder = tuple(sorted(float(m) for m in (sharpness or sharpness_ladder(widths[0]))))
    if exact is None:
        exact = kernel(net, _to64(x1), None if x2 is None else _to64(x2), names)
    k_inf = {n: np.asarray(getattr(exact, n), np.float64) for n in names}
    keys = jax.random.split(_key(key), len(ladder))
    checks, dist, res = [], {n: [] for n in names}, {n: [] for n in names}
    for m, k in zip(ladder, keys):
        v = verify(with_sharpness(net, m), x1, x2, widths=widths, samples=samples, key=k, get=names,
                   **verify_kwargs)
        checks.append(v)
        for n in names:
            norm = max(float(np.linalg.norm(k_inf[n])), 1e-300)
            dist[n].append(float(np.linalg.norm(v.exact[n] - k_inf[n])) / norm)
            res[n].append(float(np.linalg.norm(v.stderr[n])) / norm)
    rate = {n: float(-np.polyfit(np.log(ladder), np.log(np.maximum(dist[n], 1e-300)), 1)[0]) if len(ladder) > 1
            else math.nan for n in names}
    shrinks = all(bool(np.all(np.diff(dist[n]) < 0)) for n in names)
    return SharpnessLimit(repr(net), ladder, tuple(checks), {n: np.array(d) for n, d in dist.items()},
                          {n: np.array(r) for n, r in res.items()}, rate, all(v.passed for v in checks) and shrinks)
