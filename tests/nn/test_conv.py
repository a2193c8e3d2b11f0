"""Conv2D / ConvTranspose2D against numpy loops, the adjoint identity and jax.lax called directly."""

import math

import jax
import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.nn import Conv2D, ConvTranspose2D

RNG = np.random.default_rng(0)


def _normal(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def _same_pads(size, k, s, d):
    """TensorFlow's SAME rule: output ceil(size / s), total padding split with the extra cell at the end."""
    keff = (k - 1) * d + 1
    out = math.ceil(size / s)
    total = max((out - 1) * s + keff - size, 0)
    return total // 2, total - total // 2


def _np_conv(x, w, strides, dilations, pads, groups=1):
    """Cross-correlation of NCHW x with HWIO w over explicit (low, high) pads, by summing kernel taps."""
    (sh, sw), (dh, dw) = strides, dilations
    kh, kw, cin_g, nout = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]))
    ho = (xp.shape[2] - (kh - 1) * dh - 1) // sh + 1
    wo = (xp.shape[3] - (kw - 1) * dw - 1) // sw + 1
    out = np.zeros((x.shape[0], nout, ho, wo), np.float64)
    nout_g = nout // groups
    for g in range(groups):
        xg = xp[:, g * cin_g:(g + 1) * cin_g]
        for a in range(kh):
            for b in range(kw):
                patch = xg[:, :, a * dh:a * dh + (ho - 1) * sh + 1:sh, b * dw:b * dw + (wo - 1) * sw + 1:sw]
                out[:, g * nout_g:(g + 1) * nout_g] += np.einsum('nchw,co->nohw', patch,
                                                                 w[a, b, :, g * nout_g:(g + 1) * nout_g])
    return out


def _np_conv_transpose_full(x, w, strides, dilations):
    """Transposed convolution as a scatter: x[n, c, i, j] * w[a, b, o, c] lands on (i*s + a*d, j*s + b*d)."""
    (sh, sw), (dh, dw) = strides, dilations
    kh, kw, nout, _ = w.shape
    n, _, h, wd = x.shape
    out = np.zeros((n, nout, (h - 1) * sh + (kh - 1) * dh + 1, (wd - 1) * sw + (kw - 1) * dw + 1))
    for a in range(kh):
        for b in range(kw):
            out[:, :, a * dh:a * dh + (h - 1) * sh + 1:sh, b * dw:b * dw + (wd - 1) * sw + 1:sw] += \
                np.einsum('nchw,oc->nohw', x, w[a, b])
    return out


def _with_weights(layer, w, b=None):
    layer.w.assign(jn.asarray(w))
    if b is not None:
        layer.b.assign(jn.asarray(b))
    return layer


@pytest.mark.parametrize('k,strides,dilations,groups', [
    (3, 1, 1, 1), ((3, 2), (2, 1), 1, 1), (3, 2, 2, 1), (2, (1, 3), (2, 1), 2), (1, 1, 1, 4), (3, 2, 1, 4)])
def test_conv2d_matches_numpy_same_and_valid(k, strides, dilations, groups):
    nin, nout = 4, 8
    layer = Conv2D(nin, nout, k, strides=strides, dilations=dilations, groups=groups)
    kh, kw = (k, k) if isinstance(k, int) else k
    assert layer.w.shape == (kh, kw, nin // groups, nout) and layer.b.shape == (nout, 1, 1)
    w, b = _normal(kh, kw, nin // groups, nout), _normal(nout, 1, 1)
    _with_weights(layer, w, b)
    x = _normal(2, nin, 9, 10)
    s = (strides, strides) if isinstance(strides, int) else strides
    d = (dilations, dilations) if isinstance(dilations, int) else dilations
    pads = (_same_pads(9, kh, s[0], d[0]), _same_pads(10, kw, s[1], d[1]))
    np.testing.assert_allclose(layer(jn.asarray(x)), _np_conv(x, w, s, d, pads, groups) + b, rtol=1e-4, atol=1e-4)
    valid = Conv2D(nin, nout, k, strides=strides, dilations=dilations, groups=groups, padding='VALID')
    _with_weights(valid, w, b)
    np.testing.assert_allclose(valid(jn.asarray(x)), _np_conv(x, w, s, d, ((0, 0), (0, 0)), groups) + b,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('padding,pads', [
    (objax.ConvPadding.SAME, None), ('same', None), ('Same', None), (objax.ConvPadding.VALID, ((0, 0), (0, 0))),
    ('valid', ((0, 0), (0, 0))), (2, ((2, 2), (2, 2))), ((1, 2), ((1, 2), (1, 2))),
    ([(0, 1), (2, 0)], ((0, 1), (2, 0))), (((3, 1), (1, 3)), ((3, 1), (1, 3)))])
def test_conv2d_every_padding_form(padding, pads):
    w, x = _normal(3, 3, 2, 5), _normal(2, 2, 7, 6)
    layer = _with_weights(Conv2D(2, 5, 3, strides=2, padding=padding, use_bias=False), w)
    if pads is None:
        pads = (_same_pads(7, 3, 2, 1), _same_pads(6, 3, 2, 1))
    np.testing.assert_allclose(layer(jn.asarray(x)), _np_conv(x, w, (2, 2), (1, 1), pads), rtol=1e-4, atol=1e-4)


def test_conv2d_against_lax_in_nhwc_layout():
    # lax called directly on the NHWC transposes of the data: a layout-independent second reference.
    layer = Conv2D(6, 4, (3, 2), strides=(1, 2), dilations=(2, 1), groups=2, padding=[(1, 0), (0, 2)])
    x = _normal(3, 6, 8, 8)
    ref = jax.lax.conv_general_dilated(jn.asarray(x.transpose(0, 2, 3, 1)), layer.w.value, (1, 2),
                                       [(1, 0), (0, 2)], rhs_dilation=(2, 1), feature_group_count=2,
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    np.testing.assert_allclose(layer(jn.asarray(x)), np.asarray(ref).transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-5)


def test_conv2d_options_and_init():
    shapes = []

    def init(shape):
        shapes.append(shape)
        return jn.full(shape, 0.5)

    layer = Conv2D(6, 9, (2, 3), groups=3, use_bias=False, w_init=init)
    assert shapes == [(2, 3, 2, 9)] and layer.b is None
    assert list(layer.vars().keys()) == ['(Conv2D).w']
    # Objax 1.8's creation order: the bias first (it decides gradient, slot and checkpoint order).
    assert list(Conv2D(1, 2, 1).vars().keys()) == ['(Conv2D).b', '(Conv2D).w']
    assert list(ConvTranspose2D(1, 2, 1).vars().keys()) == ['(ConvTranspose2D).b', '(ConvTranspose2D).w']
    assert list(ConvTranspose2D(1, 2, 1, use_bias=False).vars().keys()) == ['(ConvTranspose2D).w']
    # Default kaiming_normal: standard deviation sqrt(1 / fan_in) with fan_in = k_h * k_w * nin.
    w = np.asarray(Conv2D(32, 256, 3).w.value)
    assert abs(w.std() - np.sqrt(1 / (9 * 32))) < 0.05 * np.sqrt(1 / (9 * 32))
    x = jn.ones((1, 6, 4, 4))
    np.testing.assert_allclose(layer(x)[0, :, 1, 1], np.full(9, 0.5 * 2 * 3 * 2))


def test_conv_errors():
    with pytest.raises(ValueError, match=r'4 channels.*|expects 3 input channels.*4'):
        Conv2D(3, 16, 3)(jn.ones((1, 4, 8, 8)))
    with pytest.raises(ValueError, match='3') as info:
        Conv2D(3, 16, 3)(jn.ones((1, 4, 8, 8)))
    assert '3' in str(info.value) and '4' in str(info.value)
    with pytest.raises(ValueError, match='NCHW'):
        Conv2D(3, 16, 3)(jn.ones((3, 8, 8)))
    with pytest.raises(ValueError, match='groups'):
        Conv2D(6, 4, 3, groups=4)
    with pytest.raises(ValueError, match='padding'):
        Conv2D(3, 4, 3, padding='full')
    with pytest.raises((ValueError, TypeError), match='padding'):
        Conv2D(3, 4, 3, padding=[(1, 2, 3)])
    with pytest.raises(ValueError, match='strides'):
        Conv2D(3, 4, 3, strides=0)
    with pytest.raises(ValueError, match='k'):
        Conv2D(3, 4, (3, 3, 3))
    with pytest.raises(ValueError, match='5 input channels'):
        ConvTranspose2D(5, 2, 3)(jn.ones((1, 2, 4, 4)))


def test_conv_transpose_layout_and_valid_scatter():
    layer = ConvTranspose2D(3, 5, (3, 2), strides=(2, 1), dilations=(1, 2), padding='VALID')
    assert layer.w.shape == (3, 2, 5, 3) and layer.b.shape == (5, 1, 1)
    w, b, x = _normal(3, 2, 5, 3), _normal(5, 1, 1), _normal(2, 3, 4, 5)
    _with_weights(layer, w, b)
    np.testing.assert_allclose(layer(jn.asarray(x)), _np_conv_transpose_full(x, w, (2, 1), (1, 2)) + b,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('k,strides,dilations,padding', [
    (3, 2, 1, 'SAME'), (4, 2, 1, 'same'), (2, 3, 1, 'SAME'), (3, 1, 2, 'SAME'), ((3, 4), (2, 3), 1, 'SAME'),
    (3, 2, 1, 'VALID'), (2, 3, 1, 'VALID'), ((3, 2), (1, 2), (2, 1), 'valid')])
def test_conv_transpose_is_adjoint_of_conv(k, strides, dilations, padding):
    # <convT(x), z> == <x, conv(z)>: the transposed convolution is the adjoint of the convolution (same w).
    layer = ConvTranspose2D(3, 4, k, strides=strides, dilations=dilations, padding=padding, use_bias=False)
    x = jn.asarray(_normal(2, 3, 5, 6))
    y = layer(x)
    s = (strides,) * 2 if isinstance(strides, int) else strides
    if padding.upper() == 'SAME':
        assert y.shape == (2, 4, 5 * s[0], 6 * s[1])
    z = jn.asarray(_normal(*y.shape))
    conv_z = jax.lax.conv_general_dilated(z, layer.w.value, s, padding.upper(),
                                          rhs_dilation=(dilations,) * 2 if isinstance(dilations, int) else dilations,
                                          dimension_numbers=('NCHW', 'HWIO', 'NCHW'))
    assert conv_z.shape == x.shape
    np.testing.assert_allclose(float((y * z).sum()), float((x * conv_z).sum()), rtol=1e-4)


@pytest.mark.parametrize('padding', [1, (2, 0), [(0, 1), (3, 2)]])
def test_conv_transpose_explicit_padding(padding):
    # Explicit pads apply to the stride-dilated input of the flipped-kernel convolution: the output is the
    # full scatter shifted by (k_eff - 1 - low) and cut/extended (with zeros) to the padded length.
    layer = ConvTranspose2D(2, 3, 3, strides=2, padding=padding, use_bias=False)
    x = _normal(1, 2, 4, 5)
    full = _np_conv_transpose_full(x, np.asarray(layer.w.value), (2, 2), (1, 1))
    pads = objax.util.to_padding(padding, 2)
    ref = full
    for axis, (lo, hi) in zip((2, 3), pads):
        n = x.shape[axis]
        length = (n - 1) * 2 + 1 + lo + hi - 3 + 1
        start = 2 - lo
        big = np.pad(ref, [(0, 0)] * axis + [(10, 10)] + [(0, 0)] * (3 - axis))
        ref = np.take(big, np.arange(start + 10, start + 10 + length), axis=axis)
    np.testing.assert_allclose(layer(jn.asarray(x)), ref, rtol=1e-4, atol=1e-4)


def test_conv_under_jit_and_grad():
    layer = Conv2D(2, 3, 3, strides=2)
    x = jn.asarray(_normal(2, 2, 6, 6))
    np.testing.assert_allclose(objax.Jit(layer)(x), layer(x), rtol=1e-6, atol=1e-6)
    grads, _ = objax.GradValues(lambda x: (layer(x) ** 2).sum(), layer.vars())(x)

    def ref_loss(w, b):
        y = jax.lax.conv_general_dilated(x, w, (2, 2), 'SAME', dimension_numbers=('NCHW', 'HWIO', 'NCHW'))
        return ((y + b) ** 2).sum()

    # Gradients come in vars() order: [d/db, d/dw].
    ref = jax.grad(ref_loss, argnums=(1, 0))(layer.w.value, layer.b.value)
    assert [g.shape for g in grads] == [(3, 1, 1), (3, 3, 2, 3)]
    for g, r in zip(grads, ref):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)


def test_reprs():
    assert repr(Conv2D(4, 5, 3)) == ('objax.nn.Conv2D(nin=4, nout=5, k=(3, 3), strides=(1, 1), dilations=(1, 1), '
                                     "groups=1, padding='SAME', use_bias=True, w_init=kaiming_normal(*, gain=1))")
    assert repr(ConvTranspose2D(4, 5, 3)) == ('objax.nn.ConvTranspose2D(nin=4, nout=5, k=(3, 3), strides=(1, 1), '
                                              "dilations=(1, 1), padding='SAME', use_bias=True, "
                                              'w_init=kaiming_normal(*, gain=1))')
    layer = Conv2D(6, 4, (3, 2), strides=(1, 2), groups=2, padding='valid', use_bias=False,
                   w_init=objax.nn.init.xavier_normal)
    assert repr(layer) == ('objax.nn.Conv2D(nin=6, nout=4, k=(3, 2), strides=(1, 2), dilations=(1, 1), groups=2, '
                           "padding='VALID', use_bias=False, w_init=xavier_normal(*, gain=1))")
