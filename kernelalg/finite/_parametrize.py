"""abc-parametrizations of finite networks: standard, NTK, mean-field and muP (Yang & Hu 2021).

An abc-parametrization gives every affine layer a multiplier ``n^{-a}``, an initialisation scale ``n^{-b}``
and a learning rate ``eta n^{-c}`` (width n). kernelalg names layers by kind: the *input* layer (fan-in
d fixed, n its fan-out), *hidden* layers and the *output* (readout) layer (n their fan-in). Biases of the
input and hidden layers scale like input weights (n their fan-out); the readout's bias is not scaled (its
fan-out, the number of outputs, does not grow). Constants: ``W_std / sqrt(d)`` on the input layer, ``W_std``
elsewhere, ``b_std`` on biases (see :class:`kernelalg.layers._affine.AffineScaling`).

Tables (exponents for input, hidden, output; Yang & Hu 2021, Table 1 and Sec. 3; Yang et al. 2021,
"Tensor Programs V", Table 3 for Adam, moved to this form by the symmetry of abc-parametrizations
``(a, b, c) -> (a + t, b - t, c - 2t)`` for SGD and ``(a + t, b - t, c - t)`` for Adam):

=============  ================  ===================  ==============  ================
name           a                 b                    c (SGD)         c (Adam)
=============  ================  ===================  ==============  ================
"standard"     0, 0, 0           0, 1/2, 1/2          0, 0, 0         0, 0, 0
"ntk"          0, 1/2, 1/2       0, 0, 0              0, 0, 0         0, 0, 0
"mup"          -1/2, 0, 1/2      1/2, 1/2, 1/2        0, 0, 0         1/2, 1, 1/2
"mean_field"   0, 1/2, 1         0, 0, 0              -1, -1, -1      0, 1/2, 0
=============  ================  ===================  ==============  ================

"standard" and "ntk" reproduce the layers' own parametrizations exactly; "mean_field" is muP moved by the
symmetry (for two layers it is the mean-field network f = (1/n) sum_i v_i phi(w_i x) trained at rate eta n),
so both give the same training trajectories. :func:`regime` classifies a table by Yang & Hu's Theorem 3.3
(stable, nontrivial, kernel or feature learning); :func:`limit_kernel` returns the infinite-width kernel
where one exists and refuses where training is not a kernel's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from kernelalg.backends._compile import Kernel, kernel
from kernelalg.core import _errors as E
from kernelalg.core._layer import Layer, as_layer
from kernelalg.layers._affine import AffineScaling

KINDS = ("input", "hidden", "output")
RULES = ("sgd", "adam")
BAD_NAME = "parametrization={name!r} is not known. Fix: use one of {known}, or a ka.Parametrization(...)."
NEEDS_CHAIN = ("parametrization={name!r} needs a top-level chain of affine layers (Dense, Conv) and parameter-free "
               "layers with at least two affine layers and a readout; got {why}. Fix: write the network as "
               "Dense(...) >> activation >> ... >> Dense(...), or leave parametrization=None.")
NO_LIMIT = ("under the {name!r} parametrization the outputs or the tangent kernel of some layer scale as width^{e:g}: "
            "there is no finite nonzero infinite-width limit. Fix: use parametrization='ntk', or ka.kernel(net) with the layers' "
            "own parameterization='standard' for the finite-width formula.")
NOT_A_KERNEL = ("under the {name!r} parametrization the infinite-width limit of training is not a kernel ({why}). "
                "Fix: use parametrization='ntk' for the kernel (lazy) limit, train the finite network with "
                "ka.train, or ask for the kernel at initialisation with limit_kernel(..., training=False).")


class FeatureLearningError(E.KernelalgError):
    """The infinite-width limit learns features: its training is not described by a fixed kernel."""


@dataclass(frozen=True)
class Parametrization:
    """Width exponents per kind of affine layer ("input", "hidden", "output").

    Attributes:
        name: Display name.
        a: Multiplier exponents (input, hidden, output).
        b: Initialisation exponents.
        c_sgd: Learning-rate exponents for SGD-like updates (gradient descent, momentum).
        c_adam: Learning-rate exponents for Adam-like (normalised) updates.
        constants: Where ``W_std``, ``b_std`` and ``1/sqrt(d)`` go: "multiplier" or "init".
    """

    name: str
    a: tuple[float, float, float]
    b: tuple[float, float, float]
    c_sgd: tuple[float, float, float]
    c_adam: tuple[float, float, float]
    constants: str = "multiplier"

    def scaling(self, kind: str) -> AffineScaling:
        """The twin's :class:`AffineScaling` of a layer of this kind (biases follow the input layer's
        exponents, except the readout's, which is not scaled)."""
        i = KINDS.index(kind)
        ab, bb = (0.0, 0.0) if kind == "output" else (self.a[0], self.b[0])
        return AffineScaling(kind, self.a[i], self.b[i], ab, bb, self.constants)

    def lr_exponents(self, rule: str | None) -> tuple[float, float, float] | None:
        """c for the update rule (None when every exponent is 0 for both rules, or raises if the rule matters)."""
        if not any(self.c_sgd) and not any(self.c_adam):
            return None
        if rule not in RULES:
            raise E.KernelalgError(f"the {self.name!r} parametrization scales learning rates per layer, differently for "
                                   f"SGD and Adam: lr_rule={rule!r}. Fix: pass lr_rule='sgd' (gradient descent, "
                                   "momentum) or lr_rule='adam' (Adam and other normalised updates).")
        c = self.c_sgd if rule == "sgd" else self.c_adam
        return c if any(c) else None


PARAMETRIZATIONS = {
    "standard": Parametrization("standard", (0.0, 0.0, 0.0), (0.0, 0.5, 0.5), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0),
                                "init"),
    "ntk": Parametrization("ntk", (0.0, 0.5, 0.5), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    "mup": Parametrization("mup", (-0.5, 0.0, 0.5), (0.5, 0.5, 0.5), (0.0, 0.0, 0.0), (0.5, 1.0, 0.5)),
    "mean_field": Parametrization("mean_field", (0.0, 0.5, 1.0), (0.0, 0.0, 0.0), (-1.0, -1.0, -1.0),
                                  (0.0, 0.5, 0.0)),
}


def as_parametrization(p: str | Parametrization) -> Parametrization:
    """A table by name, or the given :class:`Parametrization`."""
    if isinstance(p, Parametrization):
        return p
    if p not in PARAMETRIZATIONS:
        raise E.KernelalgError(BAD_NAME.format(name=p, known=sorted(PARAMETRIZATIONS)))
    return PARAMETRIZATIONS[p]


def layer_kinds(chain: tuple[Layer, ...], name: str) -> list[str | None]:
    """The kind of every leaf of a top-level chain (None for parameter-free leaves), or a clear error."""
    affine = [i for i, c in enumerate(chain) if c.role == "affine"]
    bad = [c.name for c in chain if c.children or c.role not in ("affine", "activation", "pooling", "reshape",
                                                                   "identity")]
    if bad or len(affine) < 2:
        why = f"layers {bad}" if bad else f"{len(affine)} affine layer(s)"
        raise E.KernelalgError(NEEDS_CHAIN.format(name=name, why=why))
    if any(not c.transparent for c in chain[affine[-1] + 1:]):
        raise E.KernelalgError(NEEDS_CHAIN.format(name=name, why="no readout (the last affine layer is followed by "
                                                                 "a nonlinearity)"))
    kinds: list[str | None] = [None] * len(chain)
    for i in affine:
        kinds[i] = "input" if i == affine[0] else "output" if i == affine[-1] else "hidden"
    return kinds


def apply_parametrization(chain: tuple[Layer, ...], p: Parametrization) -> tuple[Layer, ...]:
    """The chain with every affine leaf's static settings carrying its :class:`AffineScaling`."""
    kinds = layer_kinds(chain, p.name)
    return tuple(c if k is None else dataclasses.replace(c, static=tuple(c.static) + (("scaling", p.scaling(k)),))
                 for c, k in zip(chain, kinds))


@dataclass(frozen=True)
class Regime:
    """Yang & Hu (2021), Def. 3.2 and Thm. 3.3, for SGD at one learning-rate exponent c.

    Attributes:
        r: ``min(a_out + b_out, 2 a_out + c) + c - 1 + min_l (2 a_l + [l = 1])`` over input and hidden layers:
            the hidden features move by Theta(n^{-r}) in one step.
        stable: ``a_in + b_in = 0``, ``a_l + b_l = 1/2`` (hidden), ``a_out + b_out >= 1/2``, ``r >= 0``,
            ``2 a_out + c >= 1`` and ``a_out + b_out + r >= 1`` (nothing blows up with the width).
        nontrivial: ``2 a_out + c = 1`` or ``a_out + b_out + r = 1`` (the function moves by Theta(1)).
        kind: "unstable", "trivial", "kernel" (r > 0) or "feature learning" (r = 0).
    """

    r: float
    stable: bool
    nontrivial: bool
    kind: str


def regime(p: str | Parametrization, hidden_layers: int = 1) -> Regime:
    """Classify an abc-parametrization trained by SGD (hidden_layers = L - 1 affine layers between input and output)."""
    p = as_parametrization(p)
    if len(set(p.c_sgd)) != 1:
        raise E.KernelalgError(f"regime: the SGD learning-rate exponents of {p.name!r} differ between layers "
                               f"{p.c_sgd}; Yang & Hu's classification takes one c. Fix: use a uniform c.")
    (a1, ah, ao), (b1, bh, bo), c = p.a, p.b, p.c_sgd[0]
    inner = min([2 * a1 + 1] + [2 * ah] * hidden_layers)
    r = min(ao + bo, 2 * ao + c) + c - 1 + inner
    stable = (a1 + b1 == 0 and (hidden_layers == 0 or ah + bh == 0.5) and ao + bo >= 0.5 and r >= 0
              and 2 * ao + c >= 1 and ao + bo + r >= 1)
    nontrivial = 2 * ao + c == 1 or ao + bo + r == 1
    kind = "unstable" if not stable else "trivial" if not nontrivial else "kernel" if r > 0 else "feature learning"
    return Regime(r, stable, nontrivial, kind)


def _as_ntk(layer: Layer) -> Layer:
    """The same architecture with every affine layer in the NTK parametrization."""
    if layer.children:
        return dataclasses.replace(layer, children=tuple(_as_ntk(c) for c in layer.children))
    if layer.role != "affine":
        return layer
    return dataclasses.replace(layer, static=tuple((k, "ntk" if k == "parameterization" else v) for k, v in layer.static))


def limit_kernel(net: Layer, parametrization: str | Parametrization, x1: Any, x2: Any = None, *,
                 training: bool = True) -> Kernel:
    """The infinite-width NNGP and (learning-rate weighted) NTK of ``ka.finite(net, n, parametrization=...)``.

    At initialisation (``training=False``) every table above has a limit as long as the tangent kernel of each
    layer neither vanishes nor diverges: relative to the NTK parametrization, layer l's contribution scales
    as n^{e_l} with ``e = -c - 2a - 2s + 2a_ntk`` (s = a_out + b_out - 1/2, the output's extra decay) and the
    outputs as n^{-s}. So muP and mean-field have the NTK-parametrization NTK and an NNGP reduced to the
    readout bias (``b_std^2``): their outputs start at O(n^{-1/2}). With ``training=True`` the kernel is
    returned only in the kernel regime (:func:`regime`); feature learning raises :class:`FeatureLearningError`.

    Args:
        net: Architecture (a top-level chain, as ``ka.finite(..., parametrization=)`` needs).
        parametrization: A table name or a :class:`Parametrization`.
        x1, x2: Inputs.
        training: Whether the kernel must also describe training (SGD) or only initialisation.
    """
    p = as_parametrization(parametrization)
    net = as_layer(net)
    chain = net.children if net.is_serial else (net,)
    kinds = [k for k in layer_kinds(chain, p.name) if k is not None]
    hidden = sum(k == "hidden" for k in kinds)
    if training:
        reg = regime(p, hidden)
        if reg.kind != "kernel":
            err = FeatureLearningError if reg.kind == "feature learning" else E.KernelalgError
            raise err(NOT_A_KERNEL.format(name=p.name, why=f"{reg.kind}, r = {reg.r:g}"))
    s = p.a[2] + p.b[2] - 0.5
    c = p.c_sgd
    a_ntk = (0.0, 0.5, 0.5)
    exps = [-c[0] - 2 * p.a[0] - 2 * s, -c[2] - 2 * p.a[2] + 2 * a_ntk[2]]
    exps += [-c[i] - 2 * p.a[i] - 2 * s + 2 * a_ntk[i] for i in (0, 1) if i == 0 or hidden]
    if s < 0 or any(e != 0 for e in exps):
        raise E.KernelalgError(NO_LIMIT.format(name=p.name, e=-2 * s if s < 0 else max(exps, key=abs)))
    k = kernel(_as_ntk(net), x1, x2, get=("nngp", "ntk"))
    if s == 0:
        return k
    readout = chain[max(i for i, c in enumerate(chain) if c.role == "affine")]
    bias = dict(readout.params).get("b_std") or 0.0
    return Kernel(nngp=k.nngp * 0 + bias ** 2, ntk=k.ntk, cov1=k.cov1 * 0 + bias ** 2, cov2=k.cov2 * 0 + bias ** 2)
