"""MixedPrecision against the same layers computed by hand on bfloat16-cast arrays, gradients and state in
float32, and the digits model of the README trained with bfloat16 computations."""

import sys
from pathlib import Path

import jax
import jax.numpy as jn
import numpy as np
import pytest
from jax import lax

import objax
from objax import nn

RNG = np.random.default_rng(5)
BF16 = jn.bfloat16
EXAMPLES = Path(__file__).resolve().parents[2] / 'examples'


def _bf16(x):
    return jn.asarray(x).astype(BF16)


def _normal(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def test_linear_computes_the_bfloat16_product():
    lin = nn.Linear(5, 3)
    lin.b.assign(jn.asarray(_normal(3)))
    x = _normal(4, 5)
    ref = jn.dot(_bf16(x), _bf16(lin.w.value)) + _bf16(lin.b.value)
    assert ref.dtype == BF16
    y = nn.MixedPrecision(lin)(x)
    assert y.dtype == jn.float32
    np.testing.assert_array_equal(y, ref.astype(jn.float32))
    low = nn.MixedPrecision(lin, output_dtype=None)
    assert low(x).dtype == BF16
    np.testing.assert_array_equal(low(x), ref)
    np.testing.assert_array_equal(objax.Jit(low)(x), ref)
    # The variables are those of the layer, unchanged.
    assert lin.w.value.dtype == lin.b.value.dtype == jn.float32
    assert low.vars().keys() == lin.vars().keys()
    assert all(a is b for a, b in zip(low.vars().values(), lin.vars().values()))


def test_conv2d_computes_the_bfloat16_convolution():
    conv = nn.Conv2D(3, 4, 3, padding=objax.ConvPadding.VALID)
    x = _normal(2, 3, 6, 6)
    ref = lax.conv_general_dilated(_bf16(x), _bf16(conv.w.value), (1, 1), 'VALID',
                                   dimension_numbers=('NCHW', 'HWIO', 'NCHW')) + _bf16(conv.b.value)
    y = nn.MixedPrecision(conv, output_dtype=None)(x)
    assert y.dtype == BF16
    np.testing.assert_array_equal(y, ref)


def test_embedding_gathers_bfloat16_rows_and_keeps_integer_inputs():
    emb = nn.Embedding(10, 4)
    ids = jn.array([[1, 9], [0, 3]])
    mp = nn.MixedPrecision(emb, output_dtype=None)
    np.testing.assert_array_equal(mp(ids), _bf16(emb.w.value)[ids])
    # A method becomes a module with objax.Function: the tied output head in bfloat16.
    x = _normal(2, 4)
    attend = nn.MixedPrecision(objax.Function(emb.attend, emb.vars()), output_dtype=None)
    np.testing.assert_array_equal(attend(x), jn.dot(_bf16(x), _bf16(emb.w.value).T))


def test_attention_matches_bfloat16_projections_and_attention():
    mha = nn.MultiHeadAttention(8, 2, causal=True)
    x = _normal(2, 5, 8)
    y = nn.MixedPrecision(mha, output_dtype=None)(x)

    def project(layer, v):
        return jn.dot(v, _bf16(layer.w.value)) + _bf16(layer.b.value)

    xb = _bf16(x)
    heads = [project(layer, xb).reshape(2, 5, 2, 4) for layer in (mha.query, mha.key, mha.value)]
    ref = project(mha.out, jax.nn.dot_product_attention(*heads, is_causal=True).reshape(2, 5, 8))
    assert y.dtype == BF16
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(ref, np.float32), rtol=2e-2, atol=2e-2)


def test_batchnorm_keeps_float32_statistics_and_scale():
    bn = nn.BatchNorm0D(3, momentum=0.5)
    # 1 + 2**-12 is not a bfloat16 number: a cast gamma would be 1.
    bn.gamma.assign(jn.full((1, 3), 1 + 2.0 ** -12))
    bn.beta.assign(jn.asarray(_normal(1, 3)))
    x = _normal(6, 3) * 3 + 1
    mp = nn.MixedPrecision(bn, output_dtype=None)
    y = mp(x, training=True)
    xb = np.asarray(_bf16(x), np.float32)  # the input as the layer sees it
    mean, var = xb.mean(0, keepdims=True), xb.var(0, keepdims=True)
    ref = (xb - mean) / np.sqrt(var + bn.eps) * np.asarray(bn.gamma.value) + np.asarray(bn.beta.value)
    assert y.dtype == BF16
    np.testing.assert_array_equal(y, _bf16(ref.astype(np.float32)))
    assert bn.running_mean.value.dtype == bn.running_var.value.dtype == jn.float32
    np.testing.assert_allclose(bn.running_mean.value, 0.5 * mean, rtol=1e-6)
    np.testing.assert_allclose(bn.running_var.value, 0.5 + 0.5 * var, rtol=1e-6)
    # Casting every TrainVar (keep_float32=()) rounds gamma to 1.
    y_cast = nn.MixedPrecision(bn, output_dtype=None, keep_float32=())(x, training=False)
    ref_cast = (xb - bn.running_mean.value) / np.sqrt(bn.running_var.value + bn.eps) \
        + np.asarray(_bf16(bn.beta.value), np.float32)
    np.testing.assert_array_equal(y_cast, _bf16(ref_cast))


def test_norm_layers_compute_in_float32():
    x = _normal(3, 6) * 2 + 1
    xb = np.asarray(_bf16(x), np.float64)
    for layer in (nn.LayerNorm(6), nn.RMSNorm(6), nn.GroupNorm0D(6, groups=2)):
        layer.gamma.assign(jn.full(layer.gamma.value.shape, 1 + 2.0 ** -12))
        y = nn.MixedPrecision(layer, output_dtype=None)(x)
        assert y.dtype == BF16 and layer.gamma.value.dtype == jn.float32
        if isinstance(layer, nn.RMSNorm):
            ref = xb / np.sqrt((xb ** 2).mean(-1, keepdims=True) + layer.eps)
        else:
            g = xb.reshape(3, -1, 6 // (2 if isinstance(layer, nn.GroupNorm) else 1))
            ref = ((g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + layer.eps)).reshape(3, 6)
        ref = ref * (1 + 2.0 ** -12)
        np.testing.assert_array_equal(y, _bf16(ref.astype(np.float32)), err_msg=type(layer).__name__)


def test_float32_gradients_close_to_the_float32_model():
    model = nn.Sequential([nn.Linear(6, 16), nn.BatchNorm0D(16), objax.functional.relu, nn.Linear(16, 3)])
    mp = nn.MixedPrecision(model)
    x, y = _normal(32, 6), RNG.integers(0, 3, 32)

    def loss(net):
        return lambda: objax.functional.loss.cross_entropy_logits_sparse(net(x, training=True), y).mean()

    g32, (l32,) = objax.Jit(objax.GradValues(loss(model), model.vars()))()
    g16, (l16,) = objax.Jit(objax.GradValues(loss(mp), model.vars()))()
    assert l16.dtype == jn.float32 and abs(float(l16) - float(l32)) < 2e-2
    for a, b in zip(g16, g32):
        assert a.dtype == jn.float32
        np.testing.assert_allclose(a, b, rtol=0.1, atol=2e-2)
    # The running statistics were written, in float32, through the transforms.
    assert model[1].running_mean.value.dtype == jn.float32
    assert np.abs(np.asarray(model[1].running_mean.value)).sum() > 0


def test_arguments_and_outputs_are_cast_in_structures():
    def f(pair, scale=None, ids=None):
        a, b = pair
        return {'sum': a + b, 'dtype_ok': a.dtype == BF16 and scale.dtype == BF16, 'ids': ids, 'n': 3}

    fn = objax.Function(f, objax.VarCollection())
    out = nn.MixedPrecision(fn)((_normal(2), _normal(2)), scale=np.float32(2), ids=jn.arange(3))
    assert out['dtype_ok'] and out['sum'].dtype == jn.float32 and out['n'] == 3
    assert out['ids'].dtype == jn.arange(3).dtype


def test_bad_arguments():
    lin = nn.Linear(2, 2)
    with pytest.raises(ValueError, match='compute_dtype must be a floating dtype'):
        nn.MixedPrecision(lin, compute_dtype=jn.int32)
    with pytest.raises(ValueError, match='output_dtype must be a floating dtype'):
        nn.MixedPrecision(lin, output_dtype='nope')
    with pytest.raises(TypeError, match='module must be an objax Module'):
        nn.MixedPrecision(lambda x: x)
    with pytest.raises(TypeError, match='keep_float32 must be a tuple of classes'):
        nn.MixedPrecision(lin, keep_float32=nn.BatchNorm)


def test_repr():
    mp = nn.MixedPrecision(nn.Linear(2, 3), keep_float32=(nn.LayerNorm,))
    assert repr(mp) == ('objax.nn.MixedPrecision(module=objax.nn.Linear(nin=2, nout=3, use_bias=True, '
                        'w_init=xavier_normal(*, gain=1)), compute_dtype=bfloat16, output_dtype=float32, '
                        'keep_float32=(objax.nn.LayerNorm,))')


@pytest.fixture
def digits_example(monkeypatch):
    """build_model, digits_split and batches of examples/classify_digits.py and examples/common.py."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import classify_digits
    import common
    yield classify_digits.build_model, common.digits_split, common.batches
    for name in ('classify_digits', 'common'):
        sys.modules.pop(name, None)


def test_readme_digits_model_trains_in_bfloat16(digits_example):
    """The README's digits CNN (32 filters, Adam, cosine-decayed lr 3e-3, batch 64) computing in bfloat16 reaches
    97% test accuracy in 3 epochs, with its TrainVars, gradients and Adam state in float32."""
    build_model, digits_split, batches = digits_example
    train_x, train_y, test_x, test_y = digits_split(seed=0)
    objax.random.DEFAULT_GENERATOR.seed(0)
    model = build_model(32)
    net = nn.MixedPrecision(model)
    opt = objax.optimizer.Adam(model.vars())
    gv = objax.GradValues(
        lambda x, y: objax.functional.loss.cross_entropy_logits_sparse(net(x, training=True), y).mean(),
        model.vars())

    def train_op(x, y, lr):
        grads, _ = gv(x, y)
        opt(lr, grads)
        return grads

    train_op = objax.Jit(train_op, gv.vars() + opt.vars())
    predict = objax.Jit(lambda x: net(x, training=False).argmax(1), model.vars())
    logits = objax.Jit(lambda x: nn.MixedPrecision(model, output_dtype=None)(x, training=False), model.vars())
    assert logits(test_x[:2]).dtype == BF16  # the whole network computes in bfloat16
    epochs, steps = 3, len(train_x) // 64
    for epoch in range(epochs):
        for step, idx in enumerate(batches(len(train_x), 64, np.random.default_rng([0, epoch]))):
            lr = 3e-3 * 0.5 * (1 + np.cos(np.pi * (epoch * steps + step) / (epochs * steps)))
            grads = train_op(train_x[idx], train_y[idx], np.float32(lr))
    accuracy = float((np.asarray(predict(test_x)) == test_y).mean())
    assert accuracy >= 0.97, accuracy
    assert {g.dtype for g in grads} == {np.dtype(np.float32)}
    assert {v.value.dtype for v in model.vars().values()} == {np.dtype(np.float32)}
    assert {v.value.dtype for v in opt.vars().values() if v.value.ndim} == {np.dtype(np.float32)}
