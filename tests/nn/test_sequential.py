"""Sequential: Objax 1.8's call rules (tuple spreading, the last layer's output as is, slices) and its repr."""

import functools

import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.nn import Sequential


class M(objax.Module):
    """M(m)(x, y) = (m * x + y, m * x - y): the spec's example layer."""

    def __init__(self, m):
        self.m = m

    def __call__(self, x, y):
        return self.m * x + y, self.m * x - y


def test_spec_example_tuples_and_slices():
    seq = Sequential([M(2), M(3)])
    assert seq(5, 7) == (54, 48) and type(seq(5, 7)) is tuple
    assert seq[:1](5, 7) == (17, 3) and isinstance(seq[:1], Sequential)
    assert seq[1:](5, 7) == (22, 8)
    assert isinstance(seq[0], M)


def test_last_output_as_returned_and_lists_passed_whole():
    # A list output is one argument for the next layer; the final output is returned untouched.
    seq = Sequential([lambda x: [x, x + 1], lambda pair: pair])
    assert seq(1) == [1, 2]
    assert Sequential([lambda x: (x,)])(3) == (3,)  # a 1-tuple stays a tuple
    assert Sequential([lambda x, y: (x + y, x - y), lambda a, b: a * b])(5, 2) == 21
    x = jn.arange(3.)
    np.testing.assert_array_equal(Sequential([lambda v: v * 2])(x), [0., 2., 4.])


def test_empty_sequential():
    assert Sequential()(4) == 4
    assert Sequential([])(1, 2) == (1, 2)


def test_kwargs_go_to_the_layers_that_accept_them():
    seen = []

    def with_training(x, training):
        seen.append(training)
        return x + 1

    def with_any(x, **kwargs):
        seen.append(sorted(kwargs))
        return x * 2

    seq = Sequential([with_training, lambda x: x + 10, with_any])
    assert seq(1, training=True, other=3) == 24
    assert seen == [True, ['other', 'training']]


def test_errors_name_the_layer():
    seq = Sequential([lambda x: x, objax.nn.Linear(3, 2)])
    with pytest.raises(ValueError, match='3 features') as info:
        seq(jn.ones((1, 4)))
    assert any('Sequential layer [1]: Linear' in note for note in info.value.__notes__)


def test_repr_multi_line_nested():
    seq = Sequential([objax.nn.Linear(2, 3), objax.functional.relu,
                      functools.partial(objax.functional.leaky_relu, negative_slope=0.5),
                      Sequential([objax.nn.Dropout(0.5), objax.nn.BatchNorm0D(3)]), jn.concatenate])
    assert repr(seq) == '\n'.join([
        'objax.nn.Sequential(',
        '  [0] objax.nn.Linear(nin=2, nout=3, use_bias=True, w_init=xavier_normal(*, gain=1))',
        '  [1] relu',
        '  [2] leaky_relu(*, negative_slope=0.5)',
        '  [3] objax.nn.Sequential(',
        '    [0] objax.nn.Dropout(keep=0.5)',
        '    [1] objax.nn.BatchNorm0D(nin=3, momentum=0.999, eps=1e-06)',
        '  )',
        '  [4] concatenate(*, axis=0, dtype=None)',
        ')'])
    assert repr(Sequential()) == 'objax.nn.Sequential(\n)'
