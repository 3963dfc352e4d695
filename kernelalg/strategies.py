"""Hypothesis strategies for architectures and inputs (property-based testing of kernels).

Requires ``hypothesis`` (the ``test`` extra: ``pip install kernelalg[test]``); importing this module
without it raises ImportError with that fix. Nothing else in kernelalg imports it.

Every activation and layer of the library is reachable: :func:`activations` draws any activation with
hyperparameters in ranges where Monte Carlo second moments are moderate (documented per activation in
``ACTIVATION_NAMES``); :func:`dense_networks` draws depth, activations, hyperparameters, parametrization
and residual branches (``FanOut >> parallel(act >> Dense, Identity) >> FanInSum``); :func:`conv_networks`
draws convolution / pooling / readout stacks; :func:`recurrent_networks` Elman RNNs with readouts;
:func:`transformer_networks` attention / LayerNorm / MLP blocks with residual branches and Dropout on
sequences; :func:`inputs` draws input batches.

Example:
    >>> from hypothesis import given
    >>> from kernelalg import strategies as kst
    >>> @given(kst.dense_networks(), kst.inputs((3,)))
    ... def test_symmetric(net, x): ...
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - exercised only without the test extra
    raise ImportError("kernelalg.strategies needs hypothesis. Fix: pip install 'kernelalg[test]' "
                      "(or pip install hypothesis).") from exc

import sympy as sp

import kernelalg as ka

_F = dict(allow_nan=False, allow_infinity=False)


def _f(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, **_F).map(lambda v: round(v, 3))


def _elementwise_tanh() -> ka.Layer:
    return ka.Elementwise(lambda x: sp.tanh(x), name="tanh")  # Gauss-Hermite route


def _elementwise_xsin() -> ka.Layer:
    return ka.Elementwise(lambda x: x / 2 + sp.sin(x), name="x/2+sin")  # exact (Gaussian MGF) route


#: name -> strategy of that activation layer (hyperparameter ranges keep E[phi^4] moderate for
#: pre-activation variances up to ~3, so Monte Carlo standard errors are reliable).
ACTIVATIONS: dict[str, Callable[[], st.SearchStrategy[ka.Layer]]] = {
    "Relu": lambda: st.just(ka.Relu()),
    "LeakyRelu": lambda: _f(-0.5, 0.5).map(ka.LeakyRelu),
    "ABRelu": lambda: st.tuples(_f(-1.0, 1.0), _f(0.3, 1.2)).map(lambda ab: ka.ABRelu(*ab)),
    "Abs": lambda: st.just(ka.Abs()),
    "Erf": lambda: st.tuples(_f(0.5, 1.5), _f(0.3, 1.5), _f(-0.5, 0.5)).map(lambda p: ka.Erf(*p)),
    "Gelu": lambda: st.just(ka.Gelu(approximate=False)),
    "Sin": lambda: st.tuples(_f(0.5, 1.5), _f(0.3, 1.2), _f(-1.0, 1.0)).map(lambda p: ka.Sin(*p)),
    "Cos": lambda: st.tuples(_f(0.5, 1.5), _f(0.3, 1.2), _f(-1.0, 1.0)).map(lambda p: ka.Cos(*p)),
    "Sign": lambda: st.just(ka.Sign()),
    "Monomial": lambda: st.integers(0, 3).map(ka.Monomial),
    "Hermite": lambda: st.integers(0, 4).map(ka.Hermite),
    "Gabor": lambda: st.just(ka.Gabor()),
    "RectifiedMonomial": lambda: st.integers(0, 2).map(ka.RectifiedMonomial),
    "Polynomial": lambda: st.lists(_f(-1.0, 1.0), min_size=1, max_size=4).map(ka.Polynomial),
    "Exp": lambda: st.tuples(_f(0.3, 1.0), _f(-0.5, 0.5)).map(lambda p: ka.Exp(*p)),
    "Gaussian": lambda: st.tuples(_f(0.5, 1.5), _f(-1.0, -0.1)).map(lambda p: ka.Gaussian(*p)),
    "Rbf": lambda: _f(0.1, 1.5).map(ka.Rbf),
    "Elementwise": lambda: st.sampled_from([_elementwise_tanh, _elementwise_xsin]).map(lambda f: f()),
    "SurrogateSign": lambda: st.tuples(st.sampled_from([1.0, 3.0]), st.sampled_from(["erf", "triangle",
                                                                                             "rectangle"]),
                                       _f(0.5, 2.0)).map(lambda p: ka.SurrogateSign(*p)),
    "SurrogateStep": lambda: st.tuples(st.sampled_from([1.0, 3.0]), st.sampled_from(["erf", "triangle",
                                                                                             "rectangle"]),
                                       _f(0.5, 2.0)).map(lambda p: ka.SurrogateStep(*p)),
}
ACTIVATION_NAMES: tuple[str, ...] = tuple(ACTIVATIONS)
#: Activations whose kernels are positively homogeneous of degree 1 (without biases: K(a x, b x') = a b K).
HOMOGENEOUS: tuple[str, ...] = ("Relu", "LeakyRelu", "ABRelu", "Abs")
#: Activations with an asymmetric NTK (surrogate gradients: J J_tilde^T). Their strategies use a finite
#: sharpness m: at m = None the true derivative is a delta, which no finite network's autodiff reproduces.
ASYMMETRIC: tuple[str, ...] = ("SurrogateSign", "SurrogateStep")


def activations(names: Sequence[str] | None = None) -> st.SearchStrategy[ka.Layer]:
    """Any activation layer (or one of ``names``), hyperparameters drawn too."""
    names = tuple(names) if names is not None else tuple(n for n in ACTIVATION_NAMES if n not in ASYMMETRIC)
    unknown = set(names) - set(ACTIVATIONS)
    if unknown:
        raise ValueError(f"unknown activations {sorted(unknown)}; choose from {ACTIVATION_NAMES}")
    return st.one_of(*(ACTIVATIONS[n]() for n in names))


@st.composite
def dense_networks(draw: Any, depth: tuple[int, int] = (1, 3), activation: st.SearchStrategy | None = None,
                   parameterizations: Sequence[str] = ("ntk", "standard"), residual: bool = True,
                   bias: bool | None = None, hidden_width: int = 64, w_std: tuple[float, float] = (0.6, 1.5),
                   b_std: tuple[float, float] = (0.0, 0.5), must_contain: ka.Layer | None = None) -> ka.Layer:
    """Fully connected networks ``Dense >> [act >> Dense or residual(act >> Dense)] x depth``.

    Args:
        draw: (hypothesis).
        depth: Range of the number of hidden nonlinear layers.
        activation: Strategy of activation layers (default :func:`activations`).
        parameterizations: Drawn per network ("standard" nets declare ``out_dim=hidden_width``).
        residual: Allow residual blocks ``FanOut(2) >> parallel(act >> Dense, Identity()) >> FanInSum()``
            (the network then may end in FanInSum: no readout layer).
        bias: True/False forces biases on/off; None draws per layer (None or a value in ``b_std``).
        hidden_width: Declared width of standard-parametrization layers.
        w_std, b_std: Ranges of the weight / bias standard deviations.
        must_contain: An activation layer placed at a drawn position (to cover it for sure).
    """
    activation = activation if activation is not None else activations()
    # structural choices list the richest option first: hypothesis' first (simplest) example is then a deep,
    # biased, residual network rather than a trivial one
    n_hidden = draw(st.sampled_from(list(range(depth[1], depth[0] - 1, -1))))
    param = draw(st.sampled_from(tuple(parameterizations)))
    out = hidden_width if param == "standard" else None
    slot = draw(st.integers(0, n_hidden - 1)) if must_contain is not None else -1

    def dense(last: bool = False) -> ka.Layer:
        if bias is None:
            b = draw(st.one_of(_f(*b_std), st.none()))
        else:
            b = draw(_f(max(b_std[0], 0.05), b_std[1])) if bias else None
        return ka.Dense(draw(_f(*w_std)), b, param, out_dim=None if last else out)

    layers = [dense()]
    for i in range(n_hidden):
        act = must_contain if i == slot else draw(activation)
        last = i == n_hidden - 1
        if residual and draw(st.sampled_from([True, False])):
            layers.append(ka.FanOut(2) >> ka.parallel(act >> dense(), ka.Identity()) >> ka.FanInSum())
        else:
            layers += [act, dense(last)]
    return ka.serial(*layers)


@st.composite
def conv_networks(draw: Any, ndim: int = 2, depth: tuple[int, int] = (1, 2),
                  activation: st.SearchStrategy | None = None, parameterizations: Sequence[str] = ("ntk",),
                  pooling: bool = True, channels: int = 8) -> ka.Layer:
    """Convolutional networks: [Conv >> act (>> pool)] x depth >> readout (GlobalAvgPool / GlobalSumPool /
    Flatten, then Dense). Filters 2 per axis, strides 1, padding VALID / SAME / CIRCULAR; pooling windows 2
    (SAME padding), so inputs need at least 3 pixels per axis."""
    activation = activation if activation is not None else activations()
    param = draw(st.sampled_from(tuple(parameterizations)))
    out = channels if param == "standard" else None
    layers = []
    for _ in range(draw(st.integers(*depth))):
        b = draw(st.one_of(st.none(), _f(0.0, 0.4)))
        layers.append(ka.Conv((2,) * ndim, padding=draw(st.sampled_from(["VALID", "SAME", "CIRCULAR"])),
                              W_std=draw(_f(0.7, 1.4)), b_std=b, parameterization=param, out_chan=out))
        layers.append(draw(activation))
        if pooling and draw(st.booleans()):
            pool = draw(st.sampled_from([ka.AvgPool, ka.SumPool]))
            layers.append(pool((2,) * ndim, padding="SAME"))
    layers.append(draw(st.sampled_from([ka.GlobalAvgPool, ka.GlobalSumPool, ka.Flatten]))())
    layers.append(ka.Dense(draw(_f(0.7, 1.4)), draw(st.one_of(st.none(), _f(0.0, 0.4))), param))
    return ka.serial(*layers)


@st.composite
def recurrent_networks(draw: Any, activation: st.SearchStrategy | None = None, stacked: bool = True,
                       parameterizations: Sequence[str] = ("ntk",), hidden_width: int = 32) -> ka.Layer:
    """Elman RNNs ``Recurrent(act, W, U, b, readout, bidirectional) >> Dense``; optionally two stacked
    (the first with ``readout="sequence"``)."""
    activation = activation if activation is not None else activations(("Relu", "Erf", "Gelu", "Sin", "Abs"))
    param = draw(st.sampled_from(tuple(parameterizations)))
    out = hidden_width if param == "standard" else None

    def rnn(readout: str) -> ka.Layer:
        return ka.Recurrent(draw(activation), W_std=draw(_f(0.5, 1.1)), U_std=draw(_f(0.7, 1.4)),
                            b_std=draw(st.one_of(st.none(), _f(0.0, 0.4))), readout=readout,
                            parameterization=param, bidirectional=draw(st.booleans()), out_dim=out)
    layers = []
    if stacked and draw(st.booleans()):
        layers.append(rnn("sequence"))
    layers.append(rnn(draw(st.sampled_from(["last", "mean"]))))
    layers.append(ka.Dense(draw(_f(0.7, 1.4)), draw(st.one_of(st.none(), _f(0.0, 0.4))), param))
    return ka.serial(*layers)


@st.composite
def transformer_networks(draw: Any, depth: tuple[int, int] = (1, 2), activation: st.SearchStrategy | None = None,
                         dropout: bool = True) -> ka.Layer:
    """Transformer-style networks on sequences (batch, length, channels): ``Dense >> [residual(attention) (>>
    LayerNorm) >> residual(Dense >> act (>> Dropout) >> Dense) (>> LayerNorm)] x depth >> readout >> Dense``.
    Attention: linear logit scaling with any mechanism, or 1/sqrt scaling with identity, abs or relu weights; positional
    embeddings none / summed / concatenated, in the values or not; the readout GlobalAvgPool, GlobalSumPool or
    Flatten."""
    activation = activation if activation is not None else activations(("Relu", "Erf", "Gelu", "Abs"))

    def residual(branch: ka.Layer) -> ka.Layer:
        return ka.FanOut(2) >> ka.parallel(branch, ka.Identity()) >> ka.FanInSum()

    def bias() -> float | None:
        return draw(st.one_of(_f(0.05, 0.3), st.none()))

    def maybe() -> bool:  # the richest option first: hypothesis' first example is then a full block
        return draw(st.sampled_from([True, False]))

    layers = [ka.Dense(draw(_f(0.7, 1.3)), bias())]
    for _ in range(draw(st.sampled_from(list(range(depth[1], depth[0] - 1, -1))))):
        linear = maybe()
        mech = draw(st.sampled_from(["SOFTMAX", "IDENTITY", "ABS", "RELU"][0 if linear else 1:]))
        pos = draw(st.sampled_from(["SUM", "CONCAT", "NONE"]))
        layers.append(residual(ka.GlobalSelfAttention(
            linear, W_key_std=draw(_f(0.5, 1.5)), W_value_std=draw(_f(0.7, 1.3)), b_std=bias(), attention_mechanism=mech,
            pos_emb_type=pos, W_pos_emb_std=draw(_f(0.5, 1.2)), val_pos_emb=maybe())))
        if maybe():
            layers.append(ka.LayerNorm(eps=draw(st.sampled_from([1e-12, 0.1]))))
        mlp = [ka.Dense(draw(_f(0.7, 1.3)), bias()), draw(activation)]
        if dropout and maybe():
            mlp.append(ka.Dropout(draw(_f(0.6, 1.0))))
        layers.append(residual(ka.serial(*mlp, ka.Dense(draw(_f(0.7, 1.3)), bias()))))
        if maybe():
            layers.append(ka.LayerNorm())
    layers.append(draw(st.sampled_from([ka.GlobalAvgPool, ka.GlobalSumPool, ka.Flatten]))())
    layers.append(ka.Dense(draw(_f(0.7, 1.3)), bias()))
    return ka.serial(*layers)


@st.composite
def inputs(draw: Any, shape: tuple[int, ...], n: int | tuple[int, int] = 3, scale: tuple[float, float] = (0.6, 1.3),
           dtype: Any = np.float32) -> np.ndarray:
    """A batch (n, *shape) of Gaussian inputs with per-row scales in ``scale`` (rows never vanish)."""
    n = draw(st.integers(*n)) if isinstance(n, tuple) else n
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + tuple(shape))
    rms = np.sqrt(np.mean(x.reshape(n, -1) ** 2, axis=1)).reshape((n,) + (1,) * len(shape))
    s = np.asarray([draw(_f(*scale)) for _ in range(n)]).reshape(rms.shape)
    return (x / rms * s).astype(dtype)


def architectures(dense_dim: int = 3, image: tuple[int, ...] = (3, 3, 2), steps: tuple[int, int] = (3, 2)
                  ) -> st.SearchStrategy[tuple[ka.Layer, tuple[int, ...]]]:
    """(network, input shape) pairs over every family: dense, convolutional (``image``), recurrent and
    transformer (``steps`` = (T, features))."""
    return st.one_of(dense_networks().map(lambda net: (net, (dense_dim,))),
                     conv_networks(ndim=len(image) - 1).map(lambda net: (net, tuple(image))),
                     recurrent_networks().map(lambda net: (net, tuple(steps))),
                     transformer_networks().map(lambda net: (net, tuple(steps))))


__all__ = ["ACTIVATIONS", "ACTIVATION_NAMES", "ASYMMETRIC", "HOMOGENEOUS", "activations", "architectures",
           "conv_networks", "dense_networks", "inputs", "recurrent_networks", "transformer_networks"]
