"""objax.util: EasyDict, Renamer, signature helpers, class_name, ilog2, dummy_context_mgr, find_used_variables,
Objax2Tf without TensorFlow (tests/util/test_objax2tf.py tests it with TensorFlow) and objax.util.image against numpy
and Pillow."""

import copy
import functools
import inspect
import io
import math
import pickle
import re
import sys

import jax.numpy as jn
import numpy as np
import pytest
from PIL import Image

import objax
from objax.util import (
    EasyDict,
    Objax2Tf,
    Renamer,
    args_indexes,
    class_name,
    dummy_context_mgr,
    find_used_variables,
    ilog2,
    image,
    local_kwargs,
    override_args_kwargs,
    positional_args_names,
    re_sign,
    repr_function,
)

# ---------------------------------------------------------------------------------------------------------------
# EasyDict

def test_easydict():
    d = EasyDict({'a': 1}, b=2)
    assert isinstance(d, dict) and d == {'a': 1, 'b': 2}
    assert d.a == d['a'] == 1
    d.c = 3
    d['e'] = 5
    assert d['c'] == 3 and d.e == 5
    del d.a
    assert 'a' not in d
    with pytest.raises(AttributeError, match="'a'"):
        _ = d.a
    with pytest.raises(AttributeError, match="'zz'"):
        del d.zz
    assert EasyDict([('x', 1)]) == {'x': 1} and EasyDict() == {}
    clone = d.copy()
    assert type(clone) is EasyDict and clone == d and clone is not d
    for again in (pickle.loads(pickle.dumps(d)), copy.deepcopy(d)):
        assert type(again) is EasyDict and again == d and again.b == 2
    assert 'c' in dir(d) and repr(d) == "EasyDict({'b': 2, 'c': 3, 'e': 5})"
    assert str(inspect.signature(EasyDict)) == '(*args, **kwargs)'


# ---------------------------------------------------------------------------------------------------------------
# Renamer

def test_renamer_rules():
    names = ['(Net).conv(Conv2D).w', '(Net).conv(Conv2D).b', '(Net).fc(Linear).w']
    by_dict = Renamer({'(Net).': '', '(Conv2D)': '', '(Linear)': ''})
    assert [by_dict(n) for n in names] == ['conv.w', 'conv.b', 'fc.w']
    by_regex = Renamer([(re.compile(r'\((\w+)\)'), r'[\1]'), (re.compile(r'\.w$'), '.weight')])
    assert by_regex(names[0]) == '[Net].conv[Conv2D].weight'
    assert Renamer([(r'^\(Net\)\.', '')])(names[2]) == 'fc(Linear).w'  # a pattern may be a plain string
    # Regex pairs apply one after the other: the second sees the first one's result.
    assert Renamer([(re.compile('a'), 'b'), (re.compile('b'), 'c')])('ab') == 'cc'
    assert Renamer(str.upper)('abc') == 'ABC'
    assert Renamer({'x': 'y'})('abc') == 'abc'
    assert Renamer({})('abc') == 'abc'


def test_renamer_dict_is_one_left_to_right_pass():
    """The spec's examples of Objax 1.8's Renamer: replaced text is never rescanned."""
    assert Renamer({'aa': 'x', 'bb': 'y'})('baaab') == 'bxab'
    assert Renamer({'aa': 'x', 'bb': 'y'})('baaaab') == 'bxxb'
    assert Renamer({'a': 'b', 'b': 'c'})('ab') == 'bc'
    assert Renamer({'a': 'b', 'b': 'c'})('a') == 'b'
    # At one position the first key in dict order wins, even when a later key is longer.
    assert Renamer({'a': '1', 'ab': '2'})('abab') == '1b1b'
    assert Renamer({'ab': '2', 'a': '1'})('abab') == '22'
    assert Renamer({'.': '/', '(': '<'})('(a).b') == '<a)/b'  # keys are literal, not regexes


def test_renamer_chain_and_errors():
    assert Renamer({'aa': 'x'}, chain=Renamer({'xa': 'y'}))('baaab') == 'byb'  # chain runs after the rules
    chained = Renamer([(r'\(\w+\)', '')], chain=Renamer({'conv.': 'layer0.'}))
    assert chained('(Net).conv(Conv2D).w') == '.layer0.w'
    assert Renamer(lambda s: s + '!', chain=Renamer(lambda s: s + '?'))('a') == 'a!?'
    vc = objax.nn.Linear(2, 3).vars()
    assert sorted(vc.rename(Renamer({'(Linear).': 'dense/'})).keys()) == ['dense/b', 'dense/w']
    with pytest.raises(TypeError, match='rules'):
        Renamer(42)
    with pytest.raises(TypeError, match='str'):
        Renamer({'a': 1})
    with pytest.raises(TypeError, match='chain'):
        Renamer({}, chain='not a renamer')


# ---------------------------------------------------------------------------------------------------------------
# Signature helpers

def _f(a, b, /, c, d=1, *args, e, g=2, **kwargs):
    return a, b, c, d, args, e, g, kwargs


def test_positional_args_names_and_args_indexes():
    assert positional_args_names(_f) == ['a', 'b', 'c', 'd']
    assert positional_args_names(lambda *, k: k) == []
    assert positional_args_names(objax.nn.Linear(2, 3).__call__) == ['x']  # bound: no self
    assert tuple(args_indexes(_f, ['d', 'a'])) == (3, 0)
    assert tuple(args_indexes(_f, [])) == ()
    with pytest.raises(ValueError, match="'e'"):
        args_indexes(_f, ['e'])  # keyword-only
    with pytest.raises(ValueError, match="'zz'"):
        args_indexes(_f, ['a', 'zz'])


def test_local_kwargs():
    def f(a, b=1, *, c=2):
        return a, b, c

    assert local_kwargs({'a': 1, 'c': 3, 'x': 4}, f) == {'a': 1, 'c': 3}
    assert local_kwargs({'a': 1, 'x': 4}, _f) == {'a': 1, 'x': 4}  # f takes **kwargs: everything goes
    assert local_kwargs({}, f) == {}


def test_override_args_kwargs():
    def f(a, b, c=3, *, d=4):
        return a, b, c, d

    args, kwargs = override_args_kwargs(f, (1, 2), {'d': 5}, {'b': 20, 'c': 30, 'd': 40})
    assert args == [1, 20] and kwargs == {'c': 30, 'd': 40}
    assert f(*args, **kwargs) == (1, 20, 30, 40)
    args, kwargs = override_args_kwargs(f, [1, 2, 3], {}, {'c': 9})
    assert args == [1, 2, 9] and kwargs == {}
    args, kwargs = override_args_kwargs(_f, (1, 2, 3), {}, {'zz': 1, 'a': 0})
    assert args == [0, 2, 3] and kwargs == {'zz': 1}
    # Positional-only parameters given by position are overridden in place too.
    assert override_args_kwargs(_f, (1, 2, 3, 4, 5), {}, {'b': 0, 'd': 9}) == ([1, 0, 3, 9, 5], {})


def test_override_args_kwargs_spec_examples():
    """As in Objax 1.8, names are never validated; unknown names go to the keyword arguments."""
    def f2(a, b, c, d=1, e=2, f=3):
        return a, b, c, d, e, f

    def f4(*args, d=2, e=3):
        return args, d, e

    assert override_args_kwargs(f2, [1, 2], {'e': 4}, {'d': 3, 'x': 10}) == ([1, 2], {'e': 4, 'd': 3, 'x': 10})
    assert override_args_kwargs(f2, [1, 2], {'d': 2}, {'d': 3, 'b': 10, 'x': 20}) == ([1, 10], {'d': 3, 'x': 20})
    assert override_args_kwargs(f4, [1, 2, 3], {'d': 20}, {'d': 3, 'a': 10}) == ([1, 2, 3], {'a': 10, 'd': 3})
    args = (1, 2)
    kwargs = {'e': 4}
    override_args_kwargs(f2, args, kwargs, {'a': 0, 'e': 5})
    assert args == (1, 2) and kwargs == {'e': 4}  # the inputs are not changed


def test_re_sign_and_repr_function():
    def target(x, y=2, *, z='same'):
        return x, y, z

    @re_sign(target)
    def wrapper(*args, **kwargs):
        return sum(args)

    assert inspect.signature(wrapper) == inspect.signature(target)
    assert wrapper(1, 2, 3) == 6 and wrapper.__name__ == 'wrapper'
    assert positional_args_names(wrapper) == ['x', 'y']
    assert repr_function(target) == "target(*, y=2, z=same)"  # defaults shown with str(), as in Objax 1.8
    assert repr_function(objax.functional.relu) == 'relu'
    assert repr_function(objax.nn.init.kaiming_normal) == 'kaiming_normal(*, gain=1)'
    assert repr_function(functools.partial(target, y=5)) == "target(*, y=5, z=same)"
    # The spec's examples of Objax 1.8's function format.
    assert repr_function(objax.nn.init.xavier_normal) == 'xavier_normal(*, gain=1)'
    assert repr_function(objax.functional.leaky_relu) == 'leaky_relu(*, negative_slope=0.01)'
    assert repr_function(functools.partial(objax.functional.leaky_relu, negative_slope=0.5)) == \
        'leaky_relu(*, negative_slope=0.5)'
    assert repr_function(jn.concatenate) == 'concatenate(*, axis=0, dtype=None)'
    assert repr_function(objax.GradValues(lambda x: x.sum(), objax.VarCollection())) == 'GradValues'



# ---------------------------------------------------------------------------------------------------------------
# Small helpers

def test_class_name():
    assert class_name(objax.nn.Linear(2, 3)) == 'objax.nn.Linear'  # the shortest module path that exports it
    assert class_name(objax.nn.Linear) == 'objax.nn.Linear'
    assert class_name(objax.TrainVar(jn.zeros(1))) == 'objax.TrainVar'
    assert class_name(3) == 'int' and class_name(dict) == 'dict'

    class Local:
        pass

    assert class_name(Local()) == f'{__name__}.test_class_name.<locals>.Local'


def test_ilog2():
    for x in list(range(1, 70)) + [1023, 1024, 1025, 2 ** 60 + 1]:
        assert ilog2(x) == math.ceil(math.log2(x)) if x < 2 ** 50 else ilog2(x) == 61
    for x in (0.3, 0.5, 0.51, 1.0, 1.5, 2.0, 3.999, 1e-9, 1e30):
        assert ilog2(x) == math.ceil(np.log2(x)), x
    assert ilog2(np.float32(8)) == 3 and ilog2(np.int64(9)) == 4
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match='x must be > 0'):
            ilog2(bad)
    with pytest.raises(TypeError, match='real number'):
        ilog2('8')


def test_dummy_context_mgr():
    with dummy_context_mgr() as value:
        assert value is None
    with pytest.raises(KeyError):  # exceptions are not swallowed
        with dummy_context_mgr():
            raise KeyError('k')


# ---------------------------------------------------------------------------------------------------------------
# find_used_variables

MODEL = objax.nn.Linear(2, 3)
COUNTER = objax.StateVar(jn.zeros(()))
UNUSED = objax.nn.Linear(4, 4)


def _helper(x):
    return MODEL(x)


def _loss(x):
    COUNTER.value += 1
    return _helper(x).sum()


class _Net(objax.Module):
    def __init__(self):
        self.dense = objax.nn.Linear(2, 2)

    def forward(self, x):
        return self.dense(x) + MODEL(x)


def test_find_used_variables():
    vc = find_used_variables(_loss)  # through the globals it names, following _helper
    assert {id(v) for v in vc.values()} == {id(COUNTER), id(MODEL.w), id(MODEL.b)}
    assert set(vc.keys()) == {'COUNTER', 'MODEL.(Linear).w', 'MODEL.(Linear).b'}  # Objax 1.8 names
    # The collection is usable as is: Jit of the function with it updates the counter.
    objax.Jit(_loss, vc)(jn.ones((1, 2)))
    assert float(COUNTER.value) == 1

    def make():
        inner = objax.nn.Linear(3, 1)
        return (lambda x: inner(x)), inner

    closure, inner = make()
    assert [id(v) for v in find_used_variables(closure).values()] == [id(inner.b), id(inner.w)]
    net = _Net()
    used = {id(v) for v in find_used_variables(net.forward).values()}
    assert used == {id(net.dense.w), id(net.dense.b), id(MODEL.w), id(MODEL.b)}
    assert not find_used_variables(lambda x: x + 1)
    assert id(UNUSED.w) not in {id(v) for v in find_used_variables(_loss).values()}


# ---------------------------------------------------------------------------------------------------------------
# Objax2Tf

def test_objax2tf_without_tensorflow(monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorflow', None)  # `import tensorflow` fails as if not installed
    with pytest.raises(ImportError, match='TensorFlow') as info:
        Objax2Tf(objax.nn.Linear(2, 3))
    assert 'pip install tensorflow' in str(info.value)


# ---------------------------------------------------------------------------------------------------------------
# objax.util.image

def test_nchw_nhwc():
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(image.nchw(x), x.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(image.nhwc(x), x.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(image.nhwc(image.nchw(x)), x)
    np.testing.assert_array_equal(image.nchw(x[0]), x[0].transpose(2, 0, 1))  # single image
    y = np.arange(720).reshape(2, 3, 4, 5, 6)
    np.testing.assert_array_equal(image.nchw(jn.asarray(y)), y.transpose(0, 1, 4, 2, 3))
    assert isinstance(image.nhwc(jn.asarray(x)), type(jn.asarray(x)))
    with pytest.raises(ValueError, match='at least 3 dimensions'):
        image.nchw(np.zeros((4, 4)))


def test_normalize():
    u = np.arange(256, dtype=np.uint8)
    f = image.normalize_to_unit_float(u)
    assert f.dtype == np.float32
    np.testing.assert_allclose(f, u / 128 + 1 / 256 - 1, rtol=1e-6)
    assert f.min() == pytest.approx(1 / 256 - 1) and f.max() == pytest.approx(1 - 1 / 256)
    np.testing.assert_array_equal(image.normalize_to_uint8(f), u)  # exact round trip
    x = np.array([-2, -1, -0.5, 0, 0.25, 1, 3], np.float32)
    want = np.clip(np.round(128 * (x + 1 - 1 / 256)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(image.normalize_to_uint8(x), want)
    np.testing.assert_array_equal(image.normalize_to_uint8(jn.asarray(x)), want)
    assert image.normalize_to_uint8(jn.asarray(x)).dtype == jn.uint8


def _decode(png):
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == 'PNG'
        return img.mode, np.asarray(img)


def test_to_png_decodes_to_the_same_pixels():
    """As Objax 1.8's to_png: uint8 is (H, W, C) and passes unchanged; floats are (C, H, W), normalize_to_uint8."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    mode, pixels = _decode(image.to_png(rgb))
    assert mode == 'RGB'
    np.testing.assert_array_equal(pixels, rgb)
    rgba = rng.integers(0, 256, size=(2, 3, 4), dtype=np.uint8)
    np.testing.assert_array_equal(_decode(image.to_png(jn.asarray(rgba)))[1], rgba)
    gray = rng.integers(0, 256, size=(4, 4, 1), dtype=np.uint8)
    np.testing.assert_array_equal(_decode(image.to_png(gray))[1], np.repeat(gray, 3, axis=2))
    floats = rng.uniform(-1.2, 1.2, size=(3, 4, 6)).astype(np.float32)
    want = np.clip(np.round(128 * (floats + 1 - 1 / 256)), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    np.testing.assert_array_equal(_decode(image.to_png(floats))[1], want)
    np.testing.assert_array_equal(_decode(image.to_png(floats.astype(np.float64)))[1], want)
    # Pixel for pixel with normalize_to_uint8 (the same quantisation as Objax 1.8).
    np.testing.assert_array_equal(_decode(image.to_png(floats))[1],
                                  image.normalize_to_uint8(floats).transpose(1, 2, 0))
    half = jn.asarray(floats, jn.bfloat16)
    np.testing.assert_array_equal(_decode(image.to_png(half))[1][0, 0, :],
                                  np.clip(np.round(128 * (np.asarray(half[:, 0, 0], np.float32) + 1 - 1 / 256)),
                                          0, 255))
    with pytest.raises(ValueError, match=r'\(H, W, C\) with C in'):
        image.to_png(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match=r'\(C, H, W\) with C in'):
        image.to_png(np.zeros((5, 4, 3), np.float32))
    with pytest.raises(ValueError, match='dtype int32'):
        image.to_png(np.zeros((3, 4, 4), np.int32))


def test_image_grid():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(2, 3, 3, 4, 5), dtype=np.uint8)  # 2 rows x 3 columns of (3, 4, 5)
    grid = image.image_grid(images)
    assert grid.shape == (3, 8, 15)
    for r in range(2):
        for c in range(3):
            np.testing.assert_array_equal(grid[:, 4 * r:4 * r + 4, 5 * c:5 * c + 5], images[r, c])
    with pytest.raises(ValueError, match='rows, cols, C, H, W'):
        image.image_grid(images[0])


def test_from_file(tmp_path):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    path = tmp_path / 'x.png'
    Image.fromarray(rgb).save(path)
    got = image.from_file(str(path))
    assert got.shape == (3, 6, 5) and got.dtype == np.float32
    np.testing.assert_allclose(got, image.normalize_to_unit_float(rgb.transpose(2, 0, 1)))
    with open(path, 'rb') as f:  # a binary file object works too
        np.testing.assert_array_equal(image.from_file(f), got)
    buffer = io.BytesIO()
    Image.fromarray(rgb[:, :, 0]).save(buffer, format='png')  # a gray file is read as RGB
    buffer.seek(0)
    np.testing.assert_array_equal(image.from_file(buffer), np.repeat(got[:1], 3, axis=0))
    # PNG round trip through to_png.
    np.testing.assert_array_equal(image.from_file(io.BytesIO(image.to_png(rgb))), got)
