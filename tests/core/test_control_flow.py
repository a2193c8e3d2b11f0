"""Scan, ForiLoop, WhileLoop and Cond with variables read and written in their bodies, against the same Python
loops and branches run eagerly; under Jit and GradValues; and their errors."""

import jax
import jax.numpy as jn
import numpy as np
import pytest

import objax


class Accumulator(objax.Module):
    """Reads a TrainVar, writes two StateVars and draws from its own random generator at each call."""

    def __init__(self, seed=0):
        self.w = objax.TrainVar(jn.array([1., -2., 0.5]))
        self.total = objax.StateVar(jn.zeros(3))
        self.calls = objax.StateVar(jn.zeros((), jn.int32))
        self.gen = objax.random.Generator(seed)

    def __call__(self, carry, x):
        noise = objax.random.normal((3,), generator=self.gen)
        self.total.value += x * self.w.value + noise
        self.calls.value += 1
        return carry * 0.5 + self.total.value, (self.total.value * self.w.value).sum()


def _state(m):
    return [np.asarray(v) for v in m.vars().tensors()]


def _assert_same(a, b, rtol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=1e-6)


XS = jn.linspace(-1, 1, 12).reshape(4, 3)
INIT = jn.array([0.1, 0.2, 0.3])


def _python_scan(m, init, xs, reverse=False):
    carry, ys = init, [None] * len(xs)
    for i in (reversed(range(len(xs))) if reverse else range(len(xs))):
        carry, ys[i] = m(carry, xs[i])
    return carry, jn.stack(ys)


# ----------------------------------------------------------------------------------------------------- Scan
@pytest.mark.parametrize('reverse', [False, True])
def test_scan_writes_match_the_python_loop(reverse):
    eager, scanned = Accumulator(), Accumulator()
    scan = objax.Scan(scanned)
    for _ in range(2):  # the second call starts from the state the first left (random keys included)
        _assert_same(scan(INIT, XS, reverse=reverse), _python_scan(eager, INIT, XS, reverse))
        _assert_same(_state(scanned), _state(eager))
    assert int(scanned.calls.value) == 8


def test_scan_under_jit_and_gradvalues_matches_the_python_loop():
    eager, scanned = Accumulator(), Accumulator()
    scan = objax.Scan(scanned)

    def loss(m, run):
        def f(xs):
            carry, ys = run(INIT, xs)
            return (carry ** 2).sum() + ys.sum()
        return objax.GradValues(f, m.vars(), input_argnums=(0,))

    g_eager = loss(eager, lambda i, xs: _python_scan(eager, i, xs))
    g_scan = objax.Jit(loss(scanned, scan))
    for _ in range(2):
        _assert_same(g_scan(XS), g_eager(XS), rtol=1e-5)
        _assert_same(_state(scanned), _state(eager), rtol=1e-5)


def test_scan_length_without_xs_and_read_only_values_are_not_frozen():
    w = objax.TrainVar(jn.array(2.))
    scan = objax.Scan(lambda c, _: (c * w.value, c), objax.VarCollection(w=w))
    jitted = objax.Jit(scan, static_argnames=('length',))
    carry, ys = scan(jn.array(1.), length=3)
    assert float(carry) == 8. and ys.tolist() == [1., 2., 4.]
    assert float(jitted(jn.array(1.), length=3)[0]) == 8.
    w.assign(jn.array(3.))  # the body reads w's current value: nothing was baked into a program
    assert float(scan(jn.array(1.), length=3)[0]) == 27.
    assert float(jitted(jn.array(1.), length=3)[0]) == 27.


def test_the_body_is_traced_again_only_when_it_first_writes_a_variable():
    state = objax.StateVar(jn.array(0.))
    traces = []

    def body(c, x):
        traces.append(1)
        state.value += x
        return c, x

    scan = objax.Scan(body, objax.VarCollection(state=state))
    scan(jn.array(0.), jn.ones(3))
    assert len(traces) == 2  # the first trace learnt that `state` is written
    scan(jn.array(0.), jn.ones(3))
    assert len(traces) == 3 and float(state.value) == 6.


def test_scan_follows_its_module():
    class Body(objax.Module):
        def __init__(self):
            self.layers = objax.nn.Sequential([objax.nn.Linear(2, 2)])

        def __call__(self, c, x):
            return self.layers(c, training=True), x

    body = Body()
    scan = objax.Scan(body)
    scan(jn.ones((3, 2)), length=2)
    body.layers.append(objax.nn.BatchNorm0D(2, momentum=0.5))  # writes variables that were not collected
    scan(jn.ones((3, 2)), length=2)
    assert not np.allclose(body.layers[1].running_var.value, 1)
    assert '(Scan)(Body).layers(Sequential)[1](BatchNorm0D).running_mean' in scan.vars()


# ------------------------------------------------------------------------------------------------- ForiLoop
def test_fori_loop_writes_match_the_python_loop_and_differentiate():
    eager, looped = Accumulator(), Accumulator()
    fori = objax.ForiLoop(lambda i, c: looped(c, XS[i])[0], looped.vars())
    carry = INIT
    for i in range(1, 4):
        carry = eager(carry, XS[i])[0]
    _assert_same(fori(1, 4, INIT), carry)
    _assert_same(_state(looped), _state(eager))
    _assert_same(objax.Jit(fori)(0, 2, INIT), eager(eager(INIT, XS[0])[0], XS[1])[0])
    _assert_same(_state(looped), _state(eager))
    grad = objax.Grad(lambda c: fori(0, 3, c).sum(), objax.VarCollection(w=looped.w), input_argnums=(0,))(INIT)
    grad_eager = objax.Grad(lambda c: eager(eager(eager(c, XS[0])[0], XS[1])[0], XS[2])[0].sum(),
                            objax.VarCollection(w=eager.w), input_argnums=(0,))(INIT)
    _assert_same(grad, grad_eager, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ WhileLoop
def test_while_loop_writes_match_the_python_loop():
    eager, looped = Accumulator(), Accumulator()
    limit = objax.StateVar(jn.array(5))

    def cond(c):
        return looped.calls.value < limit.value

    loop = objax.WhileLoop(cond, lambda c: looped(c, XS[0])[0], looped.vars() + objax.VarCollection(limit=limit))
    carry = INIT
    while eager.calls.value < 5:
        carry = eager(carry, XS[0])[0]
    _assert_same(loop(INIT), carry)
    _assert_same(_state(looped), _state(eager))
    limit.value = jn.array(7)  # read as a value: the jitted loop sees the new limit
    _assert_same(objax.Jit(loop)(INIT), eager(eager(INIT, XS[0])[0], XS[0])[0])
    assert int(looped.calls.value) == 7


def test_while_loop_condition_may_not_write():
    state = objax.StateVar(jn.array(0))

    def cond(c):
        state.value += 1
        return c < 3

    loop = objax.WhileLoop(cond, lambda c: c + 1, objax.VarCollection(state=state))
    with pytest.raises(ValueError, match='the loop condition writes "state"'):
        loop(jn.array(0))
    assert int(state.value) == 0


def test_while_loop_of_modules_needs_no_collection():
    counter = objax.nn.Linear(1, 1)
    with pytest.raises(ValueError, match='vc is required'):
        objax.WhileLoop(lambda c: c < 3, counter)
    loop = objax.WhileLoop(objax.Function(lambda c: c.sum() < 3, objax.VarCollection()), counter)
    assert set(loop.vc.keys()) == {'body_fn(Linear).b', 'body_fn(Linear).w'}


# ----------------------------------------------------------------------------------------------------- Cond
def _branches(m):
    def true_fn(c, x):
        return m(c, x)[0]

    def false_fn(c, x):
        m.calls.value -= 1
        return c - x

    return true_fn, false_fn


@pytest.mark.parametrize('jit', [False, True])
def test_cond_keeps_what_the_taken_branch_wrote(jit):
    eager, branched = Accumulator(), Accumulator()
    cond = objax.Cond(*_branches(branched), branched.vars())
    run = objax.Jit(cond) if jit else cond
    eager_true, eager_false = _branches(eager)
    for pred in (True, False, jn.array(True), jn.array(False)):
        _assert_same(run(pred, INIT, XS[0]), (eager_true if pred else eager_false)(INIT, XS[0]))
        _assert_same(_state(branched), _state(eager))
    assert int(branched.calls.value) == 0  # two calls up, two down


def test_cond_differentiates_the_taken_branch():
    m = Accumulator()
    cond = objax.Cond(lambda x: (m.w.value * x).sum(), lambda x: (m.w.value ** 2 * x).sum(), m.vars())
    g_true = objax.Grad(lambda x: cond(True, x), objax.VarCollection(w=m.w))(XS[0])
    g_false = objax.Grad(lambda x: cond(False, x), objax.VarCollection(w=m.w))(XS[0])
    _assert_same(g_true, [XS[0]])
    _assert_same(g_false, [2 * m.w.value * XS[0]])


def test_cond_branches_that_disagree_are_named():
    state = objax.StateVar(jn.zeros(2))
    vc = objax.VarCollection(state=state)
    cond = objax.Cond(lambda x: (x, x), lambda x: (x, x[:1]), vc)
    with pytest.raises(ValueError, match=r'output\[1\] is float32\[2\] in true_fn and float32\[1\] in false_fn'):
        cond(True, jn.ones(2))
    cond = objax.Cond(lambda x: x, lambda x: [x], vc)
    with pytest.raises(ValueError, match='differ in structure'):
        cond(True, jn.ones(2))

    def grows(x):
        state.value = jn.zeros(3)
        return x

    cond = objax.Cond(grows, lambda x: x, vc)
    with pytest.raises(ValueError, match=r'variable "state" is float32\[2\] before grows and float32\[3\] after'):
        cond(True, jn.ones(2))
    assert state.value.shape == (2,)


# ------------------------------------------------------------------------------------ errors of all of them
def _transforms(body_writes, vc):
    return {
        'Scan': lambda: objax.Scan(lambda c, x: (body_writes(c), x), vc)(jn.array(0.), jn.ones(2)),
        'ForiLoop': lambda: objax.ForiLoop(lambda i, c: body_writes(c), vc)(0, 2, jn.array(0.)),
        'WhileLoop': lambda: objax.WhileLoop(lambda c: c < 2, lambda c: body_writes(c) + 1, vc)(jn.array(0.)),
        'Cond': lambda: objax.Cond(body_writes, lambda c: c, vc)(True, jn.array(0.)),
    }


@pytest.mark.parametrize('name', ['Scan', 'ForiLoop', 'WhileLoop', 'Cond'])
def test_a_write_outside_the_collection_raises_naming_it(name):
    inside, outside = objax.StateVar(jn.array(0.)), objax.StateVar(jn.array(0.))

    def body(c):
        inside.value += 1
        outside.value += 1
        return c

    run = _transforms(body, objax.VarCollection(inside=inside))[name]
    with pytest.raises(objax.VariableOutsideCollectionError, match=f'{name}.* writes variable "outside"'):
        run()
    with pytest.raises(objax.VariableOutsideCollectionError):
        objax.Jit(run, objax.VarCollection(inside=inside, outside=outside))()
    assert float(inside.value) == 0 and float(outside.value) == 0


@pytest.mark.parametrize('name', ['Scan', 'ForiLoop', 'WhileLoop'])
def test_a_loop_body_changing_a_variable_dtype_raises_naming_it(name):
    count = objax.StateVar(jn.array(0))

    def body(c):
        count.value = count.value + 0.5
        return c

    with pytest.raises(ValueError, match=r'variable "count" is int32\[\] before .* and float32\[\] after'):
        _transforms(body, objax.VarCollection(count=count))[name]()
