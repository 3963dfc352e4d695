"""``ka.verify_sharpness_limit``: the SG-NTK of exact sign/step networks (m = None) as a limit of checkable ones.

At m = None the finite-width twin's sign has a true derivative 0 almost everywhere, so Monte Carlo over
finite networks estimates only the readout part of J J_tilde^T: the m = None SG-NTK is not the width limit of
those twins but the limit m -> infinity of the finite-sharpness kernels (forward erf(m x)), each of which IS the
width limit of its twins (Eilers, Memmesheimer, Goedeke, NeurIPS 2024). The check follows that order of limits:

1. for each m of a ladder, ``ka.verify`` of the network at sharpness m against its exact finite-m kernel
   (entrywise and decorrelated tests at the given widths);
2. the exact finite-m kernels approach the m = None kernel (no Monte Carlo: the finite-m closed form checked
   in 1 is evaluated further out, at :func:`limit_sharpness`). Their distance |K_m - K_inf| is O(1/m), led by
   the NNGP diagonal (2/pi) arcsin(2 m^2 s / (1 + 2 m^2 s)) = 1 - (2/pi) / (m sqrt(s)) + ..., so Richardson's
   extrapolation of the last two, K_hat = (r K_{r m} - K_m) / (r - 1), must land on K_inf: the check passes when
   |K_hat - K_inf| <= ``remainder`` |K_{r m} - K_inf| (the same 0.25 as the width extrapolation's allowance; a
   kernel off by more than about a quarter of the last distance, 1e-5 relative here, fails). That the limit
   is the m = None closed form is also checked symbolically in tests/test_surrogate.py.

The m-dependence is controlled by the width: the true derivative of erf(m x) is a spike of width ~1/m, so a
layer of n units has about 0.8 n / (m sqrt(s)) units inside it per input (pre-activation variance s);
m <= n / :data:`UNITS_PER_SHARPNESS` keeps about 13 of them at s ~ 1, so every network's kernel is an average
over many units and the standard errors hold.
"""

from __future__ import annotations

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


#: Ratio of consecutive sharpness values (ladder and limit).
FACTOR = 4.0
#: The limit part starts at least here (m sqrt(s) >> 1 for pre-activation variances s down to ~1e-2).
LIMIT_START = 256.0


def sharpness_ladder(width: int, count: int = 3) -> tuple[float, ...]:
    """``count`` sharpness values up to width / UNITS_PER_SHARPNESS, a factor FACTOR apart, increasing."""
    top = width / UNITS_PER_SHARPNESS
    return tuple(top / FACTOR**i for i in reversed(range(count)))


def limit_sharpness(top: float, count: int = 3) -> tuple[float, ...]:
    """The exact-only sharpness values beyond the Monte Carlo ladder (largest ``top``): from
    max(LIMIT_START, FACTOR top) on, a factor FACTOR apart."""
    start = max(LIMIT_START, FACTOR * top)
    return tuple(start * FACTOR**i for i in range(count))


@dataclass(frozen=True)
class SharpnessLimit:
    """Finite-sharpness verifications and the distance of their exact kernels to the m = None kernel.

    Attributes:
        net: repr of the m = None architecture.
        sharpness: The Monte Carlo ladder of m, increasing.
        checks: One :class:`Verification` per ladder m (the network at sharpness m vs its exact kernel).
        limit: The exact-only m beyond the ladder, increasing.
        distance: {name: |K_m - K_inf|_F / |K_inf|_F over sharpness + limit} (exact kernels, float64).
        resolution: {name: (len(sharpness),) Monte Carlo noise |SE_m|_F / |K_inf|_F at each ladder m}.
        rate: {name: p of the least-squares fit distance ~ C m^-p over the limit m}.
        extrapolated: {name: |K_hat - K_inf|_F / |K_{m_last} - K_inf|_F} (Richardson over the last two m).
        remainder: Pass threshold of ``extrapolated``.
        passed: Every verification passed and every ``extrapolated`` <= remainder.
    """

    net: str
    sharpness: tuple[float, ...]
    checks: tuple[Verification, ...]
    limit: tuple[float, ...]
    distance: dict
    resolution: dict
    rate: dict
    extrapolated: dict
    remainder: float
    passed: bool

    @property
    def limit_passed(self) -> bool:
        """The exact finite-m kernels extrapolate to the m = None kernel."""
        return all(r <= self.remainder for r in self.extrapolated.values())

    def summary(self) -> str:
        lines = [f"verify_sharpness_limit {self.net}: {'PASSED' if self.passed else 'FAILED'} (m = "
                 + ", ".join(f"{m:g}" for m in self.sharpness) + ")"]
        for m, v in zip(self.sharpness, self.checks):
            lines.append(f"  m = {m:g}: Monte Carlo vs exact finite-m kernel {'passed' if v.passed else 'FAILED'}, "
                         f"max |z| = {v.max_abs_z:.2f}, decorrelated p = "
                         + ", ".join(f"{d.p_value:.2g}" for d in v.decorrelated.values()))
        ms = self.sharpness + self.limit
        for n, dist in self.distance.items():
            top, noise = dist[len(self.sharpness) - 1], self.resolution[n][-1]
            lines.append(f"  {n}: |K_m - K_inf| / |K_inf| = "
                         + ", ".join(f"{d:.2e} (m={m:g})" for d, m in zip(dist, ms))
                         + f"; ~ m^-{self.rate[n]:.2f}; Richardson limit of the last two off K_inf by "
                         f"{self.extrapolated[n]:.3f} x the last distance (threshold {self.remainder:g}) -> "
                         f"{'ok' if self.extrapolated[n] <= self.remainder else 'FAIL'}; Monte Carlo noise at "
                         f"m = {self.sharpness[-1]:g}: {noise:.2e} "
                         + ("(larger than the distance: there the Monte Carlo cannot tell K_m from K_inf)"
                            if top < noise else
                            "(smaller than the distance: the step to m = None rests on the exact kernels)"))
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
        m, lm, k = np.asarray(self.sharpness), np.asarray(self.limit), len(self.sharpness)
        for n in self.distance:
            d = self.distance[n]
            line, = ax.loglog(m, d[:k], "o-", label=f"{n}: |K_m - K_inf| / |K_inf|, Monte Carlo checked")
            c = line.get_color()
            ax.loglog(np.r_[m[-1:], lm], d[k - 1:], "s--", mfc="none", color=c,
                      label=f"{n}: exact only (~ m^-{self.rate[n]:.2f})")
            ax.loglog(m, self.resolution[n], ":", color=c, label=f"{n}: Monte Carlo noise at m")
            bx.plot(m, [float(np.max(np.abs(v.z[n][v._mask(n)]))) for v in self.checks], "o-", color=line.get_color(),
                    label=f"{n}: max |z| vs exact K_m")
        thr = self.checks[0].z_threshold
        bx.axhline(thr, color="k", lw=0.8, ls="--", label=f"threshold {thr:g} SE (+ allowance)")
        bx.set_xscale("log")
        for a, ticks in ((ax, np.r_[m, lm]), (bx, m)):
            a.set_xticks(ticks, [f"{v:g}" for v in ticks])
            a.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("sharpness m (forward erf(m x))")
        ax.set_ylabel("relative distance")
        ax.set_title("finite-m kernels approach the m = None kernel", fontsize=9)
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
        sharpness: The Monte Carlo ladder of m (None: :func:`sharpness_ladder` of the smallest width).
        width, widths, samples, key, get: As for :func:`kernelalg.verify` (each m gets its own subkey).
        exact: Precomputed exact m = None kernel (``ka.Kernel``); None: ``ka.kernel`` in float64.
        **verify_kwargs: Passed to :func:`kernelalg.verify` (``z_threshold``, ``remainder``, ...); ``remainder``
            (default 0.25) is also the threshold of the m-extrapolation.

    Returns:
        A :class:`SharpnessLimit` (``.passed``, ``.checks``, ``.distance``, ``.summary()``, ``.plot(path)``).
    """
    net = as_layer(net)
    names, _ = normalize_get(get)
    widths = tuple(sorted(int(w) for w in widths)) if widths is not None else (int(width), 2 * int(width))
    ladder = tuple(sorted(float(m) for m in (sharpness or sharpness_ladder(widths[0]))))
    limit = limit_sharpness(ladder[-1])
    remainder = float(verify_kwargs.get("remainder", 0.25))
    x1_64, x2_64 = _to64(x1), None if x2 is None else _to64(x2)
    if exact is None:
        exact = kernel(net, x1_64, x2_64, names)
    k_inf = {n: np.asarray(getattr(exact, n), np.float64) for n in names}
    keys = jax.random.split(_key(key), len(ladder))
    checks = tuple(verify(with_sharpness(net, m), x1, x2, widths=widths, samples=samples, key=k, get=names,
                          **verify_kwargs) for m, k in zip(ladder, keys))
    far = [kernel(with_sharpness(net, m), x1_64, x2_64, names) for m in limit]
    dist, res, rate, extra = {}, {}, {}, {}
    for n in names:
        norm = max(float(np.linalg.norm(k_inf[n])), 1e-300)
        ks = [v.exact[n] for v in checks] + [np.asarray(getattr(f, n), np.float64) for f in far]
        dist[n] = np.array([float(np.linalg.norm(k - k_inf[n])) / norm for k in ks])
        res[n] = np.array([float(np.linalg.norm(v.stderr[n])) / norm for v in checks])
        rate[n] = float(-np.polyfit(np.log(limit), np.log(np.maximum(dist[n][len(ladder):], 1e-300)), 1)[0])
        r = limit[-1] / limit[-2]
        k_hat = (r * ks[-1] - ks[-2]) / (r - 1)
        extra[n] = float(np.linalg.norm(k_hat - k_inf[n])) / max(float(np.linalg.norm(ks[-1] - k_inf[n])), 1e-300)
    passed = all(v.passed for v in checks) and all(e <= remainder for e in extra.values())
    return SharpnessLimit(repr(net), ladder, checks, limit, dist, res, rate, extra, remainder, passed)
