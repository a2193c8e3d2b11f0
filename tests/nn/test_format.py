"""The function format of nn reprs (Objax 1.8's): name, defaults as `name(*, k=v)`, partials, callable objects."""

import functools

import jax
import jax.numpy as jn

import objax
from objax.nn._format import class_path, format_function


def my_loss(x, y, *, scale=2, name='a'):
    return x


class Callable:
    def __call__(self, x, k=3):
        return x


def test_spec_examples():
    assert format_function(objax.nn.init.xavier_normal) == 'xavier_normal(*, gain=1)'
    assert format_function(jax.nn.leaky_relu) == 'leaky_relu(*, negative_slope=0.01)'
    assert format_function(functools.partial(jax.nn.leaky_relu, negative_slope=0.5)) == \
        'leaky_relu(*, negative_slope=0.5)'
    assert format_function(jn.concatenate) == 'concatenate(*, axis=0, dtype=None)'
    assert format_function(jax.lax.tanh) == 'tanh(*, accuracy=None)'
    gv = objax.GradValues(lambda x: (x ** 2).sum(), objax.VarCollection(), input_argnums=(0,))
    assert format_function(gv) == 'GradValues'


def test_other_callables():
    assert format_function(objax.functional.relu) == 'relu'
    assert format_function(lambda x: x) == '<lambda>'
    assert format_function(my_loss) == "my_loss(*, scale=2, name=a)"  # values rendered with str()
    assert format_function(functools.partial(my_loss, scale=5)) == 'my_loss(*, scale=5, name=a)'
    assert format_function(functools.partial(functools.partial(my_loss, 1), name='b')) == \
        'my_loss(*, scale=2, name=b)'
    assert format_function(Callable()) == 'Callable'
    assert format_function(len) == 'len'


def test_class_path():
    assert class_path(objax.nn.Linear) == 'objax.nn.Linear'
    assert class_path(objax.nn.SyncedBatchNorm2D) == 'objax.nn.SyncedBatchNorm2D'
    assert class_path(Callable) == f'{__name__}.Callable'
