"""Dropout: keep statistics, 1/keep scaling, identity when not training, its own generator."""

import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.nn import Dropout


def test_not_training_is_identity():
    x = jn.arange(12.0).reshape(3, 4)
    layer = Dropout(0.3, generator=objax.random.Generator(1))
    key = np.asarray(layer.keygen.key.value)
    np.testing.assert_array_equal(layer(x, training=False), x)
    np.testing.assert_array_equal(layer.keygen.key.value, key)  # no randomness consumed


@pytest.mark.parametrize('keep', [0.25, 0.8])
def test_keep_fraction_and_scaling(keep):
    layer = Dropout(keep, generator=objax.random.Generator(3))
    x = jn.asarray(np.random.default_rng(0).uniform(1, 2, size=(200, 100)).astype(np.float32))
    y = np.asarray(layer(x, training=True))
    kept = y != 0
    n = kept.size
    # Binomial(n, keep): within 5 standard deviations.
    assert abs(kept.sum() - keep * n) < 5 * np.sqrt(n * keep * (1 - keep))
    np.testing.assert_allclose(y[kept], np.asarray(x)[kept] / keep, rtol=1e-6)
    # The scaling keeps the expectation: the mean of y is close to that of x.
    assert abs(y.mean() - float(x.mean())) < 0.05 * float(x.mean())


def test_dropout_keep_overrides_and_keys_advance():
    layer = Dropout(0.5, generator=objax.random.Generator(4))
    x = jn.ones((100, 100))
    y1, y2 = np.asarray(layer(x, training=True)), np.asarray(layer(x, training=True))
    assert (y1 != y2).any()
    y = np.asarray(layer(x, training=True, dropout_keep=0.9))
    assert abs((y != 0).mean() - 0.9) < 0.02 and set(np.unique(y)) <= {0, np.float32(1 / 0.9)}
    np.testing.assert_array_equal(layer(x, training=True, dropout_keep=1.0), x)
    with pytest.raises(ValueError, match='dropout_keep'):
        layer(x, training=True, dropout_keep=-0.5)
    with pytest.raises(ValueError, match='keep'):
        Dropout(float('nan'))


def test_keep_zero_and_keep_above_one():
    # As in Objax 1.8, Dropout(0.0) is accepted and drops everything while training.
    x = jn.asarray([[1, 2, 3, 4, 5, 6.]])
    layer = Dropout(0.0, generator=objax.random.Generator(5))
    y = layer(x, training=True)
    np.testing.assert_array_equal(y, np.zeros((1, 6)))
    assert y.dtype == x.dtype
    np.testing.assert_array_equal(layer(x, training=False), x)
    # No 1/0 leaks into gradients: d(sum(dropout(x)))/dx is 0, not NaN.
    np.testing.assert_array_equal(objax.Grad(lambda x: layer(x, training=True).sum(), objax.VarCollection(),
                                             input_argnums=(0,))(x)[0], np.zeros((1, 6)))
    # keep >= 1 returns the input unchanged.
    np.testing.assert_array_equal(Dropout(1.5)(x, training=True), x)
    np.testing.assert_array_equal(Dropout(0.5)(x, training=True, dropout_keep=1.0), x)


def test_falsy_dropout_keep_falls_back_to_the_layer_keep():
    x = jn.ones((50, 100))
    reference = Dropout(0.3, generator=objax.random.Generator(6))(x, training=True)
    for falsy in (None, 0, 0.0):
        layer = Dropout(0.3, generator=objax.random.Generator(6))
        np.testing.assert_array_equal(layer(x, training=True, dropout_keep=falsy), reference)
    assert abs(float((np.asarray(reference) != 0).mean()) - 0.3) < 0.03
    # A layer with keep 0 and a per-call keep of 0 drops everything.
    np.testing.assert_array_equal(Dropout(0)(x, training=True, dropout_keep=0), np.zeros((50, 100)))


def test_generator_is_in_vars_and_works_under_jit():
    gen = objax.random.Generator(7)
    layer = Dropout(0.5, generator=gen)
    vc = layer.vars()
    assert list(vc.keys()) == ['(Dropout).keygen(Generator)._key'] and list(vc)[0] is gen.key
    assert list(Dropout(0.5).vars())[0] is objax.random.DEFAULT_GENERATOR.key
    step = objax.Jit(lambda x: layer(x, training=True), vc)
    x = jn.ones((64, 64))
    a, b = np.asarray(step(x)), np.asarray(step(x))
    assert (a != b).any() and abs((a != 0).mean() - 0.5) < 0.05
    # Same seed, same masks: eager and jitted draws follow the generator's stream.
    eager = Dropout(0.5, generator=objax.random.Generator(7))
    np.testing.assert_array_equal(eager(x, training=True), a)


def test_repr():
    assert repr(Dropout(0.7)) == 'objax.nn.Dropout(keep=0.7)'
    assert repr(Dropout(0)) == 'objax.nn.Dropout(keep=0)'
