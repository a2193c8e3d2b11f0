"""objax.privacy.dpsgd.PrivateGradValues: per-microbatch clipping against a numpy closed form, equality with
GradValues, noise statistics, norm accumulation, Jit, batch axes and argument errors."""

import functools

import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.privacy.dpsgd import PrivateGradValues


def _data(n=8, nin=3, nout=2, seed=0):
    rng = np.random.default_rng(seed)
    return (jn.asarray(rng.normal(size=(n, nin)) * 2, jn.float32),
            jn.asarray(rng.normal(size=(n, nout)), jn.float32))


def _linear_loss(nin=3, nout=2):
    model = objax.nn.Linear(nin, nout)

    def loss(x, y):
        return jn.mean(jn.square(model(x) - y))

    return model, loss


def reference(model, x, y, microbatch, clip):
    """Closed form for loss = mean((x w + b - y)^2) over a microbatch: dL/dw = 2 X^T R / R.size and
    dL/db = 2 sum(R) / R.size; each microbatch gradient scaled by min(1, clip / norm); mean over microbatches.
    Returns (mean clipped w grad, mean clipped b grad, raw norms, mean loss)."""
    w, b = np.asarray(model.w.value, np.float64), np.asarray(model.b.value, np.float64)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    gws, gbs, norms, losses = [], [], [], []
    for j in range(0, len(x), microbatch):
        r = x[j:j + microbatch] @ w + b - y[j:j + microbatch]
        gw, gb = 2 * x[j:j + microbatch].T @ r / r.size, 2 * r.sum(0) / r.size
        norm = np.sqrt(np.sum(gw ** 2) + np.sum(gb ** 2))
        scale = min(1.0, clip / norm)
        gws.append(gw * scale)
        gbs.append(gb * scale)
        norms.append(norm)
        losses.append(np.mean(r ** 2))
    return np.mean(gws, 0), np.mean(gbs, 0), np.array(norms), np.mean(losses)


@pytest.mark.parametrize('microbatch', [1, 2, 4])
def test_clipped_gradients_match_numpy(microbatch):
    model, loss = _linear_loss()
    x, y = _data()
    clip = float(np.median(reference(model, x, y, microbatch, np.inf)[2]))
    gw, gb, norms, mean_loss = reference(model, x, y, microbatch, clip)
    assert np.any(norms > clip) and np.any(norms < clip)  # some microbatches are clipped, some are not
    gv = PrivateGradValues(loss, model.vars(), noise_multiplier=0.0, l2_norm_clip=clip, microbatch=microbatch,
                           batch_axis=(0, 0))
    grads, outputs = gv(x, y)
    assert len(grads) == 2 and len(outputs) == 1
    np.testing.assert_allclose(grads[0], gb, rtol=1e-5, atol=1e-6)  # Linear's vars() order: b, w
    np.testing.assert_allclose(grads[1], gw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs[0], mean_loss, rtol=1e-5)


def test_each_microbatch_gradient_is_within_the_clip_bound():
    model, loss = _linear_loss()
    x, y = _data(seed=1)
    clip = 0.5
    gv = PrivateGradValues(loss, model.vars(), noise_multiplier=0.0, l2_norm_clip=clip, microbatch=2,
                           batch_axis=(0, 0))
    raw = objax.GradValues(loss, model.vars())
    for j in range(0, 8, 2):  # one microbatch per call: the result is that microbatch's clipped gradient
        grads, _ = gv(x[j:j + 2], y[j:j + 2])
        raw_grads, _ = raw(x[j:j + 2], y[j:j + 2])
        norm = np.sqrt(sum(np.sum(np.square(g)) for g in grads))
        raw_norm = np.sqrt(sum(np.sum(np.square(g)) for g in raw_grads))
        assert norm <= clip * (1 + 1e-5)
        np.testing.assert_allclose(norm, min(raw_norm, clip), rtol=1e-5)
        for g, r in zip(grads, raw_grads):  # same direction as the unclipped gradient
            np.testing.assert_allclose(g, r * min(1, clip / raw_norm), rtol=1e-5, atol=1e-7)


def test_no_noise_and_huge_clip_equals_gradvalues():
    model = objax.nn.Sequential([objax.nn.Linear(3, 5), objax.functional.tanh, objax.nn.Linear(5, 2)])

    def loss(x, y):
        return jn.mean(jn.square(model(x) - y)), jn.mean(model(x))

    x, y = _data(n=12, seed=2)
    want_grads, want_outputs = objax.GradValues(loss, model.vars())(x, y)
    for microbatch in (1, 3):
        gv = PrivateGradValues(loss, model.vars(), noise_multiplier=0.0, l2_norm_clip=1e9, microbatch=microbatch,
                               batch_axis=(0, 0))
        grads, outputs = gv(x, y)
        assert len(grads) == len(want_grads) == 4 and len(outputs) == 2
        for g, w in zip(grads + list(outputs), want_grads + list(want_outputs)):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_noise_standard_deviation_and_random_state():
    model = objax.nn.Linear(40, 50)

    def loss(x):
        return jn.sum(model(x)) * 0  # zero gradient: the result is the noise alone

    keygen = objax.random.Generator(3)
    gv = PrivateGradValues(loss, model.vars(), noise_multiplier=2.0, l2_norm_clip=0.5, microbatch=2,
                           keygen=keygen)
    x = jn.ones((8, 40))
    key_before = np.asarray(keygen.key.value)
    grads, _ = gv(x)
    noise = np.concatenate([np.ravel(g) for g in grads])
    assert noise.size == 2050
    want = 2.0 * 0.5 / 4  # noise_multiplier * clip / number of microbatches
    assert abs(noise.std() / want - 1) < 0.06  # ~4 standard errors of the sample std
    assert abs(noise.mean()) < 4 * want / np.sqrt(noise.size)
    assert not np.array_equal(key_before, keygen.key.value)  # the generator advanced
    again, _ = gv(x)
    assert not np.allclose(again[0], grads[0])
    keygen.seed(3)
    np.testing.assert_array_equal(gv(x)[0][0], grads[0])  # same seed, same noise


@pytest.mark.parametrize('noise', [0.0, 1.3])
def test_norm_accumulation_gives_the_default_result(noise):
    model, loss = _linear_loss()
    x, y = _data(seed=4)
    results = []
    for accumulate in (False, True):
        gv = PrivateGradValues(loss, model.vars(), noise_multiplier=noise, l2_norm_clip=0.6, microbatch=2,
                               batch_axis=(0, 0), keygen=objax.random.Generator(5),
                               use_norm_accumulation=accumulate)
        results.append(gv(x, y))
    for a, b in zip(results[0][0] + results[0][1], results[1][0] + results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_randomness_inside_f_and_norm_accumulation():
    model = objax.nn.Linear(6, 1)
    dropout = objax.nn.Dropout(keep=0.5, generator=objax.random.Generator(6))

    def loss(x):
        return jn.mean(model(dropout(x, training=True)) ** 2)

    x = jn.asarray(np.random.default_rng(7).normal(size=(8, 6)) + 1, jn.float32)
    outs = []
    for accumulate in (False, True):
        dropout.keygen.seed(6)
        gv = PrivateGradValues(loss, model.vars() + dropout.vars(), noise_multiplier=0.0, l2_norm_clip=0.3,
                               microbatch=1, use_norm_accumulation=accumulate)
        grads, _ = gv(x)
        outs.append((grads, np.asarray(dropout.keygen.key.value)))
    # The second pass of norm accumulation replays the per-microbatch keys of the first: same masks, same result.
    for a, b in zip(outs[0][0], outs[1][0]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(outs[0][1], outs[1][1])  # both leave the generator in the same state
    no_dropout, _ = PrivateGradValues(lambda v: jn.mean(model(v) ** 2), model.vars(), 0.0, 0.3, 1)(x)
    assert not np.allclose(no_dropout[0], outs[0][0][0])  # dropout was applied


def test_under_jit_and_training_step():
    model, loss = _linear_loss()
    x, y = _data(seed=8)
    gv = PrivateGradValues(loss, model.vars(), noise_multiplier=1.0, l2_norm_clip=1.0, microbatch=2,
                           batch_axis=(0, 0), keygen=objax.random.Generator(9))
    eager = gv(x, y)
    gv.keygen.seed(9)
    jitted = objax.Jit(gv, gv.vars())
    compiled = jitted(x, y)
    for a, b in zip(eager[0] + eager[1], compiled[0] + compiled[1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(jitted(x, y)[0][0], compiled[0][0])  # the key advanced under Jit too
    # A DP-SGD training step: Jit of gradients + SGD update (noise 0 here so the step is checkable).
    quiet = PrivateGradValues(loss, model.vars(), noise_multiplier=0.0, l2_norm_clip=0.7, microbatch=1,
                              batch_axis=(0, 0))
    opt = objax.optimizer.SGD(model.vars())

    def train_op(x, y):
        grads, outputs = quiet(x, y)
        opt(0.1, grads)
        return outputs

    gw, gb, _, _ = reference(model, x, y, 1, 0.7)
    w, b = np.asarray(model.w.value), np.asarray(model.b.value)
    objax.Jit(train_op, quiet.vars() + opt.vars())(x, y)
    np.testing.assert_allclose(model.w.value, w - 0.1 * gw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.b.value, b - 0.1 * gb, rtol=1e-5, atol=1e-6)


def test_batch_axis_must_be_zeros():
    """As in Objax 1.8, every argument is split on axis 0; any other batch_axis (None included) is refused at
    construction."""
    model, loss = _linear_loss()
    for bad in [(1,), (0, 1), (0, None), (None,), (-1,), (True,), (), 0]:
        with pytest.raises(ValueError, match=r'batch_axis must (contain only zeros|be a tuple of zeros)'):
            PrivateGradValues(loss, model.vars(), 0.0, 0.4, 2, batch_axis=bad)
    gv = PrivateGradValues(loss, model.vars(), 0.0, 0.4, 2, batch_axis=[0, np.int64(0)])
    assert gv.batch_axis == (0, 0)
    np.testing.assert_array_equal(gv.reshape_microbatch(jn.arange(12).reshape(6, 2)),
                                  np.arange(12).reshape(3, 2, 2))
    with pytest.raises(ValueError, match='scalar'):
        gv(jn.float32(1.0), jn.ones(2))
    x, y = _data(seed=10)  # pytree arguments: every leaf split on axis 0
    want, _ = gv(x, y)
    got, _ = PrivateGradValues(lambda xy: loss(*xy), model.vars(), 0.0, 0.4, 2)((x, y))
    for a, b in zip(want, got):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('accumulate', [False, True])
def test_zero_clip_gives_zero_gradients(accumulate):
    """l2_norm_clip=0 is accepted, as in Objax 1.8; every microbatch gradient is scaled to zero (no NaN, also for
    a microbatch whose gradient is already zero)."""
    model, loss = _linear_loss()
    x, y = _data(seed=11)
    y = y.at[:2].set(model(x[:2]))  # the first microbatch has a zero gradient: 0/0 must not appear
    gv = PrivateGradValues(loss, model.vars(), noise_multiplier=0.0, l2_norm_clip=0, microbatch=2,
                           batch_axis=(0, 0), use_norm_accumulation=accumulate)
    grads, outputs = gv(x, y)
    assert [g.shape for g in grads] == [(2,), (3, 2)]
    for g in grads:
        np.testing.assert_array_equal(np.asarray(g), np.zeros(g.shape))
    np.testing.assert_allclose(outputs[0], reference(model, x, y, 2, 1.0)[3], rtol=1e-5)


@pytest.mark.parametrize('accumulate', [False, True])
def test_aux_outputs_are_pytrees_averaged_over_microbatches(accumulate):
    """f returns (loss, aux...) with arbitrary pytrees; each leaf is averaged over microbatches, and
    the gradients are the mean of the clipped microbatch gradients (numpy closed form)."""
    model, base = _linear_loss()

    def loss(x, y):
        value = base(x, y)
        return value, {'loss': value, 'stats': (x.sum(0), jn.max(y))}

    x, y = _data(seed=12)
    clip = 0.8
    gv = PrivateGradValues(loss, model.vars(), noise_multiplier=0.0, l2_norm_clip=clip, microbatch=2,
                           batch_axis=(0, 0), use_norm_accumulation=accumulate)
    grads, outputs = gv(x, y)
    gw, gb, norms, mean_loss = reference(model, x, y, 2, clip)
    assert np.any(norms > clip)
    np.testing.assert_allclose(grads[0], gb, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[1], gw, rtol=1e-5, atol=1e-6)
    assert isinstance(outputs, tuple) and len(outputs) == 2 and set(outputs[1]) == {'loss', 'stats'}
    xs, ys = np.asarray(x).reshape(4, 2, 3), np.asarray(y).reshape(4, 2, 2)
    np.testing.assert_allclose(outputs[0], mean_loss, rtol=1e-5)
    np.testing.assert_allclose(outputs[1]['loss'], mean_loss, rtol=1e-5)
    np.testing.assert_allclose(outputs[1]['stats'][0], xs.sum(1).mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs[1]['stats'][1], ys.max((1, 2)).mean(), rtol=1e-6)


@pytest.mark.parametrize('accumulate', [False, True])
def test_empty_batch_is_refused_and_changes_nothing(accumulate):
    """An empty batch: 0 rows give a clear error, no NaN written into state, no ZeroDivisionError."""
    model = objax.nn.Sequential([objax.nn.Linear(3, 4), objax.nn.BatchNorm0D(4)])
    counter = objax.StateVar(jn.zeros(()))
    keygen = objax.random.Generator(4)

    def loss(x):
        counter.value = counter.value + 1
        return jn.mean(model(x, training=True) ** 2)

    vc = model.vars() + objax.VarCollection({'counter': counter})
    gv = PrivateGradValues(loss, vc, 1.0, 1.0, 1, keygen=keygen, use_norm_accumulation=accumulate)
    everything = vc + keygen.vars()
    before = [np.asarray(v) for v in everything.tensors()]
    with pytest.raises(ValueError, match=r'empty batch \(0 rows\).*nothing was changed'):
        gv(jn.zeros((0, 3)))
    for v, b in zip(everything.tensors(), before):
        np.testing.assert_array_equal(np.asarray(v), b)
    grads, _ = gv(jn.ones((2, 3)))  # still usable, finite
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)


@pytest.mark.parametrize('name,value', [('l2_norm_clip', float('inf')), ('l2_norm_clip', float('nan')),
                                        ('l2_norm_clip', -0.5), ('noise_multiplier', float('inf')),
                                        ('noise_multiplier', float('nan')), ('noise_multiplier', -1.0),
                                        ('noise_multiplier', np.float32('inf'))])
def test_non_finite_or_negative_hyper_parameters_refused(name, value):
    """Hyper-parameters are checked: an infinite clip with no noise gave NaN gradients; such values fail at
    construction."""
    model, loss = _linear_loss()
    kwargs = {'noise_multiplier': 1.0, 'l2_norm_clip': 1.0, name: value}
    with pytest.raises(ValueError, match=rf'{name} must be a finite number >= 0, got'):
        PrivateGradValues(loss, model.vars(), microbatch=1, batch_axis=(0, 0), **kwargs)
    with pytest.raises(TypeError, match=rf'{name} must be a number'):
        PrivateGradValues(loss, model.vars(), microbatch=1, batch_axis=(0, 0), **{**kwargs, name: 'big'})


def test_vars_and_bad_arguments():
    model, loss = _linear_loss()
    keygen = objax.random.Generator(1)
    gv = PrivateGradValues(loss, model.vars(), 1.0, 1.0, 2, batch_axis=(0, 0), keygen=keygen)
    ids = {id(v) for v in gv.vars().values()}
    assert {id(model.w), id(model.b), id(keygen.key)} <= ids
    x, y = _data()
    w = np.asarray(model.w.value)
    with pytest.raises(ValueError, match='not divisible by microbatch=2'):
        gv(x[:7], y[:7])
    with pytest.raises(ValueError, match='disagree on the batch size'):
        gv(x, y[:6])
    with pytest.raises(ValueError, match=r'got 1 arguments but batch_axis \(0, 0\)'):
        gv(x)
    np.testing.assert_array_equal(model.w.value, w)  # nothing changed
    assert PrivateGradValues(loss, model.vars(), 1.0, 0.0, 2).l2_norm_clip == 0.0  # accepted, as in Objax 1.8
    with pytest.raises(ValueError, match='noise_multiplier'):
        PrivateGradValues(loss, model.vars(), -1.0, 1.0, 2)
    with pytest.raises(ValueError, match='microbatch'):
        PrivateGradValues(loss, model.vars(), 1.0, 1.0, 0)
    with pytest.raises(ValueError, match='microbatch'):
        PrivateGradValues(loss, model.vars(), 1.0, 1.0, 2.0)
    assert PrivateGradValues(loss, model.vars(), 1.0, 1.0, np.int64(4), batch_axis=(0, 0)).microbatch == 4
    with pytest.raises(TypeError, match='VarCollection'):
        PrivateGradValues(loss, [model.w], 1.0, 1.0, 1)
    with pytest.raises(TypeError, match='Generator'):
        PrivateGradValues(loss, model.vars(), 1.0, 1.0, 1, keygen=functools.partial(objax.random.normal))
