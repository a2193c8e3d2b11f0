"""Transforms and variables used from several threads at once (tracing state is per thread)."""

import io
import sys
import threading

import jax
import jax.numpy as jn
import numpy as np
import pytest

import objax

X = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)


def _run_threads(*targets):
    """Runs each target in its own thread; returns the exceptions they raised."""
    errors = []

    def guard(target):
        try:
            target()
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=guard, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


@pytest.mark.slow
def test_tracing_in_one_thread_does_not_disturb_eager_use_saving_and_tracing_in_another():
    model = objax.nn.Sequential([objax.nn.Linear(3, 4), objax.functional.relu, objax.nn.Linear(4, 2)])
    other = objax.nn.Linear(3, 5)
    reference = np.asarray(model(X))
    other_reference = np.asarray(other(X))
    done = threading.Event()
    counts = {'eager': 0}

    def tracer():
        try:
            for i in range(40):  # a new Jit each time: every call traces (the shape changes too)
                out = objax.Jit(model)(X[: 1 + i % 4])
                np.testing.assert_allclose(out, reference[: 1 + i % 4], rtol=1e-5)
        finally:
            done.set()

    def user():
        while not done.is_set() or counts['eager'] < 2000:
            np.testing.assert_allclose(model(X), reference, rtol=1e-5)
            buffer = io.BytesIO()
            objax.io.save_var_collection(buffer, model.vars())
            saved = np.load(io.BytesIO(buffer.getvalue()))
            assert all(not isinstance(saved[k], str) for k in saved.files)
            if counts['eager'] % 100 == 0:
                np.testing.assert_allclose(objax.Jit(other)(X), other_reference, rtol=1e-5)
            counts['eager'] += 1

    assert _run_threads(tracer, user) == []
    assert counts['eager'] >= 2000


def test_one_jit_called_from_two_threads_loses_no_update():
    counter = objax.StateVar(jn.array(0, jn.int32))
    step = objax.Jit(lambda: counter.assign(counter.value + 1), objax.VarCollection({'counter': counter}))
    step()

    def work():
        for _ in range(2000):
            step()

    assert _run_threads(work, work) == []
    assert int(counter.value) == 4001


@pytest.mark.slow
@pytest.mark.timeout(120)  # a loan never ended would make every call wait forever
def test_calls_that_take_the_one_step_path_and_the_general_path_at_once_lose_no_update():
    # The common call runs without the Jit's lock (lending.one_step); a call that finds a value held elsewhere or
    # read by user code goes the general way, under the lock. Mixed from three threads, every update lands, no
    # value is read deleted, and the variables end holding arrays, not loans.
    counter = objax.StateVar(jn.array(0, jn.int32))
    total = objax.StateVar(jn.zeros(3))
    step = objax.Jit(lambda x: [counter.assign(counter.value + 1), total.assign(total.value + x)][0],
                     objax.VarCollection({'counter': counter, 'total': total}))
    step(jn.ones(3))
    seen = []

    def fast():
        for _ in range(1500):
            step(jn.ones(3))

    def general():
        for _ in range(300):
            held = total.value  # read by user code and held: the next call copies it (general path)
            step(jn.ones(3))
            seen.append(float(held[0]))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch every few bytecodes: the windows between steps are hit
    try:
        errors = _run_threads(fast, fast, general)
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert int(counter.value) == 1 + 2 * 1500 + 300
    np.testing.assert_array_equal(np.asarray(total.value), np.full(3, 1 + 2 * 1500 + 300, np.float32))
    assert seen == sorted(seen) and len(seen) == 300
    assert isinstance(counter._value, jax.Array) and isinstance(total._value, jax.Array)


def test_vars_from_two_threads_sees_no_false_cycle():
    model = objax.nn.Sequential([objax.nn.Sequential([objax.nn.Linear(2, 2) for _ in range(4)])
                                 for _ in range(4)])
    names = list(model.vars())

    def work():
        for _ in range(300):
            assert list(model.vars()) == names

    assert _run_threads(work, work) == []


@pytest.mark.slow
def test_two_threads_tracing_unrelated_models_see_no_foreign_variable():
    import warnings
    a, b = objax.nn.Linear(3, 3), objax.nn.Linear(3, 3)

    def work(m):
        def run():
            with warnings.catch_warnings():
                warnings.simplefilter('error', objax.VariableOutsideCollectionWarning)
                for i in range(25):
                    np.testing.assert_allclose(objax.Jit(m)(X[: 1 + i % 4]), m(X[: 1 + i % 4]), rtol=1e-5)
        return run

    assert _run_threads(work(a), work(b)) == []
