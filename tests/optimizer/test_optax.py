"""objax.optimizer.Optax: optax transformations as objax optimizers, matched against direct optax calls."""

import jax
import jax.numpy as jn
import numpy as np
import optax
import pytest

import objax

SHAPES = [(3, 4), (4,), ()]
TOL = dict(rtol=1e-6, atol=1e-6)


def _params():
    rng = np.random.RandomState(0)
    return [np.asarray(rng.randn(*s), np.float32) for s in SHAPES]


def _grads(steps=5):
    rng = np.random.RandomState(1)
    return [[jn.asarray(rng.randn(*s) * 2, jn.float32) for s in SHAPES] for _ in range(steps)]


def _objax_run(tx, lr, jit):
    variables = [objax.TrainVar(jn.asarray(p)) for p in _params()]
    opt = objax.optimizer.Optax(objax.VarCollection((f'p{i}', v) for i, v in enumerate(variables)), tx)
    if jit:
        step = objax.Jit((lambda g: opt(None, g)) if lr is None else (lambda g, lr: opt(lr, g)), opt.vars())
    else:
        step = (lambda g: opt(None, g)) if lr is None else (lambda g, lr: opt(lr, g))
    out = []
    for g in _grads():
        step(g) if lr is None else step(g, lr)
        out.append([np.asarray(v.value) for v in variables])
    return out, opt


def _optax_run(tx):
    params = [jn.asarray(p) for p in _params()]
    state = tx.init(params)
    out = []
    for g in _grads():
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
        out.append([np.asarray(p) for p in params])
    return out, state


def _assert_same(got, want):
    for step, (a_list, b_list) in enumerate(zip(got, want)):
        for a, b in zip(a_list, b_list):
            np.testing.assert_allclose(a, b, **TOL, err_msg=f'step {step + 1}')
    assert not np.allclose(got[-1][0], _params()[0])


@pytest.mark.parametrize('jit', [False, True])
def test_adamw_as_is(jit):
    tx = optax.adamw(1e-2, weight_decay=0.1)
    got, opt = _objax_run(tx, None, jit)
    want, state = _optax_run(tx)
    _assert_same(got, want)
    for a, b in zip(jax.tree_util.tree_leaves(opt.state), jax.tree_util.tree_leaves(state)):
        np.testing.assert_allclose(a, b, **TOL)  # the kept state is optax's state


@pytest.mark.parametrize('jit', [False, True])
def test_chain_clip_sgd_as_is(jit):
    tx = optax.chain(optax.clip_by_global_norm(0.5), optax.sgd(0.1, momentum=0.9))
    got, _ = _objax_run(tx, None, jit)
    _assert_same(got, _optax_run(tx)[0])


@pytest.mark.parametrize('jit', [False, True])
def test_float_lr_scales_direction(jit):
    # With a float lr the updates are used like gradients: p <- p - lr * u. scale_by_adam gives the Adam
    # direction, so this is optax.adam(lr).
    got, _ = _objax_run(optax.scale_by_adam(), 0.01, jit)
    _assert_same(got, _optax_run(optax.adam(0.01))[0])


def test_state_vars_named_and_checkpointable():
    tx = optax.adamw(1e-2)
    variables = [objax.TrainVar(jn.asarray(p)) for p in _params()]
    opt = objax.optimizer.Optax(objax.VarCollection((f'p{i}', v) for i, v in enumerate(variables)), tx)
    names = list(opt.vars().subset(objax.StateVar).keys())
    assert names == ['(Optax).state[0].count', '(Optax).state[0].mu[0]', '(Optax).state[0].mu[1]',
                     '(Optax).state[0].mu[2]', '(Optax).state[0].nu[0]', '(Optax).state[0].nu[1]',
                     '(Optax).state[0].nu[2]']
    assert opt.vars(scope='opt.')['opt.(Optax).state[0].count'] is opt.vars()['(Optax).state[0].count']
    train_op = objax.Jit(lambda g: opt(None, g), opt.vars())
    grads = _grads(4)
    train_op(grads[0])
    train_op(grads[1])
    vc = opt.vars()
    saved = [np.asarray(x) for x in vc.tensors()]  # params (through the TrainRefs) and optax state
    assert int(vc['(Optax).state[0].count'].value) == 2
    train_op(grads[2])
    train_op(grads[3])
    after = [np.asarray(x) for x in vc.tensors()]
    vc.assign([jn.asarray(x) for x in saved])  # restore the checkpoint and replay: same result
    train_op(grads[2])
    train_op(grads[3])
    for a, b in zip(vc.tensors(), after):
        np.testing.assert_array_equal(a, b)


def test_extra_args_are_forwarded():
    def init(params):
        return optax.EmptyState()

    def update(updates, state, params=None, *, scale):
        return [scale * u for u in updates], state

    tx = optax.GradientTransformationExtraArgs(init, update)
    w = objax.TrainVar(jn.ones(3))
    opt = objax.optimizer.Optax(objax.VarCollection(w=w), tx)
    assert len(opt.vars().subset(objax.StateVar)) == 0
    opt(0.5, [jn.ones(3)], scale=4.0)
    np.testing.assert_allclose(w.value, -np.ones(3))


def test_in_training_loop_with_gradvalues():
    model = objax.nn.Linear(3, 1)
    x = jn.asarray(np.random.RandomState(0).randn(32, 3), jn.float32)
    y = x @ jn.array([[1.], [-2.], [0.5]]) + 0.3
    gv = objax.GradValues(lambda: ((model(x) - y) ** 2).mean(), model.vars())
    opt = objax.optimizer.Optax(model.vars(), optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.05)))

    def train():
        g, v = gv()
        opt(None, g)
        return v[0]

    train_op = objax.Jit(train, gv.vars() + opt.vars())
    losses = [float(train_op()) for _ in range(100)]
    assert losses[-1] < 0.05 * losses[0]


def test_optax_errors():
    w = objax.TrainVar(jn.ones((2, 3)))
    with pytest.raises(TypeError, match='GradientTransformation'):
        objax.optimizer.Optax(objax.VarCollection(w=w), optax.adam)  # the factory, not a transformation
    opt = objax.optimizer.Optax(objax.VarCollection(w=w), optax.adam(0.1))
    before = [np.asarray(x) for x in opt.vars().tensors()]
    with pytest.raises(ValueError, match='expected 1 gradients'):
        opt(None, [jn.ones((2, 3)), jn.ones(2)])
    with pytest.raises(ValueError, match=r'shape \(3, 2\), expected \(2, 3\)'):
        opt(None, [jn.ones((3, 2))])

    def bad_update(updates, state, params=None):
        return updates, (state, 1)

    bad = objax.optimizer.Optax(objax.VarCollection(w=w), optax.GradientTransformation(lambda p: (), bad_update))
    with pytest.raises(ValueError, match='returned a state of structure'):
        bad(None, [jn.ones((2, 3))])
    for a, b in zip(opt.vars().tensors(), before):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(w.value, np.ones((2, 3)))
