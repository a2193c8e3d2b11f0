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


@pytest.mark.parametrize('transform', ['jit', 'parallel'])
def test_a_structure_change_rebuilds_only_the_transforms_it_concerns(transform):
    a, b = Net(), Net()
    b.w.assign(jn.full((2, 2), 2.))
    traces = {'a': 0, 'b': 0}

    def fa(x):
        traces['a'] += 1
        return a(x)

    def fb(x):
        traces['b'] += 1
        return b(x)

    make = objax.Jit if transform == 'jit' else objax.Parallel
    ja, jb, jm = make(fa, a.vars()), make(fb, b.vars()), make(b, b.vars())
    ja(X), jb(X), jm(X)
    program = (lambda: jm._call_donating) if transform == 'jit' else (lambda: jm._programs[frozenset(), True])
    compiled = program()
    assert traces == {'a': 1, 'b': 1} and compiled._cache_size() == 1
    a.extra = objax.TrainVar(jn.ones(2))  # a new variable in a module vars() collected: a structure change
    a.w = objax.TrainVar(jn.full((2, 2), 3.))  # and a variable of a replaced
    np.testing.assert_allclose(jb(X), _numpy(b, X), rtol=1e-6)
    np.testing.assert_allclose(jm(X), _numpy(b, X), rtol=1e-6)
    assert traces['b'] == 1 and program() is compiled and compiled._cache_size() == 1  # a holds nothing b uses
    with pytest.warns(objax.VariableOutsideCollectionWarning, match=r'\(Net\)\.w'):
        np.testing.assert_allclose(ja(X), _numpy(a, X), rtol=1e-6)  # a's own transform rebuilds
    assert traces['a'] == 2
    b.w = objax.TrainVar(jn.full((2, 2), 4.))  # b's own variable replaced: b's transforms rebuild
    with pytest.warns(objax.VariableOutsideCollectionWarning, match=r'\(Net\)\.w'):
        np.testing.assert_allclose(jb(X), _numpy(b, X), rtol=1e-6)
    with pytest.warns(objax.VariableOutsideCollectionWarning, match=r'\(Net\)\.w'):
        np.testing.assert_allclose(jm(X), _numpy(b, X), rtol=1e-6)
    assert traces['b'] == 2
    ja(X)
    assert traces['a'] == 2


def test_a_change_of_a_module_holding_a_variable_read_outside_the_collection_rebuilds():
    a, b = Net(), Net()
    traces = []

    def reads_a(x):  # b's collection, but reads a.b too (frozen in, with a warning)
        traces.append(1)
        return b(x) + a.b.value

    jr = objax.Jit(reads_a, b.vars())
    with pytest.warns(objax.VariableOutsideCollectionWarning, match=r'\(Net\)\.b'):
        jr(X)
    old = a.b  # kept: the transform knows the variables it warned about by id, which a new object could reuse
    a.b = objax.TrainVar(jn.full(2, 5.))  # a's b replaced: the frozen value is the new one's
    with pytest.warns(objax.VariableOutsideCollectionWarning, match=r'\(Net\)\.b'):
        np.testing.assert_allclose(jr(X), _numpy(b, X) + 5, rtol=1e-6)
    assert len(traces) == 2 and old is not a.b
    objax.nn.Linear(2, 2).vars()  # unrelated modules changing or appearing: nothing to rebuild
    c = Net()
    c.vars()
    c.w = objax.TrainVar(jn.zeros((2, 2)))
    jr(X)
    assert len(traces) == 2


def test_a_module_list_change_rebuilds_the_transforms_of_its_variables_only():
    seq = objax.nn.Sequential([objax.nn.Linear(2, 2)])
    other = Net()
    traces = []

    def f(x):
        traces.append(1)
        return seq(x)

    jf, jo = objax.Jit(f, seq.vars()), objax.Jit(other, other.vars())
    jf(X), jo(X)
    seq[0] = objax.nn.Linear(2, 3)  # replaces the layer holding every variable of jf's collection
    with pytest.warns(objax.VariableOutsideCollectionWarning):
        assert jf(X).shape == (8, 3)
    assert len(traces) == 2
    compiled = jo._call_donating
    seq.append(objax.nn.Linear(3, 1))
    jo(X)
    assert jo._call_donating is compiled and compiled._cache_size() == 1
