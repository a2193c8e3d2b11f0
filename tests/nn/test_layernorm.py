"""LayerNorm and RMSNorm against numpy, their gradients, variables, dtypes and reprs."""

import jax
import jax.numpy as jn
import numpy as np
import pytest
from _references import layer_norm as np_layer_norm
from _references import torch_layers

import objax
from objax.nn import LayerNorm, RMSNorm

RNG = np.random.default_rng(3)


def _np_rms_norm(x, gamma, eps):
    x = np.asarray(x, np.float64)
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * gamma


def _randomize(layer):
    for v in layer.vars().values():
        v.assign(jn.asarray(RNG.uniform(0.5, 2, v.value.shape).astype(np.float32)))


def test_layer_norm_matches_numpy():
    ln = LayerNorm(6, eps=1e-3)
    assert list(ln.vars().keys()) == ['(LayerNorm).gamma', '(LayerNorm).beta']
    assert ln.gamma.shape == ln.beta.shape == (6,)
    _randomize(ln)
    x = (RNG.normal(size=(2, 3, 6)) * 4 + 2).astype(np.float32)
    ref = np_layer_norm(x, np.asarray(ln.gamma.value), np.asarray(ln.beta.value), 1e-3)
    np.testing.assert_allclose(ln(jn.asarray(x)), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(objax.Jit(ln)(jn.asarray(x)), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(LayerNorm(6)(jn.asarray(x)), np_layer_norm(x, 1, 0, 1e-5), rtol=1e-5, atol=1e-5)


def test_layer_norm_without_scale_or_bias():
    x = RNG.normal(size=(4, 5)).astype(np.float32)
    plain = LayerNorm(5, use_scale=False, use_bias=False)
    assert plain.gamma is None and plain.beta is None and len(plain.vars()) == 0
    np.testing.assert_allclose(plain(jn.asarray(x)), np_layer_norm(x, 1, 0, 1e-5), rtol=1e-5, atol=1e-5)
    shift = LayerNorm(5, use_scale=False)
    assert list(shift.vars().keys()) == ['(LayerNorm).beta']
    shift.beta.assign(jn.arange(5.))
    np.testing.assert_allclose(shift(jn.asarray(x)), np_layer_norm(x, 1, np.arange(5.), 1e-5), rtol=1e-5, atol=1e-5)


def test_rms_norm_matches_numpy():
    rms = RMSNorm(6, eps=1e-2)
    assert list(rms.vars().keys()) == ['(RMSNorm).gamma']
    _randomize(rms)
    x = (RNG.normal(size=(3, 6)) + 1).astype(np.float32)
    ref = _np_rms_norm(x, np.asarray(rms.gamma.value), 1e-2)
    np.testing.assert_allclose(rms(jn.asarray(x)), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(objax.Jit(rms)(jn.asarray(x)), ref, rtol=1e-5, atol=1e-5)
    no_scale = RMSNorm(6, use_scale=False)
    assert no_scale.gamma is None and len(no_scale.vars()) == 0
    np.testing.assert_allclose(no_scale(jn.asarray(x)), _np_rms_norm(x, 1, 1e-6), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('cls', [LayerNorm, RMSNorm])
def test_low_precision_inputs_are_computed_in_float32(cls):
    x = (RNG.normal(size=(2, 64)) * 100 + 300).astype(np.float32)
    layer = cls(64)
    xb = jn.asarray(x, jn.bfloat16)
    y = layer(xb)
    assert y.dtype == jn.bfloat16
    # The float32 result rounded once: statistics in bfloat16 (8 bits of mantissa) would differ by ~1e-2.
    np.testing.assert_array_equal(np.asarray(y, np.float32),
                                  np.asarray(layer(xb.astype(jn.float32)).astype(jn.bfloat16), np.float32))


def test_gradients_match_jax_grad_of_the_formula():
    ln = LayerNorm(5)
    _randomize(ln)
    x = jn.asarray(RNG.normal(size=(3, 5)).astype(np.float32))
    target = jn.asarray(RNG.normal(size=(3, 5)).astype(np.float32))

    def formula(gamma, beta):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (((x - mean) / jn.sqrt(var + 1e-5) * gamma + beta - target) ** 2).sum()

    grads, (loss,) = objax.GradValues(lambda: ((ln(x) - target) ** 2).sum(), ln.vars())()
    want = jax.grad(formula, (0, 1))(ln.gamma.value, ln.beta.value)
    np.testing.assert_allclose(loss, formula(ln.gamma.value, ln.beta.value), rtol=1e-5)
    for got, expected in zip(grads, want):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_matches_pytorch():
    data = torch_layers()
    ln = LayerNorm(16, eps=1e-5)
    ln.gamma.assign(jn.asarray(data['layernorm_weight']))
    ln.beta.assign(jn.asarray(data['layernorm_bias']))
    np.testing.assert_allclose(ln(data['layernorm_x']), data['layernorm_y'], rtol=1e-5, atol=1e-5)
    rms = RMSNorm(16, eps=1e-6)
    rms.gamma.assign(jn.asarray(data['rmsnorm_weight']))
    np.testing.assert_allclose(rms(data['rmsnorm_x']), data['rmsnorm_y'], rtol=1e-5, atol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match=r'5 features.*\(2, 4\)'):
        LayerNorm(5)(jn.ones((2, 4)))
    with pytest.raises(ValueError, match=r'RMSNorm expects inputs with 3 features'):
        RMSNorm(3)(jn.ones((3, 2)))
    with pytest.raises(ValueError, match='nin must be a positive int'):
        LayerNorm(0)
    with pytest.raises(ValueError, match='nin must be a positive int'):
        RMSNorm(2.0)
    with pytest.raises(ValueError, match='eps must be a non-negative number'):
        LayerNorm(4, eps=-1)


def test_reprs():
    assert repr(LayerNorm(4)) == 'objax.nn.LayerNorm(nin=4, eps=1e-05, use_scale=True, use_bias=True)'
    assert repr(LayerNorm(4, eps=1e-6, use_bias=False)) == \
        'objax.nn.LayerNorm(nin=4, eps=1e-06, use_scale=True, use_bias=False)'
    assert repr(RMSNorm(8, use_scale=False)) == 'objax.nn.RMSNorm(nin=8, eps=1e-06, use_scale=False)'
