"""objax._core.refs: the current JAX trace as the per-call path reads it."""

import threading

import jax
import jax.numpy as jn
import numpy as np

from objax._core.refs import EVAL_TRACE, TRACE, current_trace, jax_tracing


def test_trace_value_is_the_current_jax_trace_under_each_transform():
    assert TRACE.value is EVAL_TRACE and not jax_tracing()
    seen = []

    def f(x):
        seen.append((TRACE.value, current_trace(())))
        return (x * 2).sum()

    jax.jit(f)(jn.ones(2))
    jax.grad(f)(jn.ones(2))
    jax.vmap(f)(jn.ones((3, 2)))
    jax.jit(jax.grad(f))(jn.ones(2))
    assert len(seen) == 4
    for mine, theirs in seen:
        assert mine is theirs and mine is not EVAL_TRACE
    assert TRACE.value is EVAL_TRACE


def test_trace_value_is_per_thread():
    inside, outside = [], []
    started, release = threading.Event(), threading.Event()

    def traced(x):
        started.set()
        release.wait(10)
        inside.append(TRACE.value is not EVAL_TRACE)
        return x + 1

    t = threading.Thread(target=lambda: jax.jit(traced)(jn.ones(1)))
    t.start()
    started.wait(10)
    outside.append(TRACE.value is EVAL_TRACE)  # this thread traces nothing while the other one does
    release.set()
    t.join()
    assert inside == [True] and outside == [True]
    np.testing.assert_equal(np.asarray(jax.jit(lambda x: x + 1)(jn.ones(1))), [2.])
