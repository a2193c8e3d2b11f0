"""objax.Parallel inside `with vc.replicate():` (where objax gives Objax 1.8's semantics) on 8 CPU devices:
values stacked per device, per-device training against numpy, per-device RandomState keys, reduce at exit (shape and
dtype may change), errors that change nothing."""

import jax
import jax.numpy as jn
import numpy as np
import pytest
from jax.sharding import PartitionSpec

import objax
from objax.functional.parallel import pmean

NDEV = 8


def _linear(seed=0):
    model = objax.nn.Linear(3, 2)
    rng = np.random.RandomState(seed)
    model.w.assign(jn.asarray(rng.normal(size=(3, 2)).astype(np.float32)))
    model.b.assign(jn.asarray(rng.normal(size=(2,)).astype(np.float32)))
    return model


def _data(n=32, seed=1):
    rng = np.random.RandomState(seed)
    return rng.normal(size=(n, 3)).astype(np.float32), rng.normal(size=(n, 2)).astype(np.float32)


def _numpy_momentum_steps(w, b, x, y, lr, momentum, steps):
    """Momentum SGD on mean squared error of x @ w + b, in float64 (closed-form gradients)."""
    w, b = np.array(w, np.float64), np.array(b, np.float64)
    mw, mb = np.zeros_like(w), np.zeros_like(b)
    for _ in range(steps):
        r = x @ w + b - y
        gw, gb = 2 * x.T @ r / r.size, 2 * r.sum(0) / r.size
        mw, mb = gw + momentum * mw, gb + momentum * mb
        w, b = w - lr * mw, b - lr * mb
    return w, b, mw, mb


def _step(model, average: bool):
    gv = objax.GradValues(lambda x, y: ((model(x) - y) ** 2).mean(), model.vars())
    opt = objax.optimizer.Momentum(model.vars(), momentum=0.9)

    def train_op(x, y):
        grads, values = gv(x, y)
        opt(0.1, [pmean(g) for g in grads] if average else grads)
        return values[0]

    vc = gv.vars() + opt.vars()
    return objax.Parallel(train_op, vc, reduce=lambda v: v), vc, opt


def test_values_stacked_one_row_per_device_and_reduced_at_exit():
    model = _linear()
    w0 = np.asarray(model.w.value)
    vc = model.vars()
    with vc.replicate():
        value = model.w.value
        assert value.shape == (NDEV, 3, 2)
        assert value.sharding.spec == PartitionSpec('device')
        shards = value.addressable_shards
        assert len(shards) == NDEV and {s.data.shape for s in shards} == {(1, 3, 2)}  # one copy per device
        assert {s.device for s in shards} == set(jax.devices())
        np.testing.assert_array_equal(np.asarray(value), np.broadcast_to(w0, (NDEV, 3, 2)))
    assert model.w.value.shape == (3, 2) and len(model.w.value.sharding.device_set) == 1
    np.testing.assert_array_equal(np.asarray(model.w.value), w0)


def test_per_device_training_without_pmean_diverges_then_averages():
    x, y = _data()
    model = _linear()
    w0, b0 = np.asarray(model.w.value), np.asarray(model.b.value)
    step, vc, opt = _step(model, average=False)
    xs, ys = x.reshape(NDEV, 4, 3), y.reshape(NDEV, 4, 2)
    ref = [_numpy_momentum_steps(w0, b0, xs[d], ys[d], 0.1, 0.9, 3) for d in range(NDEV)]
    with vc.replicate():
        for _ in range(3):
            losses = step(x, y)
        assert losses.shape == (NDEV,)
        w, b = np.asarray(model.w.value), np.asarray(model.b.value)
        for d in range(NDEV):  # each device trained on its own rows only, from the same start
            np.testing.assert_allclose(w[d], ref[d][0], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(b[d], ref[d][1], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(np.asarray(opt.m[0].value)[d], ref[d][3], rtol=1e-4, atol=1e-5)  # b's
            np.testing.assert_allclose(np.asarray(opt.m[1].value)[d], ref[d][2], rtol=1e-4, atol=1e-5)  # w's
            # The returned losses are each device's loss before its third step.
            w2, b2, _, _ = _numpy_momentum_steps(w0, b0, xs[d], ys[d], 0.1, 0.9, 2)
            np.testing.assert_allclose(float(losses[d]), ((xs[d] @ w2 + b2 - ys[d]) ** 2).mean(), rtol=1e-4)
        assert np.abs(w[0] - w[1]).max() > 1e-2  # the copies really diverged
    # At exit each variable is its reduce (mean) of the per-device values.
    np.testing.assert_allclose(np.asarray(model.w.value), np.mean([r[0] for r in ref], 0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(model.b.value), np.mean([r[1] for r in ref], 0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(opt.m[1].value), np.mean([r[2] for r in ref], 0), rtol=1e-4, atol=1e-5)
    assert model.w.value.shape == (3, 2)


def test_per_device_training_with_pmean_stays_equal_to_full_batch():
    x, y = _data()
    model = _linear()
    w0, b0 = np.asarray(model.w.value), np.asarray(model.b.value)
    step, vc, _ = _step(model, average=True)
    w_ref, b_ref, _, _ = _numpy_momentum_steps(w0, b0, x, y, 0.1, 0.9, 4)
    with vc.replicate():
        for _ in range(4):
            step(x, y)
        w = np.asarray(model.w.value)
        for d in range(NDEV):
            np.testing.assert_allclose(w[d], w_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(model.w.value), w_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(model.b.value), b_ref, rtol=1e-4, atol=1e-5)


def test_batchnorm_statistics_per_device_then_averaged_at_exit():
    bn = objax.nn.BatchNorm0D(4, momentum=0.9)
    peak = objax.StateVar(jn.zeros(4), reduce=lambda v: v.max(0))  # a non-linear reduce shows when merging happens

    def f(v):
        out = bn(v, training=True)
        peak.value = jn.maximum(peak.value, v.mean(0))
        return out

    vc = bn.vars() + objax.VarCollection({'peak': peak})
    par = objax.Parallel(f, vc)
    rng = np.random.RandomState(0)
    batches = [rng.normal(2., 3., size=(32, 4)).astype(np.float64) for _ in range(2)]
    mean_d, var_d, peak_d = np.zeros((NDEV, 1, 4)), np.ones((NDEV, 1, 4)), np.zeros((NDEV, 4))
    with vc.replicate():
        for x in batches:
            y = np.asarray(par(x.astype(np.float32)))
            shards = x.reshape(NDEV, 4, 4)
            m, v = shards.mean(1, keepdims=True), shards.var(1, keepdims=True)
            np.testing.assert_allclose(y, ((shards - m) / np.sqrt(v + 1e-6)).reshape(32, 4), rtol=1e-4, atol=1e-4)
            mean_d, var_d = 0.9 * mean_d + 0.1 * m, 0.9 * var_d + 0.1 * v
            peak_d = np.maximum(peak_d, shards.mean(1))
            np.testing.assert_allclose(np.asarray(bn.running_mean.value), mean_d, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(np.asarray(bn.running_var.value), var_d, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(bn.running_mean.value), mean_d.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(bn.running_var.value), var_d.mean(0), rtol=1e-5)
    # Max of the per-device running maxima (merging after every call would give the same here, so also check
    # it differs from the mean the default reduce would have given).
    np.testing.assert_allclose(np.asarray(peak.value), peak_d.max(0), rtol=1e-6)
    assert np.abs(peak_d.max(0) - peak_d.mean(0)).max() > 0.1


def test_reduce_may_change_shape_and_dtype():
    total = objax.StateVar(jn.zeros(2), reduce=lambda v: v.sum(0))
    stack = objax.StateVar(jn.zeros(2), reduce=jn.stack)
    count = objax.StateVar(jn.array(0))  # int32, averaged by the default reduce: becomes a float as in 1.8
    keep = objax.StateVar(jn.zeros(2), reduce=None)  # no reduce: the stacked value stays, as in 1.8

    def f(v):
        total.value = total.value + v.sum(0)
        stack.value = stack.value + v.sum(0)
        count.value = count.value + jn.asarray(v[0, 0] > 0, jn.int32) * 3
        keep.value = keep.value + 1
        return v

    vc = objax.VarCollection({'total': total, 'stack': stack, 'count': count, 'keep': keep})
    x = np.arange(32.).reshape(16, 2).astype(np.float32) - 10
    with vc.replicate():
        objax.Parallel(f, vc)(x)
    per_device = x.reshape(NDEV, 2, 2).sum(1)
    np.testing.assert_allclose(np.asarray(total.value), per_device.sum(0))
    assert total.value.shape == (2,)
    np.testing.assert_allclose(np.asarray(stack.value), per_device)
    assert stack.value.shape == (NDEV, 2)
    positive = (x.reshape(NDEV, 2, 2)[:, 0, 0] > 0).astype(np.float64) * 3
    assert count.value.shape == () and jn.issubdtype(count.value.dtype, jn.floating)
    np.testing.assert_allclose(float(count.value), positive.mean())
    np.testing.assert_array_equal(np.asarray(keep.value), np.ones((NDEV, 2)))


def test_random_state_split_per_device_on_entry():
    gen = objax.random.Generator(42)
    drop = objax.nn.Dropout(0.5, generator=gen)
    par = objax.Parallel(lambda v: drop(v, training=True), drop.vars())
    x = np.arange(1., 1 + NDEV * 2 * 16, dtype=np.float32).reshape(NDEV * 2, 16)
    with jax.threefry_partitionable(False):
        keys = np.asarray(jax.random.split(jax.random.PRNGKey(42), NDEV + 1))
    with drop.vars().replicate():
        np.testing.assert_array_equal(np.asarray(gen.key.value), keys[1:])
        first = np.asarray(par(x))
        second = np.asarray(par(x))
        after = np.asarray(gen.key.value)
    # Reference: each device's rows dropped eagerly with that device's own key, twice.
    for d in range(NDEV):
        ref_gen = objax.random.Generator(0)
        ref_gen.key.assign(jn.asarray(keys[1 + d]))
        ref = objax.nn.Dropout(0.5, generator=ref_gen)
        rows = x[2 * d:2 * d + 2]
        np.testing.assert_array_equal(first[2 * d:2 * d + 2], np.asarray(ref(rows, training=True)))
        np.testing.assert_array_equal(second[2 * d:2 * d + 2], np.asarray(ref(rows, training=True)))
        np.testing.assert_array_equal(after[d], np.asarray(ref_gen.key.value))
    assert len({first[2 * d:2 * d + 2].tobytes() for d in range(NDEV)}) == NDEV
    # At exit the key is the one left by the split on entry (as Objax 1.8).
    np.testing.assert_array_equal(np.asarray(gen.key.value), keys[0])


def test_variables_outside_the_block_are_merged_per_call():
    x, y = _data()
    model = _linear()
    w0, b0 = np.asarray(model.w.value), np.asarray(model.b.value)
    step, vc, opt = _step(model, average=False)
    xs, ys = x.reshape(NDEV, 4, 3), y.reshape(NDEV, 4, 2)
    with model.vars().replicate():  # the optimizer's momentum is not in the block
        step(x, y)
        assert opt.m[1].value.shape == (3, 2)  # merged (mean over devices) after the call
    one = [_numpy_momentum_steps(w0, b0, xs[d], ys[d], 0.1, 0.9, 1) for d in range(NDEV)]
    np.testing.assert_allclose(np.asarray(opt.m[1].value), np.mean([r[2] for r in one], 0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(model.w.value), np.mean([r[0] for r in one], 0), rtol=1e-4, atol=1e-5)


def test_block_exit_on_exception_still_reduces():
    model = _linear()
    step, vc, _ = _step(model, average=True)
    x, y = _data()
    shapes = [v.value.shape for v in vc]
    w_ref, _, _, _ = _numpy_momentum_steps(model.w.value, model.b.value, x, y, 0.1, 0.9, 1)
    with pytest.raises(RuntimeError, match='user error'):
        with vc.replicate():
            step(x, y)
            raise RuntimeError('user error')
    assert [v.value.shape for v in vc] == shapes
    np.testing.assert_allclose(np.asarray(model.w.value), w_ref, rtol=1e-4, atol=1e-5)


def test_traced_once_across_blocks_and_calls():
    traces = []
    model = _linear()

    def f(v):
        traces.append(1)
        return model(v)

    par = objax.Parallel(f, model.vars())
    x, _ = _data()
    expected = x @ np.asarray(model.w.value) + np.asarray(model.b.value)
    for _ in range(2):
        with model.vars().replicate():
            for _ in range(2):
                np.testing.assert_allclose(np.asarray(par(x)), expected, rtol=1e-5, atol=1e-5)
    assert len(traces) == 1


def test_nested_block_refused_and_nothing_changed():
    model = _linear()
    vc = model.vars()
    with vc.replicate():
        before = np.asarray(model.w.value)
        with pytest.raises(ValueError, match=r'already stacked per device.*enclosing replicate\(\)'):
            with objax.VarCollection({'w': model.w}).replicate():
                pass
        np.testing.assert_array_equal(np.asarray(model.w.value), before)
    assert model.w.value.shape == (3, 2)


def test_failing_reduce_at_exit_keeps_stacked_values():
    bad = objax.StateVar(jn.zeros(2), reduce=lambda v: v.reshape(7, -1))
    good = objax.StateVar(jn.ones(2))
    vc = objax.VarCollection({'bad': bad, 'good': good})
    with pytest.raises(ValueError, match=r'(?s)no variable was reduced.*"bad" \(StateVar\): TypeError'):
        with vc.replicate():
            pass
    assert bad.value.shape == (NDEV, 2) and good.value.shape == (NDEV, 2)
    # The variables are no longer treated as stacked: a new block stacks them again.
    bad._reduce = objax.reduce_mean
    with vc.replicate():
        assert good.value.shape == (NDEV, NDEV, 2)


def test_stacked_variable_reassigned_with_wrong_shape_is_refused():
    s = objax.StateVar(jn.zeros(3))
    par = objax.Parallel(lambda v: v + s.value, objax.VarCollection({'s': s}))
    with objax.VarCollection({'s': s}).replicate():
        s.value = jn.ones(3)  # unchecked setter: drops the per-device axis
        with pytest.raises(ValueError, match=r'"s".*stacked per device.*shape \(3,\).*\(8, \.\.\.\)'):
            par(np.ones((8, 3), np.float32))
        np.testing.assert_array_equal(np.asarray(s.value), np.ones(3))


def test_empty_per_device_batch_in_batchnorm_refused_state_untouched():
    bn = objax.nn.BatchNorm0D(4)
    par = objax.Parallel(lambda v: bn(v, training=True), bn.vars())
    empty = np.zeros((0, 4), np.float32)
    for replicated in (False, True):
        vc = bn.vars()
        if replicated:
            with vc.replicate():
                before = [np.asarray(v) for v in vc.tensors()]
                with pytest.raises(ValueError, match='empty batch.*left unchanged'):
                    par(empty)
                for a, b in zip(vc.tensors(), before):
                    np.testing.assert_array_equal(np.asarray(a), b)
        else:
            with pytest.raises(ValueError, match='empty batch.*left unchanged'):
                par(empty)
        np.testing.assert_array_equal(np.asarray(bn.running_mean.value), np.zeros((1, 4)))
        np.testing.assert_array_equal(np.asarray(bn.running_var.value), np.ones((1, 4)))


def test_static_argnums_and_parallel_inside_jit():
    bn = objax.nn.BatchNorm0D(3, momentum=0.5)

    def f(x, training):
        return bn(x, training=training)  # `training` must be static: a Python branch inside BatchNorm

    x = np.random.RandomState(4).normal(size=(16, 3)).astype(np.float32)
    shard_means = x.reshape(NDEV, 2, 3).mean(1)
    par = objax.Parallel(f, bn.vars(), static_argnums=(1,))
    jitted = objax.Jit(lambda v: par(v, True), bn.vars())
    with bn.vars().replicate():
        np.testing.assert_allclose(np.asarray(par(x, False)), x / np.sqrt(1 + 1e-6), rtol=1e-5)
        np.testing.assert_array_equal(np.asarray(bn.running_mean.value), np.zeros((NDEV, 1, 3)))
        jitted(x)  # Jit around Parallel: the stacked values go through Jit's trace as well
        np.testing.assert_allclose(np.asarray(bn.running_mean.value)[:, 0], 0.5 * shard_means, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(bn.running_mean.value)[0], 0.5 * shard_means.mean(0), rtol=1e-5)
