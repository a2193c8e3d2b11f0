"""Losses and divergence against numpy / scipy formulas."""

import jax
import jax.numpy as jn
import numpy as np
import pytest
import scipy.special
import scipy.stats

import objax
from objax.functional import divergence, loss

RNG = np.random.RandomState(0)
LOGITS = RNG.randn(4, 3, 5).astype(np.float64)


def _np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_cross_entropy_dense():
    labels = scipy.special.softmax(RNG.randn(4, 3, 5), axis=-1)
    ref = -(labels * _np_log_softmax(LOGITS)).sum(-1)
    y = loss.cross_entropy_logits(jn.asarray(LOGITS, jn.float32), jn.asarray(labels, jn.float32))
    assert y.shape == (4, 3)
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5)
    # Large logits stay finite.
    big = loss.cross_entropy_logits(jn.asarray([[1000., 0.]]), jn.asarray([[0., 1.]]))
    np.testing.assert_allclose(np.asarray(big), [1000.], rtol=1e-6)


def test_cross_entropy_sparse():
    labels = RNG.randint(0, 5, size=(4, 3))
    ref = np.zeros((4, 3))
    lsm = _np_log_softmax(LOGITS)
    for i in range(4):
        for j in range(3):
            ref[i, j] = -lsm[i, j, labels[i, j]]
    logits = jn.asarray(LOGITS, jn.float32)
    np.testing.assert_allclose(np.asarray(loss.cross_entropy_logits_sparse(logits, jn.asarray(labels))), ref,
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(loss.cross_entropy_logits_sparse(logits, 2)), -lsm[..., 2], rtol=1e-5)
    dense = jax.nn.one_hot(labels, 5)
    np.testing.assert_allclose(np.asarray(loss.cross_entropy_logits_sparse(logits, jn.asarray(labels))),
                               np.asarray(loss.cross_entropy_logits(logits, dense)), rtol=1e-5)


def test_sigmoid_cross_entropy():
    logits = np.array([-50., -3., -0.5, 0., 0.7, 4., 60.])
    labels = np.array([0., 1., 0.3, 1., 0., 0.5, 1.])
    p = scipy.special.expit(logits)
    naive = -(labels * np.log(np.clip(p, 1e-300, None)) + (1 - labels) * np.log(np.clip(1 - p, 1e-300, None)))
    # Exact log(1 - sigmoid(z)) = -softplus(z), log(sigmoid(z)) = -softplus(-z).
    ref = labels * np.logaddexp(0, -logits) + (1 - labels) * np.logaddexp(0, logits)
    np.testing.assert_allclose(ref[1:-1], naive[1:-1], rtol=1e-10)
    y = loss.sigmoid_cross_entropy_logits(jn.asarray(logits, jn.float32), jn.asarray(labels, jn.float32))
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(loss.sigmoid_cross_entropy_logits(jn.asarray(logits, jn.float32), 1)),
                               np.logaddexp(0, -logits), rtol=1e-5, atol=1e-7)


def test_l2():
    x = RNG.randn(3, 4).astype(np.float32)
    np.testing.assert_allclose(float(loss.l2(jn.asarray(x))), 0.5 * np.sum(x ** 2), rtol=1e-6)
    w = objax.TrainVar(jn.asarray(x))
    np.testing.assert_allclose(float(loss.l2(w.value)), 0.5 * np.sum(x ** 2), rtol=1e-6)


@pytest.mark.parametrize('keep_axis', [(0,), None, (), (1, 2), (-1,), [0, 2]])
def test_mean_errors(keep_axis):
    x = RNG.randn(2, 3, 4).astype(np.float32)
    y = RNG.rand(2, 3, 4).astype(np.float32)
    kept = sorted(a % 3 for a in (keep_axis or ()))
    axes = tuple(a for a in range(3) if a not in kept)
    pos = np.abs(x)
    for fn, ref in ((loss.mean_absolute_error, np.abs(x - y).mean(axes)),
                    (loss.mean_squared_error, ((x - y) ** 2).mean(axes)),
                    (loss.mean_squared_log_error, ((np.log(1 + pos) - np.log(1 + y)) ** 2).mean(axes))):
        a = pos if fn is loss.mean_squared_log_error else x
        out = fn(jn.asarray(a), jn.asarray(y), keep_axis=keep_axis)
        assert out.shape == tuple(x.shape[k] for k in kept)
        np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-7)


def test_mean_errors_default_keeps_batch():
    x, y = RNG.randn(5, 2).astype(np.float32), RNG.randn(5, 2).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loss.mean_squared_error(jn.asarray(x), jn.asarray(y))),
                               ((x - y) ** 2).mean(1), rtol=1e-6)


def test_kl():
    p = scipy.special.softmax(RNG.randn(3, 6), axis=-1)
    q = scipy.special.softmax(RNG.randn(3, 6), axis=-1)
    ref = np.array([scipy.stats.entropy(p[i], q[i]) for i in range(3)])
    out = divergence.kl(jn.asarray(p, jn.float32), jn.asarray(q, jn.float32), eps=0)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-6)
    eps = 2 ** -17
    ref_eps = (p * (np.log(p + eps) - np.log(q + eps))).sum(-1)
    np.testing.assert_allclose(np.asarray(divergence.kl(jn.asarray(p, jn.float32), jn.asarray(q, jn.float32))),
                               ref_eps, rtol=1e-4, atol=1e-6)
    # Zeros in p contribute nothing, zeros in q stay finite thanks to eps.
    z = divergence.kl(jn.asarray([0.5, 0.5, 0.]), jn.asarray([1., 0., 0.]))
    np.testing.assert_allclose(float(z), 0.5 * np.log(0.5 / (1 + eps)) + 0.5 * np.log((0.5 + eps) / eps), rtol=1e-4)


def test_bad_input():
    logits = jn.zeros((4, 5))
    with pytest.raises(ValueError, match='labels shape'):
        loss.cross_entropy_logits_sparse(logits, jn.zeros((5,), jn.int32))
    with pytest.raises(ValueError, match='integers'):
        loss.cross_entropy_logits_sparse(logits, jn.zeros((4,)))
    with pytest.raises(ValueError, match='out of range'):
        loss.cross_entropy_logits_sparse(logits, 5)
    with pytest.raises(ValueError, match='do not broadcast'):
        loss.cross_entropy_logits(logits, jn.zeros((4, 3)))
    with pytest.raises(ValueError, match='do not broadcast'):
        loss.mean_squared_error(jn.zeros((4, 3)), jn.zeros((4, 2)))
    with pytest.raises(ValueError, match='keep_axis 2 is out of range'):
        loss.mean_absolute_error(jn.zeros((4, 3)), jn.zeros((4, 3)), keep_axis=(2,))
