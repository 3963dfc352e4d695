"""GlobalSelfAttention: exact kernels against neural-tangents 0.6.5, Monte Carlo over the finite twins, the code
paths of the pixel-pair machinery, and the errors of unsupported cases.

References of the values:
* neural-tangents 0.6.5 (tests/data/nt_attention_reference.npz, benchmarks/make_nt_attention_reference.py),
  float64, 1e-10 relative: linear scaling with softmax / identity / abs / relu weights, positional embeddings
  (SUM, CONCAT with n_chan_pos_emb, a distance decay, val_pos_emb), 1/sqrt scaling with identity weights,
  2-D images, no readout, and a two-block transformer (1/sqrt scaling with relu / abs weights, which NT does not
  have, is checked by Monte Carlo only);
* Monte Carlo over the finite twins (NT's apply_fn): ``ka.verify`` extrapolates over two widths (the logits
  fluctuate as 1/sqrt(n_key), a bias O(1/n)); |z| <= 5 per entry, 5.7e-7 per entry by chance;
* code-path agreement (no reference value of its own): chunked pairs vs batch grids (with and without the
  self-grid extension), JAX vs the NumPy reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import kernelalg as ka
from _nt_reference import assert_matches_nt, nt_calls, nt_cases, nt_inputs, nt_net

SLOW = pytest.mark.slow
CASES = [(n, c) for n in nt_cases() if n.startswith(("gsa", "transformer")) for c in nt_calls(n)]
RNG = np.random.default_rng(11)
SEQ = RNG.normal(size=(3, 4, 3))


@pytest.mark.parametrize("name, call", CASES)
def test_matches_neural_tangents(name: str, call: str) -> None:
    """NNGP, NTK and variances agree with neural-tangents 0.6.5 to 1e-10."""
    x1, x2 = nt_inputs(name, call)
    assert_matches_nt(ka.kernel(nt_net(name), x1, x2), name, call)


@pytest.mark.parametrize("linear, mech", [(True, "SOFTMAX"), (False, "IDENTITY"), (False, "RELU")])
def test_batch_grids_agree_with_chunked_pairs(linear: bool, mech: str) -> None:
    """Two readouts make the kernel run on whole batch grids (x2 given: with the self-grid extension); one readout
    runs pair by pair in chunks. Both, and the NumPy reference, agree to rounding."""
    x1, x2 = SEQ, RNG.normal(size=(2, 4, 3))
    gsa = ka.GlobalSelfAttention(linear_scaling=linear, attention_mechanism=mech, b_std=0.1, pos_emb_type="SUM")
    body = ka.Dense(1.2, 0.1) >> gsa >> ka.Dropout(0.8) >> ka.Conv((2,), padding="SAME")
    heads = (ka.GlobalAvgPool() >> ka.Dense(1.1, 0.1), ka.Flatten() >> ka.Dense(0.9, 0.2))
    both = body >> ka.FanOut(2) >> ka.parallel(*heads)
    for xb in (None, x2):
        batch = ka.kernel(both, x1, xb)
        reference = ka.reference_kernel(both, x1, xb, get=("nngp", "ntk"))
        for got, ref, head in zip(batch, reference, heads):
            chunked = ka.kernel(body >> head, x1, xb)
            for field in ("nngp", "ntk", "cov1", "cov2"):
                want = np.asarray(getattr(chunked, field))
                np.testing.assert_allclose(getattr(got, field), want, rtol=1e-12, atol=1e-14)
                np.testing.assert_allclose(getattr(ref, field), want, rtol=1e-11, atol=1e-14)


def _check_mc(net: ka.Layer, x: np.ndarray, width: int, samples: int, key: int) -> None:
    v = ka.verify(net, x.astype(np.float32), width=width, samples=samples, key=key)
    assert v.passed, v.summary()


def test_softmax_monte_carlo() -> None:
    """Linear scaling, softmax weights, first layer, then an MLP in a residual branch: the twins extrapolated over
    widths (32, 64), 256 networks each, within 5 SE of the exact kernels (median SE 2.2% / 1.5% of max |K|)."""
    gsa = ka.GlobalSelfAttention(W_key_std=1.4, W_query_std=1.1, W_value_std=1.2, b_std=0.2)
    net = gsa >> ka.FanOut(2) >> ka.parallel(ka.Dense(1.1, 0.1) >> ka.Relu() >> ka.Dense(1.0), ka.Identity()) \
        >> ka.FanInSum() >> ka.GlobalAvgPool() >> ka.Dense(1.1, 0.05)
    _check_mc(net, SEQ, 32, 256, 5)


def test_sqrt_identity_monte_carlo_one_width() -> None:
    """1/sqrt scaling, identity weights, on the raw input: the network is multilinear in independent Gaussian
    weights (queries, keys, values, outputs, readout), so E[f f'] and E[J J'^T] equal the limit at any width
    (proofs/prove_transformer.py) -- one width (8), 2048 networks, |z| <= 5 (median SE 1.2% / 0.7% of max |K|)."""
    gsa = ka.GlobalSelfAttention(linear_scaling=False, attention_mechanism="IDENTITY", W_key_std=0.8,
                                 W_value_std=1.1, b_std=0.1)
    v = ka.verify(gsa >> ka.GlobalAvgPool() >> ka.Dense(1.0, 0.1), SEQ.astype(np.float32), widths=(8,),
                  samples=2048, key=6)
    assert v.passed, v.summary()


@pytest.mark.parametrize("mech", ["RELU", "ABS"])
def test_sqrt_relu_abs_monte_carlo(mech: str) -> None:
    """1/sqrt scaling with relu / abs weights (arc-cosine duals of the Gaussian logits; neural-tangents has no
    such kernel, so Monte Carlo is the reference): attention on the raw input, then Erf -- whose dual needs the
    attention outputs Gaussian, i.e. many heads (the twin's default: as many as its width). Widths (8, 16),
    512 networks each, within 5 SE (median SE about 2% / 1.4% of max |K|)."""
    gsa = ka.GlobalSelfAttention(linear_scaling=False, attention_mechanism=mech, W_key_std=1.2, W_value_std=1.1,
                                 b_std=0.1)
    _check_mc(gsa >> ka.Erf() >> ka.GlobalAvgPool() >> ka.Dense(1.0, 0.1), SEQ, 8, 512, 9)


@SLOW
def test_sqrt_relu_positional_monte_carlo() -> None:
    """1/sqrt scaling, relu weights, summed one-hot embeddings also in the values, after a Dense embedding,
    then Erf and Flatten: widths (16, 32), 512 networks each, within 5 SE (median SE 0.85% / 1.7% of max |K|)."""
    gsa = ka.GlobalSelfAttention(linear_scaling=False, attention_mechanism="RELU", W_key_std=1.2, b_std=0.1,
                                 pos_emb_type="SUM", val_pos_emb=True)
    _check_mc(ka.Dense(1.1, 0.1) >> gsa >> ka.Erf() >> ka.Flatten() >> ka.Dense(1.0, 0.1), SEQ, 16, 512, 10)


@SLOW
def test_sqrt_identity_positional_monte_carlo() -> None:
    """1/sqrt scaling, identity weights, concatenated one-hot positional embeddings (as many channels as the
    embedding's width, so their inner products converge): the key and query gradients and the embeddings'
    own gradients stay in the NTK; widths (16, 32), 1024 networks each, within 5 SE."""
    gsa = ka.GlobalSelfAttention(linear_scaling=False, attention_mechanism="IDENTITY", W_key_std=0.8,
                                 pos_emb_type="CONCAT", W_pos_emb_std=1.2, b_std=0.1)
    _check_mc(ka.Dense(1.1, 0.1) >> gsa >> ka.GlobalAvgPool() >> ka.Dense(1.0, 0.1), SEQ, 16, 1024, 6)


@SLOW
@pytest.mark.parametrize("mech", ["ABS", "RELU", "IDENTITY"])
def test_other_mechanisms_monte_carlo(mech: str) -> None:
    """Linear scaling with abs / relu / identity weights, summed embeddings of a distance decay also in the values."""
    gsa = ka.GlobalSelfAttention(attention_mechanism=mech, W_key_std=1.3, pos_emb_type="SUM", val_pos_emb=True,
                                 pos_emb_decay_fn=lambda d: np.exp(-d / 2), pos_emb_p_norm=1, b_std=0.1)
    _check_mc(ka.Dense(1.1, 0.1) >> gsa >> ka.Erf() >> ka.Flatten() >> ka.Dense(1.0, 0.1), SEQ, 32, 256, 7)


@SLOW
def test_monte_carlo_error_shrinks_with_width() -> None:
    """Softmax attention after a Dense embedding, 2048 networks per width: at width 4 the finite-width bias is
    visible (the relative error is more than twice its noise floor; measured 0.12 vs 0.048 for the NNGP, 0.16 vs
    0.036 for the NTK), it falls by more than 3x at width 64, and the width-extrapolated estimate agrees with
    the exact kernel within 5 SE."""
    net = ka.Dense(1.3, 0.1) >> ka.GlobalSelfAttention(W_key_std=2.0, b_std=0.1) >> ka.GlobalAvgPool() >> ka.Dense()
    conv = ka.convergence(net, SEQ.astype(np.float32), widths=(4, 16, 64), samples=2048, key=8)
    for name in ("nngp", "ntk"):
        err, noise = conv.rel_error[name], conv.rel_noise[name]
        assert err[0] > 2 * noise[0] and err[-1] < err[0] / 3, (name, err, noise)
        a, sa = conv.extrapolated[name]
        assert np.all(np.abs(a - conv.exact[name]) <= 5 * sa), name


def test_routes_parse_and_symbolic() -> None:
    net = ka.parse("Dense(1.2) >> GlobalSelfAttention(attention_mechanism='relu', b_std=0.1) >> GlobalAvgPool() "
                   ">> Dense(1.0)")
    assert "closed form: relu weights" in dict(ka.symbolic(net).routes)["GlobalSelfAttention"]
    sym = ka.symbolic(net.children[0] >> net.children[1], keep_symbols=True)  # no readout: the op stays visible
    names = {s.name: s for s in sym.params}
    op = sym.nngp.atoms(sp.Function)
    assert [f.func.__name__ for f in op] == ["attention"]  # K <- OV^2 attention(...) + b^2
    assert sp.expand(sym.nngp - (names["W_out_std_2"] * names["W_value_std_2"]) ** 2 * op.pop()) == names["sigma_b_2"] ** 2
    np.testing.assert_allclose(ka.kernel(net, SEQ).nngp, ka.reference_kernel(net, SEQ, get="nngp"), rtol=1e-12)


@pytest.mark.parametrize("make, x, error, words", [
    (lambda: ka.GlobalSelfAttention() >> ka.GlobalAvgPool() >> ka.Dense(), SEQ[:, 0], ka.InputError, "3-D array"),
    (lambda: ka.Dense() >> ka.GlobalSelfAttention(), SEQ[:, 0], ka.InputError, "3-D array"),
    (lambda: ka.Conv((2,)) >> ka.GlobalAvgPool() >> ka.GlobalSelfAttention(), SEQ, ka.LayerOrderError,
     "sequence or spatial axis"),
    (lambda: ka.Recurrent(ka.Erf(), readout="sequence") >> ka.GlobalSelfAttention() >> ka.Dense(), SEQ,
     ka.LayerOrderError, "recurrent"),
    (lambda: ka.GlobalSelfAttention(linear_scaling=False) >> ka.GlobalAvgPool(), SEQ, ka.KernelalgError,
     "no closed form"),
    (lambda: ka.Conv((2,)) >> ka.GlobalSelfAttention(pos_emb_type="CONCAT", n_chan_pos_emb=4) >> ka.GlobalAvgPool(),
     SEQ, ka.LayerOrderError, "input width is unknown"),
])
def test_unsupported_cases_name_the_fix(make, x, error, words: str) -> None:
    with pytest.raises(error, match=words) as info:
        ka.kernel(make(), x)
    assert "Fix:" in str(info.value)


@pytest.mark.parametrize("kwargs, words", [
    ({"attention_mechanism": "tanh"}, "attention_mechanism"), ({"pos_emb_type": "ROTARY"}, "pos_emb_type"),
    ({"n_heads": 0}, "n_heads"), ({"W_key_std": -1.0}, "W_key_std"), ({"pos_emb_decay_fn": 3.0}, "callable"),
])
def test_bad_arguments_name_the_fix(kwargs: dict, words: str) -> None:
    with pytest.raises(ka.KernelalgError, match=words) as info:
        ka.GlobalSelfAttention(**kwargs)
    assert "Fix:" in str(info.value)
