"""Optimizer state as StateVars seen by Jit, training loops under Jit, signatures and bad input."""

import inspect
import re

import jax.numpy as jn
import numpy as np
import optax
import pytest

import objax
from objax.optimizer import LARS, SGD, Adam, ExponentialMovingAverage, Momentum, Optax

OPTIMIZERS = {
    'SGD': (SGD, 0.1),
    'Momentum': (Momentum, 0.1),
    'Nesterov': (lambda vc: Momentum(vc, nesterov=True), 0.1),
    'Adam': (Adam, 0.05),
    'LARS': (lambda vc: LARS(vc, tc=0.02), 0.5),  # 2.0 diverged for 2 of 30 initialisations
    'Optax': (lambda vc: Optax(vc, optax.scale_by_adam()), 0.05),
}


def _data():
    rng = np.random.RandomState(0)
    x = jn.asarray(rng.randn(64, 4), jn.float32)
    y = x @ jn.asarray(rng.randn(4, 2), jn.float32) + 0.5
    return x, y


class _MLP(objax.Module):
    def __init__(self):
        self.l1 = objax.nn.Linear(4, 8)
        self.l2 = objax.nn.Linear(8, 2)

    def __call__(self, x):
        return self.l2(jn.maximum(self.l1(x), 0))


@pytest.mark.parametrize('name', ['Momentum', 'Nesterov', 'Adam', 'LARS', 'Optax'])
def test_state_is_statevars_and_changes_under_jit(name):
    make, lr = OPTIMIZERS[name]
    model = objax.nn.Linear(4, 2)
    opt = make(model.vars())
    state = opt.vars().subset(objax.StateVar)
    refs = opt.vars().subset(objax.TrainRef)
    # One TrainRef per TrainVar, in the model's variable order (Linear: b then w in Objax 1.8).
    assert [id(r._storage()) for r in refs.values()] == [id(v) for v in model.vars().subset(objax.TrainVar).values()]
    shaped = [v for v in state.values() if v.shape in ((4, 2), (2,))]
    assert len(shaped) >= 2 and all(isinstance(v, objax.StateVar) for v in state.values())
    before = [np.asarray(v.value) for v in state.values()]
    x, y = _data()
    gv = objax.GradValues(lambda: ((model(x) - y) ** 2).mean(), model.vars())
    train_op = objax.Jit(lambda: opt(lr, gv()[0]), gv.vars() + opt.vars())
    train_op()
    after = [np.asarray(v.value) for v in state.values()]
    changed = [not np.array_equal(a, b) for a, b in zip(before, after)]
    assert all(changed), dict(zip(state.keys(), changed))


def test_sgd_has_only_refs():
    model = objax.nn.Linear(4, 2)
    vc = SGD(model.vars()).vars()
    assert list(vc.keys()) == ['(SGD).train_vars(ModuleList)[0]', '(SGD).train_vars(ModuleList)[1]']
    assert all(isinstance(v, objax.TrainRef) for v in vc.values())


def test_adam_names_and_step():
    model = objax.nn.Linear(4, 2)
    opt = Adam(model.vars())
    assert list(opt.vars().subset(objax.StateVar).keys()) == [
        '(Adam).step', '(Adam).m(ModuleList)[0]', '(Adam).m(ModuleList)[1]', '(Adam).v(ModuleList)[0]',
        '(Adam).v(ModuleList)[1]']
    step = objax.Jit(lambda: opt(0.1, [jn.ones(v.shape) for v in model.vars()]), opt.vars())
    step()
    step()
    assert int(opt.step.value) == 2 and opt.step.value.dtype == jn.uint32


@pytest.mark.parametrize('name', list(OPTIMIZERS))
def test_training_loss_falls_under_jit(name):
    make, lr = OPTIMIZERS[name]
    model = _MLP()
    opt = make(model.vars())
    ema = ExponentialMovingAverage(model.vars(), momentum=0.9)
    x, y = _data()
    gv = objax.GradValues(lambda: ((model(x) - y) ** 2).mean(), model.vars())

    def train_op():
        g, v = gv()
        opt(lr, g)
        ema()
        return v[0]

    train_op = objax.Jit(train_op, gv.vars() + opt.vars() + ema.vars())
    losses = [float(train_op()) for _ in range(60)]
    assert losses[-1] < 0.5 * losses[0], losses[::10]


@pytest.mark.parametrize('name', list(OPTIMIZERS))
def test_bad_grads_change_nothing(name):
    make, lr = OPTIMIZERS[name]
    model = objax.nn.Linear(4, 2)
    opt = make(model.vars())
    before = [np.asarray(x) for x in opt.vars().tensors()]
    shapes = [v.shape for v in model.vars()]  # (4, 2) and (2,), in the layer's order
    wrong = {(2,): (3,), (4, 2): (2, 4)}
    with pytest.raises(ValueError, match='expected 2 gradients'):
        opt(lr, [jn.ones(shapes[0])])
    with pytest.raises(TypeError, match='grads must be a list of arrays'):
        opt(lr, jn.ones((4, 2)))
    jitted = objax.Jit(lambda g: opt(lr, g), opt.vars())
    for i in range(2):
        grads = [jn.ones(wrong[s] if j == i else s) for j, s in enumerate(shapes)]
        match = rf'grads\[{i}\].*shape {re.escape(str(wrong[shapes[i]]))}, expected {re.escape(str(shapes[i]))}'
        with pytest.raises(ValueError, match=match):
            opt(lr, grads)
        with pytest.raises(ValueError, match=match):
            jitted(grads)
    for a, b in zip(opt.vars().tensors(), before):
        np.testing.assert_array_equal(a, b)


def test_error_names_the_variable():
    model = objax.nn.Linear(4, 2)
    model.vars()  # names the variables
    with pytest.raises(ValueError, match=r'\(Linear\)\.b'):
        Momentum(model.vars())(0.1, [jn.ones(5), jn.ones((4, 2))])


@pytest.mark.parametrize('cls', [SGD, Momentum, Adam, LARS, ExponentialMovingAverage])
def test_vc_must_be_a_collection(cls):
    with pytest.raises(TypeError, match='vc must be a VarCollection'):
        cls([objax.TrainVar(jn.zeros(2))])


def _defaults(f):
    return {k: p.default for k, p in inspect.signature(f).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_signatures_and_defaults():
    opt = objax.optimizer
    assert _defaults(opt.Momentum) == dict(momentum=0.9, nesterov=False)
    assert _defaults(opt.Momentum.__call__) == dict(momentum=None)
    assert _defaults(opt.Adam) == dict(beta1=0.9, beta2=0.999, eps=1e-8)
    assert _defaults(opt.Adam.__call__) == dict(beta1=None, beta2=None)
    assert _defaults(opt.LARS) == dict(momentum=0.9, weight_decay=1e-4, tc=1e-3, eps=1e-5)
    ema_defaults = dict(momentum=0.999, debias=False, eps=1e-6)
    assert _defaults(opt.ExponentialMovingAverage) == ema_defaults
    assert _defaults(opt.ExponentialMovingAverageModule) == ema_defaults
    assert _defaults(opt.scheduler.LinearAnnealing) == dict(base_lr=1.0, is_cycle=True, min_lr=0.0)
    assert _defaults(opt.scheduler.StepDecay) == dict(base_lr=1.0, gamma=0.1)
    assert list(inspect.signature(opt.SGD.__call__).parameters) == ['self', 'lr', 'grads']
    assert list(inspect.signature(opt.Optax).parameters) == ['vc', 'transformation']
    assert set(opt.__all__) >= {'SGD', 'Momentum', 'Adam', 'LARS', 'ExponentialMovingAverage',
                                'ExponentialMovingAverageModule', 'Optax', 'scheduler'}
