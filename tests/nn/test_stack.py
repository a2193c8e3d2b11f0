"""Stack against the Sequential of its unstacked layers: outputs, gradients, BatchNorm statistics and Dropout
masks, eagerly, under Jit and with an optimizer; conversion both ways; remat; errors."""

import jax
import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.nn import BatchNorm0D, Dropout, Linear, Sequential, Stack

X = jn.linspace(-2, 2, 40).reshape(5, 8)


def _block(generator=None):
    dropout = Dropout(0.6) if generator is None else Dropout(0.6, generator=generator())
    return Sequential([Linear(8, 8), BatchNorm0D(8, momentum=0.5), jax.nn.relu, dropout])


def _assert_same(a, b, rtol=1e-6, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _per_layer(stack, seq):
    """For each stacked variable, the values of the unstacked layers stacked again (same order)."""
    out = []
    for name, var in stack.vars().items():
        inner = name.split('.layer', 1)[1]
        out.append((var.value, jn.stack([seq.vars()[f'(Sequential)[{i}]{inner}'].value for i in range(len(seq))])
                    if var.value.shape[:1] == (len(seq),) and 'keygen' not in name else None))
    return [(a, b) for a, b in out if b is not None]


def test_vars_are_stacked_and_named_after_the_layer():
    stack = Stack(_block, 3)
    shapes = {k: (type(v).__name__, v.shape) for k, v in stack.vars().items()}
    assert shapes == {
        '(Stack).layer(Sequential)[0](Linear).b': ('TrainVar', (3, 8)),
        '(Stack).layer(Sequential)[0](Linear).w': ('TrainVar', (3, 8, 8)),
        '(Stack).layer(Sequential)[1](BatchNorm0D).running_mean': ('StateVar', (3, 1, 8)),
        '(Stack).layer(Sequential)[1](BatchNorm0D).running_var': ('StateVar', (3, 1, 8)),
        '(Stack).layer(Sequential)[1](BatchNorm0D).beta': ('TrainVar', (3, 1, 8)),
        '(Stack).layer(Sequential)[1](BatchNorm0D).gamma': ('TrainVar', (3, 1, 8)),
        # the default generator is the same object in every layer: shared, not stacked
        '(Stack).layer(Sequential)[3](Dropout).keygen(Generator)._key': ('RandomState', (2,)),
    }
    assert stack.vars()['(Stack).layer(Sequential)[3](Dropout).keygen(Generator)._key'] is \
        objax.random.DEFAULT_GENERATOR.key
    w = stack.vars()['(Stack).layer(Sequential)[0](Linear).w'].value
    assert not np.allclose(w[0], w[1])  # each layer keeps its own initial values
    assert len(stack) == 3 and 'objax.nn.Stack(n=3, remat=False, layer=objax.nn.Sequential(' in repr(stack)


def test_unstack_and_from_layers_round_trip():
    stack = Stack(lambda: _block(objax.random.Generator), 4)
    seq = stack.unstack()
    assert isinstance(seq, Sequential) and len(seq) == 4
    for a, b in _per_layer(stack, seq):
        _assert_same(a, b)
    keys = stack.vars()['(Stack).layer(Sequential)[3](Dropout).keygen(Generator)._key']
    assert type(keys) is objax.StateVar and keys.shape == (4, 2)
    _assert_same(keys.value, jn.stack([layer[3].keygen.key.value for layer in seq]))
    again = Stack.from_layers(seq)
    assert list(again.vars().keys()) == list(stack.vars().keys())
    _assert_same(again.vars().tensors(), stack.vars().tensors())
    assert not set(map(id, again.vars())) & set(map(id, stack.vars()))  # copies, not the same variables
    assert not set(map(id, seq.vars())) & set(map(id, stack.vars()))


@pytest.mark.parametrize('own_generators', [False, True])
@pytest.mark.parametrize('jit', [False, True])
def test_training_calls_match_the_sequential(own_generators, jit):
    stack = Stack(lambda: _block(objax.random.Generator if own_generators else None), 3)
    seq = stack.unstack()
    run_stack = objax.Jit(stack, static_argnames=('training',)) if jit else stack
    run_seq = objax.Jit(seq, static_argnames=('training',)) if jit else seq
    for call in range(3):
        objax.random.DEFAULT_GENERATOR.seed(call)
        out_stack = run_stack(X, training=True)
        objax.random.DEFAULT_GENERATOR.seed(call)
        out_seq = run_seq(X, training=True)
        _assert_same(out_stack, out_seq, rtol=1e-5)  # the same dropout masks: each layer gets the key it would
        for a, b in _per_layer(stack, seq):  # BatchNorm statistics (and random keys) updated per layer
            _assert_same(a, b, rtol=1e-5)
    _assert_same(run_stack(X, training=False), run_seq(X, training=False), rtol=1e-5)


def test_dropout_masks_differ_per_layer_and_per_call():
    stack = Stack(lambda: Sequential([Linear(8, 8, w_init=lambda s: jn.eye(8)), Dropout(0.5)]), 4)
    ones = jn.ones((64, 8))
    masks = []

    def layer_masks(x):  # the kept entries after each layer: a layer of Stack(n=1) per slice
        out = []
        for layer in stack.unstack():
            x = layer(x, training=True)
            out.append(x != 0)
        return out

    first = layer_masks(ones)
    assert all(not np.array_equal(first[0], m) for m in first[1:])  # the per-layer masks differ
    for _ in range(2):
        masks.append(np.asarray(stack(ones, training=True) != 0))
    assert not np.array_equal(masks[0], masks[1])  # per call
    kept = masks[0].mean()
    assert 0.02 < kept < 0.15  # 0.5 ** 4 = 0.0625 of the entries survive four independent layers


def test_gradients_and_an_adam_step_under_jit_match_the_sequential():
    # BatchNorm after the activation: a bias right before BatchNorm has a zero gradient, whose rounding noise
    # Adam would blow up to full steps
    stack = Stack(lambda: Sequential([Linear(8, 8), jax.nn.tanh, BatchNorm0D(8)]), 3)
    seq = stack.unstack()
    trainers = []
    for model in (stack, seq):
        opt = objax.optimizer.Adam(model.vars())
        gv = objax.GradValues(lambda x, m=model: (m(x, training=True) ** 2).mean(), model.vars())

        def step(x, gv=gv, opt=opt):
            g, v = gv(x)
            opt(0.05, g)
            return g, v

        trainers.append(objax.Jit(step, gv.vars() + opt.vars()))
    g_stack, v_stack = objax.GradValues(lambda x: (stack(x, training=True) ** 2).mean(), stack.vars())(X)
    g_seq, v_seq = objax.GradValues(lambda x: (seq(x, training=True) ** 2).mean(), seq.vars())(X)
    names = list(stack.vars().keys())
    by_name = dict(zip([n for n, v in seq.vars().items() if isinstance(v, objax.TrainVar)], g_seq))
    for name, g in zip([n for n, v in stack.vars().items() if isinstance(v, objax.TrainVar)], g_stack):
        inner = name.split('.layer', 1)[1]
        _assert_same(g, jn.stack([by_name[f'(Sequential)[{i}]{inner}'] for i in range(3)]), rtol=1e-5)
    _assert_same(v_stack, v_seq, rtol=1e-5)
    for _ in range(3):
        _assert_same(trainers[0](X)[1], trainers[1](X)[1], rtol=1e-4, atol=1e-5)
    for a, b in _per_layer(stack, seq):
        _assert_same(a, b, rtol=1e-4, atol=1e-5)
    assert names == list(stack.vars().keys())


@pytest.mark.parametrize('policy', [None, jax.checkpoint_policies.dots_with_no_batch_dims_saveable])
def test_remat_gives_the_same_outputs_and_gradients(policy):
    plain = Stack(lambda: Sequential([Linear(8, 8), BatchNorm0D(8), jax.nn.tanh]), 3)
    remat = Stack.from_layers(plain.unstack(), remat=True, policy=policy)
    for model in (plain, remat):
        model.grads = objax.GradValues(lambda x, m=model: (m(x, training=True) ** 2).mean(), model.vars())
    _assert_same(objax.Jit(remat.grads)(X), objax.Jit(plain.grads)(X), rtol=1e-5)
    _assert_same(remat.vars().tensors(), plain.vars().tensors(), rtol=1e-5)
    jaxpr = str(jax.make_jaxpr(remat.grads)(X))
    assert 'checkpoint' in jaxpr or 'remat' in jaxpr


def test_one_layer_and_keyword_arguments_the_layer_does_not_take():
    stack = Stack(lambda: Linear(8, 8), 1)
    _assert_same(stack(X, training=True), stack.unstack()(X))  # training is not given to Linear


def test_a_layer_returning_a_tuple_gets_it_spread():
    class Pair(objax.Module):
        def __init__(self):
            self.w = objax.TrainVar(objax.random.normal((8, 8)))

        def __call__(self, x, y):
            return jn.tanh(x @ self.w.value) + y, y * 2

    stack = Stack(Pair, 3)
    _assert_same(stack(X, X), stack.unstack()(X, X))


def test_errors():
    with pytest.raises(ValueError, match='n must be an int >= 1'):
        Stack(_block, 0)
    with pytest.raises(TypeError, match='make_layer must be callable'):
        Stack(3, 2)
    with pytest.raises(ValueError, match='policy was given without remat'):
        Stack(_block, 2, policy=jax.checkpoint_policies.nothing_saveable)
    with pytest.raises(ValueError, match=r'differs from layer 0 at "\(Linear\).b": shape \(4,\) instead of \(8,\)'):
        Stack.from_layers([Linear(8, 8), Linear(8, 4)])
    with pytest.raises(ValueError, match=r'only layer 0 has the variable "\(Linear\).b"'):
        Stack.from_layers([Linear(8, 8), Linear(8, 8, use_bias=False)])
    with pytest.raises(ValueError, match='it is a BatchNorm0D, layer 0 a Linear'):
        Stack.from_layers([Linear(8, 8), BatchNorm0D(8)])
    with pytest.raises(TypeError, match='layer 1 is a custom_jvp, not a Module'):
        Stack.from_layers([Linear(8, 8), jax.nn.relu])
    with pytest.raises(ValueError, match='no layers'):
        Stack.from_layers([])
    with pytest.raises(ValueError, match=r'takes .*float32\[5, 8\].* returns .*float32\[5, 4\]'):
        Stack(lambda: Linear(8, 4), 2)(X)
    outside = objax.StateVar(jn.zeros(()))

    class Leaky(objax.Module):
        def __call__(self, x):
            outside.value += 1
            return x

    with pytest.raises(objax.VariableOutsideCollectionError, match='Stack'):
        Stack(Leaky, 2)(X)
