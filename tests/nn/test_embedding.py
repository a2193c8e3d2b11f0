"""Embedding: lookup, tied output head, initialization, gradients and errors."""

import jax
import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.nn import Embedding


def test_lookup_and_attend_match_numpy():
    emb = Embedding(10, 4)
    assert list(emb.vars().keys()) == ['(Embedding).w'] and emb.w.shape == (10, 4)
    w = np.asarray(emb.w.value)
    ids = np.array([[0, 3, 9], [2, 2, 5]])
    np.testing.assert_array_equal(emb(jn.asarray(ids)), w[ids])
    np.testing.assert_array_equal(objax.Jit(emb)(jn.asarray(ids)), w[ids])
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(emb.attend(jn.asarray(x)), x @ w.T, rtol=1e-5, atol=1e-5)
    assert emb.attend(jn.asarray(x)).shape == (2, 3, 10)


def test_default_initializer_has_stddev_one_over_sqrt_dim():
    w = np.asarray(Embedding(4000, 16).w.value)
    assert abs(w.std() - 0.25) < 0.01 and abs(w.mean()) < 0.01
    custom = Embedding(3, 2, w_init=lambda shape: jn.full(shape, 7.))
    np.testing.assert_array_equal(custom.w.value, np.full((3, 2), 7.))


def test_tied_gradient_sums_the_lookup_and_head_contributions():
    emb = Embedding(6, 3)
    ids = jn.array([1, 4, 1])

    def loss():
        return jax.nn.logsumexp(emb.attend(jn.tanh(emb(ids))), axis=-1).sum()

    def formula(w):
        return jax.nn.logsumexp(jn.tanh(w[jn.array([1, 4, 1])]) @ w.T, axis=-1).sum()

    grads, _ = objax.GradValues(loss, emb.vars())()
    want = jax.grad(formula)(emb.w.value)
    np.testing.assert_allclose(grads[0], want, rtol=1e-5, atol=1e-6)
    # Rows 1 and 4 get the lookup's contribution on top of the head's; the head alone touches every row.
    head_only = jax.grad(lambda w: jax.nn.logsumexp(jn.tanh(jax.lax.stop_gradient(w)[jn.array([1, 4, 1])]) @ w.T,
                                                    axis=-1).sum())(emb.w.value)
    assert np.abs(np.asarray(want - head_only)[[1, 4]]).min() > 1e-4


def test_errors_and_repr():
    emb = Embedding(5, 2)
    with pytest.raises(ValueError, match='integer ids'):
        emb(jn.ones(3))
    with pytest.raises(ValueError, match=r'2 features on the last axis, got shape \(4, 3\)'):
        emb.attend(jn.ones((4, 3)))
    with pytest.raises(ValueError, match='num must be a positive int'):
        Embedding(0, 2)
    with pytest.raises(ValueError, match='dim must be a positive int'):
        Embedding(3, -1)
    with pytest.raises(ValueError, match=r'w_init returned shape \(2,\), expected \(3, 2\)'):
        Embedding(3, 2, w_init=lambda shape: jn.zeros(2))
    assert repr(emb) == 'objax.nn.Embedding(num=5, dim=2, w_init=None)'
    assert repr(Embedding(5, 2, w_init=objax.nn.init.xavier_normal)) == \
        'objax.nn.Embedding(num=5, dim=2, w_init=xavier_normal(*, gain=1))'
