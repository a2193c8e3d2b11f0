"""BatchNorm inside objax.Parallel (per-device statistics, running statistics merged by their reduce) and
SyncedBatchNorm (statistics of the whole global batch), against numpy."""

import jax.numpy as jn
import numpy as np
import pytest

import objax

NDEV, EPS = 8, 1e-6


def _normalize(x, mean, var):
    return (x - mean) / np.sqrt(var + EPS)


def test_batchnorm_per_device_stats_and_averaged_running_stats():
    bn = objax.nn.BatchNorm0D(4, momentum=0.9)
    x = np.random.RandomState(0).normal(2., 3., size=(32, 4)).astype(np.float64)
    par = objax.Parallel(lambda v: bn(v, training=True), bn.vars())
    y = np.asarray(par(x.astype(np.float32)))
    shards = x.reshape(NDEV, 4, 4)
    means, variances = shards.mean(1, keepdims=True), shards.var(1, keepdims=True)
    np.testing.assert_allclose(y, _normalize(shards, means, variances).reshape(32, 4), rtol=1e-4, atol=1e-4)
    # Each device updated its own running statistics; reduce_mean merged them after the call.
    np.testing.assert_allclose(np.asarray(bn.running_mean.value), 0.1 * means.mean(0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(bn.running_var.value), 0.9 + 0.1 * variances.mean(0), rtol=1e-5)
    assert bn.running_mean.value.shape == (1, 4)
    # Evaluation uses the merged running statistics on every device.
    y_eval = np.asarray(objax.Parallel(lambda v: bn(v, training=False), bn.vars())(x.astype(np.float32)))
    np.testing.assert_allclose(y_eval, _normalize(x, 0.1 * means.mean(0), 0.9 + 0.1 * variances.mean(0)),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('cls,shape,redux', [(objax.nn.SyncedBatchNorm0D, (32, 3), (0,)),
                                             (objax.nn.SyncedBatchNorm1D, (16, 3, 5), (0, 2)),
                                             (objax.nn.SyncedBatchNorm2D, (16, 3, 4, 2), (0, 2, 3))])
def test_synced_batchnorm_uses_global_statistics(cls, shape, redux):
    bn = cls(3, momentum=0.8)
    x = np.random.RandomState(1).normal(-1., 2., size=shape)
    x[:shape[0] // 2] += 5.  # devices see very different data: per-device statistics would be far off
    par = objax.Parallel(lambda v: bn(v, training=True), bn.vars())
    y = np.asarray(par(x.astype(np.float32)))
    mean, var = x.mean(redux, keepdims=True), x.var(redux, keepdims=True)
    np.testing.assert_allclose(y, _normalize(x, mean, var), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(bn.running_mean.value), 0.2 * mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(bn.running_var.value), 0.8 + 0.2 * var, rtol=1e-4)
    # batch_norm_update=False normalizes with the batch statistics but leaves the running ones alone.
    saved = np.asarray(bn.running_mean.value)
    par_no_update = objax.Parallel(lambda v: bn(v, training=True, batch_norm_update=False), bn.vars())
    np.testing.assert_allclose(np.asarray(par_no_update(x.astype(np.float32))), y, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(bn.running_mean.value), saved)


def test_synced_batchnorm_training_step_matches_single_device():
    """Gradients through synced statistics: data-parallel training equals full-batch training."""
    from objax.functional.parallel import pmean

    def build():
        model = objax.nn.Sequential([objax.nn.Linear(3, 4), objax.nn.SyncedBatchNorm0D(4, momentum=0.5)])
        model[0].w.assign(jn.asarray(np.arange(12.).reshape(3, 4) / 10, jn.float32))
        return model

    x = np.random.RandomState(2).normal(size=(16, 3)).astype(np.float32)
    models = [build(), build()]
    steps = []
    for model, parallel in zip(models, (True, False)):
        gv = objax.GradValues(lambda v, m=model: (m(v, training=True) ** 3).mean(), model.vars())
        opt = objax.optimizer.SGD(model.vars())

        def op(v, gv=gv, opt=opt, parallel=parallel):
            grads, values = gv(v)
            opt(0.1, [pmean(g) for g in grads] if parallel else grads)
            return values[0]

        vc = gv.vars() + opt.vars()
        steps.append(objax.Parallel(op, vc, reduce=lambda v: v.mean(0)) if parallel else objax.Jit(op, vc))
    for _ in range(3):
        for step in steps:
            step(x)
    for a, b in zip(*(m.vars().tensors() for m in models)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
