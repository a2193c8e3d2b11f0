"""Checkpoints in Objax 1.8's layout load into model + optimizer + EMA, so an Objax 1.8 training run resumes here.

Each file is written here with numpy alone, the way Objax 1.8's `save_var_collection` writes it: an array
`names` and the values under '0', '1', ..., one entry per distinct variable under its first name in
`model.vars() + opt.vars() + ema.vars()` (TrainRefs are the TrainVar they point to, so optimizer and EMA
`train_vars`/`refs` are never stored). The names, their order and the shapes are written out by hand from Objax
1.8's behaviour (creation order: `b` before `w`, `gamma` before `beta`; the EMA's `step`, `refs` and zero-initialised
`m`; DNNet's final activation and the ResNetV2 stem; Dropout's generator key named `._key`) and from Objax 1.8's
layouts, never generated from our own `vars()`.
"""

import io

import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.zoo.dnnet import DNNet
from objax.zoo.resnet_v2 import ResNet18
from objax.zoo.wide_resnet import WideResNet

F32, U32 = np.float32, np.uint32


def _bn(prefix, c):
    """BatchNorm2D entries, in Objax 1.8's order, each of shape (1, c, 1, 1)."""
    return [(f'{prefix}(BatchNorm2D).{n}', (1, c, 1, 1), F32) for n in ('running_mean', 'running_var', 'beta',
                                                                         'gamma')]


def _conv(prefix, k, nin, nout, bias=True):
    """Conv2D entries: b (nout, 1, 1) first, then w (k, k, nin, nout)."""
    b = [(f'{prefix}(Conv2D).b', (nout, 1, 1), F32)] if bias else []
    return b + [(f'{prefix}(Conv2D).w', (k, k, nin, nout), F32)]


def _linear(prefix, nin, nout):
    return [(f'{prefix}(Linear).b', (nout,), F32), (f'{prefix}(Linear).w', (nin, nout), F32)]


def _is_state(name):
    return name.endswith('.running_mean') or name.endswith('.running_var')


def _train(model_entries):
    return [e for e in model_entries if e[2] == F32 and not _is_state(e[0])]


def _slots(owner, slot, entries):
    """`(owner).slot(ModuleList)[i]`, one zero-able float slot per entry."""
    return [(f'({owner}).{slot}(ModuleList)[{i}]', shape, F32) for i, (_, shape, _) in enumerate(entries)]


def _ema(model_entries):
    """Objax 1.8's EMA: step first; m holds the non-trainable, non-random variables first, then the TrainVars, in
    order."""
    states = [e for e in model_entries if _is_state(e[0])]
    return ([('(ExponentialMovingAverage).step', (), U32)] +
            _slots('ExponentialMovingAverage', 'm', states + _train(model_entries)))


def _write(entries, seed):
    """Writes an Objax 1.8 .npz with numpy alone; returns (file, {name: value})."""
    rng = np.random.default_rng(seed)
    names = [n for n, _, _ in entries]
    assert len(set(names)) == len(names)
    values = {}
    for name, shape, dtype in entries:
        if dtype == U32:
            values[name] = rng.integers(1, 2 ** 31, size=shape).astype(U32)
        else:
            values[name] = rng.normal(size=shape).astype(F32)
    f = io.BytesIO()
    np.savez(f, names=np.array(names), **{str(i): values[n] for i, n in enumerate(names)})
    f.seek(0)
    return f, values


def _load_and_check(entries, vc, seed=0):
    """Loads the file into `vc` (strict: nothing left over) and checks each stored value sits in its variable."""
    f, values = _write(entries, seed)
    objax.io.load_var_collection(f, vc, strict=True)
    for name, want in values.items():
        got = vc[name].value
        assert got.shape == want.shape and got.dtype == want.dtype, name
        np.testing.assert_array_equal(np.asarray(got), want, err_msg=name)
    # Every variable of vc was written: the file covers it under one of its names.
    stored = {id(vc[n].ref if isinstance(vc[n], objax.TrainRef) else vc[n]) for n in values}
    for name, v in vc.items():
        assert id(v.ref if isinstance(v, objax.TrainRef) else v) in stored, f'{name} not loaded'
    f.seek(0)
    objax.io.load_var_collection(f, vc)  # the default (non-strict) load reads it too
    return values


def test_sequential_momentum_ema():
    model = objax.nn.Sequential([objax.nn.Conv2D(3, 4, 3), objax.nn.BatchNorm2D(4), objax.functional.relu,
                                 objax.nn.Dropout(0.5), objax.functional.flatten, objax.nn.Linear(4 * 5 * 5, 10)])
    opt = objax.optimizer.Momentum(model.vars(), momentum=0.9)
    ema = objax.optimizer.ExponentialMovingAverage(model.vars(), momentum=0.999)
    model_entries = (_conv('(Sequential)[0]', 3, 3, 4) + _bn('(Sequential)[1]', 4) +
                     [('(Sequential)[3](Dropout).keygen(Generator)._key', (2,), U32)] +
                     _linear('(Sequential)[5]', 100, 10))
    entries = model_entries + _slots('Momentum', 'm', _train(model_entries)) + _ema(model_entries)
    assert len(entries) == 9 + 6 + 1 + 8
    vc = model.vars() + opt.vars() + ema.vars()
    values = _load_and_check(entries, vc)

    np.testing.assert_array_equal(model[0].b.value, values['(Sequential)[0](Conv2D).b'])
    np.testing.assert_array_equal(model[1].gamma.value, values['(Sequential)[1](BatchNorm2D).gamma'])
    np.testing.assert_array_equal(model[3].keygen.key.value, values['(Sequential)[3](Dropout).keygen(Generator)._key'])
    # Momentum slot i belongs to the i-th TrainVar: [0] conv b, [1] conv w, [4] linear b, [5] linear w.
    assert [m.value.shape for m in opt.m] == [(4, 1, 1), (3, 3, 3, 4), (1, 4, 1, 1), (1, 4, 1, 1), (10,), (100, 10)]
    np.testing.assert_array_equal(opt.m[5].value, values['(Momentum).m(ModuleList)[5]'])
    # EMA: [0], [1] the BatchNorm statistics, then the TrainVars; refs are the model's own variables.
    assert int(ema.step.value) == values['(ExponentialMovingAverage).step']
    assert ema.refs[0] is model[1].running_mean and ema.refs[2].ref is model[0].b
    np.testing.assert_array_equal(ema.m[1].value, values['(ExponentialMovingAverage).m(ModuleList)[1]'])
    refs, averages = ema.refs_and_values()  # no debias: the averages are m
    for got, m in zip(averages, ema.m):
        np.testing.assert_array_equal(got, m.value)

    # A file lacking an entry is refused, naming it, and changes nothing.
    before = np.asarray(model[5].w.value)
    f, _ = _write([e for e in entries if e[0] != '(Momentum).m(ModuleList)[3]'], seed=1)
    with pytest.raises(ValueError, match=r'\(Momentum\)\.m\(ModuleList\)\[3\]'):
        objax.io.load_var_collection(f, vc)
    np.testing.assert_array_equal(model[5].w.value, before)


def _wrn_entries(nin, nclass, depth, width):
    """WideResNet as Objax 1.8 builds it: unbiased convs, WRNBlock = proj_conv?, norm_1, conv_1, norm_2, conv_2."""
    n = (depth - 4) // 6
    entries = _conv('(WideResNet)[0]', 3, nin, 16, bias=False)
    index, c = 1, 16
    for group, w in enumerate([16 * width, 32 * width, 64 * width]):
        for block in range(max(n, 1)):
            cin, stride = (c, 2 if group else 1) if block == 0 else (w, 1)
            p = f'(WideResNet)[{index}](WRNBlock).'
            if cin != w or stride > 1:
                entries += _conv(p + 'proj_conv', 1, cin, w, bias=False)
            entries += (_bn(p + 'norm_1', cin) + _conv(p + 'conv_1', 3, cin, w, bias=False) + _bn(p + 'norm_2', w) +
                        _conv(p + 'conv_2', 3, w, w, bias=False))
            index += 1
        c = w
    # then BatchNorm2D, relu, mean over space, Linear
    return entries + _bn(f'(WideResNet)[{index}]', c) + _linear(f'(WideResNet)[{index + 3}]', c, nclass)


def test_wide_resnet_adam_debiased_ema():
    model = WideResNet(3, 10, depth=16, width=1)
    opt = objax.optimizer.Adam(model.vars())
    ema = objax.optimizer.ExponentialMovingAverage(model.vars(), momentum=0.9, debias=True)
    model_entries = _wrn_entries(3, 10, depth=16, width=1)
    train = _train(model_entries)
    entries = (model_entries + [('(Adam).step', (), U32)] + _slots('Adam', 'm', train) + _slots('Adam', 'v', train) +
               _ema(model_entries))
    assert model_entries[-2][0] == '(WideResNet)[10](Linear).b'
    values = _load_and_check(entries, model.vars() + opt.vars() + ema.vars(), seed=2)

    np.testing.assert_array_equal(model[3].proj_conv.w.value, values['(WideResNet)[3](WRNBlock).proj_conv(Conv2D).w'])
    assert int(opt.step.value) == values['(Adam).step']
    np.testing.assert_array_equal(opt.v[0].value, values['(Adam).v(ModuleList)[0]'])
    assert opt.v[0].value.shape == (3, 3, 3, 16)  # slot 0: the stem conv's w (no bias)
    # Debiased reading uses the loaded step: m / (1 - (1 - eps) momentum^step).
    ema.step.value = jn.array(3, jn.uint32)
    _, averages = ema.refs_and_values()
    scale = 1 - (1 - 1e-6) * 0.9 ** 3
    last = len(averages) - 1
    np.testing.assert_allclose(averages[last], values[f'(ExponentialMovingAverage).m(ModuleList)[{last}]'] / scale,
                               rtol=1e-6)
    assert averages[last].shape == (64, 10)  # the last slot is the Linear's w


def _resnet18_entries(nin, nclass):
    """ResNet18 as Objax 1.8 lays it out: stem conv [0], pad [1], pool [2], groups [3]-[6] of two basic blocks
    (proj_conv on the first block of groups 2-4, then norm_0, conv_0, norm_1, conv_1), no conv bias."""
    entries = _conv('(ResNet18)[0]', 7, nin, 64, bias=False)
    c = 64
    for g, (w, proj) in enumerate(zip((64, 128, 256, 512), (False, True, True, True))):
        for b in range(2):
            cin = c if b == 0 else w
            p = f'(ResNet18)[{3 + g}](ResNetV2BlockGroup)[{b}](ResNetV2Block).'
            if proj and b == 0:
                entries += _conv(p + 'proj_conv', 1, cin, w, bias=False)
            entries += (_bn(p + 'norm_0', cin) + _conv(p + 'conv_0', 3, cin, w, bias=False) + _bn(p + 'norm_1', w) +
                        _conv(p + 'conv_1', 3, w, w, bias=False))
        c = w
    return entries + _bn('(ResNet18)[7]', 512) + _linear('(ResNet18)[10]', 512, nclass)


def test_resnet18_sgd_ema():
    model = ResNet18(3, 10)
    opt = objax.optimizer.SGD(model.vars())  # only TrainRefs: SGD stores nothing
    ema = objax.optimizer.ExponentialMovingAverage(model.vars())
    model_entries = _resnet18_entries(3, 10)
    assert len(model_entries) == 90
    values = _load_and_check(model_entries + _ema(model_entries), model.vars() + opt.vars() + ema.vars(), seed=3)
    np.testing.assert_array_equal(model[6][1].conv_1.w.value,
                                  values['(ResNet18)[6](ResNetV2BlockGroup)[1](ResNetV2Block).conv_1(Conv2D).w'])
    np.testing.assert_array_equal(model[10].w.value, values['(ResNet18)[10](Linear).w'])


def test_groupnorm_conv_transpose_lars_ema():
    model = objax.nn.Sequential([objax.nn.ConvTranspose2D(3, 4, 3, strides=2), objax.nn.GroupNorm2D(4, groups=2),
                                 objax.functional.relu, objax.nn.Conv2D(4, 2, 1, use_bias=False)])
    opt = objax.optimizer.LARS(model.vars())
    ema = objax.optimizer.ExponentialMovingAverage(model.vars(), debias=True)
    model_entries = [('(Sequential)[0](ConvTranspose2D).b', (4, 1, 1), F32),
                     ('(Sequential)[0](ConvTranspose2D).w', (3, 3, 4, 3), F32),  # (k, k, nout, nin)
                     ('(Sequential)[1](GroupNorm2D).gamma', (1, 4, 1, 1), F32),
                     ('(Sequential)[1](GroupNorm2D).beta', (1, 4, 1, 1), F32),
                     ('(Sequential)[3](Conv2D).w', (1, 1, 4, 2), F32)]
    entries = model_entries + _slots('LARS', 'm', model_entries) + _ema(model_entries)
    values = _load_and_check(entries, model.vars() + opt.vars() + ema.vars(), seed=4)
    np.testing.assert_array_equal(model[1].gamma.value, values['(Sequential)[1](GroupNorm2D).gamma'])
    np.testing.assert_array_equal(model[1].beta.value, values['(Sequential)[1](GroupNorm2D).beta'])
    np.testing.assert_array_equal(model[0].b.value, values['(Sequential)[0](ConvTranspose2D).b'])
    assert opt.m[1].value.shape == (3, 3, 4, 3) and ema.m[2].value.shape == (1, 4, 1, 1)
    np.testing.assert_array_equal(ema.m[2].value, values['(ExponentialMovingAverage).m(ModuleList)[2]'])


def test_dnnet_momentum_ema():
    model = DNNet((6, 8, 3), objax.functional.relu)
    opt = objax.optimizer.Momentum(model.vars(), nesterov=True)
    ema = objax.optimizer.ExponentialMovingAverage(model.vars(), momentum=0.99)
    model_entries = _linear('(DNNet)[0]', 6, 8) + _linear('(DNNet)[2]', 8, 3)
    entries = model_entries + _slots('Momentum', 'm', model_entries) + _ema(model_entries)
    values = _load_and_check(entries, model.vars() + opt.vars() + ema.vars(), seed=5)
    np.testing.assert_array_equal(model[2].b.value, values['(DNNet)[2](Linear).b'])
    np.testing.assert_array_equal(opt.m[0].value, values['(Momentum).m(ModuleList)[0]'])
    assert opt.m[0].value.shape == (8,) and ema.m[3].value.shape == (8, 3)
    # the loaded model computes relu(relu(x W0 + b0) W2 + b2)
    x = np.random.default_rng(6).normal(size=(5, 6)).astype(F32)
    h = np.maximum(x @ values['(DNNet)[0](Linear).w'] + values['(DNNet)[0](Linear).b'], 0)
    want = np.maximum(h @ values['(DNNet)[2](Linear).w'] + values['(DNNet)[2](Linear).b'], 0)
    np.testing.assert_allclose(model(x), want, rtol=1e-5, atol=1e-6)


def test_model_alone_loads_from_a_training_checkpoint():
    """As in Objax 1.8, entries of the optimizer and EMA are ignored when loading the model alone (strict refuses
    them)."""
    model = DNNet((6, 8, 3), objax.functional.relu)
    model_entries = _linear('(DNNet)[0]', 6, 8) + _linear('(DNNet)[2]', 8, 3)
    f, values = _write(model_entries + _slots('Momentum', 'm', model_entries) + _ema(model_entries), seed=7)
    objax.io.load_var_collection(f, model.vars())
    np.testing.assert_array_equal(model[0].w.value, values['(DNNet)[0](Linear).w'])
    f.seek(0)
    with pytest.raises(ValueError, match=r'\(Momentum\)\.m\(ModuleList\)\[0\]'):
        objax.io.load_var_collection(f, model.vars(), strict=True)
