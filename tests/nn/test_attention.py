"""MultiHeadAttention against a numpy multi-head attention; its key/value cache against the full-sequence call."""

import jax
import jax.numpy as jn
import numpy as np
import pytest
from _references import attention as np_attention
from _references import torch_layers

import objax
from objax.functional import causal_mask
from objax.nn import KVCache, MultiHeadAttention

RNG = np.random.default_rng(11)


def _normal(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def _randomize(layer):
    for v in layer.vars().values():
        v.assign(jn.asarray(_normal(*v.value.shape) * 0.5))


def _np_mha(layer, x, context=None, mask=None):
    """Projections, heads and output projection in numpy with the layer's weights (float64)."""
    context = x if context is None else context
    p = {k.split(')', 1)[1].replace('(Linear)', ''): np.asarray(v.value, np.float64) for k, v in layer.vars().items()}

    def project(name, a):
        y = np.asarray(a, np.float64) @ p[f'{name}.w'] + p.get(f'{name}.b', 0)
        return y.reshape(y.shape[:2] + (layer.num_heads, -1))

    heads = np_attention(project('.query', x), project('.key', context), project('.value', context), mask)
    return heads.reshape(heads.shape[:2] + (-1,)) @ p['.out.w'] + p.get('.out.b', 0)


def test_variables_shapes_and_order():
    layer = MultiHeadAttention(8, 2, kv_dim=6, head_dim=5)
    assert list(layer.vars().keys()) == [f'(MultiHeadAttention).{n}(Linear).{v}'
                                         for n in ('query', 'key', 'value', 'out') for v in 'bw']
    assert [v.value.shape for v in layer.vars().values()] == [(10,), (8, 10), (10,), (6, 10), (10,), (6, 10),
                                                              (8,), (10, 8)]
    assert list(MultiHeadAttention(4, 2, use_bias=False).vars().keys()) == [
        f'(MultiHeadAttention).{n}(Linear).w' for n in ('query', 'key', 'value', 'out')]
    assert MultiHeadAttention(12, 3).head_dim == 4


def test_self_and_cross_attention_with_masks_match_numpy():
    layer = MultiHeadAttention(8, 2)
    _randomize(layer)
    x = _normal(2, 5, 8)
    np.testing.assert_allclose(layer(jn.asarray(x)), _np_mha(layer, x), rtol=1e-4, atol=1e-5)
    causal = MultiHeadAttention(8, 2, causal=True)
    causal.vars().assign(layer.vars().tensors())
    tril = np.tril(np.ones((5, 5), bool))
    np.testing.assert_allclose(causal(jn.asarray(x)), _np_mha(layer, x, mask=tril), rtol=1e-4, atol=1e-5)
    assert not np.allclose(causal(jn.asarray(x)), layer(jn.asarray(x)), atol=1e-3)

    cross = MultiHeadAttention(8, 4, kv_dim=3, head_dim=3, use_bias=False)
    _randomize(cross)
    context = _normal(2, 7, 3)
    keep = RNG.uniform(size=(2, 7)) < 0.5
    keep[:, 0] = True
    padding = keep[:, None, None, :]
    got = cross(jn.asarray(x), jn.asarray(context), mask=jn.asarray(padding))
    np.testing.assert_allclose(got, _np_mha(cross, x, context, padding), rtol=1e-4, atol=1e-5)
    jitted = objax.Jit(lambda a, c, m: cross(a, c, mask=m), cross.vars())
    np.testing.assert_allclose(jitted(x, context, padding), _np_mha(cross, x, context, padding), rtol=1e-4, atol=1e-5)


def test_gradients_match_jax_grad_of_the_formula():
    layer = MultiHeadAttention(6, 3, causal=True)
    _randomize(layer)
    x = jn.asarray(_normal(2, 4, 6))

    def formula(params):
        qb, qw, kb, kw, vb, vw, ob, ow = params
        q, k, v = ((x @ w + b).reshape(2, 4, 3, 2) for b, w in ((qb, qw), (kb, kw), (vb, vw)))
        logits = jn.einsum('bthd,bshd->bhts', q, k) / jn.sqrt(2.)
        p = jax.nn.softmax(jn.where(jn.tril(jn.ones((4, 4), bool)), logits, -jn.inf), -1)
        y = jn.einsum('bhts,bshd->bthd', p, v).reshape(2, 4, 6) @ ow + ob
        return jn.sin(y).sum()

    grads, (loss,) = objax.GradValues(lambda: jn.sin(layer(x)).sum(), layer.vars())()
    want = jax.grad(formula)(layer.vars().tensors())
    np.testing.assert_allclose(loss, formula(layer.vars().tensors()), rtol=1e-5)
    assert len(grads) == 8
    for got, expected in zip(grads, want):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def _decode(layer, x, prefill, max_length, step=None):
    """Runs x (batch, T, dim): the first `prefill` positions in one call, then one position per call."""
    cache = layer.init_cache(x.shape[0], max_length)
    step = step or (lambda a, c: layer(a, cache=c))
    y, cache = step(x[:, :prefill], cache)
    ys = [y]
    for t in range(prefill, x.shape[1]):
        y, cache = step(x[:, t:t + 1], cache)
        ys.append(y)
    return jn.concatenate(ys, axis=1), cache


def test_cache_prefill_and_decode_equal_the_full_causal_call():
    layer = MultiHeadAttention(8, 2, causal=True)
    _randomize(layer)
    x = jn.asarray(_normal(2, 6, 8))
    full = layer(x)
    np.testing.assert_allclose(full, _np_mha(layer, x, mask=np.tril(np.ones((6, 6), bool))), rtol=1e-4, atol=1e-5)
    y, cache = _decode(layer, x, 3, 9)
    np.testing.assert_allclose(y, full, rtol=1e-5, atol=1e-5)
    assert isinstance(cache, KVCache) and cache.index.dtype == jn.int32 and int(cache.index) == 6
    assert cache.key.shape == cache.value.shape == (2, 9, 2, 4)
    np.testing.assert_array_equal(cache.key[:, 6:], 0)  # positions >= index are never written
    k = np.asarray(x) @ np.asarray(layer.key.w.value) + np.asarray(layer.key.b.value)
    np.testing.assert_allclose(cache.key[:, :6], k.reshape(2, 6, 2, 4), rtol=1e-5, atol=1e-5)


def test_decode_step_compiles_once_under_jit():
    layer = MultiHeadAttention(8, 2, causal=True)
    _randomize(layer)
    x = jn.asarray(_normal(1, 7, 8))
    traces = []

    def step(a, cache):
        traces.append(a.shape[1])
        return layer(a, cache=cache)

    y, cache = _decode(layer, x, 2, 10, objax.Jit(step, layer.vars()))
    assert traces == [2, 1]  # one trace for the prefill, one for all five decode steps
    np.testing.assert_allclose(y, layer(x), rtol=1e-5, atol=1e-5)
    assert int(cache.index) == 7


def test_cached_positions_past_the_index_are_never_attended():
    layer = MultiHeadAttention(4, 1, causal=True)
    _randomize(layer)
    x = jn.asarray(_normal(1, 3, 4))
    cache = layer.init_cache(1, 8)
    garbage = KVCache(cache.key.at[:, 3:].set(100.), cache.value.at[:, 3:].set(-100.), cache.index)
    y, _ = layer(x, cache=garbage)
    np.testing.assert_allclose(y, layer(x), rtol=1e-5, atol=1e-5)
    # Without causal the cached call attends to every filled position < index + T, and to none after.
    both = MultiHeadAttention(4, 1)
    both.vars().assign(layer.vars().tensors())
    y, _ = both(x, cache=garbage)
    np.testing.assert_allclose(y, both(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, _np_mha(both, x), rtol=1e-4, atol=1e-5)


def test_non_causal_cache_attends_to_all_filled_positions():
    layer = MultiHeadAttention(6, 3)
    _randomize(layer)
    x = jn.asarray(_normal(2, 5, 6))
    cache = layer.init_cache(2, 8)
    _, cache = layer(x[:, :3], cache=cache)
    y, cache = layer(x[:, 3:], cache=cache)
    # The last two queries see all five positions: rows 3 and 4 of the non-causal full call.
    np.testing.assert_allclose(y, _np_mha(layer, x)[:, 3:], rtol=1e-4, atol=1e-5)


def test_user_mask_with_the_cache():
    layer = MultiHeadAttention(8, 2, causal=True)
    _randomize(layer)
    x = jn.asarray(_normal(2, 5, 8))
    keep = np.ones((2, 6), bool)
    keep[0, 1] = keep[1, 3] = False  # a padded position in each example (key positions up to max_length 6)
    padding = jn.asarray(keep[:, None, None, :])
    want = _np_mha(layer, x, mask=np.tril(np.ones((5, 5), bool)) & keep[:, None, None, :5])
    cache = layer.init_cache(2, 6)
    y1, cache = layer(x[:, :2], mask=padding, cache=cache)
    y2, cache = layer(x[:, 2:], mask=padding, cache=cache)
    np.testing.assert_allclose(jn.concatenate([y1, y2], 1), want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(want, layer(x), atol=1e-3)
    with pytest.raises(ValueError, match=r'mask of shape \(2, 1, 1, 5\).*max_length'):
        layer(x[:, :1], mask=padding[..., :5], cache=layer.init_cache(2, 6))


def _from_torch(data, causal=False):
    """nn.MultiheadAttention(16, 4)'s weights: in_proj rows [q; k; v] (out, in) -> three Linear w (in, out)."""
    layer = MultiHeadAttention(16, 4, causal=causal)
    weights = np.split(data['mha_in_proj_weight'], 3)
    biases = np.split(data['mha_in_proj_bias'], 3)
    for linear, w, b in zip((layer.query, layer.key, layer.value), weights, biases):
        linear.w.assign(jn.asarray(w.T))
        linear.b.assign(jn.asarray(b))
    layer.out.w.assign(jn.asarray(data['mha_out_proj_weight'].T))
    layer.out.b.assign(jn.asarray(data['mha_out_proj_bias']))
    return layer


def test_matches_pytorch():
    data = torch_layers()
    layer, causal = _from_torch(data), _from_torch(data, causal=True)
    x, padding = data['mha_x'], data['mha_padding_mask'][:, None, None, :]
    np.testing.assert_array_equal(data['mha_causal_mask'], causal_mask(6))
    tol = dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer(x), data['mha_self_y'], **tol)
    np.testing.assert_allclose(layer(x, mask=data['mha_causal_mask']), data['mha_causal_y'], **tol)
    np.testing.assert_allclose(causal(x), data['mha_causal_y'], **tol)
    np.testing.assert_allclose(layer(x, mask=padding), data['mha_padding_y'], **tol)
    np.testing.assert_allclose(causal(x, mask=padding), data['mha_causal_padding_y'], **tol)
    np.testing.assert_allclose(layer(x, data['mha_context']), data['mha_cross_y'], **tol)
    # Decoding one position at a time through the cache gives PyTorch's causal outputs too.
    cache, ys = causal.init_cache(2, 8), []
    for t in range(6):
        y, cache = causal(x[:, t:t + 1], cache=cache)
        ys.append(y)
    np.testing.assert_allclose(jn.concatenate(ys, 1), data['mha_causal_y'], **tol)


def test_grouped_query_attention_equals_repeated_key_value_heads():
    """num_kv_heads=2 of 4: query heads 2j and 2j+1 read key/value head j (Hugging Face's repeat_kv)."""
    gqa = MultiHeadAttention(8, 4, num_kv_heads=2, causal=True)
    _randomize(gqa)
    assert gqa.key.w.value.shape == (8, 4) and gqa.value.b.value.shape == (4,)
    full = MultiHeadAttention(8, 4, causal=True)
    for name in ('query', 'out'):
        for var in ('w', 'b'):
            getattr(getattr(full, name), var).assign(getattr(getattr(gqa, name), var).value)
    for name in ('key', 'value'):
        layer = getattr(gqa, name)
        getattr(full, name).w.assign(jn.repeat(layer.w.value.reshape(8, 2, 2), 2, axis=1).reshape(8, 8))
        getattr(full, name).b.assign(jn.repeat(layer.b.value.reshape(2, 2), 2, axis=0).reshape(8))
    x = jn.asarray(_normal(2, 5, 8))
    np.testing.assert_allclose(gqa(x), full(x), rtol=1e-5, atol=1e-5)
    y, cache = _decode(gqa, x, 2, 7)
    assert cache.key.shape == (2, 7, 2, 2)  # the cache holds the key/value heads
    np.testing.assert_allclose(y, full(x), rtol=1e-5, atol=1e-5)
    assert 'num_kv_heads=2' in repr(gqa)
    with pytest.raises(ValueError, match=r'num_heads \(4\) must be a multiple of num_kv_heads \(3\)'):
        MultiHeadAttention(8, 4, num_kv_heads=3)


def test_kv_cache_zeros_and_append():
    cache = KVCache.zeros(2, 5, 3, 4, jn.bfloat16)
    assert cache.key.shape == (2, 5, 3, 4) and cache.key.dtype == jn.bfloat16 and int(cache.index) == 0
    k = jn.ones((2, 2, 3, 4))
    cache = cache.append(k, 2 * k)
    assert int(cache.index) == 2 and float(cache.value[0, 1, 0, 0]) == 2 and float(cache.key[0, 2, 0, 0]) == 0
    with pytest.raises(ValueError, match=r'KVCache.append: key must have shape \(batch, T, kv_heads, head_dim\) = '
                                         r'\(2, T, 3, 4\), got \(2, 1, 2, 4\)'):
        cache.append(jn.ones((2, 1, 2, 4)), jn.ones((2, 1, 2, 4)))
    with pytest.raises(ValueError, match='holds 2 of 5 positions, no room for 4 more'):
        cache.append(jn.ones((2, 4, 3, 4)), jn.ones((2, 4, 3, 4)))
    with pytest.raises(ValueError, match='kv_heads must be a positive int'):
        KVCache.zeros(1, 1, 0, 1)


def test_errors():
    with pytest.raises(ValueError, match=r'dim \(10\) must be divisible by num_heads \(4\)'):
        MultiHeadAttention(10, 4)
    with pytest.raises(ValueError, match='num_heads must be a positive int'):
        MultiHeadAttention(8, 0)
    layer = MultiHeadAttention(8, 2, kv_dim=4)
    with pytest.raises(ValueError, match=r'x must have shape \(batch, length, dim=8\), got \(2, 8\)'):
        layer(jn.ones((2, 8)))
    with pytest.raises(ValueError, match=r'context must have shape \(2, length, kv_dim=4\)'):
        layer(jn.ones((2, 3, 8)), jn.ones((2, 5, 8)))
    with pytest.raises(ValueError, match='mask must be boolean'):
        layer(jn.ones((2, 3, 8)), jn.ones((2, 5, 4)), mask=jn.ones((2, 1, 1, 5)))
    self_attention = MultiHeadAttention(8, 2)
    cache = self_attention.init_cache(2, 4)
    with pytest.raises(ValueError, match='self attention only'):
        self_attention(jn.ones((2, 1, 8)), jn.ones((2, 1, 8)), cache=cache)
    with pytest.raises(ValueError, match=r'T \(5 positions\) exceeds the cache max_length \(4\)'):
        self_attention(jn.ones((2, 5, 8)), cache=cache)
    with pytest.raises(ValueError, match=r'cache key and value must have shape'):
        self_attention(jn.ones((3, 1, 8)), cache=cache)
    _, full = self_attention(jn.ones((2, 3, 8)), cache=cache)
    with pytest.raises(ValueError, match=r'holds 3 of 4 positions, no room for 2 more'):
        self_attention(jn.ones((2, 2, 8)), cache=full)
    with pytest.raises(ValueError, match='max_length must be a positive int'):
        self_attention.init_cache(2, 0)


def test_repr():
    assert repr(MultiHeadAttention(8, 2)) == \
        'objax.nn.MultiHeadAttention(dim=8, num_heads=2, kv_dim=8, head_dim=4, use_bias=True, causal=False)'
    assert repr(MultiHeadAttention(8, 4, kv_dim=3, head_dim=5, use_bias=False, causal=True)) == \
        'objax.nn.MultiHeadAttention(dim=8, num_heads=4, kv_dim=3, head_dim=5, use_bias=False, causal=True)'
