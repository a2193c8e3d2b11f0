"""Objax 1.8 behaviour of the core (objax18_behaviour.md V2-V5, N1, N3, N4, T2, T4, T6, J; issue 11 items 2,
11, 12 for Vectorize and variables): each test checks the spec's own example."""

import jax
import jax.numpy as jn
import numpy as np
import pytest

import objax


# V2 -------------------------------------------------------------------------------------------------------------

def test_reduce_is_unchecked_and_may_change_shape():
    v = objax.TrainVar(jn.array([[1., 2., 3.], [4., 5., 6.]]))
    v.reduce(v.value)
    assert v.shape == (3,)
    np.testing.assert_array_equal(v.value, [2.5, 3.5, 4.5])


def test_reduce_custom_function_and_dtype():
    s = objax.StateVar(jn.array([[0, 4, 2], [3, 1, 5]]), reduce=lambda x: x.min(0))
    s.reduce(s.value)
    np.testing.assert_array_equal(s.value, [0, 1, 2])
    counter = objax.StateVar(jn.array([1, 2], dtype=jn.int32))
    counter.reduce(jn.array([[1, 2], [2, 2]], dtype=jn.int32))  # the mean of integers is a float, as in 1.8
    assert counter.dtype == jn.float32
    np.testing.assert_array_equal(counter.value, [1.5, 2.])


def test_reduce_does_nothing_without_reduce_function():
    tv = objax.TrainVar(jn.array([[1., 2.], [3., 4.]]))
    objax.TrainRef(tv).reduce(jn.zeros((5, 7)))
    np.testing.assert_array_equal(tv.value, [[1., 2.], [3., 4.]])
    key = objax.RandomState(3)
    before = np.asarray(key.value)
    key.reduce(jn.zeros((4, 2), jn.uint32))
    np.testing.assert_array_equal(key.value, before)


# V3 -------------------------------------------------------------------------------------------------------------

def test_failed_checked_assign_is_an_assertion_error():
    v = objax.TrainVar(jn.zeros(2))
    with pytest.raises(AssertionError):
        v.assign(jn.zeros(3))
    with pytest.raises(AssertionError, match='list'):
        v.assign([0, 1])
    with pytest.raises(ValueError):  # the project's ValueError contract holds too
        v.assign(jn.zeros(3))
    assert issubclass(objax.AssignmentError, ValueError) and issubclass(objax.AssignmentError, AssertionError)
    np.testing.assert_array_equal(v.value, [0., 0.])  # refused assigns change nothing
    v.assign(jn.ones(3), check=False)
    np.testing.assert_array_equal(v.value, [1., 1., 1.])


def test_assign_checks_shape_not_dtype():
    v = objax.TrainVar(jn.zeros(2))
    v.assign(jn.array([1, 2], dtype=jn.int32))
    assert v.dtype == jn.int32


def test_statevar_setter_checks_nothing():
    s = objax.StateVar(jn.array(0))
    s.value += 0.5
    assert float(s.value) == 0.5
    s.value = jn.zeros(3)
    assert s.shape == (3,)


def test_collection_assign_refusal_is_an_assertion_error():
    a, b = objax.TrainVar(jn.zeros(2)), objax.StateVar(jn.zeros(1))
    vc = objax.VarCollection({'a': a, 'b': b})
    with pytest.raises(AssertionError, match='b: .*shape'):
        vc.assign([jn.ones(2), jn.ones(2)])
    np.testing.assert_array_equal(a.value, [0., 0.])  # all or nothing


# V4 -------------------------------------------------------------------------------------------------------------

def test_round():
    x = jn.array([1.2, 2.4, 3.7, -4.5])
    v = objax.TrainVar(x)
    np.testing.assert_array_equal(round(v), round(x))
    np.testing.assert_array_equal(round(v), [1, 2, 4, -4])
    np.testing.assert_array_equal(v.__round__(ndigits=None), round(x))
    assert float(round(objax.StateVar(jn.array(2.345)), 1)) == pytest.approx(2.3)


# V5 -------------------------------------------------------------------------------------------------------------

def test_setitem_refuses_to_rebind_a_name():
    a = objax.TrainVar(jn.zeros(1))
    vc = objax.VarCollection({'a': a})
    with pytest.raises(ValueError, match="'a'"):
        vc['a'] = objax.TrainVar(jn.ones(1))
    assert vc['a'] is a
    vc['a'] = a  # the same variable again is fine
    vc['b'] = objax.TrainVar(jn.ones(1))
    assert list(vc) == [a, vc['b']]


# issue 11 item 12: no weak types ----------------------------------------------------------------------------------

def test_variables_never_hold_weak_typed_values():
    v = objax.TrainVar(0.0)
    assert v.value.dtype == jn.float32 and not v.value.weak_type
    s = objax.StateVar(jn.zeros(()))
    s.value = 1.0
    assert not s.value.weak_type
    s.assign(2.0)
    assert not s.value.weak_type
    v.assign(jn.asarray(3.0), check=False)
    assert not v.value.weak_type


def test_scalar_trainvar_optimizer_step_compiles_once():
    w = objax.TrainVar(0.0)
    traces = []

    def step(lr):
        traces.append(1)
        g = objax.Grad(lambda: (w.value - 3.) ** 2, objax.VarCollection({'w': w}))()
        w.assign(w.value - lr * g[0])

    jitted = objax.Jit(step, objax.VarCollection({'w': w}))
    for _ in range(3):
        jitted(jn.float32(0.1))
    assert len(traces) == 1
    assert not w.value.weak_type
