"""Jit and Parallel donate the buffers of the variables they overwrite, never an array someone still holds."""

import threading

import jax
import jax.numpy as jn
import numpy as np
import pytest

import objax

X = np.linspace(-1, 1, 48, dtype=np.float32).reshape(16, 3)
Y = np.linspace(0, 1, 32, dtype=np.float32).reshape(16, 2)


def _train_op(make=objax.Jit, **kwargs):
    model = objax.nn.Linear(3, 2)
    opt = objax.optimizer.Momentum(model.vars())
    gv = objax.GradValues(lambda x, y: ((model(x) - y) ** 2).mean(), model.vars())

    def step(x, y):
        grads, values = gv(x, y)
        if make is objax.Parallel:
            grads = [objax.functional.parallel.pmean(g) for g in grads]
        opt(0.1, grads)
        return values[0]

    vc = gv.vars() + opt.vars()
    extra = {'reduce': lambda x: x.mean(0)} if make is objax.Parallel else {}
    return make(step, vc, **extra, **kwargs), model, vc


def _pointers(vc):
    return [t.unsafe_buffer_pointer() for t in vc.tensors()]


def _reference_steps(n: int):
    """The values after n steps computed with donation off (an independent run of the same program)."""
    op, model, vc = _train_op(donate=False)
    model.w.assign(jn.ones((3, 2)) * 0.5)
    for _ in range(n):
        op(X, Y)
    return [np.asarray(t) for t in vc.tensors()]


def test_jit_reuses_the_buffers_of_values_nobody_else_holds():
    op, model, vc = _train_op()
    model.w.assign(jn.ones((3, 2)) * 0.5)
    op(X, Y)
    before = _pointers(vc)
    op(X, Y)
    assert _pointers(vc) == before  # updated in place: the state is not duplicated in memory
    for a, b in zip(vc.tensors(), _reference_steps(2)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_jit_never_invalidates_arrays_user_code_holds():
    op, model, vc = _train_op()
    model.w.assign(jn.ones((3, 2)) * 0.5)
    op(X, Y)
    old = vc.tensors()
    old_numpy = [np.array(t) for t in old]
    view = np.asarray(model.b.value)  # a numpy view of the buffer (zero-copy on CPU)
    view_before = view.copy()
    op(X, Y)
    for t, expected in zip(old, old_numpy):
        assert not t.is_deleted()
        np.testing.assert_array_equal(t, expected)  # still readable, still the old values
    np.testing.assert_array_equal(view, view_before)
    assert any(not np.array_equal(a, b) for a, b in zip(vc.tensors(), old_numpy))
    for a, b in zip(vc.tensors(), _reference_steps(2)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_jit_without_donation_keeps_old_buffers():
    op, model, vc = _train_op(donate=False)
    op(X, Y)
    before = _pointers(vc)
    op(X, Y)
    assert not set(_pointers(vc)) & set(before)


def test_shared_array_exceptions_and_nesting():
    a = jn.arange(3.)
    u, v = objax.StateVar(a), objax.StateVar(a)  # one array in two variables
    vc = objax.VarCollection({'u': u, 'v': v})
    del a
    objax.Jit(lambda: u.assign(u.value + 1), vc)()
    np.testing.assert_array_equal(u.value, [1., 2., 3.])
    np.testing.assert_array_equal(v.value, [0., 1., 2.])

    def bad():
        u.assign(u.value * 2)
        raise RuntimeError('boom')

    with pytest.raises(RuntimeError, match='boom'):
        objax.Jit(bad, vc)()
    np.testing.assert_array_equal(u.value, [1., 2., 3.])  # usable and unchanged
    np.testing.assert_array_equal(v.value, [0., 1., 2.])
    inner = objax.Jit(lambda: v.assign(v.value * 10), vc)
    outer = objax.Jit(lambda: (inner(), u.assign(u.value + v.value)), vc)
    outer()
    np.testing.assert_array_equal(v.value, [0., 10., 20.])
    np.testing.assert_array_equal(u.value, [1., 12., 23.])
    # Under jax's own transformations nothing is donated and no tracer is left in a variable.
    jax.jit(lambda x: objax.Jit(lambda y: y * u.value, vc)(x))(jn.ones(3))
    assert not any(isinstance(t, jax.core.Tracer) for t in vc.tensors())


@pytest.mark.parametrize('donate', [True, False])
def test_parallel_donation_keeps_held_arrays_and_matches(donate):
    op, model, vc = _train_op(objax.Parallel, donate=donate)
    ref, ref_model, ref_vc = _train_op()
    for m in (model, ref_model):
        m.w.assign(jn.ones((3, 2)) * 0.5)
    op(X, Y)
    old = vc.tensors()
    old_numpy = [np.array(t) for t in old]
    op(X, Y)
    for t, expected in zip(old, old_numpy):
        assert not t.is_deleted()
        np.testing.assert_array_equal(t, expected)
    del old
    op(X, Y)
    for _ in range(3):
        ref(X, Y)
    for a, b in zip(vc.tensors(), ref_vc.tensors()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_threads_reading_values_during_donating_steps_never_see_a_deleted_array():
    counter = objax.StateVar(jn.zeros(4, jn.int32))
    step = objax.Jit(lambda: counter.assign(counter.value + 1), objax.VarCollection({'counter': counter}))
    done = threading.Event()
    errors, reads = [], []

    def reader():
        try:
            while not done.is_set():
                value = np.asarray(counter.value)  # as a checkpoint writer would
                assert value.min() == value.max()
                reads.append(int(value[0]))
        except BaseException as e:  # reported below
            errors.append(e)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(1500):
            step()
    finally:
        done.set()
        thread.join()
    assert errors == []
    assert reads == sorted(reads) and len(reads) > 0  # each read saw a whole step's value, in order
    np.testing.assert_array_equal(counter.value, [1500] * 4)


def test_two_jits_sharing_a_variable_from_two_threads_lose_no_update():
    # A donating call takes the values out of the variables until it stores the new ones: another compiled
    # call on the same variables waits for them, so read-run-write is atomic across transforms too.
    counter = objax.StateVar(jn.zeros((), jn.int32))
    vc = objax.VarCollection({'counter': counter})
    plus_one = objax.Jit(lambda: counter.assign(counter.value + 1), vc)
    plus_two = objax.Jit(lambda: counter.assign(counter.value + 2), vc)
    plus_one(), plus_two()
    errors = []

    def work(step):
        try:
            for _ in range(1000):
                step()
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in (plus_one, plus_two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert int(counter.value) == 3 + 3000


def _callback_model(fail_for_batch=None):
    """A Linear layer and a Jit whose function passes its input through a host callback that raises while
    `failing[0]` is true (only for batches of `fail_for_batch` rows, when given)."""
    model = objax.nn.Linear(3, 2)
    failing = [False]

    def host(x):
        if failing[0]:
            raise RuntimeError('the host callback failed')
        return x

    def f(x):
        if fail_for_batch is None or x.shape[0] == fail_for_batch:
            x = jax.pure_callback(host, jax.ShapeDtypeStruct(x.shape, x.dtype), x)
        model.w.assign(model.w.value + 1)
        return model(x)

    return model, objax.Jit(f, model.vars()), failing


def test_a_callback_failing_while_the_program_runs_keeps_the_variables():
    model, step, failing = _callback_model()
    step(jn.ones((1, 3)))
    before = np.asarray(model.w.value)
    failing[0] = True
    with pytest.raises(Exception, match='the host callback failed'):
        step(jn.ones((1, 3)))
    np.testing.assert_array_equal(np.asarray(model.w.value), before)  # still readable, unchanged
    failing[0] = False
    step(jn.ones((1, 3)))
    np.testing.assert_array_equal(np.asarray(model.w.value), before + 1)


def test_a_donating_call_that_fails_after_donating_names_the_lost_variables():
    # A program compiled first without a callback donates; a later signature calls back and fails while it runs.
    model, step, failing = _callback_model(fail_for_batch=2)
    step(jn.ones((1, 3)))
    failing[0] = True
    with pytest.raises(RuntimeError, match=r'Jit\(.*f\) failed while its compiled program ran') as e:
        step(jn.ones((2, 3)))
    message = str(e.value)
    assert '2 donated variable value(s): (Linear).b, (Linear).w' in message and 'donate=False' in message
    assert 'the host callback failed' in ''.join(map(str, (e.value.__cause__,)))


def _counter_step():
    counter = objax.StateVar(jn.arange(4.))
    vc = objax.VarCollection({'counter': counter})
    step = objax.Jit(lambda: counter.assign(counter.value + 1), vc)
    step()  # compiled; the value now stored is the program's, not yet read by anyone
    return counter, step


@pytest.mark.parametrize('make_alias', [lambda x: jax.device_put(x, jax.devices()[0]),
                                        lambda x: x.addressable_data(0),
                                        lambda x: x.addressable_shards[0].data,
                                        lambda x: jax.device_put(x, x.sharding),
                                        np.asarray],
                         ids=['device_put', 'addressable_data', 'addressable_shards', 'device_put_sharding',
                              'numpy_view'])
def test_another_array_on_the_same_buffer_stays_valid_after_a_donating_step(make_alias):
    counter, step = _counter_step()
    alias = make_alias(counter.value)  # an array sharing the buffer of the stored value (the value dropped)
    step()
    assert not (isinstance(alias, jax.Array) and alias.is_deleted())
    np.testing.assert_array_equal(alias, [1., 2., 3., 4.])  # still the old value
    np.testing.assert_array_equal(counter.value, [2., 3., 4., 5.])


def test_an_alias_of_an_assigned_array_stays_valid_after_a_donating_step():
    counter, step = _counter_step()
    value = jn.zeros(4)
    alias = jax.device_put(value, jax.devices()[0])
    counter.assign(value)
    del value  # only the alias is left with the user
    step()
    assert not alias.is_deleted()
    np.testing.assert_array_equal(alias, [0.] * 4)
    np.testing.assert_array_equal(counter.value, [1.] * 4)


def test_an_alias_held_by_another_variable_stays_valid_after_a_donating_step():
    counter, step = _counter_step()
    other = objax.StateVar(jax.device_put(counter.value, jax.devices()[0]))
    step()
    np.testing.assert_array_equal(other.value, [1., 2., 3., 4.])


def test_values_nobody_read_since_the_last_step_are_donated_without_a_copy():
    counter, step = _counter_step()
    alias = jax.device_put(counter.value, jax.devices()[0])
    step()  # the aliased value is copied for this call; the new value is the program's
    del alias
    pointer = counter._value.unsafe_buffer_pointer()  # read without handing the value out
    step()
    assert counter._value.unsafe_buffer_pointer() == pointer  # updated in place
    np.testing.assert_array_equal(counter.value, [3., 4., 5., 6.])


def _sharded_counter_step():
    from jax.sharding import PartitionSpec as P
    counter = objax.StateVar(jn.arange(16.))
    vc = objax.VarCollection({'counter': counter})
    objax.sharding.set_spec(counter, P('data'))
    objax.sharding.shard(vc, objax.sharding.make_mesh({'data': 8}))
    step = objax.Jit(lambda: counter.assign(counter.value + 1), vc)
    step()
    return counter, step


def test_a_shard_of_a_laid_out_value_stays_valid_after_a_donating_step():
    counter, step = _sharded_counter_step()
    first = counter.value.addressable_data(0)  # one device's part of the value, on the same buffer
    step()
    assert not first.is_deleted()
    np.testing.assert_array_equal(first, [1., 2.])
    np.testing.assert_array_equal(counter.value, np.arange(16.) + 2)


def test_an_exposed_laid_out_value_whose_shards_were_read_is_donated_in_place():
    counter, step = _sharded_counter_step()
    # Reading the shards exposes the value, and jax keeps one array per device with it from then on.
    pointers = [s.data.unsafe_buffer_pointer() for s in counter.value.addressable_shards]
    step()  # nothing but the value itself uses its buffers: no copy
    assert [s.data.unsafe_buffer_pointer() for s in counter.value.addressable_shards] == pointers
    np.testing.assert_array_equal(counter.value, np.arange(16.) + 2)


def test_parallel_keeps_an_alias_of_a_replicated_value_valid():
    counter = objax.StateVar(jn.arange(4.))
    vc = objax.VarCollection({'counter': counter})
    step = objax.Parallel(lambda x: counter.assign(counter.value + x.sum()), vc, reduce=lambda x: x[0])
    step(jn.ones(8))  # counter is now replicated on the 8 devices
    alias = jax.device_put(counter.value.addressable_data(0), jax.devices()[0])
    step(jn.ones(8))
    assert not alias.is_deleted()
    np.testing.assert_array_equal(alias, np.arange(4.) + 1)
    np.testing.assert_array_equal(counter.value, np.arange(4.) + 2)


def test_exposed_values_that_no_other_array_shares_are_donated_in_place():
    # A new variable's value, values read with .value or vc.tensors(), values assigned: each counts as exposed
    # until a compiled call stores a new one, and is still donated when no other jax.Array uses its buffer.
    counter = objax.StateVar(jn.arange(4.))
    vc = objax.VarCollection({'counter': counter})
    step = objax.Jit(lambda: counter.assign(counter.value + 1), vc)
    for expose in (lambda: None, lambda: vc.tensors(), lambda: float(counter.value.sum()),
                   lambda: counter.assign(jn.zeros(4))):
        expose()
        pointer = counter._value.unsafe_buffer_pointer()  # read without exposing the value
        step()
        assert counter._value.unsafe_buffer_pointer() == pointer


def test_a_jit_run_by_a_jax_transformation_without_traced_arguments_donates_nothing():
    counter, step = _counter_step()
    before = counter.value
    jax.jit(lambda: step())()  # traced by jax.jit: the write reaches the variable when the program runs
    assert not before.is_deleted()
    np.testing.assert_array_equal(before, [1., 2., 3., 4.])
    np.testing.assert_array_equal(counter.value, [2., 3., 4., 5.])
    step()
    np.testing.assert_array_equal(counter.value, [3., 4., 5., 6.])
