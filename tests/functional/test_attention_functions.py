"""dot_product_attention, rotary_embedding and causal_mask against numpy formulas."""

import jax
import jax.numpy as jn
import numpy as np
import pytest
from _references import attention as np_attention

import objax
from objax.functional import causal_mask, dot_product_attention, rotary_embedding

RNG = np.random.default_rng(5)


def _normal(*shape):
    return RNG.normal(size=shape).astype(np.float32)


@pytest.mark.parametrize('heads,kv_heads', [(4, 4), (4, 2), (3, 1)])
def test_matches_numpy_with_mask_bias_and_grouped_heads(heads, kv_heads):
    q, k, v = _normal(2, 5, heads, 8), _normal(2, 7, kv_heads, 8), _normal(2, 7, kv_heads, 8)
    np.testing.assert_allclose(dot_product_attention(q, k, v), np_attention(q, k, v), rtol=1e-5, atol=1e-5)
    padding = RNG.uniform(size=(2, 1, 1, 7)) < 0.6
    padding[:, :, :, 0] = True  # every query keeps a key
    bias = _normal(1, heads, 5, 7)
    np.testing.assert_allclose(dot_product_attention(q, k, v, bias, padding, scale=0.3),
                               np_attention(q, k, v, padding, 0.3, bias), rtol=1e-5, atol=1e-5)
    jitted = jax.jit(lambda a, b, c, m: dot_product_attention(a, b, c, mask=m))
    np.testing.assert_allclose(jitted(q, k, v, padding), np_attention(q, k, v, padding), rtol=1e-5, atol=1e-5)


def test_is_causal_is_the_lower_triangle():
    q, k, v = _normal(2, 6, 2, 4), _normal(2, 6, 2, 4), _normal(2, 6, 2, 4)
    ref = np_attention(q, k, v, np.tril(np.ones((6, 6), bool)))
    np.testing.assert_allclose(dot_product_attention(q, k, v, is_causal=True), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dot_product_attention(q, k, v, mask=causal_mask(6)), ref, rtol=1e-5, atol=1e-5)
    assert not np.allclose(ref, np_attention(q, k, v), atol=1e-3)  # the mask matters for these inputs


def test_gradient_matches_the_plain_formula():
    q, k, v = _normal(1, 4, 2, 4), _normal(1, 5, 2, 4), _normal(1, 5, 2, 4)
    mask = np.array([True, True, False, True, True])[None, None, None, :]

    def plain(q, k, v):
        logits = jn.einsum('bthd,bshd->bhts', q, k) / 2.
        p = jax.nn.softmax(jn.where(mask, logits, -jn.inf), axis=-1)
        return jn.sin(jn.einsum('bhts,bshd->bthd', p, v)).sum()

    def fused(q, k, v):
        return jn.sin(dot_product_attention(q, k, v, mask=jn.asarray(mask))).sum()

    for got, want in zip(jax.grad(fused, (0, 1, 2))(q, k, v), jax.grad(plain, (0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        assert np.abs(want).max() > 1e-3


def test_errors():
    q, k = jn.zeros((2, 3, 4, 8)), jn.zeros((2, 5, 2, 8))
    with pytest.raises(ValueError, match=r'query must be 4D'):
        dot_product_attention(q[0], k, k)
    with pytest.raises(ValueError, match=r'value must have the shape of key'):
        dot_product_attention(q, k, k[:, :4])
    with pytest.raises(ValueError, match=r'share batch and head_dim'):
        dot_product_attention(q, k[..., :4], k[..., :4])
    with pytest.raises(ValueError, match=r'query heads \(4\).*key/value heads \(3\)'):
        dot_product_attention(q, jn.zeros((2, 5, 3, 8)), jn.zeros((2, 5, 3, 8)))
    with pytest.raises(ValueError, match=r'mask must be boolean'):
        dot_product_attention(q, k, k, mask=jn.ones((5,)))
    with pytest.raises(ValueError, match=r'mask of shape \(2, 5\) does not broadcast'):
        dot_product_attention(q, k, k, mask=jn.ones((2, 5), bool))
    with pytest.raises(ValueError, match=r'bias of shape \(4, 3, 4\) does not broadcast'):
        dot_product_attention(q, k, k, bias=jn.ones((4, 3, 4)))


def _np_rotary(x, positions, base):
    """Each pair (x[i], x[i + d/2]) rotated by positions * base^(-2i/d), one 2x2 rotation at a time."""
    x = np.asarray(x, np.float64)
    b, t, h, d = x.shape
    positions = np.broadcast_to(positions, (b, t))
    out = np.empty_like(x)
    for n in range(b):
        for p in range(t):
            for i in range(d // 2):
                a = positions[n, p] * base ** (-2 * i / d)
                rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
                pair = rot @ np.stack([x[n, p, :, i], x[n, p, :, i + d // 2]])
                out[n, p, :, i], out[n, p, :, i + d // 2] = pair
    return out


def test_rotary_embedding_matches_numpy():
    x = _normal(2, 5, 3, 8)
    positions = np.arange(5) + 3
    np.testing.assert_allclose(rotary_embedding(x, positions), _np_rotary(x, positions, 1e4), rtol=1e-5, atol=1e-5)
    per_example = np.stack([np.arange(5), np.arange(5) * 2 + 1])
    np.testing.assert_allclose(rotary_embedding(x, per_example, base=100.), _np_rotary(x, per_example, 100.),
                               rtol=1e-5, atol=1e-5)
    half = rotary_embedding(jn.asarray(x, jn.bfloat16), positions)
    assert half.dtype == jn.bfloat16 and half.shape == x.shape


def test_rotary_embedding_with_given_frequencies():
    x, positions = _normal(2, 5, 3, 8), np.arange(5) + 3
    base = 1e4 ** -(np.arange(0, 8, 2) / 8)
    np.testing.assert_allclose(rotary_embedding(x, positions, frequencies=base), rotary_embedding(x, positions),
                               rtol=1e-6, atol=1e-6)
    # Linear scaling by 4: positions divided by 4.
    np.testing.assert_allclose(rotary_embedding(x, positions, frequencies=base / 4), _np_rotary(x, positions / 4, 1e4),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r'frequencies must have shape \(head_dim / 2,\) = \(4,\), got \(8,\)'):
        rotary_embedding(x, positions, frequencies=np.ones(8))


def test_rotary_embedding_makes_scores_depend_on_the_offset_only():
    q, k = _normal(1, 1, 1, 16), _normal(1, 1, 1, 16)

    def score(m, n):
        return float((rotary_embedding(q, jn.array([m])) * rotary_embedding(k, jn.array([n]))).sum())

    np.testing.assert_allclose(score(7, 3), score(14, 10), rtol=1e-4)
    assert abs(score(7, 3) - score(7, 5)) > 1e-3


def test_rotary_embedding_errors():
    with pytest.raises(ValueError, match='even'):
        rotary_embedding(jn.zeros((1, 2, 1, 5)), jn.arange(2))
    with pytest.raises(ValueError, match='4D'):
        rotary_embedding(jn.zeros((2, 1, 4)), jn.arange(2))
    with pytest.raises(ValueError, match=r'positions must have shape \(T,\) = \(2,\)'):
        rotary_embedding(jn.zeros((1, 2, 1, 4)), jn.arange(3))


def test_causal_mask():
    np.testing.assert_array_equal(causal_mask(3), np.tril(np.ones((3, 3), bool)))
    np.testing.assert_array_equal(causal_mask(2, 5, offset=2), [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    traced = objax.Jit(lambda i: causal_mask(2, 5, offset=i), objax.VarCollection())
    np.testing.assert_array_equal(traced(jn.int32(3)), np.tril(np.ones((2, 5), bool), 3))
    assert causal_mask(4, 6).dtype == jn.bool_
    with pytest.raises(ValueError, match='t must be a positive int'):
        causal_mask(0)
    with pytest.raises(ValueError, match='s must be a positive int'):
        causal_mask(2, 2.5)
    with pytest.raises(ValueError, match='offset must be a scalar'):
        causal_mask(2, offset=jn.zeros(2, jn.int32))
