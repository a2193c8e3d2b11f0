"""Compiled transforms never silently run a program built for an older module structure."""

import warnings

import jax.numpy as jn
import numpy as np
import pytest

import objax

X = np.arange(16, dtype=np.float32).reshape(8, 2) / 10


class Net(objax.Module):
    def __init__(self):
        self.w = objax.TrainVar(jn.ones((2, 2)))
        self.b = objax.TrainVar(jn.zeros(2))

    def __call__(self, x):
        return x @ self.w.value + self.b.value


def _numpy(net: Net, x):
    return x @ np.asarray(net.w.value) + np.asarray(net.b.value)


@pytest.mark.parametrize('transform', ['jit', 'parallel'])
def test_replacing_a_variable_attribute_is_followed_by_a_module_transform(transform):
    net = Net()
    f = objax.Jit(net) if transform == 'jit' else objax.Parallel(net)
    np.testing.assert_allclose(f(X), _numpy(net, X), rtol=1e-6)
    net.w = objax.TrainVar(jn.full((2, 2), 3.))
    assert f.vars()[f'({type(f).__name__})(Net).w'] is net.w  # vars() follows the module too, before any call
    np.testing.assert_allclose(f(X), _numpy(net, X), rtol=1e-6)  # the new variable, not the old one
    net.w.assign(jn.full((2, 2), -1.))  # and it is an input of the new program, not a constant
    np.testing.assert_allclose(f(X), _numpy(net, X), rtol=1e-6)
    del net.b
    net.b = objax.TrainVar(jn.ones(2) * 7)
    np.testing.assert_allclose(f(X), _numpy(net, X), rtol=1e-6)


@pytest.mark.parametrize('transform', ['jit', 'parallel'])
def test_appending_to_a_sequential_is_followed(transform):
    seq = objax.nn.Sequential([objax.nn.Linear(2, 3), objax.functional.relu])
    f = objax.Jit(seq) if transform == 'jit' else objax.Parallel(seq)
    np.testing.assert_allclose(f(X), seq(X), rtol=1e-5)
    seq.append(objax.nn.Linear(3, 4))
    out = f(X)
    assert out.shape == (8, 4)
    np.testing.assert_allclose(out, seq(X), rtol=1e-5)
    seq[2] = objax.nn.Linear(3, 1)  # item replaced
    np.testing.assert_allclose(f(X), seq(X), rtol=1e-5)
    seq.pop()
    np.testing.assert_allclose(f(X), seq(X), rtol=1e-5)
    assert len(f.vars()) == 2


def test_module_list_changes_inside_a_module_are_followed():
    class Stack(objax.Module):
        def __init__(self):
            self.layers = objax.ModuleList([objax.nn.Linear(2, 2)])

        def __call__(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    stack = Stack()
    f = objax.Jit(stack)
    np.testing.assert_allclose(f(X), stack(X), rtol=1e-5)
    stack.layers.insert(0, objax.nn.Linear(2, 2))
    np.testing.assert_allclose(f(X), stack(X), rtol=1e-5)
    stack.layers.extend([objax.nn.Linear(2, 2)])
    np.testing.assert_allclose(f(X), stack(X), rtol=1e-5)
    assert len(f.vars()) == 6


@pytest.mark.parametrize('transform', ['jit', 'parallel'])
def test_explicit_collection_warns_and_freezes_the_new_variable(transform):
    net = Net()
    vc = net.vars()
    make = objax.Jit if transform == 'jit' else objax.Parallel
    f = make(net, vc)
    np.testing.assert_allclose(f(X), _numpy(net, X), rtol=1e-6)
    net.w = objax.TrainVar(jn.full((2, 2), 3.))
    with pytest.warns(objax.VariableOutsideCollectionWarning, match=r'\(Net\)\.w'):
        np.testing.assert_allclose(f(X), _numpy(net, X), rtol=1e-6)  # uses the new variable's value ...
    net.w.assign(jn.full((2, 2), -1.))
    np.testing.assert_allclose(f(X), X @ np.full((2, 2), 3.), rtol=1e-6)  # ... frozen, as in Objax 1.8
    with warnings.catch_warnings():
        warnings.simplefilter('error', objax.VariableOutsideCollectionWarning)
        g = make(net, vc)
        with pytest.raises(objax.VariableOutsideCollectionWarning):
            g(X)


def test_vectorize_of_a_module_follows_its_structure():
    net = Net()
    v = objax.Vectorize(net)
    np.testing.assert_allclose(v(X), _numpy(net, X), rtol=1e-6)
    net.w = objax.TrainVar(jn.full((2, 2), 2.))
    np.testing.assert_allclose(v(X), _numpy(net, X), rtol=1e-6)
    assert v.vars()['(Vectorize)(Net).w'] is net.w


def test_building_new_modules_does_not_recompile_existing_transforms():
    net = Net()
    traces = []

    def f(x):
        traces.append(1)
        return net(x)

    jf = objax.Jit(f, net.vars())
    jm = objax.Jit(net)
    jf(X), jm(X)
    count = len(traces)
    for _ in range(3):
        other = objax.nn.Sequential([objax.nn.Linear(2, 2), objax.nn.Linear(2, 2)])
        objax.Jit(other)(X)
        jf(X), jm(X)
    assert len(traces) == count  # nothing structural happened to net: its programs are reused
    net.b = objax.TrainVar(jn.ones(2))
    with pytest.warns(objax.VariableOutsideCollectionWarning, match=r'\(Net\)\.b'):
        jf(X)
    assert len(traces) == count + 1  # a structure change retraces (b, outside the collection, is frozen in)
