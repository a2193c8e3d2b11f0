"""objax.nn.init: gains, sample statistics on large draws, truncation bounds, orthogonality, shapes."""

import numpy as np
import pytest
import scipy.stats

import objax
from objax.nn import init

TRUNC_STD = 0.87962566103423978


def test_truncated_std_constant():
    # Standard deviation of a unit normal truncated to [-2, 2], from the closed form.
    assert abs(scipy.stats.truncnorm(-2, 2).std() - TRUNC_STD) < 1e-12
    # The default bounds keep exactly the constant earlier versions used: same samples, bit for bit.
    assert init._truncated_std(-2, 2) == TRUNC_STD


def test_gains():
    assert init.kaiming_normal_gain((3, 3, 4, 8)) == pytest.approx(np.sqrt(1 / 36))
    assert init.kaiming_normal_gain((10, 5)) == pytest.approx(np.sqrt(1 / 10))
    assert init.xavier_normal_gain((3, 3, 4, 8)) == pytest.approx(np.sqrt(2 / 44))
    assert init.xavier_normal_gain((10, 5)) == pytest.approx(np.sqrt(2 / 15))
    assert init.gain_leaky_relu() == pytest.approx(np.sqrt(2 / 1.01))
    assert init.gain_leaky_relu(0) == pytest.approx(np.sqrt(2))
    assert init.gain_leaky_relu(1) == pytest.approx(1)


def _stats(x):
    x = np.asarray(x, np.float64)
    return x.mean(), x.std()


@pytest.mark.parametrize('shape,gain', [((400, 300), 1), ((5, 5, 16, 64), 2.5)])
def test_normal_initializers_statistics(shape, gain):
    objax.random.DEFAULT_GENERATOR.seed(1)
    fan_in, fan_out = int(np.prod(shape[:-1])), shape[-1]
    for fn, std in ((init.kaiming_normal, gain * np.sqrt(1 / fan_in)),
                    (init.xavier_normal, gain * np.sqrt(2 / (fan_in + fan_out)))):
        x = fn(shape, gain=gain)
        assert x.shape == shape
        mean, s = _stats(x)
        assert abs(mean) < 0.02 * std
        assert s == pytest.approx(std, rel=0.02)


def test_truncated_normal_statistics_and_bounds():
    objax.random.DEFAULT_GENERATOR.seed(2)
    x = np.asarray(init.truncated_normal((200000,), stddev=3))
    _, s = _stats(x)
    assert s == pytest.approx(3, rel=0.01)
    assert np.abs(x).max() <= 2 * 3 / TRUNC_STD + 1e-5
    assert np.abs(x).max() > 1.9 * 3 / TRUNC_STD
    # Asymmetric bounds: the samples of the truncated unit normal are divided by its own std s(-1, 0.5).
    s = scipy.stats.truncnorm(-1, 0.5).std()
    y = np.asarray(init.truncated_normal((50000,), lower=-1, upper=0.5))
    assert y.min() >= -1 / s - 1e-5 and y.max() <= 0.5 / s + 1e-5
    assert y.min() < -0.95 / s and y.max() > 0.45 / s
    assert _stats(y)[1] == pytest.approx(1, rel=0.02)


@pytest.mark.parametrize('lower,upper,expected', [(-2, 2, 0.87963), (-0.1, 0.1, 0.057697), (-100, 100, 1.0)])
def test_truncated_std_of_the_actual_bounds(lower, upper, expected):
    # Objax 1.8 divides by s(a, b), the standard deviation of a unit normal truncated to the actual [a, b].
    assert init._truncated_std(lower, upper) == pytest.approx(expected, abs=5e-6)
    assert init._truncated_std(lower, upper) == pytest.approx(scipy.stats.truncnorm(lower, upper).std(), rel=1e-12)


@pytest.mark.parametrize('lower,upper', [(-1, 0.5), (0, 3), (3, 5), (-6, -5), (-3, 1e-3), (0.5, np.inf)])
def test_truncated_std_matches_scipy(lower, upper):
    assert init._truncated_std(lower, upper) == pytest.approx(scipy.stats.truncnorm(lower, upper).std(), rel=1e-9)


def test_truncated_normal_spec_examples():
    # Scaled by the std of the actual bounds: +-0.1 with stddev 1 gives std ~ 1 and |x| <= 0.1 / 0.057697 = 1.733.
    objax.random.DEFAULT_GENERATOR.seed(6)
    x = np.asarray(init.truncated_normal((32, 10000), lower=-0.1, upper=0.1, stddev=1))
    assert x.shape == (32, 10000)
    assert _stats(x)[1] == pytest.approx(1, rel=0.01)
    assert np.abs(x).max() <= 1.7333 and np.abs(x).max() > 1.72
    # Wide bounds: practically a normal; the [-2, 2] constant would give std 1 / 0.8796 = 1.137.
    x = np.asarray(init.truncated_normal((32, 10000), lower=-100, upper=100))
    assert _stats(x)[1] == pytest.approx(1, rel=0.01)
    with pytest.raises(ValueError, match='lower'):
        init.truncated_normal((3,), lower=1, upper=1)


@pytest.mark.parametrize('fn,gain_fn', [(init.kaiming_truncated_normal, init.kaiming_normal_gain),
                                        (init.xavier_truncated_normal, init.xavier_normal_gain)])
def test_truncated_variants(fn, gain_fn):
    objax.random.DEFAULT_GENERATOR.seed(3)
    shape = (3, 3, 32, 64)
    std = 1.5 * gain_fn(shape)
    x = np.asarray(fn(shape, gain=1.5))
    assert x.shape == shape
    _, s = _stats(x)
    assert s == pytest.approx(std, rel=0.02)
    assert np.abs(x).max() <= 2 * std / TRUNC_STD + 1e-6
    # Other bounds: std gain * (Kaiming or Xavier std), bounds scaled by that over s(lower, upper).
    objax.random.DEFAULT_GENERATOR.seed(4)
    x = np.asarray(fn((256, 256), lower=-1, upper=1, gain=2))
    std = 2 * gain_fn((256, 256))
    assert _stats(x)[1] == pytest.approx(std, rel=0.02)
    assert np.abs(x).max() <= std / scipy.stats.truncnorm(-1, 1).std() + 1e-6


def _matrix_view(x, axis):
    x = np.moveaxis(np.asarray(x, np.float64), axis, 0)
    return x.reshape(x.shape[0], -1)


@pytest.mark.parametrize('shape,axis', [((6, 6), -1), ((3, 7), -1), ((7, 3), -1), ((3, 3, 4, 8), -1),
                                        ((6, 2, 2), 0), ((2, 5, 3), 1)])
def test_orthogonal(shape, axis):
    objax.random.DEFAULT_GENERATOR.seed(4)
    x = init.orthogonal(shape, gain=2, axis=axis)
    assert x.shape == shape
    m = _matrix_view(x, axis) / 2
    assert m.shape[0] == shape[axis]
    small = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    np.testing.assert_allclose(small, np.eye(small.shape[0]), atol=1e-5)


def test_orthogonal_is_the_q_of_the_drawn_normal():
    # Reference: the same normal draw, numpy QR with the diagonal of R made positive.
    objax.random.DEFAULT_GENERATOR.seed(5)
    g = np.asarray(objax.random.normal((5, 3)), np.float64)
    q, r = np.linalg.qr(g)
    q = q * np.sign(np.diag(r))
    objax.random.DEFAULT_GENERATOR.seed(5)
    np.testing.assert_allclose(np.asarray(init.orthogonal((5, 3))), q, atol=1e-5)
    objax.random.DEFAULT_GENERATOR.seed(5)
    np.testing.assert_allclose(np.asarray(init.orthogonal((3, 5))), q.T, atol=1e-5)


def test_identity():
    np.testing.assert_array_equal(np.asarray(init.identity((3, 4), gain=2)), 2 * np.eye(3, 4))
    np.testing.assert_array_equal(np.asarray(init.identity((2, 2))), np.eye(2))


def test_bad_shapes():
    with pytest.raises(ValueError, match='2D shape'):
        init.identity((2, 2, 2))
    with pytest.raises(ValueError, match='at least 2 dimensions'):
        init.orthogonal((4,))
    with pytest.raises(ValueError, match='axis 2 is out of range'):
        init.orthogonal((4, 4), axis=2)
    with pytest.raises(ValueError, match='at least one dimension'):
        init.kaiming_normal_gain(())
