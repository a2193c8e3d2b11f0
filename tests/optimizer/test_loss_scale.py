"""DynamicLossScale against a hand-written loss-scaling loop (jmp's rules), an overflowing float16 step that
changes nothing, checkpoints and bad input."""

import jax.numpy as jn
import numpy as np
import optax
import pytest

import objax
from objax.optimizer import SGD, Adam, DynamicLossScale, Optax, all_finite


def _reference(flags, g, w0, lr, scale, period, factor, min_scale):
    """(applied, scale, counter, w) after each step of the jmp loop, the gradient being g (scaled by the current
    scale) when the flag is True and inf otherwise; SGD applies the finite steps."""
    counter, w, out = 0, np.array(w0, np.float64), []
    for finite in flags:
        grads = (g * scale if finite else np.full_like(g, np.inf)) / scale
        if np.isfinite(grads).all():
            w = w - lr * grads
            counter += 1
            if counter == period:
                counter = 0
                scale = scale * factor
        else:
            counter = 0
            scale = max(min_scale, scale / factor)
        out.append((bool(np.isfinite(grads).all()), scale, counter, w.copy()))
    return out


@pytest.mark.parametrize('jit', [False, True])
def test_follows_the_reference_loop(jit):
    w = objax.TrainVar(jn.array([1.0, -2.0, 0.5]))
    opt = DynamicLossScale(SGD(objax.VarCollection({'w': w})), initial_scale=8.0, period=3, factor=2.0,
                           min_scale=2.0)
    g = np.array([0.25, -1.0, 2.0], np.float32)
    flags = [True, True, True, False, True, False, False, False, False, True, True, True, True, True, True, True]
    expected = _reference(flags, g, np.asarray(w.value), 0.1, 8.0, 3, 2.0, 2.0)

    def step(finite):  # the gradient of the scaled loss: g * scale, or inf
        scaled = jn.where(finite, jn.asarray(g) * opt.loss_scale.value, jn.inf)
        return opt(0.1, [scaled])

    step = objax.Jit(step, opt.vars()) if jit else step
    for i, (finite, (applied, scale, counter, w_ref)) in enumerate(zip(flags, expected)):
        assert bool(step(jn.asarray(finite))) is applied, i
        assert float(opt.loss_scale.value) == scale and int(opt.counter.value) == counter, i
        np.testing.assert_allclose(w.value, w_ref, rtol=1e-6, err_msg=str(i))
    assert opt.loss_scale.value.dtype == jn.float32 and opt.counter.value.dtype == jn.int32


def test_scale_grows_until_float32_overflow_and_never_below_min_scale():
    w = objax.TrainVar(jn.zeros(2))
    opt = DynamicLossScale(SGD(objax.VarCollection({'w': w})), initial_scale=2.0 ** 127, period=1, factor=4.0,
                           min_scale=3.0)
    opt(0.1, [jn.ones(2)])
    assert float(opt.loss_scale.value) == 2.0 ** 127  # 2 ** 129 is not a float32: kept
    opt.loss_scale.value = jn.array(5.0)
    opt(0.1, [jn.array([jn.nan, 1.0])])
    assert float(opt.loss_scale.value) == 3.0


def test_float16_overflow_skips_the_step_then_a_finite_step_applies():
    """A float16 model with a huge scale overflows: the step changes no weight and no Adam state and halves the
    scale; once the scale is small enough, the step is Adam's on the unscaled gradients."""
    objax.random.DEFAULT_GENERATOR.seed(1)
    model = objax.nn.Sequential([objax.nn.Linear(4, 8), objax.functional.relu, objax.nn.Linear(8, 2)])
    net = objax.nn.MixedPrecision(model, compute_dtype=jn.float16)
    opt = DynamicLossScale(Adam(model.vars()), initial_scale=2.0 ** 30)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)).astype(np.float32), rng.normal(size=(16, 2)).astype(np.float32)
    gv = objax.GradValues(lambda: opt.scale(((net(x) - y) ** 2).mean()), model.vars())
    step = objax.Jit(lambda: opt(0.01, gv()[0]), gv.vars() + opt.vars())
    before = [np.array(v.value) for v in opt.vars().values()]

    assert not bool(step())
    assert float(opt.loss_scale.value) == 2.0 ** 29 and int(opt.counter.value) == 0
    after = list(opt.vars().values())
    for name, v, old in zip(opt.vars().keys(), after, before):
        if name.endswith('loss_scale'):
            continue
        np.testing.assert_array_equal(v.value, old, err_msg=name)
    assert {v.value.dtype for v in model.vars().values()} == {np.dtype(np.float32)}

    scaled_grads = objax.Jit(lambda: gv()[0], gv.vars() + opt.vars())
    applied, skipped = False, 1
    while not applied:
        scale = float(opt.loss_scale.value)
        grads = [g / scale for g in scaled_grads()]  # what the step will apply, if finite
        weights = [np.array(v.value) for v in model.vars().values()]
        applied = bool(step())
        skipped += not applied
        assert skipped < 30
    assert skipped > 1 and int(opt.optimizer.step.value) == 1 and int(opt.counter.value) == 1
    for v, p, g in zip(model.vars().values(), weights, grads):  # Adam's first step, written out
        m, s = 0.1 * np.asarray(g), 0.001 * np.asarray(g) ** 2
        np.testing.assert_allclose(v.value, p - 0.01 * np.sqrt(0.001) / 0.1 * m / np.sqrt(s + 1e-8), rtol=1e-5,
                                   atol=1e-7)


def test_skip_restores_an_optax_state():
    w = objax.TrainVar(jn.ones(3))
    opt = DynamicLossScale(Optax(objax.VarCollection({'w': w}), optax.adam(0.1)), initial_scale=4.0)
    state = [np.array(v.value) for v in opt.optimizer.vars().values()]
    assert not bool(opt(None, [jn.array([1.0, jn.inf, 0.0])]))
    for v, old in zip(opt.optimizer.vars().values(), state):
        np.testing.assert_array_equal(v.value, old)
    assert bool(opt(None, [jn.ones(3)])) and not np.array_equal(w.value, np.ones(3))


def test_scale_unscale_and_all_finite():
    opt = DynamicLossScale(SGD(objax.VarCollection({'w': objax.TrainVar(jn.zeros(1))})), initial_scale=64.0)
    assert float(opt.scale(jn.array(1.5))) == 96.0
    assert opt.scale(jn.array(1.5, jn.float16)).dtype == jn.float32
    tree = opt.unscale({'a': jn.array(64.0), 'b': [jn.array([128.0])]})
    assert float(tree['a']) == 1.0 and float(tree['b'][0][0]) == 2.0
    assert bool(all_finite([jn.ones(2), {'x': jn.zeros(3)}])) and bool(all_finite([]))
    assert not bool(all_finite([jn.ones(2), jn.array([1.0, -jn.inf])]))
    assert not bool(all_finite(jn.array([jn.nan])))


def test_state_is_saved_in_checkpoints(tmp_path):
    w = objax.TrainVar(jn.zeros(2))
    opt = DynamicLossScale(Adam(objax.VarCollection({'w': w})), initial_scale=16.0)
    assert list(opt.vars().keys())[-2:] == ['(DynamicLossScale).loss_scale', '(DynamicLossScale).counter']
    assert all(isinstance(opt.vars()[k], objax.StateVar) for k in list(opt.vars().keys())[-2:])
    opt(0.1, [jn.ones(2)])
    opt(0.1, [jn.array([jn.inf, 0.0])])
    objax.io.save_var_collection(str(tmp_path / 'ckpt.npz'), opt.vars())
    restored = DynamicLossScale(Adam(objax.VarCollection({'w': objax.TrainVar(jn.zeros(2))})))
    objax.io.load_var_collection(str(tmp_path / 'ckpt.npz'), restored.vars())
    assert float(restored.loss_scale.value) == 8.0 and int(restored.optimizer.step.value) == 1


def test_bad_arguments_and_failed_steps_change_nothing():
    vc = objax.VarCollection({'w': objax.TrainVar(jn.zeros(2))})
    for kwargs, name in (({'initial_scale': 0}, 'initial_scale'), ({'initial_scale': 1e39}, 'initial_scale'),
                         ({'period': 0}, 'period'), ({'period': 2.5}, 'period'), ({'factor': 0.5}, 'factor'),
                         ({'min_scale': float('nan')}, 'min_scale')):
        with pytest.raises(ValueError, match=f'DynamicLossScale: {name} must be'):
            DynamicLossScale(SGD(vc), **kwargs)
    with pytest.raises(TypeError, match='optimizer must be an objax optimizer'):
        DynamicLossScale(lambda lr, g: None)
    opt = DynamicLossScale(SGD(vc), initial_scale=4.0)
    with pytest.raises(ValueError, match='expected 1 gradients'):
        opt(0.1, [jn.ones(2), jn.ones(2)])
    with pytest.raises(TypeError, match='grads must be a list'):
        opt(0.1, jn.ones(2))
    assert float(opt.loss_scale.value) == 4.0 and int(opt.counter.value) == 0
    np.testing.assert_array_equal(vc['w'].value, np.zeros(2))


def test_repr():
    opt = DynamicLossScale(SGD(objax.VarCollection({'w': objax.TrainVar(jn.zeros(2))})), period=10)
    assert repr(opt) == ('objax.optimizer.DynamicLossScale(optimizer=objax.optimizer.SGD(), initial_scale=32768.0, '
                         'period=10, factor=2.0, min_scale=1.0)')
