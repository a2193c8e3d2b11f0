"""interpolate / upsample_2d / upscale_nn against hand-computed values, numpy loops and jax.image.resize."""

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.functional import interpolate, upsample_2d, upscale_nn


def test_interpolate_hand_values():
    x = jn.asarray([[0., 1.]])
    # Half-pixel centres: output samples at -0.25, 0.25, 0.75, 1.25 of the input grid, clamped at the edges.
    np.testing.assert_allclose(np.asarray(interpolate(x, size=4, mode='linear')), [[0, .25, .75, 1]], atol=1e-6)
    np.testing.assert_allclose(np.asarray(interpolate(x, scale_factor=2, mode=objax.Interpolate.NEAREST)),
                               [[0, 0, 1, 1]])
    img = jn.asarray([[[[1., 2.], [3., 4.]]]])
    y = interpolate(img, size=(4, 4), mode='bilinear')
    row = np.array([0, .25, .75, 1])
    np.testing.assert_allclose(np.asarray(y)[0, 0], 1 + row[None, :] + 2 * row[:, None], atol=1e-6)


@pytest.mark.parametrize('mode', list(objax.Interpolate))
def test_interpolate_matches_resize(mode):
    x = jn.asarray(np.random.RandomState(0).randn(2, 3, 5, 6).astype(np.float32))
    ref = jax.image.resize(x, (2, 3, 10, 9), method=mode.value)
    np.testing.assert_allclose(np.asarray(interpolate(x, size=(10, 9), mode=mode)), np.asarray(ref), atol=1e-6)
    np.testing.assert_allclose(np.asarray(interpolate(x, scale_factor=(2, 1.5), mode=mode.value.upper())),
                               np.asarray(ref), atol=1e-6)


def test_interpolate_axes_rules():
    x = jn.ones((2, 3, 5, 6))
    assert interpolate(x, size=7).shape == (2, 3, 5, 7)
    assert interpolate(x, scale_factor=2).shape == (2, 6, 10, 12)  # a single factor: every axis but the first
    assert interpolate(x, scale_factor=(2,)).shape == (2, 3, 5, 12)
    assert interpolate(x, size=(4, 2, 3)).shape == (2, 4, 2, 3)


@pytest.mark.parametrize('kwargs,shape', [({'scale_factor': 2}, (1, 6, 4, 6, 20, 60)),
                                          ({'scale_factor': (2, 2, 2)}, (1, 3, 2, 6, 20, 60)),
                                          ({'size': 2}, (1, 3, 2, 3, 10, 2)),
                                          ({'size': (2, 2, 2)}, (1, 3, 2, 2, 2, 2))])
def test_interpolate_spec_examples(kwargs, shape):
    # Objax 1.8's rule (an int scale_factor scales every axis but the first; a tuple, or a size, the last axes),
    # for an input of shape (1, 3, 2, 3, 10, 30); values checked against jax.image.resize directly.
    x = jn.asarray(np.random.RandomState(3).randn(1, 3, 2, 3, 10, 30).astype(np.float32))
    y = interpolate(x, mode='nearest', **kwargs)
    assert y.shape == shape
    np.testing.assert_array_equal(np.asarray(y), np.asarray(jax.image.resize(x, shape, method='nearest')))


def test_interpolate_single_factor_scales_every_axis_but_the_first():
    x = jn.asarray([[[0., 1.]]])  # (1, 1, 2)
    np.testing.assert_array_equal(np.asarray(interpolate(x, scale_factor=2, mode='nearest')),
                                  [[[0, 0, 1, 1], [0, 0, 1, 1]]])
    with pytest.raises(ValueError, match='no other axis'):
        interpolate(jn.ones(3), scale_factor=2)


def test_upsample_2d():
    x = jn.asarray(np.random.RandomState(1).randn(2, 3, 4, 5).astype(np.float32))
    ref = jax.image.resize(x, (2, 3, 8, 15), method='bicubic')
    np.testing.assert_allclose(np.asarray(upsample_2d(x, (2, 3), 'bicubic')), np.asarray(ref), atol=1e-6)
    ref = jax.image.resize(x, (2, 3, 8, 10), method='bilinear')
    np.testing.assert_allclose(np.asarray(upsample_2d(x, 2)), np.asarray(ref), atol=1e-6)


def test_upscale_nn_loop():
    x = np.random.RandomState(2).randn(2, 3, 4, 5).astype(np.float32)
    ref = np.zeros((2, 3, 12, 15), np.float32)
    for i in range(12):
        for j in range(15):
            ref[:, :, i, j] = x[:, :, i // 3, j // 3]
    np.testing.assert_array_equal(np.asarray(upscale_nn(jn.asarray(x), 3)), ref)
    assert upscale_nn(jn.asarray(x)).shape == (2, 3, 8, 10)


def test_bad_input():
    x = jn.ones((1, 2, 4, 4))
    with pytest.raises(ValueError, match='exactly one of size and scale_factor'):
        interpolate(x)
    with pytest.raises(ValueError, match='exactly one of size and scale_factor'):
        interpolate(x, size=3, scale_factor=2)
    with pytest.raises(ValueError, match='interpolation method'):
        interpolate(x, size=3, mode='bogus')
    with pytest.raises(ValueError, match='size'):
        interpolate(x, size=(0, 3))
    with pytest.raises(ValueError, match='size'):
        interpolate(x, size=2.5)
    with pytest.raises(ValueError, match='5 sizes'):
        interpolate(x, size=(2, 2, 2, 2, 2))
    with pytest.raises(ValueError, match='shrinks'):
        interpolate(x, scale_factor=0.1)
    with pytest.raises(ValueError, match='scale_factor'):
        interpolate(x, scale_factor=(2, -1))
    with pytest.raises(ValueError, match='5 scale factors'):
        interpolate(x, scale_factor=(2, 2, 2, 2, 2))
    with pytest.raises(ValueError, match='4D NCHW'):
        upsample_2d(jn.ones((2, 4, 4)), 2)
    with pytest.raises(ValueError, match='interpolation method'):
        upsample_2d(x, 2, method='spline')
    with pytest.raises(ValueError, match='scale'):
        upsample_2d(x, (2, 0))
    with pytest.raises(ValueError, match='4D NCHW'):
        upscale_nn(jn.ones((4, 4)))
    with pytest.raises(ValueError, match='positive int'):
        upscale_nn(x, 1.5)


def test_objax18_attribute_path_functional_core_ops():
    # Objax 1.8's tests call objax.functional.core.ops.interpolate after a plain `import objax` (a fresh process,
    # so that no other test has imported the submodule first).
    code = ('import objax, numpy as np\n'
            'x = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)\n'
            'a = objax.functional.core.ops.interpolate(x, size=(4, 6))\n'
            'b = objax.functional.core.ops.upsample_2d(x, scale=(2, 2))\n'
            'print(a.shape, b.shape)\n')
    src = pathlib.Path(__file__).resolve().parents[2] / 'src'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                         env={'PYTHONPATH': str(src), 'JAX_PLATFORMS': 'cpu', 'PATH': '/usr/bin:/bin'})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ['(1,', '1,', '4,', '6)', '(1,', '1,', '4,', '6)']
