"""ExponentialMovingAverage and ExponentialMovingAverageModule: the spec's examples (Objax 1.8's EMA state,
averages and variable names), optax.ema and closed forms."""

import jax.numpy as jn
import numpy as np
import optax
import pytest

import objax
from objax.optimizer import ExponentialMovingAverage, ExponentialMovingAverageModule

TOL = dict(rtol=1e-6, atol=1e-6)


class _Net(objax.Module):
    def __init__(self):
        rng = np.random.RandomState(0)
        self.w = objax.TrainVar(jn.asarray(rng.randn(3, 2), jn.float32))
        self.b = objax.TrainVar(jn.asarray(rng.randn(2), jn.float32))
        self.stat = objax.StateVar(jn.asarray(rng.randn(2), jn.float32))   # float state: averaged
        self.count = objax.StateVar(jn.array(0, jn.int32))                 # integer state: averaged too
        self.gen = objax.random.Generator(3)                               # random key: not averaged

    def __call__(self, x):
        return x @ self.w.value + self.b.value + self.stat.value


def _new_values(step):
    rng = np.random.RandomState(10 + step)
    return [jn.asarray(rng.randn(2), jn.float32), jn.asarray(rng.randn(3, 2), jn.float32),
            jn.asarray(rng.randn(2), jn.float32)]


def _set(net, values):
    """values in the EMA's slot order: the float StateVar first, then the TrainVars w and b."""
    net.stat.value = values[0]
    net.w.assign(values[1])
    net.b.assign(values[2])


def _spec_example(debias):
    v = objax.TrainVar(jn.array([100.0, -1.0]))
    ema = ExponentialMovingAverage(objax.VarCollection({'v': v}), momentum=0.9, debias=debias, eps=1e-6)
    ema()
    return v, ema


def test_spec_example_without_debias():
    v, ema = _spec_example(False)
    refs, values = ema.refs_and_values()
    np.testing.assert_allclose(values[0], [10, -0.1], rtol=1e-6)
    assert int(ema.step.value) == 1
    # replace_vars runs with the average and gives the variable its value back.
    seen = ema.replace_vars(lambda: np.asarray(v.value))()
    np.testing.assert_allclose(seen, [10, -0.1], rtol=1e-6)
    np.testing.assert_array_equal(v.value, [100, -1])


def test_spec_example_with_debias():
    v, ema = _spec_example(True)
    np.testing.assert_allclose(ema.refs_and_values()[1][0], [99.99909, -0.9999909], rtol=1e-6)
    np.testing.assert_allclose(ema.replace_vars(lambda: np.asarray(v.value))(), [99.99909, -0.9999909],
                               rtol=1e-6)
    np.testing.assert_array_equal(v.value, [100, -1])


@pytest.mark.parametrize('debias', [False, True])
def test_state_order_names_and_zero_start(debias):
    net = _Net()
    ema = ExponentialMovingAverage(net.vars(), debias=debias)
    names = list(ema.vars().keys())
    assert names[0] == '(ExponentialMovingAverage).step'
    assert names[1:] == [f'(ExponentialMovingAverage).refs(ModuleList)[{i}]' for i in range(4)] + \
        [f'(ExponentialMovingAverage).m(ModuleList)[{i}]' for i in range(4)]
    assert ema.step.value.dtype == jn.uint32 and int(ema.step.value) == 0
    np.testing.assert_array_equal(ema.step._reduce(jn.array([3, 4], jn.uint32)), 3)  # keeps the first copy
    # Non-trainable variables first, as they are (random keys left out), then TrainRefs to the TrainVars.
    assert ema.refs[0] is net.stat and ema.refs[1] is net.count
    assert [type(r) for r in ema.refs[2:]] == [objax.TrainRef, objax.TrainRef]
    assert [id(r.ref) for r in ema.refs[2:]] == [id(net.w), id(net.b)]
    for m, r in zip(ema.m, ema.refs):
        assert isinstance(m, objax.StateVar) and m.value.dtype == r.value.dtype and m.shape == r.shape
        assert not np.any(np.asarray(m.value))
    assert all(np.all(np.asarray(x) == 0) for x in ema.refs_and_values()[1])  # also debiased, before any call


def test_trainrefs_in_vc_resolve_to_their_trainvar():
    net = _Net()
    opt = objax.optimizer.Momentum(net.vars())
    ema = ExponentialMovingAverage(opt.vars() + net.vars())
    # opt.vars(): TrainRefs to w and b, then the momentum slots (StateVars); net.vars() repeats w and b.
    trained = [r for r in ema.refs if isinstance(r, objax.TrainRef)]
    assert [id(r.ref) for r in trained] == [id(net.w), id(net.b)]
    states = [r for r in ema.refs if not isinstance(r, objax.TrainRef)]
    assert [id(r) for r in states] == [id(r) for r in list(opt.m) + [net.stat, net.count]]
    assert [id(r) for r in ema.refs[-2:]] == [id(r) for r in trained]


@pytest.mark.parametrize('jit', [False, True])
@pytest.mark.parametrize('debias', [False, True])
def test_ema_matches_optax(jit, debias):
    """optax.ema also starts at zero and debiases by 1 - decay^t, which is objax's formula with eps=0."""
    net = _Net()
    ema = ExponentialMovingAverage(net.vars(), momentum=0.8, debias=debias, eps=0.0)
    update = objax.Jit(ema, ema.vars()) if jit else ema
    read = objax.Jit(lambda: ema.refs_and_values()[1], ema.vars()) if jit else lambda: ema.refs_and_values()[1]
    tx = optax.ema(0.8, debias=debias)
    state = tx.init(_new_values(0))
    for step in range(5):
        values = _new_values(step)
        _set(net, values)
        update()
        want, state = tx.update(values, state)
        got = read()
        assert len(got) == 4
        for a, b in zip([got[0]] + got[2:], want):
            np.testing.assert_allclose(a, b, **TOL)
    assert int(ema.step.value) == 5


def test_debias_closed_form_with_eps():
    net = _Net()
    ema = ExponentialMovingAverage(net.vars(), momentum=0.8, debias=True, eps=1e-3)
    history = []
    for step in range(3):
        _set(net, _new_values(step))
        history.append(np.asarray(_new_values(step)[1], np.float64))
        ema()
    m = sum(0.2 * 0.8 ** (2 - k) * x for k, x in enumerate(history))
    want = m / (1 - (1 - 1e-3) * 0.8 ** 3)
    np.testing.assert_allclose(ema.refs_and_values()[1][2], want, **TOL)
    assert not np.allclose(want, m / (1 - 0.8 ** 3), **TOL)  # eps really enters the formula


def test_integer_state_is_averaged_in_its_dtype():
    net = _Net()
    ema = ExponentialMovingAverage(net.vars(), momentum=0.5)
    for count in (10, 20, 40):
        net.count.value = jn.array(count, jn.int32)
        ema()
    # m: 0 -> 5 -> 12.5 (rounded to 12) -> 26; computed in floats, so no wrap-around, stored as int32.
    got = ema.refs_and_values()[1][1]
    assert got.dtype == jn.int32 and int(got) == 26
    net.count.value = jn.array(0, jn.int32)
    ema()
    assert int(ema.m[1].value) == 13  # (26 + 0) / 2: decreasing values do not wrap around either


@pytest.mark.parametrize('jit', [False, True])
def test_replace_vars_runs_with_averages_and_restores(jit):
    net = _Net()
    ema = ExponentialMovingAverage(net.vars(), momentum=0.5)
    values = _new_values(0)
    _set(net, values)
    ema()
    stat, w, b = [0.5 * np.asarray(v) for v in values]
    x = jn.asarray(np.random.RandomState(5).randn(4, 3), jn.float32)
    f = ema.replace_vars(net)
    if jit:
        f = objax.Jit(f, net.vars() + ema.vars())
    np.testing.assert_allclose(f(x), np.asarray(x) @ w + b + stat, **TOL)
    for var, value in zip([net.stat, net.w, net.b], values):  # the network got its own values back
        np.testing.assert_array_equal(var.value, value)


def test_update_is_all_or_nothing():
    """A momentum array that broadcasts with one variable but not another refuses the whole update."""
    w = objax.TrainVar(jn.ones((3, 2)))
    b = objax.TrainVar(jn.ones(2))
    for order in ([('w', w), ('b', b)], [('b', b), ('w', w)]):
        ema = ExponentialMovingAverage(objax.VarCollection(order), momentum=jn.full((3, 2), 0.5))
        with pytest.raises(ValueError, match=r'nothing was changed:\n  .*shape \(3, 2\), expected \(2,\)'):
            ema()
        assert int(ema.step.value) == 0
        assert all(not np.any(np.asarray(m.value)) for m in ema.m)


@pytest.mark.parametrize('jit', [False, True])
def test_ema_module(jit):
    model = objax.nn.Linear(3, 2)
    ema_model = ExponentialMovingAverageModule(model, momentum=0.9, debias=True)
    opt = objax.optimizer.SGD(model.vars())
    x = jn.asarray(np.random.RandomState(2).randn(5, 3), jn.float32)
    gv = objax.GradValues(lambda: ((model(x) - 1) ** 2).mean(), model.vars())

    def train():
        g, _ = gv()
        opt(0.1, g)
        ema_model.update_ema()

    train_op = objax.Jit(train, gv.vars() + opt.vars() + ema_model.vars()) if jit else train
    predict = objax.Jit(ema_model) if jit else ema_model
    w_hist, b_hist = [], []
    for _ in range(4):
        train_op()
        w_hist.append(np.asarray(model.w.value, np.float64))
        b_hist.append(np.asarray(model.b.value, np.float64))
    weights = np.array([0.1 * 0.9 ** (3 - k) for k in range(4)]) / (1 - (1 - 1e-6) * 0.9 ** 4)
    w_ema = sum(c * w for c, w in zip(weights, w_hist))
    b_ema = sum(c * b for c, b in zip(weights, b_hist))
    np.testing.assert_allclose(predict(x), np.asarray(x) @ w_ema + b_ema, **TOL)
    np.testing.assert_array_equal(model.w.value, w_hist[-1])  # the model keeps its trained weights
    assert not np.allclose(w_ema, w_hist[-1])


def test_ema_module_names():
    """As in Objax 1.8, the wrapped module (attribute `__wrapped__`) is named without its attribute name."""
    seq = objax.nn.Sequential([objax.nn.Linear(2, 3), objax.functional.relu])
    names = set(ExponentialMovingAverageModule(seq).vars().keys())
    assert {'(ExponentialMovingAverageModule)(Sequential)[0](Linear).b',
            '(ExponentialMovingAverageModule)(Sequential)[0](Linear).w',
            '(ExponentialMovingAverageModule).ema(ExponentialMovingAverage).step'} <= names
    assert not any('__wrapped__' in n for n in names)


def test_reprs():
    vc = _Net().vars()
    assert repr(ExponentialMovingAverage(vc)) == \
        'objax.optimizer.ExponentialMovingAverage(momentum=0.999, debias=False, eps=1e-06)'
    assert repr(ExponentialMovingAverageModule(objax.nn.Linear(2, 3))) == \
        'objax.optimizer.ExponentialMovingAverageModule(momentum=0.999, debias=False, eps=1e-06)'
    assert repr(ExponentialMovingAverageModule(objax.nn.Linear(2, 3), momentum=0.5, debias=True, eps=0.1)) == \
        'objax.optimizer.ExponentialMovingAverageModule(momentum=0.5, debias=True, eps=0.1)'


def test_ema_errors():
    with pytest.raises(TypeError, match='vc must be a VarCollection'):
        ExponentialMovingAverage([objax.TrainVar(jn.zeros(2))])
    with pytest.raises(TypeError, match='module must be an objax Module'):
        ExponentialMovingAverageModule(lambda x: x)
    vc = _Net().vars()
    for kwargs, match in [(dict(momentum=float('nan')), 'momentum must be in'),
                          (dict(momentum=1.5), r'momentum must be in \[0, 1\], got 1.5'),
                          (dict(momentum=-0.1), 'momentum must be in'),
                          (dict(eps=-1e-6), 'eps must be a finite number >= 0'),
                          (dict(eps=float('inf')), 'eps must be')]:
        with pytest.raises(ValueError, match=match):
            ExponentialMovingAverage(vc, **kwargs)
        with pytest.raises(ValueError, match=match):
            ExponentialMovingAverageModule(objax.nn.Linear(2, 3), **kwargs)
    # Boundary values that work are accepted (momentum 0: the average is the last value; 1: it stays).
    for momentum in (0, 1.0):
        ExponentialMovingAverage(vc, momentum=momentum, eps=0)
