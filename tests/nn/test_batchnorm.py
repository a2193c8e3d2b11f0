"""BatchNorm and SyncedBatchNorm against numpy formulas, incl. running statistics and multi-device stats."""

import re

import jax
import jax.numpy as jn
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

import objax
from objax._core.pure import Pure
from objax.nn import (
    BatchNorm,
    BatchNorm0D,
    BatchNorm1D,
    BatchNorm2D,
    SyncedBatchNorm,
    SyncedBatchNorm0D,
    SyncedBatchNorm1D,
    SyncedBatchNorm2D,
)

RNG = np.random.default_rng(1)
LAYOUTS = [(BatchNorm0D, (6, 3), (0,)), (BatchNorm1D, (4, 3, 5), (0, 2)), (BatchNorm2D, (4, 3, 5, 2), (0, 2, 3))]


def _np_bn(x, mean, var, gamma, beta, eps):
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _randomize(bn):
    shape = bn.gamma.shape
    bn.gamma.assign(jn.asarray(RNG.uniform(0.5, 1.5, shape).astype(np.float32)))
    bn.beta.assign(jn.asarray(RNG.normal(size=shape).astype(np.float32)))
    return np.asarray(bn.gamma.value, np.float64), np.asarray(bn.beta.value, np.float64)


@pytest.mark.parametrize('cls,shape,redux', LAYOUTS)
def test_train_eval_and_running_stats(cls, shape, redux):
    momentum, eps = 0.9, 1e-3
    bn = cls(3, momentum=momentum, eps=eps)
    dims = tuple(1 if i != 1 else 3 for i in range(len(shape)))
    assert [k.split('.')[-1] for k in bn.vars().keys()] == ['running_mean', 'running_var', 'beta', 'gamma']
    assert all(v.shape == dims for v in bn.vars())
    assert isinstance(bn.running_mean, objax.StateVar) and isinstance(bn.gamma, objax.TrainVar)
    np.testing.assert_array_equal(bn.running_var.value, np.ones(dims))
    gamma, beta = _randomize(bn)
    run_mean, run_var = np.zeros(dims), np.ones(dims)
    for _ in range(3):
        x = RNG.normal(2.0, 3.0, size=shape).astype(np.float32)
        mean = x.astype(np.float64).mean(redux, keepdims=True)
        var = ((x - mean) ** 2).mean(redux, keepdims=True)
        np.testing.assert_allclose(bn(jn.asarray(x), training=True), _np_bn(x, mean, var, gamma, beta, eps),
                                   rtol=1e-4, atol=1e-4)
        run_mean = momentum * run_mean + (1 - momentum) * mean
        run_var = momentum * run_var + (1 - momentum) * var
        np.testing.assert_allclose(bn.running_mean.value, run_mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(bn.running_var.value, run_var, rtol=1e-5, atol=1e-5)
    x = RNG.normal(size=shape).astype(np.float32)
    np.testing.assert_allclose(bn(jn.asarray(x), training=False), _np_bn(x, run_mean, run_var, gamma, beta, eps),
                               rtol=1e-4, atol=1e-4)
    # Evaluation leaves the running statistics alone.
    np.testing.assert_allclose(bn.running_mean.value, run_mean, rtol=1e-5, atol=1e-5)


def test_defaults_generic_dims_and_repr():
    bn = BatchNorm2D(4)
    assert (bn.momentum, bn.eps) == (0.999, 1e-6)
    assert repr(bn) == 'objax.nn.BatchNorm2D(nin=4, momentum=0.999, eps=1e-06)'
    # A generic BatchNorm with per-position statistics: dims (1, 3, 5) normalizes over the batch only.
    g = BatchNorm((1, 3, 5), (0,), momentum=0.5)
    x = RNG.normal(size=(8, 3, 5)).astype(np.float32)
    mean, var = x.mean(0, keepdims=True), x.var(0, keepdims=True)
    np.testing.assert_allclose(g(jn.asarray(x), training=True), (x - mean) / np.sqrt(var + 1e-6),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(g.running_var.value, 0.5 + 0.5 * var, rtol=1e-5)
    assert repr(g) == 'objax.nn.BatchNorm(dims=(1, 3, 5), redux=(0,), momentum=0.5, eps=1e-06)'


def test_under_jit_matches_eager_and_updates_state():
    eager, jitted = BatchNorm2D(3, momentum=0.8), BatchNorm2D(3, momentum=0.8)
    step = objax.Jit(lambda x: jitted(x, training=True), jitted.vars())
    for _ in range(2):
        x = jn.asarray(RNG.normal(size=(4, 3, 3, 3)).astype(np.float32))
        np.testing.assert_allclose(step(x), eager(x, training=True), rtol=1e-5, atol=1e-5)
    for a, b in zip(eager.vars().tensors(), jitted.vars().tensors()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert not np.allclose(jitted.running_mean.value, 0)


def test_errors_name_the_numbers_and_change_nothing():
    bn = BatchNorm2D(8)
    before = [np.asarray(v) for v in bn.vars().tensors()]
    with pytest.raises(ValueError, match=r'8 channels.*has 4'):
        bn(jn.ones((2, 4, 3, 3)), training=True)
    with pytest.raises(ValueError, match='4 dimensions'):
        bn(jn.ones((2, 8)), training=True)
    for a, b in zip(before, bn.vars().tensors()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match='momentum'):
        BatchNorm0D(3, momentum=1.5)
    with pytest.raises(ValueError, match='nin'):
        BatchNorm1D(0)



def test_any_redux_at_construction_checked_at_call():
    # Objax 1.8 builds (and prints) a BatchNorm with any redux; the axes are checked against the input.
    bn = BatchNorm((3, 4, 5), (1, 7))
    assert repr(bn) == 'objax.nn.BatchNorm(dims=(3, 4, 5), redux=(1, 7), momentum=0.999, eps=1e-06)'
    before = [np.asarray(v) for v in bn.vars().tensors()]
    with pytest.raises(ValueError, match=r'BatchNorm: redux must list axes.*\(3, 4, 5\).*redux=\(1, 7\)'):
        bn(jn.ones((3, 4, 5)), training=True)
    with pytest.raises(ValueError, match='twice'):
        BatchNorm((1, 3), (0, -2))(jn.ones((2, 3)), training=True)
    for a, b in zip(before, bn.vars().tensors()):
        np.testing.assert_array_equal(a, b)
    # Evaluation does not use redux; negative axes are accepted in training.
    np.testing.assert_array_equal(bn(jn.zeros((3, 4, 5)), training=False), np.zeros((3, 4, 5)))
    neg = BatchNorm((1, 3), (-2,), momentum=0.)
    x = RNG.normal(size=(6, 3)).astype(np.float32)
    neg(jn.asarray(x), training=True)
    np.testing.assert_allclose(neg.running_mean.value, x.mean(0, keepdims=True), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('cls,shape', [(BatchNorm0D, (0, 3)), (BatchNorm2D, (0, 3, 4, 4)),
                                       (BatchNorm2D, (2, 3, 0, 4)), (SyncedBatchNorm0D, (0, 3)),
                                       (SyncedBatchNorm2D, (0, 3, 2, 2))])
def test_empty_batch_in_training_raises_and_keeps_running_statistics(cls, shape):
    # An empty batch is refused: the batch mean of 0 rows is NaN and would poison running_mean/var for good.
    bn = cls(3, momentum=0.5)
    bn(jn.asarray(RNG.normal(size=tuple(s or 4 for s in shape)).astype(np.float32)), training=True)
    before = [np.asarray(v) for v in bn.vars().tensors()]
    with pytest.raises(ValueError, match=rf'{cls.__name__}: .*empty batch.*{re.escape(str(shape))}.*left unchanged'):
        bn(jn.zeros(shape), training=True)
    with pytest.raises(ValueError, match='empty batch'):
        objax.Jit(lambda x: bn(x, training=True), bn.vars())(jn.zeros(shape))
    for a, b in zip(before, bn.vars().tensors()):
        np.testing.assert_array_equal(a, b)
    assert np.isfinite(before[0]).all()
    # Evaluation of an empty batch is fine: an empty output, nothing changed.
    assert bn(jn.zeros(shape), training=False).shape == shape


@pytest.mark.parametrize('cls', [BatchNorm0D, SyncedBatchNorm0D])
def test_empty_batch_under_parallel_raises_and_keeps_running_statistics(cls):
    model = objax.nn.Sequential([objax.nn.Linear(3, 4), cls(4)])
    step = objax.Parallel(lambda x: model(x, training=True), model.vars())
    step(jn.asarray(RNG.normal(size=(16, 3)).astype(np.float32)))
    before = [np.asarray(v) for v in model.vars().tensors()]
    with pytest.raises(ValueError, match=rf'{cls.__name__}: .*empty batch'):
        step(jn.zeros((0, 3)))
    for a, b in zip(before, model.vars().tensors()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('synced,plain,shape', [(SyncedBatchNorm0D, BatchNorm0D, (6, 3)),
                                                (SyncedBatchNorm1D, BatchNorm1D, (4, 3, 5)),
                                                (SyncedBatchNorm2D, BatchNorm2D, (4, 3, 5, 2))])
def test_synced_without_devices_equals_batchnorm_exactly(synced, plain, shape):
    a, b = synced(3, momentum=0.7), plain(3, momentum=0.7)
    assert isinstance(a, SyncedBatchNorm) and isinstance(a, BatchNorm)
    x = jn.asarray(RNG.normal(size=shape).astype(np.float32))
    np.testing.assert_array_equal(a(x, training=True), b(x, training=True))
    jit_a = objax.Jit(lambda x: a(x, training=True), a.vars())
    jit_b = objax.Jit(lambda x: b(x, training=True), b.vars())
    np.testing.assert_array_equal(jit_a(x), jit_b(x))
    for u, v in zip(a.vars().tensors(), b.vars().tensors()):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(a(x, training=False), b(x, training=False))


def test_synced_under_vectorize_equals_batchnorm():
    a, b = SyncedBatchNorm0D(3), BatchNorm0D(3)
    x = jn.asarray(RNG.normal(size=(4, 5, 3)).astype(np.float32))
    out_a = objax.Vectorize(lambda x: a(x, training=True), a.vars())(x)
    out_b = objax.Vectorize(lambda x: b(x, training=True), b.vars())(x)
    np.testing.assert_array_equal(out_a, out_b)
    np.testing.assert_array_equal(a.running_mean.value, b.running_mean.value)


def test_synced_batch_norm_update_flag():
    bn = SyncedBatchNorm2D(2, momentum=0.5)
    x = jn.asarray(RNG.normal(1.0, 1.0, size=(3, 2, 2, 2)).astype(np.float32))
    bn(x, training=True, batch_norm_update=False)
    np.testing.assert_array_equal(bn.running_mean.value, np.zeros((1, 2, 1, 1)))
    bn(x, training=True)
    np.testing.assert_allclose(bn.running_mean.value, 0.5 * np.asarray(x).mean((0, 2, 3), keepdims=True),
                               rtol=1e-5)


def test_synced_across_8_devices_uses_global_batch_statistics():
    devices = jax.devices()
    assert len(devices) >= 8
    mesh = Mesh(np.array(devices[:8]), ('device',))
    bn = SyncedBatchNorm2D(3, momentum=0.9, eps=1e-4)
    gamma, beta = _randomize(bn)
    pure = Pure(bn, bn.vars())
    storage = pure.variables

    def per_device(values, x, update):
        y, changes = pure(values, x, training=True, batch_norm_update=update)
        return y, [changes.get(i, x) for i, x in enumerate(values)]

    # Shards with very different statistics: per-device stats would differ a lot from the global ones.
    x = RNG.normal(size=(16, 3, 4, 4)).astype(np.float32) * np.repeat(np.arange(1, 9), 2)[:, None, None, None]
    x += np.repeat(np.arange(8), 2)[:, None, None, None]
    values = [v.value for v in storage]
    for update in (True, False):
        run = jax.jit(jax.shard_map(lambda v, x, update=update: per_device(v, x, update), mesh=mesh,
                                    in_specs=(P(), P('device')), out_specs=(P('device'), P())))
        y, new_values = run(values, jn.asarray(x))
        mean = x.astype(np.float64).mean((0, 2, 3), keepdims=True)
        var = ((x - mean) ** 2).mean((0, 2, 3), keepdims=True)
        np.testing.assert_allclose(y, _np_bn(x, mean, var, gamma, beta, 1e-4), rtol=1e-4, atol=1e-4)
        expect_mean = 0.1 * mean if update else np.zeros_like(mean)
        expect_var = 0.9 + 0.1 * var if update else np.ones_like(var)
        np.testing.assert_allclose(new_values[0], expect_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(new_values[1], expect_var, rtol=1e-5, atol=1e-6)
    # The plain BatchNorm in the same setting only sees its shard: its outputs differ from global stats.
    plain = BatchNorm2D(3)
    plain_pure = Pure(plain, plain.vars())
    plain_storage = plain_pure.variables

    def plain_device(values, x):
        return plain_pure(values, x, training=True)[0]

    y_plain = jax.jit(jax.shard_map(plain_device, mesh=mesh, in_specs=(P(), P('device')), out_specs=P('device'),
                                    check_vma=False))([v.value for v in plain_storage], jn.asarray(x))
    mean = x.mean((0, 2, 3), keepdims=True)
    assert not np.allclose(y_plain, (x - mean) / x.std((0, 2, 3), keepdims=True), atol=1e-2)


@pytest.mark.parametrize('cls', [BatchNorm0D, BatchNorm1D, BatchNorm2D, SyncedBatchNorm0D, SyncedBatchNorm1D,
                                 SyncedBatchNorm2D])
def test_channel_variant_reprs(cls):
    assert repr(cls(8)) == f'objax.nn.{cls.__name__}(nin=8, momentum=0.999, eps=1e-06)'
    assert repr(cls(3, momentum=0.9, eps=1e-5)) == f'objax.nn.{cls.__name__}(nin=3, momentum=0.9, eps=1e-05)'


def test_generic_reprs():
    assert repr(SyncedBatchNorm((1, 4), (0,))) == \
        'objax.nn.SyncedBatchNorm(dims=(1, 4), redux=(0,), momentum=0.999, eps=1e-06)'
    assert repr(BatchNorm([1, 2, 1], [0, 2], momentum=0.5)) == \
        'objax.nn.BatchNorm(dims=(1, 2, 1), redux=(0, 2), momentum=0.5, eps=1e-06)'


def test_low_precision_input_normalized_in_float32():
    """A bfloat16 or float16 batch is normalized (and its statistics computed) in float32; the output has the
    input's dtype and the running statistics stay float32."""
    for dtype in (jn.bfloat16, jn.float16):
        bn = BatchNorm2D(3, momentum=0.5)
        x = jn.asarray(RNG.normal(size=(4, 3, 2, 2)) * 3 + 1, dtype)
        xf = np.asarray(x, np.float64)
        mean, var = xf.mean((0, 2, 3), keepdims=True), xf.var((0, 2, 3), keepdims=True)
        y = bn(x, training=True)
        assert y.dtype == dtype and bn.running_mean.value.dtype == jn.float32
        np.testing.assert_allclose(np.asarray(y, np.float64), (xf - mean) / np.sqrt(var + bn.eps), rtol=1e-2,
                                   atol=1e-2)
        np.testing.assert_allclose(bn.running_mean.value, 0.5 * mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.running_var.value, 0.5 + 0.5 * var, rtol=1e-5)
        assert bn(x, training=False).dtype == dtype
    # float32 and float64 (gamma's) promotion rules are unchanged.
    assert BatchNorm0D(2)(jn.ones((3, 2)), training=True).dtype == jn.float32
