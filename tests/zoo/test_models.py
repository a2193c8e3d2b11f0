"""objax.zoo: parameter counts against published architectures and closed-form counts, output shapes, forward
passes against lax/numpy references built from the layer descriptions, train/eval behaviour."""

import functools
import math

import jax
import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.zoo.convnet import ConvNet
from objax.zoo.dnnet import DNNet
from objax.zoo.resnet_v2 import (
    ResNet18,
    ResNet34,
    ResNet50,
    ResNet101,
    ResNet152,
    ResNet200,
    ResNetV2,
    ResNetV2Block,
    load_pretrained_weights_from_keras,
)
from objax.zoo.rnn import RNN
from objax.zoo.vgg import VGG19
from objax.zoo.wide_resnet import WideResNet, WideResNetGeneral, WRNBlock

HIGH = jax.lax.Precision.HIGHEST


# ---------------------------------------------------------------------------------------------------------------
# Counting parameters. "Parameters" are all variables but random keys: trainable weights plus the BatchNorm
# running mean/variance, which is how Keras' model.summary() counts its "Total params" (BN moving statistics
# are its non-trainable params).

def _sizes(module, kind=objax.BaseVar):
    return sum(math.prod(v.value.shape) for v in module.vars().values()
               if isinstance(v, kind) and not isinstance(v, objax.RandomState))


def _abstract(build, *input_shapes, **call_kwargs):
    """Builds a model and runs it on inputs of the given shapes with jax.eval_shape, so no weight is allocated
    and nothing is computed: returns (total params, trainable params, output shape or None)."""
    generator_key = objax.random.DEFAULT_GENERATOR.key.value
    info = {}

    def run(*xs):
        model = build()
        info['total'], info['train'] = _sizes(model), _sizes(model, objax.TrainVar)
        info['model'] = model
        return model(*xs, **call_kwargs) if xs else jn.zeros(())

    try:
        out = jax.eval_shape(run, *[jax.ShapeDtypeStruct(s, jn.float32) for s in input_shapes])
    finally:
        objax.random.DEFAULT_GENERATOR.key.value = generator_key  # construction drew keys while tracing
    return info['total'], info['train'], (out.shape if input_shapes else None)


def _bn(c):
    return 4 * c  # gamma, beta (trainable) + running mean, running variance


def _conv(k, nin, nout, bias):
    return k * k * nin * nout + (nout if bias else 0)


def resnet_v2_params(nin, nclass, blocks, bottleneck, widths, projection, keras=False):
    """Closed-form count of the ResNetV2 layout (He et al. 2016, pre-activation): 7x7 stem conv; per block
    BN-ReLU-conv units (bottleneck 1x1 -> 3x3 -> 1x1 with width/4 inner channels, else 3x3 -> 3x3); a 1x1
    projection in the first block of projecting groups; final BN and a dense classifier. Objax 1.8's convolutions
    have no bias; Keras' (keras=True) stem, projection and last conv of each block have one."""
    total, c = _conv(7, nin, 64, keras), 64
    for n, w, p in zip(blocks, widths, projection):
        for i in range(n):
            cin = c if i == 0 else w
            total += _conv(1, cin, w, keras) if p and i == 0 else 0
            if bottleneck:
                m = w // 4
                total += _bn(cin) + _conv(1, cin, m, False) + _bn(m) + _conv(3, m, m, False)
                total += _bn(m) + _conv(1, m, w, keras)
            else:
                total += _bn(cin) + _conv(3, cin, w, False) + _bn(w) + _conv(3, w, w, keras)
        c = w
    return total + _bn(c) + c * nclass + nclass


def resnet_v2_bn_channels(blocks, bottleneck, widths):
    c, total = 64, 0
    for n, w in zip(blocks, widths):
        for i in range(n):
            cin = c if i == 0 else w
            total += cin + (2 * (w // 4) if bottleneck else w)
        c = w
    return total + c


def wrn_params(nin, nclass, depth, width):
    """WRN-depth-width (Zagoruyko & Komodakis 2016): 3x3 stem to 16 channels, three groups of (depth-4)/6
    pre-activation blocks (BN-ReLU-3x3 twice, no biases) of 16k, 32k, 64k channels, a 1x1 projection where the
    shape changes; final BN and dense classifier."""
    n, c = (depth - 4) // 6, 16
    total = _conv(3, nin, 16, False)
    for g, w in enumerate((16 * width, 32 * width, 64 * width)):
        for i in range(n):
            cin = c if i == 0 else w
            total += _bn(cin) + _conv(3, cin, w, False) + _bn(w) + _conv(3, w, w, False)
            total += _conv(1, cin, w, False) if cin != w or (g > 0 and i == 0) else 0
        c = w
    return total + _bn(c) + c * nclass + nclass


def vgg19_params():
    """VGG configuration E (Simonyan & Zisserman 2014): 16 3x3 convs with biases, fc 25088-4096-4096-1000."""
    widths = [64, 64, 128, 128, 256, 256, 256, 256] + [512] * 8
    convs = sum(_conv(3, cin, cout, True) for cin, cout in zip([3] + widths[:-1], widths))
    return convs + (25088 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)


NARROW, WIDE = (64, 128, 256, 512), (256, 512, 1024, 2048)
# (class, blocks, bottleneck, widths, projection, published total from Keras' model.summary() or None)
RESNETS = [(ResNet18, (2, 2, 2, 2), False, NARROW, (False, True, True, True), None),
           (ResNet34, (3, 4, 6, 3), False, NARROW, (False, True, True, True), None),
           (ResNet50, (3, 4, 6, 3), True, WIDE, (True,) * 4, 25_613_800),  # keras.applications.ResNet50V2
           (ResNet101, (3, 4, 23, 3), True, WIDE, (True,) * 4, 44_675_560),  # keras.applications.ResNet101V2
           (ResNet152, (3, 8, 36, 3), True, WIDE, (True,) * 4, 60_380_648),  # keras.applications.ResNet152V2
           (ResNet200, (3, 24, 36, 3), True, WIDE, (True,) * 4, None)]


@pytest.mark.parametrize('cls,blocks,bottleneck,widths,projection,published', RESNETS,
                         ids=[r[0].__name__ for r in RESNETS])
def test_resnet_v2_parameter_counts_and_imagenet_shapes(cls, blocks, bottleneck, widths, projection, published):
    total, train, out = _abstract(lambda: cls(3, 1000), (2, 3, 224, 224), training=False)
    assert out == (2, 1000)
    assert total == resnet_v2_params(3, 1000, blocks, bottleneck, widths, projection)
    assert total - train == 2 * resnet_v2_bn_channels(blocks, bottleneck, widths)  # running mean + variance
    if published is not None:  # Keras' count (the same network plus conv biases) checks the closed form
        assert resnet_v2_params(3, 1000, blocks, bottleneck, widths, projection, keras=True) == published
    # The 224x224 input reaches the classifier as a 7x7 map (strides 2 in the stem conv, the stem pooling and
    # three of the four groups), with 2048 (bottleneck) or 512 channels.
    _, _, features = _abstract(lambda: cls(3, 1000)[:-2], (2, 3, 224, 224), training=False)
    assert features == (2, widths[-1], 7, 7)


def test_resnet_v2_published_sizes():
    # ResNet-200 (He et al. 2016, "Identity Mappings in Deep Residual Networks"): 64.7M trainable parameters.
    # (Keras' ResNet50 v1 has 25,557,032: a different layout, not the v2 network built here.)
    _, train, _ = _abstract(lambda: ResNet200(3, 1000))
    assert round(train / 1e6, 1) == 64.7
    # Other inputs and class counts change only the stem and the classifier.
    total, _, out = _abstract(lambda: ResNet50(1, 10), (3, 1, 64, 64), training=True)
    assert out == (3, 10)
    keras_biases = 64 + 3 * 256 + 4 * 512 + 6 * 1024 + 3 * 2048 + (256 + 512 + 1024 + 2048)
    assert total == 25_613_800 - keras_biases - (7 * 7 * 2 * 64) - (2048 + 1) * 990


def test_wide_resnet_parameter_counts():
    total, train, out = _abstract(lambda: WideResNet(3, 10, 28, 2), (2, 3, 32, 32), training=False)
    assert out == (2, 10)
    assert total == wrn_params(3, 10, 28, 2)
    assert train == 1_467_610  # the "1.5M" WRN-28-2 of the MixMatch/FixMatch papers
    # Table 1 of Zagoruyko & Komodakis (2016): WRN-28-10 has 36.5M parameters, WRN-40-4 8.9M, WRN-16-8 11.0M.
    for depth, width, millions in ((28, 10, 36.5), (40, 4, 8.9), (16, 8, 11.0)):
        total, train, _ = _abstract(lambda depth=depth, width=width: WideResNet(3, 10, depth, width))
        assert total == wrn_params(3, 10, depth, width)
        assert round(train / 1e6, 1) == millions


def test_vgg19_parameter_count_and_structure():
    total, train, out = _abstract(VGG19, (2, 3, 224, 224))
    assert total == train == vgg19_params() == 143_667_240  # keras.applications.VGG19 total params
    assert out == (2, 1000)
    model = _abstract_model(VGG19)
    kinds = _kinds(model)
    assert kinds[0] == 'Conv2D' and kinds[-1] == 'Linear'  # no preprocessing, logits out (Objax 1.8)
    assert kinds.count('Conv2D') == 16 and kinds.count('Linear') == 3 and kinds.count('max_pool_2d') == 5
    convs = [layer for layer in model if isinstance(layer, objax.nn.Conv2D)]
    assert [c.w.value.shape[-1] for c in convs] == [64, 64, 128, 128] + [256] * 4 + [512] * 8

    def rebuilt():
        vgg = VGG19()
        first = [id(layer) for layer in vgg if isinstance(layer, objax.Module)]
        vgg.build()  # recreates the layers in place
        return vgg, first

    vgg, first = _abstract_model(rebuilt)
    assert _kinds(vgg) == kinds
    assert not {id(layer) for layer in vgg} & set(first)


def _kinds(model):
    return [type(layer).__name__ if isinstance(layer, objax.Module) else layer.__name__ for layer in model]


def _abstract_model(build):
    """A model built under jax.eval_shape (weights are abstract): for looking at its structure only."""
    box = {}

    def run():
        box['model'] = build()
        return jn.zeros(())

    key = objax.random.DEFAULT_GENERATOR.key.value
    try:
        jax.eval_shape(run)
    finally:
        objax.random.DEFAULT_GENERATOR.key.value = key
    return box['model']


def test_keras_pretrained_error_says_how_to_load_a_local_file():
    with pytest.raises(RuntimeError, match='load_var_collection'):
        load_pretrained_weights_from_keras('ResNet50')
    with pytest.raises(ValueError, match='arch'):
        load_pretrained_weights_from_keras('ResNet7')


# ---------------------------------------------------------------------------------------------------------------
# Forward passes against references written from the layer descriptions (lax convolutions, numpy elsewhere).

def _ref_conv(x, conv, stride=1, padding='SAME'):
    y = jax.lax.conv_general_dilated(x, conv.w.value, (stride, stride), padding, precision=HIGH,
                                     dimension_numbers=('NCHW', 'HWIO', 'NCHW'))
    return y + conv.b.value if conv.b is not None else y


def _ref_bn(x, bn):  # eval mode: running statistics
    return (x - bn.running_mean.value) / np.sqrt(bn.running_var.value + bn.eps) * bn.gamma.value + bn.beta.value


def _randomize_stats(module, seed):
    rng = np.random.default_rng(seed)
    for name, v in module.vars().items():
        if name.endswith(('running_mean', 'beta')):
            v.assign(jn.asarray(rng.normal(size=v.value.shape) * 0.3, jn.float32))
        elif name.endswith(('running_var', 'gamma')):
            v.assign(jn.asarray(rng.uniform(0.5, 1.5, size=v.value.shape), jn.float32))


def _ref_resnet_block(x, block, act, stride, bottleneck):
    pad1 = [(1, 1), (1, 1)]
    a = act(_ref_bn(x, block.norm_0))
    shortcut = _ref_conv(a, block.proj_conv, stride, 'VALID') if hasattr(block, 'proj_conv') else x[:, :, ::stride,
                                                                                                       ::stride]
    if bottleneck:  # the 3x3 convolution carries the stride
        h = _ref_conv(a, block.conv_0, 1, 'VALID')
        h = _ref_conv(act(_ref_bn(h, block.norm_1)), block.conv_1, stride, pad1)
        h = _ref_conv(act(_ref_bn(h, block.norm_2)), block.conv_2, 1, 'VALID')
    else:  # the second 3x3 convolution carries the stride
        h = _ref_conv(a, block.conv_0, 1, pad1)
        h = _ref_conv(act(_ref_bn(h, block.norm_1)), block.conv_1, stride, pad1)
    return h + shortcut


@pytest.mark.parametrize('bottleneck,projection,stride,act', [(True, True, 2, objax.functional.relu),
                                                              (False, False, 2, jn.tanh),
                                                              (False, True, 1, objax.functional.relu)])
def test_resnet_v2_block_matches_reference(bottleneck, projection, stride, act):
    nin = 8 if projection else 12
    block = ResNetV2Block(nin, 12, stride, projection, bottleneck, activation_fn=act)
    _randomize_stats(block, 1)
    x = jn.asarray(np.random.default_rng(2).normal(size=(2, nin, 7, 7)), jn.float32)
    got = block(x, training=False)
    assert got.shape == (2, 12, 4 if stride == 2 else 7, 4 if stride == 2 else 7)
    np.testing.assert_allclose(got, _ref_resnet_block(x, block, act, stride, bottleneck), rtol=1e-4, atol=1e-4)


def test_resnet_v2_model_matches_reference():
    model = ResNetV2(2, 5, blocks_per_group=(1, 2), channels_per_group=(8, 16), group_strides=(1, 2),
                     group_use_projection=(True, True))
    _randomize_stats(model, 3)
    x = jn.asarray(np.random.default_rng(4).normal(size=(2, 2, 19, 19)), jn.float32)
    h = _ref_conv(x, model[0], 2, [(3, 3), (3, 3)])
    assert h.shape == (2, 64, 10, 10)
    h = jax.lax.reduce_window(jn.pad(h, ((0, 0), (0, 0), (1, 1), (1, 1))), -jn.inf, jax.lax.max, (1, 1, 3, 3),
                              (1, 1, 2, 2), 'VALID')
    assert h.shape == (2, 64, 5, 5)
    for group, stride in zip(model[3:5], (1, 2)):
        for i, block in enumerate(group):
            h = _ref_resnet_block(h, block, objax.functional.relu, stride if i == len(group) - 1 else 1, True)
    h = objax.functional.relu(_ref_bn(h, model[5])).mean((2, 3))
    want = h @ model[-1].w.value + model[-1].b.value
    np.testing.assert_allclose(model(x, training=False), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(objax.Jit(functools.partial(model, training=False), model.vars())(x), want,
                               rtol=1e-4, atol=1e-4)


def test_resnet_v2_with_groupnorm():
    x = jn.asarray(np.random.default_rng(5).normal(size=(2, 3, 16, 16)), jn.float32)
    gn = ResNetV2(3, 4, (1, 1), False, (64, 128), (1, 2), (False, True),
                  normalization_fn=functools.partial(objax.nn.GroupNorm2D, groups=8))
    assert not gn.vars().subset(objax.StateVar)  # GroupNorm has no running statistics
    out = gn(x, training=True)
    np.testing.assert_allclose(out, gn(x, training=False), rtol=1e-5, atol=1e-5)
    assert out.shape == (2, 4)


def test_resnet_v2_bad_arguments():
    with pytest.raises(ValueError, match='channels_per_group'):
        ResNetV2(3, 10, (1, 1), channels_per_group=(8,), group_strides=(1, 1), group_use_projection=(True, True))
    with pytest.raises(ValueError, match='nin must equal nout'):
        ResNetV2Block(8, 16, 1, use_projection=False, bottleneck=False)


def _ref_wrn_block(x, block, stride):
    o1 = objax.functional.relu(_ref_bn(x, block.norm_1))
    y = _ref_conv(o1, block.conv_1, stride)
    y = _ref_conv(objax.functional.relu(_ref_bn(y, block.norm_2)), block.conv_2)
    return y + (_ref_conv(o1, block.proj_conv, stride) if block.proj_conv is not None else x)


@pytest.mark.parametrize('nin,nout,stride', [(8, 8, 1), (8, 16, 2), (8, 12, 1)])
def test_wrn_block_matches_reference(nin, nout, stride):
    block = WRNBlock(nin, nout, stride)
    assert (block.proj_conv is None) == (nin == nout and stride == 1)
    assert (block.norm_1.momentum, block.norm_1.eps) == (0.9, 1e-5)
    _randomize_stats(block, 6)
    x = jn.asarray(np.random.default_rng(7).normal(size=(3, nin, 8, 8)), jn.float32)
    got = block(x, training=False)
    assert got.shape == (3, nout, 8 // stride, 8 // stride)
    np.testing.assert_allclose(got, _ref_wrn_block(x, block, stride), rtol=1e-4, atol=1e-4)


def test_wide_resnet_structure_and_general():
    model = _abstract_model(lambda: WideResNet(3, 5, depth=16, width=1))  # two blocks per group
    assert _kinds(model) == ['Conv2D'] + ['WRNBlock'] * 6 + ['BatchNorm2D', 'relu', 'mean_reduce', 'Linear']
    assert [b.conv_1.w.value.shape[-1] for b in model[1:7]] == [16, 16, 32, 32, 64, 64]
    general = WideResNetGeneral(1, 3, [1, 2, 1, 1], width=0.5)
    assert [b.conv_1.w.value.shape[-1] for b in general[1:6]] == [8, 16, 16, 32, 64]
    x = jn.asarray(np.random.default_rng(8).normal(size=(2, 1, 16, 16)), jn.float32)
    assert general(x, training=False).shape == (2, 3)
    np.testing.assert_allclose(WideResNetGeneral.mean_reduce(x), np.asarray(x).mean((2, 3)), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match='depth'):
        WideResNet(3, 10, depth=27)


def test_train_and_eval_modes():
    model = WideResNet(3, 5, depth=10, width=1)
    x = jn.asarray(np.random.default_rng(9).normal(size=(4, 3, 8, 8)) + 1, jn.float32)
    states = model.vars().subset(objax.StateVar)
    before = [np.asarray(v.value) for v in states]
    eval_out = model(x, training=False)
    np.testing.assert_array_equal(eval_out, model(x, training=False))
    for b, v in zip(before, states):  # evaluation leaves the running statistics alone
        np.testing.assert_array_equal(b, v.value)
    train_out = model(x, training=True)
    stem = np.asarray(model[0](x))
    # First BatchNorm (momentum 0.9): running_mean = 0.9 * 0 + 0.1 * batch mean of its input.
    np.testing.assert_allclose(model[1].norm_1.running_mean.value.ravel(), 0.1 * stem.mean((0, 2, 3)),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model[1].norm_1.running_var.value.ravel(), 0.9 + 0.1 * stem.var((0, 2, 3)),
                               rtol=1e-4)
    assert all(not np.array_equal(b, v.value) for b, v in zip(before, states))
    assert not np.allclose(train_out, eval_out)
    # Training mode normalizes with batch statistics only: other running statistics leave its output as it was.
    rng = np.random.default_rng(10)
    for v in states:
        v.assign(jn.asarray(rng.uniform(0.5, 2, size=v.value.shape), jn.float32))
    np.testing.assert_allclose(objax.Jit(lambda v: model(v, training=True), model.vars())(x), train_out,
                               rtol=1e-5, atol=1e-5)
    assert not np.allclose(model(x, training=False), eval_out)


def test_convnet_matches_reference():
    model = ConvNet(3, 10, scales=2, filters=4, filters_max=6, unused_option=1)  # extra kwargs are ignored
    convs = [m for m in model if isinstance(m, objax.nn.Conv2D)]
    # Widths min(filters_max, filters * 2**scale): 4, then 6 (capped) for both scales.
    assert [c.w.value.shape for c in convs] == [(3, 3, 3, 4), (3, 3, 4, 4), (3, 3, 4, 6), (3, 3, 6, 6),
                                                (3, 3, 6, 6), (3, 3, 6, 10)]
    x = jn.asarray(np.random.default_rng(11).normal(size=(2, 3, 8, 8)), jn.float32)

    def reference(pool):
        h = np.asarray(x)
        for i, conv in enumerate(convs):
            h = np.asarray(_ref_conv(h, conv))
            if i < len(convs) - 1:
                h = np.where(h > 0, h, 0.01 * h)
            if i in (2, 4):
                n, c, hh, ww = h.shape
                h = pool(h.reshape(n, c, hh // 2, 2, ww // 2, 2), axis=(3, 5))
        return h.mean((2, 3))

    np.testing.assert_allclose(model(x), reference(np.max), rtol=1e-4, atol=1e-5)
    assert isinstance(model, objax.nn.Sequential)
    avg = ConvNet(3, 10, 2, 4, 6, pooling=objax.functional.average_pool_2d)
    for a, b in zip(avg.vars().values(), model.vars().values()):
        a.assign(b.value)
    np.testing.assert_allclose(avg(x), reference(np.mean), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match='filters'):
        ConvNet(3, 10, 2, 0, 6)


def test_dnnet_matches_reference():
    model = DNNet((5, 7, 3, 2), objax.functional.tanh)
    assert _kinds(model) == ['Linear', 'tanh', 'Linear', 'tanh', 'Linear', 'tanh']  # ends with the activation
    x = np.random.default_rng(12).normal(size=(4, 5)).astype(np.float32)
    h = x
    for layer in model[::2]:
        h = np.tanh(h @ np.asarray(layer.w.value) + np.asarray(layer.b.value))
    np.testing.assert_allclose(model(jn.asarray(x)), h, rtol=1e-5, atol=1e-6)
    # DNNet applies the activation after the last Linear too: DNNet([5, 5], softmax)(x) has rows that sum to 1.
    probs = DNNet([5, 5], objax.functional.softmax)(jn.asarray(x))
    np.testing.assert_allclose(np.asarray(probs).sum(1), np.ones(4), rtol=1e-6)
    assert len(DNNet([5], objax.functional.relu)) == 0  # accepted as in Objax 1.8: an empty Sequential


# ---------------------------------------------------------------------------------------------------------------
# RNN

def _ref_rnn(model, xs, h, act=np.tanh):
    w_xh, w_hh, b_h = (np.asarray(v.value, np.float64) for v in (model.w_xh, model.w_hh, model.b_h))
    w_o, b_o = np.asarray(model.output_layer.w.value, np.float64), np.asarray(model.output_layer.b.value, np.float64)
    outs = []
    for x in xs:
        h = act(x @ w_xh + h @ w_hh + b_h)
        outs.append(h @ w_o + b_o)
    return np.concatenate(outs), outs[-1], h


def test_rnn_matches_numpy_loop():
    model = RNN(nstate=6, nin=3, nout=4)
    model.init_state(2)
    xs = np.random.default_rng(13).normal(size=(5, 2, 3))
    want_all, want_last, h = _ref_rnn(model, xs, np.zeros((2, 6)))
    got = model(jn.asarray(xs, jn.float32))
    assert got.shape == (5 * 2, 4)
    np.testing.assert_allclose(got, want_all, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.state.value, h, rtol=1e-5, atol=1e-5)
    # The state carries over to the next call; only_return_final gives the last step's output.
    xs2 = np.random.default_rng(14).normal(size=(3, 2, 3))
    _, want_last, h2 = _ref_rnn(model, xs2, h)
    jitted = objax.Jit(functools.partial(model, only_return_final=True), model.vars())
    np.testing.assert_allclose(jitted(jn.asarray(xs2, jn.float32)), want_last, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.state.value, h2, rtol=1e-5, atol=1e-5)
    old_state = model.state
    model.init_state(3)
    assert model.state is not old_state  # a new StateVar each time (Objax 1.8)
    np.testing.assert_array_equal(model.state.value, np.zeros((3, 6)))
    jitted = objax.Jit(functools.partial(model, only_return_final=True), model.vars())
    assert jitted(jn.ones((2, 3, 3))).shape == (3, 4)


def test_rnn_activation_gradients_and_errors():
    model = RNN(4, 2, 3, activation=objax.functional.relu, w_init=objax.nn.init.xavier_normal)
    xs = np.random.default_rng(15).normal(size=(4, 1, 2))
    with pytest.raises(ValueError, match=r'no state yet: call init_state\(1\)'):
        model(jn.asarray(xs, jn.float32))
    model.init_state(1)
    np.testing.assert_allclose(model(jn.asarray(xs, jn.float32)), _ref_rnn(model, xs, np.zeros((1, 4)),
                                                                           lambda v: np.maximum(v, 0))[0],
                               rtol=1e-5, atol=1e-5)
    model.init_state(1)
    grads, _ = objax.GradValues(lambda v: model(v).sum(), model.vars())(jn.asarray(xs, jn.float32))
    assert len(grads) == 5 and all(np.all(np.isfinite(g)) for g in grads)
    assert np.any(np.asarray(grads[1]) != 0)  # w_hh gets a gradient through time
    with pytest.raises(ValueError, match='init_state'):
        model.init_state(2)
        model(jn.ones((3, 3, 2)))
    with pytest.raises(ValueError, match='steps, batch, 2'):
        model(jn.ones((3, 1, 5)))
    with pytest.raises(ValueError, match='batch_size'):
        model.init_state(0)


def test_rnn_state_only_from_init_state():
    """As in Objax 1.8, no `state` variable until init_state; a batch-1 state broadcasts over the inputs' batch."""
    model = RNN(3, 2, 2)
    assert set(model.vars().keys()) == {'(RNN).w_xh', '(RNN).w_hh', '(RNN).b_h', '(RNN).output_layer(Linear).b',
                                        '(RNN).output_layer(Linear).w'}
    assert not hasattr(model, 'state')
    model.init_state(1)
    assert list(model.vars().keys())[-1] == '(RNN).state'
    xs = np.random.default_rng(16).normal(size=(3, 4, 2))
    want, _, h = _ref_rnn(model, xs, np.zeros((1, 3)))
    np.testing.assert_allclose(model(jn.asarray(xs, jn.float32)), want, rtol=1e-5, atol=1e-5)
    assert model.state.value.shape == (4, 3)
    np.testing.assert_allclose(model.state.value, h, rtol=1e-5, atol=1e-5)
