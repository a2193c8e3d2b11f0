"""First 5 steps of SGD, Momentum, Adam and LARS against optax / closed-form updates, eager and under Jit.

Everything runs in float32; the references are optax (float32) or numpy float64 loops. Tolerances are
rtol=1e-6 and atol=1e-6 on values of order 1 (a few float32 ulps accumulated over 5 steps)."""

import jax.numpy as jn
import numpy as np
import optax
import pytest

import objax

SHAPES = [(3, 4), (4,), ()]
STEPS = 5
TOL = dict(rtol=1e-6, atol=1e-6)


def _params():
    rng = np.random.RandomState(0)
    return [np.asarray(rng.randn(*s), np.float32) for s in SHAPES]


def _grads():
    rng = np.random.RandomState(1)
    return [[np.asarray(rng.randn(*s), np.float32) for s in SHAPES] for _ in range(STEPS)]


def _run_objax(make_opt, lr, jit, call_kwargs=None, grads=None):
    """Parameter values after each of the steps, for an objax optimizer built by make_opt(vc)."""
    call_kwargs = call_kwargs or {}
    variables = [objax.TrainVar(jn.asarray(p)) for p in _params()]
    vc = objax.VarCollection((f'p{i}', v) for i, v in enumerate(variables))
    opt = make_opt(vc)
    if jit:
        step = objax.Jit(lambda lr, g: opt(lr, g, **call_kwargs), opt.vars())
    else:
        def step(lr, g):
            opt(lr, g, **call_kwargs)
    history = []
    for g in grads or _grads():
        step(lr, [jn.asarray(x) for x in g])
        history.append([np.asarray(v.value) for v in variables])
    return history


def _run_optax(tx, grads=None):
    params = [jn.asarray(p) for p in _params()]
    state = tx.init(params)
    history = []
    for g in grads or _grads():
        updates, state = tx.update([jn.asarray(x) for x in g], state, params)
        params = optax.apply_updates(params, updates)
        history.append([np.asarray(p) for p in params])
    return history


def _assert_same(history, reference):
    assert len(history) == len(reference) == STEPS
    for step, (got, want) in enumerate(zip(history, reference)):
        for i, (a, b) in enumerate(zip(got, want)):
            np.testing.assert_allclose(a, b, **TOL, err_msg=f'step {step + 1}, variable {i}')
    # The parameters really moved (a reference comparison of frozen values would prove nothing).
    assert not np.allclose(history[-1][0], _params()[0])


@pytest.mark.parametrize('jit', [False, True])
def test_sgd_matches_optax(jit):
    _assert_same(_run_objax(objax.optimizer.SGD, 0.05, jit), _run_optax(optax.sgd(0.05)))


@pytest.mark.parametrize('jit', [False, True])
@pytest.mark.parametrize('nesterov', [False, True])
def test_momentum_matches_optax(jit, nesterov):
    history = _run_objax(lambda vc: objax.optimizer.Momentum(vc, momentum=0.8, nesterov=nesterov), 0.05, jit)
    _assert_same(history, _run_optax(optax.sgd(0.05, momentum=0.8, nesterov=nesterov)))


def test_momentum_default_and_override():
    default = _run_objax(objax.optimizer.Momentum, 0.05, False)
    _assert_same(default, _run_optax(optax.sgd(0.05, momentum=0.9)))
    override = _run_objax(lambda vc: objax.optimizer.Momentum(vc, momentum=0.9), 0.05, True, dict(momentum=0.5))
    _assert_same(override, _run_optax(optax.sgd(0.05, momentum=0.5)))
    # momentum=0 given per call is honoured (not mistaken for "no override").
    zero = _run_objax(objax.optimizer.Momentum, 0.05, False, dict(momentum=0.0))
    _assert_same(zero, _run_optax(optax.sgd(0.05)))


def _run_optax_adam(lr, b1, b2, eps):
    """optax.adam whose eps_root is set each step so that optax's sqrt(v_hat + eps_root) equals objax's
    sqrt(v + eps) * (bias correction): eps_root = eps / (1 - b2^t), eps (outside the sqrt) = 0."""
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=lr, b1=b1, b2=b2, eps=0.0, eps_root=0.0)
    params = [jn.asarray(p) for p in _params()]
    state = tx.init(params)
    history = []
    for t, g in enumerate(_grads(), start=1):
        state.hyperparams['eps_root'] = jn.asarray(eps / (1 - b2 ** t), jn.float32)
        updates, state = tx.update([jn.asarray(x) for x in g], state, params)
        params = optax.apply_updates(params, updates)
        history.append([np.asarray(p) for p in params])
    return history


def _numpy_adam(lr, b1, b2, eps):
    """Closed-form Objax Adam in float64."""
    params = [p.astype(np.float64) for p in _params()]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    history = []
    for t, g in enumerate(_grads(), start=1):
        for i, gi in enumerate(g):
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi.astype(np.float64) ** 2
            params[i] = params[i] - lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m[i] / np.sqrt(v[i] + eps)
        history.append([p.copy() for p in params])
    return history


@pytest.mark.parametrize('jit', [False, True])
@pytest.mark.parametrize('eps', [1e-8, 1e-3])
def test_adam_matches_optax_and_closed_form(jit, eps):
    history = _run_objax(lambda vc: objax.optimizer.Adam(vc, eps=eps), 0.01, jit)
    _assert_same(history, _run_optax_adam(0.01, 0.9, 0.999, eps))
    _assert_same(history, _numpy_adam(0.01, 0.9, 0.999, eps))


def test_adam_eps_placement_matters():
    # With a large eps, the standard optax placement (outside the sqrt) gives a different trajectory:
    # the comparison above really checks where eps goes.
    history = _run_objax(lambda vc: objax.optimizer.Adam(vc, eps=1e-3), 0.01, False)
    other = _run_optax(optax.adam(0.01, eps=1e-3))
    assert not np.allclose(history[-1][0], other[-1][0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('jit', [False, True])
def test_adam_beta_overrides(jit):
    history = _run_objax(objax.optimizer.Adam, 0.01, jit, dict(beta1=0.5, beta2=0.9))
    _assert_same(history, _numpy_adam(0.01, 0.5, 0.9, 1e-8))


def _numpy_lars(lr, momentum, wd, tc, eps, grads):
    params = [p.astype(np.float64) for p in _params()]
    m = [np.zeros_like(p) for p in params]
    history = []
    for g in grads:
        for i, gi in enumerate(g):
            p_norm, g_norm = np.linalg.norm(params[i]), np.linalg.norm(gi)
            trust = 1.0 if p_norm == 0 or g_norm == 0 else tc * p_norm / (g_norm + wd * p_norm + eps)
            m[i] = momentum * m[i] + lr * trust * (gi + wd * params[i])
            params[i] = params[i] - m[i]
        history.append([p.copy() for p in params])
    return history


@pytest.mark.parametrize('jit', [False, True])
def test_lars_matches_closed_form(jit):
    grads = _grads()
    grads[2][1] = np.zeros_like(grads[2][1])  # a zero gradient: trust ratio falls back to 1
    lr = 2.0  # LARS rates are large: the trust ratio (tc=1e-3) scales them down
    make = lambda vc: objax.optimizer.LARS(vc, momentum=0.8, weight_decay=1e-2, tc=1e-2, eps=1e-5)  # noqa: E731
    _assert_same(_run_objax(make, lr, jit, grads=grads), _numpy_lars(lr, 0.8, 1e-2, 1e-2, 1e-5, grads))
    default = _run_objax(objax.optimizer.LARS, lr, jit, grads=grads)
    _assert_same(default, _numpy_lars(lr, 0.9, 1e-4, 1e-3, 1e-5, grads))


@pytest.mark.parametrize('jit', [False, True])
def test_lars_without_weight_decay_matches_optax(jit):
    # optax.lars puts the weight decay inside the gradient norm; without weight decay both agree exactly.
    make = lambda vc: objax.optimizer.LARS(vc, momentum=0.9, weight_decay=0.0, tc=1e-2, eps=1e-5)  # noqa: E731
    tx = optax.lars(2.0, weight_decay=0.0, trust_coefficient=1e-2, eps=1e-5, momentum=0.9)
    _assert_same(_run_objax(make, 2.0, jit), _run_optax(tx))
