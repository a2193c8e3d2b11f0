"""Variables: read-only TrainVar, checked assign, TrainRef write-through, RandomState, array behaviour."""

import jax
import jax.numpy as jn
import numpy as np
import pytest

import objax


def test_trainvar_value_read_only_names_variable():
    class Net(objax.Module):
        def __init__(self):
            self.w = objax.TrainVar(jn.ones(3))

    net = Net()
    net.vars()  # naming happens when the variable is collected
    with pytest.raises(ValueError, match=r'TrainVar "\(Net\)\.w"\.value is read-only'):
        net.w.value = jn.zeros(3)
    np.testing.assert_array_equal(net.w.value, np.ones(3))


@pytest.mark.parametrize('cls', [objax.TrainVar, objax.StateVar])
def test_assign_checks_shape_only(cls):
    v = cls(jn.zeros((2, 3)))
    with pytest.raises(ValueError, match=r'shape \(3, 2\) does not match the variable shape \(2, 3\)'):
        v.assign(jn.zeros((3, 2)))
    np.testing.assert_array_equal(v.value, np.zeros((2, 3)))  # unchanged after the refusal
    v.assign(jn.ones((2, 3)))
    np.testing.assert_array_equal(v.value, np.ones((2, 3)))
    v.assign(jn.full((2, 3), 7, dtype=jn.int32))  # Objax 1.8 checks the shape only, not the dtype
    assert v.dtype == jn.int32
    v.assign(jn.ones((3, 2)), check=False)  # explicit opt-out
    assert v.shape == (3, 2)


def test_statevar_setter_checks_nothing():
    v = objax.StateVar(jn.zeros(2))
    v.value = jn.zeros(3)
    assert v.shape == (3,)


def test_assign_rejects_non_arrays():
    v = objax.StateVar(jn.zeros(2))
    with pytest.raises(TypeError, match='Cannot assign a object'):
        v.assign(object())


def test_trainref_writes_through_and_requires_trainvar():
    t = objax.TrainVar(jn.arange(3.))
    r = objax.TrainRef(t)
    r.value = r.value * 2
    np.testing.assert_array_equal(t.value, [0., 2., 4.])
    with pytest.raises(ValueError, match='shape'):
        r.assign(jn.zeros(4))
    np.testing.assert_array_equal(t.value, [0., 2., 4.])
    with pytest.raises(TypeError, match='TrainRef\\(ref\\) expects a TrainVar'):
        objax.TrainRef(objax.StateVar(jn.zeros(1)))


def test_reduce():
    v = objax.StateVar(jn.zeros(2))
    v.reduce(jn.array([[1., 2.], [3., 4.]]))
    np.testing.assert_allclose(v.value, [2., 3.])
    r = objax.RandomState(0)
    r.reduce(jn.array([[1, 2], [3, 4]], dtype=jn.uint32))  # a RandomState has no reduce (Objax 1.8)
    np.testing.assert_array_equal(r.value, [0, 0])
    t = objax.TrainVar(jn.zeros(2), reduce=lambda x: x.max(0))
    t.reduce(jn.array([[1., 5.], [3., 4.]]))
    np.testing.assert_allclose(t.value, [3., 5.])


def test_random_state_split_matches_classic_threefry():
    v = objax.RandomState(7)
    keys = v.split(3)
    with jax.threefry_partitionable(False):
        expected = jax.random.split(jax.random.PRNGKey(7), 4)
    np.testing.assert_array_equal(keys, expected[1:])
    np.testing.assert_array_equal(v.value, expected[0])
    v.seed(7)
    np.testing.assert_array_equal(v.value, jax.random.PRNGKey(7))
    assert jax.config.jax_threefry_partitionable is True  # the user's configuration is untouched


def test_variables_in_jax_numpy_and_operators():
    wv = np.arange(6, dtype=np.float32).reshape(2, 3)
    w = objax.TrainVar(jn.asarray(wv))
    x = np.ones((4, 2), np.float32)
    np.testing.assert_allclose(jn.dot(x, w), x @ wv)
    np.testing.assert_allclose(x @ w, x @ wv)
    np.testing.assert_allclose(jn.asarray(x) @ w, x @ wv)
    np.testing.assert_allclose(w + 1, wv + 1)
    np.testing.assert_allclose(1 - w, 1 - wv)
    np.testing.assert_allclose(w * w, wv * wv)
    np.testing.assert_allclose(w / 2, wv / 2)
    np.testing.assert_allclose(2 ** w, 2 ** wv, rtol=1e-6)
    np.testing.assert_allclose(-w, -wv)
    np.testing.assert_allclose(jn.linalg.norm(w), np.linalg.norm(wv), rtol=1e-6)
    np.testing.assert_allclose(jn.exp(w), np.exp(wv), rtol=1e-6)
    np.testing.assert_allclose(jn.sum(w), wv.sum())
    np.testing.assert_allclose(jn.concatenate([w, w]), np.concatenate([wv, wv]))
    np.testing.assert_allclose(jn.einsum('ij,ij->i', w, w), np.einsum('ij,ij->i', wv, wv))
    np.testing.assert_allclose(w[1, 2], wv[1, 2])
    np.testing.assert_allclose(w[:, 1:], wv[:, 1:])
    assert (w.shape, w.dtype, w.ndim, w.size, len(w)) == ((2, 3), jn.float32, 2, 6, 2)
    np.testing.assert_allclose(w.sum(axis=0), wv.sum(0))
    np.testing.assert_allclose(w.reshape(3, 2), wv.reshape(3, 2))
    np.testing.assert_allclose(w.T, wv.T)
    np.testing.assert_array_equal(w > 2, wv > 2)
    np.testing.assert_array_equal(w == 2, wv == 2)
    np.testing.assert_allclose(np.asarray(w), wv)
    assert isinstance(np.ones(3, np.float32) + objax.StateVar(jn.ones(3)), jax.Array)
    assert float(objax.StateVar(jn.array(2.5))) == 2.5
    # Variables stay usable as dict keys (identity hash) despite element-wise ==.
    assert {w: 1}[w] == 1


def test_variables_in_jitted_user_functions():
    w = objax.TrainVar(jn.ones(3))
    np.testing.assert_allclose(jax.jit(lambda a, b: a * b)(w, 2.0), [2., 2., 2.])
    np.testing.assert_allclose(jax.jit(lambda a: jn.tanh(a).sum())(w), 3 * np.tanh(1.), rtol=1e-6)


def test_repr_is_useful():
    class Net(objax.Module):
        def __init__(self):
            self.w = objax.TrainVar(jn.zeros((10, 10)))
            self.s = objax.StateVar(jn.arange(3))

    net = Net()
    net.vars()
    assert repr(net.w) == f'objax.TrainVar({jn.zeros((10, 10))!r}, reduce=reduce_mean)'
    assert repr(net.s) == 'objax.StateVar(Array([0, 1, 2], dtype=int32), reduce=reduce_mean)'
    assert repr(objax.TrainRef(net.w)) == f'objax.TrainRef(ref={net.w!r})'


def test_unknown_attribute_error_is_clear():
    v = objax.StateVar(jn.zeros(2))
    with pytest.raises(AttributeError, match="StateVar has no attribute 'nonexistent'"):
        _ = v.nonexistent
