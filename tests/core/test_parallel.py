"""objax.Parallel on 8 virtual CPU devices: forward and data-parallel training against single-device and pure
JAX/optax references, reduce choices, RandomState streams, static_argnums, Jit nesting, vc.replicate()."""

import jax
import jax.numpy as jn
import numpy as np
import optax
import pytest

import objax
from objax.functional.parallel import pmax, pmean, pmin, psum

NDEV = 8


def _mlp(seed: int = 0, nin: int = 5, hidden: int = 7, nout: int = 3) -> objax.nn.Sequential:
    rng = np.random.RandomState(seed)
    model = objax.nn.Sequential([objax.nn.Linear(nin, hidden), objax.functional.relu, objax.nn.Linear(hidden, nout)])
    for v in model.vars().subset(objax.TrainVar):  # non-zero biases too, so every parameter matters
        v.assign(jn.asarray(rng.normal(size=v.value.shape).astype(np.float32) * 0.5))
    return model


def _numpy_mlp(params, x):
    b1, w1, b2, w2 = [np.asarray(p, np.float64) for p in params]  # Linear's vars() order: b, w
    return np.maximum(x @ w1 + b1, 0) @ w2 + b2


def _data(n: int = 32, nin: int = 5, nout: int = 3, seed: int = 1):
    rng = np.random.RandomState(seed)
    return rng.normal(size=(n, nin)).astype(np.float32), rng.randint(0, nout, size=n)


def _xent(logits, labels):
    return -(jax.nn.log_softmax(logits) * jax.nn.one_hot(labels, logits.shape[-1])).sum(1).mean()


def test_eight_devices():
    assert jax.device_count() == NDEV


def test_forward_equals_single_device_and_numpy():
    model = _mlp()
    x, _ = _data()
    par = objax.Parallel(model)
    y = par(x)
    assert y.shape == (32, 3)
    np.testing.assert_allclose(np.asarray(y), _numpy_mlp(model.vars().tensors(), x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(y), np.asarray(model(x)), rtol=1e-6, atol=1e-6)
    # The same through `with vc.replicate():` and on a jax array input.
    with model.vars().replicate():
        np.testing.assert_allclose(np.asarray(par(jn.asarray(x))), np.asarray(y), rtol=1e-6, atol=1e-6)
    # Under a plain jax.jit too: f changes no variable, so nothing traced is left in them.
    model[0].w.assign(model[0].w.value + 0)  # a fresh array, not yet laid out on the mesh
    np.testing.assert_allclose(np.asarray(jax.jit(lambda v: par(v))(x)), np.asarray(y), rtol=1e-6, atol=1e-6)
    assert not any(isinstance(v.value, jax.core.Tracer) for v in model.vars().values())


def _train_op(model, opt_cls, **opt_kwargs):
    gv = objax.GradValues(lambda x, y: _xent(model(x), y), model.vars())
    opt = opt_cls(model.vars(), **opt_kwargs)

    def train_op(x, y, lr):
        grads, values = gv(x, y)
        opt(lr, [pmean(g) for g in grads])
        return pmean(values[0])

    def single_op(x, y, lr):
        grads, values = gv(x, y)
        opt(lr, grads)
        return values[0]

    vc = gv.vars() + opt.vars()
    return objax.Parallel(train_op, vc, reduce=lambda v: v[0]), objax.Jit(single_op, vc)


@pytest.mark.parametrize('opt_cls,kwargs', [(objax.optimizer.Momentum, {'momentum': 0.9}),
                                            (objax.optimizer.Adam, {})])
def test_data_parallel_training_equals_full_batch_step(opt_cls, kwargs):
    x, y = _data()
    par_model, ref_model = _mlp(), _mlp()
    par_step, _ = _train_op(par_model, opt_cls, **kwargs)
    _, ref_step = _train_op(ref_model, opt_cls, **kwargs)
    for _ in range(5):
        loss_par = par_step(x, y, 0.1)
        loss_ref = ref_step(x, y, 0.1)
        assert loss_par.shape == ()
        np.testing.assert_allclose(float(loss_par), float(loss_ref), rtol=1e-5, atol=1e-6)
    for a, b in zip(par_model.vars().tensors(), ref_model.vars().tensors()):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)
    # The parameters moved: the comparison above is not between two untouched models.
    assert max(float(jn.abs(a - b).max()) for a, b in zip(par_model.vars().tensors(), _mlp().vars().tensors())) > 1e-2


def test_data_parallel_momentum_matches_pure_jax_optax():
    x, y = _data()
    model = _mlp()
    step, _ = _train_op(model, objax.optimizer.Momentum, momentum=0.9)
    params = [jn.asarray(p) for p in _mlp().vars().tensors()]

    def loss_fn(p):
        h = jax.nn.relu(x @ p[1] + p[0])  # p = [b1, w1, b2, w2]
        return _xent(h @ p[3] + p[2], y)

    tx = optax.sgd(0.05, momentum=0.9)
    state = tx.init(params)
    with model.vars().replicate():
        for _ in range(5):
            step(x, y, 0.05)
            grads = jax.grad(loss_fn)(params)
            updates, state = tx.update(grads, state)
            params = optax.apply_updates(params, updates)
    for a, b in zip(model.vars().tensors(), params):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)


def test_reduce_choices():
    w = objax.TrainVar(jn.arange(1., 4.))
    x = np.random.RandomState(2).normal(size=(16, 3)).astype(np.float32)
    shards = x.reshape(NDEV, 2, 3) * np.arange(1., 4.)
    f = lambda v: (v * w.value, (v * w.value).sum())  # noqa: E731
    vc = objax.VarCollection({'w': w})
    rows = objax.Parallel(lambda v: v * w.value, vc)(x)  # default: concatenated back to the full batch
    np.testing.assert_allclose(np.asarray(rows), x * np.arange(1., 4.), rtol=1e-6)
    rows, sums = objax.Parallel(f, vc, reduce=lambda v: v.mean(0))(x)
    np.testing.assert_allclose(np.asarray(rows), shards.mean(0), rtol=1e-5)
    np.testing.assert_allclose(float(sums), shards.sum((1, 2)).mean(), rtol=1e-5)
    rows, sums = objax.Parallel(f, vc, reduce=lambda v: v[0])(x)
    np.testing.assert_allclose(np.asarray(rows), shards[0], rtol=1e-6)
    np.testing.assert_allclose(float(sums), shards[0].sum(), rtol=1e-5)
    stacked = objax.Parallel(lambda v: (v * w.value).sum(), vc, reduce=lambda v: v)(x)
    np.testing.assert_allclose(np.asarray(stacked), shards.sum((1, 2)), rtol=1e-5)


@pytest.mark.parametrize('fn,ref', [(psum, np.sum), (pmean, np.mean), (pmax, np.max), (pmin, np.min)])
def test_collectives_inside_parallel(fn, ref):
    x = np.random.RandomState(3).normal(size=(NDEV, 4)).astype(np.float32)
    out = objax.Parallel(lambda v: fn(v[0]), objax.VarCollection(), reduce=lambda v: v)(x)
    np.testing.assert_allclose(np.asarray(out), np.broadcast_to(ref(x, 0), (NDEV, 4)), rtol=1e-5)


def test_scalar_arguments_are_broadcast():
    out = objax.Parallel(lambda v, s, t: v * s + t, objax.VarCollection())(np.ones((8, 2), np.float32), 3.0,
                                                                          np.float32(0.5))
    np.testing.assert_allclose(np.asarray(out), np.full((8, 2), 3.5))


def test_random_streams_differ_per_device_and_advance():
    gen = objax.random.Generator(42)
    drop = objax.nn.Dropout(0.5, generator=gen)
    par = objax.Parallel(lambda v: drop(v, training=True), drop.vars())
    x = np.ones((NDEV * 2, 64), np.float32)
    key0 = np.asarray(gen.key.value)
    first = np.asarray(par(x))
    key1 = np.asarray(gen.key.value)
    second = np.asarray(par(x))
    assert not np.array_equal(key0, key1) and not np.array_equal(key1, np.asarray(gen.key.value))
    assert set(np.unique(first)) == {0.0, 2.0}
    masks = first.reshape(NDEV, -1)
    assert len({m.tobytes() for m in masks}) == NDEV  # every device drew its own mask
    assert not np.array_equal(first, second)  # the stream advanced between calls
    # Same seed, same sequence: the streams are reproducible.
    gen2 = objax.random.Generator(42)
    drop2 = objax.nn.Dropout(0.5, generator=gen2)
    np.testing.assert_array_equal(np.asarray(objax.Parallel(lambda v: drop2(v, training=True), drop2.vars())(x)),
                                  first)


def test_static_argnums():
    bn = objax.nn.BatchNorm0D(3, momentum=0.5)
    bn.running_mean.value = jn.full((1, 3), 10.)

    def f(x, training):
        if training:  # a Python branch: only possible when `training` is static
            return bn(x, training=True)
        return bn(x, training=False)

    par = objax.Parallel(f, bn.vars(), static_argnums=(1,))
    x = np.random.RandomState(4).normal(size=(16, 3)).astype(np.float32)
    evaluated = np.asarray(par(x, False))
    np.testing.assert_allclose(evaluated, (x - 10.) / np.sqrt(1 + 1e-6), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(bn.running_mean.value), np.full((1, 3), 10.))
    par(x, True)
    expected = 0.5 * 10. + 0.5 * x.reshape(NDEV, 2, 3).mean(1).mean(0)
    np.testing.assert_allclose(np.asarray(bn.running_mean.value)[0], expected, rtol=1e-5)
    with pytest.raises(ValueError, match='static_argnums'):
        objax.Parallel(lambda v: v, objax.VarCollection(), static_argnums=(2,))(x)


def test_jit_inside_parallel_and_parallel_inside_jit():
    x, y = _data()
    models = [_mlp() for _ in range(3)]
    # Jit inside Parallel: the user compiled the forward pass before parallelizing it.
    jitted = objax.Jit(models[0])
    np.testing.assert_allclose(np.asarray(objax.Parallel(lambda v: jitted(v), models[0].vars())(x)),
                               np.asarray(models[0](x)), rtol=1e-6, atol=1e-6)
    plain, _ = _train_op(models[0], objax.optimizer.Momentum)
    inner_jit_model = models[1]
    gv = objax.GradValues(lambda a, b: _xent(inner_jit_model(a), b), inner_jit_model.vars())
    opt = objax.optimizer.Momentum(inner_jit_model.vars())

    def train_op(a, b, lr):
        grads, values = gv(a, b)
        opt(lr, [pmean(g) for g in grads])
        return pmean(values[0])

    vc = gv.vars() + opt.vars()
    jit_in_parallel = objax.Parallel(objax.Jit(train_op, vc), vc, reduce=lambda v: v[0])
    parallel_step, _ = _train_op(models[2], objax.optimizer.Momentum)
    parallel_in_jit = objax.Jit(parallel_step)
    for _ in range(3):
        losses = [float(plain(x, y, 0.1)), float(jit_in_parallel(x, y, 0.1)), float(parallel_in_jit(x, y, 0.1))]
        np.testing.assert_allclose(losses, [losses[0]] * 3, rtol=1e-5)
    for a, b, c in zip(*(m.vars().tensors() for m in models)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6)
        np.testing.assert_allclose(np.asarray(c), np.asarray(a), atol=1e-6)


def test_replicate_block_stacks_per_device_and_returns_to_one_device():
    """Inside `with vc.replicate():` values are stacked per device (Objax 1.8's semantics, see
    core/test_replicate.py); with pmean'd gradients the copies stay equal, and the block's exit gives the same
    values as calls outside it."""
    x, y = _data()
    model, ref = _mlp(), _mlp()
    step, _ = _train_op(model, objax.optimizer.Momentum)
    _, ref_step = _train_op(ref, objax.optimizer.Momentum)
    vc = step.vars()
    arrays = vc.tensors()
    before = [np.asarray(v) for v in arrays]
    with vc.replicate():
        assert all(len(v.value.sharding.device_set) == NDEV for v in vc)
        assert [v.value.shape for v in vc] == [(NDEV,) + b.shape for b in before]  # one copy per device
    assert all(a is b for a, b in zip(vc.tensors(), arrays))  # untouched variables get their own arrays back
    with vc.replicate():
        for _ in range(3):
            step(x, y, 0.1)
            ref_step(x, y, 0.1)
    assert all(len(v.value.sharding.device_set) == 1 for v in vc)
    for a, b in zip(model.vars().tensors(), ref.vars().tensors()):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    # Back on one device like fresh values: they mix with arrays laid out on all devices.
    elsewhere = jax.device_put(jn.ones(3), step.mesh.devices.flat[3])
    np.testing.assert_allclose(np.asarray(model[2].b.value + elsewhere), np.asarray(ref[2].b.value) + 1, atol=1e-5)
    # Without a block the variables a call changed stay replicated on the mesh, with the same values.
    step(x, y, 0.1)
    ref_step(x, y, 0.1)
    assert all(len(v.value.sharding.device_set) == NDEV for v in model.vars())
    for a, b in zip(model.vars().tensors(), ref.vars().tensors()):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_many_queued_calls_do_not_deadlock():
    """Hundreds of calls dispatched without waiting: XLA's CPU collectives deadlock when a few dozen collective
    programs are queued, so Parallel keeps at most one call of its own in flight on CPU."""
    model = objax.nn.Linear(4, 4)
    gv = objax.GradValues(lambda v: (model(v) ** 2).mean(), model.vars())
    opt = objax.optimizer.SGD(model.vars())

    def train_op(v):
        grads, values = gv(v)
        opt(0.01, [pmean(g) for g in grads])
        return pmean(values[0])

    step = objax.Parallel(train_op, gv.vars() + opt.vars(), reduce=lambda v: v[0])
    x = np.ones((NDEV, 4), np.float32)
    losses = [step(x) for _ in range(200)]
    assert float(losses[-1]) < float(losses[0])


def test_traced_once_across_calls_and_replicate_blocks():
    """Variables merged by a call come back laid out as the next call expects: no retracing/recompiling (one
    program outside replicate() blocks, one inside)."""
    model = objax.nn.Sequential([objax.nn.Linear(3, 4), objax.nn.BatchNorm0D(4), objax.nn.Dropout(0.5)])
    gv = objax.GradValues(lambda v: (model(v, training=True) ** 2).mean(), model.vars())
    opt = objax.optimizer.Adam(model.vars())
    traces = []

    def train_op(v, lr):
        traces.append(1)
        grads, values = gv(v)
        opt(lr, [pmean(g) for g in grads])
        return values[0]

    vc = gv.vars() + opt.vars()
    step = objax.Parallel(train_op, vc, reduce=lambda v: v.mean(0))
    x = np.ones((16, 3), np.float32)
    for lr in (0.1, 0.2, 0.3):
        step(x, lr)
    with vc.replicate():
        for _ in range(2):
            step(jn.asarray(x), 0.1)
    step(x, 0.1)
    with vc.replicate():  # per-device copies: a second program, traced once for all blocks
        step(jn.asarray(x), 0.1)
    assert len(traces) == 2


def test_custom_axis_name_and_pytree_collectives():
    x = np.arange(16.).reshape(NDEV, 2)
    par = objax.Parallel(lambda v: psum({'a': v, 'b': 2 * v}, axis_name='batch'), objax.VarCollection(),
                         axis_name='batch', reduce=lambda v: v[0])
    out = par(x)
    np.testing.assert_allclose(np.asarray(out['a']), x.sum(0, keepdims=True))
    np.testing.assert_allclose(np.asarray(out['b']), 2 * x.sum(0, keepdims=True))
    with pytest.raises(NameError, match='device'):  # the default axis name is not bound under 'batch'
        objax.Parallel(lambda v: psum(v), objax.VarCollection(), axis_name='batch')(x)
    with pytest.raises(NameError):  # outside Parallel there is no device axis at all
        pmean(jn.ones(2))
