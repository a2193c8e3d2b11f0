"""Activations, re-exported jax functions and cross-device reductions."""

import inspect

import jax
import jax.numpy as jn
import numpy as np
import pytest
import scipy.special
from jax.sharding import Mesh, PartitionSpec

import objax
from objax import functional
from objax.functional import parallel

X = np.linspace(-4, 4, 17).astype(np.float32)


def test_relu_and_activations_numpy():
    x = jn.asarray(X)
    np.testing.assert_array_equal(np.asarray(functional.relu(x)), np.maximum(X, 0))
    np.testing.assert_allclose(np.asarray(functional.sigmoid(x)), scipy.special.expit(X), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(functional.swish(x)), X * scipy.special.expit(X), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(functional.softplus(x)), np.logaddexp(0, X), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(functional.log_sigmoid(x)), -np.logaddexp(0, -X), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(functional.tanh(x)), np.tanh(X), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(functional.elu(x)), np.where(X > 0, X, np.expm1(X)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(functional.celu(x, 2.)), np.where(X > 0, X, 2 * np.expm1(X / 2)),
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(functional.leaky_relu(x, 0.1)), np.where(X > 0, X, 0.1 * X), rtol=1e-6)
    selu = 1.0507009873554805 * np.where(X > 0, X, 1.6732632423543772 * np.expm1(X))
    np.testing.assert_allclose(np.asarray(functional.selu(x)), selu, rtol=1e-5)
    z = X.reshape(1, -1)
    np.testing.assert_allclose(np.asarray(functional.softmax(jn.asarray(z))), scipy.special.softmax(z, -1),
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(functional.log_softmax(jn.asarray(z))),
                               scipy.special.log_softmax(z, -1), rtol=1e-5)
    np.testing.assert_allclose(float(functional.logsumexp(x)), scipy.special.logsumexp(X), rtol=1e-6)


def test_reexports_are_the_jax_functions():
    assert functional.swish is jax.nn.silu
    assert functional.rsqrt is jax.lax.rsqrt
    assert functional.top_k is jax.lax.top_k
    assert functional.scan is jax.lax.scan
    assert functional.pad is jn.pad
    assert functional.tanh is jax.lax.tanh
    assert functional.stop_gradient is jax.lax.stop_gradient
    assert functional.dynamic_slice is jax.lax.dynamic_slice
    assert functional.one_hot is jax.nn.one_hot
    assert functional.logsumexp is jax.scipy.special.logsumexp
    for name in ('celu', 'elu', 'leaky_relu', 'log_sigmoid', 'log_softmax', 'selu', 'sigmoid', 'softmax', 'softplus'):
        assert getattr(functional, name) is getattr(jax.nn, name)


def test_module_layout_and_signatures():
    assert functional.loss.cross_entropy_logits is objax.functional.loss.cross_entropy_logits
    assert objax.functional.divergence.kl.__module__ == 'objax.functional.divergence'
    for name in functional.__all__:
        assert hasattr(functional, name), name
    assert str(inspect.signature(functional.max_pool_2d).parameters['padding'].default) == 'ConvPadding.VALID'
    assert inspect.signature(functional.interpolate).parameters['mode'].default is objax.Interpolate.BILINEAR
    assert inspect.signature(functional.divergence.kl).parameters['eps'].default == 7.62939453125e-06
    assert inspect.signature(parallel.pmean).parameters['axis_name'].default == 'device'
    assert list(inspect.signature(functional.loss.mean_squared_log_error).parameters) == ['y_true', 'y_pred',
                                                                                         'keep_axis']


def test_reexported_ops_behave():
    np.testing.assert_allclose(float(functional.rsqrt(jn.float32(4))), 0.5)
    v, i = functional.top_k(jn.asarray([3., 1., 4., 1., 5.]), 2)
    np.testing.assert_array_equal(np.asarray(v), [5, 4])
    np.testing.assert_array_equal(np.asarray(i), [4, 2])
    carry, ys = functional.scan(lambda c, x: (c + x, c), 0., jn.arange(4.))
    assert float(carry) == 6 and np.asarray(ys).tolist() == [0, 0, 1, 3]
    x = jn.arange(5.)
    g = jax.grad(lambda v: (functional.stop_gradient(v) * v).sum())(x)
    np.testing.assert_array_equal(np.asarray(g), np.arange(5.))


@pytest.mark.parametrize('name,ref', [('psum', np.sum), ('pmean', np.mean), ('pmax', np.max), ('pmin', np.min)])
def test_collectives_under_shard_map(name, ref):
    devices = jax.devices()
    assert len(devices) == 8
    mesh = Mesh(np.array(devices), ('device',))
    x = np.random.RandomState(0).randn(8, 3).astype(np.float32)
    fn = getattr(parallel, name)
    spec = PartitionSpec('device')
    out = jax.shard_map(lambda v: fn(v), mesh=mesh, in_specs=spec, out_specs=spec)(jn.asarray(x))
    expected = np.broadcast_to(ref(x, axis=0, keepdims=True), x.shape)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5)
    # A custom axis name.
    mesh2 = Mesh(np.array(devices), ('d',))
    out = jax.shard_map(lambda v: fn(v, axis_name='d'), mesh=mesh2, in_specs=PartitionSpec('d'),
                        out_specs=PartitionSpec('d'))(jn.asarray(x))
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5)


def test_collective_outside_mapped_axis_fails():
    with pytest.raises(NameError):
        parallel.psum(jn.ones(3))
