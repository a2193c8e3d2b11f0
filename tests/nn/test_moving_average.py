"""MovingAverage and ExponentialMovingAverage against numpy running averages."""

import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.nn import ExponentialMovingAverage, MovingAverage


def test_moving_average_window():
    ma = MovingAverage((2,), buffer_size=3, init_value=1.0)
    assert isinstance(ma.buffer, objax.StateVar) and ma.buffer.shape == (3, 2)
    values = np.random.default_rng(0).normal(size=(6, 2)).astype(np.float32)
    history = [np.ones(2)] * 3
    step = objax.Jit(ma)
    for i, v in enumerate(values):
        history = history[1:] + [v]
        out = (ma if i % 2 else step)(jn.asarray(v))
        np.testing.assert_allclose(out, np.mean(history, 0), rtol=1e-6)


def test_exponential_moving_average():
    ema = ExponentialMovingAverage((3,), momentum=0.8, init_value=2.0)
    assert ema.momentum == 0.8 and isinstance(ema.avg, objax.StateVar)
    avg = np.full(3, 2.0)
    step = objax.Jit(ema)
    for i, v in enumerate(np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)):
        avg = 0.8 * avg + 0.2 * v
        np.testing.assert_allclose((ema if i % 2 else step)(jn.asarray(v)), avg, rtol=1e-6)
    np.testing.assert_allclose(ema.avg.value, avg, rtol=1e-6)
    assert ExponentialMovingAverage((1,)).momentum == 0.999


def test_errors():
    with pytest.raises(ValueError, match=r'\(2,\).*\(3,\)'):
        MovingAverage((2,), 4)(jn.ones(3))
    with pytest.raises(ValueError, match='buffer_size'):
        MovingAverage((2,), 0)
    with pytest.raises(ValueError, match='momentum'):
        ExponentialMovingAverage((2,), momentum=2)


def test_reprs():
    assert repr(MovingAverage((2, 3), buffer_size=4, init_value=0.2)) == \
        'objax.nn.MovingAverage(shape=(2, 3), buffer_size=4, init_value=0.2)'
    assert repr(ExponentialMovingAverage((5, 6))) == \
        'objax.nn.ExponentialMovingAverage(shape=(5, 6), momentum=0.999, init_value=0)'
