"""Space/batch/channel rearrangements against numpy loops written from Objax 1.8's element-order formulas
(channel-major for channels, image-major for batches), and flatten."""

import jax.numpy as jn
import numpy as np
import pytest

from objax.functional import batch_to_space2d, channel_to_space2d, flatten, space_to_batch2d, space_to_channel2d

X = np.arange(2 * 3 * 4 * 6, dtype=np.float32).reshape(2, 3, 4, 6)


@pytest.mark.parametrize('size', [2, (2, 3), (1, 2), (4, 1)])
def test_space_to_batch_loop(size):
    sh, sw = size if isinstance(size, tuple) else (size, size)
    n = X.shape[0]
    ref = np.zeros((n * sh * sw, 3, 4 // sh, 6 // sw), np.float32)
    for b in range(n):
        for i in range(sh):
            for j in range(sw):
                ref[b * sh * sw + i * sw + j] = X[b, :, i::sh, j::sw]  # image-major
    y = space_to_batch2d(jn.asarray(X), size)
    np.testing.assert_array_equal(np.asarray(y), ref)
    np.testing.assert_array_equal(np.asarray(batch_to_space2d(y, size)), X)


@pytest.mark.parametrize('size', [2, (2, 3), (1, 2)])
def test_space_to_channel_loop(size):
    sh, sw = size if isinstance(size, tuple) else (size, size)
    c = X.shape[1]
    ref = np.zeros((2, c * sh * sw, 4 // sh, 6 // sw), np.float32)
    for k in range(c):
        for i in range(sh):
            for j in range(sw):
                ref[:, k * sh * sw + i * sw + j] = X[:, k, i::sh, j::sw]  # channel-major
    y = space_to_channel2d(jn.asarray(X), size)
    np.testing.assert_array_equal(np.asarray(y), ref)
    np.testing.assert_array_equal(np.asarray(channel_to_space2d(y, size)), X)


def test_channel_to_space_loop():
    x = np.random.RandomState(0).randn(2, 12, 3, 2).astype(np.float32)
    ref = np.zeros((2, 2, 6, 6), np.float32)
    for k in range(2):
        for i in range(2):
            for j in range(3):
                ref[:, k, i::2, j::3] = x[:, k * 6 + i * 3 + j]
    np.testing.assert_array_equal(np.asarray(channel_to_space2d(jn.asarray(x), (2, 3))), ref)


def test_batch_to_space_loop():
    x = np.random.RandomState(1).randn(8, 2, 3, 2).astype(np.float32)
    ref = np.zeros((2, 2, 6, 4), np.float32)
    for b in range(2):
        for i in range(2):
            for j in range(2):
                ref[b, :, i::2, j::2] = x[b * 4 + i * 2 + j]
    np.testing.assert_array_equal(np.asarray(batch_to_space2d(jn.asarray(x))), ref)


def test_spec_examples():
    # Objax 1.8's element order: with these shapes every rearrangement keeps the flat element order.
    np.testing.assert_array_equal(np.asarray(space_to_channel2d(jn.arange(8).reshape(1, 2, 2, 2), 2)).ravel(),
                                  np.arange(8))
    np.testing.assert_array_equal(np.asarray(space_to_batch2d(jn.arange(8).reshape(2, 1, 2, 2), 2)).ravel(),
                                  np.arange(8))
    np.testing.assert_array_equal(np.asarray(channel_to_space2d(jn.arange(8).reshape(1, 8, 1, 1), 2)).ravel(),
                                  np.arange(8))
    np.testing.assert_array_equal(np.asarray(batch_to_space2d(jn.arange(8).reshape(8, 1, 1, 1), 2)).ravel(),
                                  np.arange(8))
    # Two channels of a 2x2 image: channel c's four offsets are output channels 4c..4c+3.
    y = np.asarray(space_to_channel2d(jn.arange(8).reshape(1, 2, 2, 2), 2))
    assert y.shape == (1, 8, 1, 1) and list(y[0, 4:, 0, 0]) == [4, 5, 6, 7]


def test_flatten():
    np.testing.assert_array_equal(np.asarray(flatten(jn.asarray(X))), X.reshape(2, 72))
    assert flatten(jn.zeros((5,))).shape == (5, 1)
    with pytest.raises(ValueError, match='batch axis'):
        flatten(jn.zeros(()))


def test_bad_input():
    x = jn.asarray(X)
    with pytest.raises(ValueError, match='not divisible'):
        space_to_batch2d(x, 4)
    with pytest.raises(ValueError, match='not divisible'):
        space_to_channel2d(x, (3, 2))
    with pytest.raises(ValueError, match='batch dimension 2 is not divisible'):
        batch_to_space2d(x, 2)
    with pytest.raises(ValueError, match='channel dimension 3 is not divisible'):
        channel_to_space2d(x, 2)
    for fn in (space_to_batch2d, batch_to_space2d, space_to_channel2d, channel_to_space2d):
        with pytest.raises(ValueError, match='4D NCHW'):
            fn(jn.zeros((4, 4, 4)))
        with pytest.raises(ValueError, match='size'):
            fn(x, 0)
