"""Linear: y = x . w + b against numpy, Objax 1.8's variable order (b, then w) and its repr."""

import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.nn import Linear


def test_matches_numpy():
    layer = Linear(4, 3)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    layer.b.assign(jn.asarray([1., 2., 3.]))
    ref = x @ np.asarray(layer.w.value) + np.array([1., 2., 3.])
    np.testing.assert_allclose(layer(jn.asarray(x)), ref, rtol=1e-5, atol=1e-6)
    assert Linear(4, 3, use_bias=False).b is None
    with pytest.raises(ValueError, match=r'4 features.*\(5, 3\)'):
        layer(jn.ones((5, 3)))


def test_bias_before_weight_in_vars_gradients_and_optimizer_slots():
    # Objax 1.8's creation order: vars() lists (Linear).b then (Linear).w; that order decides the gradient list
    # and the slots.
    model = Linear(5, 5)
    assert list(model.vars().keys()) == ['(Linear).b', '(Linear).w']
    assert list(Linear(5, 5, use_bias=False).vars().keys()) == ['(Linear).w']
    x = jn.asarray(np.random.default_rng(1).normal(size=(8, 5)).astype(np.float32))
    y = jn.asarray(np.random.default_rng(2).normal(size=(8, 5)).astype(np.float32))

    def loss(x, y):
        return ((model(x) - y) ** 2).mean()

    grads, _ = objax.GradValues(loss, model.vars())(x, y)
    assert grads[0].shape == (5,) and grads[1].shape == (5, 5)  # the spec's example: [0][0] has shape (5,)
    # Closed form: d/db = 2 * mean over the batch of the residual / 5 (mean over 8 x 5 entries); d/dw = x^T r.
    residual = np.asarray(model(x) - y, np.float64) * 2 / 40
    np.testing.assert_allclose(grads[0], residual.sum(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[1], np.asarray(x, np.float64).T @ residual, rtol=1e-5, atol=1e-6)
    opt = objax.optimizer.Momentum(model.vars())
    slots = opt.vars()
    assert slots['(Momentum).m(ModuleList)[0]'].value.shape == (5,)
    assert slots['(Momentum).m(ModuleList)[1]'].value.shape == (5, 5)


def test_repr():
    assert repr(Linear(2, 3)) == 'objax.nn.Linear(nin=2, nout=3, use_bias=True, w_init=xavier_normal(*, gain=1))'
    assert repr(Linear(4, 1, use_bias=False, w_init=objax.nn.init.kaiming_normal)) == \
        'objax.nn.Linear(nin=4, nout=1, use_bias=False, w_init=kaiming_normal(*, gain=1))'
