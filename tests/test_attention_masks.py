"""GlobalSelfAttention on masked inputs (``mask_constant``; issue #17): neural-tangents 0.6.5's semantics.

Expected values are independent of the code under test:

* neural-tangents 0.6.5 itself (``kernel_fn(x1, x2, get, mask_constant=c)``) on 1-D sequences of different
  lengths padded with the constant, stored in tests/data/nt_attention_masks_reference.npz by
  benchmarks/make_nt_attention_masks_reference.py: linear scaling with softmax / identity / abs / relu weights,
  1/sqrt(n_key) scaling with identity weights, with and without positional embeddings, GlobalAvgPool and Flatten
  readouts; float64 agreement to 1e-10 relative, NNGP and NTK, x2 = None and x2 given;
* brute force by construction: without positional embeddings a sequence padded with masked positions (anywhere,
  not only at the end) has the kernel -- and, with the same weights, the finite twin has the output -- of the
  shorter sequence without them (GlobalAvgPool readout);
* Monte Carlo over the masked finite twin (softmax attention after a Dense embedding, whose output at the
  masked positions is its bias, so the masked keys would change the result if they were not excluded):
  widths (16, 32), Richardson-extrapolated, |z| <= 5 per entry (chance failure < 6e-7 per entry); a power check
  that the estimate rejects the kernel of the same inputs without masks.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernelalg as ka

NT = np.load(Path(__file__).resolve().parent / "data" / "nt_attention_masks_reference.npz")
CASES = sorted({k.split(".")[0] for k in NT.files if not k.startswith("_")})
#: The positional-embedding decays named in the fixture (the maker uses the same functions in jax.numpy).
DECAYS = {"exp_half": lambda d: np.exp(-d / 2)}
Z_MAX = 5.0
C_MASK = -1.0


@pytest.fixture(autouse=True, scope="module")
def _float64():
    """float64 for this module only (a global switch would change every test collected after it)."""
    with jax.enable_x64(True):
        yield


def _layer(name: str, args: list, kw: dict) -> ka.Layer:
    """kernelalg's layer for an NT spec (NT's leading widths become keywords)."""
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}
    if name == "Dense":
        return ka.Dense(out_dim=args[0], **kw)
    if name == "GlobalSelfAttention":
        if "pos_emb_decay_fn" in kw:
            kw["pos_emb_decay_fn"] = DECAYS[kw["pos_emb_decay_fn"]]
        out, key, val, heads = args
        return ka.GlobalSelfAttention(n_chan_out=out, n_chan_key=key, n_chan_val=val, n_heads=heads, **kw)
    return getattr(ka, name)(*args, **kw)


@functools.lru_cache(maxsize=None)
def _net(case: str) -> ka.Layer:
    """The case's network, one object per case (its compiled kernels are reused across tests)."""
    return ka.serial(*[_layer(*spec) for spec in json.loads(str(NT[f"{case}.spec"]))])


def test_nt_reference_covers_every_case() -> None:
    assert set(CASES) == {"softmax_gap", "softmax_sum_pos_flatten", "identity_concat_valpos_gap",
                          "relu_decay_pos_flatten", "abs_gap", "sqrt_identity_gap", "sqrt_identity_concat_flatten",
                          "sqrt_identity_sum_valpos_gap", "two_layers_gap"}


#: The default run: softmax without and with embeddings (GlobalAvgPool, Flatten), 1/sqrt identity with
#: embeddings; the rest under -m slow.
FAST = ("softmax_gap", "softmax_sum_pos_flatten", "sqrt_identity_concat_flatten")


@pytest.mark.parametrize("case", [c if c in FAST else pytest.param(c, marks=pytest.mark.slow) for c in CASES])
def test_agrees_with_neural_tangents(case: str) -> None:
    net, c = _net(case), float(NT[f"{case}.c"])
    x1, x2 = NT[f"{case}.x1"], NT[f"{case}.x2"]
    for call, b in (("sym", None), ("cross", x2)):
        k = ka.kernel(net, x1, b, mask_constant=c)
        for field in ("nngp", "ntk"):
            got, want = np.asarray(getattr(k, field)), NT[f"{case}.{call}.{field}"]
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * np.abs(want).max(),
                                       err_msg=f"{case} {call} {field}")


def test_float32() -> None:
    """float32 inputs give float32 kernels near neural-tangents' float64 ones."""
    case = "softmax_gap"
    with jax.enable_x64(False):
        k = ka.kernel(_net(case), NT[f"{case}.x1"].astype(np.float32), mask_constant=float(NT[f"{case}.c"]))
        assert k.ntk.dtype == np.float32
    want = NT[f"{case}.sym.ntk"]  # float32 rounding, relative to the largest entry (one is 3e4 times smaller)
    np.testing.assert_allclose(np.asarray(k.ntk), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


# ------------------------------------------------------------------------------------------------- brute force

RNG = np.random.default_rng(31)
SEQ = RNG.normal(size=(3, 6, 3))
SEQ[1, 2] = C_MASK  # one masked position inside
SEQ[2, :2] = SEQ[2, 4:] = C_MASK  # masked at both ends
VALID = [np.arange(6), np.array([0, 1, 3, 4, 5]), np.array([2, 3])]


def _padded_net(mech: str, linear: bool) -> ka.Layer:
    gsa = ka.GlobalSelfAttention(linear_scaling=linear, attention_mechanism=mech, W_key_std=1.4, b_std=0.1)
    return ka.Dense(1.2, 0.2) >> gsa >> ka.Relu() >> ka.GlobalAvgPool() >> ka.Dense(1.1, 0.05)


@pytest.mark.parametrize("mech, linear", [("SOFTMAX", True), pytest.param("ABS", False, marks=pytest.mark.slow),
                                          pytest.param("RELU", False, marks=pytest.mark.slow)])
def test_padded_sequence_is_the_shorter_sequence(mech: str, linear: bool) -> None:
    """Brute force by construction: each padded sequence's NNGP and NTK with itself are those of its valid
    positions alone (1/sqrt scaling with abs or relu weights has no neural-tangents kernel: this is its check)."""
    net = _padded_net(mech, linear)
    padded = ka.kernel(net, SEQ, mask_constant=C_MASK)
    for i in (1, 2):  # the padded ones
        alone = ka.kernel(net, SEQ[i:i + 1, VALID[i]])
        for field in ("nngp", "ntk"):
            got, want = np.asarray(getattr(padded, field))[i, i], np.asarray(getattr(alone, field))[0, 0]
            np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=f"sequence {i} {field}")


def _unit_gaussians(twin: ka.FiniteNet, in_shape: tuple, samples: int | None, seed: int) -> list:
    """Network parameters of ``twin`` drawn with NumPy (all unit Gaussians in the NTK parametrization, as its
    ``init``; compiling jax.random for every parameter shape would take most of this module's time)."""
    rng = np.random.default_rng(seed)
    lead = () if samples is None else (samples,)
    return jax.tree_util.tree_map(lambda s: rng.standard_normal(lead + s.shape).astype(s.dtype),
                                  jax.eval_shape(lambda: twin.init(0, in_shape)))


def test_finite_twin_of_padded_sequence_is_the_shorter_sequence() -> None:
    """Brute force on the finite twin: the same weights give a padded sequence with mask_constant the output of
    its valid positions alone (and another output without the mask)."""
    twin = ka.finite(_padded_net("SOFTMAX", True), 6)
    p = _unit_gaussians(twin, SEQ.shape[1:], None, 3)
    masked, plain = jax.jit(lambda q, x: twin.apply(q, x, mask_constant=C_MASK)), jax.jit(twin.apply)
    padded = np.asarray(masked(p, SEQ))
    for i, keep in enumerate(VALID):
        alone = np.asarray(plain(p, SEQ[i:i + 1, keep]))
        np.testing.assert_allclose(padded[i], alone[0], rtol=1e-12, err_msg=f"sequence {i}")
    unmasked = np.asarray(plain(p, np.where(SEQ == C_MASK, 0.0, SEQ)))
    assert not np.allclose(unmasked[1:], padded[1:])


# ------------------------------------------------------------------------------------------------ Monte Carlo


def _draws(net: ka.Layer, x: np.ndarray, n1: int, width: int, samples: int, key: int) -> tuple:
    """Per-network NNGP f(x1) f(x2) and NTK J(x1) J(x2)^T of the masked twin, (samples, n1, n2) each, float32."""
    twin = ka.finite(net, width)

    def one(p: list) -> tuple:
        f = (lambda q: twin.apply(q, xs, mask_constant=C_MASK)[:, 0])
        out, jac = f(p), jax.jacrev(f)(p)
        ntk = sum(jnp.einsum("n...,m...->nm", j[:n1], j[n1:]) for j in jax.tree_util.tree_leaves(jac))
        return jnp.outer(out[:n1], out[n1:]), ntk

    with jax.enable_x64(False):
        xs = jnp.asarray(x, jnp.float32)
        nngp, ntk = jax.jit(jax.vmap(one))(_unit_gaussians(twin, x.shape[1:], samples, key))
    return np.asarray(nngp, np.float64), np.asarray(ntk, np.float64)


def test_monte_carlo_masked_twin() -> None:
    """Softmax attention after a Dense embedding on padded sequences: the twins at widths (16, 32), 1024 networks
    each, extrapolated as E_16 -> 2 E_32 - E_16 (bias O(1/n)); 12 z-scores (6 entries x 2 kernels) within Z_MAX
    with the extrapolation's standard error (plus 0.25 |E_32 - E_16| for the O(1/n^2) remainder, as
    ka.verify); the estimate rejects the kernel of the same inputs without masks (some |z| > Z_MAX)."""
    net = ka.Dense(1.3, 0.2) >> ka.GlobalSelfAttention(W_key_std=1.6, b_std=0.1) >> ka.GlobalAvgPool() >> \
        ka.Dense(1.0, 0.1)
    x1, x2 = SEQ[:2], SEQ[2:]
    x2 = np.concatenate([x2, RNG.normal(size=(2, 6, 3))])[:3]
    x2[1, 3:] = C_MASK
    x = np.concatenate([x1, x2])
    ests = [_draws(net, x, len(x1), w, 1024, 40 + w) for w in (16, 32)]
    exact = ka.kernel(net, x1, x2, mask_constant=C_MASK)
    plain = ka.kernel(net, np.where(x1 == C_MASK, 0.0, x1), np.where(x2 == C_MASK, 0.0, x2))
    power = 0.0
    for i, field in enumerate(("nngp", "ntk")):
        (m1, s1), (m2, s2) = ((d[i].mean(0), d[i].std(0, ddof=1) / np.sqrt(len(d[i]))) for d in ests)
        est, se = 2 * m2 - m1, np.sqrt(4 * s2**2 + s1**2)
        allow = se + 0.25 * np.abs(m2 - m1) / Z_MAX
        z = (est - np.asarray(getattr(exact, field))) / allow
        print(field, "z", np.round(z.ravel(), 2))
        assert np.all(np.abs(z) <= Z_MAX), (field, z)
        power = max(power, float(np.max(np.abs(est - np.asarray(getattr(plain, field))) / allow)))
    print("largest |z| against the unmasked kernel", round(power, 1))
    assert power > Z_MAX


def test_finite_twin_with_positional_embeddings_padded_at_the_end() -> None:
    """One-hot positional embeddings (also in the values) index positions from the start, so a sequence padded at
    its end has, with the same weights and the first rows of the embeddings, the twin's output of its valid
    positions alone."""
    gsa = ka.GlobalSelfAttention(attention_mechanism="IDENTITY", pos_emb_type="SUM", val_pos_emb=True, b_std=0.1)
    twin = ka.finite(ka.Dense(1.2, 0.2) >> gsa >> ka.Erf() >> ka.GlobalAvgPool() >> ka.Dense(1.1, 0.05), 6)
    x = RNG.normal(size=(1, 6, 3))
    x[0, 4:] = C_MASK
    p = _unit_gaussians(twin, x.shape[1:], None, 4)
    short = [dict(q, pos_emb=q["pos_emb"][:4]) if "pos_emb" in q else q for q in p]
    padded = jax.jit(lambda q, y: twin.apply(q, y, mask_constant=C_MASK))(p, x)
    alone = jax.jit(twin.apply)(short, x[:, :4])
    np.testing.assert_allclose(np.asarray(padded), np.asarray(alone), rtol=1e-12)
