"""Pooling against numpy loops over windows."""

import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.functional import average_pool_2d, max_pool_2d


def _same_pads(n, size, stride):
    out = -(-n // stride)
    total = max((out - 1) * stride + size - n, 0)
    return total // 2, total - total // 2


def _np_pool(x, size, strides, pads, op, fill):
    (sh, sw), (th, tw) = size, strides
    xp = np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]), constant_values=fill)
    oh = (xp.shape[2] - sh) // th + 1
    ow = (xp.shape[3] - sw) // tw + 1
    out = np.zeros(x.shape[:2] + (oh, ow), x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = op(xp[:, :, i * th:i * th + sh, j * tw:j * tw + sw], axis=(2, 3))
    return out


CASES = [
    # size, strides, padding, numpy pads for a (7, 9) image
    (2, None, 'VALID', ((0, 0), (0, 0))),
    ((2, 3), None, objax.ConvPadding.VALID, ((0, 0), (0, 0))),
    (3, 1, 'valid', ((0, 0), (0, 0))),
    ((3, 2), (2, 1), 'SAME', (_same_pads(7, 3, 2), _same_pads(9, 2, 1))),
    (3, 2, objax.ConvPadding.SAME, (_same_pads(7, 3, 2), _same_pads(9, 3, 2))),
    (2, 2, 1, ((1, 1), (1, 1))),
    (3, 2, (0, 2), ((0, 2), (0, 2))),
    ((2, 3), (1, 2), [(1, 0), (2, 1)], ((1, 0), (2, 1))),
]


@pytest.mark.parametrize('size,strides,padding,pads', CASES)
def test_average_pool_matches_numpy(size, strides, padding, pads):
    x = np.random.RandomState(0).randn(2, 3, 7, 9).astype(np.float32)
    size2 = size if isinstance(size, tuple) else (size, size)
    strides2 = size2 if strides is None else (strides if isinstance(strides, tuple) else (strides, strides))
    ref = _np_pool(x, size2, strides2, pads, np.sum, 0) / np.prod(size2)
    y = average_pool_2d(jn.asarray(x), size, strides, padding)
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('size,strides,padding,pads', CASES)
def test_max_pool_matches_numpy(size, strides, padding, pads):
    x = np.random.RandomState(1).randn(2, 3, 7, 9).astype(np.float32) - 5  # all negative: padding must not win
    size2 = size if isinstance(size, tuple) else (size, size)
    strides2 = size2 if strides is None else (strides if isinstance(strides, tuple) else (strides, strides))
    ref = _np_pool(x, size2, strides2, pads, np.max, -np.inf)
    y = max_pool_2d(jn.asarray(x), size, strides, padding)
    np.testing.assert_array_equal(np.asarray(y), ref)


def test_defaults_and_int_input():
    x = np.arange(2 * 1 * 4 * 6).reshape(2, 1, 4, 6)
    np.testing.assert_array_equal(np.asarray(max_pool_2d(jn.asarray(x))), x[:, :, 1::2, 1::2])
    np.testing.assert_allclose(np.asarray(average_pool_2d(jn.asarray(x, jn.float32))),
                               x.reshape(2, 1, 2, 2, 3, 2).mean((3, 5)))


def test_pool_under_jit_and_grad():
    import jax
    x = jn.asarray(np.random.RandomState(2).randn(1, 2, 4, 4).astype(np.float32))
    g = jax.grad(lambda v: average_pool_2d(v, 2).sum())(x)
    np.testing.assert_allclose(np.asarray(g), np.full(x.shape, 0.25))
    np.testing.assert_allclose(np.asarray(jax.jit(max_pool_2d)(x)), np.asarray(max_pool_2d(x)))


@pytest.mark.parametrize('fn', [average_pool_2d, max_pool_2d])
def test_pool_bad_input(fn):
    x = jn.zeros((1, 2, 4, 4))
    with pytest.raises(ValueError, match='4D NCHW'):
        fn(jn.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match='padding'):
        fn(x, 2, padding='FULL')
    with pytest.raises(ValueError, match='padding'):
        fn(x, 2, padding=[(1, 1), (1, 1), (1, 1)])
    with pytest.raises(ValueError, match='padding'):
        fn(x, 2, padding=-1)
    with pytest.raises(ValueError, match='size'):
        fn(x, 0)
    with pytest.raises(ValueError, match='size'):
        fn(x, (2, 2, 2))
    with pytest.raises(ValueError, match='strides'):
        fn(x, 2, strides=(1, 0))
    with pytest.raises(ValueError, match='larger than the image'):
        fn(x, 5)
