"""ExponentialMovingAverage and ExponentialMovingAverageModule against optax.ema and closed forms."""

import jax.numpy as jn
import numpy as np
import optax
import pytest

import objax

TOL = dict(rtol=1e-6, atol=1e-6)


class _Net(objax.Module):
    def __init__(self):
        rng = np.random.RandomState(0)
        self.w = objax.TrainVar(jn.asarray(rng.randn(3, 2), jn.float32))
        self.b = objax.TrainVar(jn.asarray(rng.randn(2), jn.float32))
        self.stat = objax.StateVar(jn.asarray(rng.randn(2), jn.float32))   # float state: averaged
        self.count = objax.StateVar(jn.array(0, jn.int32))                 # integer state: not averaged
        self.gen = objax.random.Generator(3)                               # random key: not averaged

    def __call__(self, x):
        return x @ self.w.value + self.b.value + self.stat.value


def _new_values(step):
    rng = np.random.RandomState(10 + step)
    return [jn.asarray(rng.randn(3, 2), jn.float32), jn.asarray(rng.randn(2), jn.float32),
            jn.asarray(rng.randn(2), jn.float32)]


def _set(net, values):
    net.w.assign(values[0])
    net.b.assign(values[1])
    net.stat.value = values[2]


@pytest.mark.parametrize('jit', [False, True])
@pytest.mark.parametrize('debias', [False, True])
def test_ema_matches_optax(jit, debias):
    net = _Net()
    initial = [net.w.value, net.b.value, net.stat.value]
    ema = objax.optimizer.ExponentialMovingAverage(net.vars(), momentum=0.8, debias=debias)
    update = objax.Jit(ema, ema.vars()) if jit else ema
    read = objax.Jit(lambda: ema.refs_and_values()[1], ema.vars()) if jit else lambda: ema.refs_and_values()[1]
    tx = optax.ema(0.8, debias=debias)
    state = tx.init(initial)
    if not debias:  # objax's plain EMA starts from the current values, optax's from zeros
        state = optax.EmaState(count=state.count, ema=initial)
    for step in range(5):
        values = _new_values(step)
        _set(net, values)
        update()
        want, state = tx.update(values, state)
        got = read()
        assert len(got) == 3
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, **TOL)
    # Closed form of the plain EMA: m_5 = 0.8^5 x_0 + sum_k 0.2 * 0.8^(5-k) x_k.
    if not debias:
        closed = 0.8 ** 5 * np.asarray(initial[0]) + sum(0.2 * 0.8 ** (4 - k) * np.asarray(_new_values(k)[0])
                                                         for k in range(5))
        np.testing.assert_allclose(got[0], closed, **TOL)


def test_ema_selects_float_variables_only():
    net = _Net()
    ema = objax.optimizer.ExponentialMovingAverage(net.vars())
    refs, values = ema.refs_and_values()
    assert [v._storage() for v in refs] == [net.w, net.b, net.stat]
    assert all(isinstance(v, objax.StateVar) for v in ema.m)
    assert [x.shape for x in values] == [(3, 2), (2,), (2,)]
    assert not ema.debias and not hasattr(ema, 'step')


def test_ema_debias_before_any_update_is_zero():
    net = _Net()
    ema = objax.optimizer.ExponentialMovingAverage(net.vars(), debias=True, eps=1e-6)
    for x in ema.refs_and_values()[1]:
        assert np.all(np.isfinite(x)) and np.all(np.asarray(x) == 0)


@pytest.mark.parametrize('jit', [False, True])
def test_replace_vars_runs_with_averages_and_restores(jit):
    net = _Net()
    ema = objax.optimizer.ExponentialMovingAverage(net.vars(), momentum=0.5)
    original = [net.w.value, net.b.value, net.stat.value]
    values = _new_values(0)
    _set(net, values)
    ema()
    averages = [0.5 * a + 0.5 * b for a, b in zip(original, values)]
    x = jn.asarray(np.random.RandomState(5).randn(4, 3), jn.float32)
    f = ema.replace_vars(net)
    if jit:
        f = objax.Jit(f, net.vars() + ema.vars())
    np.testing.assert_allclose(f(x), x @ averages[0] + averages[1] + averages[2], **TOL)
    for var, value in zip([net.w, net.b, net.stat], values):  # the network got its own values back
        np.testing.assert_array_equal(var.value, value)


@pytest.mark.parametrize('jit', [False, True])
def test_ema_module(jit):
    model = objax.nn.Linear(3, 2)
    ema_model = objax.optimizer.ExponentialMovingAverageModule(model, momentum=0.9, debias=True)
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
        w_hist.append(np.asarray(model.w.value))
        b_hist.append(np.asarray(model.b.value))
    weights = np.array([0.1 * 0.9 ** (3 - k) for k in range(4)]) / (1 - 0.9 ** 4)
    w_ema = sum(c * w for c, w in zip(weights, w_hist))
    b_ema = sum(c * b for c, b in zip(weights, b_hist))
    np.testing.assert_allclose(predict(x), np.asarray(x) @ w_ema + b_ema, **TOL)
    np.testing.assert_array_equal(model.w.value, w_hist[-1])  # the model keeps its trained weights
    assert not np.allclose(w_ema, w_hist[-1])


def test_ema_errors():
    with pytest.raises(TypeError, match='vc must be a VarCollection'):
        objax.optimizer.ExponentialMovingAverage([objax.TrainVar(jn.zeros(2))])
    with pytest.raises(TypeError, match='module must be an objax Module'):
        objax.optimizer.ExponentialMovingAverageModule(lambda x: x)
