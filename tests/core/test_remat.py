"""Remat (module-aware jax.checkpoint): same outputs, gradients and state updates as without it, recomputation
in the backward pass, and errors for writes outside its collection."""

import jax
import jax.numpy as jn
import numpy as np
import pytest

import objax


def _mlp(seed=0):
    objax.random.DEFAULT_GENERATOR.seed(seed)
    return objax.nn.Sequential([objax.nn.Linear(3, 8), objax.nn.BatchNorm0D(8), jax.nn.tanh, objax.nn.Linear(8, 2)])


def _assert_trees_close(a, b, rtol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=1e-6)


X = jn.linspace(-1, 1, 12).reshape(4, 3)


@pytest.mark.parametrize('policy', [None, jax.checkpoint_policies.dots_with_no_batch_dims_saveable])
def test_outputs_gradients_and_state_match_the_plain_module(policy):
    plain, checked = _mlp(), _mlp()
    remat = objax.Remat(checked, policy=policy)
    np.testing.assert_allclose(remat(X, training=False), plain(X, training=False), rtol=1e-6)
    grad_plain = objax.GradValues(lambda x: plain(x, training=True).sum(), plain.vars())
    grad_remat = objax.GradValues(lambda x: remat(x, training=True).sum(), checked.vars())
    for _ in range(2):  # the second call sees the statistics the first one wrote (once each, not per recompute)
        _assert_trees_close(grad_remat(X), grad_plain(X))
        _assert_trees_close(checked.vars().tensors(), plain.vars().tensors())
    assert not np.allclose(checked[1].running_mean.value, 0)


def test_under_jit_with_an_optimizer():
    plain, checked = _mlp(), _mlp()
    steps = []
    for model, f in ((plain, plain), (checked, objax.Remat(checked, prevent_cse=False))):
        opt = objax.optimizer.Adam(model.vars())
        gv = objax.GradValues(lambda x, f=f: (f(x, training=True) ** 2).mean(), model.vars())

        def step(x, gv=gv, opt=opt):
            g, v = gv(x)
            opt(0.1, g)
            return v[0]

        steps.append(objax.Jit(step, gv.vars() + opt.vars()))
    for _ in range(3):
        np.testing.assert_allclose(steps[1](X), steps[0](X), rtol=1e-5)
    _assert_trees_close(checked.vars().tensors(), plain.vars().tensors(), rtol=1e-5)


def _grad_jaxpr(f, vc):
    return str(jax.make_jaxpr(lambda x: objax.Grad(lambda y: f(y).sum(), vc)(x))(X))


def test_the_backward_pass_recomputes():
    model = objax.nn.Sequential([objax.nn.Linear(3, 8), jax.nn.tanh, objax.nn.Linear(8, 2)])
    assert 'checkpoint' in _grad_jaxpr(objax.Remat(model), model.vars()) or \
        'remat' in _grad_jaxpr(objax.Remat(model), model.vars())
    plain = _grad_jaxpr(model, model.vars())
    assert 'checkpoint' not in plain and 'remat' not in plain


def test_a_plain_function_needs_its_collection_and_static_args():
    w = objax.TrainVar(jn.array(2.))

    def f(x, power):
        return (w.value * x) ** power

    with pytest.raises(ValueError, match='vc is required'):
        objax.Remat(f)
    remat = objax.Remat(f, objax.VarCollection(w=w), static_argnums=(1,))
    assert float(remat(jn.array(3.), 2)) == 36.
    g = objax.Grad(lambda x: remat(x, 3), objax.VarCollection(w=w))(jn.array(1.))
    np.testing.assert_allclose(g[0], 3 * 2. ** 2)


def test_reads_outside_the_collection_see_current_values_and_carry_gradients():
    inside, outside = objax.TrainVar(jn.array(2.)), objax.TrainVar(jn.array(5.))
    remat = objax.Remat(lambda x: inside.value * outside.value * x, objax.VarCollection(inside=inside))
    assert float(remat(jn.array(1.))) == 10.
    outside.assign(jn.array(7.))
    assert float(objax.Jit(remat, objax.VarCollection(o=outside, i=inside))(jn.array(1.))) == 14.
    grads = objax.Grad(lambda x: remat(x), objax.VarCollection(i=inside, o=outside))(jn.array(1.))
    np.testing.assert_allclose(grads, [7., 2.])


def test_a_write_outside_the_collection_raises_naming_the_variable():
    counter = objax.StateVar(jn.array(0))
    w = objax.TrainVar(jn.array(1.))

    def f(x):
        counter.value += 1
        return w.value * x

    remat = objax.Remat(f, objax.VarCollection(w=w))
    with pytest.raises(objax.VariableOutsideCollectionError, match=r'Remat\(.*f\) writes variable "counter"'):
        remat(jn.array(1.))
    assert int(counter.value) == 0


def test_follows_the_module_and_shows_its_policy():
    model = objax.nn.Sequential([objax.nn.Linear(2, 2)])
    remat = objax.Remat(model, policy=jax.checkpoint_policies.nothing_saveable)
    assert 'policy=nothing_saveable' in repr(remat) and repr(remat).startswith('objax.Remat(')
    model.append(objax.nn.Linear(2, 3))
    assert remat(jn.ones((1, 2))).shape == (1, 3)
    assert len(remat.vars()) == 4 and all(k.startswith('(Remat)(Sequential)') for k in remat.vars().keys())
