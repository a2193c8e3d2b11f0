"""objax.zoo.vgg.VGG19 as in Objax 1.8 : layer names and indices, no preprocessing or softmax in the
model, tensorflow-vgg's vgg19.npy loaded through an unpickler that admits only arrays and containers.

The pretrained file of the real network holds 548 MB; here the same file layout is fabricated with numpy for a
VGG19 whose widths are shrunk (the module's width constants are patched), and the loaded model is checked
against a forward pass written in TensorFlow's layout (NHWC, flattening h, w, c before fc6)."""

import os
import pickle

import jax
import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.zoo import vgg
from objax.zoo._npy_pickle import load_pickled_npy
from objax.zoo.vgg import VGG19

HIGH = jax.lax.Precision.HIGHEST

def _names():
    """Objax 1.8's layer names in order (written out from the architecture, 43 layers)."""
    names = []
    for stage, convs in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4)):
        for i in range(1, convs + 1):
            names += [f'conv{stage}_{i}', f'relu{stage}_{i}']
        names.append(f'pool{stage}')
    return names + ['flatten', 'fc6', 'relu6', 'fc7', 'relu7', 'fc8']


@pytest.fixture
def small(monkeypatch):
    """A VGG19 with the real layout but few channels and a 2x2 last feature map (inputs 64x64)."""
    monkeypatch.setattr(vgg, '_STAGES', ((4, 4), (6, 6), (8, 8, 8, 8), (8, 8, 8, 8), (5, 5, 5, 5)))
    monkeypatch.setattr(vgg, '_FC', (7, 6, 3))
    monkeypatch.setattr(vgg, '_FEATURE_SIDE', 2)


def _fabricate(path, seed=0, protocol=None):
    """A vgg19.npy in tensorflow-vgg's layout for the small network: {layer: [HWIO kernel or (in, out), bias]}."""
    rng = np.random.default_rng(seed)
    data, nin = {}, 3
    for stage, widths in enumerate(vgg._STAGES, 1):
        for i, nout in enumerate(widths, 1):
            data[f'conv{stage}_{i}'] = [(rng.normal(size=(3, 3, nin, nout)) * 0.3).astype(np.float32),
                                        rng.normal(size=nout).astype(np.float32) * 0.1]
            nin = nout
    nin *= vgg._FEATURE_SIDE ** 2
    for name, nout in zip(('fc6', 'fc7', 'fc8'), vgg._FC):
        data[name] = [(rng.normal(size=(nin, nout)) * 0.3).astype(np.float32), rng.normal(size=nout).astype(np.float32)]
        nin = nout
    if protocol is None:
        np.save(path, data, allow_pickle=True)
    else:  # written by hand: a .npy header, then the pickle of the 0-d object array
        with open(path, 'wb') as f:
            np.lib.format.write_array_header_1_0(f, {'descr': '|O', 'fortran_order': False, 'shape': ()})
            raw = pickle.dumps(np.array(data, dtype=object), protocol=protocol)
            f.write(raw.replace(b'numpy._core.multiarray', b'numpy.core.multiarray'))  # as old numpy wrote it
    return data


def _tensorflow_vgg(x_nhwc, data):
    """tensorflow-vgg's forward pass (NHWC, SAME 3x3 convolutions, 2x2 max pools, NHWC flattening), logits."""
    h = x_nhwc
    for stage, widths in enumerate(vgg._STAGES, 1):
        for i in range(1, len(widths) + 1):
            k, b = data[f'conv{stage}_{i}']
            h = jax.lax.conv_general_dilated(h, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                             precision=HIGH) + b
            h = np.maximum(h, 0)
        h = jax.lax.reduce_window(h, -np.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), 'VALID')
    h = np.asarray(h).reshape(h.shape[0], -1)
    for name in ('fc6', 'fc7', 'fc8'):
        w, b = data[name]
        h = np.dot(h, w.astype(np.float64)) + b
        h = np.maximum(h, 0) if name != 'fc8' else h
    return h


def test_layers_names_and_no_preprocessing_or_softmax(small):
    model = VGG19()
    names = _names()
    assert len(model) == len(names) == 43
    for i, name in enumerate(names):
        assert getattr(model, name) is model[i]
        if name.startswith('conv'):
            assert isinstance(model[i], objax.nn.Conv2D)
        elif name.startswith('fc'):
            assert isinstance(model[i], objax.nn.Linear)
    assert model[-1] is model.fc8  # logits: no softmax after fc8
    assert model[0] is model.conv1_1  # no preprocessing before conv1_1
    keys = list(model.vars().keys())
    assert len(keys) == 2 * 19 and all(k.startswith('(VGG19)[') for k in keys)
    assert {k.split('(')[1].split(')')[0] for k in keys} == {'VGG19'}
    assert '(VGG19)[0](Conv2D).w' in keys and '(VGG19)[42](Linear).w' in keys and '(VGG19)[38](Linear).b' in keys
    x = jn.asarray(np.random.default_rng(1).uniform(0, 255, size=(2, 3, 64, 64)), jn.float32)
    assert model(x).shape == (2, 3)
    with pytest.raises(AttributeError, match='conv6_1'):
        _ = model.conv6_1


def test_variable_order_b_before_w(small):
    """Objax 1.8 creates Conv2D/Linear biases first (needs the nn layers' b-before-w order)."""
    keys = list(VGG19().vars().keys())
    assert keys[:4] == ['(VGG19)[0](Conv2D).b', '(VGG19)[0](Conv2D).w', '(VGG19)[2](Conv2D).b', '(VGG19)[2](Conv2D).w']
    assert keys[-2:] == ['(VGG19)[42](Linear).b', '(VGG19)[42](Linear).w']


def test_pretrained_file_matches_tensorflow_forward_pass(small, tmp_path):
    path = tmp_path / 'vgg19.npy'
    data = _fabricate(path)
    model = VGG19(pretrained=True, path=path)
    np.testing.assert_array_equal(model.conv3_2.w.value, data['conv3_2'][0])
    np.testing.assert_array_equal(model.conv3_2.b.value, data['conv3_2'][1].reshape(-1, 1, 1))
    np.testing.assert_array_equal(model.fc8.w.value, data['fc8'][0])
    x = np.random.default_rng(2).normal(size=(2, 64, 64, 3)).astype(np.float32)
    want = _tensorflow_vgg(x, data)
    got = objax.Jit(model, model.vars())(jn.asarray(x.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)


def test_pretrained_default_path_is_objax18s(small, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match='tensorflow-vgg'):
        VGG19(pretrained=True)
    os.makedirs('objax/zoo/pretrained')
    data = _fabricate('objax/zoo/pretrained/vgg19.npy', seed=3)
    np.testing.assert_array_equal(VGG19(pretrained=True).fc6.b.value, data['fc6'][1])


def test_python2_style_pickle_loads(small, tmp_path):
    """Protocol 2 with numpy.core.multiarray paths and bytes rebuilt through _codecs.encode, as older files."""
    path = tmp_path / 'old.npy'
    data = _fabricate(path, seed=4, protocol=2)
    raw = path.read_bytes()
    assert b'numpy.core.multiarray' in raw and b'_codecs' in raw
    np.testing.assert_array_equal(VGG19(pretrained=True, path=path).conv1_1.w.value, data['conv1_1'][0])


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def test_malicious_pickle_is_refused_and_nothing_changes(small, tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.npy'
    data = _fabricate(tmp_path / 'good.npy')
    data['conv1_1'].append(_Exploit(marker))
    np.save(path, data, allow_pickle=True)
    model = VGG19()
    before = [np.asarray(v.value) for v in model.vars().values()]
    with pytest.raises(pickle.UnpicklingError, match=r'evil\.npy.*refused to load (posix|os|nt)\.system'):
        model.load_npy(path)
    with pytest.raises(pickle.UnpicklingError, match='refused'):
        VGG19(pretrained=True, path=path)
    assert not marker.exists()
    for b, v in zip(before, model.vars().values()):
        np.testing.assert_array_equal(b, v.value)
    # An array of arbitrary Python objects is refused too, even when built from allowed globals only.
    np.save(tmp_path / 'objects.npy', {'conv1_1': [np.array([1, 'a'], dtype=object), np.zeros(1)]}, allow_pickle=True)
    with pytest.raises(pickle.UnpicklingError, match='array of Python objects'):
        load_pickled_npy(tmp_path / 'objects.npy')


def test_bad_files_raise_clear_errors_and_change_nothing(small, tmp_path):
    model = VGG19()
    before = [np.asarray(v.value) for v in model.vars().values()]
    data = _fabricate(tmp_path / 'a.npy')
    data['fc7'][0] = data['fc7'][0][:, :-1]
    np.save(tmp_path / 'shape.npy', data, allow_pickle=True)
    with pytest.raises(ValueError, match=r'shape\.npy: fc7 weights have shape \(7, 5\), VGG19 expects \(7, 6\)'):
        model.load_npy(tmp_path / 'shape.npy')
    del data['conv2_2']
    np.save(tmp_path / 'missing.npy', data, allow_pickle=True)
    with pytest.raises(ValueError, match=r"missing layers \['conv2_2'\]"):
        model.load_npy(tmp_path / 'missing.npy')
    (tmp_path / 'text.npy').write_text('not numpy')
    with pytest.raises(ValueError, match='text.npy is not a readable .npy file'):
        model.load_npy(tmp_path / 'text.npy')
    for b, v in zip(before, model.vars().values()):
        np.testing.assert_array_equal(b, v.value)
    np.save(tmp_path / 'plain.npy', np.arange(3))  # a numeric .npy loads without any pickle
    np.testing.assert_array_equal(load_pickled_npy(tmp_path / 'plain.npy'), np.arange(3))


def test_converter_to_safetensors(small, tmp_path):
    _fabricate(tmp_path / 'vgg19.npy', seed=5)
    vgg.convert_vgg19_npy_to_safetensors(tmp_path / 'vgg19.npy', tmp_path / 'vgg19.safetensors')
    model = VGG19()
    objax.io.load_safetensors(str(tmp_path / 'vgg19.safetensors'), model.vars())
    reference = VGG19(pretrained=True, path=tmp_path / 'vgg19.npy')
    for a, b in zip(model.vars().values(), reference.vars().values()):
        np.testing.assert_array_equal(a.value, b.value)


def test_preprocess_takes_0_255_rgb():
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 3, 4, 6)).astype(np.float32)
    want = np.stack([x[:, 2] - 103.939, x[:, 1] - 116.779, x[:, 0] - 123.68], axis=1)
    np.testing.assert_allclose(vgg.preprocess(jn.asarray(x)), want, rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(vgg.max_pool_2d(jn.asarray(x)), x.reshape(2, 3, 2, 2, 3, 2).max((3, 5)))
    with pytest.raises(ValueError, match='RGB'):
        vgg.preprocess(jn.zeros((2, 1, 4, 4)))
