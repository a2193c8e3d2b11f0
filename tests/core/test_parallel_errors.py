"""objax.Parallel refuses bad input with messages that name the problem, and a refused call changes nothing."""

import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.functional.parallel import pmean


def _values(vc):
    return [np.asarray(v) for v in vc.tensors()]


def _assert_unchanged(vc, before):
    for a, b in zip(vc.tensors(), before):
        np.testing.assert_array_equal(np.asarray(a), b)


def _stateful():
    """A model whose calls change variables (weights through an optimizer, batch-norm statistics)."""
    model = objax.nn.Sequential([objax.nn.Linear(3, 4), objax.nn.BatchNorm0D(4)])
    gv = objax.GradValues(lambda x: (model(x, training=True) ** 2).mean(), model.vars())
    opt = objax.optimizer.SGD(model.vars())

    def train_op(x):
        grads, values = gv(x)
        opt(0.1, [pmean(g) for g in grads])
        return values[0]

    return train_op, gv.vars() + opt.vars()


def test_batch_not_divisible_names_sizes_and_changes_nothing():
    train_op, vc = _stateful()
    step = objax.Parallel(train_op, vc, reduce=lambda v: v.mean(0))
    before = _values(vc)
    with pytest.raises(ValueError, match=r'argument 0 has a batch \(leading axis\) of size 12.*among 8 devices'):
        step(np.ones((12, 3), np.float32))
    _assert_unchanged(vc, before)
    with pytest.raises(ValueError, match=r"argument 1\['y'\] has a batch .* size 4"):
        objax.Parallel(lambda a, b: a, objax.VarCollection())(np.ones((8, 1)), {'y': np.ones((4, 1))})
    step(np.ones((16, 3), np.float32))  # the same Parallel still works, and does change the variables
    assert any(not np.array_equal(np.asarray(a), b) for a, b in zip(vc.tensors(), before))


def test_variable_outside_collection_read_warns_write_raises_and_changes_nothing():
    model = objax.nn.Linear(3, 2)
    other = objax.nn.Linear(2, 2)
    counter = objax.StateVar(jn.zeros(()))
    outside = objax.StateVar(jn.zeros(()))
    x = np.ones((8, 3), np.float32)

    def f(x):
        counter.value += 1
        return other(model(x))

    vc = model.vars() + objax.VarCollection({'counter': counter})
    with pytest.warns(objax.VariableOutsideCollectionWarning, match=r'Parallel\(.*\(Linear\)\.[wb]"'):
        y = objax.Parallel(f, vc)(x)
    np.testing.assert_allclose(y, x @ model.w.value @ other.w.value + model.b.value @ other.w.value
                               + other.b.value, rtol=1e-5)  # read with its current (frozen) value
    assert float(counter.value) == 1

    def g(x):
        counter.value += 1
        outside.value += 1
        return model(x)

    before = _values(vc)
    with pytest.raises(objax.VariableOutsideCollectionError, match=r'Parallel\(.*writes variable "outside"'), \
            pytest.warns(objax.VariableOutsideCollectionWarning, match='reads variable "outside"'):  # `+=` reads it
        objax.Parallel(g, vc)(x)
    _assert_unchanged(vc, before)
    assert float(outside.value) == 0


def test_bad_reduce():
    with pytest.raises(TypeError, match='reduce must be callable'):
        objax.Parallel(lambda x: x, objax.VarCollection(), reduce='mean')
    train_op, vc = _stateful()
    before = _values(vc)
    # The default reduce (concatenate) cannot merge one scalar per device: the error says what to use instead.
    with pytest.raises(ValueError, match=r"reduce='concatenate'.*shape \(8,\).*lambda x: x.mean\(0\)"):
        objax.Parallel(train_op, vc)(np.ones((8, 3), np.float32))
    _assert_unchanged(vc, before)


def test_variable_reduce_problems_are_named():
    v = objax.StateVar(jn.zeros(3), reduce=None)
    par = objax.Parallel(lambda x: v.assign(x[0]), objax.VarCollection({'v': v}))
    with pytest.raises(ValueError, match=r'"(\{<lambda>\})?v".*reduce=None'):  # the Function's name for v
        par(np.ones((8, 3), np.float32))
    np.testing.assert_array_equal(np.asarray(v.value), np.zeros(3))
    w = objax.StateVar(jn.zeros(3), reduce=lambda x: x)  # returns the stacked copies, wrong shape
    with pytest.raises(ValueError, match=r'"(\{<lambda>\})?w".*shape \(8, 3\).*expected \(3,\)'):
        objax.Parallel(lambda x: w.assign(x[0]), objax.VarCollection({'w': w}))(np.ones((8, 3), np.float32))
    np.testing.assert_array_equal(np.asarray(w.value), np.zeros(3))


def test_constructor_arguments():
    with pytest.raises(ValueError, match='vc is required'):
        objax.Parallel(lambda x: x)
    with pytest.raises(TypeError, match='vc must be a VarCollection'):
        objax.Parallel(lambda x: x, [objax.TrainVar(jn.zeros(1))])
    with pytest.raises(TypeError, match='axis_name'):
        objax.Parallel(lambda x: x, objax.VarCollection(), axis_name='')
    model = objax.nn.Linear(2, 2)
    # A Module brings its own variables, named (Parallel) + its names as in Objax 1.8.
    assert list(objax.Parallel(model).vars().keys()) == [f'(Parallel){k}' for k in model.vars().keys()]


def test_device_reshape():
    par = objax.Parallel(lambda x: x, objax.VarCollection())
    assert par.device_reshape(jn.ones((16, 3))).shape == (8, 2, 3)
    np.testing.assert_array_equal(np.asarray(par.device_reshape(jn.asarray(2.))), np.full(8, 2.))
    with pytest.raises(ValueError, match='size 12.*8 devices'):
        par.device_reshape(jn.ones((12, 3)))
    with pytest.raises(TypeError, match='expects an array'):
        par.device_reshape([1, 2])
