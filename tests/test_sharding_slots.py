"""objax.sharding and optimizer slots: each slot names the variable it tracks (objax.sharding.track, and the
optimizers when they create their state, Optax's per-parameter state included) and is laid out as that variable;
checked on 8 CPU devices against single-device training."""

import jax.numpy as jn
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import objax
from objax._core.variables import tracked_of
from objax.sharding import fsdp, layout, make_mesh, set_spec, shard, track
from objax.util import make_global_batch

SIZES, BATCH, STEPS = (16, 32, 24, 8), 32, 5

# [0](Linear).w is (16, 32): fsdp alone would split its 32 columns; this rule splits its 16 rows instead, so a
# state leaf laid out by the rules themselves (not as its parameter) ends up with another layout.
ROWS_FIRST = [('*[[]0](Linear).w', P('data', None))]


def build(transformation):
    """An MLP with fixed initial values, an Optax optimizer and a jitted step; returns (model, opt, step, batch)."""
    layers = [objax.nn.Linear(a, b) for a, b in zip(SIZES[:-1], SIZES[1:])]
    model = objax.nn.Sequential([layers[0], objax.functional.tanh, layers[1], objax.functional.tanh, layers[2]])
    rng = np.random.RandomState(0)
    for v in model.vars().subset(objax.TrainVar):
        v.assign(jn.asarray(rng.normal(size=v.value.shape).astype(np.float32) * 0.3))
    opt = objax.optimizer.Optax(model.vars(), transformation)
    gv = objax.GradValues(lambda x, y: ((model(x) - y) ** 2).mean(), model.vars())

    def train_op(x, y):
        grads, values = gv(x, y)
        opt(None, grads)
        return values[0]

    x = rng.normal(size=(BATCH, SIZES[0])).astype(np.float32)
    y = rng.normal(size=(BATCH, SIZES[-1])).astype(np.float32)
    return model, opt, objax.Jit(train_op, model.vars() + opt.vars()), (x, y)


def train(model, opt, step, batch):
    losses = [float(step(*batch)) for _ in range(STEPS)]
    return losses, [np.asarray(v) for v in (model.vars() + opt.vars()).tensors()]


def _blocks(x) -> list:
    """Where each block of an array lives: (device id, index of the block in the whole array), sorted."""
    return sorted((s.device.id, tuple((i.start, i.stop) for i in s.index)) for s in x.addressable_shards)


def _moments(opt) -> list:
    """(path, state variable, parameter) for each Optax state leaf kept per parameter (mu, nu: `...mu[i]`)."""
    out = []
    for path, var in zip(opt._paths, opt._state):
        for moment in ('.mu[', '.nu['):
            if moment in path:
                out.append((path, var, opt.train_vars[int(path.rsplit('[', 1)[1][:-1])].ref))
    return out


@pytest.mark.parametrize('rules', [ROWS_FIRST, []], ids=['name_rule_then_fsdp', 'fsdp'])
def test_optax_adam_state_is_laid_out_as_its_parameters_and_trains_as_one_device(rules):
    ref_losses, ref_values = train(*build(optax.adam(0.01)))
    model, opt, step, batch = build(optax.adam(0.01))
    mesh = make_mesh({'data': 8})
    layouts = shard(model.vars() + opt.vars(), mesh, rules=rules + [fsdp(mesh)])
    if rules:
        assert layouts['(Sequential)[0](Linear).w'].spec == P('data')
    moments = _moments(opt)
    assert len(moments) == 2 * len(opt.train_vars) == 12
    for path, var, param in moments:
        assert layout(var) == layout(param), path
        assert _blocks(var.value) == _blocks(param.value), path
    assert layout(opt._state[0]).spec == P()  # the step count tracks nothing: replicated
    losses, values = train(model, opt, step, make_global_batch(batch, 'data', mesh=mesh))
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-5)
    for a, b in zip(values, ref_values):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    for path, var, param in moments:  # still laid out as their parameters after training
        assert _blocks(var.value) == _blocks(param.value), path


def test_optax_state_follows_specs_given_at_creation():
    model, opt, step, batch = build(optax.chain(optax.clip_by_global_norm(1.), optax.adam(0.01)))
    w = model[0].w
    set_spec(w, P(None, 'data'))
    shard(model.vars() + opt.vars(), make_mesh({'data': 8}))  # no rules: only w has a spec
    moments = {path: var for path, var, param in _moments(opt) if param is w}
    assert sorted(moments) == ['[1][0].mu[1]', '[1][0].nu[1]']
    for path, var in moments.items():
        assert layout(var).spec == P(None, 'data') and _blocks(var.value) == _blocks(w.value), path
    assert all(layout(v).spec == P() for p, v, param in _moments(opt) if param is not w)


def test_only_optax_leaves_shaped_like_their_parameter_track_it():
    # adafactor factors the second moment of a matrix into a row and a column vector (and keeps a (1,)
    # placeholder in `v`): those leaves track nothing; `v` of a vector and every `trace` leaf track their parameter.
    model, opt, step, batch = build(optax.chain(optax.trace(0.9), optax.adafactor(0.01, min_dim_size_to_factor=8)))
    params = [ref.ref for ref in opt.train_vars]
    linked = {}
    for path, var in zip(opt._paths, opt._state):
        if '[' in path.rsplit('.', 1)[-1]:
            param = params[int(path.rsplit('[', 1)[1][:-1])]
            linked[path] = tracked_of(var) is param
            assert linked[path] == (var.value.shape == param.value.shape), path
    assert sum(linked.values()) == 6 + 3  # every trace leaf, the `v` of the 3 biases
    mesh = make_mesh({'data': 8})
    shard(model.vars() + opt.vars(), mesh, rules=ROWS_FIRST + [fsdp(mesh)])
    for path, var in zip(opt._paths, opt._state):
        if linked.get(path):
            assert layout(var) == layout(tracked_of(var)), path
    losses, _ = train(model, opt, step, make_global_batch(batch, 'data', mesh=mesh))
    assert losses[-1] < losses[0]


@pytest.mark.parametrize('opt_class', [objax.optimizer.Momentum, objax.optimizer.Adam, objax.optimizer.LARS,
                                       objax.optimizer.ExponentialMovingAverage])
def test_builtin_optimizer_slots_follow_their_variable_under_any_name(opt_class):
    model = objax.nn.Linear(16, 32)
    opt = opt_class(model.vars())

    class Renamed(objax.Module):  # slots kept under names the Objax 1.8 ModuleList pattern does not match
        def __init__(self):
            self.moments = {f'slot{i}': m for i, m in enumerate(opt.m)}

        def vars(self, scope=''):
            return objax.VarCollection((f'{scope}(Renamed).{k}', v) for k, v in self.moments.items())

    mesh = make_mesh({'data': 8})
    vc = model.vars() + Renamed().vars()
    shard(vc, mesh, rules=[('*(Linear).w', P('data', None)), ('*(Linear).b', P('data'))])
    for m in opt.m:
        target = model.w if m.value.shape == model.w.value.shape else model.b
        assert layout(m) == layout(target) and _blocks(m.value) == _blocks(target.value)


def test_track_links_a_slot_of_ones_own_optimizer():
    w = objax.TrainVar(jn.ones((16, 8)))
    slot = objax.StateVar(jn.zeros((16, 8)))
    other = objax.StateVar(jn.zeros((16, 8)))
    assert track(slot, objax.TrainRef(w)) is slot  # a TrainRef stands for its TrainVar
    vc = objax.VarCollection({'w': w, 'opt.velocity': slot, 'opt.other': other})
    mesh = make_mesh({'data': 8})
    out = shard(vc, mesh, rules=[('*', P('data'))])
    assert out['opt.velocity'] == out['w'] and out['opt.other'].spec == P('data')
    set_spec(w, P(None, 'data'))
    out = shard(vc, mesh)  # the slot has no spec of its own: it follows w's new spec
    assert out['opt.velocity'].spec == P(None, 'data') and out['opt.other'].spec == P('data')
    # A slot tracking a slot (an average of a moment) follows the variable at the end of the chain.
    average = track(objax.StateVar(jn.zeros((16, 8))), slot)
    assert shard(objax.VarCollection({'avg': average}), mesh)['avg'].spec == P(None, 'data')
    track(slot, None)
    assert shard(vc, mesh)['opt.velocity'].spec == P()
    with pytest.raises(ValueError, match=r'shape \(3,\) cannot track TrainVar'):
        track(objax.StateVar(jn.zeros(3)), w)
    with pytest.raises(TypeError, match='holding its own value'):
        track(objax.TrainRef(w), w)
    with pytest.raises(TypeError, match='expected an objax variable'):
        track(slot, np.zeros((16, 8)))
