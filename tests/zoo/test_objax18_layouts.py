"""The zoo's layouts as in Objax 1.8 (DNNet ending with its activation, the ResNetV2 family, every WideResNet
depth 1.8 accepts): names, indices, variable counts, where the strides sit, and the order of variables (`.b`
before `.w` in Linear and Conv2D)."""

import jax
import jax.numpy as jn
import numpy as np

import objax
from objax.zoo.dnnet import DNNet
from objax.zoo.resnet_v2 import ResNet18, ResNet50, ResNetV2Block
from objax.zoo.wide_resnet import WideResNet, WRNBlock


def test_resnet50_has_objax18s_251_variables_and_no_conv_bias():
    names = list(ResNet50(3, 1000).vars().keys())
    assert len(names) == 251
    assert not [n for n in names if '(Conv2D).b' in n]
    assert names[0] == '(ResNet50)[0](Conv2D).w'
    assert names[1] == '(ResNet50)[3](ResNetV2BlockGroup)[0](ResNetV2Block).proj_conv(Conv2D).w'
    groups = sorted({int(n.split('[')[1].split(']')[0]) for n in names if 'ResNetV2BlockGroup' in n})
    assert groups == [3, 4, 5, 6]
    assert '(ResNet50)[7](BatchNorm2D).gamma' in names
    assert {n for n in names if n.startswith('(ResNet50)[10]')} == {'(ResNet50)[10](Linear).b',
                                                                   '(ResNet50)[10](Linear).w'}
    # Bottleneck block: proj_conv first, then norm_i/conv_i pairs.
    block = [n.split('(ResNetV2Block).')[1] for n in names if '[4](ResNetV2BlockGroup)[0](ResNetV2Block)' in n]
    assert block == ['proj_conv(Conv2D).w'] + [f'{part}' for i in range(3) for part in (
        f'norm_{i}(BatchNorm2D).running_mean', f'norm_{i}(BatchNorm2D).running_var', f'norm_{i}(BatchNorm2D).beta',
        f'norm_{i}(BatchNorm2D).gamma', f'conv_{i}(Conv2D).w')]


def test_resnet18_names_and_count():
    names = list(ResNet18(3, 10).vars().keys())
    # stem 1 + 8 basic blocks x (2 BN x 4 + 2 convs) + 3 projections + final BN 4 + Linear 2
    assert len(names) == 1 + 8 * 10 + 3 + 4 + 2
    assert names[1].startswith('(ResNet18)[3](ResNetV2BlockGroup)[0](ResNetV2Block).norm_0')


def test_resnet_stem():
    model = ResNet50(3, 10)
    stem = model[0]
    assert isinstance(stem, objax.nn.Conv2D) and stem.b is None
    assert stem.w.value.shape == (7, 7, 3, 64) and stem.strides == (2, 2)
    x = jn.asarray(np.random.default_rng(0).normal(size=(1, 3, 17, 17)), jn.float32)
    want = jax.lax.conv_general_dilated(x, stem.w.value, (2, 2), [(3, 3), (3, 3)],
                                        dimension_numbers=('NCHW', 'HWIO', 'NCHW'),
                                        precision=jax.lax.Precision.HIGHEST)
    np.testing.assert_allclose(stem(x), want, rtol=1e-5, atol=1e-5)
    assert stem(x).shape == (1, 64, 9, 9)
    h = np.random.default_rng(1).normal(size=(1, 2, 6, 6)).astype(np.float32)
    padded = np.asarray(model[1](jn.asarray(h)))
    np.testing.assert_array_equal(padded, np.pad(h, ((0, 0), (0, 0), (1, 1), (1, 1))))
    pooled = np.asarray(model[2](jn.asarray(padded)))  # 3x3 windows, stride 2, VALID: 8 -> 3
    want = np.array([[[padded[0, c, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max() for j in range(3)] for i in range(3)]
                     for c in range(2)])
    np.testing.assert_array_equal(pooled, want[None])


def test_stride_on_second_conv_of_basic_blocks_and_3x3_of_bottlenecks():
    basic = ResNetV2Block(8, 16, 2, use_projection=True, bottleneck=False)
    assert (basic.conv_0.strides, basic.conv_1.strides, basic.proj_conv.strides) == ((1, 1), (2, 2), (2, 2))
    bottleneck = ResNetV2Block(8, 16, 2, use_projection=True, bottleneck=True)
    assert [c.strides for c in (bottleneck.conv_0, bottleneck.conv_1, bottleneck.conv_2)] == [(1, 1), (2, 2),
                                                                                            (1, 1)]
    assert all(c.b is None for c in (basic.conv_0, basic.conv_1, basic.proj_conv, bottleneck.conv_2))
    group = ResNet18(3, 10)[4]  # second group: stride 2 on its last block
    assert [b.conv_1.strides for b in group] == [(1, 1), (2, 2)]


def test_wide_resnet_depth_4_has_one_block_per_group():
    model = WideResNet(3, 10, depth=4, width=1)
    assert [type(m).__name__ for m in model[:4]] == ['Conv2D', 'WRNBlock', 'WRNBlock', 'WRNBlock']
    assert [b.conv_1.w.value.shape[-1] for b in model[1:4]] == [16, 32, 64]
    x = jn.asarray(np.random.default_rng(2).normal(size=(2, 3, 8, 8)), jn.float32)
    assert model(x, training=False).shape == (2, 10)
    assert isinstance(model[1], WRNBlock) and model[1].proj_conv is None  # 16 -> 16, stride 1


def test_dnnet_ends_with_activation():
    model = DNNet([5, 5], objax.functional.softmax)
    x = jn.asarray(np.random.default_rng(3).normal(size=(4, 5)), jn.float32)
    np.testing.assert_allclose(np.asarray(model(x)).sum(1), np.ones(4), rtol=1e-6)
    assert model[-1] is objax.functional.softmax


def test_variable_order_b_before_w():
    """Objax 1.8 creates the bias before the weight (needs the nn layers' b-before-w order)."""
    assert list(DNNet([3, 4, 2], objax.functional.relu).vars().keys()) == [
        '(DNNet)[0](Linear).b', '(DNNet)[0](Linear).w', '(DNNet)[2](Linear).b', '(DNNet)[2](Linear).w']
    assert list(ResNet50(3, 10).vars().keys())[-2:] == ['(ResNet50)[10](Linear).b', '(ResNet50)[10](Linear).w']
    assert list(WideResNet(3, 10, depth=4).vars().keys())[-2:] == ['(WideResNet)[7](Linear).b',
                                                                   '(WideResNet)[7](Linear).w']


def _objax18_resnet18_entries(nin, nclass):
    """(name, shape) of every variable of Objax 1.8's ResNet18, in its creation order, from the layout the spec
    describes: stem conv [0], groups [3]..[6] of two basic blocks (proj_conv first where the group projects),
    BatchNorm2D running_mean/var, beta, gamma of shape (1, C, 1, 1), final BatchNorm [7], Linear [10] (b, w)."""
    bn = lambda prefix, c: [(f'{prefix}(BatchNorm2D).{v}', (1, c, 1, 1))  # noqa: E731
                            for v in ('running_mean', 'running_var', 'beta', 'gamma')]
    entries, c = [('(ResNet18)[0](Conv2D).w', (7, 7, nin, 64))], 64
    for g, (width, projection) in enumerate(zip((64, 128, 256, 512), (False, True, True, True))):
        for b in range(2):
            prefix = f'(ResNet18)[{3 + g}](ResNetV2BlockGroup)[{b}](ResNetV2Block).'
            cin = c if b == 0 else width
            if projection and b == 0:
                entries.append((prefix + 'proj_conv(Conv2D).w', (1, 1, cin, width)))
            entries += bn(prefix + 'norm_0', cin) + [(prefix + 'conv_0(Conv2D).w', (3, 3, cin, width))]
            entries += bn(prefix + 'norm_1', width) + [(prefix + 'conv_1(Conv2D).w', (3, 3, width, width))]
        c = width
    return entries + bn('(ResNet18)[7]', 512) + [('(ResNet18)[10](Linear).b', (nclass,)),
                                                ('(ResNet18)[10](Linear).w', (512, nclass))]


def test_objax18_resnet18_checkpoint_loads(tmp_path):
    entries = _objax18_resnet18_entries(3, 10)
    rng = np.random.default_rng(4)
    arrays = {name: rng.normal(size=shape).astype(np.float32) for name, shape in entries}
    # Objax 1.8's layout: `names`, then the values under '0', '1', ... in that order.
    np.savez(tmp_path / 'ckpt.npz', names=np.array([name for name, _ in entries]),
             **{str(i): arrays[name] for i, (name, _) in enumerate(entries)})
    model = ResNet18(3, 10)
    assert sorted(model.vars().keys()) == sorted(arrays)  # nothing missing, nothing left over
    objax.io.load_var_collection(str(tmp_path / 'ckpt.npz'), model.vars())
    for name, v in model.vars().items():
        np.testing.assert_array_equal(v.value, arrays[name])


def test_objax18_resnet18_variable_order():
    """The creation order too (needs the nn layers' b-before-w order for the final Linear)."""
    assert list(ResNet18(3, 10).vars().keys()) == [name for name, _ in _objax18_resnet18_entries(3, 10)]
