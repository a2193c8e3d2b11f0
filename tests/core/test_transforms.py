"""Jit, Grad, GradValues, Jacobian, Hessian and Vectorize against closed forms and jax references."""

import warnings

import jax
import jax.numpy as jn
import numpy as np
import pytest

import objax


class Affine(objax.Module):
    def __init__(self, w, b):
        self.w = objax.TrainVar(jn.asarray(w, jn.float32))
        self.b = objax.TrainVar(jn.asarray(b, jn.float32))
        self.calls = objax.StateVar(jn.zeros((), jn.int32))

    def __call__(self, x):
        self.calls.value += 1
        return x @ self.w.value + self.b.value


# ----------------------------------------------------------------------------------------------- Jit
def test_jit_reads_and_writes_variables():
    m = Affine(np.eye(2), [1., 2.])
    f = objax.Jit(m)
    x = jn.array([[1., 1.]])
    np.testing.assert_allclose(f(x), [[2., 3.]])
    np.testing.assert_allclose(f(x), [[2., 3.]])
    assert int(m.calls.value) == 2  # state written back after each call
    m.b.assign(jn.array([0., 0.]))  # change outside: next call sees it (no frozen value)
    np.testing.assert_allclose(f(x), [[1., 1.]])
    assert list(f.vars().keys()) == ['(Jit)(Affine).w', '(Jit)(Affine).b', '(Jit)(Affine).calls']


def test_jit_function_needs_vc():
    with pytest.raises(ValueError, match='vc is required'):
        objax.Jit(lambda x: x)
    with pytest.raises(TypeError, match='must be a VarCollection'):
        objax.Jit(lambda x: x, [1])


def test_jit_static_args_compile_once_per_signature():
    m = Affine(np.eye(2), [0., 0.])
    traces = []

    def f(x, power, scale=1.0):
        traces.append((power, scale))
        return (m(x) ** power) * scale

    jf = objax.Jit(f, m.vars(), static_argnums=(1,))
    x = jn.ones((1, 2)) * 2
    for _ in range(3):
        np.testing.assert_allclose(jf(x, 2), [[4., 4.]])
    np.testing.assert_allclose(jf(x, 3), [[8., 8.]])
    assert [p for p, _ in traces] == [2, 3]
    assert int(m.calls.value) == 4

    traces.clear()
    jn_ = objax.Jit(f, m.vars(), static_argnames=('scale',))
    jn_(x, 1, scale=2.0)
    jn_(x, 1, scale=2.0)
    jn_(x, 1, scale=5.0)
    assert len(traces) == 2


def test_jit_random_state_advances_each_call():
    gen = objax.random.Generator(3)
    f = objax.Jit(lambda: objax.random.normal((3,), generator=gen), gen.vars())
    a, b = f(), f()
    assert not np.allclose(a, b)
    gen2 = objax.random.Generator(3)
    np.testing.assert_allclose(a, objax.random.normal((3,), generator=gen2))
    np.testing.assert_allclose(b, objax.random.normal((3,), generator=gen2))


def test_jit_variable_outside_collection_warns_naming_it_and_freezes_it():
    m = Affine(np.eye(2), [0., 0.])
    offset = objax.StateVar(jn.ones(2))

    def f(x):
        return m(x) + offset.value

    jf = objax.Jit(f, m.vars())
    with pytest.warns(objax.VariableOutsideCollectionWarning, match=r'reads variable "offset".*not in the Var'):
        np.testing.assert_allclose(jf(jn.ones((1, 2))), [[2., 2.]])
    offset.value = jn.full(2, 5.)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # warned once per compiled function and variable: no second warning
        np.testing.assert_allclose(jf(jn.ones((1, 2))), [[2., 2.]])  # the value is frozen, as in Objax 1.8
    assert int(m.calls.value) == 2
    np.testing.assert_allclose(objax.Jit(f, m.vars() + objax.VarCollection({'offset': offset}))(jn.ones((1, 2))),
                               [[6., 6.]])

    class Net(objax.Module):
        def __init__(self):
            self.inner = Affine(np.eye(2), [0., 0.])

        def __call__(self, x):
            return self.inner(x)

    net = Net()
    without_bias = objax.VarCollection({k: v for k, v in net.vars().items() if not k.endswith('.b')})
    with warnings.catch_warnings():
        warnings.simplefilter('error', objax.VariableOutsideCollectionWarning)  # strictness is opt-in
        with pytest.raises(objax.VariableOutsideCollectionWarning, match=r'"\(Net\)\.inner\(Affine\)\.b"'):
            objax.Jit(net, without_bias)(jn.ones((1, 2)))
    assert int(net.inner.calls.value) == 0  # the failed call changed nothing


def test_jit_nested_and_with_optimizer_refs():
    m = Affine(np.eye(2), [0., 0.])
    inner = objax.Jit(m)
    outer = objax.Jit(lambda x: inner(x) * 2, m.vars())
    np.testing.assert_allclose(outer(jn.ones((1, 2))), [[2., 2.]])
    assert int(m.calls.value) == 1
    # A TrainRef in the collection writes its TrainVar through the compiled call.
    ref = objax.TrainRef(m.w)
    step = objax.Jit(lambda: ref.assign(ref.value + 1), objax.VarCollection({'ref': ref}))
    step()
    np.testing.assert_allclose(m.w.value, np.eye(2) + 1)


def test_jit_exception_restores_values():
    m = Affine(np.eye(2), [0., 0.])
    before = [np.asarray(t) for t in m.vars().tensors()]

    def bad(x):
        m(x)
        raise RuntimeError('boom')

    with pytest.raises(RuntimeError, match='boom'):
        objax.Jit(bad, m.vars())(jn.ones((1, 2)))
    for t, b in zip(m.vars().tensors(), before):
        assert not isinstance(t, jax.core.Tracer)
        np.testing.assert_array_equal(t, b)


# ------------------------------------------------------------------------------------ derivatives
def test_grad_values_closed_form():
    w0, b0 = np.array([[1., 2.], [3., 4.]], np.float32), np.array([0.5, -0.5], np.float32)
    m = Affine(w0, b0)
    x = np.array([[1., -1.], [2., 0.5]], np.float32)

    def loss(x):
        y = m(x)
        return (y ** 2).sum(), y

    gv = objax.GradValues(loss, m.vars())
    grads, outputs = gv(jn.asarray(x))
    y = x @ w0 + b0
    np.testing.assert_allclose(grads[0], x.T @ (2 * y), rtol=1e-6)  # d/dw sum(y^2)
    np.testing.assert_allclose(grads[1], (2 * y).sum(0), rtol=1e-6)
    assert len(outputs) == 2
    np.testing.assert_allclose(outputs[0], (y ** 2).sum(), rtol=1e-6)
    np.testing.assert_allclose(outputs[1], y, rtol=1e-6)
    assert int(m.calls.value) == 1  # state changes inside f are kept
    assert not isinstance(m.calls.value, jax.core.Tracer)

    grads_only = objax.Grad(lambda x: (m(x) ** 2).sum(), m.vars())(jn.asarray(x))
    np.testing.assert_allclose(grads_only[0], grads[0], rtol=1e-6)
    # Scalar output -> one-element list.
    _, out = objax.GradValues(lambda x: m(x).sum(), m.vars())(jn.asarray(x))
    assert isinstance(out, list) and len(out) == 1


def test_grad_input_argnums_first_and_state_vars_ignored():
    m = Affine(np.eye(2), [0., 0.])
    gv = objax.GradValues(lambda x, c: (m(x) * c).sum(), m.vars(), input_argnums=(0, 1))
    x = jn.array([[1., 2.]])
    grads, _ = gv(x, 3.0)
    assert len(grads) == 4  # x, c, w, b  (StateVar not differentiated)
    np.testing.assert_allclose(grads[0], 3 * np.ones((1, 2)) @ np.eye(2).T)
    np.testing.assert_allclose(grads[1], (x @ np.eye(2)).sum())
    np.testing.assert_allclose(grads[2], 3 * np.array(x).T @ np.ones((1, 2)))
    with pytest.raises(ValueError, match='input_argnums contains 5'):
        objax.GradValues(lambda x: x.sum(), None, input_argnums=(5,))(x)


def test_grad_values_inside_jit_with_sgd_matches_jax():
    w0 = np.array([[0.5, -1.], [2., 1.]], np.float32)
    m = Affine(w0, [0., 0.])
    x = jn.array([[1., 2.], [3., -1.]])
    gv = objax.GradValues(lambda x: (m(x) ** 2).mean(), m.vars())
    opt = objax.optimizer.SGD(m.vars())

    def step(x):
        g, v = gv(x)
        opt(0.1, g)
        return v

    jstep = objax.Jit(step, gv.vars() + opt.vars())
    params = (jn.asarray(w0), jn.zeros(2))
    for _ in range(3):
        jstep(x)
        g = jax.grad(lambda p: ((x @ p[0] + p[1]) ** 2).mean())(params)
        params = jax.tree.map(lambda p, g: p - 0.1 * g, params, g)
    np.testing.assert_allclose(m.w.value, params[0], rtol=1e-6)
    np.testing.assert_allclose(m.b.value, params[1], rtol=1e-6, atol=1e-7)


def test_jacobian_and_hessian():
    a = objax.TrainVar(jn.array([1., 2., 3.]))
    x = jn.array([0.5, -1., 2.])
    jac = objax.Jacobian(lambda x: a.value * x ** 2, objax.VarCollection({'a': a}), input_argnums=(0,))(x)
    np.testing.assert_allclose(jac[0], np.diag(2 * np.array(a.value) * np.array(x)))
    np.testing.assert_allclose(jac[1], np.diag(np.array(x) ** 2))
    hess = objax.Hessian(lambda x: (a.value * x ** 3).sum(), objax.VarCollection({'a': a}), input_argnums=(0,))(x)
    np.testing.assert_allclose(hess[0][0], np.diag(6 * np.array(a.value) * np.array(x)))
    np.testing.assert_allclose(hess[0][1], np.diag(3 * np.array(x) ** 2))
    np.testing.assert_allclose(hess[1][1], np.zeros((3, 3)))


# ------------------------------------------------------------------------------------- Vectorize
def test_vectorize_batch_axis_and_shared_variables():
    m = Affine(np.array([[2.]]), [1.])
    f = objax.Vectorize(lambda x, c: m(x[None])[0] * c, m.vars(), batch_axis=(0, None))
    x = jn.arange(4.).reshape(4, 1)
    np.testing.assert_allclose(f(x, 3.0), 3 * (np.arange(4.).reshape(4, 1) * 2 + 1))
    assert int(m.calls.value) == 1  # per-example counts (all 1) merged by mean
    g = objax.Vectorize(lambda x: x.sum(), objax.VarCollection(), batch_axis=(1,))
    np.testing.assert_allclose(g(jn.ones((3, 5))), 3 * np.ones(5))
    with pytest.raises(ValueError, match='got 3 positional arguments but batch_axis'):
        f(x, 1.0, 2.0)
    with pytest.raises(ValueError, match='disagree on the batch size'):
        objax.Vectorize(lambda a, b: a + b, objax.VarCollection(), batch_axis=(0, 0))(jn.ones(2), jn.ones(3))


def test_vectorize_random_state_gives_each_example_its_own_key():
    gen = objax.random.Generator(5)
    f = objax.Vectorize(lambda x: x + objax.random.normal((), generator=gen), gen.vars())
    out = np.asarray(f(jn.zeros(6)))
    assert len(set(out.round(6).tolist())) == 6
    key_after = np.asarray(gen.key.value)
    out2 = np.asarray(f(jn.zeros(6)))
    assert not np.allclose(out, out2) and not np.array_equal(key_after, gen.key.value)


def test_vectorize_unchanged_variables_are_bit_identical():
    w = objax.TrainVar(jn.array([0.1, 0.2, 0.3]))
    before = np.asarray(w.value)
    objax.Vectorize(lambda x: x * w.value, objax.VarCollection({'w': w}))(jn.ones((7, 3)))
    np.testing.assert_array_equal(w.value, before)
