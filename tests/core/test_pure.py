"""The pure-function primitive (objax._core.pure.Pure), variable writes inside gradient transforms (kept after the
call, TrainVars included, as in Objax 1.8) and writes to variables outside a compiled function's collection."""

import jax
import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax._core.pure import Pure

X = np.array([[1., 2.], [3., -1.], [0.5, 0.5]], np.float32)
Y = np.array([1., -2., 0.25], np.float32)


# ------------------------------------------------------------------------------------------- Pure itself
def test_pure_runs_with_given_values_and_reports_changes_without_touching_variables():
    w = objax.TrainVar(jn.array([1., 2.]))
    s = objax.StateVar(jn.array(0.))
    ref = objax.TrainRef(w)
    untouched = objax.StateVar(jn.array(7.))

    def f(x):
        s.value = s.value + x.sum()
        return (w.value * x).sum() + untouched.value

    pure = Pure(f, objax.VarCollection({'ref': ref, 's': s, 'w': w, 'u': untouched}))
    assert [id(v) for v in pure.variables] == [id(w), id(s), id(untouched)]  # TrainRef -> its TrainVar, deduped
    values = pure.values()
    np.testing.assert_array_equal(values[0], [1., 2.])
    out, changes = pure([jn.array([10., 20.]), jn.array(5.), jn.array(1.)], jn.array([1., 1.]))
    assert float(out) == 31.
    assert list(changes) == [1] and float(changes[1]) == 7.  # only s was written
    # Nothing changed outside: the call is pure.
    np.testing.assert_array_equal(w.value, [1., 2.])
    assert float(s.value) == 0. and float(untouched.value) == 7.
    pure.write(changes)
    assert float(s.value) == 7.
    with pytest.raises(ValueError, match='got 1 values for 3 variables'):
        pure([jn.zeros(2)], jn.ones(2))


def test_pure_is_traceable_and_exceptions_change_nothing():
    w = objax.TrainVar(jn.array([1., 2.]))
    count = objax.StateVar(jn.array(0))

    def f(x):
        count.value += 1
        return (w.value * x).sum()

    pure = Pure(f, objax.VarCollection({'w': w, 'count': count}))
    out, changes = jax.jit(pure)(pure.values(), jn.array([3., 4.]))
    assert float(out) == 11. and int(changes[1]) == 1 and list(changes) == [1]
    grad = jax.grad(lambda v: pure([v, count.value], jn.array([3., 4.]))[0])(w.value)
    np.testing.assert_array_equal(grad, [3., 4.])

    def bad(x):
        count.value += 1
        raise RuntimeError('boom')

    with pytest.raises(RuntimeError, match='boom'):
        Pure(bad, objax.VarCollection({'count': count}))([jn.array(5)], 1)
    assert int(count.value) == 0 and not isinstance(count.value, jax.core.Tracer)


def test_pure_inside_a_transform_sees_and_writes_the_transform_values():
    # Nested: a Pure inside a Jit reads the Jit's traced values and writes into them (kept by the Jit).
    w = objax.TrainVar(jn.array([1., 2.]))
    inner = Pure(lambda: w.assign(w.value * 2), objax.VarCollection({'w': w}))

    def step():
        _, changes = inner(inner.values())
        inner.write(changes)
        return w.value

    out = objax.Jit(step, objax.VarCollection({'w': w}))()
    np.testing.assert_array_equal(out, [2., 4.])
    np.testing.assert_array_equal(w.value, [2., 4.])


# ------------------------------------------------------------------------ writes inside gradient transforms
def _make():
    w = objax.TrainVar(jn.zeros(2))
    b = objax.TrainVar(jn.zeros(1))
    seen = objax.StateVar(jn.array(0.))
    return w, b, seen, objax.VarCollection({'w': w, 'b': b, 'seen': seen})


def _reference_grad(w0, b0, shift_first: bool):
    """Gradient of the loss below w.r.t. (w, b) at their entry values, computed with plain jax."""
    def loss(w, b):
        if shift_first:
            w = w - 1
        return ((X @ w + b - Y) ** 2).mean()
    return jax.grad(loss, argnums=(0, 1))(w0, b0)


def _loss_fn(w, b, seen, shift_first: bool):
    def loss(x, y):
        if shift_first:
            w.assign(w.value - 1)
        value = ((x @ w.value + b.value - y) ** 2).mean()
        b.assign(b.value + 1)
        if not shift_first:
            w.assign(w.value - 1)
        seen.value += 1
        return value
    return loss


@pytest.mark.parametrize('shift_first', [False, True])
@pytest.mark.parametrize('jit', [False, True])
def test_gradients_keep_every_write_and_differentiate_at_entry_values(shift_first, jit):
    for transform in (objax.Grad, objax.GradValues):
        w, b, seen, vc = _make()
        t = transform(_loss_fn(w, b, seen, shift_first), vc)
        if jit:
            def step(x, y):
                out = t(x, y)
                w.assign(w.value * 3)  # after the gradient: sees the value the loss left
                return out
            call = objax.Jit(step, vc)
        else:
            call = t
        out = call(X, Y)
        grads = out[0] if transform is objax.GradValues else out
        gw, gb = _reference_grad(jn.zeros(2), jn.zeros(1), shift_first)
        np.testing.assert_allclose(grads[0], gw, rtol=1e-6)
        np.testing.assert_allclose(grads[1], gb, rtol=1e-6)
        np.testing.assert_array_equal(w.value, [-3., -3.] if jit else [-1., -1.])
        np.testing.assert_array_equal(b.value, [1.])
        assert float(seen.value) == 1.
        if transform is objax.GradValues:
            expected = ((X @ (jn.zeros(2) - (1 if shift_first else 0)) - Y) ** 2).mean()
            np.testing.assert_allclose(out[1][0], expected, rtol=1e-6)


@pytest.mark.parametrize('jit', [False, True])
def test_jacobian_and_hessian_keep_writes(jit):
    w, b, seen, vc = _make()

    def f(x):
        out = x @ w.value + b.value
        w.assign(w.value + 2)
        seen.value += 1
        return out

    jac = objax.Jacobian(f, vc)
    call = objax.Jit(jac, vc) if jit else jac
    jw, jb = call(X)
    np.testing.assert_allclose(jw, X)  # d(Xw + b)/dw = X at any w
    np.testing.assert_allclose(jb, np.ones((3, 1)))
    np.testing.assert_array_equal(w.value, [2., 2.])
    assert float(seen.value) == 1.

    w, b, seen, vc = _make()

    def g(x):
        out = ((x @ w.value + b.value) ** 2).sum()
        b.assign(b.value - 5)
        seen.value += 1
        return out

    hess = objax.Hessian(g, vc)
    call = objax.Jit(hess, vc) if jit else hess
    h = call(X)
    ref = jax.hessian(lambda w_, b_: ((X @ w_ + b_) ** 2).sum(), argnums=(0, 1))(jn.zeros(2), jn.zeros(1))
    np.testing.assert_allclose(h[0][0], ref[0][0], rtol=1e-6)
    np.testing.assert_allclose(h[0][1], ref[0][1], rtol=1e-6)
    np.testing.assert_allclose(h[1][1], ref[1][1], rtol=1e-6)
    np.testing.assert_array_equal(b.value, [-5.])
    assert float(seen.value) == 1.


# ------------------------------------------------------------------ writes outside the compiled collection
def test_jit_write_outside_collection_raises_naming_it_and_changes_nothing():
    model = objax.nn.Linear(2, 2)
    count = objax.StateVar(jn.array(0))
    outside = objax.StateVar(jn.array(0.))

    def f(x):
        count.value += 1
        model.w.assign(model.w.value * 0)
        outside.assign(jn.array(1.))  # a constant write: would happen once at trace time, then never again
        return model(x)

    vc = model.vars() + objax.VarCollection({'count': count})
    before = [np.asarray(v) for v in vc.tensors()]
    with pytest.raises(objax.VariableOutsideCollectionError, match=r'Jit\(.*writes variable "outside"'):
        objax.Jit(f, vc)(X)
    for v, b in zip(vc.tensors(), before):
        np.testing.assert_array_equal(v, b)
    assert float(outside.value) == 0. and int(count.value) == 0
    # With the variable in the collection the same function works, every call.
    jf = objax.Jit(f, vc + objax.VarCollection({'outside': outside}))
    jf(X)
    jf(X)
    assert float(outside.value) == 1. and int(count.value) == 2
    np.testing.assert_array_equal(model.w.value, np.zeros((2, 2)))


def test_eager_code_and_non_compiled_transforms_write_any_variable():
    w = objax.TrainVar(jn.ones(2))
    log = objax.StateVar(jn.array(0.))

    def loss(x):
        log.value = jn.array(3.)  # not in the collection: an eager gradient just writes it
        return (w.value * x).sum()

    g = objax.Grad(loss, objax.VarCollection({'w': w}))(jn.array([1., 2.]))
    np.testing.assert_array_equal(g[0], [1., 2.])
    assert float(log.value) == 3.


def test_variables_created_inside_a_compiled_function_are_its_own():
    def f(x):
        tmp = objax.StateVar(jn.zeros(2))  # created during the trace: no warning, no error
        tmp.value = tmp.value + x
        return tmp.value * 2

    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        np.testing.assert_array_equal(objax.Jit(f, objax.VarCollection())(jn.array([1., 2.])), [2., 4.])


def test_exports():
    assert issubclass(objax.VariableOutsideCollectionError, ValueError)
    assert issubclass(objax.VariableOutsideCollectionWarning, UserWarning)
    assert objax.UnreadableFileError is objax.io.UnreadableFileError
    assert issubclass(objax.UnreadableFileError, ValueError)
