"""Optimizer steps are all-or-nothing, hyper-parameters given as numbers are checked, a step keeps every
variable's dtype (so a jitted step compiles once), and the reprs are Objax 1.8's."""

import warnings

import jax.numpy as jn
import numpy as np
import optax
import pytest

import objax
from objax.optimizer import LARS, SGD, Adam, ExponentialMovingAverage, Momentum, Optax

MAKERS = {
    'SGD': SGD,
    'Momentum': Momentum,
    'Nesterov': lambda vc: Momentum(vc, nesterov=True),
    'Adam': Adam,
    'LARS': LARS,
    'Optax': lambda vc: Optax(vc, optax.scale_by_adam()),
}
NAN, INF = float('nan'), float('inf')


def _vc(w_first: bool):
    """w of shape (4, 3) and b of shape (2,), in either order (layers list b or w first)."""
    rng = np.random.RandomState(0)
    w = objax.TrainVar(jn.asarray(rng.randn(4, 3), jn.float32))
    b = objax.TrainVar(jn.asarray(rng.randn(2), jn.float32))
    return objax.VarCollection([('w', w), ('b', b)] if w_first else [('b', b), ('w', w)])


def _grads(vc):
    return [jn.ones(v.shape) for v in vc]


def _snapshot(*modules):
    return [np.asarray(x) for m in modules for x in m.vars().tensors()]


def _assert_unchanged(before, *modules):
    after = _snapshot(*modules)
    assert len(before) == len(after)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


# All or nothing: a step that fails changes no variable ----------------------------------------------------

@pytest.mark.parametrize('w_first', [True, False])
@pytest.mark.parametrize('jit', [False, True])
@pytest.mark.parametrize('name', list(MAKERS))
def test_lr_that_does_not_broadcast_to_every_variable_changes_nothing(name, jit, w_first):
    vc = _vc(w_first)
    opt = MAKERS[name](vc)
    opt(0.1, _grads(vc))  # non-zero state (step, moments) that must stay as it is
    before = _snapshot(opt)
    step = objax.Jit(lambda lr, g: opt(lr, g), opt.vars()) if jit else opt
    for lr in (jn.full((3,), 0.1), jn.full((4, 1), 0.1)):  # broadcast with w (4, 3), not with b (2,)
        with pytest.raises(ValueError, match=r'lr of shape \((3|4, 1),?\) does not broadcast to TrainVar'):
            step(lr, _grads(vc))
        _assert_unchanged(before, opt)
    step(jn.full((), 0.1), _grads(vc))  # an array lr that broadcasts works
    assert not np.array_equal(_snapshot(opt)[0], before[0])


@pytest.mark.parametrize('w_first', [True, False])
def test_adam_beta_arrays_of_the_wrong_shape_change_nothing(w_first):
    """The values are computed before anything is written: the step counter and the moments of the first
    variable stay as they were when the second variable's update fails."""
    vc = _vc(w_first)
    opt = Adam(vc)
    opt(0.1, _grads(vc))
    before = _snapshot(opt)
    with pytest.raises(ValueError, match=r'nothing was changed:\n  .*shape \(4, 2\), expected \(2,\)'):
        opt(0.1, _grads(vc), beta1=jn.full((4, 1), 0.5))  # (4, 1) with b (2,) gives (4, 2)
    with pytest.raises((TypeError, ValueError), match='[Ii]ncompatible shapes'):
        opt(0.1, _grads(vc), beta2=jn.full((3,), 0.5))  # (3,) does not broadcast with b (2,) at all
    _assert_unchanged(before, opt)
    assert int(opt.step.value) == 1


@pytest.mark.parametrize('w_first', [True, False])
def test_momentum_array_of_the_wrong_shape_changes_nothing(w_first):
    vc = _vc(w_first)
    opt = Momentum(vc)
    opt(0.1, _grads(vc))
    before = _snapshot(opt)
    with pytest.raises((TypeError, ValueError), match='[Ii]ncompatible shapes'):
        opt(0.1, _grads(vc), momentum=jn.full((3,), 0.5))
    with pytest.raises(ValueError, match='nothing was changed'):
        opt(0.1, _grads(vc), momentum=jn.full((4, 1), 0.5))
    _assert_unchanged(before, opt)


@pytest.mark.parametrize('w_first', [True, False])
def test_optax_updates_of_the_wrong_shape_change_nothing(w_first):
    """The optax state (Adam moments, count) is not written when one parameter update cannot be applied."""
    def init(params):
        return optax.EmptyState()

    def update(updates, state, params=None):
        return [u * jn.ones((4, 1)) for u in updates], state  # right for w (4, 3), (4, 2) for b (2,)

    vc = _vc(w_first)
    opt = Optax(vc, optax.chain(optax.scale_by_adam(), optax.GradientTransformation(init, update)))
    before = _snapshot(opt)
    for lr in (None, 0.1):
        with pytest.raises(ValueError, match=r'nothing was changed:\n  .*shape \(4, 2\), expected \(2,\)'):
            opt(lr, _grads(vc))
        _assert_unchanged(before, opt)


# Hyper-parameters given as numbers are checked -------------------------------------------------------------

CONSTRUCTION_ERRORS = [
    (Momentum, dict(momentum=NAN), 'Momentum: momentum must be a finite number, got nan'),
    (Momentum, dict(momentum=INF), 'Momentum: momentum must be a finite number, got inf'),
    (Adam, dict(beta1=1), r'Adam: beta1 must be in \[0, 1\), got 1'),
    (Adam, dict(beta1=-0.1), r'Adam: beta1 must be in \[0, 1\), got -0.1'),
    (Adam, dict(beta1=NAN), 'Adam: beta1 must be in'),
    (Adam, dict(beta2=1.5), r'Adam: beta2 must be in \[0, 1\), got 1.5'),
    (Adam, dict(beta2=1.0), 'Adam: beta2 must be in'),
    (Adam, dict(eps=-1e-8), 'Adam: eps must be a finite number >= 0, got -1e-08'),
    (Adam, dict(eps=INF), 'Adam: eps must be a finite number >= 0'),
    (LARS, dict(momentum=NAN), 'LARS: momentum must be a finite number'),
    (LARS, dict(weight_decay=NAN), 'LARS: weight_decay must be a finite number, got nan'),
    (LARS, dict(tc=INF), 'LARS: tc must be a finite number'),
    (LARS, dict(eps=-1.0), 'LARS: eps must be a finite number >= 0'),
]


@pytest.mark.parametrize('cls,kwargs,match', CONSTRUCTION_ERRORS)
def test_bad_hyper_parameters_refused_at_construction(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(_vc(True), **kwargs)


def test_hyper_parameter_of_the_wrong_type_refused():
    with pytest.raises(TypeError, match='Adam: beta1 must be a number or an array, got str'):
        Adam(_vc(True), beta1='0.9')


@pytest.mark.parametrize('name', list(MAKERS))
@pytest.mark.parametrize('lr', [NAN, INF, -INF, np.float32('nan')])
def test_non_finite_lr_refused_and_nothing_changed(name, lr):
    vc = _vc(True)
    opt = MAKERS[name](vc)
    before = _snapshot(opt)
    with pytest.raises(ValueError, match=f'{type(opt).__name__}: lr must be a finite number, got'):
        opt(lr, _grads(vc))
    # The same number written in a jitted function is checked when it is traced.
    with pytest.raises(ValueError, match='lr must be a finite number'):
        objax.Jit(lambda g: opt(lr, g), opt.vars())(_grads(vc))
    with pytest.raises(TypeError, match='lr must be a number or an array, got str'):
        opt('0.1', _grads(vc))
    _assert_unchanged(before, opt)


@pytest.mark.parametrize('kwargs,match', [(dict(beta1=1.0), 'beta1 must be in'), (dict(beta2=NAN), 'beta2'),
                                          (dict(beta2=2), r'beta2 must be in \[0, 1\), got 2')])
def test_adam_call_overrides_checked(kwargs, match):
    vc = _vc(True)
    opt = Adam(vc)
    before = _snapshot(opt)
    with pytest.raises(ValueError, match=match):
        opt(0.1, _grads(vc), **kwargs)
    _assert_unchanged(before, opt)


def test_momentum_call_override_checked():
    vc = _vc(True)
    opt = Momentum(vc)
    before = _snapshot(opt)
    with pytest.raises(ValueError, match='momentum must be a finite number, got nan'):
        opt(0.1, _grads(vc), momentum=NAN)
    _assert_unchanged(before, opt)


@pytest.mark.parametrize('name', list(MAKERS))
def test_values_objax_accepted_still_work(name):
    """lr=0 (a frozen step) and boundary hyper-parameters that work are accepted, as Objax 1.8 accepted them."""
    vc = _vc(True)
    opt = MAKERS[name](vc)
    params = [np.asarray(v.value) for v in vc]
    opt(0, _grads(vc))
    for v, p in zip(vc, params):
        np.testing.assert_array_equal(v.value, p)
    opt(-0.1, _grads(vc))  # a negative rate climbs the gradient; Objax 1.8 accepted it
    assert np.all(np.asarray(list(vc)[1].value) > params[1])


def test_boundary_hyper_parameters_accepted():
    vc = _vc(True)
    Momentum(vc, momentum=0)(0.1, _grads(vc), momentum=0.0)
    with pytest.warns(UserWarning, match='eps=0'):  # accepted, with a warning about zero gradients
        Adam(vc, beta1=0, beta2=0.0, eps=0)(0.1, _grads(vc), beta1=0.0, beta2=0.5)
    LARS(vc, momentum=0, weight_decay=0, tc=0, eps=0)(0.1, _grads(vc))
    assert all(np.all(np.isfinite(np.asarray(v.value))) for v in vc)


def test_traced_hyper_parameters_are_not_checked():
    """Values only known at run time (arguments of a jitted step) pass through: they cannot be checked."""
    vc = _vc(True)
    opt = Adam(vc)
    step = objax.Jit(lambda lr, b1, g: opt(lr, g, beta1=b1), opt.vars())
    step(jn.array(0.1), jn.array(0.5), _grads(vc))
    assert int(opt.step.value) == 1
    step(jn.array(NAN), jn.array(0.5), _grads(vc))
    assert np.all(np.isnan(np.asarray(list(vc)[0].value)))


# dtypes and compilation: a step keeps every dtype, so a jitted step compiles once ----------------------------

def _typed(x):
    x = x.value
    return x.dtype, getattr(x, 'weak_type', False), x.shape


@pytest.mark.parametrize('name', list(MAKERS) + ['EMA'])
def test_jitted_step_compiles_once_and_keeps_dtypes(name):
    w = objax.TrainVar(jn.ones((4, 3), jn.bfloat16))  # grads come in float32: the variable stays bfloat16
    b = objax.TrainVar(jn.zeros(2))
    n = objax.StateVar(jn.array(0, jn.int32))
    vc = objax.VarCollection([('w', w), ('b', b), ('n', n)])
    opt = ExponentialMovingAverage(vc, momentum=0.5) if name == 'EMA' else MAKERS[name](vc)
    everything = vc + opt.vars()
    types = [_typed(v) for v in everything]
    traces = []

    def train_step(lr):
        traces.append(1)
        if name == 'EMA':
            opt()
        else:
            opt(lr, [jn.ones((4, 3), jn.float32), jn.ones(2, jn.float32)])
        n.value += 1

    step = objax.Jit(train_step, everything)
    for _ in range(3):
        step(0.1)
    assert len(traces) == 1
    assert [_typed(v) for v in everything] == types
    for _ in range(2):  # eager steps keep the types too
        train_step(0.1)
    assert [_typed(v) for v in everything] == types
    if name != 'EMA':
        assert not np.array_equal(np.asarray(b.value), np.zeros(2))


def test_scalar_trainvar_step_compiles_once():
    """TrainVar(0.0): a Python float makes a weak-typed array, which the core stores strong-typed
    (variables never hold weak-typed values), and the optimizers write strong-typed values, so one compilation
    serves every step."""
    compilations = {}
    for name in list(MAKERS) + ['EMA']:
        v = objax.TrainVar(0.0)
        vc = objax.VarCollection({'v': v})
        opt = ExponentialMovingAverage(vc) if name == 'EMA' else MAKERS[name](vc)
        traces = []

        def train_step(traces=traces, opt=opt, name=name):
            traces.append(1)
            opt() if name == 'EMA' else opt(0.1, [jn.ones(())])

        step = objax.Jit(train_step, vc + opt.vars())
        for _ in range(3):
            step()
        compilations[name] = (len(traces), bool(v.value.weak_type))
    assert compilations == {name: (1, False) for name in compilations}


# reprs: Objax 1.8's objax.optimizer.Class(hyper-parameters) ---------------------------------------------------

def test_reprs():
    vc = _vc(True)
    assert repr(Adam(vc)) == 'objax.optimizer.Adam(beta1=0.9, beta2=0.999, eps=1e-08)'
    assert repr(LARS(vc)) == 'objax.optimizer.LARS(momentum=0.9, weight_decay=0.0001, tc=0.001, eps=1e-05)'
    assert repr(Momentum(vc)) == 'objax.optimizer.Momentum(momentum=0.9, nesterov=False)'
    assert repr(SGD(vc)) == 'objax.optimizer.SGD()'
    assert repr(Momentum(vc, 0.5, True)) == 'objax.optimizer.Momentum(momentum=0.5, nesterov=True)'
    assert repr(Adam(vc, beta1=0.5, eps=0.1)) == 'objax.optimizer.Adam(beta1=0.5, beta2=0.999, eps=0.1)'

    class MyAdam(Adam):
        pass

    assert repr(MyAdam(vc)) == f'{__name__}.MyAdam(beta1=0.9, beta2=0.999, eps=1e-08)'



def test_adam_warns_that_eps_zero_gives_nan_for_zero_gradients():
    w = objax.TrainVar(jn.ones(3))
    with pytest.warns(UserWarning, match='eps=0'):
        opt = objax.optimizer.Adam(objax.VarCollection({'w': w}), eps=0)
    opt(0.1, [jn.array([0., 1., 0.])])
    values = np.asarray(w.value)
    assert np.isnan(values[[0, 2]]).all() and np.isfinite(values[1])  # the formula is kept, as Objax 1.8 and optax
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        objax.optimizer.Adam(objax.VarCollection({'w': w}), eps=1e-8)
