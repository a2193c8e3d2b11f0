"""Modules used inside JAX's own transforms (jax.jit, grad, vmap, lax.scan, checkpoint): they read the current
values of their variables, and what they write persists, as in eager calls. Every case is compared with eager
calls of an identical module."""

import gc
import threading

import jax
import jax.numpy as jn
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import objax

RNG = np.random.default_rng(5)
X = jn.asarray(RNG.normal(size=(6, 3)).astype(np.float32))


def _twins(make):
    """Two modules built from the same random stream: identical values, independent variables."""
    objax.random.DEFAULT_GENERATOR.seed(7)
    a = make()
    objax.random.DEFAULT_GENERATOR.seed(7)
    b = make()
    for x, y in zip(a.vars().values(), b.vars().values()):
        np.testing.assert_array_equal(x.value, y.value)
    return a, b


def _assert_same_vars(a, b, rtol=1e-6, atol=1e-6):
    va, vb = a.vars(), b.vars()
    assert list(va.keys()) == list(vb.keys())
    for k in va.keys():
        x, y = va[k].value, vb[k].value
        assert not isinstance(y, jax.core.Tracer), k
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol, err_msg=k)


class Counted(objax.Module):
    """BatchNorm followed by a multiplication by a counter of calls."""

    def __init__(self):
        self.count = objax.StateVar(jn.zeros((), jn.int32))
        self.bn = objax.nn.BatchNorm0D(3, momentum=0.8)

    def __call__(self, x):
        self.count.value += 1
        return self.bn(x, training=True) * self.count.value


def test_jax_jit_reads_current_values_after_assign_without_retracing():
    model = objax.nn.Linear(3, 2)
    traces = []

    def predict(x):
        traces.append(1)
        return model(x)

    f = jax.jit(predict)
    np.testing.assert_allclose(f(X), model(X), rtol=1e-6)
    model.w.assign(model.w.value * 2 + 1)
    model.b.assign(jn.full((2,), 3.0))
    expected = np.asarray(X) @ np.asarray(model.w.value) + 3
    np.testing.assert_allclose(model(X), expected, rtol=1e-5)
    np.testing.assert_allclose(f(X), expected, rtol=1e-5)
    assert len(traces) == 1
    for scale in (0.5, -1.0):
        model.w.assign(jn.full((3, 2), scale))
        np.testing.assert_allclose(f(X), np.repeat(np.asarray(X).sum(1, keepdims=True) * scale + 3, 2, 1),
                                   rtol=1e-5)


def test_batchnorm_inside_jax_jit_keeps_its_statistics_like_eager_calls():
    eager, jitted = _twins(lambda: objax.nn.BatchNorm0D(3, momentum=0.7))
    train = jax.jit(lambda x: jitted(x, training=True))
    for i in range(4):
        x = X * (i + 1) + i
        np.testing.assert_allclose(train(x), eager(x, training=True), rtol=1e-5, atol=1e-5)
        _assert_same_vars(eager, jitted, rtol=1e-5)
    # The statistics are concrete arrays that eager code and other programs use.
    assert isinstance(jitted.running_mean.value, jax.Array)
    np.testing.assert_allclose(jitted(X, training=False), eager(X, training=False), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax.jit(lambda x: jitted(x, training=False))(X), eager(X, training=False),
                               rtol=1e-5, atol=1e-5)


def test_dropout_inside_jax_jit_draws_new_masks_and_advances_the_key_like_eager_calls():
    eager, jitted = _twins(lambda: objax.nn.Dropout(0.5, generator=objax.random.Generator(3)))
    drop = jax.jit(lambda x: jitted(x, training=True))
    ones = jn.ones((8, 16))
    masks = [np.asarray(drop(ones)) for _ in range(3)]
    expected = [np.asarray(eager(ones, training=True)) for _ in range(3)]
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])
    for m, e in zip(masks, expected):
        np.testing.assert_array_equal(m, e)
    np.testing.assert_array_equal(jitted.keygen.key.value, eager.keygen.key.value)
    # Eager calls after the jitted ones continue the same stream.
    np.testing.assert_array_equal(jitted(ones, training=True), eager(ones, training=True))
    np.testing.assert_array_equal(drop(ones), eager(ones, training=True))


def test_default_generator_inside_jax_jit_advances_like_eager_calls():
    sample = jax.jit(lambda: objax.random.normal((3,)))
    objax.random.DEFAULT_GENERATOR.seed(11)
    got = [np.asarray(sample()) for _ in range(3)]
    key = np.asarray(objax.random.DEFAULT_GENERATOR.key.value)
    objax.random.DEFAULT_GENERATOR.seed(11)
    expected = [np.asarray(objax.random.normal((3,))) for _ in range(3)]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-6)
    np.testing.assert_array_equal(objax.random.DEFAULT_GENERATOR.key.value, key)


def test_lax_scan_over_a_stateful_module_ends_in_the_eager_state():
    eager, scanned = _twins(Counted)
    seq = jn.stack([X + i for i in range(5)])
    expected = np.stack([eager(x) for x in seq])

    def body(carry, x):
        y = scanned(x)
        return carry + y.sum(), y

    total, ys = jax.lax.scan(body, jn.zeros(()), seq)
    np.testing.assert_allclose(ys, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(total, expected.sum(), rtol=1e-5, atol=1e-4)
    assert int(scanned.count.value) == 5
    _assert_same_vars(eager, scanned, rtol=1e-5)
    # Under jax.jit too, twice: the compiled loop starts from the current state each time.
    run = jax.jit(lambda s: jax.lax.scan(body, jn.zeros(()), s)[1])
    for _ in range(2):
        expected = np.stack([eager(x) for x in seq])
        np.testing.assert_allclose(run(seq), expected, rtol=1e-5, atol=1e-5)
        _assert_same_vars(eager, scanned, rtol=1e-5)
    assert int(scanned.count.value) == 15


def test_lax_scan_inside_objax_jit_ends_in_the_eager_state():
    eager, scanned = _twins(Counted)
    seq = jn.stack([X - i for i in range(4)])
    step = objax.Jit(lambda s: jax.lax.scan(lambda c, x: (c, scanned(x)), 0.0, s)[1], scanned.vars())
    for _ in range(2):
        expected = np.stack([eager(x) for x in seq])
        np.testing.assert_allclose(step(seq), expected, rtol=1e-5, atol=1e-5)
        _assert_same_vars(eager, scanned, rtol=1e-5)


def test_jax_grad_closing_over_a_module_matches_objax_grad_and_closed_form():
    model = objax.nn.Linear(3, 2)
    target = jn.asarray(RNG.normal(size=(6, 2)).astype(np.float32))

    def loss(x):
        return ((model(x) - target) ** 2).sum()

    got = jax.grad(loss)(X)
    np.testing.assert_allclose(got, objax.Grad(loss, objax.VarCollection(), input_argnums=(0,))(X)[0], rtol=1e-6)
    w, b = np.asarray(model.w.value), np.asarray(model.b.value)
    np.testing.assert_allclose(got, 2 * (np.asarray(X) @ w + b - np.asarray(target)) @ w.T, rtol=1e-5, atol=1e-5)
    # After an assign, the next jax.grad uses the new weights.
    model.w.assign(jn.ones((3, 2)))
    np.testing.assert_allclose(jax.grad(loss)(X), 2 * (np.asarray(X).sum(1, keepdims=True) + b - target) @ np.ones(
        (2, 3)), rtol=1e-5, atol=1e-5)


def test_jax_grad_of_a_module_with_state_stores_the_statistics_without_gradient():
    eager, graded = _twins(lambda: objax.nn.Sequential([objax.nn.Linear(3, 4), objax.nn.BatchNorm0D(4)]))
    for i in range(3):
        x = X + i
        g = jax.grad(lambda x: (graded(x, training=True) ** 3).sum())(x)
        expected = objax.Grad(lambda x: (eager(x, training=True) ** 3).sum(), objax.VarCollection(),
                              input_argnums=(0,))(x)[0]
        np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-5)
        _assert_same_vars(eager, graded, rtol=1e-5)
    assert isinstance(graded[1].running_var.value, jax.Array)


def test_jax_grad_of_the_weights_assigned_inside_the_function():
    # Differentiating with respect to the weights with jax.grad: the function assigns them, then uses them.
    model = objax.nn.Linear(3, 1)
    w = model.w.value

    def loss(w):
        model.w.assign(w)
        return (model(X) ** 2).sum()

    for _ in range(2):  # eagerly, then compiled: the read after the write differentiates through it
        for grad in (jax.grad(loss), jax.jit(jax.grad(loss))):
            g = grad(w * 2)
            np.testing.assert_allclose(g, 2 * np.asarray(X).T @ (np.asarray(X) @ np.asarray(w * 2) + np.asarray(
                model.b.value)), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(model.w.value, w * 2)  # stored: the value assigned, without its tracer
            model.w.assign(w)


def test_jax_checkpoint_closing_over_a_module():
    eager, ckpt = _twins(Counted)

    def loss(m):
        return lambda x: (m(x) ** 3).sum()

    g = jax.grad(jax.checkpoint(loss(ckpt)))(X)
    expected = objax.Grad(loss(eager), objax.VarCollection(), input_argnums=(0,))(X)[0]
    np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-5)
    _assert_same_vars(eager, ckpt, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(jax.checkpoint(ckpt))(X), eager(X), rtol=1e-5, atol=1e-5)
    _assert_same_vars(eager, ckpt, rtol=1e-5)


def _bn_mlp():
    return objax.nn.Sequential([objax.nn.Linear(3, 4), objax.nn.BatchNorm0D(4), objax.nn.Linear(4, 1)])


@pytest.mark.parametrize('jit', [False, True])
def test_jax_checkpoint_inside_objax_grad_values_matches_and_updates_statistics_once(jit):
    plain, ckpt = _twins(_bn_mlp)
    gv_plain = objax.GradValues(lambda x: (plain(x, training=True) ** 2).mean(), plain.vars())
    gv_ckpt = objax.GradValues(lambda x: jax.checkpoint(lambda x: (ckpt(x, training=True) ** 2).mean())(x),
                               ckpt.vars())
    if jit:
        gv_plain, gv_ckpt = objax.Jit(gv_plain, plain.vars()), objax.Jit(gv_ckpt, ckpt.vars())
    for i in range(2):
        (g1, v1), (g2, v2) = gv_plain(X + i), gv_ckpt(X + i)
        np.testing.assert_allclose(v1[0], v2[0], rtol=1e-6)
        for a, b in zip(g1, g2):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        _assert_same_vars(plain, ckpt)


def test_training_steps_in_a_lax_scan_inside_objax_jit_match_one_jit_call_per_step():
    def trainer(model):
        gv = objax.GradValues(lambda x: (model(x, training=True) ** 2).mean(), model.vars())
        opt = objax.optimizer.Adam(model.vars())

        def step(x):
            g, v = gv(x)
            opt(0.01, g)
            return v[0]

        return step, gv.vars() + opt.vars()

    one, many = _twins(_bn_mlp)
    step_one, vc_one = trainer(one)
    step_many, vc_many = trainer(many)
    jit_one = objax.Jit(step_one, vc_one)
    jit_many = objax.Jit(lambda xs: jax.lax.scan(lambda c, x: (c, step_many(x)), 0.0, xs)[1], vc_many)
    xs = jn.stack([X * (i + 1) for i in range(3)])
    for _ in range(2):
        np.testing.assert_allclose(jit_many(xs), [jit_one(x) for x in xs], rtol=1e-5)
        for a, b in zip(vc_one.values(), vc_many.values()):
            np.testing.assert_allclose(a.value, b.value, rtol=1e-4, atol=1e-6)


def test_jax_vmap_reads_current_values():
    model = objax.nn.Linear(3, 2)
    batched = jax.vmap(model)
    np.testing.assert_allclose(batched(X), model(X), rtol=1e-6)
    model.w.assign(-model.w.value)
    np.testing.assert_allclose(batched(X), model(X), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(batched)(X), model(X), rtol=1e-6)
    model.b.assign(model.b.value + 1)
    np.testing.assert_allclose(jax.jit(batched)(X), model(X), rtol=1e-6)


def test_jax_vmap_writing_a_batched_value_raises_naming_the_variable():
    bn = objax.nn.BatchNorm0D(3)
    bn.vars()  # names the variables
    before = np.asarray(bn.running_mean.value)
    with pytest.raises(ValueError, match=r'StateVar "\(BatchNorm0D\)\.running_mean".*inside jax\.vmap'):
        jax.vmap(lambda x: bn(x[None], training=True))(X)
    np.testing.assert_array_equal(bn.running_mean.value, before)
    # Any write from a vmapped function: JAX refuses it, and nothing changes.
    counter = objax.nn.Sequential([objax.StateVar(jn.zeros(()))])
    counter.vars()
    with pytest.raises(ValueError, match=r'StateVar "\(Sequential\)\[0\]".*inside jax\.vmap'):
        jax.vmap(lambda x: counter[0].assign(counter[0].value + 1))(X)
    assert float(counter[0].value) == 0


def test_objax_jit_step_after_raw_jax_use_gives_the_same_numbers():
    def make():
        model = objax.nn.Sequential([objax.nn.Linear(3, 4), objax.nn.BatchNorm0D(4), objax.functional.relu,
                                     objax.nn.Dropout(0.7), objax.nn.Linear(4, 1)])
        return objax.ModuleList([model, objax.optimizer.Momentum(model.vars())])

    def trainer(pair, donate):
        model, opt = pair
        gv = objax.GradValues(lambda x: (model(x, training=True) ** 2).mean(), model.vars())

        def step(x):
            g, v = gv(x)
            opt(0.05, g)
            return v[0]

        return objax.Jit(step, gv.vars() + opt.vars(), donate=donate)

    for donate in (True, False):
        plain, used = _twins(make)
        model = used[0]
        predict = jax.jit(lambda x, model=model: model(x, training=False))  # stays alive: it holds the variables
        np.testing.assert_allclose(predict(X), plain[0](X, training=False), rtol=1e-6)
        jax.grad(lambda x, model=model: model(x, training=False).sum())(X)
        del model
        objax.random.DEFAULT_GENERATOR.seed(1)
        losses = [trainer(plain, donate)(X + i) for i in range(4)]
        objax.random.DEFAULT_GENERATOR.seed(1)
        step = trainer(used, donate)
        np.testing.assert_allclose([step(X + i) for i in range(4)], losses, rtol=1e-6)
        _assert_same_vars(plain, used)
        # The raw program still reads the current (trained) values.
        np.testing.assert_allclose(predict(X), plain[0](X, training=False), rtol=1e-5, atol=1e-7)
        del predict


def test_objax_jit_calling_a_raw_jax_program_that_uses_the_same_variables():
    def make():
        return objax.ModuleList([objax.nn.Linear(3, 2), objax.StateVar(jn.zeros(()))])

    eager, used = _twins(make)

    def bump(m):
        def f(x):
            m[1].value += 1
            return m[0](x)
        return f

    def outer(m, inner):
        def f(x):
            y = inner(x)  # writes the counter, which f then reads
            m[0].w.assign(m[0].w.value + m[1].value)
            return y + m[0](x) * m[1].value
        return f

    raw = jax.jit(bump(used))
    raw(X)
    bump(eager)(X)
    step = objax.Jit(outer(used, raw), used.vars())
    for _ in range(3):
        np.testing.assert_allclose(step(X), outer(eager, bump(eager))(X), rtol=1e-5)
        _assert_same_vars(eager, used, rtol=1e-5)
    np.testing.assert_allclose(raw(X), bump(eager)(X), rtol=1e-5)
    _assert_same_vars(eager, used, rtol=1e-5)


def test_raw_jax_transforms_around_objax_transforms():
    eager, wrapped = _twins(lambda: objax.nn.Sequential([objax.nn.Linear(3, 2), objax.nn.BatchNorm0D(2)]))

    def trainer(model):
        gv = objax.GradValues(lambda x: model(x, training=True).sum(), model.vars())
        opt = objax.optimizer.SGD(model.vars())

        def step(x):
            g, v = gv(x)
            opt(0.1, g)
            return v[0]

        return objax.Jit(step, gv.vars() + opt.vars())

    eager_step, raw = trainer(eager), jax.jit(trainer(wrapped))
    for i in range(3):
        np.testing.assert_allclose(raw(X * i), eager_step(X * i), rtol=1e-5)
        _assert_same_vars(eager, wrapped, rtol=1e-5)


def test_objax_parallel_inside_jax_jit_and_with_variables_a_jax_program_holds():
    def trainer(model):
        gv = objax.GradValues(lambda x: (model(x, training=True) ** 2).mean(), model.vars())
        opt = objax.optimizer.SGD(model.vars())

        def step(x):
            g, v = gv(x)
            opt(0.1, g)
            return v[0]

        return objax.Parallel(step, gv.vars() + opt.vars(), reduce=lambda x: x.mean(0))

    batch = jn.concatenate([X, X[::-1] * 2, X + 1, -X])[:16]
    eager, raw = _twins(lambda: objax.nn.Sequential([objax.nn.Linear(3, 4), objax.nn.BatchNorm0D(4)]))
    eager_step, raw_step = trainer(eager), jax.jit(trainer(raw))
    for i in range(2):
        np.testing.assert_allclose(raw_step(batch + i), eager_step(batch + i), rtol=1e-5)
        _assert_same_vars(eager, raw, rtol=1e-5)
    plain, held = _twins(lambda: objax.nn.Sequential([objax.nn.Linear(3, 4), objax.nn.BatchNorm0D(4)]))
    predict = jax.jit(lambda x: held(x, training=False))
    predict(batch)
    plain_step, held_step = trainer(plain), trainer(held)
    for i in range(2):
        np.testing.assert_allclose(held_step(batch + i), plain_step(batch + i), rtol=1e-5)
        _assert_same_vars(plain, held, rtol=1e-5)
    np.testing.assert_allclose(predict(batch), plain(batch, training=False), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('donate', [True, False])
def test_a_reference_no_program_holds_becomes_a_plain_array_at_the_next_objax_jit_step(donate):
    model = objax.nn.Linear(3, 2)
    step = objax.Jit(lambda x: model.w.assign(model.w.value + x.sum()), model.vars(), donate=donate)
    jax.grad(lambda x: model(x).sum())(X)
    assert isinstance(model.w._value, jax.Ref)  # jax.grad traced it: kept in a JAX array reference
    step(X)
    assert not isinstance(model.w._value, jax.Ref)  # nothing held it any more
    predict = jax.jit(lambda x: model(x))
    predict(X)
    step(X)
    assert isinstance(model.w._value, jax.Ref)  # the live program holds it
    np.testing.assert_allclose(predict(X), model(X), rtol=1e-6)
    del predict
    gc.collect()
    step(X)
    assert not isinstance(model.w._value, jax.Ref)
    np.testing.assert_allclose(model(X), np.asarray(X) @ np.asarray(model.w.value) + np.asarray(model.b.value),
                               rtol=1e-5)


def test_threads_tracing_the_same_module_at_once_all_see_later_assigns():
    model = objax.nn.Linear(3, 2)
    programs = [jax.jit(lambda x, k=k: model(x) * k) for k in range(1, 5)]
    barrier = threading.Barrier(len(programs))
    errors = []

    def run(program):
        try:
            barrier.wait()
            program.trace(X)  # JAX itself cannot run two programs that share a reference at once (see the docs)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(p,)) for p in programs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert isinstance(model.w._value, jax.Ref) and isinstance(model.b._value, jax.Ref)
    model.w.assign(jn.ones((3, 2)))
    model.b.assign(jn.zeros(2))
    for k, program in enumerate(programs, 1):
        np.testing.assert_allclose(program(X), np.repeat(np.asarray(X).sum(1, keepdims=True) * k, 2, 1), rtol=1e-5)


def test_variables_created_inside_jax_jit_work():
    out = jax.jit(lambda x: objax.nn.Sequential([objax.nn.Linear(3, 4), objax.nn.BatchNorm0D(4)])(
        x, training=True))(X)
    assert out.shape == (6, 4)


class Holder(objax.Module):
    def __init__(self, value):
        self.v = objax.StateVar(value)


def test_a_tracer_that_escaped_its_transformation_is_refused_naming_the_variable():
    holder = Holder(jn.zeros(()))
    holder.vars()
    v = holder.v
    leaked = []
    jax.jit(lambda x: leaked.append(x * 2) or x)(jn.ones(()))
    with pytest.raises(ValueError, match=r'JAX tracer in StateVar "\(Holder\)\.v"'):
        v.assign(leaked[0])
    with pytest.raises(ValueError, match=r'JAX tracer in StateVar "\(Holder\)\.v"'):
        v.value = leaked[0]
    assert float(v.value) == 0


def test_a_shape_change_of_a_variable_a_program_reads_raises_naming_the_variable():
    holder = Holder(jn.zeros(3))
    holder.vars()
    v = holder.v
    with pytest.raises(ValueError, match=r'StateVar "\(Holder\)\.v" holds a JAX array reference of shape \(3,\)'):
        jax.jit(lambda: v.__setattr__('value', jn.zeros(4)))()
    read = jax.jit(lambda: v.value * 2)
    np.testing.assert_array_equal(read(), np.zeros(3))
    with pytest.raises(ValueError, match=r'StateVar "\(Holder\)\.v" holds a JAX array reference of shape \(3,\)'):
        v.value = jn.ones(5)  # eager, unchecked: the live program reads shape (3,)
    np.testing.assert_array_equal(read(), np.zeros(3))
    del read
    v.value = jn.ones(5)  # no program reads it any more
    np.testing.assert_array_equal(v.value, np.ones(5))
    np.testing.assert_array_equal(jax.jit(lambda: v.value * 2)(), np.full(5, 2.0))


def test_shard_map_over_a_module_raises_naming_the_variable():
    model = objax.nn.Linear(3, 2)
    model.vars()
    mesh = jax.make_mesh((1,), ('x',))
    f = jax.jit(jax.shard_map(lambda x: model(x), mesh=mesh, in_specs=P(), out_specs=P()))
    with pytest.raises(ValueError, match=r'TrainVar "\(Linear\)\.(b|w)" cannot be used inside jax\.shard_map'):
        f(X)


def test_laying_out_a_variable_once_used_in_jax_jit_moves_it_onto_the_mesh():
    # Once read by a raw jax.jit trace the variable's storage is a JAX array reference; laying it out on a mesh
    # later must still place it there (not write the new value into the reference's single-device layout).
    v = objax.TrainVar(jn.arange(8.))
    doubled = jax.jit(lambda: v.value * 2)
    np.testing.assert_array_equal(np.asarray(doubled()), np.arange(8.) * 2)
    del doubled
    mesh = objax.sharding.make_mesh({'data': 8})
    objax.sharding.shard(objax.VarCollection({'v': v}), mesh, rules=[('v', P('data'))])
    assert v.value.sharding.spec == P('data') and len(v.value.sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(v.value), np.arange(8.))
